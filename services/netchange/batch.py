"""``trainee-notify aggregate EVENTS.jsonl``: the core over a file (tests, backfills, "what would be sent").

Also :class:`Aggregation`, the in-memory driver of the core that the batch command and benchmarks
use; the streaming app drives the same :class:`~services.netchange.trainee.Fold` with a faust table.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import IO, Any

import orjson

from services.netchange import trainee
from services.netchange.cdc import ENTITIES, Change, MalformedEnvelope, parse_envelope
from services.netchange.days import Calendar, Day
from services.netchange.trainee import Fold, Router, TraineeState


class Aggregation:
    """Per trainee, the state the stream keeps (:class:`~services.netchange.trainee.TraineeState`),
    driven by the same :class:`~services.netchange.trainee.Fold`; a :class:`Router` splits owner
    changes as the connector does."""

    def __init__(self, calendar: Calendar) -> None:
        self.fold = Fold(calendar)
        self.router = Router()
        self.states: dict[str, TraineeState] = {}
        self.outcomes: Counter[str] = Counter()

    @property
    def baselines(self) -> int:
        return self.outcomes[trainee.BASELINE]

    def apply(self, change: Change) -> None:
        if change.op in ("t", "m") or change.entity_id is None:
            self.outcomes["truncate" if change.op == "t" else trainee.IGNORED] += 1
            return
        states: dict[str, TraineeState] = {}
        outcomes = []
        for who, routed in self.router.route(change):  # an error leaves every trainee's state as it was
            state = states.get(who) or self.states.get(who) or TraineeState()
            states[who], outcome = self.fold.apply(state, who, routed)
            outcomes.append(outcome)
        self.states.update(states)
        self.outcomes.update(outcomes)

    def close_all(self) -> Iterator[dict[str, Any]]:
        """Every (trainee, day) with a net change, ordered by (day, trainee_id); each trainee's days
        close oldest first, as the stream closes them."""
        open_days = sorted(((label, who) for who, state in self.states.items() for label in state.days))
        by_label: dict[str, Day] = {}
        for label, who in open_days:
            day = by_label.get(label) or by_label.setdefault(label, self.fold.calendar.by_label(label))
            record, self.states[who] = self.fold.close(self.states[who], who, day)
            if record is not None:
                yield record


def aggregate_lines(lines: Iterable[bytes | str], calendar: Calendar, err: IO[str] | None = None
                    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Run the core over envelope lines. Bad lines are reported to ``err`` and skipped."""
    agg = Aggregation(calendar)
    stats = {"lines": 0, "applied": 0, "skipped": 0, "ignored": 0, "tombstones": 0}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        stats["lines"] += 1
        try:
            change = parse_envelope(text)
        except MalformedEnvelope as exc:
            stats["skipped"] += 1
            if err is not None:
                print(f"line {number}: skipped: {exc.reason}", file=err)
            continue
        if change is None:
            stats["tombstones"] += 1
            continue
        if change.table not in ENTITIES:
            stats["ignored"] += 1
            continue
        if change.op == "t" and err is not None:
            print(f"line {number}: truncate of {change.table} changes nothing", file=err)
        try:
            agg.apply(change)
        except Exception as exc:  # noqa: BLE001 - one bad line never stops the run; the reason names no data
            stats["skipped"] += 1
            if err is not None:
                print(f"line {number}: skipped: cannot apply: {type(exc).__name__}", file=err)
            continue
        stats["applied"] += 1
    records = list(agg.close_all())
    stats["records"] = len(records)
    stats["baselines"] = agg.baselines
    return records, stats


def run_batch(path: str) -> int:
    from services.settings import DaySettings

    settings = DaySettings()
    calendar = Calendar(settings.timezone, settings.day_seconds)
    try:
        stream: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 - closed by the `with stream:` below
    except OSError as exc:
        print(f"aggregate: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        with stream:
            records, stats = aggregate_lines(stream, calendar, sys.stderr)
    except OSError as exc:
        print(f"aggregate: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    for record in records:
        out.write(orjson.dumps(record) + b"\n")
    out.flush()
    print("aggregate: " + ", ".join(f"{k} {v}" for k, v in stats.items()), file=sys.stderr)
    return 0
