"""Pure: a checked Debezium change (services.netchange.cdc) turned into one write of the read model.

A :class:`Write` says "row ``id`` of ``table`` is now ``values`` (or absent), as of ``rank``". The
store applies it only when ``rank`` is newer than the rank it holds for that row, so replays,
duplicates and reordering across partitions change nothing (docs/adr/0006).

``rank`` is the connector's position ``(phase, commit LSN, LSN)`` followed by 1 for a row image and
0 for a delete. An owner change reaches us as a delete (keyed by the old trainee) and a create (keyed
by the new one) with the *same* position, on two partitions that may be read in either order: the
trailing digit makes the create win whichever comes last.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from services.netchange.cdc import DATE_FIELDS, UNAVAILABLE, Change, MalformedEnvelope

TABLES = ("form_r", "arcp", "programme_membership", "personal_details")

# the columns the read model keeps of each table (the rest of the row is not needed by the report)
COLUMNS: dict[str, tuple[str, ...]] = {
    "form_r": ("trainee_id", "part", "programme_membership_id", "lifecycle_state", "submitted_at", "revision"),
    "arcp": ("trainee_id", "programme_membership_id", "review_date", "outcome"),
    "programme_membership": ("trainee_id", "programme_name", "programme_number", "managing_deanery"),
    "personal_details": ("trainee_id", "role", "title", "forenames", "surname", "email"),
}
TIMESTAMP_FIELDS = frozenset({"submitted_at"})
INT_FIELDS = frozenset({"revision"})
_EPOCH = dt.date(1970, 1, 1)
NO_POSITION = (0, 0, 0)


@dataclass(frozen=True, slots=True)
class Write:
    table: str
    id: str
    rank: tuple[int, ...]
    values: dict[str, Any] | None  # None: the row is absent (deleted), remembered with its rank


def _date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return _EPOCH + dt.timedelta(days=value)
    return dt.date.fromisoformat(str(value)[:10])  # cdc.py checked it is an ISO date


def _timestamp(col: str, value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedEnvelope(f"after.{col} is not an ISO-8601 timestamp")
    try:
        ts = dt.datetime.fromisoformat(value)
    except ValueError:
        raise MalformedEnvelope(f"after.{col} is not an ISO-8601 timestamp") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    if not 1900 <= ts.year <= 2200:
        raise MalformedEnvelope(f"after.{col} is out of range")
    return ts


def _text(col: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise MalformedEnvelope(f"after.{col} is not text")
    if isinstance(value, int):
        return str(value)
    raise MalformedEnvelope(f"after.{col} is not text")


def to_write(change: Change) -> Write | None:
    """The write for one change of a table the read model keeps; ``None`` for anything else
    (other tables, truncates, messages). Raises :class:`MalformedEnvelope` for a value it cannot use."""
    if change.table not in COLUMNS or change.entity_id is None:
        return None
    rank = (*(change.position or NO_POSITION), 0 if change.op == "d" else 1)
    if change.op == "d":
        return Write(change.table, change.entity_id, rank, None)
    after = change.after or {}
    before = change.before or {}
    values: dict[str, Any] = {}
    for col in COLUMNS[change.table]:
        value = after.get(col)
        if value == UNAVAILABLE:  # an unchanged TOASTed value: the before image has it
            value = before.get(col)
            if value == UNAVAILABLE:
                raise MalformedEnvelope(f"after.{col} is unavailable and no before image has it")
        if col in DATE_FIELDS:
            value = _date(value)
        elif col in TIMESTAMP_FIELDS:
            value = _timestamp(col, value)
        elif col in INT_FIELDS:
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise MalformedEnvelope(f"after.{col} is not an integer")
        else:
            value = _text(col, value)
        values[col] = value
    if values["trainee_id"] is None:
        raise MalformedEnvelope("after.trainee_id is missing")
    return Write(change.table, change.entity_id, rank, values)
