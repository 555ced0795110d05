"""One trainee's state and the two pure functions that drive it, in the stream and in the batch command.

The shape is quix-streams' initialize / agg / result: :meth:`Fold.apply` takes a trainee's
:class:`TraineeState` and one change event and returns the next state; :meth:`Fold.close` turns one
open day of that state into the net-change record (or None) and the state without that day. The
stream and the batch command call only these two: the replay guard (by Debezium position, per
record of the trainee), the day an event belongs to, the late rule and the person history are
applied here, over the primitives of :mod:`services.netchange.core`. No I/O.

Events reach a trainee already split by owner: the connector keys every change by ``trainee_id``
(``message.key.columns``), so a record moved from A to B arrives as a delete keyed A and a create
keyed B (ADR 0004). :func:`route` does the same split for the batch command, whose input lines carry
no key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.netchange import core
from services.netchange.cdc import PRIMARY_KEY, UNAVAILABLE, Change, MalformedEnvelope, Position, State, owner
from services.netchange.days import Calendar, Day

# what an apply did (the shell counts them; none is an error)
IGNORED = "ignored"  # truncate or logical message: changes nothing
REPLAY = "replay"  # already applied (same or older position for this entity)
BASELINE = "baseline"  # snapshot read or first sight: sets the known state, never notifies
NOTHING = "nothing"  # a delete of an entity this trainee never had
FOLDED = "folded"
LATE = "late"  # folded into the open day because its own day had closed


@dataclass(slots=True)
class TraineeState:
    """Everything the fold keeps for one trainee: the known state of each of its records (None: known
    absent) with the position last applied, its open days, and its personal-details history."""

    known: dict[str, tuple[State | None, Position | None]] = field(default_factory=dict)
    days: dict[str, core.DayFold] = field(default_factory=dict)
    history: core.PersonHistory = ()

    def dumps(self, partition: int | None = None) -> bytes:
        return orjson.dumps({
            "k": {k: [s, list(p) if p else None] for k, (s, p) in self.known.items()},
            "d": {label: core.fold_to_dict(f) for label, f in self.days.items()},
            "h": [[s, list(p) if p else None, st] for s, p, st in self.history],
            "p": partition,
        })

    @classmethod
    def loads(cls, raw: bytes | None) -> TraineeState:
        if not raw:
            return cls()
        d = orjson.loads(raw)
        return cls({k: (s, tuple(p) if p else None) for k, (s, p) in d["k"].items()},
                   {label: core.fold_from_dict(f) for label, f in d["d"].items()},
                   tuple((s, tuple(p) if p else None, st) for s, p, st in d["h"]))

    @staticmethod
    def partition_of(raw: bytes) -> tuple[int | None, list[str]]:
        """The partition a stored state was written from, and its open days (to rebuild an index)."""
        d = orjson.loads(raw)
        return d.get("p"), list(d["d"])


def entity_key(change: Change) -> str:
    return f"{change.table}|{change.entity_id}"


def owners(change: Change) -> list[str]:
    """The trainees an event names: the owner of its ``before`` and of its ``after`` image."""
    found: list[str] = []
    for img in (change.before, change.after):
        who = owner(change.table, img)
        if who is not None and who not in found:
            found.append(who)
    return found


@dataclass(frozen=True, slots=True)
class Fold:
    calendar: Calendar
    grace_ms: int = 0

    def apply(self, state: TraineeState, trainee: str, change: Change, mark_ms: int | None = None
              ) -> tuple[TraineeState, str]:
        """Apply one change event of ``trainee``. Never mutates ``state``.

        ``mark_ms`` is the watermark of the trainee's partition (None in the batch: nothing closed):
        an event whose day ended (plus grace) at or before it is late and goes to the open day.
        """
        op = change.op
        if op == "t" or op == "m" or change.entity_id is None:
            return state, IGNORED
        key = entity_key(change)
        prior = state.known.get(key)
        pos = change.position
        if prior is not None and pos is not None and prior[1] is not None and pos <= prior[1]:
            return state, REPLAY
        known = core.Known(prior[0], prior[1]) if prior is not None else None
        new_known, resolved, _ = core.resolve(known, change)
        next_known = dict(state.known)
        if new_known is not None:
            next_known[key] = (new_known.state, new_known.position)
        if resolved is None:
            return TraineeState(next_known, state.days, state.history), NOTHING
        day = self.calendar.day_of(resolved.ts_ms)
        late = mark_ms is not None and day.end_ms + self.grace_ms <= mark_ms
        if late:
            day = self.calendar.day_of(mark_ms - self.grace_ms)  # type: ignore[operator]  # the open day
        history = state.history
        if resolved.table == "personal_details":  # baselines too: who the trainee is at a day's close
            changed = core.person_apply(history, day, resolved)
            if changed is not None:
                history = changed
        if resolved.baseline:
            return TraineeState(next_known, state.days, history), BASELINE
        outcome = LATE if late else FOLDED
        days = state.days
        folded = core.fold(days.get(day.label), resolved, late=outcome == LATE)
        if folded is not None:
            days = {**days, day.label: folded}
        return TraineeState(next_known, days, history), outcome

    def close(self, state: TraineeState, trainee: str, day: Day) -> tuple[dict[str, Any] | None, TraineeState]:
        """The net-change record of ``trainee``'s ``day`` (None: nothing changed), and the state without it."""
        entries = state.days.get(day.label)
        if entries is None:
            return None, state
        record = core.close(trainee, day, entries, core.person_at(state.history, day))
        if record is not None:
            record["local_offices"] = local_offices(state, trainee, day)
        days = {label: f for label, f in state.days.items() if label != day.label}
        return record, TraineeState(state.known, days, core.person_trim(state.history, day.end_ms))


