"""The aggregator's batched changelog writer (services/netchange/changelog.py) on the real broker and a
real faust RocksDB table store: what ``flush()`` returns after is on the broker, in order, as faust's
own changelog messages would be; the store's persisted offsets follow; a refused message fails the
flush and persists nothing."""

from __future__ import annotations

import asyncio
import uuid
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from faust.streams import _current_event
from faust.types import TP

from services.netchange.changelog import Changelog, ChangelogError
from tests.integration.conftest import consume


def _table(bootstrap: str, datadir: Path, **topic_config: str) -> tuple[Any, str]:
    """A faust RocksDB table of 2 partitions, its changelog topic created with ``topic_config``."""
    app = faust.App(f"cl-{uuid.uuid4().hex[:8]}", broker=f"kafka://{bootstrap}", store="rocksdb://",
                    datadir=str(datadir), key_serializer="raw", value_serializer="raw")
    table = app.Table("state", key_type=bytes, value_type=bytes, partitions=2)
    topic = table.changelog_topic.get_topic_name()
    if topic_config:
        admin = AdminClient({"bootstrap.servers": bootstrap})  # kept until the futures resolve
        for f in admin.create_topics([NewTopic(topic, 2, 1, config=topic_config)]).values():
            f.result(30)
    return table, topic


class _Event:
    """What faust's store and the writer read of the current event: its message's partition."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


class _On:
    """As inside stream processing: the current event is one of this partition (what faust's store
    and the writer take the partition from)."""

    def __init__(self, partition: int) -> None:
        self.event = _Event(partition)

    def __enter__(self) -> None:
        self.token = _current_event.set(weakref.ref(self.event))  # type: ignore[arg-type]

    def __exit__(self, *exc: object) -> None:
        _current_event.reset(self.token)


def test_flush_returns_once_the_broker_has_every_write_and_persists_the_offsets(stack: Any, tmp_path: Path) -> None:
    table, topic = _table(stack.bootstrap, tmp_path, **{"cleanup.policy": "compact"})
    writer = Changelog(stack.bootstrap)
    with _On(0):
        writer.set(table, b"a", b"1")
        writer.set(table, b"a", b"2")
        writer.set(table, b"gone", b"x")
        writer.delete(table, b"gone")
    with _On(1):
        writer.set(table, b"b", b"3")
    asyncio.run(writer.flush())
    assert writer.pending() == 0

    got = consume(stack.bootstrap, topic, 5, timeout=30)
    assert [(r.partition, r.raw_value) for r in got if r.partition == 0] == [
        (0, b"1"), (0, b"2"), (0, b"x"), (0, None)]  # in order; a delete is a tombstone
    assert [(r.partition, r.raw_value) for r in got if r.partition == 1] == [(1, b"3")]
    # the store holds the last values, the persisted offsets are the last ones delivered
    with _On(0):
        assert table.data.get(b"a") == b"2"
        assert table.data.get(b"gone") is None
    assert table.data.persisted_offset(TP(topic, 0)) == 3
    assert table.data.persisted_offset(TP(topic, 1)) == 0


def test_a_refused_message_fails_the_flush_and_persists_nothing(stack: Any, tmp_path: Path) -> None:
    table, topic = _table(stack.bootstrap, tmp_path, **{"max.message.bytes": "2000"})
    writer = Changelog(stack.bootstrap)
    with _On(0):
        writer.set(table, b"big", b"v" * 50_000)
    with pytest.raises(ChangelogError, match="MSG_SIZE_TOO_LARGE"):
        asyncio.run(writer.flush())
    assert table.data.persisted_offset(TP(topic, 0)) is None


def test_a_write_outside_stream_processing_is_refused(stack: Any, tmp_path: Path) -> None:
    table, _ = _table(stack.bootstrap, tmp_path)
    writer = Changelog(stack.bootstrap)
    with pytest.raises(RuntimeError, match="outside stream processing"):
        writer.set(table, b"a", b"1")
