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
        # the past reviews still waiting for an outcome (the report's other half of the horizon)
        "CREATE INDEX IF NOT EXISTS arcp_open ON formr.arcp (review_date) WHERE NOT deleted AND outcome IS NULL;",
        "CREATE INDEX IF NOT EXISTS arcp_pm ON formr.arcp (programme_membership_id) WHERE NOT deleted;",
        "CREATE INDEX IF NOT EXISTS pm_office ON formr.programme_membership (managing_deanery) WHERE NOT deleted;",
        "CREATE INDEX IF NOT EXISTS pm_trainee ON formr.programme_membership (trainee_id) WHERE NOT deleted;",
        # a counter per local office, raised in the transaction of every write that can change its
        # report: the page keeps an office's rows until its counter moves (services.formr.web)
        """CREATE TABLE IF NOT EXISTS formr.office_version (
    office text PRIMARY KEY,
    version bigint NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);""",
        # which trainees of an office changed at which of its versions: the page reads again only those
        """CREATE TABLE IF NOT EXISTS formr.trainee_change (
    office text NOT NULL,
    trainee_id text NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (office, trainee_id)
);""",
        "CREATE INDEX IF NOT EXISTS trainee_change_version ON formr.trainee_change (office, version);",
    ]
    return "\n".join(parts)


SCHEMA = _ddl()


def _upsert(table: str) -> str:
    cols = COLUMNS[table]
    names = ", ".join(cols)
    params = ", ".join(f"%({c})s" for c in cols)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
    return (f"INSERT INTO formr.{table} AS t (id, {names}, deleted, rank) "  # noqa: S608  table and column names from COLUMNS only, values as parameters
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


def _offices_touched(cur: psycopg.Cursor[Any], writes: Sequence[Write]) -> set[tuple[str, str]]:
    """(local office, trainee) for every trainee these writes name or whose rows they replace, as the
    read model stands now (called before and after the writes: a move is seen from both ends)."""
    trainees = {w.values["trainee_id"] for w in writes if w.values is not None}
    by_table: dict[str, list[str]] = {}
    for w in writes:
        by_table.setdefault(w.table, []).append(w.id)
    for table, ids in by_table.items():  # COLUMNS keys only: never a name from the input
        rows = cur.execute(f"SELECT trainee_id FROM formr.{table} WHERE id = ANY(%s)", (ids,)).fetchall()  # noqa: S608  table names from COLUMNS only, values as parameters
        trainees.update(r[0] for r in rows if r[0] is not None)
    if not trainees:
        return set()
    rows = cur.execute("SELECT DISTINCT managing_deanery, trainee_id FROM formr.programme_membership "
                       "WHERE trainee_id = ANY(%s) AND NOT deleted", (sorted(trainees),)).fetchall()
    return {(r[0] or "", r[1]) for r in rows}


def apply_writes(conn: psycopg.Connection[Any], writes: Sequence[Write]) -> int:
    """Apply writes in order, in the caller's transaction, and raise the version of every local office
    whose report they may change. Returns how many rows changed."""
    changed = 0
    with conn.cursor() as cur:
        if writes:
            # one writer at a time (replicas, or a rebalance): the offices read before the writes must
            # be those the writes change, not a state another writer is changing meanwhile
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('formr.apply_writes'))")
        touched = _offices_touched(cur, writes) if writes else set()
        for w in writes:
            cur.execute(_UPSERTS[w.table], _params(w))
            changed += cur.rowcount
        if changed:
            touched |= _offices_touched(cur, writes)
            for office in sorted({o for o, _ in touched}):
                version = cur.execute(
                    "INSERT INTO formr.office_version (office, version) VALUES (%s, 1) ON CONFLICT (office) "
                    "DO UPDATE SET version = formr.office_version.version + 1, changed_at = now() "
                    "RETURNING version", (office,)).fetchone()[0]  # type: ignore[index]
                cur.executemany("INSERT INTO formr.trainee_change (office, trainee_id, version) VALUES (%s, %s, %s) "
                                "ON CONFLICT (office, trainee_id) DO UPDATE SET version = EXCLUDED.version",
                                [(office, t, version) for o, t in sorted(touched) if o == office])
    return changed


