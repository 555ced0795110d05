"""Reading a topic's records between two points, as ``tail`` and ``trainee`` need: the adapter.

``scan(settings, admin, topic, ...)`` yields :class:`Raw` records of the chosen partitions from a
start (earliest, a time, the last N of each partition, or given offsets) to the end offsets seen when
it started (or for ever with ``follow``), stopping each partition at ``until_ms``. It reads with a
throw-away consumer group and commits nothing. ``on_progress(done, total)`` is called as it goes;
with ``follow``, ``on_live()`` once every partition's records up to those end offsets were yielded
(from then on, what arrives is new).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from services.opsctl import groups
from services.opsctl.common import consumer
from services.settings import KafkaSettings


@dataclass(frozen=True)
class Raw:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Start:
    """Where to begin: ``earliest``, ``at_ms`` (first record at or after), or ``last`` N per partition."""

    earliest: bool = False
    at_ms: int | None = None
    last: int | None = None


def start_offsets(admin: Any, tps: Sequence[tuple[str, int]], start: Start,
                  ends: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    firsts = groups.earliest_offsets(admin, tps)
    if start.at_ms is not None:
        return groups.offsets_for_time(admin, tps, start.at_ms)
    if start.earliest:
        return firsts
    n = start.last or 0
    return {tp: max(firsts[tp], ends[tp] - n) for tp in tps}


def scan(settings: KafkaSettings, admin: Any, topic: str, *, partitions: Sequence[int] | None = None,
         start: Start = Start(earliest=True), until_ms: int | None = None, follow: bool = False,
         on_progress: Callable[[int, int], None] | None = None, idle_timeout: float = 15.0,
         on_live: Callable[[], None] | None = None) -> Iterator[Raw]:
    """The records of ``topic`` (its ``partitions``, default all) from ``start`` on; see the module."""
    from confluent_kafka import KafkaError, TopicPartition

    tps = groups.topic_partition_list(admin, topic)
    if partitions is not None:
        tps = [tp for tp in tps if tp[1] in set(partitions)]
    ends = groups.end_offsets(admin, tps)
    begins = start_offsets(admin, tps, start, ends)
    total = sum(max(ends[tp] - begins[tp], 0) for tp in tps)
    done_count = 0
    if on_progress:
        on_progress(0, total)
    open_ = {tp[1] for tp in tps if follow or begins[tp] < ends[tp]}
    if not open_:
        return
    behind = {p for p in open_ if begins[(topic, p)] < ends[(topic, p)]}  # with follow: not yet at the start's end

    def caught_up(p: int) -> None:
        if p in behind:
            behind.discard(p)
            if not behind and on_live is not None:
                on_live()

    c = consumer(settings)
    try:
        c.assign([TopicPartition(topic, p, begins[(topic, p)]) for p in sorted(open_)])
        if follow and not behind and on_live is not None:
            on_live()
        idle_since = time.monotonic()
        while open_:
            batch = c.consume(num_messages=500, timeout=0.5)
            if not batch:
                if not follow and time.monotonic() - idle_since > idle_timeout:
                    return
                continue
            idle_since = time.monotonic()
            for msg in batch:
                err = msg.error()
                p = msg.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if not follow:
                            open_.discard(p)
                        elif msg.offset() >= ends[(topic, p)]:
                            caught_up(p)
                    continue
                if p not in open_:
                    continue
                off = msg.offset()
                end = ends[(topic, p)]
                _, ts = msg.timestamp()
                if not follow and off >= end:
                    open_.discard(p)
                    continue
                if until_ms is not None and ts > until_ms:
                    open_.discard(p)
                    continue
                done_count += 1
                if on_progress:
                    on_progress(done_count, total)
                yield Raw(topic, p, off, ts, msg.key(), msg.value(), list(msg.headers() or []))
                if off >= end - 1:
                    if follow:
                        caught_up(p)
                    else:
                        open_.discard(p)
    finally:
        c.close()
