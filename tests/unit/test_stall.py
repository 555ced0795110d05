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


def test_a_partition_stuck_at_one_offset_is_healed_once_then_stalled_once() -> None:
    w = Watch(120)
    assert w.check(0, busy=False, behind={P2: 88}) == (Verdict.OK, [])
    assert w.check(59, busy=False, behind={P2: 88}) == (Verdict.OK, [])
    assert w.check(60, busy=False, behind={P2: 88}) == (Verdict.HEAL, [P2])
    assert w.check(90, busy=False, behind={P2: 88}) == (Verdict.WATCH, [P2])
    assert w.check(120, busy=False, behind={P2: 88}) == (Verdict.STALLED, [P2])
    assert w.check(130, busy=False, behind={P2: 88}) == (Verdict.STILL, [P2])
    assert w.waited(130) == {P2: 130.0}


def test_other_partitions_moving_do_not_hide_a_stuck_one() -> None:
    """Ticks keep every other partition busy: the stuck one is found all the same."""
    w = Watch(120)
    for t in range(0, 61, 5):
        verdict, tps = w.check(t, busy=False, behind={P2: 88, "ticks:0": 1_000 + t, "ticks:1": 2_000 + t})
    assert (verdict, tps) == (Verdict.HEAL, [P2])


def test_a_partition_that_commits_is_not_stuck_and_a_new_episode_may_heal_again() -> None:
    w = Watch(120)
    w.check(0, busy=False, behind={P2: 10})
    assert w.check(60, busy=False, behind={P2: 10})[0] is Verdict.HEAL
    assert w.check(61, busy=False, behind={P2: 50}) == (Verdict.OK, [])  # the repair worked: it moves
    assert w.check(120, busy=False, behind={P2: 50}) == (Verdict.OK, [])
    assert w.check(121, busy=False, behind={P2: 50}) == (Verdict.HEAL, [P2])  # stuck again: healed again


def test_caught_up_clears_the_stall() -> None:
    w = Watch(120)
    w.check(0, busy=False, behind={P2: 10})
    w.check(60, busy=False, behind={P2: 10})
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
    assert w.check(570, busy=False, behind={P2: 10}) == (Verdict.HEAL, [P2])


def test_nothing_committed_yet_counts_as_one_offset() -> None:
    w = Watch(30)
    w.check(0, busy=False, behind={P2: None})
    assert w.check(15, busy=False, behind={P2: None}) == (Verdict.HEAL, [P2])


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.booleans()), max_size=60))
def test_against_a_reference(rounds: list[tuple[int, int, bool]]) -> None:
    """A partition is reported stalled only after it stayed at one committed offset, behind, for the
    full time since the worker was last busy; it is always healed before it is reported stalled."""
    w = Watch(20)
    now = 0.0
    since: dict[str, float] = {}
    at: dict[str, int] = {}
    healed_once: set[str] = set()
    for step, (committed, n_parts, busy) in enumerate(rounds):
        now += 5
        behind = {f"t:{p}": committed + p for p in range(n_parts)} if step % 7 else {}
        verdict, tps = w.check(now, busy=busy, behind=behind)
        if busy:
            since.clear()
            at.clear()
            assert verdict is Verdict.OK
            continue
        for tp, off in behind.items():
            if at.get(tp) != off:
                since[tp], at[tp] = now, off
                healed_once.discard(tp)
        for tp in list(since):
            if tp not in behind:
                del since[tp], at[tp]
                healed_once.discard(tp)
        if verdict is Verdict.HEAL:
            assert all(now - since[tp] >= 10 for tp in tps)
            healed_once.update(tps)
        if verdict in (Verdict.STALLED, Verdict.STILL):
            assert tps and all(now - since[tp] >= 20 and tp in healed_once for tp in tps)
        if verdict is Verdict.OK:
            assert all(now - since[tp] < 10 for tp in since)
