"""Words for the email: field labels, entity names and the display of values and dates.

Everything here follows content.md: labels in words, dates as ``24 November 2026``, times in UK
local time with am/pm, empty values as "not recorded", personal contact details masked.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Final
from zoneinfo import ZoneInfo

from services.notifier.mask import mask_address_line, mask_email, mask_phone, mask_postcode

__all__ = [
    "DATE_FIELDS",
    "ENTITY_ORDER",
    "FIELD_LABELS",
    "LONDON",
    "MASKED_FIELDS",
    "NOT_RECORDED",
    "clean_text",
    "display_value",
    "format_date",
    "format_day",
    "format_instant",
    "format_time",
    "parse_day",
]

LONDON: Final = ZoneInfo("Europe/London")
NOT_RECORDED: Final = "not recorded"

#: Sections appear in this order (content.md): personal details, programmes, curricula, placements.
ENTITY_ORDER: Final[tuple[str, ...]] = (
    "personal_details",
    "programme_membership",
    "curriculum_membership",
    "placement",
)

#: Every notifying field of data-model.md, in the order rows are shown.  Fields not listed here are
#: never shown (they are not notifying, or unknown to this version).
FIELD_LABELS: Final[dict[str, dict[str, str]]] = {
    "personal_details": {
        "title": "Title",
        "forenames": "First names",
        "surname": "Surname",
        "known_as": "Known as",
        "gmc_number": "GMC number",
        "email": "Email address",
        "telephone_number": "Telephone number",
        "mobile_number": "Mobile number",
        "address1": "Address line 1",
        "address2": "Address line 2",
        "address3": "Address line 3",
        "address4": "Address line 4",
        "post_code": "Postcode",
    },
    "programme_membership": {
        "programme_name": "Programme",
        "programme_number": "Programme number",
        "programme_membership_type": "Type of programme membership",
        "managing_deanery": "Local office",
        "designated_body": "Designated body",
        "start_date": "Start date",
        "end_date": "End date",
    },
    "curriculum_membership": {
        "curriculum_name": "Curriculum",
        "specialty": "Specialty",
        "start_date": "Start date",
        "end_date": "End date",
    },
    "placement": {
        "site_known_as": "Site (known as)",
        "site": "Site",
        "site_location": "Site location",
        "start_date": "Start date",
        "end_date": "End date",
        "placement_type": "Placement type",
        "grade": "Grade",
        "specialty": "Specialty",
        "sub_specialty": "Sub-specialty",
        "whole_time_equivalent": "Whole time equivalent",
        "employing_body": "Employing organisation",
        "training_body": "Host organisation",
    },
}

DATE_FIELDS: Final = frozenset({"start_date", "end_date"})

_PHONE: Final = frozenset({"telephone_number", "mobile_number"})
_ADDRESS: Final = frozenset({"address1", "address2", "address3", "address4"})
#: Personal-details fields whose values are shown only masked.
MASKED_FIELDS: Final = _PHONE | _ADDRESS | {"post_code", "email"}

_MEMBERSHIP_TYPES: Final = {
    "SUBSTANTIVE": "Substantive",
    "LAT": "Locum appointment for training (LAT)",
    "MILITARY": "Military",
    "VISITOR": "Visitor",
}

_MONTHS: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

_ISO_DATE_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Control characters (C0, DEL, C1) and Unicode line/paragraph separators.
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def clean_text(value: str) -> str:
    """Collapse control characters and runs of white space to single spaces (for display)."""
    return " ".join(_CONTROL_RE.sub(" ", value).split())


def format_date(value: dt.date) -> str:
    """``2026-11-24`` → ``24 November 2026``."""
    return f"{value.day} {_MONTHS[value.month - 1]} {value.year}"


def format_time(value: dt.time | dt.datetime) -> str:
    """UK style: ``10:31am``, ``3pm``, ``midday``, ``midnight``."""
    hour, minute = value.hour, value.minute
    if minute == 0 and hour == 0:
        return "midnight"
    if minute == 0 and hour == 12:
        return "midday"
    suffix = "am" if hour < 12 else "pm"
    hour12 = hour % 12 or 12
    return f"{hour12}{suffix}" if minute == 0 else f"{hour12}:{minute:02d}{suffix}"


def format_instant(value: dt.datetime) -> str:
    """An instant as a London local date and time: ``24 November 2026 at 10:31am``.

    A naive datetime is taken to be UTC.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    local = value.astimezone(LONDON)
    return f"{format_date(local.date())} at {format_time(local)}"


def parse_day(day: str) -> dt.date | dt.datetime:
    """A record's day: a ``YYYY-MM-DD`` London date, or an ISO UTC instant for short demo days.

    Raises ``ValueError`` when it is neither.
    """
    text = day.strip()
    if _ISO_DATE_RE.match(text):
        return dt.date.fromisoformat(text)
    instant = dt.datetime.fromisoformat(text)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    return instant


def format_day(day: str) -> str:
    """``2026-11-24`` → ``24 November 2026``; ``2026-11-24T10:31:00Z`` → ``24 November 2026 at 10:31am``."""
    parsed = parse_day(day)
    if isinstance(parsed, dt.datetime):
        return format_instant(parsed)
    return format_date(parsed)


def _format_date_value(value: str) -> str:
    text = value.strip()
    if _ISO_DATE_RE.match(text):
        try:
            return format_date(dt.date.fromisoformat(text))
        except ValueError:
            pass
    return clean_text(value)


def _format_wte(value: str) -> str:
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        return clean_text(value)
    if not number.is_finite():
        return clean_text(value)
    if number == 1:
        return f"{value.strip()} (full time)"
    if 0 < number < 1:
        percent = (number * 100).normalize()
        return f"{value.strip()} ({percent:f}% of full time)"
    return value.strip()


def display_value(entity: str, field: str, value: object) -> str:
    """A field's value as the trainee reads it: masked, dates in words, "not recorded" when empty."""
    if value is None:
        return NOT_RECORDED
    text = value if isinstance(value, str) else str(value)
    if not clean_text(text):
        return NOT_RECORDED
    if entity == "personal_details" and field in MASKED_FIELDS:
        if field in _PHONE:
            return mask_phone(text)
        if field in _ADDRESS:
            return mask_address_line(clean_text(text))
        if field == "post_code":
            return mask_postcode(text)
        return mask_email(clean_text(text))
    if field in DATE_FIELDS:
        return _format_date_value(text)
    if field == "whole_time_equivalent":
        return _format_wte(text)
    if field == "programme_membership_type":
        return _MEMBERSHIP_TYPES.get(text.strip().upper(), clean_text(text))
    return clean_text(text)
