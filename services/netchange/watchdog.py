"""The aggregator's stall watchdog: the faust side of :mod:`services.netchange.stall`.

Every few seconds it asks the broker for the end offsets of the worker's input partitions and
compares them with what the worker has committed; the pure :class:`~services.netchange.stall.Watch`
says which partitions are stuck. A stuck partition is repaired once (fetched again from its committed
offset), and one still stuck at ``TN_STALL_SECONDS`` makes ``/healthz`` fail and, with
``TN_EXIT_ON_STALL``, the worker exit (code 3) so that its supervisor restarts it.

faust keeps no public view of its committed, read and acknowledged offsets or of the partitions it
fetches; this module reads them (and only this module), for the check and for the log of a repair.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, cast

import faust
from prometheus_client import Counter, Gauge

from services import logs
from services.netchange.stall import Verdict, Watch
from services.settings import AggregatorSettings

if TYPE_CHECKING:
    from faust.tables.manager import TableManager
    from faust.transport.consumer import Consumer

log = logs.get("aggregator")

STALLED = Gauge("netchange_stalled", "1 when an input partition with lag has committed nothing for TN_STALL_SECONDS")
REPAIRS = Counter("netchange_partition_repairs_total", "input partitions stuck for half of TN_STALL_SECONDS that "
                  "the watchdog made faust fetch again from their committed offset")


def _consumer(app: faust.App) -> Consumer:
    """The worker's consumer as faust's concrete class: the private state read here is declared
    there, not on the ConsumerT interface that ``app.consumer`` is typed as."""
    return cast("Consumer", app.consumer)


def busy(app: faust.App) -> bool:
    """Rebalancing or recovering tables: not a time to judge progress."""
    tables = cast("TableManager", app.tables)  # .recovery is TableManager's, not TableManagerT's
    return bool(app.rebalancing or app.in_recovery or not tables.recovery.completed.is_set())


async def behind(app: faust.App, topics: Collection[str]) -> dict[Any, int | None]:
    """Input partitions whose end offset (the broker's, not faust's fetched highwater, which a
    partition never fetched has none of) is past what this worker has committed."""
    consumer = _consumer(app)
    held = [tp for tp in consumer.assignment() if tp.topic in topics]
    ends = await consumer.highwaters(*held) if held else {}
    out = {}
    for tp in held:
        committed = consumer._committed_offset.get(tp)
        end = ends.get(tp)
        if end is not None and end > (committed or 0) + 1:  # +1: the offset faust commits vs acknowledges
            out[tp] = committed
    return out


def looks(app: faust.App, tp: Any) -> dict[str, Any]:
    """What faust holds of one partition (offsets and flags, no record contents)."""
    consumer = _consumer(app)
    acked = consumer._acked.get(tp) or []
    return {"committed": consumer._committed_offset.get(tp), "read": consumer._read_offset.get(tp),
            "acked_from": min(acked) if acked else None, "acked": len(acked),
            "fetching": tp in (consumer._active_partitions or ()), "paused": tp in consumer._paused_partitions,
            "buffered": tp in consumer._buffered_partitions}


async def repair(app: faust.App, tp: Any, committed: int | None) -> None:
    """Make faust fetch a stuck partition again from its committed offset: resumed if its buffer flow
    control left it out, and the records at the head read again (faust drops a fetched record below
    its read offset, and a record fetched before a rebalance can be marked read without reaching the
    agent, so that the commits never pass it). Replays are idempotent (by Debezium position); the
    acknowledgements of the offsets read again are forgotten so that theirs count this time."""
    consumer = _consumer(app)
    consumer._buffered_partitions.discard(tp)
    consumer.resume_partitions([tp])
    start = committed or 0
    acked = consumer._acked.get(tp) or []
    consumer._acked_index[tp].difference_update(range(start, min(acked) if acked else start))
    await consumer.seek(tp, start)


def install(app: faust.App, settings: AggregatorSettings, topics: Collection[str], watch: Watch) -> Callable[[], bool]:
    """Start the watchdog's timer on ``app``; returns the worker's ``busy`` check (for readiness)."""

    # faust annotates App.timer as returning a bare Callable, so the function it decorates is untyped
    @app.timer(interval=max(1.0, min(10.0, settings.stall_seconds / 4)))  # type: ignore[untyped-decorator]
    async def watchdog() -> None:
        found = {} if busy(app) else await behind(app, topics)
        named = {f"{tp.topic}:{tp.partition}": tp for tp in found}
        now = time.monotonic()
        verdict, tps = watch.check(now, busy=busy(app), behind={n: found[tp] for n, tp in named.items()})
        STALLED.set(1 if verdict in (Verdict.STALLED, Verdict.STILL) else 0)
        if verdict is Verdict.HEAL:
            REPAIRS.inc(len(tps))
            log.warning("aggregator.partition_repaired", partitions={n: looks(app, named[n]) for n in tps},
                        stuck_seconds=watch.waited(now))
            for n in tps:
                await repair(app, named[n], found[named[n]])
        elif verdict is Verdict.STALLED:
            log.error("aggregator.stalled", partitions={n: looks(app, named[n]) for n in tps},
                      stuck_seconds=watch.waited(now), exiting=settings.exit_on_stall)
            if settings.exit_on_stall:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(3)  # a restart is safe: state and offsets are in Kafka (as after kill -9)

    return lambda: busy(app)
