"""One test per clause of design.md "Net change: the normative semantics"."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest

from services.netchange.batch import aggregate_lines
from services.netchange.cdc import MalformedEnvelope, parse_envelope
from services.netchange.days import Calendar
from tests.unit.envelopes import LONDON_NOON_2026_11_24 as NOON
from tests.unit.envelopes import envelope, person, placement

DAY = 86_400_000


def run(*envs: Any, day_seconds: int = 0) -> list[dict[str, Any]]:
    lines = [orjson.dumps(e) for e in envs]
    records, _ = aggregate_lines(lines, Calendar("Europe/London", day_seconds), io.StringIO())
    return records


def baseline() -> list[dict[str, Any]]:
    return [envelope("personal_details", "r", None, person(), NOON - DAY, snapshot="true"),
            envelope("placement", "r", None, placement(), NOON - DAY, snapshot="true")]


def test_update_reports_the_changed_field_with_display_values() -> None:
    [rec] = run(*baseline(), envelope("placement", "u", placement(), placement(site_known_as="Royal Papworth Hospital",
                                                                                end_date=21216)))
    assert rec["id"] == "47165:2026-11-24" and rec["day"] == "2026-11-24" and rec["late"] is False
    assert rec["changes"] == [{"entity": "placement", "id": "315", "kind": "updated", "suppressed": None, "fields": {
        "site_known_as": {"old": "Addenbrooke's Hospital", "new": "Royal Papworth Hospital"},
        "end_date": {"old": "2028-02-01", "new": "2028-02-02"}}}]
    assert rec["recipient"] == {"email": "a.doctor@example.nhs.uk", "title": "Dr", "forenames": "Ada",
                                "surname": "Okafor"}
    assert rec["previous_email"] is None and rec["suppressed"] is None


def test_edit_undone_the_same_day_sends_nothing() -> None:
    moved = placement(site_known_as="Royal Papworth Hospital")
    assert run(*baseline(), envelope("placement", "u", placement(), moved),
               envelope("placement", "u", moved, placement())) == []


def test_created_and_deleted_the_same_day_is_nothing_and_reinsert_as_was_is_nothing() -> None:
    new = placement("900")
    assert run(*baseline(), envelope("placement", "c", None, new), envelope("placement", "d", new, None)) == []
    assert run(*baseline(), envelope("placement", "d", placement(), None),
               envelope("placement", "c", None, placement())) == []


def test_created_lists_non_null_fields_and_deleted_lists_old_values() -> None:
    [rec] = run(*baseline(), envelope("placement", "c", None, placement("900", sub_specialty=None)))
    ch = rec["changes"][0]
    assert ch["kind"] == "created" and "sub_specialty" not in ch["fields"]
    assert ch["fields"]["grade"] == {"old": None, "new": "ST3"}
    assert ch["fields"]["whole_time_equivalent"] == {"old": None, "new": "1.00"}
    [rec] = run(*baseline(), envelope("placement", "d", placement(), None))
    assert rec["changes"][0]["kind"] == "deleted" and rec["changes"][0]["fields"]["site"] == {
        "old": "Addenbrooke's Hospital", "new": None}


def test_snapshot_read_and_first_seen_update_only_set_the_baseline() -> None:
    assert run(envelope("placement", "r", None, placement(), snapshot="true")) == []
    # first sight of an update without a full before: baseline only ...
    first = envelope("placement", "u", None, placement(grade="ST4"))
    assert run(first) == []
    # ... but the next change the same day is measured from it
    [rec] = run(first, envelope("placement", "u", None, placement(grade="ST5")))
    assert rec["changes"][0]["fields"] == {"grade": {"old": "ST4", "new": "ST5"}}


def test_primary_key_only_before_counts_as_absent_and_known_state_is_used() -> None:
    pk_only = {"id": "315"}
    [rec] = run(*baseline(), envelope("placement", "d", pk_only, None))
    assert rec["changes"][0]["kind"] == "deleted" and rec["changes"][0]["fields"]["grade"]["old"] == "ST3"


def test_delete_of_unknown_entity_changes_nothing_but_is_remembered_as_absent() -> None:
    assert run(envelope("placement", "d", {"id": "77"}, None)) == []
    [rec] = run(envelope("placement", "d", {"id": "77"}, None), envelope("placement", "u", None, placement("77")))
    assert rec["changes"][0]["kind"] == "created"  # known absent → present


def test_unavailable_value_is_taken_from_before_or_known_state() -> None:
    after = placement(site_known_as="Royal Papworth Hospital", specialty="__debezium_unavailable_value")
    [rec] = run(*baseline(), envelope("placement", "u", placement(), after))
    assert set(rec["changes"][0]["fields"]) == {"site_known_as"}
    # no before image: the known state fills it in
    [rec] = run(*baseline(), envelope("placement", "u", None, after))
    assert set(rec["changes"][0]["fields"]) == {"site_known_as"}


def test_move_between_trainees_is_deleted_for_one_and_created_for_the_other() -> None:
    events = [*baseline(), envelope("personal_details", "r", None, person("50001", surname="Singh"), NOON - DAY)]
    moved = placement(trainee_id="50001")
    recs = run(*events, envelope("placement", "u", placement(), moved))
    assert [(r["trainee_id"], r["changes"][0]["kind"]) for r in recs] == [("47165", "deleted"), ("50001", "created")]
    assert recs[1]["recipient"]["surname"] == "Singh"
    assert run(*events, envelope("placement", "u", placement(), moved),
               envelope("placement", "u", moved, placement())) == []


def test_non_notifying_field_changes_nothing() -> None:
    assert run(*baseline(), envelope("placement", "u", placement(), placement(owner="London", updated_at="x"))) == []


def test_empty_string_is_a_value_distinct_from_null() -> None:
    [rec] = run(*baseline(), envelope("placement", "u", placement(), placement(sub_specialty="")))
    assert rec["changes"][0]["fields"] == {"sub_specialty": {"old": None, "new": ""}}


def test_placement_suppression_reasons_and_record_level_reason() -> None:
    [rec] = run(*baseline(), envelope("placement", "u", placement(), placement(placement_type="Parental leave")))
    assert rec["changes"][0]["suppressed"] == "placement type not in post"
    assert rec["suppressed"] == "no notifiable change"
    ended = placement(end_date=20000)  # 2024-10-04, before the day
    [rec] = run(envelope("placement", "r", None, ended, NOON - DAY),
                envelope("placement", "u", ended, {**ended, "grade": "ST4"}))
    assert rec["changes"][0]["suppressed"] == "placement ended before the day"
    both = placement(end_date=20000, placement_type="Long-term sick")
    [rec] = run(envelope("placement", "c", None, both))
    assert rec["changes"][0]["suppressed"] == "placement type not in post"
    [rec] = run(*baseline(), envelope("placement", "u", placement(), placement(placement_type="IN POST - acting up")))
    assert rec["changes"][0]["suppressed"] is None and rec["suppressed"] is None


@pytest.mark.parametrize(("role", "reason"), [("Placeholder", "placeholder person"),
                                              ("Dummy Record", "dummy record person")])
def test_placeholder_and_dummy_people_are_suppressed(role: str, reason: str) -> None:
    events = [envelope("personal_details", "r", None, person(role=role), NOON - DAY), baseline()[1]]
    [rec] = run(*events, envelope("placement", "u", placement(), placement(grade="ST4")))
    assert rec["suppressed"] == reason and rec["changes"][0]["suppressed"] is None


def test_email_change_sets_previous_email_and_recipient_at_close() -> None:
    [rec] = run(*baseline(), envelope("personal_details", "u", person(), person(email="new@example.nhs.uk")))
    assert rec["previous_email"] == "a.doctor@example.nhs.uk" and rec["recipient"]["email"] == "new@example.nhs.uk"
    # the recipient is the person at the close of the day, not a later one
    events = [*baseline(), envelope("placement", "u", placement(), placement(grade="ST4"))]
    tomorrow = envelope("personal_details", "u", person(), person(surname="Later"), NOON + DAY)
    recs = run(*events, tomorrow)
    assert recs[0]["recipient"]["surname"] == "Okafor" and recs[1]["recipient"]["surname"] == "Later"


def test_recipient_is_null_when_unknown_or_deleted() -> None:
    [rec] = run(baseline()[1], envelope("placement", "u", placement(), placement(grade="ST4")))
    assert rec["recipient"] is None
    recs = run(*baseline(), envelope("personal_details", "d", person(), None))
    assert recs[0]["recipient"] is None and recs[0]["changes"][0]["kind"] == "deleted"


def test_changes_sorted_by_entity_then_id_as_strings() -> None:
    events = [*baseline(), envelope("placement", "c", None, placement("1000")),
              envelope("placement", "c", None, placement("999")),
              envelope("personal_details", "u", person(), person(known_as="Ada"))]
    [rec] = run(*events)
    assert [(c["entity"], c["id"]) for c in rec["changes"]] == [
        ("personal_details", "47165"), ("placement", "1000"), ("placement", "999")]


def test_days_are_london_dates_and_short_days_are_utc_instants() -> None:
    late_evening_bst = 1782853200000  # 2026-06-30T21:00Z = 22:00 BST, London date 2026-06-30
    just_after_midnight_bst = late_evening_bst + 7_200_000 + 60_000  # 23:01Z = 00:01 BST on 1 July
    recs = run(*[{**e, "source": {**e["source"], "ts_ms": late_evening_bst - DAY}} for e in baseline()],
               envelope("placement", "u", placement(), placement(grade="ST4"), late_evening_bst),
               envelope("placement", "u", placement(grade="ST4"), placement(grade="ST5"), just_after_midnight_bst))
    assert [r["day"] for r in recs] == ["2026-06-30", "2026-07-01"]
    [rec] = run(*baseline(), envelope("placement", "u", placement(), placement(grade="ST4"), NOON + 61_000),
                day_seconds=60)
    assert rec["day"] == "2026-11-24T12:01:00Z" and rec["id"] == "47165:2026-11-24T12:01:00Z"


def test_replayed_events_are_applied_once() -> None:
    events = [*baseline(), envelope("placement", "u", placement(), placement(grade="ST4"))]
    assert run(*events, *events) == run(*events)


@pytest.mark.parametrize(("value", "reason"), [
    ("{", "not JSON"), ("[]", "not a JSON object"), ('{"op":"u"}', "source is missing"),
    ('{"op":"x","source":{}}', "op is missing"),
    ('{"op":"u","after":{"grade":"x"},"source":{"table":"placement","ts_ms":1}}', "no primary key"),
    ('{"op":"u","after":{"id":"1"},"source":{"table":"placement","ts_ms":"yesterday"}}', "ts_ms"),
    ('{"op":"u","after":"row","source":{"table":"placement","ts_ms":1}}', "after is not an object"),
])
def test_malformed_envelopes_have_clear_reasons(value: str, reason: str) -> None:
    with pytest.raises(MalformedEnvelope, match=reason):
        parse_envelope(value)


def test_batch_reports_bad_lines_with_numbers_and_carries_on() -> None:
    good = [orjson.dumps(e) for e in (*baseline(), envelope("placement", "u", placement(), placement(grade="ST4")))]
    err = io.StringIO()
    records, stats = aggregate_lines([good[0], b"{oops", b"", b"null", good[1], good[2]], Calendar(), err)
    assert len(records) == 1 and stats["skipped"] == 1 and stats["tombstones"] == 1
    assert err.getvalue().startswith("line 2: skipped: not JSON")


def test_a_transaction_open_across_the_snapshot_is_not_skipped_as_a_replay() -> None:
    snap = envelope("placement", "r", None, placement(), NOON - DAY, snapshot="true")
    snap["source"]["sequence"] = '[null,"5000"]'
    # streamed after the snapshot, but its LSN is lower: the first streamed transaction has no commit LSN
    update = envelope("placement", "u", placement(), placement(grade="ST4"))
    update["source"]["sequence"] = '[null,"4000"]'
    [rec] = run(snap, update)
    assert rec["changes"][0]["fields"] == {"grade": {"old": "ST3", "new": "ST4"}}
    assert run(snap, update, update) == [rec]  # and its replay is still recognised


def test_a_replayed_change_is_re_derived_exactly_as_the_first_time() -> None:
    from services.netchange import core

    changes = [parse_envelope(orjson.dumps(e)) for e in (
        envelope("placement", "r", None, placement(), NOON - DAY, snapshot="true"),
        envelope("placement", "u", placement(), placement(grade="ST4")),
        envelope("placement", "u", {"id": "315"}, placement(grade="ST5")),  # PK-only before: original from known
    )]
    known, firsts = None, []
    for ch in changes:
        known, resolved, replay = core.resolve(known, ch)
        assert not replay
        firsts.append(resolved)
    restored = core.Known.from_dict(orjson.loads(orjson.dumps(known.to_dict())))
    for ch, first in zip(changes, firsts, strict=True):
        again, resolved, replay = core.resolve(restored, ch)
        assert replay and again is restored and resolved == first


def test_aggregate_never_crashes_on_hostile_lines_and_reports_each_with_its_number() -> None:
    from tests.unit.hostile import hostile_envelopes

    good = [orjson.dumps(e) for e in baseline()] + [
        orjson.dumps(envelope("placement", "u", placement(), placement(grade="ST4")))]
    bad = [v for v, _ in hostile_envelopes(600, seed=3)]
    lines: list[bytes] = []
    for i, value in enumerate(bad):
        lines.append(value)
        if i % 200 == 0 and good:
            lines.append(good.pop(0))
    lines += good
    err = io.StringIO()
    records, stats = aggregate_lines(lines, Calendar(), err)
    clean, _ = aggregate_lines([ln for ln in lines if ln not in bad], Calendar(), io.StringIO())
    assert records == clean and len(records) == 1
    reported = {int(line.split(":")[0].removeprefix("line ")) for line in err.getvalue().splitlines()}
    want = {n for n, ln in enumerate(lines, start=1) if ln in bad and ln.strip()}
    assert reported == want and stats["skipped"] == len(want)
