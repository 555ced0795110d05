"""The mailer's shell: net-change records from Kafka → ledger → compose → SMTP → delivery status.

Offsets are committed only after the ledger holds every outcome of the batch and the status events
are acknowledged. A notification the ledger already holds as final is a no-op (a replay).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import Counter, Gauge, Histogram

from services import logs, serde
from services.notifier import compose
from services.notifier.ledger import Decision, Ledger
from services.notifier.plan import Kind, Notification, Status, backoff, message_id, notifications, send_after, unsent_reason
from services.notifier.smtp import Outcome, SmtpPool
from services.settings import MailerSettings

log = logs.get("mailer")

SENT = Counter("mailer_sent_total", "emails accepted by the relay", ["kind"])
FAILED = Counter("mailer_failed_total", "notifications that finally failed", ["reason"])
RETRIED = Counter("mailer_retried_total", "send attempts that will be retried")
OUTCOMES = Counter("mailer_outcomes_total", "final ledger outcomes", ["status"])
REPLAYS = Counter("mailer_replays_skipped_total", "records whose notifications the ledger already held")
LATENCY = Histogram("mailer_send_seconds", "one SMTP attempt, connect to final reply")
LAG = Gauge("mailer_consumer_lag", "records not yet consumed, per partition", ["partition"])
CONFIG_ALERT = Gauge("mailer_relay_refused_auth", "1 when the relay refused our credentials (530/535): sending stopped")


class RelayRefused(RuntimeError):
    """The relay refused our authentication: a configuration fault, not the trainee's."""


@dataclass
class Mailer:
    settings: MailerSettings
    ledger: Ledger
    pool: SmtpPool
    producer: AIOKafkaProducer
    contacts: compose.Contacts

    @property
    def sender(self) -> str:
        return parseaddr(self.settings.mail_from)[1]

    # ------------------------------------------------------------------ status and dead letters
    async def status(self, n: Notification, status: Status, *, attempt: int = 0, generation: int = 0,
                     message_id: str | None = None, code: int | None = None, reason: str | None = None) -> None:
        event = {"notification_id": n.notification_id, "record_id": n.record_id, "trainee_id": n.trainee_id,
                 "day": n.day, "kind": n.kind.value, "status": status.value, "attempt": attempt,
                 "generation": generation, "message_id": message_id, "smtp_code": code, "reason": reason,
                 "instance": self.settings.instance_id, "at_ms": int(time.time() * 1000)}
        await self.producer.send(self.settings.delivery_status_topic, serde.encode(serde.DELIVERY_STATUS, event),
                                 key=n.notification_id.encode())
        log.info("mail.status", notification_id=n.notification_id, status=status.value, attempt=attempt,
                 smtp_code=code, reason=reason)

    async def dead_letter(self, value: bytes, reason: str, notification_id: str | None = None) -> None:
        headers = [("reason", reason.encode())]
        if notification_id:
            headers.append(("notification_id", notification_id.encode()))
        await self.producer.send(self.settings.mail_dlq_topic, value, key=(notification_id or "").encode() or None,
                                 headers=headers)
        FAILED.labels(reason.split(":")[0][:40]).inc()

    async def final(self, n: Notification, status: Status, reason: str, raw: bytes) -> None:
        await self.ledger.record_final(n, status, reason)
        await self.status(n, status, reason=reason)
        OUTCOMES.labels(status.value).inc()
        if status is Status.FAILED:
            await self.dead_letter(raw, reason, n.notification_id)

    # ------------------------------------------------------------------ one record
    async def handle(self, raw: bytes) -> None:
        try:
            record = serde.decode(serde.NETCHANGE, raw)
        except (serde.SchemaMismatch, ValueError, EOFError, IndexError, TypeError) as exc:
            await self.dead_letter(raw, f"undecodable net-change record: {type(exc).__name__}")
            log.error("mail.undecodable_record", error=type(exc).__name__)
            return
        for n in notifications(record):
            await self.deliver(n, record, raw)

    async def deliver(self, n: Notification, record: dict[str, Any], raw: bytes) -> None:
        unsent = unsent_reason(record)
        if unsent is Status.SUPPRESSED or (unsent is Status.NO_ADDRESS and n.kind is Kind.DIGEST):
            reason = record.get("suppressed") or "no notifiable change" if unsent is Status.SUPPRESSED else "no address"
            await self.final(n, unsent, reason, raw)
            return
        claim = await self.ledger.claim(n)
        waited = 0.0
        while claim.decision is Decision.BUSY and waited < self.settings.ledger_lease_seconds * 2:
            await asyncio.sleep(1.0)
            waited += 1.0
            claim = await self.ledger.claim(n)
        if claim.decision is Decision.DONE:
            REPLAYS.inc()
            log.info("mail.replay_skipped", notification_id=n.notification_id, status=claim.status)
            return
        if claim.decision is Decision.UNCERTAIN:
            await self.status(n, Status.UNCERTAIN, reason="the sending instance stopped during DATA")
            OUTCOMES.labels("UNCERTAIN").inc()
            return
        if claim.decision is Decision.BUSY:
            raise RuntimeError(f"notification {n.notification_id} is held by another live instance")
        mid = message_id(n.notification_id, claim.generation, self.settings.message_id_domain)
        copy_of = dt.datetime.now(dt.timezone.utc) if claim.is_copy else None
        make = compose.compose_digest if n.kind is Kind.DIGEST else compose.compose_previous_address_notice
        composed = make(record, contacts=self.contacts, message_id=mid, mail_from=self.settings.mail_from,
                        copy_of=copy_of, allow_test_domains=self.settings.allow_test_domains)
        if isinstance(composed, compose.Refusal):
            status = {compose.NOTHING_TO_SEND: Status.SUPPRESSED, compose.NO_ADDRESS: Status.NO_ADDRESS}.get(
                composed.reason, Status.FAILED)
            await self.ledger.mark(n.notification_id, status, reason=composed.reason)
            await self.status(n, status, generation=claim.generation, reason=composed.reason)
            OUTCOMES.labels(status.value).inc()
            if status is Status.FAILED:
                await self.dead_letter(raw, composed.reason, n.notification_id)
            return
        await self.send(n, composed, claim.generation, raw)

    async def send(self, n: Notification, composed: compose.ComposedEmail, generation: int, raw: bytes) -> None:
        message = compose.to_mime(composed)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1

            async def in_flight() -> None:
                await self.ledger.mark(n.notification_id, Status.SENDING, message_id=composed.message_id, attempt=True)

            t0 = time.monotonic()
            result = await self.pool.send(message, self.sender, composed.to, before_data=in_flight)
            LATENCY.observe(time.monotonic() - t0)
            common = {"attempt": attempt, "generation": generation, "message_id": composed.message_id,
                      "code": result.code, "reason": result.reason}
            if result.outcome is Outcome.SENT:
                await self.ledger.mark(n.notification_id, Status.SENT, smtp_code=result.code, reason=None)
                await self.status(n, Status.SENT, **common)
                SENT.labels(n.kind.value).inc()
                OUTCOMES.labels("SENT").inc()
                return
            if result.outcome is Outcome.UNCERTAIN:
                await self.ledger.mark(n.notification_id, Status.UNCERTAIN, reason=result.reason)
                await self.status(n, Status.UNCERTAIN, **common)
                OUTCOMES.labels("UNCERTAIN").inc()
                return
            if result.outcome is Outcome.CONFIG:
                CONFIG_ALERT.set(1)
                await self.ledger.mark(n.notification_id, Status.RETRYING, smtp_code=result.code, reason=result.reason)
                await self.status(n, Status.RETRYING, **common)
                raise RelayRefused(f"relay refused authentication ({result.code})")
            horizon_passed = time.monotonic() - started > self.settings.smtp_retry_horizon_seconds
            if result.outcome is Outcome.FAILED or horizon_passed:
                reason = result.reason if result.outcome is Outcome.FAILED else f"gave up after {attempt} attempts: {result.reason}"
                await self.ledger.mark(n.notification_id, Status.FAILED, smtp_code=result.code, reason=reason)
                await self.status(n, Status.FAILED, **{**common, "reason": reason})
                OUTCOMES.labels("FAILED").inc()
                await self.dead_letter(raw, reason, n.notification_id)
                return
            RETRIED.inc()
            await self.ledger.mark(n.notification_id, Status.RETRYING, smtp_code=result.code, reason=result.reason)
            await self.status(n, Status.RETRYING, **common)
            await asyncio.sleep(backoff(attempt, self.settings.smtp_retry_base_seconds))


