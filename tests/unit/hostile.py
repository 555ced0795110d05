"""Hostile envelope values: every kind of bad value a CDC topic could carry, each with the reason it must get.

``hostile_envelopes(n, seed)`` is deterministic for a given ``(n, seed, table, trainee_id)``. Each value
starts from a realistic envelope of ``table`` whose row images belong to ``trainee_id`` (so a connector
keying by ``trainee_id`` routes it to that trainee's partition) and breaks one thing. The second element
of each pair is a substring that :func:`services.netchange.cdc.parse_envelope`'s
:class:`~services.netchange.cdc.MalformedEnvelope` reason must contain.

Every kind appears once in each round of ``len(KINDS)`` values, in an order shuffled per round.
"""

from __future__ import annotations

import datetime as dt
import random
import string
from collections.abc import Callable
from typing import Any

import orjson

from services.netchange.cdc import MAX_COLUMNS, MAX_ENVELOPE_BYTES, MAX_KEY_CHARS, PRIMARY_KEY, UNAVAILABLE
from tests.unit.envelopes import envelope, person, placement

Hostile = tuple[bytes, str]
_DAY_START = int(dt.datetime(2026, 11, 24, tzinfo=dt.UTC).timestamp() * 1000)
_MARK = "__hostile_marker__"  # a column value replaced in the encoded bytes by something JSON cannot carry
_GARBAGE = "\u00e9\u0301\u200b\u202e\U0001f680\ufeff\u0000\u00a0\u2028\uffff\U0010fffd\u0663\uff11"

NOT_JSON = "not JSON"
NOT_OBJECT = "envelope is not a JSON object"
BAD_OP = "op is missing or not one of"
BAD_SOURCE = "source is missing or not an object"
BAD_TABLE = "source.table is missing or not text"
TS_TYPE = "source.ts_ms is missing or not an integer"
TS_RANGE = "source.ts_ms is out of range"
TOO_MANY_COLUMNS = f"has more than {MAX_COLUMNS} columns"
NESTED_OBJECT = "holds an object, not a scalar"
NESTED_ARRAY = "holds an array, not a scalar"
INT_RANGE = "holds an integer out of range"
DATE_RANGE = "holds a date out of range"
DATE_ISO = "is not a valid ISO date"
DATE_TYPE = "is not a day count or an ISO date"
TRAINEE_TYPE = "trainee_id is not text or an integer"
LSN_TYPE = "source.lsn is not an integer"
LSN_RANGE = "source.lsn is out of range"
SEQ_JSON = "source.sequence is not a JSON array"
SEQ_PAIR = "source.sequence is not a pair of LSNs"
SEQ_LSN = "source.sequence holds a value that is not an LSN"
SEQ_RANGE = "source.sequence holds an LSN out of range"
SNAPSHOT = "source.snapshot is not a known value"
NO_KEY = "no primary key"
KEY_TYPE = "is not text or an integer"  # "primary key (id) ..." or, where the key is trainee_id, "trainee_id ..."
KEY_EMPTY = "is empty"
KEY_LONG = f"is longer than {MAX_KEY_CHARS} characters"
DELETE_NO_BEFORE = "delete without a before image"
NO_AFTER = "without an after image"
OVERSIZE = "envelope is larger than"


