"""Pure parsing of Debezium PostgreSQL change envelopes (JSON converter, schemas disabled).

No I/O. ``parse_envelope`` turns one envelope value into a :class:`Change` or raises
:class:`MalformedEnvelope` with a reason that names no personal data (never a column's value; a
column's name at most, cut to 40 characters), and nothing else, whatever it is given.

Values are checked at the edge, so nothing downstream meets them: an envelope of at most 512 KiB;
``source.ts_ms`` an integer from 2000 to 2100; ``source.lsn`` and the entries of ``source.sequence``
LSNs (0 .. 2**64-1; decimal strings or integers in the sequence); ``source.snapshot`` a value
Debezium sends; at most 500 columns an image; column values only text, finite numbers (integers
within 64 bits), booleans or null; date columns a day count or an ISO date from 1900 to 2200;
``trainee_id`` text, an integer or null; the primary key text or an integer, at most 200 characters.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

UNAVAILABLE = "__debezium_unavailable_value"

# The tables whose net change is notified, in the order a digest shows them.
ENTITIES: tuple[str, ...] = ("personal_details", "programme_membership", "curriculum_membership", "placement")
OTHER_TABLES: tuple[str, ...] = ("form_r", "arcp")

PRIMARY_KEY: dict[str, str] = {
    "personal_details": "trainee_id",
    "programme_membership": "id",
    "curriculum_membership": "id",
    "placement": "id",
    "form_r": "id",
    "arcp": "id",
}

NOTIFY_FIELDS: dict[str, tuple[str, ...]] = {
    "personal_details": (
        "title", "forenames", "surname", "known_as", "email", "telephone_number", "mobile_number",
        "address1", "address2", "address3", "address4", "post_code", "gmc_number",
    ),
    "programme_membership": (
        "programme_name", "programme_number", "managing_deanery", "designated_body",
        "programme_membership_type", "start_date", "end_date",
    ),
    "curriculum_membership": ("curriculum_name", "specialty", "start_date", "end_date"),
    "placement": (
        "placement_type", "start_date", "end_date", "grade", "specialty", "sub_specialty", "site",
        "site_known_as", "site_location", "employing_body", "training_body", "whole_time_equivalent",
    ),
}

DATE_FIELDS = frozenset({"start_date", "end_date", "review_date"})
OPS = frozenset({"c", "u", "d", "r", "t", "m"})
_EPOCH = _dt.date(1970, 1, 1)

Position = tuple[int, ...]  # (phase: 0 snapshot, 1 streaming; last commit LSN; LSN)
State = Mapping[str, Any]


class MalformedEnvelope(ValueError):
    """An envelope that cannot be applied. ``reason`` is short, stable and free of personal data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Change:
    """One row change, as the core needs it. Treat as immutable (not ``frozen``: that costs 5x per object)."""

    table: str
    entity_id: str | None  # None only for truncates / messages
    op: str  # c u d r t m
    before: State | None
    after: State | None
    ts_ms: int
    position: Position | None  # (last commit LSN, LSN) from source.sequence

    @property
    def key(self) -> tuple[str, str]:
        assert self.entity_id is not None  # noqa: S101  an invariant for the type checker, not a check of input
        return (self.table, self.entity_id)


