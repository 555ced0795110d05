"""The aggregator watchdog's policy (services/netchange/stall.py): per partition, not per worker."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.netchange.stall import Verdict, Watch

P2 = "tss.placement:2"


def test_nothing_behind_is_a_quiet_day_not_a_stall() -> None:
    w = Watch(120)
    assert w.check(0, busy=False, behind={}) == (Verdict.OK, [])
    assert w.check(1_000, busy=False, behind={}) == (Verdict.OK, [])


def test_a_partition_stuck_at_one_offset_is_reported_half_way_then_stalled_once() -> None:
    w = Watch(120)
    assert w.check(0, busy=False, behind={P2: 88}) == (Verdict.OK, [])
    assert w.check(59, busy=False, behind={P2: 88}) == (Verdict.OK, [])
    assert w.check(60, busy=False, behind={P2: 88}) == (Verdict.WATCH, [P2])
    assert w.check(90, busy=False, behind={P2: 88}) == (Verdict.OK, [])  # reported once
    assert w.check(120, busy=False, behind={P2: 88}) == (Verdict.STALLED, [P2])
    assert w.check(130, busy=False, behind={P2: 88}) == (Verdict.STILL, [P2])
    assert w.waited(130) == {P2: 130.0}


def test_other_partitions_moving_do_not_hide_a_stuck_one() -> None:
    """Ticks keep every other partition busy: the stuck one is found all the same."""
    w = Watch(120)
    for t in range(0, 121, 5):
        verdict, tps = w.check(t, busy=False, behind={P2: 88, "ticks:0": 1_000 + t, "ticks:1": 2_000 + t})
    assert (verdict, tps) == (Verdict.STALLED, [P2])


def test_a_partition_that_commits_is_not_stuck() -> None:
    w = Watch(120)
    w.check(0, busy=False, behind={P2: 10})
    assert w.check(100, busy=False, behind={P2: 10})[0] is Verdict.WATCH
    assert w.check(101, busy=False, behind={P2: 50}) == (Verdict.OK, [])  # it moved: a new episode
    assert w.check(219, busy=False, behind={P2: 50}) == (Verdict.WATCH, [P2])
    assert w.check(221, busy=False, behind={P2: 50}) == (Verdict.STALLED, [P2])


def test_caught_up_clears_the_stall() -> None:
    w = Watch(120)
    w.check(0, busy=False, behind={P2: 10})
    assert w.check(120, busy=False, behind={P2: 10})[0] is Verdict.STALLED
    assert w.check(121, busy=False, behind={}) == (Verdict.OK, [])
    assert w.stalled_at == 0.0
    assert w.stuck == {}


def test_rebalancing_and_recovery_are_not_stuck_time() -> None:
    w = Watch(120)
    w.check(0, busy=False, behind={P2: 10})
    assert w.check(500, busy=True, behind={P2: 10}) == (Verdict.OK, [])
    assert w.check(510, busy=False, behind={P2: 10}) == (Verdict.OK, [])  # ready now: counts from here
    assert w.check(569, busy=False, behind={P2: 10}) == (Verdict.OK, [])
    assert w.check(570, busy=False, behind={P2: 10}) == (Verdict.WATCH, [P2])
    assert w.check(630, busy=False, behind={P2: 10}) == (Verdict.STALLED, [P2])


def test_nothing_committed_yet_counts_as_one_offset() -> None:
    w = Watch(30)
    w.check(0, busy=False, behind={P2: None})
    assert w.check(15, busy=False, behind={P2: None}) == (Verdict.WATCH, [P2])
    assert w.check(30, busy=False, behind={P2: None}) == (Verdict.STALLED, [P2])


class Reference:
    """The policy said plainly: per partition, since when it has sat behind at one committed offset."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.since: dict[str, float] = {}
        self.at: dict[str, int | None] = {}
        self.warned: set[str] = set()
        self.reported = False

    def check(self, now: float, busy: bool, behind: dict[str, int | None]) -> tuple[Verdict, list[str]]:
        if busy:
            self.since, self.at, self.warned, self.reported = {}, {}, set(), False
            return Verdict.OK, []
        for tp in list(self.since):
            if tp not in behind:
                del self.since[tp], self.at[tp]
                self.warned.discard(tp)
        for tp, committed in behind.items():
            if tp not in self.since or self.at[tp] != committed:
                self.since[tp], self.at[tp] = now, committed
                self.warned.discard(tp)
        full = sorted(tp for tp in self.since if now - self.since[tp] >= self.limit)
        if full:
            verdict = Verdict.STILL if self.reported else Verdict.STALLED
            self.reported = True
            return verdict, full
        self.reported = False
        half = sorted(tp for tp in self.since if now - self.since[tp] >= self.limit / 2 and tp not in self.warned)
        if half:
            self.warned.update(half)
            return Verdict.WATCH, half
        return Verdict.OK, []


@given(st.lists(st.tuples(st.integers(1, 12), st.booleans(),
                          st.dictionaries(st.sampled_from(["a:0", "a:1", "t:0"]), st.none() | st.integers(0, 2),
                                          max_size=3)), max_size=80))
def test_against_a_reference(rounds: list[tuple[int, bool, dict[str, int | None]]]) -> None:
    w, ref = Watch(20), Reference(20)
    now = 0.0
    for step, busy, behind in rounds:
        now += step
        assert w.check(now, busy=busy, behind=behind) == ref.check(now, busy, behind)