class _Ctx:
    """Builds good envelopes of one table and trainee, varied by the generator's random state."""

    def __init__(self, rng: random.Random, table: str, trainee_id: str) -> None:
        self.rng, self.table, self.trainee_id = rng, table, trainee_id
        self.pk = PRIMARY_KEY.get(table, "id")

    def row(self) -> dict[str, Any]:
        rng, tid = self.rng, self.trainee_id
        if self.table == "personal_details":
            return person(tid, surname=rng.choice(["Okafor", "Nguyen", "O'Brien", "Smith-Jones"]))
        rid = f"{rng.choice(['pl', 'pm', 'cm', 'x'])}-{tid}-{rng.randrange(1, 40)}"
        if self.table == "placement":
            return placement(rid, tid, grade=rng.choice(["ST3", "ST4", "CT1", "F2"]))
        start = rng.randrange(20_000, 21_500)
        return {"id": rid, "trainee_id": tid, "start_date": start, "end_date": start + rng.randrange(30, 1500),
                "review_date": start + 300, "programme_name": "Cardiology", "managing_deanery": "East of England",
                "revision": rng.randrange(0, 5), "is_arcp": rng.random() < 0.5,
                "updated_at": "2026-11-24T12:00:00Z"}

    def good(self, op: str | None = None) -> dict[str, Any]:
        rng = self.rng
        op = op or rng.choice("cudr")
        row = self.row()
        new = {**row, "updated_at": "2026-11-24T12:30:00Z"}
        before, after = {"c": (None, row), "r": (None, row), "u": (row, new), "d": (row, None)}[op]
        ts = _DAY_START + rng.randrange(0, 86_400_000)
        return envelope(self.table, op, before, after, ts, lsn=rng.randrange(10**6, 10**10) * 8,
                        snapshot="true" if op == "r" else "false")

    def images(self, env: dict[str, Any]) -> list[dict[str, Any]]:
        return [img for img in (env["after"], env["before"]) if img is not None]

    def image(self, env: dict[str, Any]) -> dict[str, Any]:
        return self.rng.choice(self.images(env))

    def column(self, img: dict[str, Any]) -> str:
        return self.rng.choice(sorted(img))

    def text(self, k: int, alphabet: str = string.ascii_letters + string.digits + " -'") -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(k))


def _dumps(env: Any) -> bytes:
    return orjson.dumps(env)


def _with_source(c: _Ctx, **changes: Any) -> dict[str, Any]:
    env = c.good()
    env["source"].update(changes)
    return env


def _without_source_field(c: _Ctx, field: str) -> dict[str, Any]:
    env = c.good()
    del env["source"][field]
    return env


def _marked(c: _Ctx, raw: bytes) -> bytes:
    """A good envelope with one column's value replaced, in the bytes, by ``raw``."""
    env = c.good()
    img = c.image(env)
    img[c.column(img)] = _MARK
    return _dumps(env).replace(orjson.dumps(_MARK), raw, 1)


def _nested(rng: random.Random, kind: str) -> bytes:
    """An object or array nested 1 to 1000 deep (orjson reads up to 1024), as JSON bytes."""
    depth = rng.choice([1, 1, 2, 5, 50, 500, 1000])
    leaf = orjson.dumps(rng.choice([1, "x", None, True, "In post"]))
    if depth == 1 and rng.random() < 0.4:
        return rng.choice([b"{}", b'{"a":1}', b'{"":null}'] if kind == "object" else [b"[]", b"[1,2,3]", b'[{"a":1}]'])
    if kind == "object":
        return b'{"v":' * depth + leaf + b"}" * depth
    return b"[" * depth + leaf + b"]" * depth


# -- the kinds ------------------------------------------------------------------------------------

def _garbage_bytes(c: _Ctx) -> Hostile:
    return b"\xff" + c.rng.randbytes(c.rng.randrange(0, 400)), NOT_JSON


def _plain_text(c: _Ctx) -> Hostile:
    words = ["placement", "updated", "trainee", c.trainee_id, "OK", "ERROR", "<html>", "\u00e9t\u00e9"]
    text = "\u00a7 " + " ".join(c.rng.choice(words) for _ in range(c.rng.randrange(1, 12)))
    return text.encode(), NOT_JSON


def _unicode_garbage(c: _Ctx) -> Hostile:
    return ("\u00e9" + c.text(c.rng.randrange(1, 300), _GARBAGE)).encode("utf-8", "surrogatepass"), NOT_JSON


def _truncated(c: _Ctx) -> Hostile:
    raw = _dumps(c.good())
    return raw[:c.rng.randrange(0, len(raw))], NOT_JSON


def _trailing(c: _Ctx) -> Hostile:
    return _dumps(c.good()) + c.rng.choice([b"}", b"x", b",{}", b" null", b"\x00"]), NOT_JSON


