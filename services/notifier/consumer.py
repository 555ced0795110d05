"""The mailer's shell: net-change records from Kafka → ledger → compose → SMTP → delivery status.

Offsets are committed only after the ledger holds every outcome of the records they cover and the
status events are acknowledged. A notification the ledger already holds as final is a no-op (a
replay). On SIGTERM no new record is started; those in flight finish, and only the contiguous
prefix of finished records of each partition is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import Counter, Gauge, Histogram

from services import logs, serde
from services.kafka_security import aiokafka_kwargs
from services.notifier import compose
from services.notifier.document import UncertainAttempt
from services.notifier.ledger import Claim, Decision, Ledger
from services.notifier.plan import (
    Content,
    Kind,
    Notification,
    Status,
    backoff,
    content_hash,
    message_id,
    notifications,
    send_after,
    unsent_reason,
)
from services.notifier.render import Context, Rendered, Renderer
from services.notifier.smtp import Attempt, Outcome, SmtpPool
from services.settings import MailerSettings

log = logs.get("mailer")

SENT = Counter("mailer_sent_total", "emails accepted by the relay", ["kind"])
FAILED = Counter("mailer_failed_total", "notifications that finally failed", ["reason"])
RETRIED = Counter("mailer_retried_total", "send attempts that will be retried")
OUTCOMES = Counter("mailer_outcomes_total", "final ledger outcomes", ["status"])
REPLAYS = Counter("mailer_replays_skipped_total", "records whose notifications the ledger already held")
LATENCY = Histogram("mailer_send_seconds", "one SMTP attempt, connect to final reply")
LAG = Gauge("mailer_consumer_lag", "records not yet consumed, per partition", ["partition"])
CONFIG_ALERT = Gauge("mailer_relay_refused_auth", "1 when the relay refused our credentials (530/535) or its "
                     "certificate is not trusted: sending stopped")

UNDECODABLE = "undecodable net-change record"
SUPERSEDED_REASON = "a record with this id and other content was already final: not sent"

# the coordinates of the record being handled (this task's), for the dead-letter headers
SOURCE: contextvars.ContextVar[tuple[str, int, int] | None] = contextvars.ContextVar("source", default=None)
DIED_IN_DATA = "the sending instance stopped during DATA"

# Reasons the mailer itself words, safe to log as they are. Anything else (a relay's reply text, a
# record's free text) is logged only as its SMTP code: a reply may echo a name or an address.
_LOGGABLE_REASONS = frozenset({
    compose.NOTHING_TO_SEND, compose.NO_ADDRESS, compose.ADDRESS_NOT_VALID, compose.HEADER_NOT_VALID,
    compose.SENDER_NOT_VALID, compose.MESSAGE_ID_NOT_VALID, compose.RECORD_NOT_VALID, DIED_IN_DATA,
    "no notifiable change", "placement type not in post", "placement ended before the day",
    "placeholder person", "dummy record person", SUPERSEDED_REASON,
})
_LOGGABLE_PREFIXES = ("connection error: ", "connection lost after DATA: ", UNDECODABLE)


def loggable_reason(reason: str | None) -> str | None:
    """``reason`` when the mailer worded it; otherwise a placeholder (never server or record text)."""
    if reason is None or reason in _LOGGABLE_REASONS or reason.startswith(_LOGGABLE_PREFIXES):
        return reason
    return "<relay reply>"


class RelayRefused(RuntimeError):
    """The relay refused our authentication: a configuration fault, not the trainee's."""


class Abandoned(Exception):
    """A notification given up without an outcome (the mailer is draining): its offset is not committed."""


class HeldElsewhere(RuntimeError):
    """Another live instance held (and kept renewing) the claim for longer than the wait allows: a
    fault (the record must not be committed past), as the plain RuntimeError before it was."""


BUSY_PATIENCE = 240.0  # seconds: below aiokafka's max_poll_interval_ms (300 s) and worth one backoff


class LeaseLost(Abandoned):
    """The claim's lease ran out before DATA and another instance took the notification over."""


