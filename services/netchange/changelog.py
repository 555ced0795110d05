"""Table writes whose changelog messages go out in batches, and are delivered before an ack.

faust sends one changelog message per table write, each through its producer buffer and aiokafka:
a task, futures and callbacks per message, about a third of the aggregator's CPU per CDC event
(docs/benchmarks.md). It also commits a stream's offsets without waiting for those messages
(``Consumer._commit_tps`` waits only for "attached" messages), so a crash just after a commit can
lose state written before it. :class:`Changelog` writes the table's own store (the RocksDB
partition of the current event, as faust does) and queues the same changelog message (same topic,
partition, key and value bytes; ``None`` for a delete) on one librdkafka producer; :meth:`flush`
waits until the broker has every queued message, then records the offsets delivered as the store's
persisted offsets (what faust reads on restart to replay only the changelog's tail); a stage would
acknowledge its input only after a flush. faust's recovery reads these changelogs as its own. Not
used by the aggregator yet: wired in, the suite's kill -9 and stream-equals-batch tests failed
(ADR 0003, "Status").
"""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from faust.streams import current_event
from faust.types import TP


class ChangelogError(RuntimeError):
    """The broker refused a changelog message: the worker must not acknowledge what it carried."""


class Changelog:
    POLL_EVERY = 1000

    def __init__(self, bootstrap: str, *, linger_ms: int = 5) -> None:
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
            "linger.ms": linger_ms, "batch.size": 1_000_000,  # uncompressed: faust reads it back with aiokafka
            "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1_048_576,
        })
        self._delivered: dict[tuple[str, int], int] = {}
        self._stores: dict[str, Any] = {}
        self._failed: list[str] = []
        self._since_poll = 0
        self.sent = 0

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed.append(f"{msg.topic()}[{msg.partition()}]: {err.name()}")
            return
        key = (msg.topic(), msg.partition())
        offset = msg.offset()
        if offset > self._delivered.get(key, -1):
            self._delivered[key] = offset

    def _partition(self) -> int:
        event = current_event()
        if event is None:
            raise RuntimeError("a table write outside stream processing has no partition")
        return int(event.message.partition)

    def _queue(self, table: Any, partition: int, key: bytes, value: bytes | None) -> None:
        topic = table.changelog_topic.get_topic_name()
        self._stores[topic] = table.data
        while True:
            try:
                self.producer.produce(topic, value, key, partition=partition, on_delivery=self._on_delivery)
                break
            except BufferError:
                self.producer.poll(0.05)  # the local queue is full: let deliveries drain it
        self.sent += 1
        self._since_poll += 1
        if self._since_poll >= self.POLL_EVERY:
            self._since_poll = 0
            self.producer.poll(0)

    def set(self, table: Any, key: bytes, value: bytes) -> None:
        partition = self._partition()
        table.data[key] = value
        self._queue(table, partition, key, value)

    def delete(self, table: Any, key: bytes) -> None:
        partition = self._partition()
        try:
            del table.data[key]
        except KeyError:
            pass
        self._queue(table, partition, key, None)

    def pending(self) -> int:
        return len(self.producer)

    async def flush(self) -> None:
        """Wait until the broker has every queued message; then persist the offsets delivered."""
        while self.producer.flush(0) > 0:
            await asyncio.sleep(0.001)
        if self._failed:
            failed, self._failed = self._failed[:5], []
            raise ChangelogError(f"changelog messages refused: {failed}")
        for (topic, partition), offset in self._delivered.items():
            self._stores[topic].set_persisted_offset(TP(topic, partition), offset)
        self._delivered.clear()

    def close(self) -> None:
        self.producer.flush(30)
