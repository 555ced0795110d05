"""The plan of ``trainee-notify reset-offsets``: pure code, no I/O.

Given, per partition, the group's committed offset, the partition's low and high watermarks (the
first offset still on the broker and the offset after the last record) and, for ``--to-datetime``,
the first offset at or after that time, :func:`make_plan` says where each partition's offset goes and
what that means: how many records the group will read again, how many it will skip, how many it will
have left to read. It follows ``kafka-consumer-groups --reset-offsets``:

- ``--to-offset N``: N on every selected partition, clamped into ``[low, high]`` (as Kafka does);
- ``--shift-by N``: committed offset + N (negative: back), clamped; a partition without a committed
  offset cannot be shifted (:class:`PlanError`, naming it);
- ``--to-datetime T``: the first offset whose record timestamp is at or after T, or the end of the
  partition when there is none;
- ``--to-earliest`` / ``--to-latest``: the low / the high watermark.

:func:`parse_selection` reads the ``--topic`` / ``--partition`` options (repeatable, comma lists,
``TOPIC:0,1`` as Kafka writes it) and :func:`select` turns them, with what the broker has, into the
partitions to plan.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Mode(StrEnum):
    DATETIME = "to-datetime"
    OFFSET = "to-offset"
    SHIFT = "shift-by"
    EARLIEST = "to-earliest"
    LATEST = "to-latest"


class PlanError(ValueError):
    """The reset cannot be planned as asked (the message says why, naming topics and partitions)."""


@dataclass(frozen=True, slots=True)
class Target:
    mode: Mode
    value: int | None = None  # epoch ms for DATETIME, the offset for OFFSET, the shift for SHIFT

    def describe(self) -> str:
        return self.mode.value if self.value is None else f"{self.mode.value} {self.value}"


@dataclass(frozen=True, slots=True)
class PartitionState:
    topic: str
    partition: int
    committed: int | None  # None: the group has no committed offset here
    low: int  # first offset still on the broker
    high: int  # the offset after the last record (the end)
    at_time: int | None = None  # --to-datetime: first offset with timestamp >= T; None: no such record


@dataclass(frozen=True, slots=True)
class PlanRow:
    topic: str
    partition: int
    current: int | None
    new: int
    low: int
    high: int
    reread: int  # records before the committed offset that the group will read again
    skipped: int  # records after the committed offset that the group will never read
    to_read: int  # records from the new offset to the end (the lag once reset)
    note: str = ""

    @property
    def changes(self) -> bool:
        return self.current != self.new


@dataclass(frozen=True, slots=True)
class Plan:
    target: Target
    rows: tuple[PlanRow, ...]

    @property
    def reread(self) -> int:
        return sum(r.reread for r in self.rows)

    @property
    def skipped(self) -> int:
        return sum(r.skipped for r in self.rows)

    @property
    def changes(self) -> bool:
        return any(r.changes for r in self.rows)


def _clamp(offset: int, low: int, high: int) -> tuple[int, str]:
    if offset < low:
        return low, f"clamped to the earliest offset {low}"
    if offset > high:
        return high, f"clamped to the end {high}"
    return offset, ""


def new_offset(state: PartitionState, target: Target) -> tuple[int, str]:
    """Where ``state``'s partition goes for ``target``, and a note (clamping, no committed offset)."""
    if state.low > state.high:
        raise PlanError(f"{state.topic}:{state.partition}: low watermark {state.low} above high {state.high}")
    if target.mode is Mode.EARLIEST:
        return state.low, ""
    if target.mode is Mode.LATEST:
        return state.high, ""
    if target.mode is Mode.OFFSET:
        assert target.value is not None  # noqa: S101  an invariant for the type checker, not a check of input
        return _clamp(target.value, state.low, state.high)
    if target.mode is Mode.SHIFT:
        assert target.value is not None  # noqa: S101  an invariant for the type checker, not a check of input
        if state.committed is None:
            raise PlanError(f"cannot shift {state.topic}:{state.partition}: the group has no committed offset there")
        return _clamp(state.committed + target.value, state.low, state.high)
    if target.mode is Mode.DATETIME:
        if state.at_time is None or state.at_time < 0:
            return state.high, "no record at or after that time: the end"
        return _clamp(state.at_time, state.low, state.high)
    raise AssertionError(target.mode)


def plan_row(state: PartitionState, target: Target) -> PlanRow:
    new, note = new_offset(state, target)
    if state.committed is None:
        reread, skipped = 0, 0
        note = "; ".join(x for x in ("no committed offset", note) if x)
    else:
        # only records still on the broker can be read again or skipped
        current = min(max(state.committed, state.low), state.high)
        reread, skipped = max(0, current - new), max(0, new - current)
    return PlanRow(state.topic, state.partition, state.committed, new, state.low, state.high, reread, skipped,
                   state.high - new, note)


