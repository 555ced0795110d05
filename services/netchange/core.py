"""The net-change core: a pure fold, no I/O, no faust.

Two steps, the same in the batch command and the streaming app:

1. :func:`resolve` — per *entity*, in log order: turn a :class:`~services.netchange.cdc.Change` into a
   :class:`Resolved` change whose ``before`` is the entity's original candidate (full ``before`` image,
   else the known state, which may be "absent"), with ``__debezium_unavailable_value`` filled in, and
   flag first-sight events as baselines. Keeps :class:`Known` state per entity.
2. :func:`fold` — per *(trainee, day)*: remember the original (the ``before`` of the first event of the
   day) and the current (the ``after`` of the last) of each entity; :func:`close` turns that into the
   net-change record when the day closes.

Every apply is idempotent by Debezium position: a replayed event is recognised and either re-derived
identically (:func:`resolve`) or skipped (:func:`fold`), so replays converge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.netchange.cdc import (
    ENTITIES,
    NOTIFY_FIELDS,
    UNAVAILABLE,
    Change,
    Position,
    State,
    display,
    owner,
)
from services.netchange.days import Day

RECENT = 4  # resolved events remembered per entity, to re-derive a replay identically (faust may run ahead of commits)

REASON_NOT_IN_POST = "placement type not in post"
REASON_ENDED = "placement ended before the day"
REASON_PLACEHOLDER = "placeholder person"
REASON_DUMMY = "dummy record person"
REASON_NOTHING = "no notifiable change"


# The value classes are plain slotted dataclasses: treat them as immutable (nothing mutates them);
# they are not ``frozen`` because a frozen dataclass's ``__init__`` costs about 5x more per object.
@dataclass(slots=True)
class Resolved:
    table: str
    entity_id: str
    ts_ms: int
    position: Position | None
    before: State | None  # None: absent
    after: State | None  # None: absent
    baseline: bool = False  # sets the baseline only; never notifies


@dataclass(slots=True)
class Known:
    """What the core knows of an entity: its last state (None = known absent) and position."""

    state: State | None
    position: Position | None
    # (position, original, baseline) of the last few changes: enough to re-derive a replay identically
    recent: tuple[tuple[Position | None, State | None, bool], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"s": self.state, "p": list(self.position) if self.position else None,
                "r": [[list(p) if p else None, o, b] for p, o, b in self.recent]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Known:
        p = d["p"]
        return cls(d["s"], tuple(p) if p else None, tuple((tuple(q) if q else None, o, b) for q, o, b in d["r"]))


def _is_full(before: State | None, reference: State | None) -> bool:
    if not before:
        return False
    if reference is None:
        return len(before) > 1  # nothing to compare with: more than the key alone
    return before.keys() >= reference.keys()  # every column of the reference (a C-level set test)


def _fill(image: State, fallback: State | None) -> State:
    """Replace unavailable (unchanged TOAST) values from the fallback image."""
    if UNAVAILABLE not in image.values():  # the common case, tested in C
        return image
    out = dict(image)
    for col, val in image.items():
        if val == UNAVAILABLE and fallback is not None and fallback.get(col, UNAVAILABLE) != UNAVAILABLE:
            out[col] = fallback[col]
    return out


def resolve(known: Known | None, change: Change) -> tuple[Known | None, Resolved | None, bool]:
    """Apply one change to an entity's known state.

    Returns ``(new_known, resolved, replay)``. ``resolved`` is None when the change has no effect (a
    truncate, a delete of an unknown entity, or a replay too old to re-derive). ``replay`` is True when
    the position was already applied; the resolved change is then re-derived exactly as first time.
    """
    op = change.op
    if op == "t" or op == "m" or change.entity_id is None:
        return known, None, False
    pos = change.position
    if known is not None:
        known_pos = known.position
        if pos is not None and known_pos is not None and pos <= known_pos:
            for prior_pos, prior_original, prior_baseline in known.recent:
                if prior_pos == pos:
                    if prior_baseline and op == "d":
                        return known, None, True
                    after = change.after
                    if after is not None and UNAVAILABLE in after.values():
                        after = _fill(after, prior_original)
                    return known, Resolved(change.table, change.entity_id, change.ts_ms, pos, prior_original,
                                           after, prior_baseline), True
            return known, None, True
        known_state = known.state
    else:
        known_pos = known_state = None
    after = change.after
    before = change.before
    reference = after if after is not None else known_state
    if before and (before.keys() >= reference.keys() if reference is not None else len(before) > 1):  # full
        if UNAVAILABLE in before.values():
            before = _fill(before, known_state)
        original: State | None = before
        baseline = False
    elif known is not None:
        original, baseline = known_state, False
    elif op == "c":
        original, baseline = None, False
    else:  # snapshot read, first-seen update or delete of an unknown entity
        original, baseline = None, True
    if after is not None and UNAVAILABLE in after.values():
        after = _fill(after, original if original is not None else known_state)
    if op == "r":
        baseline = True
    resolved = Resolved(change.table, change.entity_id, change.ts_ms, pos, original, after, baseline)
    entry = (pos, original, baseline)
    if known is None:
        new_known = Known(after, pos, (entry,))
    else:
        recent = known.recent
        new_known = Known(after, pos if pos is not None else known_pos,
                          (*recent, entry) if len(recent) < RECENT else (*recent[1 - RECENT:], entry))
    if baseline and op == "d":
        return new_known, None, False  # a delete of an unknown entity changes nothing
    return new_known, resolved, False


# ---------------------------------------------------------------- per (trainee, day)


@dataclass(slots=True)
class EntityFold:
    original: State | None
    current: State | None
    position: Position | None
    late: bool = False


DayFold = Mapping[tuple[str, str], EntityFold]


def fold(day: DayFold | None, change: Resolved, *, late: bool = False) -> DayFold | None:
    """Fold a resolved change into a (trainee, day). None when it changes nothing (baseline, replay)."""
    if change.baseline:
        return None
    key = (change.table, change.entity_id)
    if day:
        prior = day.get(key)
        out = dict(day)
    else:
        prior = None
        out = {}
    if prior is not None:
        pos, prior_pos = change.position, prior.position
        if pos is not None and prior_pos is not None and pos <= prior_pos:
            return None  # replayed
        out[key] = EntityFold(prior.original, change.after, pos, prior.late or late)
    else:
        out[key] = EntityFold(change.before, change.after, change.position, late)
    return out


PersonHistory = tuple[tuple[int, Position | None, State | None], ...]


def person_apply(history: PersonHistory, day: Day, change: Resolved) -> PersonHistory | None:
    """Remember a trainee's personal details as of each day (for the recipient at a day's close)."""
    if change.table != "personal_details":
        return None
    for _, pos, _ in history:
        if pos is not None and pos == change.position:
            return None  # replayed
    return (*history, (day.start_ms, change.position, change.after))


def person_trim(history: PersonHistory, floor_ms: int) -> PersonHistory:
    """Forget states no open day can need: keep the last one on or before ``floor_ms`` and all later."""
    keep_from = 0
    for i, (start, _, _) in enumerate(history):
        if start <= floor_ms:
            keep_from = i
    return history[keep_from:]


def person_at(history: PersonHistory, day: Day) -> State | None:
    """Personal details at the close of ``day``: the last state recorded on or before it."""
    found: State | None = None
    for start, _, state in history:
        if start <= day.start_ms:
            found = state
    return found


def _fields(table: str, old: State | None, new: State | None) -> dict[str, dict[str, Any]]:
    fields: dict[str, dict[str, Any]] = {}
    for name in NOTIFY_FIELDS[table]:
        o = display(name, old.get(name)) if old is not None else None
        n = display(name, new.get(name)) if new is not None else None
        if o == UNAVAILABLE or n == UNAVAILABLE:
            continue  # an unknown value is never compared
        if o != n:
            fields[name] = {"old": o, "new": n}
    return fields


def _suppressed_placement(orig: State | None, cur: State | None, day: Day) -> str | None:
    ref = cur if cur is not None else orig
    assert ref is not None  # noqa: S101  an invariant for the type checker, not a check of input
    ptype = ref.get("placement_type")
    if not (isinstance(ptype, str) and ptype.lower().startswith("in post")):
        return REASON_NOT_IN_POST
    end = display("end_date", ref.get("end_date"))
    if isinstance(end, str) and end < day.date.isoformat():
        return REASON_ENDED
    return None


def entity_change(trainee_id: str, key: tuple[str, str], entry: EntityFold, day: Day) -> dict[str, Any] | None:
    table, entity_id = key
    orig = entry.original if owner(table, entry.original) == trainee_id else None
    cur = entry.current if owner(table, entry.current) == trainee_id else None
    if orig is None and cur is None:
        return None
    kind = "created" if orig is None else "deleted" if cur is None else "updated"
    fields = _fields(table, orig, cur)
    if not fields and kind == "updated":
        return None
    suppressed = _suppressed_placement(orig, cur, day) if table == "placement" else None
    return {"entity": table, "id": entity_id, "kind": kind, "suppressed": suppressed, "fields": fields}


def close(trainee_id: str, day: Day, entries: DayFold, person: State | None,
          *, late: bool = False) -> dict[str, Any] | None:
    """The net-change record of a (trainee, day), or None when nothing changed."""
    changes = []
    for key in sorted(entries, key=lambda k: (k[0], k[1])):
        ch = entity_change(trainee_id, key, entries[key], day)
        if ch is not None:
            changes.append(ch)
    if not changes:
        return None
    previous_email = None
    for ch in changes:
        if ch["entity"] == "personal_details" and ch["kind"] == "updated" and "email" in ch["fields"]:
            previous_email = ch["fields"]["email"]["old"]
    role = person.get("role") if person is not None else None
    if role == "Placeholder":
        suppressed: str | None = REASON_PLACEHOLDER
    elif role == "Dummy Record":
        suppressed = REASON_DUMMY
    elif all(ch["suppressed"] for ch in changes):
        suppressed = REASON_NOTHING
    else:
        suppressed = None
    recipient = None
    if person is not None:
        recipient = {k: person.get(k) for k in ("email", "title", "forenames", "surname")}
    return {
        "id": f"{trainee_id}:{day.label}",
        "trainee_id": trainee_id,
        "day": day.label,
        "late": bool(late or any(e.late for e in entries.values())),
        "changes": changes,
        "recipient": recipient,
        "previous_email": previous_email,
        "suppressed": suppressed,
    }


__all__ = ["ENTITIES", "EntityFold", "Known", "Resolved", "close", "fold", "person_apply", "person_at", "resolve"]


def fold_to_dict(day: DayFold) -> dict[str, Any]:
    """A day fold as a JSON-able value (Faust table values, changelogs)."""
    return {f"{t}|{i}": [e.original, e.current, list(e.position) if e.position else None, e.late]
            for (t, i), e in day.items()}


def fold_from_dict(d: Mapping[str, Any]) -> DayFold:
    out: dict[tuple[str, str], EntityFold] = {}
    for key, (orig, cur, pos, late) in d.items():
        table, _, entity_id = key.partition("|")
        out[(table, entity_id)] = EntityFold(orig, cur, tuple(pos) if pos else None, late)
    return out
