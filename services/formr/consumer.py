"""The shell that keeps the read model: CDC topics -> checked changes -> PostgreSQL, then offsets.

Per batch: parse and check every message (services.netchange.cdc), send what cannot be used to the
CDC dead-letter topic with its reason and coordinates and wait until the broker has it, write the
rest in ONE database transaction, and only then commit the batch's offsets. A crash anywhere replays
at most the uncommitted batch, and a replay changes nothing (each row keeps the newest rank). A
rebalance happens inside ``consume`` — between batches, when everything read has been committed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from services import logs
from services.formr.readmodel import TABLES, Write, to_write
from services.formr.store import apply_writes, ensure_schema
from services.kafka_security import librdkafka_config
from services.netchange.cdc import MalformedEnvelope, parse_envelope

if TYPE_CHECKING:
    from services.settings import KafkaSettings

log = logs.get("formr.consumer")


def topics_of(prefix: str) -> list[str]:
    return [f"{prefix}.tss.{t}" for t in TABLES]


def decide(topic: str, value: bytes | None) -> Write | None:
    """One message -> a write, ``None`` to skip it; raises MalformedEnvelope for poison."""
    change = parse_envelope(value)
    if change is None:
        return None  # a tombstone
    if not topic.endswith(".tss." + change.table):
        raise MalformedEnvelope("source.table does not match the topic")
    return to_write(change)


class ReadModelConsumer:
    def __init__(self, *, kafka: KafkaSettings, group_id: str, topics: list[str], dlq_topic: str, dsn: str,
                 batch_size: int = 500, on_batch: Callable[[int], None] | None = None) -> None:
        self.topics = topics
        self.dlq_topic = dlq_topic
        self.dsn = dsn
        self.batch_size = batch_size
        self.on_batch = on_batch
        self.stopping = threading.Event()
        # set while the last poll found nothing new: the read model holds everything the connector
        # has published so far (the reminders wait for it, so a form streamed a moment after its
        # ARCP is never missed by a tick that ran in between)
        self.caught_up = threading.Event()
        self.synced = threading.Event()  # caught up at least once since start (readiness)
        self.consumer = Consumer(librdkafka_config(kafka, **{
            "group.id": group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": 10000}))
        self.producer = Producer(librdkafka_config(kafka, **{"enable.idempotence": True, "linger.ms": 5}))
        self.processed = 0
        self.dead = 0
        self.progress = time.monotonic()  # the last poll that returned, or batch that was applied

    def idle(self) -> float:
        """Seconds since the loop last made progress (liveness: a poll returned, a batch was applied)."""
        return time.monotonic() - self.progress

    def _dead_letter(self, msg: Message, reason: str) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("reason", reason.encode()), ("source.topic", (msg.topic() or "").encode()),
            ("source.partition", str(msg.partition()).encode()),
            ("source.offset", str(msg.offset()).encode()), ("source.service", b"formr")]
        self.producer.produce(self.dlq_topic, key=msg.key(), value=msg.value(), headers=headers)
        self.dead += 1
        log.warning("formr.dead_letter", topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                    reason=reason)

    def process(self, conn: psycopg.Connection[Any], msgs: list[Message]) -> int:
        writes: list[Write] = []
        offsets: dict[tuple[str, int], int] = {}
        poison = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("formr.kafka_error", error=str(err))
                continue
            topic, part = msg.topic() or "", msg.partition() or 0
            offsets[(topic, part)] = max(offsets.get((topic, part), -1), msg.offset() or 0)
            try:
                w = decide(topic, msg.value())
            except MalformedEnvelope as exc:
                self._dead_letter(msg, exc.reason)
                poison += 1
                continue
            if w is not None:
                writes.append(w)
        if poison:
            left = self.producer.flush(30)
            if left:
                raise RuntimeError(f"{left} dead letters not acknowledged; not committing")
        with conn.transaction():
            changed = apply_writes(conn, writes)
        if offsets:
            self.consumer.commit(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in sorted(offsets.items())],
                                 asynchronous=False)
        self.processed += len(msgs)
        log.info("formr.batch", messages=len(msgs), writes=len(writes), changed=changed, dead=poison)
        return changed

    def at_end(self) -> bool:
        """Whether this consumer has partitions and has read each to its end. An empty poll alone is
        not enough: before the group assigns partitions, or before the first fetch, polls are empty
        too (a reminder pass then would see an empty read model)."""
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        try:
            positions = self.consumer.position(assigned)
            committed = {(tp.topic, tp.partition): tp.offset for tp in self.consumer.committed(assigned, timeout=10)}
            for tp in positions:
                low, high = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                at = tp.offset if tp.offset >= 0 else committed.get((tp.topic, tp.partition), -1)
                if (at if at >= 0 else low) < high:
                    return False
        except KafkaException as exc:
            log.warning("formr.consumer.position_unknown", error=str(exc))
            return False
        return True

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            ensure_schema(conn)
            self.consumer.subscribe(self.topics)
            log.info("formr.consumer.start", topics=self.topics)
            try:
                while not self.stopping.is_set():
                    msgs = self.consumer.consume(self.batch_size, timeout=0.5)
                    self.progress = time.monotonic()
                    if not msgs:
                        if not self.caught_up.is_set() and self.at_end():
                            self.caught_up.set()
                            self.synced.set()
                        continue
                    self.caught_up.clear()
                    changed = self.process(conn, msgs)
                    self.progress = time.monotonic()
                    if self.on_batch is not None:
                        self.on_batch(changed)
            finally:
                self.consumer.close()
                self.producer.flush(10)
