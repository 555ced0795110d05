"""The report page, served by the Form R service (aiohttp): HTML, CSV and JSON of the same rows.

Every request is identified by services.formr.auth (401 without a believable identity) and every
answer is built from rows loaded for the reader's local offices only: the page, the downloads and
the counts cannot show another office's trainees, whatever the query string says (403 for an
office that is not theirs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from psycopg_pool import ConnectionPool

from services import logs
from services.formr import report
from services.formr.auth import Identity, Trust, allowed_offices, identify
from services.formr.rules import Row, Rules, local_date, sort_key
from services.formr.store import changed_since, load_rows, office_versions, rows_in

log = logs.get("formr.web")
IDENTITY = web.RequestKey("identity", Identity)

_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


Loader = Callable[[tuple[str, ...], dt.date, Rules], list[Row]]


def build_web(load: Loader, trust: Trust, rules: Rules, now: Callable[[], dt.datetime],
              ready: Callable[[], str | None] = lambda: None,
              stalled: Callable[[], str | None] = lambda: None) -> web.Application:
    """``load(offices, today, rules)`` reads the rows of those offices (``OfficeCache`` in the
    service); ``ready()`` says why the service is not ready yet, or ``None`` when it is; ``stalled()``
    why it is not alive (its consumer stopped making progress), or ``None``."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in ("/healthz", "/readyz"):
            resp = await handler(request)
        else:
            who = identify(request.remote, request.headers, trust)
            if who is None:
                log.info("formr.web.unauthenticated", path=request.path, remote=request.remote)
                resp = web.Response(status=401, text="Sign in through the programme managers' portal.\n")
            elif not who.offices:
                resp = web.Response(status=403, text="You are not entitled to any local office's report.\n")
            else:
                request[IDENTITY] = who
                resp = await handler(request)
        resp.headers.update(_SECURITY_HEADERS)
        return resp

    async def rows_for(request: web.Request) -> tuple[Identity, list[Row], report.Page] | web.Response:
        who = request[IDENTITY]
        asked = [o for o in request.query.getall("local_office", []) if o]
        offices = allowed_offices(who, asked)
        if offices is None:
            log.warning("formr.web.forbidden_office", user=who.user)
            return web.Response(status=403, text="That local office is not one of yours.\n")
        today = local_date(now(), rules.zone)
        rows = await asyncio.to_thread(load, offices, today, rules)
        rows = [r for r in rows if r.local_office in offices]  # belt and braces: never another office
        programmes = sorted({r.programme_name for r in rows if r.programme_name})
        programme = request.query.get("programme") or None
        if programme:
            rows = [r for r in rows if r.programme_name == programme]
        sort = request.query.get("sort", "review")
        number = request.query.get("page", "1")
        page = report.Page(user=who.user, offices=who.offices, office=asked[0] if len(asked) == 1 else None,
                           programmes=programmes, programme=programme,
                           sort=sort if sort in report.SORTS else "review",
                           descending=request.query.get("dir") == "desc", today=today,
                           number=int(number) if number.isascii() and number.isdigit() and len(number) < 7 else 1)
        log.info("formr.web.report", user=who.user, path=request.path, rows=len(rows))
        return who, rows, page

    async def html(request: web.Request) -> web.StreamResponse:
        got = await rows_for(request)
        if isinstance(got, web.Response):
            return got
        _, rows, page = got
        return web.Response(text=report.to_html(rows, page), content_type="text/html", charset="utf-8")

    async def csv(request: web.Request) -> web.StreamResponse:
        got = await rows_for(request)
        if isinstance(got, web.Response):
            return got
        _, rows, page = got
        body = report.to_csv(report.order(rows, page.sort, page.descending))
        return web.Response(text=body, content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="formr-{page.today}.csv"'})

    async def json(request: web.Request) -> web.StreamResponse:
        got = await rows_for(request)
        if isinstance(got, web.Response):
            return got
        _, rows, page = got
        return web.Response(body=report.to_json(report.order(rows, page.sort, page.descending), page.today),
                            content_type="application/json")

    async def healthz(request: web.Request) -> web.StreamResponse:
        why = stalled()
        if why:
            return web.json_response({"status": "stalled", "why": why}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.StreamResponse:
        why = ready()
        return web.json_response({"ready": why is None, **({"why": why} if why else {})},
                                 status=200 if why is None else 503)

    app = web.Application(middlewares=[guard])
    app.add_routes([web.get("/", html), web.get("/report.csv", csv), web.get("/report.json", json),
                    web.get("/healthz", healthz), web.get("/readyz", readyz)])
    return app


def pool_loader(pool: ConnectionPool[Any]) -> Loader:
    """Straight from the read model at every request (no cache)."""
    def load(offices: tuple[str, ...], today: dt.date, rules: Rules) -> list[Row]:
        with pool.connection() as conn:
            return load_rows(conn, list(offices), today, rules)

    return load


class OfficeCache:
    """The rows of each local office, kept until that office's version moves, and then brought up to
    date by reading again only the trainees changed since (the consumer raises the version and notes
    the trainees in the transaction of every write that can change the office's report:
    services.formr.store); everything again when more than ``patch_limit`` changed or the day
    changed. Every request reads the versions and the changes in one snapshot, so a page is never
    older than the read model was when the request came; replicas of the service share nothing but
    the database."""

    def __init__(self, pool: ConnectionPool[Any], limit: int = 64, patch_limit: int = 500) -> None:
        self.pool = pool
        self.limit = limit
        self.patch_limit = patch_limit
        self.kept: dict[tuple[str, dt.date, Rules], tuple[int, dict[str, list[Row]]]] = {}
        self.lock = threading.Lock()
        self.hits = self.patches = self.misses = 0

    def _rows(self, conn: Any, office: str, version: int, today: dt.date, rules: Rules) -> list[Row]:
        key = (office, today, rules)
        with self.lock:
            kept = self.kept.get(key)
        if kept is not None and kept[0] == version:
            self.hits += 1
            by_trainee = kept[1]
        else:
            changed = changed_since(conn, office, kept[0], self.patch_limit) if kept is not None else None
            if changed is None:
                self.misses += 1
                by_trainee = {}
                for row in rows_in(conn, [office], today, rules):
                    by_trainee.setdefault(row.trainee_id, []).append(row)
            else:
                self.patches += 1
                by_trainee = {t: rs for t, rs in kept[1].items() if t not in set(changed)}  # type: ignore[index]
                for row in rows_in(conn, [office], today, rules, trainees=changed):
                    by_trainee.setdefault(row.trainee_id, []).append(row)
            with self.lock:
                self.kept[key] = (version, by_trainee)
                stale = [k for k in self.kept if k[1] != today]  # yesterday's rows
                stale += list(self.kept)[:max(0, len(self.kept) - self.limit)]  # the oldest, past the limit
                for old in stale:
                    self.kept.pop(old, None)
        return [r for rs in by_trainee.values() for r in rs]

    def __call__(self, offices: tuple[str, ...], today: dt.date, rules: Rules) -> list[Row]:
        out: list[Row] = []
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            versions = office_versions(conn, offices)
            for office in offices:
                out.extend(self._rows(conn, office, versions[office], today, rules))
        out.sort(key=sort_key)
        return out
