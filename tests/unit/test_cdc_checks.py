"""Values are checked at the edge (issue 8, part 4): ``parse_envelope`` returns a Change or None, or raises
MalformedEnvelope with a short reason free of personal data, and nothing else, whatever it is given."""

from __future__ import annotations

import copy
import math
import types
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.netchange.cdc import (
    DAY_MAX,
    DAY_MIN,
    MAX_COLUMNS,
    MAX_ENVELOPE_BYTES,
    MAX_KEY_CHARS,
    PRIMARY_KEY,
    TS_MS_MAX,
    TS_MS_MIN,
    UNAVAILABLE,
    Change,
    MalformedEnvelope,
    parse_envelope,
)
from tests.unit import hostile
from tests.unit.envelopes import envelope, person, placement

FIXTURES = Path(__file__).parents[1] / "fixtures"
SAFETY_NET = "envelope could not be checked"
NOT_SCALAR = "holds a value that is not text, a number, a boolean or null"
SECRETS = ("Okafor", "a.doctor@example.nhs.uk", "07700 900123", "CB2 0QQ", "1 Hills Road", "Addenbrooke")


def reason_of(value: Any) -> str:
    with pytest.raises(MalformedEnvelope) as info:
        parse_envelope(value)
    reason = info.value.reason
    assert reason == str(info.value) and reason.isascii() and reason.isprintable() and len(reason) <= 120
    assert not any(s in reason for s in SECRETS), reason
    return reason


def good(table: str = "placement", op: str = "u", **source: Any) -> dict[str, Any]:
    row = person() if table == "personal_details" else placement()
    other = {**row, "updated_at": "2026-11-24T12:30:00Z"}
    before, after = {"c": (None, row), "r": (None, row), "u": (row, other), "d": (row, None), "t": (None, None)}[op]
    env = envelope(table, op, before, after, lsn=80_000, snapshot="true" if op == "r" else "false")
    env["source"].update(source)
    return env


def with_column(col: str, value: Any, image: str = "after", op: str = "u", table: str = "placement") -> dict[str, Any]:
    env = good(table, op)
    env[image][col] = value
    return env


# -- what parsed before still parses, to the same Change ------------------------------------------

def reference(value: bytes | str) -> Change | None:
    """``parse_envelope`` as it was before these checks, for values both accept."""
    env = orjson.loads(value)
    if env is None:
        return None
    if "payload" in env and "op" not in env and isinstance(env["payload"], dict):
        env = env["payload"]
    source, op = env["source"], env["op"]
    phase = 0 if str(source.get("snapshot", "false")).lower() not in ("false", "none", "") else 1
    seq = source.get("sequence")
    if seq is None:
        lsn = source.get("lsn")
        position = (phase, 0, lsn) if isinstance(lsn, int) and not isinstance(lsn, bool) else None
    else:
        seq = orjson.loads(seq) if isinstance(seq, str) else seq
        position = (phase, int(seq[0]) if seq[0] is not None else 0, int(seq[1]) if seq[1] is not None else 0)
    if op in ("t", "m"):
        return Change(source["table"], None, op, None, None, source["ts_ms"], position)
    before, after = env.get("before"), env.get("after")
    pk = PRIMARY_KEY.get(source["table"], "id")
    key = None
    for img in (after, before):
        if img is not None and key is None:
            val = img.get(pk)
            if isinstance(val, str) and val != UNAVAILABLE:
                key = val
            elif isinstance(val, int) and not isinstance(val, bool):
                key = str(val)
    return Change(source["table"], key, op, before, after, source["ts_ms"], position)


