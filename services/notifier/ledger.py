"""The durable ledger of notifications, in PostgreSQL (docs/adr/0002-mailer-ledger-in-postgresql.md).

A row per notification id. A claim is an atomic insert-or-inspect with a lease, so two mailer
instances that share only Kafka and this database never both send the same notification: the one
without the live lease waits until the other records an outcome or its lease runs out.

The claim is one server-side function (one round trip, one transaction); every other write is one
statement. Connections come from a small pool so that concurrent sends do not queue behind one
connection.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

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
ALTER TABLE notify.ledger ADD COLUMN IF NOT EXISTS first_sent_at timestamptz;
CREATE INDEX IF NOT EXISTS ledger_trainee ON notify.ledger (trainee_id, day);
CREATE INDEX IF NOT EXISTS ledger_status ON notify.ledger (status, updated_at);

-- One claim, atomically. Returns what the caller may do (send/done/busy/uncertain), the generation
-- to send with, the status found and when the notification was first sent (for a copy's banner).
CREATE OR REPLACE FUNCTION notify.claim(p_id text, p_record text, p_trainee text, p_day text, p_kind text,
                                        p_owner text, p_lease double precision)
RETURNS TABLE (o_decision text, o_generation integer, o_status text, o_first_sent_at timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    r notify.ledger%ROWTYPE;
    expired boolean;
BEGIN
    INSERT INTO notify.ledger AS l (notification_id, record_id, trainee_id, day, kind, status, owner, lease_until)
    VALUES (p_id, p_record, p_trainee, p_day, p_kind, 'PENDING', p_owner, now() + make_interval(secs => p_lease))
    ON CONFLICT (notification_id) DO NOTHING;
    IF FOUND THEN
        RETURN QUERY SELECT 'send'::text, 0, 'PENDING'::text, NULL::timestamptz;
        RETURN;
    END IF;
    SELECT * INTO r FROM notify.ledger l WHERE l.notification_id = p_id FOR UPDATE;
    expired := r.lease_until IS NULL OR r.lease_until < now();
    IF r.resend_requested AND (r.status IN ('SENT', 'FAILED', 'UNCERTAIN', 'SUPPRESSED', 'NO_ADDRESS') OR expired) THEN
        UPDATE notify.ledger l SET status = 'PENDING', generation = r.generation + 1, owner = p_owner,
               lease_until = now() + make_interval(secs => p_lease), updated_at = now(), resend_requested = false
         WHERE l.notification_id = p_id;
        RETURN QUERY SELECT 'send'::text, r.generation + 1, r.status, COALESCE(r.first_sent_at, r.sent_at);
        RETURN;
    END IF;
    IF r.status IN ('SENT', 'FAILED', 'UNCERTAIN', 'SUPPRESSED', 'NO_ADDRESS') THEN
        RETURN QUERY SELECT 'done'::text, r.generation, r.status, COALESCE(r.first_sent_at, r.sent_at);
        RETURN;
    END IF;
    IF NOT expired AND r.owner IS DISTINCT FROM p_owner THEN
        RETURN QUERY SELECT 'busy'::text, r.generation, r.status, COALESCE(r.first_sent_at, r.sent_at);
        RETURN;
    END IF;
    IF r.status = 'SENDING' THEN
        UPDATE notify.ledger l SET status = 'UNCERTAIN', updated_at = now(), owner = NULL, lease_until = NULL,
               reason = 'the sending instance stopped during DATA; delivery unknown'
         WHERE l.notification_id = p_id;
        RETURN QUERY SELECT 'uncertain'::text, r.generation, 'UNCERTAIN'::text, COALESCE(r.first_sent_at, r.sent_at);
        RETURN;
    END IF;
    UPDATE notify.ledger l SET status = 'PENDING', owner = p_owner, updated_at = now(),
           lease_until = now() + make_interval(secs => p_lease)
     WHERE l.notification_id = p_id;
    RETURN QUERY SELECT 'send'::text, r.generation, r.status, COALESCE(r.first_sent_at, r.sent_at);
END
$fn$;
"""

