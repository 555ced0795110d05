"""The Form R report at national size: its build time and its page latency.

A throwaway PostgreSQL cluster (Debian's, as the local stack starts it) gets the read model of
``--trainees`` trainees (default 80,000) in eleven local offices of England's real relative sizes,
one programme membership each, one ARCP each of which ``--in-horizon`` (default 20,000) fall in the
report's horizon (a review in the next 16 weeks, or a past one with no outcome) and the rest are
past with an outcome, and two Form R parts per trainee in every lifecycle state. Rows are loaded
with COPY into the tables ``services.formr.store`` creates, then ANALYZEd.

Figures (one JSON object; medians over ``--repeat`` runs, page latencies over ``--requests``):

* ``build_all_offices_ms``: ``load_rows`` for every office (what ``report formr`` and the reminder
  pass read) — the SQL and the pure rules, no HTTP.
* ``build_office_ms``: the same for the largest and for the median office.
* ``page_after_a_change_ms``: whole HTTP requests (connect, identity check, versions, changed
  trainees, their rows, rules, render of the first page of 200 rows, response) to the service's own
  aiohttp application and its per-office cache (``services.formr.web``, as the service runs them),
  served on loopback, each right after one trainee of the office submitted a form, written with the
  consumer's own ``apply_writes``. p50, p95 and max. (A whole office read again, as after midnight
  or more than 500 changes, costs ``build_office_ms`` plus the render.)
* ``page_ms`` / ``csv_ms`` / ``json_ms``: the same requests while the office has not changed (its
  rows come from the cache; the versions are still read, and the page rendered, every time).
  ``rebuilds_while_unchanged`` counts the rebuilds among those (0 when the cache works).
* ``healthz_ms``: the same server's ``/healthz``, measured in the same run: the floor of an HTTP
  request here, so the rest can be read against it on a noisy, shared machine.

Aim (issue 10): the page of one local office in under 200 ms. Never a test: figures depend on the
machine.

    .venv/bin/python bench/formr_bench.py [--trainees 80000] [--in-horizon 20000] [--requests 30]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.devstack import postgres
from services.formr.auth import Trust
from services.formr.readmodel import Write
from services.formr.rules import Rules
from services.formr.store import apply_writes, ensure_schema, load_rows

TODAY = dt.date(2026, 12, 1)
SECRET = "bench-secret"
# local offices and their rough share of doctors in training in England
OFFICES = [("London", 22), ("North West", 11), ("West Midlands", 9), ("Yorkshire and the Humber", 9),
           ("East of England", 8), ("Kent, Surrey and Sussex", 7), ("South West", 7), ("East Midlands", 7),
           ("North East", 6), ("Thames Valley", 5), ("Wessex", 5)]
PROGRAMMES = ["Anaesthetics", "Cardiology", "Clinical Radiology", "Core Surgical Training", "Emergency Medicine",
              "Foundation", "Gastroenterology", "General Practice", "General Surgery", "Geriatric Medicine",
              "Histopathology", "Internal Medicine Training", "Obstetrics and Gynaecology", "Ophthalmology",
              "Paediatrics", "Psychiatry", "Respiratory Medicine", "Trauma and Orthopaedic Surgery", "Urology"]
FORENAMES = ["Amara", "Tomasz", "Priya", "Siân", "Oluwaseun", "Grace", "Mohammed", "Aisling", "Wei", "Fatima"]
SURNAMES = ["Okafor", "Nowak", "Raman", "Evans", "Adeyemi", "O'Neill", "Khan", "Murphy", "Chen", "Hussain"]
STATES = ["SUBMITTED", "SUBMITTED", "SUBMITTED", "DRAFT", "UNSUBMITTED", "DELETED", None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows_for(n: int, in_horizon: int, seed: int) -> dict[str, list[tuple[Any, ...]]]:
    rng = random.Random(seed)
    names, weights = zip(*OFFICES, strict=True)
    horizon = set(rng.sample(range(n), in_horizon))
    out: dict[str, list[tuple[Any, ...]]] = {"personal_details": [], "programme_membership": [], "arcp": [],
                                             "form_r": []}
    for i in range(n):
        tid = str(100000 + i)
        pm = str(uuid.UUID(int=rng.getrandbits(128)))
        office = rng.choices(names, weights)[0]
        out["personal_details"].append((tid, tid, "DR in Training", "Dr", rng.choice(FORENAMES), rng.choice(SURNAMES),
                                        f"dr.{tid}@example.nhs.uk"))
        out["programme_membership"].append((pm, tid, rng.choice(PROGRAMMES), f"EOE{rng.randrange(1000, 9999)}",
                                            office))
        if i in horizon:
            review = TODAY + dt.timedelta(days=rng.randrange(-20, 16 * 7))
            outcome = None
        else:
            review = TODAY - dt.timedelta(days=rng.randrange(30, 700))
            outcome = "Outcome 1"
        out["arcp"].append((f"arcp-{tid}", tid, pm, review, outcome))
        for part in ("A", "B"):
            state = rng.choice(STATES)
            if state is None:
                continue
            submitted = (dt.datetime.combine(review, dt.time(9), dt.UTC) - dt.timedelta(days=rng.randrange(1, 400))
                         if state in ("SUBMITTED", "UNSUBMITTED") else None)
            out["form_r"].append((str(uuid.UUID(int=rng.getrandbits(128))), tid, part, pm, state, submitted, 1))
    return out


def load(dsn: str, data: dict[str, list[tuple[Any, ...]]]) -> float:
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_schema(conn)
        for table, rows in data.items():
            width = len(rows[0])
            cols = {"personal_details": "id, trainee_id, role, title, forenames, surname, email",
                    "programme_membership": "id, trainee_id, programme_name, programme_number, managing_deanery",
                    "arcp": "id, trainee_id, programme_membership_id, review_date, outcome",
                    "form_r": "id, trainee_id, part, programme_membership_id, lifecycle_state, submitted_at, "
                              "revision"}[table]
            assert len(cols.split(",")) == width
            with conn.cursor() as cur, cur.copy(f"COPY formr.{table} ({cols}, rank) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row((*r, "{1,1,1,1}"))
            conn.execute(f"ANALYZE formr.{table}")
    return time.perf_counter() - t0


def timed(fn: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ms), 1), "p95": round(p95, 1), "max": round(max(ms), 1)}


def serve(dsn: str, port: int, ready: threading.Event, stop: threading.Event, made: dict[str, Any]) -> None:
    from aiohttp import web
    from psycopg_pool import ConnectionPool

    from services.formr.web import OfficeCache, build_web

    async def main() -> None:
        pool: ConnectionPool[Any] = ConnectionPool(dsn, min_size=1, max_size=4, open=True)
        trust = Trust(proxies=frozenset(), secret=SECRET)

        def now() -> dt.datetime:
            return dt.datetime.combine(TODAY, dt.time(9), dt.UTC)

        made["cache"] = cache = OfficeCache(pool)  # as the service runs it
        runner = web.AppRunner(build_web(cache, trust, Rules(), now), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        while not stop.is_set():  # noqa: ASYNC110  stop is a threading.Event, set from the main thread
            await asyncio.sleep(0.1)
        await runner.cleanup()
        pool.close()

    asyncio.run(main())


def get(port: int, path: str, office: str | None) -> int:
    headers = {"X-Forwarded-User": "bench@example.nhs.uk", "X-Forwarded-Groups": office or "",
               "X-Proxy-Secret": SECRET}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310  our own http://127.0.0.1 URL
        return len(resp.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trainees", type=int, default=80_000)
    ap.add_argument("--in-horizon", type=int, default=20_000)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=10)
    args = ap.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="tn-formr-bench-", dir="/tmp"))
    scratch.chmod(0o755)
    paths = postgres.PgPaths(scratch / "pg")
    port = free_port()
    postgres.init(paths, port)
    postgres.start(paths, port)
    stop = threading.Event()
    try:
        postgres.create_database_and_schema(port)
        dsn = postgres.dsn(port)
        t0 = time.perf_counter()
        data = rows_for(args.trainees, args.in_horizon, args.seed)
        generated = time.perf_counter() - t0
        loaded = load(dsn, data)
        sizes: dict[str, int] = {}
        with psycopg.connect(dsn) as conn:
            everyone = load_rows(conn, None, TODAY)
            for r in everyone:
                sizes[r.local_office or ""] = sizes.get(r.local_office or "", 0) + 1
            by_size = sorted(sizes, key=lambda o: sizes[o])
            largest, median_office = by_size[-1], by_size[len(by_size) // 2]
            build_all = timed(lambda: load_rows(conn, None, TODAY), args.repeat)
            build_largest = timed(lambda: load_rows(conn, [largest], TODAY), args.repeat)
            build_median = timed(lambda: load_rows(conn, [median_office], TODAY), args.repeat)

        web_port = free_port()
        ready = threading.Event()
        made: dict[str, Any] = {}
        server = threading.Thread(target=serve, args=(dsn, web_port, ready, stop, made), daemon=True)
        server.start()
        if not ready.wait(30):
            raise SystemExit("the report's web application did not start")
        get(web_port, "/", median_office)  # warm: templates compiled, pool connected
        healthz = timed(lambda: get(web_port, "/healthz", None), args.requests)
        pages = {}
        writer = psycopg.connect(dsn, autocommit=True)
        get(web_port, "/", largest)  # the first view of each office reads it whole

        office_of = {pm[1]: pm[4] for pm in data["programme_membership"]}
        forms_of: dict[str, list[tuple[Any, ...]]] = {}
        for f in data["form_r"]:
            forms_of.setdefault(office_of[f[1]], []).append(f)
        pick = random.Random(args.seed + 1)
        serial = [0]

        def changed(office: str) -> None:
            """One trainee of the office submits a form, written as the consumer writes it (its version
            moves and the trainee is noted as changed)."""
            f = pick.choice(forms_of[office])
            serial[0] += 1
            values = {"trainee_id": f[1], "part": f[2], "programme_membership_id": f[3],
                      "lifecycle_state": "SUBMITTED", "submitted_at": dt.datetime.combine(TODAY, dt.time(8), dt.UTC),
                      "revision": 1 + serial[0]}
            with writer.transaction():
                apply_writes(writer, [Write("form_r", f[0], (9, serial[0], serial[0], 1), values)])

        def cold(q: str, office: str) -> None:
            changed(office)
            t0 = time.perf_counter()
            get(web_port, "/" + q, office)
            cold_ms.append((time.perf_counter() - t0) * 1000)

        for name, office in (("largest", largest), ("median", median_office)):
            q = "?local_office=" + urllib.request.quote(office)
            cold_ms: list[float] = []
            for _ in range(args.requests):
                cold(q, office)
            misses, patches = made["cache"].misses, made["cache"].patches
            pages[name] = {
                "office": office, "rows": sizes[office],
                "page_after_a_change_ms": summary(cold_ms),
                "page_ms": summary(timed(lambda q=q, o=office: get(web_port, "/" + q, o), args.requests)),
                "csv_ms": summary(timed(lambda q=q, o=office: get(web_port, "/report.csv" + q, o), args.requests)),
                "json_ms": summary(timed(lambda q=q, o=office: get(web_port, "/report.json" + q, o), args.requests)),
                "page_bytes": get(web_port, "/" + q, office),
                "rebuilds_while_unchanged": made["cache"].misses - misses,
                "patches_while_unchanged": made["cache"].patches - patches,
            }
        writer.close()
        out = {
            "trainees": args.trainees, "arcps": args.trainees, "arcps_in_horizon": len(everyone),
            "form_r_rows": len(data["form_r"]), "offices": len(sizes),
            "generate_s": round(generated, 1), "copy_and_analyze_s": round(loaded, 1),
            "build_all_offices_ms": summary(build_all),
            "build_office_ms": {"largest": summary(build_largest), "median": summary(build_median)},
            "healthz_ms": summary(healthz),
            "pages": pages,
            "aim": "the page of one local office in under 200 ms",
        }
        print(json.dumps(out, indent=2))
        return 0
    finally:
        stop.set()
        postgres.stop(paths)


if __name__ == "__main__":
    raise SystemExit(main())