def changed_since(conn: psycopg.Connection[Any], office: str, version: int, limit: int) -> list[str] | None:
    """The trainees of ``office`` changed after ``version`` (``None`` when more than ``limit``)."""
    rows = conn.execute("SELECT trainee_id FROM formr.trainee_change WHERE office = %s AND version > %s LIMIT %s",
                        (office, version, limit + 1)).fetchall()
    return None if len(rows) > limit else [r[0] for r in rows]


def office_versions(conn: psycopg.Connection[Any], offices: Sequence[str]) -> dict[str, int]:
    """Each office's version (0: never written)."""
    rows = conn.execute("SELECT office, version FROM formr.office_version WHERE office = ANY(%s)",
                        (list(offices),)).fetchall()
    found = {r[0]: r[1] for r in rows}
    return {o: found.get(o, 0) for o in offices}


# every ARCP in the horizon with its programme, its trainee and that trainee's forms: one query, one
# row per (ARCP, form) (the forms are few per trainee), so nothing is sent back to the server
_REPORT = """
    SELECT a.id, a.trainee_id, a.programme_membership_id, a.review_date, a.outcome,
           p.id, p.trainee_id, p.programme_name, p.programme_number, p.managing_deanery,
           d.id, d.role, d.title, d.forenames, d.surname, d.email,
           f.id, f.trainee_id, f.part, f.programme_membership_id, f.lifecycle_state, f.submitted_at
      FROM formr.arcp a
      JOIN formr.programme_membership p
        ON p.id = a.programme_membership_id AND p.trainee_id = a.trainee_id AND NOT p.deleted
      LEFT JOIN formr.personal_details d ON d.id = a.trainee_id AND NOT d.deleted
      LEFT JOIN formr.form_r f ON f.trainee_id = a.trainee_id AND NOT f.deleted
     WHERE NOT a.deleted AND a.review_date IS NOT NULL
       AND ((a.review_date >= %(today)s AND a.review_date <= %(end)s)
            OR (a.review_date < %(today)s AND a.outcome IS NULL))
       {office_clause}"""


def load_rows(conn: psycopg.Connection[Any], offices: Sequence[str] | None, today: dt.date,
              rules: Rules | None = None) -> list[Row]:
    """The report rows of these local offices (``None``: every office — the command line and
    reminders only, never the web page). One query, read-only."""
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        return rows_in(conn, offices, today, rules or Rules())


def rows_in(conn: psycopg.Connection[Any], offices: Sequence[str] | None, today: dt.date, rules: Rules,
            trainees: Sequence[str] | None = None) -> list[Row]:
    """``load_rows`` inside the caller's transaction (only ``trainees``' rows, when given)."""
    office_clause = "" if offices is None else "AND p.managing_deanery = ANY(%(offices)s)"
    if trainees is not None:
        office_clause += " AND a.trainee_id = ANY(%(trainees)s)"
    params = {"today": today, "end": today + dt.timedelta(weeks=rules.horizon_weeks),
              "offices": list(offices or []), "trainees": list(trainees or [])}
    with conn.cursor() as cur:
        joined = cur.execute(_REPORT.format(office_clause=office_clause), params).fetchall()
    arcps: dict[str, Arcp] = {}
    progs: dict[str, Programme] = {}
    people: dict[str, Person] = {}
    forms: dict[str, FormR] = {}
    for r in joined:
        if r[0] not in arcps:
            arcps[r[0]] = Arcp(*r[:5])
            progs[r[5]] = Programme(*r[5:10])
            if r[10] is not None:
                people[r[10]] = Person(*r[10:16])
        if r[16] is not None and r[16] not in forms:  # a trainee with two ARCPs brings each form twice
            forms[r[16]] = FormR(*r[16:22])
    return build_rows(arcps.values(), forms.values(), progs, people, today, rules)


def persons(conn: psycopg.Connection[Any], trainee_ids: Iterable[str]) -> dict[str, Person]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT id AS trainee_id, role, title, forenames, surname, email "
                           "FROM formr.personal_details WHERE NOT deleted AND id = ANY(%s)",
                           (sorted(set(trainee_ids)),)).fetchall()
    return {r["trainee_id"]: Person(**r) for r in rows}