@dataclass
class Mailer:
    settings: MailerSettings
    ledger: Ledger
    pool: SmtpPool
    producer: AIOKafkaProducer
    contacts: compose.Contacts
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set: drain (no new records, no more retries)
    halt: asyncio.Event = field(default_factory=asyncio.Event)  # set: the relay refused us, send nothing more
    progress: float = field(default_factory=time.monotonic)  # the last poll, outcome or retry (liveness)
    renderer: Renderer | None = None  # None: compose and render on the event loop
    _inflight: dict[str, asyncio.Event] = field(default_factory=dict)
    # by claim_batch, not yet used
    _claimed: dict[str, tuple[Notification, Claim, Content]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.renderer is None:
            self.renderer = Renderer(Context(self.contacts, self.settings.mail_from,
                                             self.settings.allow_test_domains), 0)

    @functools.cached_property
    def sender(self) -> str:
        return parseaddr(self.settings.mail_from)[1]

    # ------------------------------------------------------------------ status and dead letters
    async def status(self, n: Notification, status: Status, *, attempt: int = 0, generation: int = 0,
                     message_id: str | None = None, code: int | None = None, reason: str | None = None,
                     **audit: str | None) -> None:
        """One DeliveryStatus event; ``audit``: its optional fields (content_hash, previous_content_hash,
        request_id, operator, operator_reason)."""
        event = {"notification_id": n.notification_id, "record_id": n.record_id, "trainee_id": n.trainee_id,
                 "day": n.day, "kind": n.kind.value, "status": status.value, "attempt": attempt,
                 "generation": generation, "message_id": message_id, "smtp_code": code, "reason": reason,
                 "instance": self.settings.instance_id, "at_ms": int(time.time() * 1000), **audit}
        await self.producer.send(self.settings.delivery_status_topic, serde.encode(serde.DELIVERY_STATUS, event),
                                 key=n.notification_id.encode())
        log.info("mail.status", notification_id=n.notification_id, status=status.value, attempt=attempt,
                 smtp_code=code, reason=loggable_reason(reason))

    async def dead_letter(self, value: bytes, reason: str, notification_id: str | None = None) -> None:
        headers = [("reason", reason.encode())]
        if notification_id:
            headers.append(("notification_id", notification_id.encode()))
        source = SOURCE.get()
        if source is not None:  # where the record was read: ``trainee-notify deadletter`` shows and retries it
            headers += [("source.topic", source[0].encode()), ("source.partition", str(source[1]).encode()),
                        ("source.offset", str(source[2]).encode())]
        await self.producer.send(self.settings.mail_dlq_topic, value, key=(notification_id or "").encode() or None,
                                 headers=headers)
        FAILED.labels(reason.split(":")[0][:40]).inc()

    async def outcome(self, n: Notification, status: Status, raw: bytes, *, generation: int = 0,
                      reason: str | None = None, attempt: Attempt | None = None, attempt_no: int = 0,
                      message_id: str | None = None, audit: dict[str, str | None] | None = None) -> None:
        """Record a final outcome of a claimed notification: ledger first, then the status event (and
        the dead letter when it failed)."""
        self.progress = time.monotonic()
        code = attempt.code if attempt else None
        if not await self.ledger.mark(n.notification_id, status, smtp_code=code, reason=reason,
                                      message_id=message_id if status is Status.SENT else None):
            # the lease ran out and another instance holds the notification now: its outcome stands
            log.warning("mail.outcome_not_recorded", notification_id=n.notification_id, status=status.value,
                        why="lease lost")
            raise LeaseLost(n.notification_id)
        await self.status(n, status, attempt=attempt_no, generation=generation, message_id=message_id, code=code,
                          reason=reason, **(audit or {}))
        OUTCOMES.labels(status.value).inc()
        if status is Status.FAILED:
            await self.dead_letter(raw, reason or "failed", n.notification_id)

    # ------------------------------------------------------------------ one record
    async def handle(self, raw: bytes, record: dict[str, Any] | None = None) -> None:
        if record is None:
            try:
                record = decode(raw)
            except ValueError as exc:
                await self.dead_letter(raw, f"{UNDECODABLE}: {exc}")
                log.error("mail.undecodable_record", error=str(exc))
                return
        content = Content(content_hash(record), raw)
        for n in notifications(record):
            await self.deliver(n, record, raw, content)

    async def deliver(self, n: Notification, record: dict[str, Any], raw: bytes,
                      content: Content | None = None) -> None:
        content = content or Content(content_hash(record), raw)
        # one task per notification id, the outcomes recorded without sending included: a duplicate of
        # a send still in DATA must not take that live send for one that died (record_final settles a
        # SENDING row of this instance as UNCERTAIN: after a restart that is what it is)
        async with self._exclusive(n.notification_id):
            if not needs_claim(n, record):
                await self._record_unsent(n, record, content)
                return
            claim = await self._claim(n, content)
            if claim is not None:
                await self._compose_and_send(n, claim, record, raw, content)

    async def _record_unsent(self, n: Notification, record: dict[str, Any], content: Content) -> None:
        unsent = unsent_reason(record)
        assert unsent is not None  # noqa: S101  an invariant for the type checker, not a check of input
        reason = ((record.get("suppressed") or "no notifiable change") if unsent is Status.SUPPRESSED
                  else "no address")
        done = await self.ledger.record_final(n, unsent, reason, content)
        if done.decision == "recorded":
            await self.status(n, unsent, reason=reason, content_hash=content.hash)
            OUTCOMES.labels(unsent.value).inc()
        elif done.decision == "superseded":
            await self._report_superseded(n, done.old_hash, content.hash, done.generation)
        elif done.decision == "uncertain":  # its earlier send died during DATA: reported as a claim would
            await self.status(n, Status.UNCERTAIN, generation=done.generation, reason=DIED_IN_DATA)
            OUTCOMES.labels("UNCERTAIN").inc()
        else:
            REPLAYS.inc()

    async def _report_superseded(self, n: Notification, old_hash: str | None, new_hash: str,
                                 generation: int = 0) -> None:
        await self.status(n, Status.SUPERSEDED, generation=generation, reason=SUPERSEDED_REASON,
                          content_hash=new_hash, previous_content_hash=old_hash)
        OUTCOMES.labels(Status.SUPERSEDED.value).inc()
        log.warning("mail.superseded", notification_id=n.notification_id, old_hash=old_hash, new_hash=new_hash)

    @contextlib.asynccontextmanager
    async def _exclusive(self, notification_id: str) -> AsyncIterator[None]:
        """One task per notification id in this process: a duplicate record in the same batch waits
        for the first and then finds its outcome in the ledger (the lease cannot tell them apart)."""
        while (busy := self._inflight.get(notification_id)) is not None:
            await busy.wait()
        done = self._inflight[notification_id] = asyncio.Event()
        try:
            yield
        finally:
            del self._inflight[notification_id]
            done.set()

    # ------------------------------------------------------------------ claims
    async def claim_batch(self, items: Sequence[Inbound]) -> None:
        """Claim, in one transaction, every notification of ``items`` that will need a claim (the
        first record of each id; a duplicate claims on its own once the first is done)."""
        wanted: dict[str, Notification] = {}
        contents: dict[str, Content] = {}
        for item in items:
            if item.record is None:
                continue
            content: Content | None = None
            for n in notifications(item.record):
                if n.notification_id not in wanted and n.notification_id not in self._inflight and needs_claim(
                        n, item.record):
                    wanted[n.notification_id] = n
                    content = content or Content(content_hash(item.record), item.raw)
                    contents[n.notification_id] = content
        claims = await self.ledger.claim_many(list(wanted.values()), contents)
        self._claimed.update({nid: (wanted[nid], claim, contents[nid]) for nid, claim in claims.items()})

    async def unclaim_unused(self) -> None:
        """After a batch: the claims of records that were not started (a drain, a halt, a fault) are
        released, and an UNCERTAIN found by the claim is reported as it would have been when used."""
        unused, self._claimed = self._claimed, {}
        await self.ledger.release(*(nid for nid, (_, c, _) in unused.items() if c.decision is Decision.SEND))
        for n, claim, content in unused.values():
            if claim.decision is Decision.UNCERTAIN:
                await self._report_uncertain(n, claim)
            elif claim.decision is Decision.SUPERSEDED:
                await self._report_superseded(n, claim.old_hash, content.hash, claim.generation)

    async def _report_uncertain(self, n: Notification, claim: Claim) -> None:
        await self.status(n, Status.UNCERTAIN, generation=claim.generation, reason=DIED_IN_DATA)
        OUTCOMES.labels("UNCERTAIN").inc()

    async def _claim(self, n: Notification, content: Content | None = None) -> Claim | None:
        """The ledger's claim (made for the batch, else now), waiting while another live instance
        holds it; None when there is nothing to send."""
        claimed = self._claimed.pop(n.notification_id, None)
        if claimed is not None and content is not None and claimed[2].hash != content.hash:
            # claimed for another record with this id in the batch (other content): claim again for this one
            if claimed[1].decision is Decision.SEND:
                await self.ledger.release(n.notification_id)
            claimed = None
        claim = claimed[1] if claimed is not None else await self.ledger.claim(n, content)
        waited = 0.0
        # a live holder renews its lease through its retry backoffs: wait out one backoff, but well
        # inside Kafka's poll interval (300 s), and as progress (the wait is work, not a stall)
        patience = min(self.settings.smtp_retry_cap_seconds + 2 * self.settings.ledger_lease_seconds, BUSY_PATIENCE)
        while claim.decision is Decision.BUSY and waited < patience:
            if self.stop.is_set() or self.halt.is_set():
                raise Abandoned(n.notification_id)  # the other instance will record the outcome
            await asyncio.sleep(0.5)
            waited += 0.5
            self.progress = time.monotonic()
            claim = await self.ledger.claim(n, content)
        if claim.decision is Decision.SUPERSEDED:
            await self._report_superseded(n, claim.old_hash, content.hash if content else "", claim.generation)
            return None
        if claim.decision is Decision.DONE:
            REPLAYS.inc()
            log.info("mail.replay_skipped", notification_id=n.notification_id, status=claim.status)
            return None
        if claim.decision is Decision.UNCERTAIN:
            await self._report_uncertain(n, claim)
            return None
        if claim.decision is Decision.BUSY:
            # still held and renewed by another live instance: a fault, so that this record is not
            # committed past (the process restarts and reads it again; by then it is DONE or free)
            log.warning("mail.held_elsewhere", notification_id=n.notification_id, waited_seconds=waited)
            raise HeldElsewhere(f"notification {n.notification_id} is held by another live instance")
        return claim

    async def _compose_and_send(self, n: Notification, claim: Claim, record: dict[str, Any], raw: bytes,
                                content: Content | None = None) -> None:
        mid = message_id(n.notification_id, claim.generation, self.settings.message_id_domain)
        new_hash = content.hash if content else None
        audit = {"content_hash": new_hash,
                 "previous_content_hash": claim.old_hash if claim.old_hash not in (None, new_hash) else None,
                 "request_id": claim.request_id, "operator": claim.operator, "operator_reason": claim.operator_reason}
        # a copy names when the original went; a resend of one never sent is simply a first send
        copy_of = claim.first_sent_at if claim.is_copy else None
        if copy_of is not None and claim.status == Status.UNCERTAIN.value:
            row = await self.ledger.status(n.notification_id)  # rare: a resend of an uncertain attempt
            if row is not None and row.get("first_sent_at") is None and row.get("sent_at") is None:
                copy_of = UncertainAttempt.fromtimestamp(copy_of.timestamp(), copy_of.tzinfo)  # never confirmed
        assert self.renderer is not None  # noqa: S101  an invariant for the type checker, not a check of input
        composed = await self.renderer(n.kind, record, mid, copy_of)
        if isinstance(composed, compose.Refusal):
            status = {compose.NOTHING_TO_SEND: Status.SUPPRESSED, compose.NO_ADDRESS: Status.NO_ADDRESS}.get(
                composed.reason, Status.FAILED)
            await self.outcome(n, status, raw, generation=claim.generation, reason=composed.reason, audit=audit)
            return
        await self.send(n, composed, claim.generation, raw, audit)

    async def send(self, n: Notification, composed: Rendered, generation: int, raw: bytes,
                   audit: dict[str, str | None] | None = None) -> None:
        started = time.monotonic()
        attempt = 0
        while True:
            if self.halt.is_set():
                await self.ledger.release(n.notification_id)
                raise Abandoned(n.notification_id)
            attempt += 1

            async def in_flight() -> None:
                if not await self.ledger.mark_sending(n.notification_id, composed.message_id):
                    log.warning("mail.lease_lost", notification_id=n.notification_id)
                    raise LeaseLost(n.notification_id)  # another instance owns it now: no DATA from us

            t0 = time.monotonic()
            result = await self.pool.send(composed.data, self.sender, composed.to, before_data=in_flight)
            LATENCY.observe(time.monotonic() - t0)
            common: dict[str, Any] = {"attempt": result, "attempt_no": attempt, "generation": generation,
                                      "message_id": composed.message_id, "audit": audit}
            if result.outcome is Outcome.SENT:
                await self.outcome(n, Status.SENT, raw, reason=None, **common)
                SENT.labels(n.kind.value).inc()
                return
            if result.outcome is Outcome.UNCERTAIN:
                await self.outcome(n, Status.UNCERTAIN, raw, reason=result.reason, **common)
                return
            if result.outcome is Outcome.CONFIG:
                CONFIG_ALERT.set(1)
                self.halt.set()
                with contextlib.suppress(LeaseLost):  # the alert and the stop matter more than this mark
                    await self._not_yet(n, result, attempt, generation, composed.message_id, audit)
                await self.ledger.release(n.notification_id)
                raise RelayRefused(f"relay refused authentication ({result.code})" if result.code
                                   else result.reason or "relay refused")
            horizon_passed = time.monotonic() - started > self.settings.smtp_retry_horizon_seconds
            if result.outcome is Outcome.FAILED or horizon_passed:
                reason = (result.reason if result.outcome is Outcome.FAILED
                          else f"gave up after {attempt} attempts: {result.reason}")
                await self.outcome(n, Status.FAILED, raw, reason=reason, **common)
                return
            RETRIED.inc()
            await self._not_yet(n, result, attempt, generation, composed.message_id, audit)
            await self._pause(backoff(attempt, self.settings.smtp_retry_base_seconds,
                                      self.settings.smtp_retry_cap_seconds), n)

    async def _not_yet(self, n: Notification, result: Attempt, attempt: int, generation: int, mid: str,
                       audit: dict[str, str | None] | None = None) -> None:
        self.progress = time.monotonic()
        if not await self.ledger.mark(n.notification_id, Status.RETRYING, smtp_code=result.code, reason=result.reason):
            log.warning("mail.lease_lost", notification_id=n.notification_id, during="retry")
            raise LeaseLost(n.notification_id)
        await self.status(n, Status.RETRYING, attempt=attempt, generation=generation, message_id=mid,
                          code=result.code, reason=result.reason, **(audit or {}))

    async def _pause(self, seconds: float, n: Notification) -> None:
        """The backoff before a retry, cut short by a drain: then the claim is released, not decided.
        The lease is renewed while it waits (a backoff may outlast it); a renewal refused means another
        instance took the notification over: no further attempt from here."""
        until = time.monotonic() + seconds
        every = max(0.5, self.settings.ledger_lease_seconds / 3)
        while not (self.stop.is_set() or self.halt.is_set()):
            left = until - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), min(left, every))
            if time.monotonic() < until and not self.stop.is_set():
                try:
                    held = await self.ledger.renew(n.notification_id)
                except psycopg.OperationalError:  # the database away for a moment: try at the next turn
                    log.warning("mail.lease_renewal_failed", notification_id=n.notification_id)
                    continue
                if not held:
                    log.warning("mail.lease_lost", notification_id=n.notification_id, during="backoff")
                    raise LeaseLost(n.notification_id)
                self.progress = time.monotonic()  # a backoff kept alive is progress
        if self.stop.is_set() or self.halt.is_set():
            await self.ledger.release(n.notification_id)
            raise Abandoned(n.notification_id)


