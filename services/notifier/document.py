"""The neutral document: every word of an email, before either template lays it out.

A net-change record (a ``dict`` in the shape design.md gives, "Net change") is read into changes,
each change becomes a :class:`Section` of sentences and a label/before/after :class:`Table`, and
:func:`digest_document` and :func:`previous_address_document` assemble a whole :class:`Document`
(title, greeting, intro, sections, contact, footer) or return a :class:`Refusal` when there is
nothing to send or the record is not valid. Plain text and HTML are both rendered from this one
source of truth; nothing here knows about templates, MIME or sending.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from services.notifier.contacts import Contact, Contacts
from services.notifier.labels import (
    ENTITY_ORDER,
    FIELD_LABELS,
    MASKED_FIELDS,
    clean_text,
    display_value,
    format_day,
    format_instant,
)
from services.notifier.mask import mask_email
from services.notifier.safety import NOTHING_TO_SEND, RECORD_NOT_VALID, Refusal, Refused

__all__ = [
    "ContactBlock",
    "Document",
    "Kind",
    "Link",
    "Row",
    "Section",
    "Table",
    "day_words",
    "digest_document",
    "previous_address_document",
    "recipient_of",
]

# --------------------------------------------------------------------------------------------------
# Reading the record

Kind = Literal["created", "updated", "deleted"]


@dataclass(frozen=True)
class _Change:
    entity: str
    id: str
    kind: Kind
    fields: Mapping[str, tuple[object, object]]

    def value(self, name: str) -> object:
        """The current value of a field (new, else old) when the record carries it."""
        pair = self.fields.get(name)
        if pair is None:
            return None
        old, new = pair
        if self.kind == "deleted":
            return old
        return new if _present(new) else old


def _present(value: object) -> bool:
    return value is not None and (not isinstance(value, str) or bool(clean_text(value)))


def _bad_record() -> Refused:
    return Refused(RECORD_NOT_VALID)


def _changes(record: Mapping[str, Any], *, unsuppressed_only: bool) -> list[_Change]:
    raw = record.get("changes")
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        raise _bad_record()
    changes: list[_Change] = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise _bad_record()
        entity, kind, fields_ = item.get("entity"), item.get("kind"), item.get("fields")
        if not isinstance(entity, str) or kind not in ("created", "updated", "deleted"):
            raise _bad_record()
        if not isinstance(fields_, Mapping):
            raise _bad_record()
        if unsuppressed_only and item.get("suppressed") is not None:
            continue
        if entity not in FIELD_LABELS:
            continue  # an entity this version cannot describe is never shown
        pairs: dict[str, tuple[object, object]] = {}
        for name, pair in fields_.items():
            if not isinstance(pair, Mapping):
                raise _bad_record()
            if name in FIELD_LABELS[entity]:
                pairs[str(name)] = (pair.get("old"), pair.get("new"))
        if not pairs:
            continue
        changes.append(_Change(entity=entity, id=str(item.get("id", "")), kind=kind, fields=pairs))
    return changes


def _sort_key(change: _Change) -> tuple[int, str, str]:
    start = change.value("start_date")
    return (
        ENTITY_ORDER.index(change.entity),
        start if isinstance(start, str) else "9999-99-99",
        change.id,
    )


def recipient_of(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The record's ``recipient`` object, or None when it has none."""
    recipient = record.get("recipient")
    return recipient if isinstance(recipient, Mapping) else None


