"""Properties of the core against a small, obviously-correct reference model."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from services.netchange.batch import Aggregation, aggregate_lines
from services.netchange.cdc import NOTIFY_FIELDS, display, parse_envelope
from services.netchange.days import Calendar
from services.netchange.trainee import TraineeState
from tests.unit.envelopes import envelope, person, placement

LONDON = ZoneInfo("Europe/London")
DAY0 = int(dt.datetime(2026, 3, 27, 0, 30, tzinfo=dt.UTC).timestamp() * 1000)  # spans the March DST change
HOUR = 3_600_000
TRAINEES = ("A", "B")
PLACEMENTS = ("p1", "p2", "p3")
SITES = ("Site one", "Site two", "Site three")

# an operation: (hours after DAY0, what, entity, value)
op_strategy = st.tuples(
    st.integers(0, 4 * 24 - 1),
    st.sampled_from(["site", "grade", "move", "create", "delete", "surname"]),
    st.sampled_from(PLACEMENTS),
    st.integers(0, 2),
)


def simulate(ops: list[tuple[int, str, str, int]],
             ) -> tuple[list[dict[str, Any]], list[tuple[int, dict[tuple[str, str], Any]]]]:
    """Play operations on a tiny database; return the envelopes and the timeline of states."""
    db: dict[tuple[str, str], dict[str, Any] | None] = {}
    lsn = 1000
    events: list[dict[str, Any]] = []
    timeline: list[tuple[int, dict[tuple[str, str], Any]]] = []
    start = DAY0 - 24 * HOUR
    for t in TRAINEES:
        db[("personal_details", t)] = person(t, surname=f"Surname {t}")
    db[("placement", "p1")] = placement("p1", "A")
    for (table, _eid), row in db.items():
        lsn += 8
        events.append(envelope(table, "r", None, row, start, lsn=lsn, snapshot="true"))
    timeline.append((start, dict(db)))
    for hours, what, pid, v in sorted(ops, key=lambda o: o[0]):
        ts = DAY0 + hours * HOUR
        if what == "surname":
            key = ("personal_details", TRAINEES[v % 2])
            old = db[key]
            new = {**old, "surname": f"Surname {v}"}
        else:
            key = ("placement", pid)
            old = db.get(key)
            if what == "create":
                if old is not None:
                    continue
                new = placement(pid, TRAINEES[v % 2], site=SITES[v])
            elif old is None:
                continue
            elif what == "delete":
                new = None
            elif what == "move":
                new = {**old, "trainee_id": TRAINEES[v % 2]}
            elif what == "site":
                new = {**old, "site": SITES[v]}
            else:
                new = {**old, "grade": f"ST{v + 1}"}
        op = "c" if old is None else "d" if new is None else "u"
        lsn += 8
        events.append(envelope(key[0], op, old, new, ts, lsn=lsn))
        db[key] = new
        timeline.append((ts, dict(db)))
    return events, timeline


def reference(timeline: list[tuple[int, dict[tuple[str, str], Any]]], cal: Calendar) -> set[Any]:
    """Net change per (trainee, day): state at the day's start vs its end, for entities touched that day."""
    out = set()
    days = sorted({cal.day_of(ts).label for ts, _ in timeline[1:]})
    for label in days:
        day = cal.by_label(label)
        before = [s for ts, s in timeline if ts < day.start_ms][-1]
        after = [s for ts, s in timeline if ts < day.end_ms][-1]
        touched: set[tuple[str, str]] = set()
        prev = before
        for ts, s in timeline:
            if day.start_ms <= ts < day.end_ms:
                touched |= {k for k in s if s.get(k) != prev.get(k)} | {k for k in prev if k not in s}
                prev = s
        for trainee in TRAINEES:
            for key in touched:
                o = before.get(key) if before.get(key) and before[key]["trainee_id"] == trainee else None
                c = after.get(key) if after.get(key) and after[key]["trainee_id"] == trainee else None
                if o is None and c is None:
                    continue
                fields = frozenset(
                    (f, display(f, (o or {}).get(f)), display(f, (c or {}).get(f))) for f in NOTIFY_FIELDS[key[0]]
                    if display(f, (o or {}).get(f)) != display(f, (c or {}).get(f)))
                if not fields:
                    continue
                kind = "created" if o is None else "deleted" if c is None else "updated"
                out.add((trainee, label, key[0], key[1], kind, fields))
    return out


def flatten(records: list[dict[str, Any]]) -> set[Any]:
    return {(r["trainee_id"], r["day"], c["entity"], c["id"], c["kind"],
             frozenset((f, v["old"], v["new"]) for f, v in c["fields"].items()))
            for r in records for c in r["changes"]}


def aggregate(events: list[dict[str, Any]], cal: Calendar) -> list[dict[str, Any]]:
    records, _ = aggregate_lines([orjson.dumps(e) for e in events], cal, io.StringIO())
    return records