def good_values() -> list[bytes]:
    lines = [line.strip() for path in sorted(FIXTURES.glob("*.jsonl")) for line in path.read_bytes().splitlines()]
    built = [good(t, op) for t in ("placement", "personal_details") for op in "cudrt"]
    built += [good(snapshot=s) for s in ("first", "LAST", "first_in_data_collection", "last_in_data_collection",
                                          "incremental", "True", True, False, None)]
    built += [good(sequence=s) for s in ('[null,"5000"]', "[null,null]", [10, 20], ["10", None], None)]
    built += [good(lsn=None, sequence=None), good(lsn=0), good(lsn=2**64 - 1)]
    pk_only = good()
    pk_only["before"] = {"id": "315"}
    toast = good()
    toast["after"]["site"] = UNAVAILABLE
    wrapped = {"schema": {"type": "struct"}, "payload": good()}
    ints = good()
    ints["after"].update(id=315, trainee_id=47165, revision=2**63 - 1, delta=-(2**63), wte=0.5, big=1e300,
                         start_date=DAY_MIN, end_date=DAY_MAX, review_date="2026-11-24T00:00:00Z")
    iso = good()
    iso["after"].update(start_date="1900-01-01", end_date="2200-12-31", review_date=UNAVAILABLE)
    wide = good()
    wide["after"].update({f"c{i}": i for i in range(MAX_COLUMNS - len(wide["after"]))})
    built += [pk_only, toast, wrapped, ints, iso, wide, with_column("id", "x" * MAX_KEY_CHARS)]
    return [line for line in lines if line] + [orjson.dumps(e) for e in built]


def test_good_envelopes_parse_to_the_same_change_as_before() -> None:
    values = good_values()
    assert len(values) > 60
    for value in values:
        assert parse_envelope(value) == reference(value), value[:200]
        assert parse_envelope(value.decode()) == parse_envelope(bytearray(value)) == parse_envelope(memoryview(value))
        assert parse_envelope(orjson.loads(value)) == reference(value)  # an object handed in: the same checks


# -- one rule at a time ---------------------------------------------------------------------------

@pytest.mark.parametrize(("ts", "ok"), [
    (TS_MS_MIN, True), (TS_MS_MAX - 1, True), (TS_MS_MIN - 1, False), (TS_MS_MAX, False), (0, False), (-1, False),
    (1_795_621_422, False), (1_795_621_422_498_000, False), (2**63 - 1, False), (-(2**63), False)])
def test_commit_time_is_within_2000_to_2100(ts: int, ok: bool) -> None:
    for op in ("u", "t"):
        env = good(op=op, ts_ms=ts)
        if ok:
            assert parse_envelope(orjson.dumps(env)).ts_ms == ts
        else:
            assert reason_of(orjson.dumps(env)) == "source.ts_ms is out of range (2000 to 2100)"


@pytest.mark.parametrize("ts", [True, False, 1.7956e12, "1795621422498", None, [1_795_621_422_498], {}])
def test_commit_time_is_an_integer(ts: Any) -> None:
    assert reason_of(good(ts_ms=ts)) == "source.ts_ms is missing or not an integer"


@pytest.mark.parametrize(("value", "ok"), [
    (DAY_MIN, True), (DAY_MAX, True), (0, True), (20_851, True), (None, True), (UNAVAILABLE, True),
    ("2026-11-24", True), ("2026-11-24T00:00:00Z", True), ("2026-11-24 10:00:00+01:00", True),
    ("1900-01-01", True), ("2200-12-31", True), (DAY_MIN - 1, False), (DAY_MAX + 1, False), (10**6, False),
    ("1899-12-31", False), ("2201-01-01", False), ("0001-01-01", False), ("9999-12-31", False)])
def test_dates_are_day_counts_or_iso_dates_from_1900_to_2200(value: Any, ok: bool) -> None:
    for col in ("start_date", "end_date", "review_date"):
        env = with_column(col, value)
        if ok:
            assert parse_envelope(orjson.dumps(env)).after[col] == value
        else:
            assert reason_of(orjson.dumps(env)) == f"after.{col} holds a date out of range"


@pytest.mark.parametrize("value", ["2026-02-30", "2026-13-01", "20261124", "2026-W48-2", "24/11/2026", "", "2026",
                                   "2026-11-24Tnope", "2026-11-24 garbage", "\uff12\uff10\uff12\uff16-11-24",
                                   "2026-11-2", " 2026-11-24", "Okafor"])
def test_a_date_given_as_text_must_be_an_iso_date(value: str) -> None:
    assert reason_of(with_column("start_date", value, "before")) == "before.start_date is not a valid ISO date"


@pytest.mark.parametrize("value", [True, False, 1.5, 20851.0])
def test_a_date_is_neither_a_boolean_nor_a_float(value: Any) -> None:
    assert reason_of(with_column("end_date", value)) == "after.end_date is not a day count or an ISO date"