def loads(value: bytes | bytearray | memoryview | str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        msg = exc.msg.encode("ascii", "replace").decode("ascii")  # orjson's own words, never the input's
        raise MalformedEnvelope(f"not JSON: {msg} at position {exc.pos}") from None


# Bounds of the values checked at the edge (issue 8, part 4). A value outside them is malformed.
MAX_ENVELOPE_BYTES = 512 * 1024  # well inside Kafka's default 1 MB message, so a dead letter can carry it
MAX_COLUMNS = 500
MAX_KEY_CHARS = 200
TS_MS_MIN = 946_684_800_000  # 2000-01-01T00:00:00Z
TS_MS_MAX = 4_102_444_800_000  # 2100-01-01T00:00:00Z, exclusive
DAY_MIN = (_dt.date(1900, 1, 1) - _EPOCH).days  # -25567
DAY_MAX = (_dt.date(2200, 12, 31) - _EPOCH).days  # 84371
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_LSN_MAX = 2**64 - 1
SNAPSHOT_VALUES = frozenset({"true", "false", "first", "last", "first_in_data_collection",
                             "last_in_data_collection", "incremental"})
_NAME_CHARS = 40


def _col(name: str) -> str:
    """A column name fit for a reason: printable ASCII, at most 40 characters."""
    short = "".join(c if " " <= c <= "~" else "?" for c in name[:_NAME_CHARS])
    return short + "..." if len(name) > _NAME_CHARS else short


def _lsn(value: Any) -> int:
    """One entry of ``source.sequence``: null (0), a decimal string or an integer, in 0 .. 2**64-1."""
    t = type(value)
    if t is str and len(value) <= 20 and value.isdigit() and value.isascii():
        value = int(value)
    elif value is None:
        return 0
    elif t is not int:
        raise MalformedEnvelope("source.sequence holds a value that is not an LSN")
    if 0 <= value <= _LSN_MAX:
        lsn: int = value  # an int by the type tests above
        return lsn
    raise MalformedEnvelope("source.sequence holds an LSN out of range")


def _position(source: Mapping[str, Any]) -> Position | None:
    """Where an event stands in the connector's log, comparable as a tuple.

    ``source.sequence`` is ``["<last commit LSN>", "<LSN>"]``; either may be null (snapshot reads, and
    the first transaction streamed after a snapshot). ``source.lsn`` alone is not monotonic: every row
    of a snapshot shares one LSN, and a transaction open across the snapshot streams changes whose
    LSN is lower than the snapshot's. So snapshot reads rank first (phase 0), streamed changes after
    (phase 1), then by commit LSN and LSN.
    """
    snap = source.get("snapshot")
    if snap == "false" or snap is None or snap is False:
        phase = 1
    elif snap is True:
        phase = 0
    elif type(snap) is str and snap.lower() in SNAPSHOT_VALUES:
        phase = 1 if snap.lower() == "false" else 0
    else:
        raise MalformedEnvelope("source.snapshot is not a known value")
    lsn = source.get("lsn")
    if lsn is not None:
        if type(lsn) is not int:
            raise MalformedEnvelope("source.lsn is not an integer")
        if not 0 <= lsn <= _LSN_MAX:
            raise MalformedEnvelope("source.lsn is out of range")
    seq = source.get("sequence")
    if seq is None:
        return None if lsn is None else (phase, 0, lsn)
    if type(seq) is str:
        try:
            seq = orjson.loads(seq)
        except orjson.JSONDecodeError:
            raise MalformedEnvelope("source.sequence is not a JSON array") from None
    if type(seq) is not list or len(seq) != 2:
        raise MalformedEnvelope("source.sequence is not a pair of LSNs")
    return (phase, _lsn(seq[0]), _lsn(seq[1]))


def _image(env: Mapping[str, Any], name: str) -> State | None:
    img = env.get(name)
    if img is not None:
        if type(img) is not dict:
            raise MalformedEnvelope(f"{name} is not an object")
        if len(img) > MAX_COLUMNS:
            raise MalformedEnvelope(f"{name} has more than {MAX_COLUMNS} columns")
    return img


def _bad_value(name: str, col: Any, value: Any) -> MalformedEnvelope:
    """Why one column value is not text, a finite number, a boolean or null (never the value itself)."""
    if type(col) is not str:
        return MalformedEnvelope(f"{name} has a column name that is not text")
    where = f"{name}.{_col(col)}"
    t = type(value)
    if t is dict or isinstance(value, Mapping):
        return MalformedEnvelope(f"{where} holds an object, not a scalar")
    if t is list or t is tuple:
        return MalformedEnvelope(f"{where} holds an array, not a scalar")
    if t is int:
        return MalformedEnvelope(f"{where} holds an integer out of range")
    if t is float:
        return MalformedEnvelope(f"{where} holds a number that is not finite")
    if t is str:
        return MalformedEnvelope(f"{where} holds text longer than {MAX_ENVELOPE_BYTES} characters")
    return MalformedEnvelope(f"{where} holds a value that is not text, a number, a boolean or null")


def _date_error(where: str, value: Any) -> str | None:
    """Why a date column's value is not a sane date (a Debezium day count or an ISO date), or None."""
    t = type(value)
    if t is int:
        return None if DAY_MIN <= value <= DAY_MAX else f"{where} holds a date out of range"
    if t is not str:
        return f"{where} is not a day count or an ISO date"
    if value == UNAVAILABLE:
        return None
    head = value[:10]
    if not (len(value) >= 10 and head.isascii() and head[4] == "-" and head[7] == "-"
            and head[:4].isdigit() and head[5:7].isdigit() and head[8:].isdigit()):
        return f"{where} is not a valid ISO date"
    try:
        day = _dt.date.fromisoformat(head)
        if len(value) > 10:
            _dt.datetime.fromisoformat(value)
    except ValueError:
        return f"{where} is not a valid ISO date"
    return None if 1900 <= day.year <= 2200 else f"{where} holds a date out of range"


def _check(img: State, name: str, from_json: bool) -> None:
    """Column values only text, finite numbers (integers within 64 bits), booleans or null; sane dates;
    a ``trainee_id`` of text or an integer. Cheap type tests first: this runs for every envelope."""
    if not from_json:  # JSON gives text keys and bounded text; objects handed in need not
        for col, value in img.items():
            if type(col) is not str or (type(value) is str and len(value) > MAX_ENVELOPE_BYTES):
                raise _bad_value(name, col, value)
    for value in img.values():
        t = type(value)
        if t is str or value is None or t is bool:
            continue
        if t is int:
            if _INT_MIN <= value <= _INT_MAX:
                continue
        elif t is float and value - value == 0.0:  # inf - inf and nan - nan are nan
            continue
        raise next((_bad_value(name, col, v) for col, v in img.items() if v is value),  # name the column
                   MalformedEnvelope(f"{name} holds a value that is not text, a number, a boolean or null"))
    for col in DATE_FIELDS:
        value = img.get(col)
        if value is not None and (type(value) is not int or not DAY_MIN <= value <= DAY_MAX):
            reason = _date_error(f"{name}.{col}", value)
            if reason is not None:
                raise MalformedEnvelope(reason)
    tid = img.get("trainee_id")
    if tid is not None and type(tid) is not str and type(tid) is not int:
        raise MalformedEnvelope(f"{name}.trainee_id is not text or an integer")


def _key(table: str, before: State | None, after: State | None) -> str:
    pk = PRIMARY_KEY.get(table, "id")
    for img in (after, before):
        if img is not None:
            val = img.get(pk)
            t = type(val)
            if t is str:
                if val == UNAVAILABLE:
                    continue
                if not val:
                    raise MalformedEnvelope(f"primary key ({pk}) is empty")
                if len(val) > MAX_KEY_CHARS:
                    raise MalformedEnvelope(f"primary key ({pk}) is longer than {MAX_KEY_CHARS} characters")
                key: str = val  # a str by the type test above
                return key
            if t is int:
                return str(val)
            if val is not None:
                raise MalformedEnvelope(f"primary key ({pk}) is not text or an integer")
    raise MalformedEnvelope(f"no primary key ({pk}) in the row images")


_TS_OUT_OF_RANGE = "source.ts_ms is out of range (2000 to 2100)"


def parse_envelope(value: bytes | str | Mapping[str, Any] | None) -> Change | None:
    """Parse and check one envelope value. ``None`` for a tombstone.

    For any input whatsoever this returns a :class:`Change` or ``None``, or raises
    :class:`MalformedEnvelope`; nothing else escapes. The checks of the common case are cheap type
    tests: this runs for every event the aggregator reads.
    """
    try:
        if isinstance(value, (bytes, str, bytearray, memoryview)):
            from_json = True
            if len(value) > MAX_ENVELOPE_BYTES:
                raise MalformedEnvelope(f"envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
            env = loads(value)
        else:
            from_json = False
            env = value
        if env is None:
            return None
        if type(env) is not dict:
            raise MalformedEnvelope("envelope is not a JSON object")
        if "payload" in env and "op" not in env and type(env["payload"]) is dict:
            env = env["payload"]  # converter with schemas.enable=true
        op = env.get("op")
        if type(op) is not str or op not in OPS:
            raise MalformedEnvelope("op is missing or not one of c, u, d, r, t, m")
        source = env.get("source")
        if type(source) is not dict:
            raise MalformedEnvelope("source is missing or not an object")
        table = source.get("table")
        if type(table) is not str or not table:
            raise MalformedEnvelope("source.table is missing or not text")
        ts_ms = source.get("ts_ms")
        if type(ts_ms) is not int:
            raise MalformedEnvelope("source.ts_ms is missing or not an integer")
        before, after = _image(env, "before"), _image(env, "after")
        position = _position(source)
        if op in ("t", "m"):
            if not TS_MS_MIN <= ts_ms < TS_MS_MAX:
                raise MalformedEnvelope(_TS_OUT_OF_RANGE)
            return Change(table, None, op, None, None, ts_ms, position)
        if op in ("c", "r", "u") and after is None:
            raise MalformedEnvelope(f"op {op} without an after image")
        if op == "d" and before is None:
            raise MalformedEnvelope("delete without a before image")
        if before is not None:
            _check(before, "before", from_json)
        if after is not None:
            _check(after, "after", from_json)
        key = _key(table, before, after)
        if not TS_MS_MIN <= ts_ms < TS_MS_MAX:
            raise MalformedEnvelope(_TS_OUT_OF_RANGE)
        return Change(table, key, op, before, after, ts_ms, position)
    except MalformedEnvelope:
        raise
    except Exception as exc:  # noqa: BLE001  (a safety net for objects no JSON document gives)
        raise MalformedEnvelope(f"envelope could not be checked ({type(exc).__name__})") from None


def display(field: str, value: Any) -> Any:
    """A value made display-ready: dates as YYYY-MM-DD, numbers as their decimal string."""
    if value is None or value == UNAVAILABLE:
        return value
    if field in DATE_FIELDS:
        if isinstance(value, int) and not isinstance(value, bool):
            return (_EPOCH + _dt.timedelta(days=value)).isoformat()
        if isinstance(value, str) and len(value) >= 10:
            return value[:10]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def owner(table: str, state: State | None) -> str | None:
    """The trainee a row state belongs to."""
    if state is None:
        return None
    val = state.get("trainee_id")
    if isinstance(val, int) and not isinstance(val, bool):
        return str(val)
    return val if isinstance(val, str) and val != UNAVAILABLE else None
