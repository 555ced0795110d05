"""The reset-offsets plan (services/opsctl/plan.py): pure, so tested exhaustively here; the broker side
is in tests/integration/test_opsctl_replay.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.opsctl.plan import (
    Mode,
    PartitionState,
    PlanError,
    Target,
    make_plan,
    parse_selection,
    select,
)

T = "trainee-notify.netchange.v1"


def state(committed: int | None, low: int = 0, high: int = 100, at_time: int | None = None, p: int = 0,
          topic: str = T) -> PartitionState:
    return PartitionState(topic, p, committed, low, high, at_time)


@pytest.mark.parametrize(("target", "new", "reread", "skipped"), [
    (Target(Mode.EARLIEST), 10, 50, 0),
    (Target(Mode.LATEST), 100, 0, 40),
    (Target(Mode.OFFSET, 30), 30, 30, 0),
    (Target(Mode.OFFSET, 5), 10, 50, 0),  # below the low watermark: clamped
    (Target(Mode.OFFSET, 500), 100, 0, 40),  # past the end: clamped
    (Target(Mode.SHIFT, -20), 40, 20, 0),
    (Target(Mode.SHIFT, 15), 75, 0, 15),
    (Target(Mode.SHIFT, -1000), 10, 50, 0),
    (Target(Mode.DATETIME, 1_700_000_000_000), 42, 18, 0),
])
def test_each_mode_moves_the_offset_as_kafkas_tool_does(target: Target, new: int, reread: int, skipped: int) -> None:
    [row] = make_plan([state(60, low=10, at_time=42)], target).rows
    assert (row.current, row.new, row.reread, row.skipped, row.to_read) == (60, new, reread, skipped, 100 - new)


def test_a_clamped_offset_says_so() -> None:
    [row] = make_plan([state(60, low=10)], Target(Mode.OFFSET, 5)).rows
    assert "clamped to the earliest offset 10" in row.note
    [row] = make_plan([state(60)], Target(Mode.OFFSET, 101)).rows
    assert "clamped to the end 100" in row.note


def test_to_datetime_with_no_record_that_new_goes_to_the_end() -> None:
    [row] = make_plan([state(60, at_time=None)], Target(Mode.DATETIME, 1)).rows
    assert row.new == 100 and row.skipped == 40 and "end" in row.note


def test_a_partition_without_a_committed_offset_reads_again_nothing_and_says_so() -> None:
    [row] = make_plan([state(None, low=5)], Target(Mode.EARLIEST)).rows
    assert (row.current, row.new, row.reread, row.skipped, row.to_read) == (None, 5, 0, 0, 95)
    assert row.note == "no committed offset"


def test_shifting_a_partition_without_a_committed_offset_is_refused_naming_it() -> None:
    with pytest.raises(PlanError, match=f"cannot shift {T}:3"):
        make_plan([state(7, p=0), state(None, p=3)], Target(Mode.SHIFT, -1))


def test_a_committed_offset_below_the_retained_records_counts_only_records_still_there() -> None:
    [row] = make_plan([state(2, low=50)], Target(Mode.EARLIEST)).rows
    assert (row.new, row.reread, row.skipped) == (50, 0, 0)


def test_rows_are_sorted_and_totals_add_up() -> None:
    plan = make_plan([state(90, p=2), state(50, p=0), state(80, p=1, topic="a")], Target(Mode.SHIFT, -10))
    assert [(r.topic, r.partition) for r in plan.rows] == [("a", 1), (T, 0), (T, 2)]
    assert plan.reread == 30 and plan.skipped == 0 and plan.changes


def test_a_plan_that_changes_nothing_says_so() -> None:
    assert not make_plan([state(100)], Target(Mode.LATEST)).changes


def test_a_value_is_needed_where_the_mode_takes_one() -> None:
    with pytest.raises(PlanError):
        make_plan([state(1)], Target(Mode.OFFSET))
    with pytest.raises(PlanError):
        make_plan([state(1)], Target(Mode.OFFSET, -3))


@st.composite
def states(draw: st.DrawFn) -> PartitionState:
    low = draw(st.integers(0, 10_000))
    high = low + draw(st.integers(0, 10_000))
    committed = draw(st.one_of(st.none(), st.integers(0, high + 100)))
    at_time = draw(st.one_of(st.none(), st.integers(low, high)))
    return PartitionState(T, draw(st.integers(0, 11)), committed, low, high, at_time)


targets = st.one_of(
    st.just(Target(Mode.EARLIEST)), st.just(Target(Mode.LATEST)),
    st.builds(Target, st.just(Mode.OFFSET), st.integers(0, 30_000)),
    st.builds(Target, st.just(Mode.SHIFT), st.integers(-30_000, 30_000)),
    st.builds(Target, st.just(Mode.DATETIME), st.integers(0, 2**41)),
)


@given(states(), targets)
def test_properties_of_every_plan(s: PartitionState, target: Target) -> None:
    if target.mode is Mode.SHIFT and s.committed is None:
        with pytest.raises(PlanError):
            make_plan([s], target)
        return
    [row] = make_plan([s], target).rows
    assert s.low <= row.new <= s.high  # never outside what the broker holds
    assert row.to_read == s.high - row.new
    assert row.reread >= 0 and row.skipped >= 0 and not (row.reread and row.skipped)
    if s.committed is not None:
        current = min(max(s.committed, s.low), s.high)
        assert current - row.reread + row.skipped == row.new  # read again / skipped is exactly the move
    else:
        assert row.reread == row.skipped == 0
    if target.mode is Mode.EARLIEST:
        assert row.new == s.low
    if target.mode is Mode.LATEST:
        assert row.new == s.high and row.reread == 0


@given(st.lists(states(), max_size=6), targets)
def test_a_plan_does_not_depend_on_the_order_of_its_input(ss: list[PartitionState], target: Target) -> None:
    try:
        a = make_plan(ss, target)
    except PlanError:
        with pytest.raises(PlanError):
            make_plan(list(reversed(ss)), target)
        return
    assert a == make_plan(list(reversed(ss)), target)


# ------------------------------------------------------------------------------------------ selection
def test_topics_and_partitions_are_repeatable_or_comma_lists() -> None:
    assert parse_selection([], []) == {}
    assert parse_selection(["a,b", "c"], []) == {"a": None, "b": None, "c": None}
    assert parse_selection(["a", "b"], ["0,2", "5-6"]) == {"a": frozenset({0, 2, 5, 6}), "b": frozenset({0, 2, 5, 6})}
    assert parse_selection(["a:0,1", "b"], ["3"]) == {"a": frozenset({0, 1}), "b": frozenset({3})}
    assert parse_selection(["a:0,1,b:2-3"], []) == {"a": frozenset({0, 1}), "b": frozenset({2, 3})}
    assert parse_selection(["a:1", "a:2"], []) == {"a": frozenset({1, 2})}
    assert parse_selection(["a:1", "a"], []) == {"a": None}
    assert parse_selection([], ["1"]) == {"": frozenset({1})}


@pytest.mark.parametrize(("topics", "partitions"), [(["a:x"], []), (["a:"], []), ([":1"], []), (["a"], ["one"]),
                                                    (["a"], ["3-1"]), (["a"], [","])])
def test_a_bad_selection_is_a_clear_error(topics: list[str], partitions: list[str]) -> None:
    with pytest.raises(PlanError):
        parse_selection(topics, partitions)


def test_select_defaults_to_the_topics_the_group_has_offsets_for() -> None:
    available = {"a": 2, "b": 3, "c": 1}
    assert select({}, available, {"b"}) == [("b", 0), ("b", 1), ("b", 2)]
    assert select({"": frozenset({1})}, available, {"a", "b"}) == [("a", 1), ("b", 1)]
    assert select({"c": None}, available, {"b"}) == [("c", 0)]
    with pytest.raises(PlanError, match="no committed offsets"):
        select({}, available, set())


def test_select_names_unknown_topics_and_partitions() -> None:
    with pytest.raises(PlanError, match="topic 'a' has partitions 0-1, not 5; unknown topic 'nope'"):
        select({"nope": None, "a": frozenset({0, 5})}, {"a": 2}, set())