@pytest.mark.parametrize("value", ["text", "", 0, -1, 2**63 - 1, -(2**63), 1.5, -0.0, 1e308, True, False, None])
def test_column_values_may_be_text_numbers_booleans_or_null(value: Any) -> None:
    for image in ("before", "after"):
        change = parse_envelope(orjson.dumps(with_column("site_location", value, image)))
        assert getattr(change, image)["site_location"] == value


@pytest.mark.parametrize(("value", "reason"), [
    ({"a": 1}, "holds an object, not a scalar"), ({}, "holds an object, not a scalar"),
    (types.MappingProxyType({"a": 1}), "holds an object, not a scalar"),
    ([], "holds an array, not a scalar"), (["Okafor"], "holds an array, not a scalar"),
    (("a",), "holds an array, not a scalar"),
    (2**63, "holds an integer out of range"), (-(2**63) - 1, "holds an integer out of range"),
    (10**100, "holds an integer out of range"),
    (math.nan, "holds a number that is not finite"), (math.inf, "holds a number that is not finite"),
    (-math.inf, "holds a number that is not finite"),
    ({1, 2}, NOT_SCALAR), (b"Okafor", NOT_SCALAR), (object(), NOT_SCALAR), (1j, NOT_SCALAR),
])
def test_column_values_that_are_not_scalars_are_malformed(value: Any, reason: str) -> None:
    for image in ("before", "after"):
        assert reason_of(with_column("surname", value, image, table="personal_details")) == f"{image}.surname {reason}"


def test_json_numbers_beyond_64_bits_and_non_finite_literals() -> None:
    raw = orjson.dumps(with_column("revision", "MARK")).replace(b'"MARK"', b"%d")
    assert reason_of(raw % (2**63)) == "after.revision holds an integer out of range"
    assert parse_envelope(raw % (2**63 - 1)).after["revision"] == 2**63 - 1
    assert parse_envelope(raw % (2**64)).after["revision"] == float(2**64)  # orjson: float
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        assert reason_of(raw.replace(b"%d", literal)).startswith("not JSON")


def test_column_names_in_reasons_are_cut_to_40_printable_characters() -> None:
    assert reason_of(with_column("x" * 5000, {})) == f"after.{'x' * 40}... holds an object, not a scalar"
    name = "line\nbreak\u202e\U0001f680"
    assert reason_of(with_column(name, [])) == "after.line?break?? holds an array, not a scalar"
    assert reason_of(with_column("x" * 40, [])) == f"after.{'x' * 40} holds an array, not a scalar"


def test_reasons_never_carry_values() -> None:
    envs = [with_column("surname", {"Okafor": "Okafor"}, table="personal_details"),
            with_column("start_date", "Okafor"), with_column("id", "Okafor" * 100),
            good(ts_ms="Okafor"), good(sequence='["Okafor", "1"]'), good(lsn="Okafor"), good(snapshot="Okafor")]
    for env in envs:
        assert "Okafor" not in reason_of(env)
    assert "Okafor" not in reason_of(b'{"surname": "Okafor"')


def test_objects_handed_in_need_text_column_names_and_bounded_text() -> None:
    env = good()
    env["after"][7] = "seven"
    assert reason_of(env) == "after has a column name that is not text"
    assert reason_of(with_column("site", "x" * (MAX_ENVELOPE_BYTES + 1))) == (
        f"after.site holds text longer than {MAX_ENVELOPE_BYTES} characters")

    class Text(str):
        pass
    assert reason_of(with_column("site", Text("x"))).endswith(NOT_SCALAR)


def test_at_most_500_columns_an_image() -> None:
    env = good()
    env["before"].update({f"c{i}": None for i in range(MAX_COLUMNS - len(env["before"]))})
    assert parse_envelope(orjson.dumps(env)) is not None
    env["before"]["one_more"] = None
    assert reason_of(orjson.dumps(env)) == f"before has more than {MAX_COLUMNS} columns"


def test_an_envelope_larger_than_the_limit_is_malformed_before_it_is_read() -> None:
    value = orjson.dumps(with_column("site", "x" * MAX_ENVELOPE_BYTES))
    assert reason_of(value) == f"envelope is larger than {MAX_ENVELOPE_BYTES} bytes"
    assert reason_of(value.decode()) == f"envelope is larger than {MAX_ENVELOPE_BYTES} bytes"
    fits = orjson.dumps(with_column("site", "x" * (MAX_ENVELOPE_BYTES - 5000)))
    assert len(fits) <= MAX_ENVELOPE_BYTES and parse_envelope(fits) is not None