def _empty(c: _Ctx) -> Hostile:
    return c.rng.choice([b"", b" ", b"\n", b"\t \r\n"]), NOT_JSON


def _bom(c: _Ctx) -> Hostile:
    return b"\xef\xbb\xbf" + _dumps(c.good()), NOT_JSON


def _python_repr(c: _Ctx) -> Hostile:
    return repr(c.good()).encode(), NOT_JSON


def _non_json_number(c: _Ctx) -> Hostile:
    literal = c.rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400", b"nan", b"0x1F"])
    return _marked(c, literal), NOT_JSON


def _bad_utf8(c: _Ctx) -> Hostile:
    return _marked(c, c.rng.choice([b'"\xc3\x28"', b'"\xed\xa0\x80"', b'"\xff\xfe"', b'"\xe2\x82"'])), NOT_JSON


def _lone_surrogate(c: _Ctx) -> Hostile:
    return _marked(c, c.rng.choice([b'"\\ud800"', b'"\\udfff x"', b'"\\ud83d"'])), NOT_JSON


def _too_deep(c: _Ctx) -> Hostile:
    depth = c.rng.choice([1100, 5000, 50_000])
    return _marked(c, b"[" * depth + b"]" * depth), NOT_JSON


def _comment(c: _Ctx) -> Hostile:
    raw = _dumps(c.good())
    return raw[:-1] + b" /* from the connector */}", NOT_JSON


def _top_level(c: _Ctx) -> Hostile:
    good = c.good()
    value = c.rng.choice([[], [good], 42, -1, 1.5, "an envelope", True, False, [None], "null", [[[[[[]]]]]]])
    if c.rng.random() < 0.2:
        value = [good["after"] or good["before"]] * c.rng.randrange(1, 5)
    raw = _dumps(value)
    if c.rng.random() < 0.1:
        raw = b"[" * 900 + b"]" * 900  # deep, but within orjson's depth limit
    return raw, NOT_OBJECT


def _op(c: _Ctx) -> Hostile:
    env = c.good()
    choice = c.rng.choice(["missing", None, "x", "C", "U", "", 1, ["u"], {"op": "u"}, True, "update", "c ",
                           "\u00fc", "u" * 10_000, _GARBAGE])
    if choice == "missing":
        del env["op"]
    else:
        env["op"] = choice
    return _dumps(env), BAD_OP


def _duplicate_op(c: _Ctx) -> Hostile:
    raw = _dumps(c.good())
    return raw[:-1] + b',"op":"' + c.rng.choice([b"x", b"", b"delete"]) + b'"}', BAD_OP


def _source(c: _Ctx) -> Hostile:
    env = c.good()
    choice = c.rng.choice(["missing", None, f"tss.{c.table}", [], [env["source"]], 1, True])
    if choice == "missing":
        del env["source"]
    else:
        env["source"] = choice
    return _dumps(env), BAD_SOURCE


def _table(c: _Ctx) -> Hostile:
    choice = c.rng.choice(["missing", "", None, 5, [c.table], {"name": c.table}, True, 1.5])
    env = _without_source_field(c, "table") if choice == "missing" else _with_source(c, table=choice)
    return _dumps(env), BAD_TABLE


def _ts_type(c: _Ctx) -> Hostile:
    ts = c.good()["source"]["ts_ms"]
    choice = c.rng.choice(["missing", "yesterday", str(ts), True, False, float(ts), ts + 0.5, None, [ts], {},
                           "2026-11-24T12:00:00Z", "1" * 5000])
    env = _without_source_field(c, "ts_ms") if choice == "missing" else _with_source(c, ts_ms=choice)
    if c.rng.random() < 0.1:  # beyond 64 bits orjson reads a float
        return _dumps(_with_source(c, ts_ms=_MARK)).replace(orjson.dumps(_MARK), b"18446744073709551616"), TS_TYPE
    return _dumps(env), TS_TYPE


