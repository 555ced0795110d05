"""The core over envelopes captured from the real Debezium connector (scripts/capture_fixtures.py)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from services.netchange.batch import aggregate_lines
from services.netchange.days import Calendar

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def run(*names: str) -> list[dict[str, Any]]:
    lines = [line for name in names for line in (FIXTURES / f"{name}.jsonl").read_bytes().splitlines()]
    records, _ = aggregate_lines(lines, Calendar(), io.StringIO())
    return records


def kinds(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(r["trainee_id"], c["entity"], c["kind"]) for r in records for c in r["changes"]]


def test_snapshot_reads_only_set_the_baseline() -> None:
    assert run("snapshot") == []


def test_insert_update_delete_of_a_row_in_one_day_nets_to_nothing() -> None:
    for table in ("placement", "personal_details", "programme_membership", "curriculum_membership"):
        assert run(f"{table}_crud") == [], table


def test_edit_undone_and_create_then_delete_send_nothing() -> None:
    assert run("placement_edit_undone") == []
    assert run("placement_create_then_delete") == []


def test_moved_placement_is_deleted_for_one_created_for_the_other_and_back_again_is_nothing() -> None:
    moved = run("placement_moved")
    assert sorted(kinds(moved)) == [("90001", "placement", "deleted"), ("90002", "placement", "created")]
    created = next(r for r in moved if r["trainee_id"] == "90002")["changes"][0]
    assert created["fields"]["whole_time_equivalent"] == {"old": None, "new": "0.80"}  # numeric as Debezium's string
    assert created["fields"]["start_date"]["new"] == "2027-08-04"  # date from a count of days
    assert run("placement_moved", "placement_moved_back") == []


def test_email_change_names_the_previous_address() -> None:
    [record] = run("email_change")
    assert record["previous_email"] != record["recipient"]["email"]
    assert record["changes"][0]["fields"]["email"]["old"] == record["previous_email"]


def test_a_transaction_of_several_rows_is_one_record() -> None:
    [record] = run("rotation_transaction")
    assert [c["entity"] for c in record["changes"]] == sorted(c["entity"] for c in record["changes"])
    assert len(record["changes"]) == 3


def test_form_r_and_arcp_are_not_notified_by_the_digest() -> None:
    assert run("form_r_and_arcp") == []