@pytest.mark.parametrize(("lsn", "reason"), [
    (-1, "source.lsn is out of range"), (2**64, "source.lsn is out of range"),
    ("26518912", "source.lsn is not an integer"), (True, "source.lsn is not an integer"),
    (1.5, "source.lsn is not an integer"), ([1], "source.lsn is not an integer")])
def test_the_lsn_is_an_integer_in_64_bits(lsn: Any, reason: str) -> None:
    assert reason_of(good(lsn=lsn)) == reason
    assert reason_of(good(lsn=lsn, sequence=None)) == reason


@pytest.mark.parametrize(("seq", "position"), [
    ('["100","108"]', (1, 100, 108)), ('[null,"108"]', (1, 0, 108)), ("[null,null]", (1, 0, 0)),
    ([100, 108], (1, 100, 108)), (["0", str(2**64 - 1)], (1, 0, 2**64 - 1)), (None, (1, 0, 80_000))])
def test_sequences_of_lsns(seq: Any, position: tuple[int, ...]) -> None:
    assert parse_envelope(good(sequence=seq)).position == position


@pytest.mark.parametrize(("seq", "reason"), [
    ("[1,2", "source.sequence is not a JSON array"), ("", "source.sequence is not a JSON array"),
    ('["1"]', "source.sequence is not a pair of LSNs"), ('["1","2","3"]', "source.sequence is not a pair of LSNs"),
    ('{"a":1}', "source.sequence is not a pair of LSNs"), ("null", "source.sequence is not a pair of LSNs"),
    (5, "source.sequence is not a pair of LSNs"), (("1", "2"), "source.sequence is not a pair of LSNs"),
    ('"[\\"1\\",\\"2\\"]"', "source.sequence is not a pair of LSNs"),
    ('["-5","10"]', "source.sequence holds a value that is not an LSN"),
    ('["abc","10"]', "source.sequence holds a value that is not an LSN"),
    ('[1.5,2]', "source.sequence holds a value that is not an LSN"),
    ('[true,1]', "source.sequence holds a value that is not an LSN"),
    ('[[1],[2]]', "source.sequence holds a value that is not an LSN"),
    ('["\u0661\u0662","3"]', "source.sequence holds a value that is not an LSN"),
    ('[" 12","3"]', "source.sequence holds a value that is not an LSN"),
    ('["1_000","3"]', "source.sequence holds a value that is not an LSN"),
    ('["+1","3"]', "source.sequence holds a value that is not an LSN"),
    ('["",""]', "source.sequence holds a value that is not an LSN"),
    ('["' + "9" * 5000 + '","1"]', "source.sequence holds a value that is not an LSN"),
    ('[-5,10]', "source.sequence holds an LSN out of range"),
    ('["18446744073709551616","1"]', "source.sequence holds an LSN out of range"),
    ([1, 2**64], "source.sequence holds an LSN out of range"),
])
def test_malformed_sequences(seq: Any, reason: str) -> None:
    assert reason_of(good(sequence=seq)) == reason


@pytest.mark.parametrize(("snapshot", "phase"), [
    ("true", 0), ("first", 0), ("last", 0), ("first_in_data_collection", 0), ("last_in_data_collection", 0),
    ("incremental", 0), ("TRUE", 0), ("Last", 0), (True, 0), ("false", 1), ("FALSE", 1), (False, 1), (None, 1)])
def test_known_snapshot_markers(snapshot: Any, phase: int) -> None:
    assert parse_envelope(good(snapshot=snapshot)).position[0] == phase


@pytest.mark.parametrize("snapshot", ["maybe", "", "yes", "true ", 1, 0, 1.0, {}, [], ["true"]])
def test_unknown_snapshot_markers(snapshot: Any) -> None:
    assert reason_of(good(snapshot=snapshot)) == "source.snapshot is not a known value"


@pytest.mark.parametrize(("key", "entity_id"), [("315", "315"), (315, "315"),
                                                  ("x" * MAX_KEY_CHARS, "x" * MAX_KEY_CHARS),
                                                  (-1, "-1"), ("\u00e9", "\u00e9")])
def test_primary_keys_are_text_or_integers(key: Any, entity_id: str) -> None:
    assert parse_envelope(with_column("id", key)).entity_id == entity_id


