"""Row types of the ``tss`` schema (shared/data-model.md), as NamedTuples in column order, and the
Population that holds a generated (or read-back) set of them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import NamedTuple


class PersonalDetails(NamedTuple):
    trainee_id: str
    role: str
    title: str
    forenames: str
    surname: str
    known_as: str | None
    email: str
    telephone_number: str | None
    mobile_number: str | None
    address1: str
    address2: str | None
    address3: str | None
    address4: str | None
    post_code: str
    gmc_number: str | None
    updated_at: datetime


class ProgrammeMembership(NamedTuple):
    id: uuid.UUID
    trainee_id: str
    programme_name: str
    programme_number: str
    managing_deanery: str
    designated_body: str
    programme_membership_type: str
    start_date: date
    end_date: date
    updated_at: datetime


class CurriculumMembership(NamedTuple):
    id: str
    trainee_id: str
    programme_membership_id: uuid.UUID
    curriculum_name: str
    curriculum_sub_type: str
    specialty: str
    start_date: date
    end_date: date
    updated_at: datetime


class Placement(NamedTuple):
    id: str
    trainee_id: str
    placement_type: str
    start_date: date
    end_date: date
    grade: str
    specialty: str
    sub_specialty: str | None
    site: str
    site_known_as: str | None
    site_location: str
    employing_body: str
    training_body: str
    whole_time_equivalent: str
    owner: str
    updated_at: datetime


class FormR(NamedTuple):
    id: uuid.UUID
    trainee_id: str
    part: str
    programme_membership_id: uuid.UUID
    is_arcp: bool
    lifecycle_state: str
    submitted_at: datetime | None
    revision: int
    updated_at: datetime


class Arcp(NamedTuple):
    id: str
    trainee_id: str
    programme_membership_id: uuid.UUID
    review_date: date
    outcome: str | None
    updated_at: datetime


#: table name -> row type, in an order that satisfies foreign keys when loading
ROW_TYPES: dict[str, type[tuple[object, ...]]] = {
    "personal_details": PersonalDetails,
    "programme_membership": ProgrammeMembership,
    "curriculum_membership": CurriculumMembership,
    "placement": Placement,
    "form_r": FormR,
    "arcp": Arcp,
}


@dataclass(frozen=True)
class Population:
    """Every row of a generated population, per table, in generation order."""

    seed: int
    as_of: date
    personal_details: list[PersonalDetails] = field(default_factory=list)
    programme_membership: list[ProgrammeMembership] = field(default_factory=list)
    curriculum_membership: list[CurriculumMembership] = field(default_factory=list)
    placement: list[Placement] = field(default_factory=list)
    form_r: list[FormR] = field(default_factory=list)
    arcp: list[Arcp] = field(default_factory=list)

    def tables(self) -> Iterator[tuple[str, Sequence[tuple[object, ...]]]]:
        """(table, rows) in foreign-key order."""
        for name in ROW_TYPES:
            yield name, getattr(self, name)

    def counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.tables()}
