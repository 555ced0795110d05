"""The durable ledger of notifications, in PostgreSQL (docs/adr/0002-mailer-ledger-in-postgresql.md).

A row per notification id. A claim is an atomic insert-or-inspect with a lease, so two mailer
instances that share only Kafka and this database never both send the same notification: the one
without the live lease waits until the other records an outcome or its lease runs out.

Writes are group commits: the claims (and likewise the ``SENDING`` marks, and the outcomes) that
concurrent sends ask for while a statement of that kind is in flight go together in the next one —
a set-returning server-side function for claims, one ``UPDATE ... FROM unnest(...)`` for marks. A
caller still waits for its own row to be written before it goes on (``SENDING`` before DATA, the
outcome before the offset commit), so batching changes the number of round trips, not the order of
anything; with one send in flight it is exactly the single-row statement. Connections come from a
small pool so that the three kinds of statement do not queue behind one another.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, NamedTuple, TypeVar

from psycopg import AsyncConnection, errors
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from services.notifier.ledger_schema import SCHEMA
from services.notifier.plan import FINAL, Content, Notification, Status

_CLAIM = "SELECT * FROM notify.claim_many(%s, %s, %s, %s, %s, %s, %s, %s::text[], %s::bytea[])"

# ids distinct and sorted (the row lock order); one row per id
_MARK = (
    "UPDATE notify.ledger l SET status = u.status, message_id = COALESCE(u.message_id, l.message_id),"
    " smtp_code = COALESCE(u.smtp_code, l.smtp_code), reason = u.reason, updated_at = now(),"
    " attempts = l.attempts + u.attempt,"
    " lease_until = CASE WHEN u.final THEN NULL ELSE now() + make_interval(secs => %(lease)s) END,"
    " owner = CASE WHEN u.final THEN NULL ELSE l.owner END,"
    " sent_at = CASE WHEN u.status = 'SENT' THEN now() ELSE l.sent_at END,"
    " first_sent_at = CASE WHEN u.status = 'SENT' THEN COALESCE(l.first_sent_at, now()) ELSE l.first_sent_at END"
    " FROM unnest(%(ids)s::text[], %(statuses)s::text[], %(message_ids)s::text[], %(codes)s::int[],"
    " %(reasons)s::text[], %(attempts)s::int[], %(finals)s::boolean[])"
    " AS u(id, status, message_id, smtp_code, reason, attempt, final)"
    # fenced on the owner: a mark from an instance whose lease ran out (and whose notification another
    # instance has claimed since) changes nothing, except the news that its own message was accepted
    " WHERE l.notification_id = u.id AND (l.owner = %(owner)s"
    "       OR (u.status = 'SENT' AND l.message_id = u.message_id AND l.status IN ('SENDING', 'UNCERTAIN')))"
    " RETURNING l.notification_id"
)

_RENEW = ("UPDATE notify.ledger SET lease_until = now() + make_interval(secs => %s), updated_at = now()"
          " WHERE notification_id = %s AND owner = %s AND status IN ('PENDING', 'RETRYING')"
          " RETURNING notification_id")

# fenced on the owner: only rows this instance still holds go SENDING
_MARK_SENDING = (
    "UPDATE notify.ledger l SET status = 'SENDING', message_id = u.message_id, attempts = l.attempts + 1,"
    " updated_at = now(), lease_until = now() + make_interval(secs => %(lease)s)"
    " FROM unnest(%(ids)s::text[], %(message_ids)s::text[]) AS u(id, message_id)"
    " WHERE l.notification_id = u.id AND l.owner = %(owner)s AND l.status IN ('PENDING', 'RETRYING')"
    " RETURNING l.notification_id"
)

SENDING_LINGER = 0.0
MARK_LINGER = 0.002

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[K, T, R]):
    """Concurrent requests of one kind, written together: ``await group(key, item)`` returns the
    result for ``item`` once a statement holding it has run. At most one statement is in flight;
    requests that arrive meanwhile go in the next one (a key at most once per statement: a second
    request for the same key waits for the next), after waiting ``linger`` seconds for more. A failed
    statement fails every request in it."""

    def __init__(self, run: Callable[[list[tuple[K, T]]], Awaitable[Sequence[R]]], linger: float = 0.0) -> None:
        self._run = run
        self._linger = linger  # how long the first request of a statement waits for company
        self._pending: list[tuple[K, T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, key: K, item: T) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((key, item, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return await done

    async def _write(self) -> None:
        try:
            while self._pending:
                if self._linger:
                    await asyncio.sleep(self._linger)
                batch: list[tuple[K, T, asyncio.Future[R]]] = []
                later: list[tuple[K, T, asyncio.Future[R]]] = []
                keys: set[K] = set()
                for request in self._pending:
                    (later if request[0] in keys else batch).append(request)
                    keys.add(request[0])
                self._pending = later
                try:
                    results = await self._run([(key, item) for key, item, _ in batch])
                except Exception as exc:  # noqa: BLE001 - handed to every caller in the statement
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                except BaseException:  # cancelled (the loop is closing): so are the callers
                    for _, _, done in batch:
                        done.cancel()
                    raise
                for (_, _, done), result in zip(batch, results, strict=True):
                    if not done.done():
                        done.set_result(result)
        finally:
            self._writer = None
            for _, _, done in self._pending:  # left only when this task was cancelled
                done.cancel()
            self._pending = []


class Decision(StrEnum):
    SEND = "send"  # this instance holds the lease: send with ``generation``
    DONE = "done"  # an outcome is recorded: nothing to do (a replay)
    BUSY = "busy"  # another live instance holds the lease: wait and claim again
    UNCERTAIN = "uncertain"  # an instance died mid-DATA: recorded UNCERTAIN, not resent
    SUPERSEDED = "superseded"  # final, and this record has other content: recorded SUPERSEDED, not sent


class Recorded(NamedTuple):
    """What :meth:`Ledger.record_final` did: its decision, the content hash the ledger held, and the
    row's generation."""

    decision: str
    old_hash: str | None
    generation: int