def _ts_range(c: _Ctx) -> Hostile:
    ts = c.good()["source"]["ts_ms"]
    choice = c.rng.choice([0, -1, 1, 10**15, 2**63 - 1, -(2**63), 2**64 - 1, ts // 1000, ts * 1000, ts * 1_000_000,
                           946_684_799_999, 4_102_444_800_000])
    return _dumps(_with_source(c, ts_ms=choice)), TS_RANGE


def _image_type(c: _Ctx) -> Hostile:
    env = c.good()
    name = c.rng.choice([n for n in ("before", "after") if env[n] is not None])
    env[name] = c.rng.choice(["row", [env[name]], [], 5, True, 1.5, f"{c.table}:{c.trainee_id}"])
    return _dumps(env), f"{name} is not an object"


def _too_many_columns(c: _Ctx) -> Hostile:
    env = c.good()
    img = c.image(env)
    for i in range(MAX_COLUMNS + c.rng.randrange(1, 300) - len(img) + 1):
        img[f"col_{i:04d}"] = c.rng.choice([None, "x", i, True])
    name = "after" if img is env["after"] else "before"
    return _dumps(env), f"{name} {TOO_MANY_COLUMNS}"


def _nested_value(c: _Ctx, kind: str) -> Hostile:
    env = c.good()
    img = c.image(env)
    col = c.rng.choice([c.column(img), c.column(img), c.pk, "trainee_id", "start_date", "extra",
                        "col\nwith\ttabs", "\u00e9\U0001f680" + _GARBAGE, "n" * 5000])
    if col in ("start_date", "trainee_id") and col not in img:
        col = c.column(img)
    img[col] = _MARK
    raw = _dumps(env).replace(orjson.dumps(_MARK), _nested(c.rng, kind), 1)
    return raw, NESTED_OBJECT if kind == "object" else NESTED_ARRAY


def _nested_object(c: _Ctx) -> Hostile:
    return _nested_value(c, "object")


def _nested_array(c: _Ctx) -> Hostile:
    return _nested_value(c, "array")


def _int_range(c: _Ctx) -> Hostile:
    env = c.good()
    img = c.image(env)
    img[c.rng.choice([c.column(img), "revision", "whole_time_equivalent"])] = c.rng.choice(
        [2**63, 2**63 + 1, 2**64 - 1, 12_345_678_901_234_567_890])
    return _dumps(env), INT_RANGE


def _date_column(c: _Ctx, img: dict[str, Any]) -> str:
    return c.rng.choice([col for col in ("start_date", "end_date", "review_date") if col in img] or ["start_date"])


def _date_range(c: _Ctx) -> Hostile:
    env = c.good()
    img = c.image(env)
    img[_date_column(c, img)] = c.rng.choice([10**6, -(10**5), 84_372, -25_568, 2**62, -(2**63), 2**63 - 1,
                                              "1850-06-01", "2201-01-01", "0001-01-01", "9999-12-31",
                                              "1899-12-31T23:59:59Z"])
    return _dumps(env), DATE_RANGE


def _date_iso(c: _Ctx) -> Hostile:
    env = c.good()
    img = c.image(env)
    img[_date_column(c, img)] = c.rng.choice([
        "2026-02-30", "2026-13-01", "2026-00-10", "not a date", "20261124", "24/11/2026", "", "2026-11-24Tnope",
        "\uff12\uff10\uff12\uff16-11-24", "2026-W48-2", "2026-11-2", " 2026-11-24", "2026-11-24 garbage",
        "\u0662\u0660\u0662\u0666-11-24", "2026-11-24T25:00:00", "yesterday", "2026", "2026-11-24\n", "d" * 10_000])
    return _dumps(env), DATE_ISO


def _date_type(c: _Ctx) -> Hostile:
    env = c.good()
    img = c.image(env)
    img[_date_column(c, img)] = c.rng.choice([True, False, 1.5, 21398.0, -0.0, 1e300])
    return _dumps(env), DATE_TYPE


