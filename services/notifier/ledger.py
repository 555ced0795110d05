"""The durable ledger of notifications, in PostgreSQL (docs/adr/0002-mailer-ledger-in-postgresql.md).

A row per notification id. A claim is an atomic insert-or-inspect with a lease, so two mailer
instances that share only Kafka and this database never both send the same notification: the one
without the live lease waits until the other records an outcome or its lease runs out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

import psycopg
from psycopg.rows import dict_row

from services.notifier.plan import FINAL, Notification, Status

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS notify;
CREATE TABLE IF NOT EXISTS notify.ledger (
    notification_id  text PRIMARY KEY,
    record_id        text NOT NULL,
    trainee_id       text NOT NULL,
    day              text NOT NULL,
    kind             text NOT NULL,
    status           text NOT NULL,
    generation       integer NOT NULL DEFAULT 0,
    message_id       text,
    owner            text,
    lease_until      timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    smtp_code        integer,
    reason           text,
    resend_requested boolean NOT NULL DEFAULT false,
    resend_by        text,
    resend_reason    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);
CREATE INDEX IF NOT EXISTS ledger_trainee ON notify.ledger (trainee_id, day);
CREATE INDEX IF NOT EXISTS ledger_status ON notify.ledger (status, updated_at);
"""


class Decision(StrEnum):
    SEND = "send"  # this instance holds the lease: send with ``generation``
    DONE = "done"  # an outcome is recorded: nothing to do (a replay)
    BUSY = "busy"  # another live instance holds the lease: wait and claim again
    UNCERTAIN = "uncertain"  # an instance died mid-DATA: recorded UNCERTAIN, not resent


@dataclass(frozen=True, slots=True)
class Claim:
    decision: Decision
    generation: int = 0
    status: str | None = None

    @property
    def is_copy(self) -> bool:
        return self.generation > 0


class Ledger:
    def __init__(self, dsn: str, owner: str, lease_seconds: float = 120.0) -> None:
        self.dsn = dsn
        self.owner = owner
        self.lease = lease_seconds
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self._conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, row_factory=dict_row)
        async with self._lock:
            await self._conn.execute(SCHEMA)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    @property
    def conn(self) -> psycopg.AsyncConnection:
        assert self._conn is not None, "ledger not open"
        return self._conn

    async def claim(self, n: Notification) -> Claim:
        async with self._lock, self.conn.transaction():
            cur = await self.conn.execute(
                "INSERT INTO notify.ledger (notification_id, record_id, trainee_id, day, kind, status, owner,"
                " lease_until) VALUES (%s, %s, %s, %s, %s, 'PENDING', %s, now() + make_interval(secs => %s))"
                " ON CONFLICT (notification_id) DO NOTHING RETURNING generation",
                (n.notification_id, n.record_id, n.trainee_id, n.day, n.kind.value, self.owner, self.lease))
            if (await cur.fetchone()) is not None:
                return Claim(Decision.SEND, 0)
            cur = await self.conn.execute(
                "SELECT status, generation, owner, resend_requested, lease_until < now() AS expired"
                " FROM notify.ledger WHERE notification_id = %s FOR UPDATE", (n.notification_id,))
            row = await cur.fetchone()
            assert row is not None
            status, generation = Status(row["status"]), row["generation"]
            if row["resend_requested"] and (status in FINAL or row["expired"]):
                generation += 1
                await self._take(n.notification_id, generation, resend=True)
                return Claim(Decision.SEND, generation)
            if status in FINAL:
                return Claim(Decision.DONE, generation, status.value)
            live = not row["expired"] and row["owner"] != self.owner
            if live:
                return Claim(Decision.BUSY, generation, status.value)
            if status is Status.SENDING:
                await self.conn.execute(
                    "UPDATE notify.ledger SET status = 'UNCERTAIN', reason = %s, updated_at = now(),"
                    " owner = NULL, lease_until = NULL WHERE notification_id = %s",
                    ("the sending instance stopped during DATA; delivery unknown", n.notification_id))
                return Claim(Decision.UNCERTAIN, generation, Status.UNCERTAIN.value)
            await self._take(n.notification_id, generation)
            return Claim(Decision.SEND, generation)

    async def _take(self, notification_id: str, generation: int, *, resend: bool = False) -> None:
        await self.conn.execute(
            "UPDATE notify.ledger SET status = 'PENDING', generation = %s, owner = %s,"
            " lease_until = now() + make_interval(secs => %s), updated_at = now(),"
            " resend_requested = CASE WHEN %s THEN false ELSE resend_requested END"
            " WHERE notification_id = %s",
            (generation, self.owner, self.lease, resend, notification_id))

    async def mark(self, notification_id: str, status: Status, *, message_id: str | None = None,
                   smtp_code: int | None = None, reason: str | None = None, attempt: bool = False) -> None:
        final = status in FINAL
        async with self._lock:
            await self.conn.execute(
                "UPDATE notify.ledger SET status = %s, message_id = COALESCE(%s, message_id),"
                " smtp_code = COALESCE(%s, smtp_code), reason = %s, updated_at = now(),"
                " attempts = attempts + %s,"
                " lease_until = CASE WHEN %s THEN NULL ELSE now() + make_interval(secs => %s) END,"
                " owner = CASE WHEN %s THEN NULL ELSE owner END,"
                " sent_at = CASE WHEN %s = 'SENT' THEN now() ELSE sent_at END"
                " WHERE notification_id = %s",
                (status.value, message_id, smtp_code, reason, 1 if attempt else 0, final, self.lease, final,
                 status.value, notification_id))

    async def record_final(self, n: Notification, status: Status, reason: str) -> None:
        """An outcome decided without sending (SUPPRESSED, NO_ADDRESS), idempotently."""
        async with self._lock:
            await self.conn.execute(
                "INSERT INTO notify.ledger (notification_id, record_id, trainee_id, day, kind, status, reason)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (notification_id) DO NOTHING",
                (n.notification_id, n.record_id, n.trainee_id, n.day, n.kind.value, status.value, reason))

    async def status(self, notification_id: str) -> dict[str, object] | None:
        async with self._lock:
            cur = await self.conn.execute("SELECT * FROM notify.ledger WHERE notification_id = %s", (notification_id,))
            return await cur.fetchone()