def local_offices(state: TraineeState, trainee: str, day: Day) -> list[str] | None:
    """The local offices (``managing_deanery``) of the trainee's programme memberships at the close of
    ``day``: a record changed that day counts as it ended the day; one changed on a later open day as
    it started that day; any other as it is known. Sorted, without repeats; None when there is none."""
    later = sorted(label for label in state.days if label > day.label)  # labels sort as their days
    found: set[str] = set()
    for key, (known_state, _) in state.known.items():
        if not key.startswith("programme_membership|"):
            continue
        table, _, entity_id = key.partition("|")
        fkey = (table, entity_id)
        row: State | None = known_state
        entry = state.days.get(day.label, {}).get(fkey)
        if entry is not None:
            row = entry.current
        else:
            for label in later:
                entry = state.days[label].get(fkey)
                if entry is not None:
                    row = entry.original
                    break
        if row is None or owner(table, row) != trainee:
            continue
        office = row.get("managing_deanery")
        if isinstance(office, str) and office.strip():
            found.add(office)
    return sorted(found) or None


# ---------------------------------------------------------------- the batch command's routing


class Router:
    """What the connector's ``message.key.columns`` does, for input without keys (the batch command):
    each event goes to the trainee its row belongs to, and an update that changes ``trainee_id``
    becomes a delete for the old owner and a create for the new one."""

    def __init__(self) -> None:
        self.last_owner: dict[str, str] = {}
        # deletes whose row named no trainee (a primary-key-only ``before``): the entity is known to be
        # absent, so that trainee learns it with the entity's next event
        self.orphans: dict[str, Change] = {}

    def route(self, change: Change) -> list[tuple[str, Change]]:
        if change.entity_id is None:
            return []
        key = entity_key(change)
        old = owner(change.table, change.before) or self.last_owner.get(key)
        new = owner(change.table, change.after)
        if change.op == "d":
            self.last_owner.pop(key, None)
            if old is None:
                self.orphans[key] = change
                return []
            self.orphans.pop(key, None)
            return [(old, change)]
        if new is not None:
            self.last_owner[key] = new
        if change.op == "u" and old is not None and new is not None and old != new:
            gone = Change(change.table, change.entity_id, "d", change.before, None, change.ts_ms, change.position)
            after = change.after
            if after is not None and UNAVAILABLE in after.values() and change.before:
                # unchanged TOAST values: the un-split event still has them in its before image (the
                # connector's create half has no before, so the stream cannot do this: ADR 0004)
                after = {c: change.before.get(c, v) if v == UNAVAILABLE else v for c, v in after.items()}
            came = Change(change.table, change.entity_id, "c", None, after, change.ts_ms, change.position)
            return [(old, gone), (new, came)]
        who = new if new is not None else old
        if who is None:
            return []
        orphan = self.orphans.pop(key, None)
        return [(who, orphan), (who, change)] if orphan is not None else [(who, change)]


