"""Pure: which Form R reminders are due, and what they say. No I/O, no clock of its own.

A trainee with a part not submitted gets a reminder at each milestone (default 8 and 2 weeks before
the review), once per (trainee, ARCP, milestone): the notification id says so and the mailer's
ledger holds it. Nothing is due once both parts are in, for a placeholder or dummy person, without
an address, or once the review date has passed.

Catching up: when several milestones have passed unsent (the service was down, or the ARCP was
scheduled late), only the one nearest the review is sent — marked late when its day has gone — and
the earlier ones are recorded as not sent, so a trainee never gets two reminders at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import jinja2

from services.formr.rules import Person, Row

KIND = "formr-reminder"


@dataclass(frozen=True, slots=True)
class Due:
    row: Row
    person: Person
    weeks: int
    due_on: dt.date
    late: bool
    skipped: tuple[tuple[int, dt.date], ...]  # earlier milestones passed unsent: recorded, never sent

    @property
    def notification_id(self) -> str:
        return notification_id(self.row.trainee_id, self.row.arcp_id, self.weeks)


def notification_id(trainee_id: str, arcp_id: str, weeks: int) -> str:
    return f"{trainee_id}:arcp-{arcp_id}:{KIND}-{weeks}w"


def due_reminders(rows: Iterable[Row], persons: Mapping[str, Person], today: dt.date,
                  weeks: Sequence[int] = (8, 2)) -> list[Due]:
    out = []
    milestones = sorted(set(weeks), reverse=True)  # furthest from the review first
    for row in rows:
        if row.both_submitted or row.days_to_review < 0:
            continue
        person = persons.get(row.trainee_id)
        if person is None or not person.is_real or not person.email:
            continue
        passed = [(w, row.review_date - dt.timedelta(weeks=w)) for w in milestones]
        passed = [(w, d) for w, d in passed if d <= today]
        if not passed:
            continue
        w, d = passed[-1]  # the nearest the review
        out.append(Due(row, person, w, d, today > d, tuple(passed[:-1])))
    return out


def long_date(day: dt.date) -> str:
    return f"{day.day} {day:%B %Y}"


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_TEXT_ENV = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined, trim_blocks=True,  # noqa: S701  the plain-text part: never read as HTML
                               lstrip_blocks=True, keep_trailing_newline=True)

_TEXT = """{{ greeting }},

Your Form R {{ missing }} {{ verb }} not been submitted for your {{ programme }} programme.
Your ARCP (Annual Review of Competence Progression) is on {{ review }}.

Submit your Form R {{ missing }} at {{ submit_url }}

If you have questions, contact {{ contact_name }}{% if contact_email %} at {{ contact_email }}{% endif %}{% if contact_url %} ({{ contact_url }}){% endif %}.

This reminder is sent automatically. Please do not reply to this email.
"""  # noqa: E501  the template's lines are the email's: wrapping one would change the text

_HTML = """<!DOCTYPE html>
<html lang="en-GB"><head><meta charset="utf-8"><title>{{ subject }}</title></head>
<body style="font-family: Arial, sans-serif; color: #212b32; line-height: 1.5;">
<p>{{ greeting }},</p>
<p>Your Form R {{ missing }} {{ verb }} not been submitted for your {{ programme }} programme.
Your ARCP (Annual Review of Competence Progression) is on <strong>{{ review }}</strong>.</p>
<p><a href="{{ submit_url }}">Submit your Form R {{ missing }}</a></p>
<p>If you have questions, contact {{ contact_name }}{% if contact_email %} at <a href="mailto:{{ contact_email }}">{{ contact_email }}</a>{% endif %}{% if contact_url %} (<a href="{{ contact_url }}">{{ contact_url }}</a>){% endif %}.</p>
<p style="color: #4c6272; font-size: 0.9em;">This reminder is sent automatically. Please do not reply to this email.</p>
</body></html>
"""  # noqa: E501  the template's lines are the email's: wrapping one would change the text


@dataclass(frozen=True, slots=True)
class ReminderText:
    subject: str
    text: str
    html: str


def compose(due: Due, *, submit_url: str, contact_name: str, contact_email: str | None,
            contact_url: str | None) -> ReminderText:
    p, row = due.person, due.row
    missing_parts = row.missing_parts
    missing = "Part A and Part B" if len(missing_parts) == 2 else f"Part {missing_parts[0]}"
    greeting = f"Dear {p.title} {p.surname}" if p.title and p.surname else "Dear doctor"
    review = long_date(row.review_date)
    subject = f"Submit your Form R {missing} before your ARCP on {review}"
    ctx = {"greeting": greeting, "missing": missing, "verb": "have" if len(missing_parts) == 2 else "has",
           "programme": row.programme_name or "training", "review": review, "submit_url": submit_url,
           "contact_name": contact_name, "contact_email": contact_email, "contact_url": contact_url,
           "subject": subject}
    return ReminderText(subject, _TEXT_ENV.from_string(_TEXT).render(ctx), _ENV.from_string(_HTML).render(ctx))