@dataclass(frozen=True, slots=True)
class Claim:
    decision: Decision
    generation: int = 0
    status: str | None = None
    first_sent_at: dt.datetime | None = None  # when generation 0 was accepted (or, resending an UNCERTAIN
    #                                           one never confirmed, when that attempt became uncertain)
    old_hash: str | None = None  # the content hash the ledger held before this claim
    request_id: str | None = None  # an explicit resend: its request id, operator and reason
    operator: str | None = None
    operator_reason: str | None = None

    @property
    def is_copy(self) -> bool:
        return self.generation > 0


class Ledger:
    def __init__(self, dsn: str, owner: str, lease_seconds: float = 120.0, pool_size: int = 4) -> None:
        self.dsn = dsn
        self.owner = owner
        self.lease = lease_seconds
        self.pool_size = pool_size
        self._pool = self._new_pool()
        self._probe: AsyncConnection[Any] | None = None  # readiness checks' own connection
        self._claims: GroupCommit[str, tuple[Notification, Content | None], Claim] = GroupCommit(self._claim_group)
        # SENDING holds a connection until DATA: no lingering; an outcome only has to be written
        # before the status event and the offset commit, so the marks of a few ms go together
        self._sending: GroupCommit[str, str, bool] = GroupCommit(self._mark_sending_many, SENDING_LINGER)
        self._marks: GroupCommit[str, dict[str, Any], bool] = GroupCommit(self._mark_many, MARK_LINGER)

    def _new_pool(self) -> AsyncConnectionPool[AsyncConnection[DictRow]]:
        return AsyncConnectionPool(self.dsn, min_size=1, max_size=self.pool_size, open=False,
                                   connection_class=AsyncConnection[DictRow],
                                   kwargs={"autocommit": True, "row_factory": dict_row})

    async def open(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109  handed to psycopg_pool's own wait(timeout=)
        """Connect (waiting up to ``timeout`` s for the pool's first connections) and apply the schema.
        May be called again after a failure (the pool a timeout closed is replaced)."""
        if self._pool.closed:
            self._pool = self._new_pool()
        await self._pool.open(wait=False)
        await self._pool.wait(timeout=timeout)
        async with self._pool.connection() as conn, conn.transaction():
            # two instances starting together must not race on CREATE ... IF NOT EXISTS
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('notify.ledger schema'))")
            await conn.execute(SCHEMA)

    async def close(self) -> None:
        await self._pool.close()
        if self._probe is not None:
            await self._probe.close()

    async def ping(self, timeout: float) -> None:  # noqa: ASYNC109  handed to libpq and the server
        """Readiness: the ledger's table answers a read within ``timeout`` seconds (a stuck database or a
        lock on the table does not). On a connection of its own, kept between checks: a busy pool is
        not a database that does not answer, and the check takes no connection from the sends."""
        ms = max(1, int(timeout * 1000))
        try:
            if self._probe is None or self._probe.closed:
                self._probe = await AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=max(1, int(timeout)),
                    options=f"-c statement_timeout={ms} -c lock_timeout={ms}")  # the server gives up on its own
            await self._probe.execute("SELECT 1 FROM notify.ledger LIMIT 1")
        except BaseException:
            if self._probe is not None:
                await self._probe.close()
            self._probe = None
            raise

    async def _execute(self, query: str, params: Any) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(query, params)

    async def _fetchone(self, query: str, params: Any) -> dict[str, Any] | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchone()

    async def _fetchall(self, query: str, params: Any) -> list[dict[str, Any]]:
        """One statement; retried when PostgreSQL broke a deadlock by aborting it (two instances
        writing overlapping rows during a rebalance: the statement had no effect, so it is redone)."""
        for attempt in range(3):
            try:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(query, params)
                    return await cur.fetchall() if cur.description else []
            except errors.DeadlockDetected:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def claim(self, n: Notification, content: Content | None = None) -> Claim:
        """Claim ``n`` for this instance (with the claims of concurrent callers, in one transaction).
        ``content``: the record's content hash and value; a final notification whose record now has
        another hash is recorded SUPERSEDED (the decision says so)."""
        return await self._claims(n.notification_id, (n, content))

    async def claim_many(self, ns: Sequence[Notification],
                         contents: dict[str, Content] | None = None) -> dict[str, Claim]:
        """Claim every notification of ``ns`` (distinct ids) in one transaction, by id; ``contents``
        by notification id."""
        if not ns:
            return {}
        contents = contents or {}
        ns = sorted(ns, key=lambda n: n.notification_id)  # the same row lock order in every instance
        found = [contents.get(n.notification_id) for n in ns]
        rows = await self._fetchall(_CLAIM, (
            [n.notification_id for n in ns], [n.record_id for n in ns], [n.trainee_id for n in ns],
            [n.day for n in ns], [n.kind.value for n in ns], self.owner, self.lease,
            [c.hash if c else None for c in found], [c.value if c else None for c in found]))
        return {row["o_id"]: Claim(Decision(row["o_decision"]), row["o_generation"], row["o_status"],
                                   row["o_first_sent_at"], row["o_old_hash"], row["o_request_id"], row["o_operator"],
                                   row["o_reason"]) for row in rows}

    async def _claim_group(self, batch: list[tuple[str, tuple[Notification, Content | None]]]) -> list[Claim]:
        contents = {key: c for key, (_, c) in batch if c is not None}
        claims = await self.claim_many([n for _, (n, _) in batch], contents)
        return [claims[key] for key, _ in batch]

    async def mark(self, notification_id: str, status: Status, *, message_id: str | None = None,
                   smtp_code: int | None = None, reason: str | None = None, attempt: bool = False) -> bool:
        """Record an attempt's result or an outcome (with the marks of concurrent callers, one statement).
        False when this instance no longer holds the claim: nothing was written (another instance took
        the notification over when the lease ran out)."""
        return await self._marks(notification_id, {"status": status.value, "message_id": message_id,
                                                   "smtp_code": smtp_code, "reason": reason,
                                                   "attempt": 1 if attempt else 0, "final": status in FINAL})

    async def _mark_many(self, batch: list[tuple[str, dict[str, Any]]]) -> list[bool]:
        marks = [mark for _, mark in sorted(batch, key=lambda kv: kv[0])]
        written = {row["notification_id"] for row in await self._fetchall(_MARK, {
            "ids": sorted(key for key, _ in batch), "statuses": [m["status"] for m in marks],
            "message_ids": [m["message_id"] for m in marks], "codes": [m["smtp_code"] for m in marks],
            "reasons": [m["reason"] for m in marks], "attempts": [m["attempt"] for m in marks],
            "finals": [m["final"] for m in marks], "lease": self.lease, "owner": self.owner})}
        return [key in written for key, _ in batch]

    async def renew(self, notification_id: str) -> bool:
        """Extend this instance's lease on a claim it still holds (PENDING or RETRYING): a send waiting
        out a retry backoff longer than the lease keeps it. False when the claim is no longer ours."""
        return await self._fetchone(_RENEW, (self.lease, notification_id, self.owner)) is not None

    async def mark_sending(self, notification_id: str, message_id: str) -> bool:
        """Just before DATA: True when this instance still holds the claim (and has now marked it
        SENDING); False when its lease ran out and another instance took the notification over.
        Concurrent callers' marks go in one statement; each caller returns once its row is written."""
        return await self._sending(notification_id, message_id)

    async def _mark_sending_many(self, batch: list[tuple[str, str]]) -> list[bool]:
        rows = sorted(batch)
        held = {row["notification_id"] for row in await self._fetchall(_MARK_SENDING, {
            "ids": [key for key, _ in rows], "message_ids": [mid for _, mid in rows], "lease": self.lease,
            "owner": self.owner})}
        return [key in held for key, _ in batch]

    async def record_final(self, n: Notification, status: Status, reason: str,
                           content: Content | None = None) -> Recorded:
        """An outcome decided without sending (SUPPRESSED, NO_ADDRESS), idempotently: ``recorded`` when
        this call recorded it, ``done`` when the ledger already held the notification, ``superseded``
        when it held a final outcome of other content, ``uncertain`` when it held a row left SENDING
        by an instance that died during DATA (now recorded UNCERTAIN, as a claim would). The caller
        holds the notification id alone in this process (a live send of its own is not a death)."""
        row = await self._fetchone(
            "SELECT * FROM notify.record_final(%s, %s, %s, %s, %s, %s, %s, %s::text, %s::bytea, %s::text)",
            (n.notification_id, n.record_id, n.trainee_id, n.day, n.kind.value, status.value, reason,
             content.hash if content else None, content.value if content else None, self.owner))
        assert row is not None  # noqa: S101  an invariant for the type checker, not a check of input
        return Recorded(row["o_decision"], row["o_old_hash"], row["o_generation"])

    async def release(self, *notification_ids: str) -> None:
        """Give up claims without an outcome (a drain mid-retry, or before the send began): the next
        claim may take them at once. Only a claim still PENDING or RETRYING is given up, never SENDING."""
        if notification_ids:
            await self._execute(
                "UPDATE notify.ledger SET owner = NULL, lease_until = now(), updated_at = now()"
                " WHERE notification_id = ANY(%s) AND owner = %s AND status IN ('PENDING', 'RETRYING')",
                (sorted(notification_ids), self.owner))

    async def status(self, notification_id: str) -> dict[str, Any] | None:
        return await self._fetchone("SELECT * FROM notify.ledger WHERE notification_id = %s", (notification_id,))
