"""The report page, served by the Form R service (aiohttp): HTML, CSV and JSON of the same rows.

Every request is identified by services.formr.auth (401 without a believable identity) and every
answer is built from rows loaded for the reader's local offices only: the page, the downloads and
the counts cannot show another office's trainees, whatever the query string says (403 for an
office that is not theirs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

from aiohttp import web
from psycopg_pool import ConnectionPool

from services import logs
from services.formr import report
from services.formr.auth import Identity, Trust, allowed_offices, identify
from services.formr.rules import Row, Rules, local_date
from services.formr.store import load_rows

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


def build_web(load: Loader, trust: Trust, rules: Rules, now: Callable[[], dt.datetime]) -> web.Application:
    """``load(offices, today, rules)`` reads the rows of those offices (``pool_loader`` in the service)."""

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/healthz":
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
        page = report.Page(user=who.user, offices=who.offices, office=asked[0] if len(asked) == 1 else None,
                           programmes=programmes, programme=programme,
                           sort=sort if sort in report.SORTS else "review",
                           descending=request.query.get("dir") == "desc", today=today)
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
        return web.Response(text="ok\n")

    app = web.Application(middlewares=[guard])
    app.add_routes([web.get("/", html), web.get("/report.csv", csv), web.get("/report.json", json),
                    web.get("/healthz", healthz)])
    return app


def pool_loader(pool: ConnectionPool[Any]) -> Loader:
    def load(offices: tuple[str, ...], today: dt.date, rules: Rules) -> list[Row]:
        with pool.connection() as conn:
            return load_rows(conn, list(offices), today, rules)

    return load
