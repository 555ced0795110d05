"""Pure decisions of the mailer: which notifications a record makes, their ids, when they may go,
and how long to wait before a retry. No I/O."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo


class Status(StrEnum):
    PENDING = "PENDING"  # claimed, not yet handed to SMTP
    SENDING = "SENDING"  # DATA in flight: a crash now leaves the outcome unknown
    RETRYING = "RETRYING"
    SENT = "SENT"
    FAILED = "FAILED"
    UNCERTAIN = "UNCERTAIN"
    SUPPRESSED = "SUPPRESSED"
    NO_ADDRESS = "NO_ADDRESS"
    # a record with the id of one already final came with other content (an aggregator replay after a
    # fix): not sent; the ledger keeps both content hashes and the new record, an operator decides
    SUPERSEDED = "SUPERSEDED"
    RESEND_REQUESTED = "RESEND_REQUESTED"  # an operator asked for a copy (status events only, never a ledger row)


FINAL = frozenset({Status.SENT, Status.FAILED, Status.UNCERTAIN, Status.SUPPRESSED, Status.NO_ADDRESS,
                   Status.SUPERSEDED})

# Fields of a net-change record left out of its content hash: they say how or when it was derived,
# not what it tells the trainee (``late``: whether its events arrived after the day closed, which an
# aggregator replay may judge differently).
VOLATILE_FIELDS = frozenset({"late"})


class Kind(StrEnum):
    DIGEST = "digest"
    PREVIOUS_ADDRESS = "previous-address"


@dataclass(frozen=True, slots=True)
class Notification:
    notification_id: str
    kind: Kind
    record_id: str
    trainee_id: str
    day: str


@dataclass(frozen=True, slots=True)
class Content:
    """What the ledger keeps of the record a notification is sent from: its content hash, and its
    value as read (for a resend, which re-publishes it)."""

    hash: str
    value: bytes | None = None


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(v) for v in value]
    return value


def canonical_json(record: dict[str, Any]) -> bytes:
    """The record as canonical JSON: keys sorted, no whitespace, UTF-8, volatile fields and nulls left
    out (so a later schema version's optional field, null in old records, does not change it); arrays
    keep their order (the aggregator emits them deterministically)."""
    import json

    body = _without_nulls({k: v for k, v in record.items() if k not in VOLATILE_FIELDS})
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def content_hash(record: dict[str, Any]) -> str:
    """SHA-256 of :func:`canonical_json`, first 32 hex digits: equal for records that say the same."""
    return hashlib.sha256(canonical_json(record)).hexdigest()[:32]


def notifications(record: dict[str, Any]) -> list[Notification]:
    """The digest, and a notice to the old address when the email changed that day."""
    base = (record["id"], record["trainee_id"], record["day"])
    out = [Notification(notification_id(record["trainee_id"], record["day"], Kind.DIGEST), Kind.DIGEST, *base)]
    if record.get("previous_email"):
        out.append(Notification(notification_id(record["trainee_id"], record["day"], Kind.PREVIOUS_ADDRESS),
                                Kind.PREVIOUS_ADDRESS, *base))
    return out


def notification_id(trainee_id: str, day: str, kind: Kind) -> str:
    return f"{trainee_id}:{day}:{kind.value}"


def message_id(notification_id: str, generation: int, domain: str) -> str:
    """Deterministic per (notification, generation): a resend (generation + 1) gets a new one."""
    digest = hashlib.sha256(f"{notification_id}#{generation}".encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def unsent_reason(record: dict[str, Any]) -> Status | None:
    """Why a digest will not be sent, as a ledger status; None when it should be."""
    if record.get("suppressed") or not any(c.get("suppressed") is None for c in record.get("changes", ())):
        return Status.SUPPRESSED
    recipient = record.get("recipient") or {}
    if not recipient.get("email"):
        return Status.NO_ADDRESS
    return None


def send_after(day: str, send_at: str, zone: str) -> dt.datetime:
    """Digests of a calendar day go from ``send_at`` local time on the next day; short days at once."""
    if "T" in day:
        return dt.datetime.fromisoformat(day)
    tz = ZoneInfo(zone)
    hour, minute = (int(x) for x in send_at.split(":"))
    next_day = dt.date.fromisoformat(day) + dt.timedelta(days=1)
    return dt.datetime.combine(next_day, dt.time(hour, minute), tzinfo=tz)


def backoff(attempt: int, base: float, cap: float = 300.0, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""
    rng = rng or random.Random()  # noqa: S311  retry jitter, not a secret
    return rng.uniform(0, min(cap, base * (2 ** attempt)))
