"""When is a partition stuck? The watchdog's policy, without I/O (the Faust shell asks and acts).

The shell hands over, every round, each input partition that is *behind*: the broker's end offset is
past what this worker has committed. Such a partition is *stuck* when its committed offset has not
moved for a while. Records flowing on other partitions do not count: ticks arrive on every
partition every few seconds, so a worker can look busy while one partition goes nowhere (seen after
rebalances: faust never fetched a partition it was given, or dropped records it had fetched while
marking them read, so the commits could never pass them).

Half-way to ``stall_seconds`` a stuck partition is repaired once (``HEAL``: the shell makes faust
fetch it again from its committed offset; replays are idempotent). At the full time the worker
reports ``STALLED`` once and the shell exits, so that its supervisor restarts it. Time spent
rebalancing or recovering tables is not stuck time: the clocks start again when the worker is ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum


class Verdict(Enum):
    OK = "ok"
    WATCH = "watch"  # stuck for a while: not yet repaired or stalled
    HEAL = "heal"  # make faust fetch these partitions again from their committed offsets
    STALLED = "stalled"  # the first time: report it (and exit)
    STILL = "still"  # reported already


@dataclass
class Watch:
    stall_seconds: float
    # partition -> (its committed offset when last seen behind, since when it has stayed there)
    stuck: dict[str, tuple[int | None, float]] = field(default_factory=dict)
    healed: set[str] = field(default_factory=set)  # repaired once in this episode
    stalled_at: float = 0.0

    def check(self, now: float, *, busy: bool,
              behind: Mapping[str, int | None]) -> tuple[Verdict, list[str]]:
        """``behind``: each partition whose end offset is past its committed offset, with that committed
        offset (None: nothing committed yet). The verdict, and the partitions it concerns."""
        if busy:  # rebalancing or recovering: count from when the worker is ready
            self.stuck.clear()
            self.healed.clear()
            self.stalled_at = 0.0
            return Verdict.OK, []
        kept = {}
        for tp, committed in behind.items():
            seen = self.stuck.get(tp)
            if seen is not None and seen[0] == committed:
                kept[tp] = seen
            else:  # it moved (or is new): a new episode
                kept[tp] = (committed, now)
                self.healed.discard(tp)
        self.stuck = kept
        self.healed &= set(kept)
        waited = {tp: now - since for tp, (_, since) in kept.items()}
        slow = sorted(tp for tp, secs in waited.items() if secs >= self.stall_seconds / 2)
        if not slow:
            self.stalled_at = 0.0
            return Verdict.OK, []
        repair = [tp for tp in slow if tp not in self.healed]
        if repair:
            self.healed.update(repair)
            return Verdict.HEAL, repair
        stalled = [tp for tp in slow if waited[tp] >= self.stall_seconds]
        if not stalled:
            return Verdict.WATCH, slow
        if self.stalled_at:
            return Verdict.STILL, stalled
        self.stalled_at = now
        return Verdict.STALLED, stalled

    def waited(self, now: float) -> dict[str, float]:
        """How long each stuck partition has stayed where it is."""
        return {tp: round(now - since, 1) for tp, (_, since) in self.stuck.items()}