def _trainee_type(c: _Ctx) -> Hostile:
    env = c.good()
    img = c.image(env)
    img["trainee_id"] = c.rng.choice([True, False, 1.5, float(c.trainee_id) if c.trainee_id.isdigit() else 2.5, 1e30])
    return _dumps(env), TRAINEE_TYPE


def _lsn_type(c: _Ctx) -> Hostile:
    lsn = c.good()["source"]["lsn"]
    choice = c.rng.choice([str(lsn), True, False, 1.5, [lsn], {}, f"0/{lsn:X}", "", _MARK])
    env = _with_source(c, lsn=choice)
    if choice == _MARK:  # beyond 64 bits orjson reads a float
        return _dumps(env).replace(orjson.dumps(_MARK), b"18446744073709551616"), LSN_TYPE
    return _dumps(env), LSN_TYPE


def _lsn_range(c: _Ctx) -> Hostile:
    return _dumps(_with_source(c, lsn=c.rng.choice([-1, -8, -(2**63), -(10**12)]))), LSN_RANGE


def _seq(pair: Any, as_text: bool = True) -> Any:
    return orjson.dumps(pair).decode() if as_text else pair


def _sequence_json(c: _Ctx) -> Hostile:
    choice = c.rng.choice(["[1,2", "lsn", "", "[\"1\",\"2\"]]", "['1','2']", "[1 2]", "\u00e9" + _GARBAGE, "{", "1 2"])
    return _dumps(_with_source(c, sequence=choice)), SEQ_JSON


def _sequence_pair(c: _Ctx) -> Hostile:
    lsn = str(c.good()["source"]["lsn"])
    as_text = c.rng.random() < 0.6
    choice = c.rng.choice([[lsn], [lsn, lsn, lsn], [], {"a": 1}, "null", "5", 5, True, 1.5,
                           orjson.dumps(orjson.dumps([lsn, lsn]).decode()).decode(), [[lsn, lsn]]])
    if isinstance(choice, list | dict) and as_text:
        choice = _seq(choice)
    return _dumps(_with_source(c, sequence=choice)), SEQ_PAIR


def _sequence_lsn(c: _Ctx) -> Hostile:
    lsn = str(c.good()["source"]["lsn"])
    bad = c.rng.choice(["-5", "abc", 1.5, True, False, [1], {}, "\u0661\u0662", "\uff11\uff12", " 12", "12 ", "1_000",
                        "+1", "", "0x1F", "1e3", "1" * 25, "9" * 5000, 2.0**70, "0/1A2B3C"])
    pair = [bad, lsn] if c.rng.random() < 0.5 else [c.rng.choice([lsn, None]), bad]
    return _dumps(_with_source(c, sequence=_seq(pair, c.rng.random() < 0.8))), SEQ_LSN


def _sequence_range(c: _Ctx) -> Hostile:
    lsn = str(c.good()["source"]["lsn"])
    bad = c.rng.choice([-5, -1, -(2**63), "18446744073709551616", "99999999999999999999"])
    pair = [bad, lsn] if c.rng.random() < 0.5 else [lsn, bad]
    return _dumps(_with_source(c, sequence=_seq(pair, c.rng.random() < 0.8))), SEQ_RANGE


def _snapshot(c: _Ctx) -> Hostile:
    choice = c.rng.choice(["maybe", "", 1, 0, {}, [], "yes", "\u00fc", "true ", "snapshot", "t", "f", 1.0, ["true"]])
    return _dumps(_with_source(c, snapshot=choice)), SNAPSHOT


def _no_key(c: _Ctx) -> Hostile:
    env = c.good()
    how = c.rng.choice(["drop", None, UNAVAILABLE])
    for img in c.images(env):
        if how == "drop":
            img.pop(c.pk, None)
        else:
            img[c.pk] = how
    return _dumps(env), NO_KEY


def _key_type(c: _Ctx) -> Hostile:
    env = c.good()
    bad = c.rng.choice([True, False, 1.5, 1e30, -0.5, 315.0])
    for img in c.images(env):
        img[c.pk] = bad
    return _dumps(env), KEY_TYPE