# ---------------------------------------------------------------- the stream's message keys

KEY_SETTING = "message.key.columns"


def trainee_of_key(key: bytes | None, change: Change) -> str | None:
    """The trainee a CDC message is keyed by, checked against its row images.

    The connector must key every table by ``trainee_id`` (``message.key.columns``, key converter
    without schemas, so that one trainee's key bytes are the same on every topic); a key that is not
    ``{"trainee_id": ...}``, or that names a trainee neither image belongs to, is refused with a reason
    that names the setting. ``{"trainee_id": null}`` (a row that belongs to no trainee) gives None.
    """
    if not key:
        raise MalformedEnvelope(f"message has no key: the connector must set {KEY_SETTING} to trainee_id")
    try:
        parsed = orjson.loads(key)
    except orjson.JSONDecodeError:
        raise MalformedEnvelope(f"message key is not JSON: the connector must set {KEY_SETTING} "
                                "to trainee_id") from None
    if isinstance(parsed, dict) and "payload" in parsed and "schema" in parsed:
        raise MalformedEnvelope("message key carries a schema: the connector must set "
                                "key.converter.schemas.enable=false (the key bytes must be the same on every topic)")
    if not isinstance(parsed, dict) or set(parsed) != {"trainee_id"}:
        raise MalformedEnvelope(f"message key is not a trainee id: the connector must set {KEY_SETTING} "
                                f"to {change.table}:trainee_id")
    who = parsed["trainee_id"]
    if who is None and not any(owner(change.table, img) for img in (change.before, change.after)):
        return None
    if isinstance(who, int) and not isinstance(who, bool):
        who = str(who)
    if not isinstance(who, str) or not who or len(who) > 200 or who.startswith("~"):
        raise MalformedEnvelope(f"message key's trainee_id is not a trainee id ({KEY_SETTING})")
    named = owners(change)
    if named and who not in named:
        raise MalformedEnvelope(f"message key is not the row's trainee_id ({KEY_SETTING})")
    return who


def _pk_of(table: str) -> str:
    return PRIMARY_KEY.get(table, "id")


def as_connector_keys(envelopes: list[Mapping[str, Any]]) -> list[tuple[bytes, Mapping[str, Any]]]:
    """Envelope values keyed as the connector with ``message.key.columns=trainee_id`` sends them: an
    owner change split into a delete (old key) and a create (new key). For tests and benchmarks."""
    out: list[tuple[bytes, Mapping[str, Any]]] = []
    last: dict[tuple[str, str], str] = {}
    for env in envelopes:
        table = env["source"]["table"]
        before, after = env.get("before"), env.get("after")
        row = after or before
        if row is None:
            raise ValueError("an envelope with neither a before nor an after image")
        ekey = (table, str(row[_pk_of(table)]))
        old = owner(table, before) or last.get(ekey)
        new = owner(table, after)
        if env["op"] == "u" and old and new and old != new:
            out.append((orjson.dumps({"trainee_id": old}), {**env, "op": "d", "after": None}))
            out.append((orjson.dumps({"trainee_id": new}), {**env, "op": "c", "before": None}))
        else:
            who = new or old
            out.append((orjson.dumps({"trainee_id": who}), env))
        if env["op"] == "d":
            last.pop(ekey, None)
        elif new:
            last[ekey] = new
    return out