def make_plan(states: Iterable[PartitionState], target: Target) -> Plan:
    """The plan for every partition of ``states``, sorted by topic and partition. Raises
    :class:`PlanError` naming every partition that cannot be planned."""
    if target.mode in (Mode.OFFSET, Mode.SHIFT, Mode.DATETIME) and target.value is None:
        raise PlanError(f"--{target.mode.value} needs a value")
    if target.mode is Mode.OFFSET and target.value is not None and target.value < 0:
        raise PlanError("--to-offset must be 0 or more")
    rows, problems = [], []
    ordered = sorted(states, key=lambda s: (s.topic, s.partition))
    twice = sorted({f"{a.topic}:{a.partition}" for a, b in itertools.pairwise(ordered)
                    if (a.topic, a.partition) == (b.topic, b.partition)})
    if twice:
        raise PlanError(f"partitions given twice: {', '.join(twice)}")
    for state in ordered:
        try:
            rows.append(plan_row(state, target))
        except PlanError as exc:
            problems.append(str(exc))
    if problems:
        raise PlanError("; ".join(problems))
    return Plan(target, tuple(rows))


# ------------------------------------------------------------------------------------------ selection
Selection = dict[str, frozenset[int] | None]  # topic -> partitions (None: all of them)


def _ints(text: str, what: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            lo, _, hi = part.partition("-")
            if not (lo.strip().isdigit() and hi.strip().isdigit()) or int(lo) > int(hi):
                raise PlanError(f"not a partition range: '{part}' in {what}")
            out.update(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            out.add(int(part))
        else:
            raise PlanError(f"not a partition number: '{part}' in {what}")
    return out


def parse_selection(topics: Sequence[str], partitions: Sequence[str]) -> Selection:
    """``--topic`` values (repeatable, comma lists, ``TOPIC:0,1`` or ``TOPIC:0-3``) and ``--partition``
    values (repeatable, comma lists, ranges: they apply to every topic named without its own list).
    An empty result means: no topic named."""
    chosen: dict[str, set[int] | None] = {}
    for value in topics:
        # a comma separates topics, except inside a TOPIC:0,1 list (digits after a colon)
        items: list[str] = []
        for piece in value.split(","):
            piece = piece.strip()
            if not piece:
                continue
            if items and ":" in items[-1] and (piece.isdigit() or _is_range(piece)):
                items[-1] += "," + piece
            else:
                items.append(piece)
        for item in items:
            name, colon, parts = item.partition(":")
            name = name.strip()
            if not name:
                raise PlanError(f"no topic name in --topic '{value}'")
            if not colon:
                chosen[name] = None  # every partition (or those of --partition)
                continue
            listed = _ints(parts, f"--topic {item}")
            if not listed:
                raise PlanError(f"no partitions after ':' in --topic '{item}'")
            if name not in chosen:
                chosen[name] = listed
            elif (current := chosen[name]) is not None:
                current.update(listed)
    every = set().union(*(_ints(p, "--partition") for p in partitions)) if partitions else None
    if partitions and not every:
        raise PlanError("--partition given without a partition number")
    out: Selection = {}
    for name, numbers in chosen.items():
        if numbers is None:
            out[name] = frozenset(every) if every is not None else None
        else:
            out[name] = frozenset(numbers)
    if every is not None and not chosen:
        out[""] = frozenset(every)  # partitions of every topic the group has offsets for
    return out


def _is_range(text: str) -> bool:
    lo, dash, hi = text.partition("-")
    return bool(dash) and lo.strip().isdigit() and hi.strip().isdigit()


def select(selection: Selection, available: Mapping[str, int],
           committed_topics: Iterable[str]) -> list[tuple[str, int]]:
    """The (topic, partition) pairs to plan. ``available``: the broker's topics and their partition
    counts; ``committed_topics``: the topics the group has committed offsets for (the default when
    no topic is named). Raises :class:`PlanError` for an unknown topic or partition."""
    named = {t: p for t, p in selection.items() if t}
    every = selection.get("")
    if not named:
        topics = sorted(set(committed_topics))
        if not topics:
            raise PlanError("the group has no committed offsets: name the topics with --topic")
        named = {t: every for t in topics}
    out: list[tuple[str, int]] = []
    problems = []
    for topic in sorted(named):
        if topic not in available:
            problems.append(f"unknown topic '{topic}'")
            continue
        count = available[topic]
        parts = named[topic]
        if parts is None:
            out.extend((topic, p) for p in range(count))
            continue
        missing = sorted(p for p in parts if p >= count)
        if missing:
            problems.append(f"topic '{topic}' has partitions 0-{count - 1}, not {', '.join(map(str, missing))}")
        out.extend((topic, p) for p in sorted(parts) if p < count)
    if problems:
        raise PlanError("; ".join(problems))
    return out
