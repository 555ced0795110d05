"""When is a worker stalled? The watchdog's policy, without I/O (the Faust shell asks and acts).

A stage (``resolve`` or ``fold``) is stalled when it has not processed anything for
``stall_seconds`` while one of its input partitions has records it has not committed. Idle with no
lag is just a quiet day. Half-way there, if the shell finds something to repair (faust has left input
partitions out of its fetches, or dropped fetched records), it repairs it once (``HEAL``); at the full
time the worker reports ``STALLED`` once, and the
shell exits so that its supervisor restarts it. Time spent rebalancing or recovering tables is not
idleness: the clock starts again when the worker is ready.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum


class Verdict(Enum):
    OK = "ok"
    WATCH = "watch"  # behind and idle for a while: not yet a stall
    HEAL = "heal"  # resume what faust stopped fetching, fetch again what it dropped
    STALLED = "stalled"  # the first time: report it (and exit)
    STILL = "still"  # reported already


@dataclass
class Watch:
    stall_seconds: float
    stages: Iterable[str] = ("resolve", "fold")
    moved: dict[str, float] = field(default_factory=dict)
    busy: bool = False
    healed_at: float = 0.0
    stalled_at: float = 0.0

    def __post_init__(self) -> None:
        self.moved = {stage: self.moved.get(stage, 0.0) for stage in self.stages}

    def progress(self, stage: str, now: float) -> None:
        self.moved[stage] = now

    def idle(self, now: float) -> dict[str, float]:
        return {stage: now - at for stage, at in self.moved.items()}

    def check(self, now: float, *, busy: bool, lagging: Callable[[str], list[str]],
              starved: bool) -> tuple[Verdict, list[str]]:
        """The verdict, and the lagging partitions of the stages that are slow."""
        if busy or self.busy:  # the worker becomes ready: count from now
            self.moved = dict.fromkeys(self.moved, now)
            self.busy = busy
            return Verdict.OK, []
        idle = self.idle(now)
        slow = [stage for stage, secs in idle.items() if secs >= self.stall_seconds / 2]
        behind = [tp for stage in slow for tp in lagging(stage)]
        if not behind:
            self.healed_at = self.stalled_at = 0.0
            return Verdict.OK, []
        if starved and not self.healed_at:
            self.healed_at = now
            return Verdict.HEAL, behind
        if max(idle[stage] for stage in slow) < self.stall_seconds:
            return Verdict.WATCH, behind
        if self.stalled_at:
            return Verdict.STILL, behind
        self.stalled_at = now
        return Verdict.STALLED, behind