def needs_claim(n: Notification, record: dict[str, Any]) -> bool:
    """False when the outcome is decided without sending (recorded as final, no claim): a suppressed
    record, or a digest without an address."""
    unsent = unsent_reason(record)
    return not (unsent is Status.SUPPRESSED or (unsent is Status.NO_ADDRESS and n.kind is Kind.DIGEST))


def decode(raw: bytes) -> dict[str, Any]:
    """A net-change record; ValueError (with a reason free of content) when it cannot be read."""
    try:
        return serde.decode(serde.NETCHANGE, raw)
    except serde.SchemaMismatch as exc:
        raise ValueError(str(exc)) from None
    except (ValueError, EOFError, IndexError, TypeError, KeyError) as exc:
        raise ValueError(type(exc).__name__) from None


@dataclass
class Inbound:
    """One consumed record, decoded once (``record`` None when it cannot be read)."""

    tp: TopicPartition
    offset: int
    raw: bytes
    record: dict[str, Any] | None
    done: bool = False


def inbound(batch: dict[TopicPartition, list[Any]]) -> list[Inbound]:
    out = []
    for tp, msgs in batch.items():
        for m in msgs:
            try:
                record: dict[str, Any] | None = decode(m.value)
            except ValueError:
                record = None
            out.append(Inbound(tp, m.offset, m.value, record))
    return out


