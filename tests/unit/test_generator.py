"""The demo generator: deterministic for a seed, shaped like shared/data-model.md, fast at 1,000 trainees."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import date

import pytest

from services.demo import refdata
from services.demo.generator import (
    DEFAULT_AS_OF,
    ROW_TYPES,
    Population,
    first_wednesday,
    generate,
    rotation_day_edits,
)
from services.demo.script import plan_day

N = 1000


@pytest.fixture(scope="module")
def pop() -> Population:
    return generate(N, seed=7)


def _per_trainee(rows: list[tuple[object, ...]]) -> Counter[str]:
    return Counter(str(r.trainee_id) for r in rows)


def test_same_seed_same_rows(pop: Population) -> None:
    again = generate(N, seed=7)
    for table, rows in pop.tables():
        assert getattr(again, table) == rows, table


def test_other_seed_other_rows(pop: Population) -> None:
    assert generate(N, seed=8).personal_details != pop.personal_details


def test_prefix_of_a_larger_population_is_not_required_but_ids_are_unique(pop: Population) -> None:
    for table, rows in pop.tables():
        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids)), table


def test_thousand_trainees_is_fast() -> None:
    started = time.perf_counter()
    generate(N, seed=1)
    assert time.perf_counter() - started < 2.0


def test_row_types_match_the_data_model_columns() -> None:
    assert set(ROW_TYPES) == {"personal_details", "programme_membership", "curriculum_membership", "placement",
                              "form_r", "arcp"}
    assert ROW_TYPES["personal_details"]._fields[0] == "trainee_id"  # type: ignore[attr-defined]
    assert "whole_time_equivalent" in ROW_TYPES["placement"]._fields  # type: ignore[attr-defined]


def test_personal_details_shape(pop: Population) -> None:
    people = pop.personal_details
    assert len(people) == N
    assert all(p.trainee_id.isdigit() for p in people)
    assert all(re.fullmatch(r"[a-z]+\.[a-z]+\d+@example\.nhs\.uk", p.email) for p in people)
    assert len({p.email for p in people}) == N
    assert all(p.gmc_number is None or re.fullmatch(r"\d{7}", p.gmc_number) for p in people)
    assert all(re.fullmatch(r"[A-Z]{1,2}\d{1,2} \d[A-Z]{2}", p.post_code) for p in people)
    assert all(p.mobile_number is None or p.mobile_number.startswith("07700 900") for p in people)
    titles = Counter(p.title for p in people)
    assert set(titles) <= {t for t, _ in refdata.TITLES}
    assert titles["Dr"] / N > 0.8
    roles = Counter(p.role for p in people)
    assert roles["DR in Training"] / N > 0.95
    assert roles["Placeholder"] + roles["Dummy Record"] > 0


def test_cardinalities(pop: Population) -> None:
    trainees = {p.trainee_id for p in pop.personal_details}
    programmes = _per_trainee(pop.programme_membership)  # type: ignore[arg-type]
    placements = _per_trainee(pop.placement)  # type: ignore[arg-type]
    assert set(programmes) == trainees and set(placements) == trainees
    assert set(programmes.values()) == {1, 2}
    assert min(placements.values()) >= 2 and max(placements.values()) <= 6
    curricula = Counter(c.programme_membership_id for c in pop.curriculum_membership)
    assert {pm.id for pm in pop.programme_membership} == set(curricula)
    assert set(curricula.values()) <= {1, 2} and 2 in curricula.values()
    assert {a.programme_membership_id for a in pop.arcp} == {pm.id for pm in pop.programme_membership}


def test_programmes_and_placements_look_real(pop: Population) -> None:
    offices = {o.name for o in refdata.LOCAL_OFFICES}
    for pm in pop.programme_membership:
        assert pm.managing_deanery in offices
        assert re.fullmatch(r"[A-Z]{3}\d{4}", pm.programme_number)
        assert pm.programme_membership_type in {"SUBSTANTIVE", "LAT", "MILITARY", "VISITOR"}
        assert pm.start_date < pm.end_date
    types = Counter(p.placement_type for p in pop.placement)
    assert types["In post"] / len(pop.placement) > 0.75
    assert types["In post - Acting up"] > 0 and types["Parental leave"] > 0
    assert {p.whole_time_equivalent for p in pop.placement} <= {"1.00", "0.80", "0.60", "0.50"}
    assert all(re.fullmatch(r"(F|CT|ST|DCT)\d", p.grade) for p in pop.placement)
    assert any(p.site_known_as for p in pop.placement) and any(p.site_known_as is None for p in pop.placement)
    assert all(p.start_date <= p.end_date for p in pop.placement)


def test_every_trainee_has_a_placement_on_the_day(pop: Population) -> None:
    current = {p.trainee_id for p in pop.placement if p.start_date <= DEFAULT_AS_OF <= p.end_date}
    assert current == {p.trainee_id for p in pop.personal_details}


def test_forms_and_arcps(pop: Population) -> None:
    states = Counter(f.lifecycle_state for f in pop.form_r)
    assert set(states) <= {"DRAFT", "SUBMITTED", "UNSUBMITTED", "DELETED"}
    assert states["SUBMITTED"] > states["DRAFT"] > 0
    assert all((f.submitted_at is not None) == (f.lifecycle_state in ("SUBMITTED", "UNSUBMITTED")) for f in pop.form_r)
    assert all(a.outcome is None for a in pop.arcp if a.review_date >= DEFAULT_AS_OF)
    past = [a for a in pop.arcp if a.review_date < DEFAULT_AS_OF]
    awaiting = [a for a in past if a.outcome is None]  # a recent panel whose outcome is not recorded yet
    assert awaiting and all((DEFAULT_AS_OF - a.review_date).days <= 30 for a in awaiting)
    assert len(awaiting) < len(past) / 5


def test_dates_follow_as_of_not_today() -> None:
    a = generate(50, seed=3, as_of=date(2030, 3, 1))
    assert all(p.start_date.year >= 2025 for p in a.placement)
    assert generate(50, seed=3, as_of=date(2030, 3, 1)) == a


def test_first_wednesday() -> None:
    assert first_wednesday(2026, 8) == date(2026, 8, 5)
    assert first_wednesday(2027, 2) == date(2027, 2, 3)


def test_rotation_day_edits(pop: Population) -> None:
    edits = rotation_day_edits(pop, seed=1, fraction=0.5)
    assert edits.day == date(2027, 2, 3)
    assert 0.4 * N < len(edits) < 0.6 * N
    existing = {p.id: p for p in pop.placement}
    assert all(u.id in existing and u != existing[u.id] for u in edits.updates)
    assert not {i.id for i in edits.inserts} & set(existing)
    assert rotation_day_edits(pop, seed=1, fraction=0.5) == edits
    assert len(rotation_day_edits(pop, seed=1, fraction=0.0)) == 0


def test_day_script_covers_the_cases(pop: Population) -> None:
    script = plan_day(pop, day=DEFAULT_AS_OF, seed=1, run_label="t")
    names = [s.name for s in script.steps]
    for wanted in ("site change", "grade and WTE change", "edit undone", "created then deleted", "email change",
                   "placement moved", "new programme membership", "placement removed", "placeholder person",
                   "not in post"):
        assert wanted in names
    assert 15 <= len(script.trainees()) <= 25
    emails = script.expected_emails()
    moved = next(s for s in script.steps if s.name == "placement moved")
    assert sorted(c.kind for cs in moved.expected.values() for c in cs) == ["created", "deleted"]
    email_change = next(s for s in script.steps if s.name == "email change")
    (tid,) = email_change.expected
    assert emails[tid] == 2 and tid in script.old_addresses
    for name in ("edit undone", "created then deleted", "placeholder person", "not in post"):
        (tid,) = next(s for s in script.steps if s.name == name).expected
        assert emails[tid] == 0, name
    assert plan_day(pop, day=DEFAULT_AS_OF, seed=1, run_label="t") == script


def test_day_script_form_r_steps_take_a_trainee_out_of_at_risk_and_book_a_reminder(pop: Population) -> None:
    import datetime as dt

    from services.demo.formr_script import _report_rows
    from services.formr import reminders, rules

    script = plan_day(pop, day=DEFAULT_AS_OF, seed=1, run_label="t")
    submitted = next(s for s in script.steps if s.name == "Form R submitted")
    booked = next(s for s in script.steps if s.name == "ARCP booked")
    (x,) = submitted.expected
    (y,) = booked.expected
    assert script.leaves_at_risk == (x,) and script.reminders == {y: 1}
    assert submitted.expected[x] == () and booked.expected[y] == ()  # neither table is in the digest
    rows = _report_rows(pop, DEFAULT_AS_OF)
    risky = next(r for r in rows if r.trainee_id == x and r.at_risk)
    assert y not in {r.trainee_id for r in rows}
    # the day as the rules see it: x's missing parts submitted, y's ARCP in two weeks
    now = dt.datetime.combine(DEFAULT_AS_OF, dt.time(10), dt.UTC)
    forms = [rules.FormR(str(f.id), f.trainee_id, f.part, str(f.programme_membership_id), f.lifecycle_state,
                         f.submitted_at) for f in pop.form_r]
    pm_x = risky.programme_membership_id
    for part in ("A", "B"):
        forms.append(rules.FormR(f"new-{part}", x, part, pm_x, "SUBMITTED", now))
    arcp = next(a for a in pop.arcp if a.id == risky.arcp_id)
    row_x = rules.evaluate(rules.Arcp(arcp.id, x, pm_x, arcp.review_date, arcp.outcome),
                           [f for f in forms if f.trainee_id == x], None, None, DEFAULT_AS_OF)
    assert not row_x.at_risk
    (_, query), = booked.statements
    review = query[3]
    assert review == DEFAULT_AS_OF + dt.timedelta(days=14)
    row_y = rules.evaluate(rules.Arcp("new", y, str(query[2]), review), [f for f in forms if f.trainee_id == y],
                           None, None, DEFAULT_AS_OF)
    person = next(p for p in pop.personal_details if p.trainee_id == y)
    (due,) = reminders.due_reminders([row_y], {y: rules.Person(y, person.role, email=person.email)}, DEFAULT_AS_OF)
    assert due.weeks == 2 and not due.late