def due(raw: bytes, settings: MailerSettings) -> float:
    """Epoch seconds from which a record's digest may go (0 when it may go now or cannot be read)."""
    if settings.send_immediately:
        return 0.0
    try:
        day = serde.decode(serde.NETCHANGE, raw)["day"]
    except Exception:  # noqa: BLE001 - an unreadable record is dealt with (dead-lettered) by handle()
        return 0.0
    return send_after(day, settings.send_at, settings.timezone).timestamp()


async def consume(mailer: Mailer, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    s = mailer.settings
    consumer = AIOKafkaConsumer(
        s.netchange_topic, bootstrap_servers=s.kafka_bootstrap, group_id=s.group_id,
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=s.batch_size,
        client_id=s.instance_id)
    await consumer.start()
    if ready is not None:
        ready.set()
    slots = asyncio.Semaphore(s.smtp_pool_size * 2)

    async def one(raw: bytes) -> None:
        async with slots:
            await mailer.handle(raw)

    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=s.batch_size)
            if not batch:
                continue
            wait_until = max(due(m.value, s) for msgs in batch.values() for m in msgs)
            while time.time() < wait_until and not stop.is_set():
                consumer.pause(*consumer.assignment())  # keep polling so the group keeps us
                await consumer.getmany(timeout_ms=min(1000, int((wait_until - time.time()) * 1000) + 1))
            consumer.resume(*consumer.assignment())
            if stop.is_set():
                break
            await asyncio.gather(*(one(m.value) for msgs in batch.values() for m in msgs))
            await mailer.producer.flush()
            offsets = {tp: msgs[-1].offset + 1 for tp, msgs in batch.items()}
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                log.warning("mail.commit_failed", error=type(exc).__name__)  # rebalanced: the ledger dedupes
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is not None:
                    LAG.labels(str(tp.partition)).set(max(0, high - (await consumer.position(tp))))
    finally:
        await consumer.stop()