_MARK = (
    "UPDATE notify.ledger SET status = %(status)s, message_id = COALESCE(%(message_id)s, message_id),"
    " smtp_code = COALESCE(%(smtp_code)s, smtp_code), reason = %(reason)s, updated_at = now(),"
    " attempts = attempts + %(attempt)s,"
    " lease_until = CASE WHEN %(final)s THEN NULL ELSE now() + make_interval(secs => %(lease)s) END,"
    " owner = CASE WHEN %(final)s THEN NULL ELSE owner END,"
    " sent_at = CASE WHEN %(status)s = 'SENT' THEN now() ELSE sent_at END,"
    " first_sent_at = CASE WHEN %(status)s = 'SENT' THEN COALESCE(first_sent_at, now()) ELSE first_sent_at END"
    " WHERE notification_id = %(id)s"
)


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
    first_sent_at: dt.datetime | None = None  # when generation 0 was accepted by the relay

    @property
    def is_copy(self) -> bool:
        return self.generation > 0


class Ledger:
    def __init__(self, dsn: str, owner: str, lease_seconds: float = 120.0, pool_size: int = 4) -> None:
        self.dsn = dsn
        self.owner = owner
        self.lease = lease_seconds
        self._pool = AsyncConnectionPool(dsn, min_size=1, max_size=pool_size, open=False,
                                         connection_class=AsyncConnection[DictRow],
                                         kwargs={"autocommit": True, "row_factory": dict_row})

    async def open(self) -> None:
        await self._pool.open(wait=True)
        async with self._pool.connection() as conn, conn.transaction():
            # two instances starting together must not race on CREATE ... IF NOT EXISTS
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('notify.ledger schema'))")
            await conn.execute(SCHEMA)

    async def close(self) -> None:
        await self._pool.close()

    async def _execute(self, query: str, params: Any) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(query, params)

    async def _fetchone(self, query: str, params: Any) -> dict[str, Any] | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchone()

    async def claim(self, n: Notification) -> Claim:
        row = await self._fetchone(
            "SELECT * FROM notify.claim(%s, %s, %s, %s, %s, %s, %s)",
            (n.notification_id, n.record_id, n.trainee_id, n.day, n.kind.value, self.owner, self.lease))
        assert row is not None
        return Claim(Decision(row["o_decision"]), row["o_generation"], row["o_status"], row["o_first_sent_at"])

    async def mark(self, notification_id: str, status: Status, *, message_id: str | None = None,
                   smtp_code: int | None = None, reason: str | None = None, attempt: bool = False) -> None:
        await self._execute(_MARK, {
            "status": status.value, "message_id": message_id, "smtp_code": smtp_code, "reason": reason,
            "attempt": 1 if attempt else 0, "final": status in FINAL, "lease": self.lease, "id": notification_id})

    async def mark_sending(self, notification_id: str, message_id: str) -> bool:
        """Just before DATA: True when this instance still holds the claim (and has now marked it
        SENDING); False when its lease ran out and another instance took the notification over."""
        row = await self._fetchone(
            "UPDATE notify.ledger SET status = 'SENDING', message_id = %s, attempts = attempts + 1,"
            " updated_at = now(), lease_until = now() + make_interval(secs => %s)"
            " WHERE notification_id = %s AND owner = %s AND status IN ('PENDING', 'RETRYING') RETURNING 1 AS held",
            (message_id, self.lease, notification_id, self.owner))
        return row is not None

    async def record_final(self, n: Notification, status: Status, reason: str) -> bool:
        """An outcome decided without sending (SUPPRESSED, NO_ADDRESS), idempotently: True when this
        call recorded it, False when the ledger already held the notification."""
        row = await self._fetchone(
            "INSERT INTO notify.ledger (notification_id, record_id, trainee_id, day, kind, status, reason)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (notification_id) DO NOTHING RETURNING 1 AS added",
            (n.notification_id, n.record_id, n.trainee_id, n.day, n.kind.value, status.value, reason))
        return row is not None

    async def release(self, notification_id: str) -> None:
        """Give up a claim without an outcome (a drain mid-retry): the next claim may take it at once."""
        await self._execute(
            "UPDATE notify.ledger SET owner = NULL, lease_until = now(), updated_at = now()"
            " WHERE notification_id = %s AND owner = %s", (notification_id, self.owner))

    async def status(self, notification_id: str) -> dict[str, Any] | None:
        return await self._fetchone("SELECT * FROM notify.ledger WHERE notification_id = %s", (notification_id,))
