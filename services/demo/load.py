"""Load a generated population into PostgreSQL fast, with ``COPY`` (psycopg 3 ``cursor.copy``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

import psycopg
from psycopg import sql

from services.demo.generator import ROW_TYPES, Placement, Population, RotationEdits

SCHEMA = "tss"


def _copy_rows(cur: psycopg.Cursor[tuple[object, ...]], schema: str, table: str,
               columns: Sequence[str], rows: Sequence[tuple[object, ...]]) -> None:
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, columns)))
    with cur.copy(stmt) as copy:
        for row in rows:
            copy.write_row(row)


def load(conn: psycopg.Connection[tuple[object, ...]], population: Population, *,
         schema: str = SCHEMA) -> dict[str, int]:
    """COPY every row of ``population`` into ``schema`` in one transaction; returns rows per table.

    The tables must exist and hold none of these keys (a duplicate key fails the whole load)."""
    counts: dict[str, int] = {}
    with conn.transaction(), conn.cursor() as cur:
        for table, rows in population.tables():
            _copy_rows(cur, schema, table, ROW_TYPES[table]._fields, rows)  # type: ignore[attr-defined]
            counts[table] = len(rows)
    return counts


def row_counts(conn: psycopg.Connection[tuple[object, ...]], *, schema: str = SCHEMA) -> dict[str, int]:
    """Rows per table now in ``schema`` (the tables of the data model)."""
    counts: dict[str, int] = {}
    with conn.cursor() as cur:
        for table in ROW_TYPES:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
            row = cur.fetchone()
            counts[table] = int(row[0]) if row else 0  # type: ignore[call-overload]
    return counts


def apply_rotation_edits(conn: psycopg.Connection[tuple[object, ...]], edits: RotationEdits, *,
                         schema: str = SCHEMA, batch: int = 0) -> int:
    """Apply a rotation day's edits: COPY into a temporary table, then one UPDATE and one INSERT per batch.

    ``batch`` > 0 splits the edits into transactions of that many rows (a rotation day arrives as many
    commits, not one); 0 applies all in one transaction. Returns the number of rows written."""
    rows: list[tuple[bool, Placement]] = [(False, p) for p in edits.updates] + [(True, p) for p in edits.inserts]
    size = batch or max(1, len(rows))
    written = 0
    for start in range(0, len(rows), size):
        written += _apply_batch(conn, rows[start:start + size], schema)
    return written


def _apply_batch(conn: psycopg.Connection[tuple[object, ...]], rows: Sequence[tuple[bool, Placement]],
                 schema: str) -> int:
    cols = Placement._fields
    target = sql.Identifier(schema, "placement")
    ident = sql.SQL(", ").join(map(sql.Identifier, cols))
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS rotation_edits "
                            "(LIKE {} INCLUDING DEFAULTS, is_insert boolean) ON COMMIT DELETE ROWS").format(target))
        with cur.copy(sql.SQL("COPY rotation_edits ({}, is_insert) FROM STDIN").format(ident)) as copy:
            for is_insert, p in rows:
                copy.write_row((*p, is_insert))
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = e.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in cols if c != "id")
        cur.execute(sql.SQL("UPDATE {} AS p SET {} FROM rotation_edits e WHERE NOT e.is_insert AND p.id = e.id")
                    .format(target, assignments))
        updated = cur.rowcount
        cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM rotation_edits WHERE is_insert")
                    .format(target, ident, ident))
        return updated + cur.rowcount


def read_population(conn: psycopg.Connection[tuple[object, ...]], *, as_of: date, seed: int = -1,
                    schema: str = SCHEMA) -> Population:
    """The rows now in ``schema`` as a Population (so a script can plan against the live state)."""
    pop = Population(seed=seed, as_of=as_of)
    with conn.cursor() as cur:
        for table, row_type in ROW_TYPES.items():
            cols = row_type._fields  # type: ignore[attr-defined]
            cur.execute(sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(schema, table)))
            rows: list[tuple[object, ...]] = getattr(pop, table)
            for values in cur.fetchall():
                rows.append(row_type._make(_plain(v) for v in values))  # type: ignore[attr-defined]
    return pop


def _plain(value: object) -> object:
    """numeric comes back as Decimal; the generator's rows hold it as the stored string."""
    return format(value, "f") if isinstance(value, Decimal) else value
