"""The Avro schemas in schemas/: they parse, values round-trip, and each released schema kept in
schemas/history/ can still be read by the current one (backward compatibility).

History files are named ``<namespace>.<Name>.v<N>.avsc`` and pair with the current
``<namespace>.<Name>.avsc``: data written with v<N> must resolve against the current schema
(fastavro schema resolution: write with the old schema, read with the new one). The newest
released version is the current schema itself: changing a schema means adding ``v<N+1>``.

NetChange versions: v1 the first; v2 adds the optional ``local_offices`` (the managing deaneries of
the trainee's current programme memberships at the day's close, or null).

DeliveryStatus versions: v1 the first; v2 adds the states SUPERSEDED and RESEND_REQUESTED and the
optional content_hash, previous_content_hash, request_id, operator and operator_reason (replays and
resends made visible: docs/runbook.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import parse_schema
from fastavro.utils import generate_many

from services import serde

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
HISTORY = SCHEMAS / "history"
GOLDEN = ROOT / "tests" / "unit" / "golden"
VERSIONED = re.compile(r"^(?P<name>.+)\.v(?P<version>\d+)\.avsc$")

CURRENT = sorted(SCHEMAS.glob("*.avsc"))
RELEASED = sorted(HISTORY.glob("*.avsc"))


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def fullname(schema: dict[str, Any]) -> str:
    return f"{schema['namespace']}.{schema['name']}" if "namespace" in schema else str(schema["name"])


def current_for(history_file: Path) -> Path:
    match = VERSIONED.match(history_file.name)
    assert match, f"{history_file.name}: history files are named <fullname>.v<N>.avsc"
    return SCHEMAS / f"{match['name']}.avsc"


def examples(name: str) -> list[dict[str, Any]]:
    if name == serde.NETCHANGE:
        full, minimal = load(GOLDEN / "full_record.json"), load(GOLDEN / "minimal_record.json")
        offices = ["Health Education England East of England", "Health Education England Wessex"]
        return [full, minimal, {**full, "local_offices": offices}, {**minimal, "local_offices": []},
                {**minimal, "local_offices": None}]
    if name == serde.DELIVERY_STATUS:
        base = {"notification_id": "47165:2026-11-24:digest", "record_id": "47165:2026-11-24", "trainee_id": "47165",
                "day": "2026-11-24", "kind": "digest", "status": "SENT", "attempt": 1, "generation": 0,
                "message_id": "<abc@notify.example.nhs.uk>", "smtp_code": 250, "reason": None,
                "instance": "mailer-1", "at_ms": 1795590000000}
        return [base, {**base, "status": "NO_ADDRESS", "attempt": 0, "message_id": None, "smtp_code": None,
                       "reason": "no address"},
                {**base, "status": "SUPERSEDED", "attempt": 0, "smtp_code": None, "content_hash": "b" * 32,
                 "previous_content_hash": "a" * 32, "reason": "other content"},
                {**base, "status": "RESEND_REQUESTED", "attempt": 0, "generation": 0, "request_id": "rs-0123456789ab",
                 "operator": "jbloggs", "operator_reason": "relay down overnight", "content_hash": "a" * 32},
                {**base, "generation": 1, "request_id": "rs-0123456789ab", "operator": "jbloggs",
                 "operator_reason": "relay down overnight", "content_hash": "a" * 32}]
    raise AssertionError(f"no example values for {name}: add some here")


def normalise(value: Any) -> Any:
    """timestamp-millis reads back as an aware datetime; compare as epoch milliseconds."""
    if isinstance(value, dt.datetime):
        return (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """The top-level fields that have a default, with it: what a value that leaves them out holds."""
    return {f["name"]: f["default"] for f in schema["fields"] if "default" in f}


def released(name: str) -> dict[int, Path]:
    found = {}
    for path in RELEASED:
        match = VERSIONED.match(path.name)
        if match and match["name"] == name:
            found[int(match["version"])] = path
    return found


def single_object(writer: dict[str, Any], value: dict[str, Any]) -> bytes:
    """``value`` on the wire as a producer holding only ``writer`` would have sent it."""
    parsed = parse_schema(writer)
    buf = io.BytesIO()
    buf.write(serde.MAGIC)
    buf.write(serde._fingerprint_of(parsed))
    fastavro.schemaless_writer(buf, parsed, value)
    return buf.getvalue()


def test_there_are_schemas_and_released_versions() -> None:
    assert {p.stem for p in CURRENT} == {serde.NETCHANGE, serde.DELIVERY_STATUS}
    assert {current_for(p).stem for p in RELEASED} == {p.stem for p in CURRENT}, "each schema has a released version"


@pytest.mark.parametrize("path", CURRENT + RELEASED, ids=lambda p: str(p.relative_to(SCHEMAS)))
def test_every_schema_parses_and_is_named_after_its_file(path: Path) -> None:
    schema = load(path)
    parse_schema(schema)
    stem = VERSIONED.match(path.name)["name"] if path.parent == HISTORY else path.stem  # type: ignore[index]
    assert fullname(schema) == stem
    assert schema.get("doc"), "a record schema says what it is"


@pytest.mark.parametrize("path", CURRENT, ids=lambda p: p.stem)
def test_the_newest_released_version_is_the_current_schema(path: Path) -> None:
    """A change to a schema ships as a new version in schemas/history/, numbered without gaps."""
    versions = released(path.stem)
    assert sorted(versions) == list(range(1, len(versions) + 1)), versions
    newest = versions[max(versions)]
    assert serde._fingerprint_of(parse_schema(load(newest))) == serde._fingerprint_of(parse_schema(load(path))), (
        f"{path.name} differs from {newest.name}: add it as v{max(versions) + 1}"
    )
    assert load(newest) == load(path), f"{newest.name} is a copy of {path.name}, docs included"


@pytest.mark.parametrize("path", CURRENT, ids=lambda p: p.stem)
def test_values_round_trip_through_the_wire_encoding(path: Path) -> None:
    fill = defaults(load(path))
    for value in examples(path.stem):
        assert normalise(serde.decode(path.stem, serde.encode(path.stem, value))) == normalise({**fill, **value})


@pytest.mark.parametrize("path", CURRENT, ids=lambda p: p.stem)
def test_generated_values_round_trip(path: Path) -> None:
    schema = parse_schema(load(path))
    for value in generate_many(schema, 50):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, value)
        buf.seek(0)
        assert normalise(fastavro.schemaless_reader(buf, schema, None)) == normalise(value)


@pytest.mark.parametrize("old", RELEASED, ids=lambda p: p.name)
def test_data_written_with_a_released_schema_is_readable_by_the_current_one(old: Path) -> None:
    writer, reader = parse_schema(load(old)), parse_schema(load(current_for(old)))
    writer_fields = {f["name"] for f in load(old)["fields"]}
    reader_defaults = defaults(load(current_for(old)))
    reader_fields = {f["name"] for f in load(current_for(old))["fields"]}
    values = list(generate_many(writer, 100))
    with contextlib.suppress(AssertionError):
        values += examples(current_for(old).stem)
    for value in values:
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, writer, value)
        except (ValueError, TypeError, KeyError):
            continue  # an example of the current schema the old one cannot hold
        buf.seek(0)
        read = fastavro.schemaless_reader(buf, writer, reader)  # raises SchemaResolutionError if incompatible
        assert isinstance(read, dict)
        kept = {k: v for k, v in value.items() if k in reader_fields and k in writer_fields}
        assert normalise({k: read[k] for k in kept}) == normalise(kept)
        added = reader_fields - writer_fields  # fields the old writer did not have read as their defaults
        assert {k: read[k] for k in added} == {k: reader_defaults[k] for k in added}


def test_resolution_would_catch_an_incompatible_change() -> None:
    """The check above can fail: a new required field without a default is not backward compatible."""
    old = load(HISTORY / f"{serde.DELIVERY_STATUS}.v1.avsc")
    new = {**old, "fields": [*old["fields"], {"name": "tenant", "type": "string"}]}
    writer, reader = parse_schema(old), parse_schema(new)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, examples(serde.DELIVERY_STATUS)[0])
    buf.seek(0)
    with pytest.raises(fastavro.read.SchemaResolutionError):
        fastavro.schemaless_reader(buf, writer, reader)


def test_values_written_with_a_released_version_decode_as_the_current_schema(tmp_path: Path) -> None:
    """A v1 value still on a topic after v2 ships is read, resolved to the current schema."""
    import shutil

    current = load(SCHEMAS / f"{serde.NETCHANGE}.avsc")
    newer = {**current, "fields": [*current["fields"], {"name": "note", "type": ["null", "string"], "default": None}]}
    shutil.copytree(HISTORY, tmp_path / "history")
    (tmp_path / f"{serde.NETCHANGE}.avsc").write_text(json.dumps(newer))
    record = {"id": "1:2026-11-24", "trainee_id": "1", "day": "2026-11-24", "late": False, "changes": [],
              "recipient": None, "previous_email": None, "suppressed": None,
              "local_offices": ["Health Education England Wessex"]}
    old_bytes = serde.encode(serde.NETCHANGE, record)  # written with today's schema (= the newest released)
    original = serde.schema_dir
    try:
        serde.schema_dir = lambda: tmp_path  # type: ignore[assignment]
        for fn in (serde.schema, serde._fingerprint, serde._writers):
            fn.cache_clear()
        assert serde.decode(serde.NETCHANGE, old_bytes) == {**record, "note": None}
    finally:
        serde.schema_dir = original  # type: ignore[assignment]
        for fn in (serde.schema, serde._fingerprint, serde._writers):
            fn.cache_clear()


# --------------------------------------------------------------------------------------------------
# NetChange v1 -> v2: the optional local_offices


def test_netchange_v1_values_decode_with_the_current_reader() -> None:
    """Records a v1 aggregator wrote (still on the topic, or replayed) read as today's schema, with no
    local office known: the mailer then chooses the contact as it did before v2."""
    v1 = load(released(serde.NETCHANGE)[1])
    assert "local_offices" not in {f["name"] for f in v1["fields"]}
    for value in (load(GOLDEN / "full_record.json"), load(GOLDEN / "minimal_record.json")):
        data = single_object(v1, value)
        assert data[2:10] != serde.encode(serde.NETCHANGE, value)[2:10], "v1 and v2 have different fingerprints"
        assert serde.decode(serde.NETCHANGE, data) == {**value, "local_offices": None}


@pytest.mark.parametrize("offices", [None, [], ["Health Education England East of England"],
                                     ["Health Education England East of England", "Health Education England Wessex"]])
def test_netchange_local_offices_round_trip(offices: list[str] | None) -> None:
    record = {**load(GOLDEN / "minimal_record.json"), "local_offices": offices}
    assert serde.decode(serde.NETCHANGE, serde.encode(serde.NETCHANGE, record)) == record
    current = load(SCHEMAS / f"{serde.NETCHANGE}.avsc")
    field = next(f for f in current["fields"] if f["name"] == "local_offices")
    assert field["type"] == ["null", {"type": "array", "items": "string"}] and field["default"] is None


def test_netchange_v2_values_are_readable_by_a_v1_reader() -> None:
    """Forward compatible in Avro too: resolved against v1, a v2 value just loses local_offices. (serde
    still finds the writer by fingerprint, so a mailer must have v2 in schemas/ before it can read
    what a v2 aggregator writes: deploy the mailer first, or both from one image.)"""
    v1, v2 = (parse_schema(load(released(serde.NETCHANGE)[n])) for n in (1, 2))
    value = {**load(GOLDEN / "full_record.json"), "local_offices": ["Health Education England East of England"]}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, v2, value)
    buf.seek(0)
    read = fastavro.schemaless_reader(buf, v2, v1)
    assert read == {k: v for k, v in value.items() if k != "local_offices"}


# --------------------------------------------------------------------------------------------------
# DeliveryStatus v1 -> v2: SUPERSEDED, RESEND_REQUESTED and the optional audit fields

V2_FIELDS = ("content_hash", "previous_content_hash", "request_id", "operator", "operator_reason")


def test_delivery_status_v1_values_decode_with_the_current_reader() -> None:
    v1 = load(released(serde.DELIVERY_STATUS)[1])
    value = examples(serde.DELIVERY_STATUS)[0]
    data = single_object(v1, value)
    assert data[2:10] != serde.encode(serde.DELIVERY_STATUS, value)[2:10], "v1 and v2 have different fingerprints"
    read = serde.decode(serde.DELIVERY_STATUS, data)
    assert {k: read[k] for k in V2_FIELDS} == dict.fromkeys(V2_FIELDS)
    assert normalise(read) == normalise({**value, **dict.fromkeys(V2_FIELDS)})


def test_delivery_status_v2_adds_only_optional_fields_and_new_states_at_the_end() -> None:
    v1, v2 = (load(released(serde.DELIVERY_STATUS)[n]) for n in (1, 2))
    old = {f["name"]: f for f in v1["fields"]}
    new = {f["name"]: f for f in v2["fields"]}
    assert list(new)[:len(old)] == list(old)
    for name in V2_FIELDS:
        assert new[name]["type"] == ["null", "string"] and new[name]["default"] is None
    symbols_v1, symbols_v2 = old["status"]["type"]["symbols"], new["status"]["type"]["symbols"]
    assert symbols_v2[:len(symbols_v1)] == symbols_v1
    assert symbols_v2[len(symbols_v1):] == ["SUPERSEDED", "RESEND_REQUESTED"]


def test_a_superseded_event_round_trips_with_both_hashes() -> None:
    event = examples(serde.DELIVERY_STATUS)[2]
    read = serde.decode(serde.DELIVERY_STATUS, serde.encode(serde.DELIVERY_STATUS, event))
    assert (read["status"], read["content_hash"], read["previous_content_hash"]) == ("SUPERSEDED", "b" * 32, "a" * 32)
