"""Which Form R reminders are due (services/formr/reminders.py), and what they say."""

from __future__ import annotations

import datetime as dt

from services.formr.reminders import compose, due_reminders, notification_id
from services.formr.rules import Arcp, FormR, Person, Programme, build_rows

TODAY = dt.date(2026, 12, 1)
PROG = {"pm": Programme("pm", "t1", "Cardiology", "EOE1", "Health Education England East of England")}
ADA = {"t1": Person("t1", "DR in Training", "Dr", "Ada", "Okafor", "ada@example.nhs.uk")}


def rows(review_in_days: int, forms: list[FormR] | None = None, today: dt.date = TODAY,
         people: dict[str, Person] | None = None) -> list:
    arcp = Arcp("a1", "t1", "pm", TODAY + dt.timedelta(days=review_in_days))
    return build_rows([arcp], forms or [], PROG, people if people is not None else ADA, today)


def due(review_in_days: int, today: dt.date = TODAY, forms: list[FormR] | None = None,
        people: dict[str, Person] | None = None) -> list:
    p = people if people is not None else ADA
    return due_reminders(rows(review_in_days, forms, today, p), p, today, (8, 2))


def test_milestones_on_their_day() -> None:
    assert due(8 * 7 + 1) == []
    (d,) = due(8 * 7)
    assert (d.weeks, d.late, d.skipped) == (8, False, ())
    assert d.notification_id == notification_id("t1", "a1", 8) == "t1:arcp-a1:formr-reminder-8w"
    (d,) = due(3 * 7)  # between milestones: the 8-week one is still the one due (claimed once by the ledger)
    assert d.weeks == 8 and d.late
    (d,) = due(2 * 7)
    assert (d.weeks, d.late, [w for w, _ in d.skipped]) == (2, False, [8])


def test_catch_up_after_downtime_sends_the_nearest_late_once() -> None:
    (d,) = due(10)  # both milestones passed while down: the 2-week one goes, late; the 8-week one is skipped
    assert d.weeks == 2 and d.late and [w for w, _ in d.skipped] == [8]


def test_nothing_when_both_parts_are_in_or_review_passed_or_not_a_person() -> None:
    done = [FormR(f"f{p}", "t1", p, "pm", "SUBMITTED", dt.datetime(2026, 11, 1, tzinfo=dt.UTC)) for p in "AB"]
    assert due(14, forms=done) == []
    assert due(-1) == []
    assert due(14, people={"t1": Person("t1", "Placeholder", "Dr", "A", "B", "a@example.nhs.uk")}) == []
    assert due(14, people={"t1": Person("t1", "Dummy Record", "Dr", "A", "B", "a@example.nhs.uk")}) == []
    assert due(14, people={"t1": Person("t1", "DR in Training", "Dr", "A", "B", None)}) == []
    assert due(14, people={}) == []


def test_one_part_missing_says_which() -> None:
    a = [FormR("fa", "t1", "A", "pm", "SUBMITTED", dt.datetime(2026, 11, 1, tzinfo=dt.UTC))]
    (d,) = due(14, forms=a)
    text = compose(d, submit_url="https://example.nhs.uk/formr", contact_name="East of England", contact_email=None,
                   contact_url="https://example.nhs.uk/contact")
    assert text.subject == "Submit your Form R Part B before your ARCP on 15 December 2026"
    assert "Dear Dr Okafor" in text.text and "Part B has not been submitted" in text.text
    assert "Cardiology" in text.text and "Part A" not in text.text


def test_both_missing_and_escaped_html() -> None:
    people = {"t1": Person("t1", "DR in Training", "Dr", "Ada", "<b>O'Kafor</b>", "ada@example.nhs.uk")}
    (d,) = due(14, people=people)
    text = compose(d, submit_url="https://example.nhs.uk/formr", contact_name="Office",
                   contact_email="lo@example.nhs.uk", contact_url=None)
    assert "Part A and Part B have not been submitted" in text.text
    assert "<b>O" not in text.html and "&lt;b&gt;" in text.html