@settings(max_examples=300, deadline=None)
@given(st.lists(op_strategy, max_size=30))
def test_core_agrees_with_the_reference_model(ops: list[tuple[int, str, str, int]]) -> None:
    cal = Calendar()
    events, timeline = simulate(ops)
    assert flatten(aggregate(events, cal)) == reference(timeline, cal)


@settings(max_examples=200, deadline=None)
@given(st.lists(op_strategy.filter(lambda o: o[1] in ("site", "grade", "move", "surname")), min_size=1, max_size=15))
def test_any_edit_sequence_followed_by_its_inverse_nets_to_nothing(ops: list[tuple[int, str, str, int]]) -> None:
    same_day = [(2, what, pid, v) for _, what, pid, v in ops]
    events, _ = simulate(same_day)
    forward = [e for e in events if e["op"] != "r"]
    inverse = []
    for e in reversed(forward):
        inverse.append({**e, "before": e["after"], "after": e["before"],
                        "source": {**e["source"], "sequence": orjson.dumps(
                            [str(100_000 + 8 * len(inverse)), str(100_004 + 8 * len(inverse))]).decode()}})
    snapshot = [e for e in events if e["op"] == "r"]
    assert aggregate(snapshot + forward + inverse, Calendar()) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(op_strategy, max_size=25), st.data())
def test_state_saved_and_restored_anywhere_and_replays_give_the_same_result(
        ops: list[Any], data: st.DataObject) -> None:
    cal = Calendar()
    events, _ = simulate(ops)
    changes = [parse_envelope(orjson.dumps(e)) for e in events]
    split = data.draw(st.integers(0, len(changes)))
    replay_from = data.draw(st.integers(0, split))
    agg = Aggregation(cal)
    for ch in changes[:split]:
        agg.apply(ch)  # type: ignore[arg-type]
    # "restart": each trainee's state goes through its stored form, then a replay of applied events
    restored = Aggregation(cal)
    restored.states = {k: TraineeState.loads(v.dumps(partition=0)) for k, v in agg.states.items()}
    restored.router.last_owner = dict(agg.router.last_owner)  # the connector's keys, not fold state
    for ch in changes[replay_from:]:
        restored.apply(ch)  # type: ignore[arg-type]
    assert list(restored.close_all()) == aggregate(events, cal)


@settings(max_examples=500, deadline=None)
@given(st.integers(int(dt.datetime(2025, 1, 1).timestamp() * 1000), int(dt.datetime(2028, 1, 1).timestamp() * 1000)))
def test_instants_bucket_by_london_date(ts_ms: int) -> None:
    day = Calendar().day_of(ts_ms)
    assert day.label == dt.datetime.fromtimestamp(ts_ms / 1000, LONDON).date().isoformat()
    assert day.start_ms <= ts_ms < day.end_ms


ZONES = ["Europe/London", "Asia/Kolkata", "America/St_Johns", "Australia/Adelaide", "Asia/Kathmandu",
         "Australia/Lord_Howe", "Pacific/Chatham", "America/New_York"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ZONES),
       st.integers(int(dt.datetime(2025, 1, 1).timestamp() // 3600), int(dt.datetime(2028, 1, 1).timestamp() // 3600)),
       st.lists(st.integers(-3 * 3_600_000, 3 * 3_600_000), min_size=1, max_size=40))
def test_instants_bucket_by_local_date_in_any_zone_with_one_calendar(zone: str, hour: int, offsets: list[int]) -> None:
    """One calendar (its cache shared) over many instants around an hour, in zones whose offsets and
    DST steps are not whole hours: every instant lands in the day of its local date."""
    cal, tz = Calendar(zone), ZoneInfo(zone)
    for off in offsets + [-off for off in offsets]:
        ts_ms = hour * 3_600_000 + off
        day = cal.day_of(ts_ms)
        assert day.label == dt.datetime.fromtimestamp(ts_ms / 1000, tz).date().isoformat()
        assert day.start_ms <= ts_ms < day.end_ms
        assert 23 * HOUR <= day.end_ms - day.start_ms <= 25 * HOUR


def test_a_half_hour_zone_splits_an_hour_at_local_midnight() -> None:
    cal = Calendar("Asia/Kolkata")  # midnight there is 18:30 UTC
    before = int(dt.datetime(2026, 11, 24, 18, 10, tzinfo=dt.UTC).timestamp() * 1000)
    after = int(dt.datetime(2026, 11, 24, 18, 50, tzinfo=dt.UTC).timestamp() * 1000)
    assert cal.day_of(before).label == "2026-11-24" and cal.day_of(after).label == "2026-11-25"
    assert cal.day_of(before).label == "2026-11-24"  # asked again, after the other half was seen


def test_dst_days_are_23_and_25_hours_long() -> None:
    cal = Calendar()
    lengths = {label: (cal.by_label(label).end_ms - cal.by_label(label).start_ms) // HOUR
               for label in ("2026-03-29", "2026-03-30", "2026-10-25", "2026-10-26")}
    assert lengths == {"2026-03-29": 23, "2026-03-30": 24, "2026-10-25": 25, "2026-10-26": 24}