@pytest.mark.parametrize(("key", "reason"), [
    ("", "primary key (id) is empty"),
    ("x" * (MAX_KEY_CHARS + 1), f"primary key (id) is longer than {MAX_KEY_CHARS} characters"),
    (True, "primary key (id) is not text or an integer"), (1.5, "primary key (id) is not text or an integer"),
    (None, "no primary key (id) in the row images"), (UNAVAILABLE, "no primary key (id) in the row images")])
def test_malformed_primary_keys(key: Any, reason: str) -> None:
    env = good()
    env["before"]["id"] = env["after"]["id"] = key
    assert reason_of(env) == reason


def test_the_key_comes_from_before_when_after_has_none() -> None:
    env = good()
    env["after"]["id"] = UNAVAILABLE
    assert parse_envelope(env).entity_id == "315"
    del env["after"]["id"]
    assert parse_envelope(env).entity_id == "315"


@pytest.mark.parametrize(("tid", "ok"), [("47165", True), (47165, True), (None, True), (True, False), (1.5, False)])
def test_trainee_ids_are_text_integers_or_null(tid: Any, ok: bool) -> None:
    for image in ("before", "after"):
        env = with_column("trainee_id", tid, image)
        if ok:
            assert getattr(parse_envelope(env), image)["trainee_id"] == tid
        else:
            assert reason_of(env) == f"{image}.trainee_id is not text or an integer"


@pytest.mark.parametrize(("env", "reason"), [
    ({**good(op="d"), "before": None}, "delete without a before image"),
    ({**good(op="u"), "after": None}, "op u without an after image"),
    ({**good(op="c"), "after": None}, "op c without an after image"),
    ({**good(op="r"), "after": None}, "op r without an after image"),
    ({**good(), "after": "row"}, "after is not an object"), ({**good(), "before": [1]}, "before is not an object"),
    ({**good(), "op": ["u"]}, "op is missing or not one of c, u, d, r, t, m"),
    ({**good(), "op": {"u": 1}}, "op is missing or not one of c, u, d, r, t, m"),
    ({**good(), "source": "tss"}, "source is missing or not an object"),
    (good(table=5), "source.table is missing or not text"), (good(table=""), "source.table is missing or not text"),
    (good(table=["placement"]), "source.table is missing or not text"),
    ([good()], "envelope is not a JSON object"), (types.MappingProxyType(good()), "envelope is not a JSON object"),
    (42, "envelope is not a JSON object"),
])
def test_shape_checks(env: Any, reason: str) -> None:
    assert reason_of(env) == reason
    if not isinstance(env, types.MappingProxyType):
        assert reason_of(orjson.dumps(env)) == reason


def test_truncates_and_tombstones() -> None:
    assert parse_envelope(b"null") is None and parse_envelope(None) is None
    change = parse_envelope(good(op="t"))
    assert change is not None and change.op == "t" and change.entity_id is None


def test_anything_odd_handed_in_still_raises_only_malformed_envelope() -> None:
    class Hostile:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no")

        __hash__ = None

    assert reason_of(good(snapshot=Hostile())) == f"{SAFETY_NET} (RuntimeError)"
    assert reason_of(with_column("site", Hostile())).endswith(NOT_SCALAR)
    for odd in (object(), 3.5, b"\x00" * 3, Path("x"), {"op": Hostile()}, type, ...):
        reason_of(odd)


# -- hostile envelopes ----------------------------------------------------------------------------

TABLES = ["placement", "personal_details", "programme_membership", "curriculum_membership", "form_r", "arcp"]


@pytest.mark.parametrize("table", TABLES)
def test_every_hostile_envelope_is_malformed_with_its_reason(table: str) -> None:
    values = hostile.hostile_envelopes(len(hostile.KINDS) * 12, seed=TABLES.index(table), table=table,
                                       trainee_id="90001")
    assert len(values) == len(hostile.KINDS) * 12
    for value, want in values:
        assert isinstance(value, bytes)
        reason = reason_of(value)
        assert want in reason, (want, reason, value[:200])
        assert not reason.startswith(SAFETY_NET)


