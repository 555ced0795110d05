"""When is a partition stuck? The watchdog's policy, without I/O (the Faust shell asks and acts).

The shell hands over, every round, each input partition that is *behind*: the broker's end offset is
past what this worker has committed. Such a partition is *stuck* when its committed offset has not
moved for a while. Records flowing on other partitions do not count: ticks arrive on every
partition every few seconds, so a worker can look busy while one partition goes nowhere (seen after
rebalances: faust never fetched a partition it was given, or lost the acknowledgements at the head of
one, so that its commits could never pass them).

Half-way to ``stall_seconds`` a stuck partition is reported once as a warning (``WATCH``, with what
faust holds of it); at the full time the worker reports ``STALLED`` once and the shell exits, so that
its supervisor restarts it: a restart reads every partition again from its committed offset, the path
the kill -9 tests prove safe (a repair inside the running worker would race faust's own fetch loop).
Time spent rebalancing or recovering tables is not stuck time: the clocks start again when the worker
is ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum


class Verdict(Enum):
    OK = "ok"
    WATCH = "watch"  # stuck for half the time: report it once
    STALLED = "stalled"  # stuck for the full time, the first time: report it (and exit)
    STILL = "still"  # reported already


@dataclass
class Watch:
    stall_seconds: float
    # partition -> (its committed offset when last seen behind, since when it has stayed there)
    stuck: dict[str, tuple[int | None, float]] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)  # reported half-way in this episode
    stalled_at: float = 0.0

    def check(self, now: float, *, busy: bool,
              behind: Mapping[str, int | None]) -> tuple[Verdict, list[str]]:
        """``behind``: each partition whose end offset is past its committed offset, with that committed
        offset (None: nothing committed yet). The verdict, and the partitions it concerns."""
        if busy:  # rebalancing or recovering: count from when the worker is ready
            self.stuck.clear()
            self.warned.clear()
            self.stalled_at = 0.0
            return Verdict.OK, []
        kept = {}
        for tp, committed in behind.items():
            seen = self.stuck.get(tp)
            if seen is not None and seen[0] == committed:
                kept[tp] = seen
            else:  # it moved (or is new): a new episode
                kept[tp] = (committed, now)
                self.warned.discard(tp)
        self.stuck = kept
        self.warned &= set(kept)
        waited = {tp: now - since for tp, (_, since) in kept.items()}
        stalled = sorted(tp for tp, secs in waited.items() if secs >= self.stall_seconds)
        if stalled:
            if self.stalled_at:
                return Verdict.STILL, stalled
            self.stalled_at = now
            return Verdict.STALLED, stalled
        self.stalled_at = 0.0
        new = sorted(tp for tp, secs in waited.items() if secs >= self.stall_seconds / 2 and tp not in self.warned)
        if new:
            self.warned.update(new)
            return Verdict.WATCH, new
        return Verdict.OK, []

    def waited(self, now: float) -> dict[str, float]:
        """How long each stuck partition has stayed where it is."""
        return {tp: round(now - since, 1) for tp, (_, since) in self.stuck.items()}
