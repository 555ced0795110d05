"""Pure parsing of Debezium PostgreSQL change envelopes (JSON converter, schemas disabled).

No I/O. ``parse_envelope`` turns one envelope value into a :class:`Change` or raises
:class:`MalformedEnvelope` with a reason that names no personal data.
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
        assert self.entity_id is not None
        return (self.table, self.entity_id)


def loads(value: bytes | str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedEnvelope(f"not JSON: {exc.msg} at position {exc.pos}") from None


def _position(source: Mapping[str, Any]) -> Position | None:
    """Where an event stands in the connector's log, comparable as a tuple.

    ``source.sequence`` is ``["<last commit LSN>", "<LSN>"]``; either may be null (snapshot reads, and
    the first transaction streamed after a snapshot). ``source.lsn`` alone is not monotonic: every row
    of a snapshot shares one LSN, and a transaction open across the snapshot streams changes whose
    LSN is lower than the snapshot's. So snapshot reads rank first (phase 0), streamed changes after
    (phase 1), then by commit LSN and LSN.
    """
    phase = 0 if str(source.get("snapshot", "false")).lower() not in ("false", "none", "") else 1
    seq = source.get("sequence")
    if seq is None:
        lsn = source.get("lsn")
        return (phase, 0, lsn) if isinstance(lsn, int) and not isinstance(lsn, bool) else None
    if isinstance(seq, str):
        try:
            seq = orjson.loads(seq)
        except orjson.JSONDecodeError:
            raise MalformedEnvelope("source.sequence is not a JSON array") from None
    if not isinstance(seq, list) or len(seq) != 2:
        raise MalformedEnvelope("source.sequence is not a pair of LSNs")
    try:
        return (phase, int(seq[0]) if seq[0] is not None else 0, int(seq[1]) if seq[1] is not None else 0)
    except (TypeError, ValueError):
        raise MalformedEnvelope("source.sequence holds a value that is not an LSN") from None


def _image(env: Mapping[str, Any], name: str) -> State | None:
    img = env.get(name)
    if img is not None and not isinstance(img, dict):
        raise MalformedEnvelope(f"{name} is not an object")
    return img


def _key(table: str, before: State | None, after: State | None) -> str:
    pk = PRIMARY_KEY.get(table, "id")
    for img in (after, before):
        if img is not None:
            val = img.get(pk)
            if isinstance(val, str) and val != UNAVAILABLE:
                return val
            if isinstance(val, int) and not isinstance(val, bool):
                return str(val)
    raise MalformedEnvelope(f"no primary key ({pk}) in the row images")


def parse_envelope(value: bytes | str | Mapping[str, Any] | None) -> Change | None:
    """Parse one envelope value. ``None`` for a tombstone; raises :class:`MalformedEnvelope`."""
    env = loads(value) if isinstance(value, (bytes, str)) else value
    if env is None:
        return None
    if not isinstance(env, dict):
        raise MalformedEnvelope("envelope is not a JSON object")
    if "payload" in env and "op" not in env and isinstance(env["payload"], dict):
        env = env["payload"]  # converter with schemas.enable=true
    op = env.get("op")
    if op not in OPS:
        raise MalformedEnvelope("op is missing or not one of c, u, d, r, t, m")
    source = env.get("source")
    if not isinstance(source, dict):
        raise MalformedEnvelope("source is missing or not an object")
    table = source.get("table")
    if not isinstance(table, str) or not table:
        raise MalformedEnvelope("source.table is missing")
    ts_ms = source.get("ts_ms")
    if not isinstance(ts_ms, int) or isinstance(ts_ms, bool):
        raise MalformedEnvelope("source.ts_ms is missing or not an integer")
    before, after = _image(env, "before"), _image(env, "after")
    position = _position(source)
    if op in ("t", "m"):
        return Change(table, None, op, None, None, ts_ms, position)
    if op in ("c", "r", "u") and after is None:
        raise MalformedEnvelope(f"op {op} without an after image")
    if op == "d" and before is None:
        raise MalformedEnvelope("delete without a before image")
    return Change(table, _key(table, before, after), op, before, after, ts_ms, position)


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
