"""The Form R status rules (services/formr/rules.py): edge cases, then a reference model."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from services.formr.rules import (
    Arcp,
    FormR,
    PartStatus,
    Person,
    Programme,
    Rules,
    build_rows,
    evaluate,
    in_horizon,
    months_before,
    part_status,
    totals,
)

TODAY = dt.date(2026, 12, 1)
PM1, PM2 = "pm-1", "pm-2"


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


def arcp(days: int = 30, pm: str = PM1, trainee: str = "t1", id: str = "a1", outcome: str | None = None) -> Arcp:
    return Arcp(id, trainee, pm, TODAY + dt.timedelta(days=days), outcome)


def form(part: str, state: str, submitted: dt.date | None = None, pm: str = PM1, trainee: str = "t1",
         id: str | None = None) -> FormR:
    return FormR(id or f"{part}-{state}-{pm}-{submitted}", trainee, part, pm, state,
                 at(submitted) if submitted else None)


def status(a: Arcp, *forms: FormR, part: str = "A") -> PartStatus:
    return part_status(a, forms, part, TODAY).status


def test_no_form_is_missing() -> None:
    assert status(arcp()) is PartStatus.MISSING


def test_each_state() -> None:
    a = arcp()
    assert status(a, form("A", "DRAFT")) is PartStatus.DRAFT
    assert status(a, form("A", "UNSUBMITTED", TODAY)) is PartStatus.RETURNED
    assert status(a, form("A", "DELETED")) is PartStatus.DELETED
    assert status(a, form("A", "SUBMITTED", TODAY)) is PartStatus.SUBMITTED


def test_resubmission_after_unsubmitted() -> None:
    a = arcp()
    first = dt.date(2026, 10, 1)
    returned = form("A", "UNSUBMITTED", first, id="f")
    assert part_status(a, [returned], "A", TODAY).status is PartStatus.RETURNED
    assert part_status(a, [returned], "A", TODAY).latest_submission == at(first)
    again = form("A", "SUBMITTED", TODAY, id="f")  # the same form, submitted again: the latest wins
    p = part_status(a, [again], "A", TODAY)
    assert p.status is PartStatus.SUBMITTED and p.latest_submission == at(TODAY)


def test_deleted_after_submitted() -> None:
    p = part_status(arcp(), [form("A", "DELETED", dt.date(2026, 11, 1))], "A", TODAY)
    assert p.status is PartStatus.DELETED
    assert p.latest_submission == at(dt.date(2026, 11, 1))  # shown, but it no longer counts


def test_a_form_for_another_programme_or_trainee_does_not_count() -> None:
    a = arcp(pm=PM1)
    assert status(a, form("A", "SUBMITTED", TODAY, pm=PM2)) is PartStatus.MISSING
    assert status(a, form("A", "SUBMITTED", TODAY, trainee="t2")) is PartStatus.MISSING
    assert status(a, FormR("x", "t1", "A", None, "SUBMITTED", at(TODAY))) is PartStatus.MISSING
    assert status(a, form("B", "SUBMITTED", TODAY)) is PartStatus.MISSING  # the other part


def test_two_arcps_for_one_trainee() -> None:
    near = arcp(days=10, pm=PM1, id="near")
    far = arcp(days=100, pm=PM2, id="far")
    forms = [form("A", "SUBMITTED", TODAY, pm=PM1), form("B", "SUBMITTED", TODAY, pm=PM1),
             form("A", "DRAFT", pm=PM2)]
    rows = build_rows([far, near], forms, {}, {}, TODAY)
    assert [r.arcp_id for r in rows] == ["near", "far"]
    assert rows[0].both_submitted and not rows[0].at_risk
    assert rows[1].part_a.status is PartStatus.DRAFT and rows[1].part_b.status is PartStatus.MISSING
    assert not rows[1].at_risk  # 100 days away: not yet


def test_two_arcps_same_programme_a_year_apart() -> None:
    last = Arcp("last", "t1", PM1, TODAY - dt.timedelta(days=10), None)  # passed, no outcome yet
    nxt = Arcp("next", "t1", PM1, TODAY + dt.timedelta(days=355), None)
    old = form("A", "SUBMITTED", TODAY - dt.timedelta(days=20))
    assert status(last, old) is PartStatus.SUBMITTED
    assert status(nxt, old) is PartStatus.MISSING  # 375 days before the next review: last year's form


def test_a_submission_older_than_the_window() -> None:
    a = arcp(days=30)
    old_day = months_before(a.review_date, 12) - dt.timedelta(days=1)
    p = part_status(a, [form("A", "SUBMITTED", old_day)], "A", TODAY)
    assert p.status is PartStatus.MISSING and p.latest_submission == at(old_day)
    edge = months_before(a.review_date, 12)
    assert status(a, form("A", "SUBMITTED", edge)) is PartStatus.SUBMITTED
    assert part_status(a, [form("A", "SUBMITTED", old_day)], "A", TODAY,
                       Rules(window_months=13)).status is PartStatus.SUBMITTED


def test_window_uses_the_london_date() -> None:
    a = Arcp("a", "t1", PM1, dt.date(2027, 7, 15))  # the window opens on 15 July 2026, in summer time
    bst_after_midnight = dt.datetime(2026, 7, 14, 23, 30, tzinfo=dt.UTC)  # 00:30 on the 15th in London
    assert status(a, FormR("f", "t1", "A", PM1, "SUBMITTED", bst_after_midnight)) is PartStatus.SUBMITTED
    before = dt.datetime(2026, 7, 14, 22, 30, tzinfo=dt.UTC)  # 23:30 on the 14th in London
    assert status(a, FormR("f", "t1", "A", PM1, "SUBMITTED", before)) is PartStatus.MISSING


def test_a_review_moved_later_out_of_the_window() -> None:
    sub = form("A", "SUBMITTED", TODAY - dt.timedelta(days=300))
    assert status(arcp(days=30), sub) is PartStatus.SUBMITTED
    assert status(arcp(days=80), sub) is PartStatus.MISSING  # now 380 days before the review


def test_a_review_moved_earlier_before_the_submission() -> None:
    a = arcp(days=30)
    sub = FormR("f", "t1", "A", PM1, "SUBMITTED", at(TODAY + dt.timedelta(days=20)))  # a future-dated clock
    assert status(a, sub) is PartStatus.SUBMITTED
    assert status(arcp(days=10), sub) is PartStatus.MISSING  # submitted after the review


def test_after_a_passed_review_without_outcome_a_late_submission_counts() -> None:
    a = arcp(days=-5)
    assert status(a, form("A", "SUBMITTED", TODAY)) is PartStatus.SUBMITTED


def test_a_trainee_who_moves_programme() -> None:
    # the trainee left PM1 for PM2: the new ARCP is for PM2; Part A done for PM1 does not carry over
    new = arcp(days=20, pm=PM2, id="new")
    forms = [form("A", "SUBMITTED", TODAY - dt.timedelta(days=30), pm=PM1)]
    progs = {PM2: Programme(PM2, "t1", "Cardiology", "EOE1", "East of England")}
    (row,) = build_rows([new], forms, progs, {}, TODAY)
    assert row.part_a.status is PartStatus.MISSING and row.at_risk and row.local_office == "East of England"


def test_a_programme_moved_to_another_trainee_is_not_shown_for_the_old_one() -> None:
    a = arcp(days=20, pm=PM1)
    moved = Programme(PM1, "t2", "Cardiology", "EOE1", "East of England")
    row = evaluate(a, [], moved, None, TODAY)
    assert row.local_office is None and row.programme_name is None


def test_at_risk_threshold() -> None:
    done = [form("A", "SUBMITTED", TODAY), form("B", "SUBMITTED", TODAY)]
    assert evaluate(arcp(days=42), [], None, None, TODAY).at_risk
    assert not evaluate(arcp(days=43), [], None, None, TODAY).at_risk
    assert not evaluate(arcp(days=1), done, None, None, TODAY).at_risk
    assert evaluate(arcp(days=-3), done[:1], None, None, TODAY).at_risk  # passed, B missing
    assert evaluate(arcp(days=60), [], None, None, TODAY, Rules(at_risk_weeks=10)).at_risk


def test_horizon() -> None:
    assert in_horizon(arcp(days=0), TODAY)
    assert in_horizon(arcp(days=16 * 7), TODAY)
    assert not in_horizon(arcp(days=16 * 7 + 1), TODAY)
    assert in_horizon(arcp(days=-200), TODAY)  # no outcome yet
    assert not in_horizon(arcp(days=-1, outcome="1"), TODAY)
    assert in_horizon(arcp(days=200), TODAY, Rules(horizon_weeks=30))


def test_placeholder_and_dummy_persons_are_left_out() -> None:
    persons = {"t1": Person("t1", role="Placeholder"), "t2": Person("t2", role="Dummy Record"),
               "t3": Person("t3", role="DR in Training", forenames="Ada", surname="Okafor")}
    rows = build_rows([arcp(trainee=t, id=t) for t in ("t1", "t2", "t3")], [], {}, persons, TODAY)
    assert [(r.trainee_id, r.trainee_name) for r in rows] == [("t3", "Ada Okafor")]


def test_sorting_and_totals() -> None:
    arcps = [arcp(days=100, id="later", trainee="t1"), arcp(days=5, id="soon", trainee="t2"),
             arcp(days=40, id="risk", trainee="t3")]
    forms = [form(p, "SUBMITTED", TODAY, trainee="t2") for p in "AB"]
    rows = build_rows(arcps, forms, {}, {}, TODAY)
    assert [r.arcp_id for r in rows] == ["risk", "soon", "later"]
    t = totals(rows)
    assert (t.reviews, t.at_risk, t.both_submitted, t.part_a_submitted) == (3, 1, 1, 1)
    assert t.by_programme[0].programme == "Programme not recorded" and t.by_programme[0].reviews == 3


def test_months_before() -> None:
    assert months_before(dt.date(2027, 3, 31), 1) == dt.date(2027, 2, 28)
    assert months_before(dt.date(2028, 2, 29), 12) == dt.date(2027, 2, 28)
    assert months_before(dt.date(2027, 1, 15), 12) == dt.date(2026, 1, 15)


# --- a reference model: the rules written the obvious, slow way -------------------------------------

STATES = ("DRAFT", "SUBMITTED", "UNSUBMITTED", "DELETED")


def reference(a: Arcp, forms: list[FormR], part: str) -> PartStatus:
    start = months_before(a.review_date, 12)
    relevant = [f for f in forms if (f.trainee_id, f.part, f.programme_membership_id)
                == (a.trainee_id, part, a.programme_membership_id)]
    for f in relevant:
        if f.lifecycle_state == "SUBMITTED" and f.submitted_at is not None:
            d = f.submitted_at.astimezone(Rules().zone).date()
            if d >= start and (d <= a.review_date or a.review_date < TODAY):
                return PartStatus.SUBMITTED
    if any(f.lifecycle_state == "UNSUBMITTED" for f in relevant):
        return PartStatus.RETURNED
    if any(f.lifecycle_state == "DRAFT" for f in relevant):
        return PartStatus.DRAFT
    if any(f.lifecycle_state == "DELETED" for f in relevant):
        return PartStatus.DELETED
    return PartStatus.MISSING


forms_st = st.lists(st.builds(
    FormR, id=st.text(max_size=3), trainee_id=st.sampled_from(["t1", "t2"]), part=st.sampled_from("AB"),
    programme_membership_id=st.sampled_from([PM1, PM2, None]), lifecycle_state=st.sampled_from(STATES),
    submitted_at=st.one_of(st.none(), st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2027, 6, 1),
                                                   timezones=st.just(dt.UTC)))), max_size=8)


@settings(max_examples=400, deadline=None)
@given(forms=forms_st, days=st.integers(-400, 400), pm=st.sampled_from([PM1, PM2]))
def test_rules_agree_with_the_reference_model(forms: list[FormR], days: int, pm: str) -> None:
    a = arcp(days=days, pm=pm)
    row = evaluate(a, forms, None, None, TODAY)
    assert row.part_a.status is reference(a, forms, "A")
    assert row.part_b.status is reference(a, forms, "B")
    assert row.at_risk == (days <= 42 and not (row.part_a.done and row.part_b.done))
    rows = build_rows([a], forms, {}, {}, TODAY)
    assert len(rows) == int(days <= 16 * 7)  # no outcome: every past review stays in
