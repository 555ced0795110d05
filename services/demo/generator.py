"""A seeded, deterministic generator of trainee records in the shape of ``shared/data-model.md``.

``generate(n, seed)`` returns the same rows for the same arguments on every machine: every random
choice comes from one ``random.Random(seed)`` and every date is relative to ``as_of`` (a fixed day by
default, never today's date). Rows are NamedTuples whose field order is the table's column order, so
``load`` can ``COPY`` them straight into PostgreSQL. ``rotation_day_edits`` makes the bulk placement
edits of a rotation day for benchmarks.
"""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar

from services.demo import refdata as ref
from services.demo.rows import (
    ROW_TYPES,
    Arcp,
    CurriculumMembership,
    FormR,
    PersonalDetails,
    Placement,
    Population,
    ProgrammeMembership,
)

__all__ = ["DEFAULT_AS_OF", "ROW_TYPES", "Arcp", "CurriculumMembership", "FormR", "PersonalDetails", "Placement",
           "Population", "ProgrammeMembership", "RotationEdits", "email_local_part", "first_wednesday", "generate",
           "rotation_day_edits", "rotation_days"]

DEFAULT_AS_OF = date(2026, 11, 25)
_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------------- helpers

_CUMULATIVE: dict[int, tuple[list[object], list[int]]] = {}


def _weighted(rng: random.Random, options: Sequence[tuple[_T, int]]) -> _T:
    """One of ``options`` by weight (the option tables are module constants, so cached by identity)."""
    cached = _CUMULATIVE.get(id(options))
    if cached is None:
        cached = _CUMULATIVE[id(options)] = ([v for v, _ in options], list(itertools.accumulate(w for _, w in options)))
    values, cumulative = cached
    return values[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]  # type: ignore[return-value]


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def first_wednesday(year: int, month: int) -> date:
    """The first Wednesday of a month: the rotation day in February and August."""
    first = date(year, month, 1)
    return first + timedelta(days=(2 - first.weekday()) % 7)


def rotation_days(around: date, years: int = 4) -> list[date]:
    """Rotation days (first Wednesday of February and August) from ``years`` before to after ``around``."""
    return [first_wednesday(y, m) for y in range(around.year - years, around.year + years + 1) for m in (2, 8)]


def _at(day: date, rng: random.Random) -> datetime:
    """A working-hours instant on a day, in UTC."""
    return datetime.combine(day, time(8, 0), UTC) + timedelta(seconds=rng.randrange(10 * 3600))


def _postcode(rng: random.Random, town: ref.Town) -> str:
    letters = ref.POSTCODE_LETTERS
    return (f"{town.postcode_area}{rng.choice(town.districts)} "
            f"{rng.randrange(10)}{rng.choice(letters)}{rng.choice(letters)}")


def email_local_part(forenames: str, surname: str) -> str:
    def clean(s: str) -> str:
        return "".join(ch for ch in s.lower() if ch.isalnum())

    return f"{clean(forenames)}.{clean(surname)}"


# ---------------------------------------------------------------------------------------------- generator

class _Ids:
    """Unique, numeric-string ids that grow with small random gaps, like TIS ids."""

    def __init__(self, rng: random.Random, start: int) -> None:
        self._rng = rng
        self._next = start

    def take(self) -> str:
        value = self._next
        self._next += 1 + self._rng.randrange(3)
        return str(value)


