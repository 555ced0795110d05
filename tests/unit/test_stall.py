"""The aggregator watchdog's policy (services/netchange/stall.py)."""

from __future__ import annotations

from services.netchange.stall import Verdict, Watch


def lag(*stages: str) -> object:
    return lambda stage: [f"{stage}-topic:0"] if stage in stages else []


def test_idle_with_nothing_to_do_is_a_quiet_day_not_a_stall() -> None:
    w = Watch(120, moved={"resolve": 0, "fold": 0})
    assert w.check(1_000, busy=False, lagging=lag(), starved=False) == (Verdict.OK, [])


def test_behind_and_idle_is_watched_then_stalled_once() -> None:
    w = Watch(120, moved={"resolve": 0, "fold": 0})
    assert w.check(30, busy=False, lagging=lag("resolve"), starved=False) == (Verdict.OK, [])
    assert w.check(61, busy=False, lagging=lag("resolve"), starved=False) == (Verdict.WATCH, ["resolve-topic:0"])
    assert w.check(121, busy=False, lagging=lag("resolve"), starved=False) == (Verdict.STALLED, ["resolve-topic:0"])
    assert w.check(131, busy=False, lagging=lag("resolve"), starved=False)[0] is Verdict.STILL


def test_only_the_idle_stage_counts() -> None:
    w = Watch(120, moved={"resolve": 0, "fold": 0})
    w.progress("fold", 125)  # the fold keeps taking ticks; the resolve stage is the one behind
    assert w.check(126, busy=False, lagging=lag("fold"), starved=False) == (Verdict.OK, [])
    assert w.check(126, busy=False, lagging=lag("resolve", "fold"), starved=False) == (
        Verdict.STALLED, ["resolve-topic:0"])


def test_partitions_left_out_are_resumed_once_before_a_stall_is_called() -> None:
    w = Watch(120, moved={"resolve": 0, "fold": 0})
    assert w.check(60, busy=False, lagging=lag("resolve"), starved=True)[0] is Verdict.HEAL
    assert w.check(90, busy=False, lagging=lag("resolve"), starved=True)[0] is Verdict.WATCH
    assert w.check(120, busy=False, lagging=lag("resolve"), starved=True)[0] is Verdict.STALLED


def test_progress_clears_it() -> None:
    w = Watch(120, moved={"resolve": 0, "fold": 0})
    assert w.check(121, busy=False, lagging=lag("resolve"), starved=False)[0] is Verdict.STALLED
    w.progress("resolve", 122)
    assert w.check(123, busy=False, lagging=lag("resolve"), starved=False) == (Verdict.OK, [])
    assert w.stalled_at == 0
    assert w.check(250, busy=False, lagging=lag("resolve"), starved=True)[0] is Verdict.HEAL


def test_rebalancing_and_recovery_are_not_idleness() -> None:
    w = Watch(120, moved={"resolve": 0, "fold": 0})
    assert w.check(500, busy=True, lagging=lag("resolve"), starved=False) == (Verdict.OK, [])
    assert w.check(510, busy=False, lagging=lag("resolve"), starved=False) == (Verdict.OK, [])  # ready now
    assert w.check(600, busy=False, lagging=lag("resolve"), starved=False)[0] is Verdict.WATCH
    assert w.check(630, busy=False, lagging=lag("resolve"), starved=False)[0] is Verdict.STALLED
