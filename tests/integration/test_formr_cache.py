"""The report's per-office cache on real PostgreSQL: a page is never older than the read model, an
office's rows are read again only for the trainees that changed, and a trainee who moves office
leaves one report and joins the other.

Writes go through the consumer's own ``apply_writes`` (the version and changed-trainee bookkeeping
is part of it); every comparison is against ``load_rows`` read straight from the tables."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from services.formr.readmodel import Write
from services.formr.rules import Rules
from services.formr.store import apply_writes, ensure_schema, load_rows
from services.formr.web import OfficeCache

pytestmark = pytest.mark.integration
TODAY = dt.date(2026, 12, 1)
_rank = itertools.count(1)


def write(conn: psycopg.Connection[Any], table: str, id_: str, values: dict[str, Any] | None) -> None:
    n = next(_rank)
    with conn.transaction():
        apply_writes(conn, [Write(table, id_, (5, n, n, 0 if values is None else 1), values)])


def trainee(conn: psycopg.Connection[Any], tid: str, office: str, days: int) -> str:
    pm = f"pm-{tid}"
    write(conn, "personal_details", tid, {"trainee_id": tid, "role": "DR in Training", "title": "Dr",
                                          "forenames": "Ada", "surname": tid, "email": f"{tid}@example.nhs.uk"})
    write(conn, "programme_membership", pm, {"trainee_id": tid, "programme_name": "Cardiology",
                                             "programme_number": "EOE1", "managing_deanery": office})
    write(conn, "arcp", f"arcp-{tid}", {"trainee_id": tid, "programme_membership_id": pm,
                                        "review_date": TODAY + dt.timedelta(days=days), "outcome": None})
    return pm


def view(rows: list[Any]) -> list[tuple[str, str, str, bool]]:
    return [(r.trainee_id, r.part_a.status.value, r.part_b.status.value, r.at_risk) for r in rows]


def test_pages_follow_every_write_reading_only_the_changed_trainees(stack: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    east, west = f"East {tag}", f"West {tag}"
    conn = psycopg.connect(stack.pg_dsn, autocommit=True)
    pool: ConnectionPool[Any] = ConnectionPool(stack.pg_dsn, min_size=1, max_size=2, open=True)
    try:
        ensure_schema(conn)
        rules = Rules()
        people = {f"c{i}-{tag}": trainee(conn, f"c{i}-{tag}", east if i % 3 else west, 10 + i) for i in range(12)}
        cache = OfficeCache(pool)

        def check(offices: tuple[str, ...]) -> list[tuple[str, str, str, bool]]:
            got = view(cache(offices, TODAY, rules))
            assert got == view(load_rows(conn, list(offices), TODAY, rules))
            return got

        first = check((east,))
        assert len(first) == 8 and cache.misses == 1
        assert check((east,)) == first and cache.hits == 1  # nothing changed: nothing read again

        # a submission: only that trainee is read again, and the page shows it at once
        tid, pm = next((t, p) for t, p in people.items() if t.startswith("c1-"))
        write(conn, "form_r", f"fa-{tid}", {"trainee_id": tid, "part": "A", "programme_membership_id": pm,
                                            "lifecycle_state": "SUBMITTED",
                                            "submitted_at": dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC), "revision": 1})
        after = check((east,))
        assert (tid, "submitted", "missing", True) in after and cache.patches == 1 and cache.misses == 1

        # a move: the membership now belongs to the West office; East loses the row, West gains it
        write(conn, "programme_membership", pm, {"trainee_id": tid, "programme_name": "Cardiology",
                                                 "programme_number": "EOE1", "managing_deanery": west})
        assert tid not in {r[0] for r in check((east,))}
        west_rows = check((west,))
        assert tid in {r[0] for r in west_rows} and len(west_rows) == 5
        both = check((east, west))
        assert len(both) == 12 and [r[3] for r in both] == sorted((r[3] for r in both), reverse=True)

        # a deleted ARCP leaves the report; a replayed (older) write changes nothing and reads nothing
        write(conn, "arcp", f"arcp-{tid}", None)
        assert tid not in {r[0] for r in check((west,))}
        patches = cache.patches
        with conn.transaction():
            assert apply_writes(conn, [Write("arcp", f"arcp-{tid}", (5, 1, 1, 1), {
                "trainee_id": tid, "programme_membership_id": pm, "review_date": TODAY, "outcome": None})]) == 0
        check((west,))
        assert cache.patches == patches  # the office's version did not move

        # another day: every office is read whole again
        misses = cache.misses
        tomorrow = TODAY + dt.timedelta(days=1)
        assert view(cache((east,), tomorrow, rules)) == view(load_rows(conn, [east], tomorrow, rules))
        assert cache.misses == misses + 1
    finally:
        pool.close()
        conn.close()