class _Generator:
    def __init__(self, seed: int, as_of: date) -> None:
        self.rng = random.Random(seed)  # noqa: S311  seeded on purpose: the same seed makes the same population
        self.as_of = as_of
        self.pop = Population(seed=seed, as_of=as_of)
        self.trainee_ids = _Ids(self.rng, 10_000 + self.rng.randrange(1_000))
        self.placement_ids = _Ids(self.rng, 300_000 + self.rng.randrange(1_000))
        self.curriculum_ids = _Ids(self.rng, 1_000_000)
        self.arcp_ids = _Ids(self.rng, 50_000)
        self.email_counts: dict[str, int] = {}
        self.rotations = rotation_days(as_of)
        self.programme_numbers: dict[tuple[str, str], str] = {}
        self.programmes_by_id: dict[uuid.UUID, ref.Programme] = {}

    def trainee(self) -> None:
        rng = self.rng
        office = rng.choice(ref.LOCAL_OFFICES)
        tid = self.trainee_ids.take()
        self.pop.personal_details.append(self._person(tid, office))
        n_programmes = 1 if rng.random() < 0.8 else 2
        n_placements = rng.randint(max(2, n_programmes), 6)
        current = rng.randrange(n_placements)  # index of the placement that contains as_of
        first_rotation = self._current_rotation() - current
        per_programme = self._split(n_placements, n_programmes)
        offset = 0
        for k, count in enumerate(per_programme):
            pm = self._programme(tid, office, first_rotation + offset, count, last=k == n_programmes - 1)
            self._placements(tid, office, pm, first_rotation + offset, count)
            self._forms_and_arcp(tid, pm)
            offset += count

    def _current_rotation(self) -> int:
        return max(i for i, d in enumerate(self.rotations) if d <= self.as_of)

    def _split(self, n_placements: int, n_programmes: int) -> list[int]:
        if n_programmes == 1:
            return [n_placements]
        first = self.rng.randint(1, n_placements - 1)
        return [first, n_placements - first]

    def _person(self, tid: str, office: ref.LocalOffice) -> PersonalDetails:
        rng = self.rng
        forenames, surname = rng.choice(ref.FORENAMES), rng.choice(ref.SURNAMES)
        local = email_local_part(forenames, surname)
        n = self.email_counts[local] = self.email_counts.get(local, 0) + 1
        town = rng.choice(office.towns)
        return PersonalDetails(
            trainee_id=tid,
            role=_weighted(rng, ref.ROLES),
            title=_weighted(rng, ref.TITLES),
            forenames=forenames,
            surname=surname,
            known_as=forenames[:3] if rng.random() < 0.05 else None,
            email=f"{local}{n}@example.nhs.uk",
            telephone_number=(f"{rng.choice(ref.LANDLINE_PREFIXES)}{rng.randrange(1000):03d}"
                              if rng.random() < 0.4 else None),
            mobile_number=f"{ref.MOBILE_PREFIX}{rng.randrange(1000):03d}" if rng.random() < 0.95 else None,
            address1=f"{rng.randint(1, 180)} {rng.choice(ref.STREET_NAMES)}",
            address2=f"Flat {rng.randint(1, 40)}" if rng.random() < 0.25 else None,
            address3=town.name,
            address4=town.county,
            post_code=_postcode(rng, town),
            gmc_number=f"{rng.randrange(6_000_000, 7_999_999):07d}" if rng.random() < 0.97 else None,
            updated_at=_at(self.as_of - timedelta(days=rng.randrange(1, 700)), rng),
        )

    def _programme(self, tid: str, office: ref.LocalOffice, first_rotation: int, count: int,
                   *, last: bool) -> ProgrammeMembership:
        rng = self.rng
        programme: ref.Programme = _weighted(rng, ref.PROGRAMMES)
        start = self.rotations[first_rotation]
        years = max(len(programme.grades), (count + 1) // 2)
        end = first_wednesday(start.year + years, start.month) - timedelta(days=1)
        if not last:  # an earlier programme ends where the next one's placements begin
            end = self.rotations[first_rotation + count] - timedelta(days=1)
        key = (office.code, programme.name)
        number = self.programme_numbers.setdefault(key, f"{office.code}{rng.randrange(1000, 9999)}")
        pm = ProgrammeMembership(
            id=_uuid(rng), trainee_id=tid, programme_name=programme.name, programme_number=number,
            managing_deanery=office.name, designated_body=office.designated_body,
            programme_membership_type=_weighted(rng, ref.MEMBERSHIP_TYPES), start_date=start, end_date=end,
            updated_at=_at(start - timedelta(days=rng.randrange(30, 120)), rng),
        )
        self.pop.programme_membership.append(pm)
        self._curricula(tid, pm, programme)
        self.programmes_by_id[pm.id] = programme
        return pm

    def _curricula(self, tid: str, pm: ProgrammeMembership, programme: ref.Programme) -> None:
        rng = self.rng
        n = len(programme.curricula) if len(programme.curricula) == 1 or rng.random() < 0.85 else 1
        for name in programme.curricula[:n]:
            self.pop.curriculum_membership.append(CurriculumMembership(
                id=self.curriculum_ids.take(), trainee_id=tid, programme_membership_id=pm.id,
                curriculum_name=name, curriculum_sub_type=programme.sub_type, specialty=name,
                start_date=pm.start_date, end_date=pm.end_date, updated_at=pm.updated_at,
            ))

    def _placements(self, tid: str, office: ref.LocalOffice, pm: ProgrammeMembership,
                    first_rotation: int, count: int) -> None:
        rng = self.rng
        programme = self.programmes_by_id[pm.id]
        wte = _weighted(rng, ref.WTE)
        for i in range(count):
            start = self.rotations[first_rotation + i]
            end = self.rotations[first_rotation + i + 1] - timedelta(days=1)
            trust = rng.choice(office.trusts)
            site = rng.choice(trust.sites)
            grade = programme.grades[min(i // 2, len(programme.grades) - 1)]
            sub = rng.choice(programme.sub_specialties) if programme.sub_specialties and rng.random() < 0.3 else None
            self.pop.placement.append(Placement(
                id=self.placement_ids.take(), trainee_id=tid, placement_type=_weighted(rng, ref.PLACEMENT_TYPES),
                start_date=start, end_date=end, grade=grade, specialty=programme.curricula[0], sub_specialty=sub,
                site=site.name, site_known_as=site.known_as, site_location=site.location,
                employing_body=office.lead_employer or trust.name, training_body=trust.name,
                whole_time_equivalent=wte, owner=office.name,
                updated_at=_at(start - timedelta(days=rng.randrange(14, 90)), rng),
            ))

    def _forms_and_arcp(self, tid: str, pm: ProgrammeMembership) -> None:
        rng = self.rng
        review = self.as_of + timedelta(days=rng.randrange(-180, 270))
        for part in ("A", "B"):
            state = _weighted(rng, ref.FORM_STATES)
            if state is None:
                continue
            revision = rng.randint(1, 2) if state == "UNSUBMITTED" else rng.randint(0, 1)
            touched = _at(self.as_of - timedelta(days=rng.randrange(1, 400)), rng)
            submitted = touched if state in ("SUBMITTED", "UNSUBMITTED") else None
            self.pop.form_r.append(FormR(
                id=_uuid(rng), trainee_id=tid, part=part, programme_membership_id=pm.id,
                is_arcp=rng.random() < 0.9, lifecycle_state=state, submitted_at=submitted,
                revision=revision, updated_at=touched,
            ))
        outcome = _weighted(rng, ref.ARCP_OUTCOMES) if review < self.as_of else None
        if outcome is not None and (self.as_of - review).days <= 30 and rng.random() < 0.4:
            outcome = None  # a panel held recently whose outcome is not recorded yet (still in the report)
        self.pop.arcp.append(Arcp(
            id=self.arcp_ids.take(), trainee_id=tid, programme_membership_id=pm.id, review_date=review,
            outcome=outcome, updated_at=_at(min(review, self.as_of) - timedelta(days=rng.randrange(1, 60)), rng),
        ))


def generate(n_trainees: int, seed: int, *, as_of: date = DEFAULT_AS_OF) -> Population:
    """``n_trainees`` trainees with all their records; the same arguments give the same rows."""
    if n_trainees < 0:
        raise ValueError("n_trainees must be >= 0")
    gen = _Generator(seed, as_of)
    for _ in range(n_trainees):
        gen.trainee()
    return gen.pop


# ---------------------------------------------------------------------------------------------- rotation day

@dataclass(frozen=True)
class RotationEdits:
    """Bulk placement edits of a rotation day: full new rows (updates keep their id)."""

    day: date
    updates: list[Placement]
    inserts: list[Placement]

    def __len__(self) -> int:
        return len(self.updates) + len(self.inserts)


def _next_rotation(as_of: date) -> date:
    return min(d for d in rotation_days(as_of) if d > as_of)


def _edit_placement(rng: random.Random, p: Placement, office: ref.LocalOffice) -> Placement:
    choice = rng.random()
    if choice < 0.45:  # moved to another site, maybe another trust
        trust = rng.choice(office.trusts)
        site = rng.choice(trust.sites)
        return p._replace(site=site.name, site_known_as=site.known_as, site_location=site.location,
                          training_body=trust.name, employing_body=office.lead_employer or trust.name)
    if choice < 0.65:
        return p._replace(whole_time_equivalent=rng.choice([w for w, _ in ref.WTE if w != p.whole_time_equivalent]))
    if choice < 0.85:
        return p._replace(end_date=p.end_date + timedelta(days=rng.choice((-28, -14, 14, 28, 56))))
    return p._replace(start_date=p.start_date + timedelta(days=rng.choice((-7, 7, 14))))


def rotation_day_edits(population: Population, seed: int, fraction: float) -> RotationEdits:
    """Edits for ``fraction`` of the trainees on the next rotation day after ``population.as_of``:
    mostly updates to the placement they rotate into (site, WTE, dates), some new placements."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be within [0, 1]")
    rng = random.Random(seed)  # noqa: S311  seeded on purpose: the same seed makes the same edits
    day = _next_rotation(population.as_of)
    offices = {o.name: o for o in ref.LOCAL_OFFICES}
    by_trainee: dict[str, list[Placement]] = {}
    for p in population.placement:
        by_trainee.setdefault(p.trainee_id, []).append(p)
    next_id = max((int(p.id) for p in population.placement), default=300_000) + 1
    updates: list[Placement] = []
    inserts: list[Placement] = []
    stamp = datetime.combine(day, time(9, 0), UTC)
    for pd in population.personal_details:
        if rng.random() >= fraction:
            continue
        placements = by_trainee.get(pd.trainee_id, [])
        target = next((p for p in placements if p.start_date >= day), None) or (placements[-1] if placements else None)
        if target is None:
            continue
        office = offices[target.owner]
        if rng.random() < 0.2:
            new = _edit_placement(rng, target, office)._replace(
                id=str(next_id), start_date=day,
                end_date=first_wednesday(day.year + (day.month == 8), 2 if day.month == 8 else 8) - timedelta(days=1),
                updated_at=stamp)
            next_id += 1
            inserts.append(new)
        else:
            updates.append(_edit_placement(rng, target, office)._replace(updated_at=stamp))
    return RotationEdits(day=day, updates=updates, inserts=inserts)