def due(item: Inbound, settings: MailerSettings) -> float:
    """Epoch seconds from which a record's digest may go (0 when it may go now or cannot be read)."""
    if settings.send_immediately or item.record is None:
        return 0.0
    return send_after(item.record["day"], settings.send_at, settings.timezone).timestamp()


def committable(items: Sequence[Inbound]) -> dict[TopicPartition, int]:
    """Per partition, the offset after the last record of the contiguous prefix that is done."""
    offsets: dict[TopicPartition, int] = {}
    blocked: set[TopicPartition] = set()
    for item in sorted(items, key=lambda i: (i.tp.topic, i.tp.partition, i.offset)):
        if item.tp in blocked:
            continue
        if item.done:
            offsets[item.tp] = item.offset + 1
        else:
            blocked.add(item.tp)
    return offsets


async def process(mailer: Mailer, items: list[Inbound]) -> BaseException | None:
    """Handle a batch, concurrently up to twice the SMTP pool; returns the first fault (if any).
    The batch's notifications are claimed together first; records not started when a drain or a
    halt begins are left undone and their claims released."""
    slots = asyncio.Semaphore(mailer.settings.smtp_pool_size * 2)

    async def one(item: Inbound) -> None:
        async with slots:
            if mailer.stop.is_set() or mailer.halt.is_set():
                return
            SOURCE.set((item.tp.topic, item.tp.partition, item.offset))  # this task's own context
            await mailer.handle(item.raw, item.record)
            item.done = True

    try:
        try:
            await mailer.claim_batch(items)
        except Exception as exc:  # noqa: BLE001 - nothing was started: a fault like any other
            return exc
        results = await asyncio.gather(*(one(i) for i in items), return_exceptions=True)
    finally:
        await mailer.unclaim_unused()
    faults = [r for r in results if isinstance(r, BaseException) and not isinstance(r, Abandoned)]
    refused = [f for f in faults if isinstance(f, RelayRefused)]
    return (refused or faults or [None])[0]


