"""``trainee-notify aggregate EVENTS.jsonl``: the core over a file (tests, backfills, "what would be sent").

Also :class:`Aggregation`, the in-memory driver of the core that the batch command and benchmarks
use; the streaming app drives the same functions with Faust tables instead of dicts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

import orjson

from services.netchange import core
from services.netchange.cdc import ENTITIES, Change, MalformedEnvelope, parse_envelope
from services.netchange.days import Calendar, Day


class Aggregation:
    """Global known state per entity, folds per (trainee, day), person history per trainee."""

    def __init__(self, calendar: Calendar) -> None:
        self.calendar = calendar
        self.known: dict[tuple[str, str], core.Known] = {}
        self.days: dict[tuple[str, str], core.DayFold] = {}
        self.day_by_label: dict[str, Day] = {}
        self.people: dict[str, core.PersonHistory] = {}
        self.truncates = 0
        self.baselines = 0

    def apply(self, change: Change) -> None:
        op = change.op
        if op == "t" or op == "m" or change.entity_id is None:
            self.truncates += op == "t"
            return
        key = (change.table, change.entity_id)
        known, resolved, _ = core.resolve(self.known.get(key), change)
        if known is not None:
            self.known[key] = known
        if resolved is None:
            return
        self.baselines += resolved.baseline
        day = self.calendar.day_of(resolved.ts_ms)
        label = day.label
        self.day_by_label[label] = day
        people, days = self.people, self.days
        personal = resolved.table == "personal_details"
        for trainee in resolved.owners():
            if personal:
                hist = core.person_apply(people.get(trainee, ()), day, resolved)
                if hist is not None:
                    people[trainee] = hist
            folded = core.fold(days.get((trainee, label)), resolved)
            if folded is not None:
                days[(trainee, label)] = folded

    def close_all(self) -> Iterator[dict[str, Any]]:
        """Every (trainee, day) with a net change, ordered by (day, trainee_id)."""
        for trainee, label in sorted(self.days, key=lambda k: (k[1], k[0])):
            day = self.day_by_label[label]
            person = core.person_at(self.people.get(trainee, ()), day)
            record = core.close(trainee, day, self.days[(trainee, label)], person)
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
        agg.apply(change)
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
        stream: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
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
