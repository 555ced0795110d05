"""faust's fetch loop without four asyncio tasks per message (faust-streaming 0.15.3 only).

faust hands every fetched record to the stage through
``await self.wait_first(callback(message), self.suspend_flow.wait())``
(``Consumer._drain_messages``). ``mode``'s ``wait_first`` wraps each awaitable in a task and adds two
more (the service's stopped and crashed events), then ``asyncio.wait``\\s on the four and cancels the
losers: four tasks and a wait per record, to be able to drop the delivery when a rebalance begins.
Measured here (docs/benchmarks.md, "faust's own ceiling"): a faust agent that does nothing reads
6,500 records/s with it and 18,700 records/s without it, on the same topic and machine.

:func:`install` replaces that one method with the same loop that awaits the delivery directly while
no rebalance is under way (``suspend_flow`` clear, which is nearly always) and keeps faust's
``wait_first`` when one is. The delivery itself (faust's conductor: flow control, producer ebb, the
agent's queue) is unchanged, and so are the read offsets, gaps and commits around it. What differs:
a delivery that starts before a rebalance and waits (for room in the agent's queue, or for flow
control) is no longer cancelled when the rebalance begins, so the record reaches the stage after
it instead of being skipped while faust's read offset moves past it (one of the ways records went
missing around rebalances, docs/runbook.md). Not used by the aggregator: with it, two-worker runs
lost records (ADR 0003, "Status"); bench/faust_noop.py measures faust's ceiling with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import faust
from faust.transport import consumer as _consumer
from faust.utils.functional import consecutive_numbers as _consecutive_numbers

FOR_VERSION = "0.15.3"
_original = _consumer.Consumer._drain_messages
_original_new_offset = _consumer.Consumer._new_offset
# for partitions with no committed offset: where fetching begins (the log start offset, as the
# consumer resets to the earliest); filled by the app's assignment handler, read by :func:`_new_offset`
starts: dict[Any, int] = {}


def installed() -> bool:
    return _consumer.Consumer._drain_messages is _drain_messages  # type: ignore[comparison-overlap]


def install() -> bool:
    """Replace faust's fetch loop and its commit-offset rule; a no-op (False) on any faust version but
    the one this was read from."""
    if faust.__version__ != FOR_VERSION:
        return False
    _consumer.Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
    _consumer.Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    _consumer.Consumer._drain_messages = _original  # type: ignore[method-assign]
    _consumer.Consumer._new_offset = _original_new_offset  # type: ignore[method-assign]


def _new_offset(self: Any, tp: Any) -> int | None:
    """The offset to commit for ``tp``: faust 0.15.3's rule, but never past a hole at the head.

    faust commits the end of the first run of consecutive acknowledged offsets. It refuses to when
    the run starts above the committed offset, but (1) only when an offset was committed before
    (``if committed_offset:``: a partition's first commit, or one committed at 0, is never checked)
    and (2) only by more than one (``min(acked) - committed_offset > 1``, though the committed offset
    is the next one to read). So records handed out and never acknowledged (dropped around a
    rebalance, docs/runbook.md) were committed past, silently: found with two workers joining while
    the first was busy (bench/aggregator_bench.py --workers 2). Here the head is checked against the
    committed offset, or before any commit against where fetching began (:data:`starts`); a hole
    stops the commits, and the aggregator's watchdog reads the partition again from there.
    """
    acked = self._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gap_for_tp = self._gap[tp]
    if gap_for_tp:  # faust's: offsets known to be missing (compaction, markers) count as acknowledged
        candidates = gap_for_tp.overlap(0, max_offset)
        sorted_candidates = sorted(candidates, key=lambda x: x.begin)
        if sorted_candidates:
            stuff_to_add: list[int] = []
            for entry in sorted_candidates:
                stuff_to_add.extend(range(entry.begin, entry.end))
            new_max_offset = max(stuff_to_add[-1], max_offset + 1)
            acked.extend(stuff_to_add)
            gap_for_tp.chop(0, new_max_offset)
    acked.sort()
    committed = self._committed_offset[tp]
    head = committed if committed is not None else starts.get(tp)
    if head is not None and acked[0] > head:
        return None  # changed: a hole at the head, however it came
    batch = next(_consecutive_numbers(acked))
    acked[: len(batch)] = []
    self._acked_index[tp].difference_update(batch)
    return int(batch[-1]) + 1


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - runs inside faust
    # faust 0.15.3's loop line for line, but for the delivery (marked)
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    rebalancing = self.suspend_flow.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = _consumer.CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = cast(AsyncIterator, getmany(timeout=1.0))
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset:
                            acks_enabled = acks_enabled_for(message.topic)
                            if acks_enabled:
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None:  # noqa: SIM102 - faust's text
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        if rebalancing():  # faust's way, as before
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:  # changed: the delivery is awaited directly
                            await callback(message)
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r", offset)
                unset_flag(flag_consumer_fetching)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)  # noqa: TRY401 - faust's text
        raise
    finally:
        unset_flag(flag_consumer_fetching)
