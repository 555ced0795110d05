"""Form R before ARCP: the status rules, pure (no I/O, no clock of its own).

For each ARCP in the horizon, per trainee and programme membership, Part A and Part B are each one
of ``submitted``, ``returned`` (UNSUBMITTED: returned for changes), ``draft``, ``deleted`` or
``missing``; with the date of the latest submission, the days to the review, and "at risk".

The rules, in words (docs/adr/0006 and the tests hold the same):

- **Horizon.** An ARCP is in the report when its review date is from today up to ``horizon_weeks``
  ahead (default 16), or when it is in the past and has no outcome yet (the panel has not sat).
- **Which forms.** Only forms of the ARCP's trainee, for the ARCP's programme membership, of that
  part. A form for another programme never counts, nor does another trainee's.
- **Submitted.** A form whose state is SUBMITTED and whose ``submitted_at`` (its London date) is in
  the ``window_months`` (default 12) before the review, the review day included. Once the review
  date has passed without an outcome, a submission after it counts too (the panel is still to sit).
- **Otherwise**, from the forms that count: ``returned`` if one is UNSUBMITTED, else ``draft`` if one
  is DRAFT, else ``deleted`` if one is DELETED, else ``missing`` (no form, or only submissions
  outside the window).
- **Latest submission** is the latest ``submitted_at`` of the forms that count (whatever their state
  now: a returned or deleted form keeps the date it was last submitted). For ``submitted`` it is the
  latest submission inside the window.
- **Days to the review**: review date minus today (negative once it has passed).
- **At risk**: the review is at most ``at_risk_weeks`` (default 6) away, or has passed, and a part
  is not submitted.
- Placeholder and dummy persons are left out of the report.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")
NOT_A_PERSON = frozenset({"placeholder", "dummy record"})


class PartStatus(StrEnum):
    SUBMITTED = "submitted"
    RETURNED = "returned"
    DRAFT = "draft"
    DELETED = "deleted"
    MISSING = "missing"


# words for people (the page, the CSV, the reminder)
STATUS_WORDS: dict[PartStatus, str] = {
    PartStatus.SUBMITTED: "Submitted",
    PartStatus.RETURNED: "Returned for changes",
    PartStatus.DRAFT: "Draft, not submitted",
    PartStatus.DELETED: "Deleted",
    PartStatus.MISSING: "Not started",
}


@dataclass(frozen=True, slots=True)
class Rules:
    horizon_weeks: int = 16
    window_months: int = 12
    at_risk_weeks: int = 6
    zone: ZoneInfo = LONDON


@dataclass(frozen=True, slots=True)
class FormR:
    id: str
    trainee_id: str
    part: str  # "A" or "B"
    programme_membership_id: str | None
    lifecycle_state: str  # DRAFT SUBMITTED UNSUBMITTED DELETED
    submitted_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Arcp:
    id: str
    trainee_id: str
    programme_membership_id: str | None
    review_date: dt.date
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class Programme:
    id: str
    trainee_id: str
    programme_name: str | None = None
    programme_number: str | None = None
    managing_deanery: str | None = None  # the local office


@dataclass(frozen=True, slots=True)
class Person:
    trainee_id: str
    role: str | None = None
    title: str | None = None
    forenames: str | None = None
    surname: str | None = None
    email: str | None = None

    @property
    def is_real(self) -> bool:
        return (self.role or "").strip().lower() not in NOT_A_PERSON

    @property
    def name(self) -> str | None:
        parts = [p for p in (self.forenames, self.surname) if p]
        return " ".join(parts) or None


@dataclass(frozen=True, slots=True)
class Part:
    status: PartStatus
    latest_submission: dt.datetime | None

    @property
    def done(self) -> bool:
        return self.status is PartStatus.SUBMITTED


@dataclass(frozen=True, slots=True)
class Row:
    arcp_id: str
    trainee_id: str
    trainee_name: str | None
    programme_membership_id: str | None
    programme_name: str | None
    programme_number: str | None
    local_office: str | None
    review_date: dt.date
    days_to_review: int
    part_a: Part
    part_b: Part
    at_risk: bool

    @property
    def overdue(self) -> bool:
        return self.days_to_review < 0

    @property
    def both_submitted(self) -> bool:
        return self.part_a.done and self.part_b.done

    @property
    def missing_parts(self) -> tuple[str, ...]:
        return tuple(p for p, part in (("A", self.part_a), ("B", self.part_b)) if not part.done)


def months_before(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` calendar months earlier (the last day of a shorter month)."""
    y, m = divmod(day.year * 12 + day.month - 1 - months, 12)
    m += 1
    for d in (day.day, 30, 29, 28):
        try:
            return dt.date(y, m, d)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def local_date(instant: dt.datetime, zone: ZoneInfo = LONDON) -> dt.date:
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    return instant.astimezone(zone).date()


