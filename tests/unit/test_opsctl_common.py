"""The pure parts of the operator toolbox: time parsing, masking, decoding, partitioning, exit codes."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from services import serde
from services.opsctl import common, records
from services.opsctl.common import (
    MASK,
    UsageError,
    avro_version,
    cdc_key,
    decode_record,
    mask_personal,
    murmur2,
    parse_duration,
    parse_when,
    partition_for_key,
)

NOW = dt.datetime(2026, 3, 4, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400),
                                                ("1w", 604800), ("1h30m", 5400), (" 2H ", 7200)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "two hours", "2h-", "-2h"])
def test_not_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_when_relative_absolute_and_naive_is_utc() -> None:
    assert parse_when("2h", now=NOW) == NOW - dt.timedelta(hours=2)
    assert parse_when("now", now=NOW) == NOW
    assert parse_when("2026-01-02", now=NOW) == dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert parse_when("2026-01-02T07:00:00Z", now=NOW) == dt.datetime(2026, 1, 2, 7, tzinfo=dt.UTC)
    assert parse_when("2026-01-02T07:00:00+01:00", now=NOW) == dt.datetime(2026, 1, 2, 6, tzinfo=dt.UTC)
    assert parse_when("1767337200000", now=NOW) == dt.datetime(2026, 1, 2, 7, tzinfo=dt.UTC)
    with pytest.raises(UsageError, match="not a time"):
        parse_when("yesterday-ish", now=NOW)


def test_mask_personal_masks_every_personal_field_and_nothing_else() -> None:
    envelope = {"op": "u", "before": {"trainee_id": "47165", "email": "a.doctor@example.nhs.uk",
                                      "surname": "Smith", "post_code": "CB2 0QQ", "gmc_number": "7012345",
                                      "date_of_birth": 3650, "mobile_number": None},
                "after": {"trainee_id": "47165", "email": "b@example.nhs.uk", "site": "Addenbrooke's"}}
    masked = mask_personal(envelope)
    assert masked["before"] == {"trainee_id": "47165", "email": MASK, "surname": MASK, "post_code": MASK,
                                "gmc_number": MASK, "date_of_birth": MASK, "mobile_number": None}
    assert masked["after"] == {"trainee_id": "47165", "email": MASK, "site": "Addenbrooke's"}
    assert envelope["before"]["email"] == "a.doctor@example.nhs.uk"  # a copy: the input is untouched


def test_mask_personal_netchange_field_maps_and_recipient() -> None:
    record = {"id": "47165:2026-03-04", "trainee_id": "47165",
              "changes": [{"entity": "personal_details", "id": "47165", "kind": "updated",
                           "fields": {"email": {"old": "old@example.nhs.uk", "new": "new@example.nhs.uk"},
                                      "address1": {"old": None, "new": "12 Cherry Hinton Road"}}},
                          {"entity": "placement", "id": "9", "kind": "created",
                           "fields": {"site": {"old": None, "new": "Addenbrooke's"}}}],
              "recipient": {"email": "new@example.nhs.uk", "title": "Dr", "forenames": "Ann", "surname": "Lee"},
              "previous_email": "old@example.nhs.uk"}
    masked = mask_personal(record)
    text = json.dumps(masked)
    for secret in ("old@example", "new@example", "Cherry", "Ann", "Lee"):
        assert secret not in text
    assert masked["changes"][0]["fields"]["address1"] == {"old": None, "new": MASK}
    assert masked["changes"][1]["fields"]["site"]["new"] == "Addenbrooke's"
    assert masked["id"] == record["id"] and masked["trainee_id"] == "47165"


def _netchange() -> dict[str, object]:
    return {"id": "47165:2026-03-04", "trainee_id": "47165", "day": "2026-03-04", "late": False,
            "changes": [], "recipient": None, "previous_email": None, "suppressed": None, "local_offices": ["LO"]}


def test_decode_our_avro_with_its_schema_version() -> None:
    raw = serde.encode(serde.NETCHANGE, _netchange())
    name, version = avro_version(raw)  # type: ignore[misc]
    assert name == serde.NETCHANGE and version == "v2"
    d = decode_record(None, "trainee-notify.netchange.v1", b"47165:2026-03-04", raw, [("reason", b"x")])
    assert d.format == "avro NetChange v2" and d.key == "47165:2026-03-04"
    assert d.value["local_offices"] == ["LO"] and d.headers == {"reason": "x"}


def test_decode_an_older_schema_version_is_named() -> None:
    import io

    import fastavro
    from fastavro.schema import parse_schema

    with open(serde.schema_dir() / "history" / f"{serde.NETCHANGE}.v1.avsc", encoding="utf-8") as fh:
        v1 = parse_schema(json.load(fh))
    buf = io.BytesIO()
    value = {k: v for k, v in _netchange().items() if k != "local_offices"}
    fastavro.schemaless_writer(buf, v1, value)
    raw = serde.MAGIC + records._fp(v1) + buf.getvalue()
    d = decode_record(None, "t", None, raw)
    assert d.format == "avro NetChange v1" and d.value["local_offices"] is None


def test_decode_json_envelope_text_bytes_tombstone_and_unknown_avro() -> None:
    assert decode_record(None, "t", b'{"trainee_id":"1"}', b'{"op":"c"}').value == {"op": "c"}
    assert decode_record(None, "t", b'{"trainee_id":"1"}', b'{"op":"c"}').key == {"trainee_id": "1"}
    assert decode_record(None, "t", None, b"plain").format == "text"
    assert decode_record(None, "t", None, b"\xff\xfe").format == "bytes"
    assert decode_record(None, "t", None, None).format == "tombstone"
    unknown = decode_record(None, "t", None, serde.MAGIC + b"\0" * 8 + b"x")
    assert unknown.format.startswith("undecodable")


def test_murmur2_matches_kafka_java_client() -> None:
    # values from org.apache.kafka.common.utils.Utils.murmur2 (Kafka's UtilsTest)
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107
    assert cdc_key("90001") == b'{"trainee_id":"90001"}'
    assert 0 <= partition_for_key(cdc_key("90001"), 12) < 12


def test_exit_codes_are_distinct_and_documented() -> None:
    codes = {common.EXIT_OK, common.EXIT_ERROR, common.EXIT_USAGE, common.EXIT_UNREACHABLE}
    assert codes == {0, 1, 2, 3}
    for name in ("EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_UNREACHABLE"):
        assert name in (common.__doc__ or "")
    assert common.Unreachable("x").code == 3 and common.UnknownTopic("x").code == 1
    assert common.UsageError("x").code == 2


def test_unreachable_names_host_and_port() -> None:
    from services.settings import KafkaSettings

    with pytest.raises(common.Unreachable, match=r"127\.0\.0\.1:1\b"):
        common.ensure_reachable(KafkaSettings(kafka_bootstrap="127.0.0.1:1"), timeout=1)
