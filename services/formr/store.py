"""The Form R read model in PostgreSQL, schema ``formr`` (docs/adr/0006-formr-read-model-in-postgresql.md).

One table per source table, a row per source row, with the rank (Debezium position) of the change
that wrote it. A write lands only when its rank is newer than the row's (``WHERE rank < EXCLUDED.rank``),
so a replay after a crash, a duplicate, or the two halves of an owner change read in either order
leave the same state. A deleted row stays as a marker (``deleted``) holding its rank, so an older
event arriving later cannot bring it back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from services.formr.readmodel import COLUMNS, Write
from services.formr.rules import Arcp, FormR, Person, Programme, Row, Rules, build_rows

_TYPES = {"submitted_at": "timestamptz", "review_date": "date", "revision": "integer"}


def _ddl() -> str:
    parts = ["CREATE SCHEMA IF NOT EXISTS formr;"]
    for table, cols in COLUMNS.items():
        body = ",\n    ".join(f"{c} {_TYPES.get(c, 'text')}" for c in cols)
        parts.append(f"""CREATE TABLE IF NOT EXISTS formr.{table} (
    id text PRIMARY KEY,
    {body},
    deleted boolean NOT NULL DEFAULT false,
    rank numeric[] NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);""")
    parts += [
        "CREATE INDEX IF NOT EXISTS form_r_trainee ON formr.form_r (trainee_id) WHERE NOT deleted;",
        "CREATE INDEX IF NOT EXISTS arcp_review ON formr.arcp (review_date) WHERE NOT deleted;",
        "CREATE INDEX IF NOT EXISTS arcp_pm ON formr.arcp (programme_membership_id) WHERE NOT deleted;",
        "CREATE INDEX IF NOT EXISTS pm_office ON formr.programme_membership (managing_deanery) WHERE NOT deleted;",
    ]
    return "\n".join(parts)


SCHEMA = _ddl()


def _upsert(table: str) -> str:
    cols = COLUMNS[table]
    names = ", ".join(cols)
    params = ", ".join(f"%({c})s" for c in cols)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
    return (f"INSERT INTO formr.{table} AS t (id, {names}, deleted, rank) "
            f"VALUES (%(id)s, {params}, %(deleted)s, %(rank)s::numeric[]) "
            f"ON CONFLICT (id) DO UPDATE SET {sets}, deleted = EXCLUDED.deleted, rank = EXCLUDED.rank, "
            f"written_at = now() WHERE t.rank < EXCLUDED.rank")


_UPSERTS = {t: _upsert(t) for t in COLUMNS}


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('formr.schema'))")
        conn.execute(SCHEMA)


def _params(w: Write) -> dict[str, Any]:
    values = w.values or {}
    p: dict[str, Any] = {c: values.get(c) for c in COLUMNS[w.table]}
    p.update(id=w.id, deleted=w.values is None, rank="{" + ",".join(str(r) for r in w.rank) + "}")
    return p


def apply_writes(conn: psycopg.Connection[Any], writes: Sequence[Write]) -> int:
    """Apply writes in order, in the caller's transaction. Returns how many rows changed."""
    changed = 0
    with conn.cursor() as cur:
        for w in writes:
            cur.execute(_UPSERTS[w.table], _params(w))
            changed += cur.rowcount
    return changed


def _horizon_arcps(conn: psycopg.Connection[Any], offices: Sequence[str] | None, today: dt.date,
                   rules: Rules) -> list[dict[str, Any]]:
    end = today + dt.timedelta(weeks=rules.horizon_weeks)
    office_clause = "" if offices is None else "AND p.managing_deanery = ANY(%(offices)s)"
    q = f"""
        SELECT a.id, a.trainee_id, a.programme_membership_id, a.review_date, a.outcome
          FROM formr.arcp a
          JOIN formr.programme_membership p
            ON p.id = a.programme_membership_id AND p.trainee_id = a.trainee_id AND NOT p.deleted
         WHERE NOT a.deleted AND a.review_date IS NOT NULL
           AND ((a.review_date >= %(today)s AND a.review_date <= %(end)s)
                OR (a.review_date < %(today)s AND a.outcome IS NULL))
           {office_clause}"""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q, {"today": today, "end": end, "offices": list(offices or [])}).fetchall()


def load_rows(conn: psycopg.Connection[Any], offices: Sequence[str] | None, today: dt.date,
              rules: Rules | None = None) -> list[Row]:
    """The report rows of these local offices (``None``: every office — the command line and
    reminders only, never the web page). Reads in one repeatable-read snapshot."""
    rules = rules or Rules()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        arcp_rows = _horizon_arcps(conn, offices, today, rules)
        trainees = sorted({r["trainee_id"] for r in arcp_rows})
        pm_ids = sorted({r["programme_membership_id"] for r in arcp_rows})
        with conn.cursor(row_factory=dict_row) as cur:
            forms = cur.execute(
                "SELECT id, trainee_id, part, programme_membership_id, lifecycle_state, submitted_at "
                "FROM formr.form_r WHERE NOT deleted AND trainee_id = ANY(%s)", (trainees,)).fetchall()
            progs = cur.execute(
                "SELECT id, trainee_id, programme_name, programme_number, managing_deanery "
                "FROM formr.programme_membership WHERE NOT deleted AND id = ANY(%s)", (pm_ids,)).fetchall()
            people = cur.execute(
                "SELECT id AS trainee_id, role, title, forenames, surname, email "
                "FROM formr.personal_details WHERE NOT deleted AND id = ANY(%s)", (trainees,)).fetchall()
    arcps = [Arcp(**r) for r in arcp_rows]
    return build_rows(arcps, [FormR(**f) for f in forms], {p["id"]: Programme(**p) for p in progs},
                      {p["trainee_id"]: Person(**p) for p in people}, today, rules)


def persons(conn: psycopg.Connection[Any], trainee_ids: Iterable[str]) -> dict[str, Person]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT id AS trainee_id, role, title, forenames, surname, email "
                           "FROM formr.personal_details WHERE NOT deleted AND id = ANY(%s)",
                           (sorted(set(trainee_ids)),)).fetchall()
    return {r["trainee_id"]: Person(**r) for r in rows}