def _key_empty(c: _Ctx) -> Hostile:
    env = c.good()
    for img in c.images(env):
        img[c.pk] = ""
    return _dumps(env), KEY_EMPTY


def _key_long(c: _Ctx) -> Hostile:
    env = c.good()
    key = c.text(c.rng.choice([MAX_KEY_CHARS + 1, 1000, 20_000]))
    for img in c.images(env):
        img[c.pk] = key
    return _dumps(env), KEY_LONG


def _delete_without_before(c: _Ctx) -> Hostile:
    env = c.good("d")
    env["before"] = None
    if c.rng.random() < 0.5:
        env["after"] = c.row()
    return _dumps(env), DELETE_NO_BEFORE


def _no_after(c: _Ctx) -> Hostile:
    op = c.rng.choice("cur")
    env = c.good(op)
    env["after"] = None
    if op != "u" and c.rng.random() < 0.5:
        env["before"] = c.row()
    return _dumps(env), f"op {op} {NO_AFTER}"


def _oversize(c: _Ctx) -> Hostile:
    env = c.good()
    img = c.image(env)
    img[c.rng.choice(["site", "surname", "notes", c.column(img)])] = c.text(1000) * (MAX_ENVELOPE_BYTES // 1000 + 5)
    return _dumps(env), OVERSIZE


def _schema_payload(c: _Ctx) -> Hostile:
    env = c.good()
    if c.rng.random() < 0.5:
        payload = c.rng.choice(["x", [], 1, None])
        return _dumps({"schema": {"type": "struct", "optional": False}, "payload": payload}), BAD_OP
    env["source"]["ts_ms"] = "yesterday"
    return _dumps({"schema": {"type": "struct"}, "payload": env}), TS_TYPE


KINDS: dict[str, Callable[[_Ctx], Hostile]] = {
    "garbage bytes": _garbage_bytes, "plain text": _plain_text, "unicode garbage": _unicode_garbage,
    "truncated JSON": _truncated, "trailing garbage": _trailing, "empty": _empty, "byte order mark": _bom,
    "python repr": _python_repr, "NaN or infinity": _non_json_number, "invalid UTF-8": _bad_utf8,
    "lone surrogate": _lone_surrogate, "too deep": _too_deep, "comment": _comment,
    "top level not an object": _top_level, "odd op": _op, "duplicate op": _duplicate_op, "bad source": _source,
    "bad table": _table, "ts_ms type": _ts_type, "ts_ms range": _ts_range, "image not an object": _image_type,
    "too many columns": _too_many_columns, "nested object": _nested_object, "nested array": _nested_array,
    "integer out of range": _int_range, "date out of range": _date_range, "date not ISO": _date_iso,
    "date type": _date_type, "trainee_id type": _trainee_type, "lsn type": _lsn_type, "lsn range": _lsn_range,
    "sequence not JSON": _sequence_json, "sequence not a pair": _sequence_pair, "sequence entry": _sequence_lsn,
    "sequence range": _sequence_range, "snapshot": _snapshot, "no primary key": _no_key,
    "primary key type": _key_type, "primary key empty": _key_empty, "primary key too long": _key_long,
    "delete without before": _delete_without_before, "no after": _no_after, "oversize": _oversize,
    "schemas-enabled payload": _schema_payload,
}


def hostile_envelopes(n: int, seed: int, table: str = "placement", trainee_id: str = "47165", *,
                      oversize: bool = True) -> list[Hostile]:
    """``n`` bad envelope values with the substring each one's reason must contain.

    ``oversize=False`` leaves out the values larger than the envelope limit (a few hundred KiB each; they
    fit a broker's default 1 MB message, but make a large batch heavy)."""
    rng = random.Random(seed)
    ctx = _Ctx(rng, table, trainee_id)
    kinds = [k for name, k in KINDS.items() if oversize or name != "oversize"]
    out: list[Hostile] = []
    order: list[Callable[[_Ctx], Hostile]] = []
    while len(out) < n:
        if not order:
            order = kinds[:]
            rng.shuffle(order)
        out.append(order.pop()(ctx))
    return out