async def wait_until(consumer: AIOKafkaConsumer, until: float, mailer: Mailer) -> None:
    """Hold off until ``until`` (epoch seconds), polling with every partition paused so the group
    keeps this member."""
    while time.time() < until and not mailer.stop.is_set():
        mailer.progress = time.monotonic()
        consumer.pause(*consumer.assignment())
        await consumer.getmany(timeout_ms=min(1000, int((until - time.time()) * 1000) + 1))
    consumer.resume(*consumer.assignment())


async def commit(consumer: AIOKafkaConsumer, mailer: Mailer, items: list[Inbound]) -> None:
    """Status events acknowledged, then the offsets of what the ledger holds."""
    await mailer.producer.flush()
    offsets = committable(items)
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, KafkaError) as exc:
        log.warning("mail.commit_failed", error=type(exc).__name__)  # rebalanced: the ledger dedupes


async def report_lag(consumer: AIOKafkaConsumer) -> None:
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is not None:
            LAG.labels(str(tp.partition)).set(max(0, high - (await consumer.position(tp))))


class LogRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Say which partitions this instance holds after every rebalance (ids only)."""

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            log.info("mailer.partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("mailer.partitions_assigned", partitions=sorted(tp.partition for tp in assigned))


async def consume(mailer: Mailer, ready: asyncio.Event | None = None) -> None:
    s = mailer.settings
    consumer = AIOKafkaConsumer(
        **aiokafka_kwargs(s), group_id=s.group_id,
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=s.batch_size,
        session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=max(1000, s.session_timeout_ms // 5),
        client_id=s.instance_id)
    consumer.subscribe([s.netchange_topic], listener=LogRebalance())
    await consumer.start()
    if ready is not None:
        ready.set()
    try:
        while not mailer.stop.is_set():
            mailer.progress = time.monotonic()
            batch = await consumer.getmany(timeout_ms=500, max_records=s.batch_size)
            if not batch:
                continue
            items = inbound(batch)
            now = time.time()
            # what may go now goes now; a day's digests that wait for the send time hold their offsets
            # (uncommitted, so the wait survives a restart) while the consumer keeps polling
            due_at = {id(i): due(i, s) for i in items}
            waiting = [i for i in items if due_at[id(i)] > now]
            for group, until in (([i for i in items if due_at[id(i)] <= now], 0.0),
                                 (waiting, max((due_at[id(i)] for i in waiting), default=0.0))):
                if not group:
                    continue
                await wait_until(consumer, until, mailer)
                fault = await process(mailer, group)
                await commit(consumer, mailer, items)
                if fault is not None:
                    raise fault
            await report_lag(consumer)
    finally:
        await consumer.stop()