def in_horizon(arcp: Arcp, today: dt.date, rules: Rules = Rules()) -> bool:
    if arcp.review_date < today:
        return arcp.outcome is None
    return arcp.review_date <= today + dt.timedelta(weeks=rules.horizon_weeks)


def part_status(arcp: Arcp, forms: Iterable[FormR], part: str, today: dt.date, rules: Rules = Rules()) -> Part:
    """The status of one part for one ARCP, from every form of the trainee (any are filtered here)."""
    start = months_before(arcp.review_date, rules.window_months)
    passed = arcp.review_date < today
    mine = [f for f in forms if f.trainee_id == arcp.trainee_id and f.part == part
            and f.programme_membership_id is not None
            and f.programme_membership_id == arcp.programme_membership_id]
    latest = max((f.submitted_at for f in mine if f.submitted_at is not None), default=None)
    counted: list[dt.datetime] = []
    for f in mine:
        if f.lifecycle_state == "SUBMITTED" and f.submitted_at is not None:
            day = local_date(f.submitted_at, rules.zone)
            if start <= day and (day <= arcp.review_date or passed):
                counted.append(f.submitted_at)
    if counted:
        return Part(PartStatus.SUBMITTED, max(counted))
    states = {f.lifecycle_state for f in mine}
    for state, status in (("UNSUBMITTED", PartStatus.RETURNED), ("DRAFT", PartStatus.DRAFT),
                          ("DELETED", PartStatus.DELETED)):
        if state in states:
            return Part(status, latest)
    return Part(PartStatus.MISSING, latest)


def evaluate(arcp: Arcp, forms: Iterable[FormR], programme: Programme | None, person: Person | None,
             today: dt.date, rules: Rules = Rules()) -> Row:
    forms = list(forms)
    a = part_status(arcp, forms, "A", today, rules)
    b = part_status(arcp, forms, "B", today, rules)
    days = (arcp.review_date - today).days
    at_risk = days <= rules.at_risk_weeks * 7 and not (a.done and b.done)
    # the programme counts only while it belongs to the ARCP's trainee (a moved membership is the new
    # owner's; the ARCP then has no programme to show)
    prog = programme if programme is not None and programme.trainee_id == arcp.trainee_id else None
    return Row(
        arcp_id=arcp.id, trainee_id=arcp.trainee_id, trainee_name=person.name if person else None,
        programme_membership_id=arcp.programme_membership_id,
        programme_name=prog.programme_name if prog else None,
        programme_number=prog.programme_number if prog else None,
        local_office=prog.managing_deanery if prog else None,
        review_date=arcp.review_date, days_to_review=days, part_a=a, part_b=b, at_risk=at_risk)


def sort_key(row: Row) -> tuple[bool, int, str, str]:
    """At-risk rows first, then the nearest review, then trainee and ARCP (stable)."""
    return (not row.at_risk, row.days_to_review, row.trainee_id, row.arcp_id)


def build_rows(arcps: Iterable[Arcp], forms: Iterable[FormR], programmes: Mapping[str, Programme],
               persons: Mapping[str, Person], today: dt.date, rules: Rules = Rules()) -> list[Row]:
    """Every ARCP in the horizon, as report rows, at-risk first (``sort_key``)."""
    by_trainee: dict[str, list[FormR]] = defaultdict(list)
    for f in forms:
        by_trainee[f.trainee_id].append(f)
    rows = []
    for arcp in arcps:
        if not in_horizon(arcp, today, rules):
            continue
        person = persons.get(arcp.trainee_id)
        if person is not None and not person.is_real:
            continue
        prog = programmes.get(arcp.programme_membership_id) if arcp.programme_membership_id else None
        rows.append(evaluate(arcp, by_trainee.get(arcp.trainee_id, ()), prog, person, today, rules))
    rows.sort(key=sort_key)
    return rows


@dataclass(frozen=True, slots=True)
class ProgrammeRate:
    programme: str
    reviews: int
    both_submitted: int
    part_a: int
    part_b: int

    @property
    def rate(self) -> float:
        return self.both_submitted / self.reviews if self.reviews else 0.0


@dataclass(frozen=True, slots=True)
class Totals:
    reviews: int
    at_risk: int
    both_submitted: int
    overdue: int
    part_a_submitted: int
    part_b_submitted: int
    by_programme: tuple[ProgrammeRate, ...]


def totals(rows: Sequence[Row]) -> Totals:
    per: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        per[r.programme_name or "Programme not recorded"].append(r)
    rates = tuple(ProgrammeRate(name, len(rs), sum(r.both_submitted for r in rs), sum(r.part_a.done for r in rs),
                                sum(r.part_b.done for r in rs)) for name, rs in sorted(per.items()))
    return Totals(reviews=len(rows), at_risk=sum(r.at_risk for r in rows),
                  both_submitted=sum(r.both_submitted for r in rows), overdue=sum(r.overdue for r in rows),
                  part_a_submitted=sum(r.part_a.done for r in rows), part_b_submitted=sum(r.part_b.done for r in rows),
                  by_programme=rates)