def test_hostile_envelopes_are_deterministic_and_cover_every_kind() -> None:
    first = hostile.hostile_envelopes(500, seed=3)
    assert first == hostile.hostile_envelopes(500, seed=3) != hostile.hostile_envelopes(500, seed=4)
    assert first[:100] == hostile.hostile_envelopes(100, seed=3)
    wanted = {want for _, want in first}
    assert {hostile.NOT_JSON, hostile.NESTED_OBJECT, hostile.DATE_ISO, hostile.SEQ_RANGE, hostile.OVERSIZE} <= wanted
    small = hostile.hostile_envelopes(len(hostile.KINDS) * 3, seed=1, oversize=False)
    assert all(want != hostile.OVERSIZE and len(v) <= MAX_ENVELOPE_BYTES for v, want in small)


def test_hostile_envelopes_mostly_belong_to_the_trainee() -> None:
    """Where the value is an envelope at all, its rows belong to the trainee, so a connector keying by
    trainee_id routes it to that trainee's partition."""
    owned = 0
    values = hostile.hostile_envelopes(len(hostile.KINDS) * 5, seed=9, trainee_id="90001")
    for value, _ in values:
        try:
            env = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        images = [env.get(n) for n in ("before", "after")] if isinstance(env, dict) else []
        owned += any(isinstance(i, dict) and i.get("trainee_id") == "90001" for i in images)
    assert owned > len(values) / 2


# -- properties -----------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.sampled_from(["c", "u", "d", "r", "t", "placement", "2026-11-24", "true", "[1,2]", UNAVAILABLE,
                              TS_MS_MIN, DAY_MAX, 2**63, 2**64]))
json_ish = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=12) | st.sampled_from(
                            ["op", "source", "before", "after", "payload", "ts_ms", "table", "id", "trainee_id",
                             "start_date", "lsn", "sequence", "snapshot"]), inner, max_size=6), max_leaves=25)
GOOD = [orjson.loads(v) for v in good_values()[-30:]]


def check(value: Any) -> None:
    try:
        change = parse_envelope(value)
    except MalformedEnvelope as exc:
        assert exc.reason and not exc.reason.startswith(SAFETY_NET), exc.reason
        return
    if change is None:
        return
    assert isinstance(change, Change) and TS_MS_MIN <= change.ts_ms < TS_MS_MAX
    assert change.op in "cudrtm" and isinstance(change.table, str) and change.table
    if change.op not in "tm":
        assert isinstance(change.entity_id, str) and 0 < len(change.entity_id) <= MAX_KEY_CHARS
    for img in (change.before, change.after):
        for col, v in (img or {}).items():
            assert isinstance(col, str) and (v is None or type(v) in (str, bool, int, float))
            assert not isinstance(v, float) or math.isfinite(v)
            assert type(v) is not int or -(2**63) <= v < 2**63
            if col in ("start_date", "end_date", "review_date") and type(v) is int:
                assert DAY_MIN <= v <= DAY_MAX


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_ish)
def test_any_json_like_value_is_a_change_or_malformed(value: Any) -> None:
    check(value)
    try:
        raw = orjson.dumps(value)
    except orjson.JSONEncodeError:  # integers beyond 64 bits
        return
    check(raw)
    check(raw.decode())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_bytes_or_text_is_a_change_or_malformed(value: bytes | str) -> None:
    check(value)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    env = copy.deepcopy(draw(st.sampled_from(GOOD)))
    for _ in range(draw(st.integers(1, 4))):
        holders = [env] + [env[k] for k in ("source", "before", "after", "payload") if isinstance(env.get(k), dict)]
        holder = draw(st.sampled_from(holders))
        key = draw(st.sampled_from([*sorted(holder), "op", "ts_ms", "id", "trainee_id", "start_date", "lsn",
                                    "sequence", "snapshot", "extra"]))
        if draw(st.booleans()) and key in holder:
            del holder[key]
        else:
            holder[key] = draw(json_ish)
    return env


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_of_a_good_envelope_are_a_change_or_malformed(env: Any) -> None:
    check(env)
    try:
        raw = orjson.dumps(env)
    except orjson.JSONEncodeError:
        return
    check(raw)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(good_values()), st.data())
def test_cut_or_spliced_bytes_of_a_good_envelope_are_a_change_or_malformed(value: bytes, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(value)))
    j = data.draw(st.integers(i, len(value)))
    check(value[:i])
    check(value[:i] + data.draw(st.binary(max_size=8)) + value[j:])
