"""The aggregator's stall watchdog: the faust side of :mod:`services.netchange.stall`.

Every few seconds it asks the broker for the end offsets of the worker's input partitions and
compares them with what the worker has committed; the pure :class:`~services.netchange.stall.Watch`
says which partitions are stuck. Half-way to ``TN_STALL_SECONDS`` a stuck partition is logged with
what faust holds of it (``aggregator.partition_stuck``, gauge ``netchange_partitions_stuck``); one
still stuck at the full time makes ``/healthz`` fail and, with ``TN_EXIT_ON_STALL``, the worker exit
(code 3) so that its supervisor restarts it. The restart is the repair: a new process reads every
partition again from its committed offset (replays are idempotent), the path the kill -9 tests
prove; seeking inside the running worker would race faust's own fetch loop. A round that cannot
reach the broker is skipped (logged), never a crash.

faust keeps no public view of its committed, read and acknowledged offsets or of the partitions it
fetches; this module reads them (and only this module), for the check and for the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, cast

import faust
from prometheus_client import Gauge

from services import logs
from services.netchange.stall import Verdict, Watch
from services.settings import AggregatorSettings

if TYPE_CHECKING:
    from faust.tables.manager import TableManager
    from faust.transport.consumer import Consumer

log = logs.get("aggregator")

STALLED = Gauge("netchange_stalled", "1 when an input partition with lag has committed nothing for TN_STALL_SECONDS")
STUCK = Gauge("netchange_partitions_stuck", "input partitions behind whose committed offset has not moved for half "
              "of TN_STALL_SECONDS or more (at the full time the worker exits, code 3)")


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
    if not held:
        return {}
    ends = await consumer.highwaters(*held)
    starts = await consumer.earliest_offsets(*held)
    out = {}
    for tp in held:
        committed = consumer._committed_offset.get(tp)  # the next offset to read, as the broker counts
        end = ends.get(tp)
        # nothing committed yet: behind only if the log holds records (not when all have expired)
        if end is not None and end > max(committed if committed is not None else 0, starts.get(tp) or 0):
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


async def drain(app: faust.App, seconds: float = 10.0) -> None:
    """Before exiting: send every message still in faust's producer buffer (table changelog records,
    output records). faust's own flush gives up after 0.1 s without a message sent, and its commits
    call it, so an offset may be committed while the changelog record of that event still waits in
    the buffer; exiting then would leave the restarted worker an older state than the committed
    offsets say (seen once in CI, a loaded machine). Bounded: a wedged producer does not keep a
    stalled worker alive."""
    deadline = time.monotonic() + seconds
    buffer = app.producer.buffer  # faust's ProducerBuffer
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(app.producer.flush(), timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - exiting anyway: say what was left
            log.error("aggregator.drain_failed", error=type(exc).__name__, left=buffer.size)
            return
        if not buffer.size:
            return
    log.error("aggregator.drain_failed", error="timeout", left=buffer.size)


def install(app: faust.App, settings: AggregatorSettings, topics: Collection[str], watch: Watch) -> Callable[[], bool]:
    """Start the watchdog's timer on ``app``; returns the worker's ``busy`` check (for readiness)."""

    interval = max(1.0, min(10.0, settings.stall_seconds / 4))

    # faust annotates App.timer as returning a bare Callable, so the function it decorates is untyped
    @app.timer(interval=interval)  # type: ignore[untyped-decorator]
    async def watchdog() -> None:
        found: dict[Any, int | None] = {}
        if not busy(app):
            try:
                found = await asyncio.wait_for(behind(app, topics), timeout=interval)
            except Exception as exc:  # noqa: BLE001 - a broker that does not answer now: the next round
                log.warning("aggregator.watchdog_skipped", error=type(exc).__name__)
                return
        named = {f"{tp.topic}:{tp.partition}": tp for tp in found}
        now = time.monotonic()
        # busy again after the broker's answer (a rebalance meanwhile): that round counts for nothing
        verdict, tps = watch.check(now, busy=busy(app), behind={n: found[tp] for n, tp in named.items()})
        STALLED.set(1 if verdict in (Verdict.STALLED, Verdict.STILL) else 0)
        half = now - watch.stall_seconds / 2
        STUCK.set(sum(1 for _, since in watch.stuck.values() if since <= half))
        if verdict is Verdict.WATCH:
            log.warning("aggregator.partition_stuck", partitions={n: looks(app, named[n]) for n in tps},
                        stuck_seconds=watch.waited(now), stall_seconds=watch.stall_seconds)
        elif verdict is Verdict.STALLED:
            log.error("aggregator.stalled", partitions={n: looks(app, named[n]) for n in tps},
                      stuck_seconds=watch.waited(now), exiting=settings.exit_on_stall)
            if settings.exit_on_stall:
                await drain(app)
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(3)  # a restart is safe: state and offsets are in Kafka (as after kill -9)

    return lambda: busy(app)