def _text_or_none(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _greeting(recipient: Mapping[str, Any] | None) -> str:
    if recipient is None:
        return "Dear doctor,"
    title = _text_or_none(recipient.get("title"))
    surname = _text_or_none(recipient.get("surname"))
    forenames = _text_or_none(recipient.get("forenames"))
    if surname and title:
        return f"Dear {clean_text(title)} {clean_text(surname)},"
    if surname and forenames:
        return f"Dear {clean_text(forenames)} {clean_text(surname)},"
    return "Dear doctor,"


def day_words(record: Mapping[str, Any]) -> str:
    """The record's ``day`` in words; raises :class:`Refused` (``RECORD_NOT_VALID``) when it has none."""
    day = record.get("day")
    if not isinstance(day, str):
        raise _bad_record()
    try:
        return format_day(day)
    except ValueError:
        raise _bad_record() from None


class UncertainAttempt(dt.datetime):
    """``copy_of`` for a resend of an email whose first attempt was cut off mid-send (UNCERTAIN): the
    relay may or may not have delivered it, so the copy says so."""


def _copy_note(copy_of: dt.datetime | None) -> str | None:
    if copy_of is None:
        return None
    if isinstance(copy_of, UncertainAttempt):
        return (f"This may repeat an email we tried to send on {format_instant(copy_of)}: we could not "
                "confirm that it reached you.")
    return f"This is a copy of an email we first sent on {format_instant(copy_of)}."


# --------------------------------------------------------------------------------------------------
# The neutral document model: every word of the email, laid out by both templates


@dataclass(frozen=True)
class Row:
    """One table row: a label (a header cell) and one value per remaining column."""

    label: str
    cells: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """``headers[0]`` heads the label column; the rest head the value columns."""

    headers: tuple[str, ...]
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Section:
    heading: str
    paragraphs: tuple[str, ...]
    table: Table | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Link:
    """``Email: trainee.records@example.nhs.uk`` (label, the text shown, the target)."""

    label: str
    text: str
    href: str


@dataclass(frozen=True)
class ContactBlock:
    heading: str
    sentence: str
    links: tuple[Link, ...]


@dataclass(frozen=True)
class Document:
    title: str
    copy_note: str | None
    greeting: str
    intro: tuple[str, ...]
    sections: tuple[Section, ...]
    contact: ContactBlock
    footer: tuple[str, ...]


_NOUNS: Final = {
    "personal_details": "personal details",
    "programme_membership": "programme",
    "curriculum_membership": "curriculum",
    "placement": "placement",
}
_PLURALS: Final = {
    "personal_details": "personal details",
    "programme_membership": "programmes",
    "curriculum_membership": "curricula",
    "placement": "placements",
}
_HEADINGS: Final = {
    "personal_details": "Personal details",
    "programme_membership": "Programme",
    "curriculum_membership": "Curriculum",
    "placement": "Placement",
}


def _shown(change: _Change, name: str) -> str | None:
    value = change.value(name)
    if not _present(value):
        return None
    return display_value(change.entity, name, value)


def _site(change: _Change) -> str | None:
    return _shown(change, "site_known_as") or _shown(change, "site")


def _title_name(change: _Change) -> str | None:
    if change.entity == "placement":
        return _site(change)
    if change.entity == "programme_membership":
        return _shown(change, "programme_name")
    if change.entity == "curriculum_membership":
        return _shown(change, "curriculum_name")
    return None


def _identity(change: _Change) -> str | None:
    """``placement at Royal Papworth Hospital starting 2 February 2027``, or None when the record
    carries nothing that identifies it."""
    noun = _NOUNS[change.entity]
    start = _shown(change, "start_date")
    if change.entity == "placement":
        site = _site(change)
        specialty = _shown(change, "specialty")
        if not (site or start or specialty):
            return None
        phrase = f"{specialty} {noun}" if specialty else noun
        if site:
            phrase += f" at {site}"
    else:
        name = _title_name(change)
        if not (name or start):
            return None
        phrase = f"{name} {noun}" if name else noun
    if start:
        phrase += f" starting {start}"
    return phrase


def _key_facts(change: _Change) -> str | None:
    """``Cardiology (ST3) at Royal Papworth Hospital, from 2 February 2027 to 3 August 2027``."""
    start, end = _shown(change, "start_date"), _shown(change, "end_date")
    if change.entity == "placement":
        head = _shown(change, "specialty") or ""
        grade = _shown(change, "grade")
        if grade:
            head = f"{head} ({grade})" if head else grade
        site = _site(change)
        if site:
            head = f"{head} at {site}" if head else site
    elif change.entity == "programme_membership":
        head = _shown(change, "programme_name") or ""
        number = _shown(change, "programme_number")
        if number:
            head = f"{head} ({number})" if head else number
    else:
        head = _shown(change, "curriculum_name") or ""
        specialty = _shown(change, "specialty")
        if specialty and specialty != head:
            head = f"{head}, {specialty}" if head else specialty
    dates = ""
    if start and end:
        dates = f"from {start} to {end}"
    elif start:
        dates = f"starting {start}"
    elif end:
        dates = f"ending {end}"
    if head and dates:
        return f"{head}, {dates}"
    return head or dates or None


def _rows(change: _Change) -> tuple[Row, ...]:
    rows = []
    for name, label in FIELD_LABELS[change.entity].items():
        if name not in change.fields:
            continue
        old, new = change.fields[name]
        if change.kind == "updated":
            cells: tuple[str, ...] = (
                display_value(change.entity, name, old),
                display_value(change.entity, name, new),
            )
        elif change.kind == "created":
            if not _present(new):
                continue
            cells = (display_value(change.entity, name, new),)
        else:
            if not _present(old):
                continue
            cells = (display_value(change.entity, name, old),)
        rows.append(Row(label=label, cells=cells))
    return tuple(rows)


_TABLE_HEADERS: Final[Mapping[str, tuple[str, ...]]] = {
    "updated": ("Detail", "Before", "After"),
    "created": ("Detail", "Added"),
    "deleted": ("Detail", "Removed"),
}


def _section(change: _Change, previous_email: bool) -> Section | None:
    rows = _rows(change)
    if not rows:
        return None
    notes: list[str] = []
    if change.entity == "personal_details":
        heading = "Personal details"
        if change.kind == "updated":
            count = len(rows)
            sentence = (
                "One of your personal details has changed."
                if count == 1
                else "Some of your personal details have changed."
            )
        elif change.kind == "created":
            sentence = "Your personal details were added to your training record."
        else:
            sentence = "Your personal details were removed from your training record."
        if any(name in MASKED_FIELDS for name in change.fields):
            notes.append("To keep your details safe, we show only part of your contact details and address.")
        if previous_email and "email" in change.fields:
            notes.append(
                "We have also sent a short message about this change to your previous email address."
            )
    else:
        name = _title_name(change)
        heading = f"{_HEADINGS[change.entity]}: {name}" if name else _HEADINGS[change.entity]
        noun = _NOUNS[change.entity]
        if change.kind == "created":
            facts = _key_facts(change)
            sentence = f"A new {noun} was added: {facts}." if facts else f"A new {noun} was added."
        else:
            identity = _identity(change)
            verb = "has changed" if change.kind == "updated" else "was removed"
            sentence = (
                f"Your {identity} {verb}." if identity else f"One of your {_PLURALS[change.entity]} {verb}."
            )
    return Section(
        heading=heading,
        paragraphs=(sentence,),
        table=Table(headers=_TABLE_HEADERS[change.kind], rows=rows),
        notes=tuple(notes),
    )


def _contact_block(contact: Contact, *, heading: str, sentence: str) -> ContactBlock:
    links = []
    if contact.email:
        links.append(Link(label="Email", text=contact.email, href=f"mailto:{contact.email}"))
    if contact.url:
        links.append(Link(label="Website", text=contact.url, href=contact.url))
    return ContactBlock(heading=heading, sentence=sentence.format(name=contact.name), links=tuple(links))


_FOOTER_SENT: Final = "This email was sent automatically. Please do not reply to it, as replies are not read."


def digest_document(
    record: Mapping[str, Any], *, contacts: Contacts, copy_of: dt.datetime | None = None
) -> Document | Refusal:
    """The digest's words for a record, or a Refusal (``NOTHING_TO_SEND``, ``RECORD_NOT_VALID``)."""
    try:
        if record.get("suppressed") is not None:
            return Refusal(NOTHING_TO_SEND, detail=str(record.get("suppressed")))
        changes = sorted(_changes(record, unsuppressed_only=True), key=_sort_key)
        day = day_words(record)
    except Refused as refused:
        return refused.refusal
    has_previous = isinstance(record.get("previous_email"), str) and bool(record["previous_email"].strip())
    sections = [s for s in (_section(c, has_previous) for c in changes) if s is not None]
    if not sections:
        return Refusal(NOTHING_TO_SEND)
    intro = [f"Your training record changed on {day}. The details are below."]
    if record.get("late") is True:
        intro.append("Some of these changes were made earlier but reached us late.")
    return Document(
        title="Changes to your training record",
        copy_note=_copy_note(copy_of),
        greeting=_greeting(recipient_of(record)),
        intro=tuple(intro),
        sections=tuple(sections),
        contact=_contact_block(
            contacts.for_record(record),
            heading="If something is wrong",
            sentence="If any of these details are wrong, or you did not expect these changes, contact the {name}.",
        ),
        footer=(
            "You are getting this email because your training record changed.",
            _FOOTER_SENT,
        ),
    )


def previous_address_document(
    record: Mapping[str, Any], *, contacts: Contacts, copy_of: dt.datetime | None = None
) -> Document | Refusal:
    """The words of the notice to the previous address (see :func:`compose_previous_address_notice`)."""
    try:
        day = day_words(record)
    except Refused as refused:
        return refused.refusal
    if record.get("suppressed") is not None:
        return Refusal(NOTHING_TO_SEND, detail=str(record.get("suppressed")))
    recipient = recipient_of(record)
    new_email = _text_or_none(recipient.get("email")) if recipient else None
    intro: tuple[str, ...]
    if new_email:
        intro = (
            f"The email address on your training record was changed on {day}.",
            (
                f"The new address is {mask_email(clean_text(new_email))} (we show only part of it to "
                "keep it safe). We will send future emails about your training record there."
            ),
        )
    else:
        intro = (f"The email address on your training record was removed on {day}.",)
    return Document(
        title="The email address on your training record has changed",
        copy_note=_copy_note(copy_of),
        greeting=_greeting(recipient),
        intro=intro,
        sections=(),
        contact=_contact_block(
            contacts.for_record(record),
            heading="If you did not expect this",
            sentence="If you did not expect this change, contact the {name} straight away.",
        ),
        footer=(
            (
                "You are getting this email because this address was on your training record until "
                "it was changed."
            ),
            _FOOTER_SENT,
        ),
    )
