"""The trainee-keyed captures (tests/fixtures/keyed/, scripts/capture_fixtures.py) keep ADR 0004's contract.

Each line is one record as the deployed connector wrote it: ``{"topic", "partition", "offset", "key",
"headers", "value"}``. The value-only files next to them were captured in the same run from an
entity-keyed connector on the same database, so both shapes of every scenario describe the same
commits: fed to the batch command they must net to the same records.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from services.netchange.batch import aggregate_lines
from services.netchange.days import Calendar

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
KEYED = FIXTURES / "keyed"
NAMES = sorted(p.stem for p in KEYED.glob("*.jsonl"))
OLDKEY, NEWKEY = "__debezium.oldkey", "__debezium.newkey"


def keyed(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (KEYED / f"{name}.jsonl").read_text().splitlines() if line]


def owner(record: dict[str, Any]) -> str:
    value = record["value"]
    return str((value["before"] if value["op"] == "d" else value["after"])["trainee_id"])


def test_every_scenario_has_both_shapes() -> None:
    assert set(NAMES) == {p.stem for p in FIXTURES.glob("*.jsonl")}
    assert "placement_moved" in NAMES and "snapshot" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_record_is_keyed_by_its_owner_and_none_is_a_tombstone(name: str) -> None:
    for record in keyed(name):
        assert set(record) == {"topic", "partition", "offset", "key", "headers", "value"}
        assert record["value"] is not None  # tombstones.on.delete is off
        assert record["key"] == {"trainee_id": owner(record)}
        assert record["topic"] == f"tis.tss.{record['value']['source']['table']}"
        assert all(isinstance(v, str) for v in record["headers"].values())


def test_one_trainee_is_on_one_partition_number_across_topics() -> None:
    partitions: dict[str, set[int]] = {}
    for name in NAMES:
        for record in keyed(name):
            partitions.setdefault(owner(record), set()).add(record["partition"])
    assert all(len(p) == 1 for p in partitions.values()), partitions


@pytest.mark.parametrize(("name", "old", "new"), [("placement_moved", "90001", "90002"),
                                                 ("placement_moved_back", "90002", "90001")])
def test_a_change_of_owner_is_a_delete_for_the_old_and_a_create_for_the_new(name: str, old: str, new: str) -> None:
    delete, create = keyed(name)
    assert delete["key"] == {"trainee_id": old} and delete["value"]["op"] == "d"
    assert json.loads(delete["headers"][NEWKEY]) == {"trainee_id": new} and OLDKEY not in delete["headers"]
    assert delete["value"]["before"]["trainee_id"] == old and delete["value"]["after"] is None
    assert create["key"] == {"trainee_id": new} and create["value"]["op"] == "c"
    assert json.loads(create["headers"][OLDKEY]) == {"trainee_id": old} and NEWKEY not in create["headers"]
    assert create["value"]["before"] is None  # no before image on the create half
    assert create["value"]["after"]["id"] == delete["value"]["before"]["id"]
    assert create["value"]["source"]["sequence"] == delete["value"]["source"]["sequence"]  # one position
    assert create["partition"] != delete["partition"]  # these two trainees hash to different partitions


def _run(lines: list[bytes]) -> list[dict[str, Any]]:
    records, _ = aggregate_lines(lines, Calendar(), io.StringIO())
    return records


@pytest.mark.parametrize("name", [n for n in NAMES if n != "snapshot"])
def test_split_and_unsplit_captures_net_to_the_same_records(name: str) -> None:
    """A move split by the connector (delete + create) and the same move as one update: one result."""
    by_entity = [line for n in ("snapshot", name) for line in (FIXTURES / f"{n}.jsonl").read_bytes().splitlines()]
    by_trainee = [json.dumps(r["value"]).encode() for n in ("snapshot", name) for r in keyed(n)]
    assert _run(by_trainee) == _run(by_entity)


def test_moved_there_and_back_is_nothing_in_the_split_shape_too() -> None:
    lines = [json.dumps(r["value"]).encode() for n in ("snapshot", "placement_moved", "placement_moved_back")
             for r in keyed(n)]
    assert _run(lines) == []
    moved = _run([json.dumps(r["value"]).encode() for n in ("snapshot", "placement_moved") for r in keyed(n)])
    assert sorted((r["trainee_id"], c["kind"]) for r in moved for c in r["changes"]) == [
        ("90001", "deleted"), ("90002", "created")]
