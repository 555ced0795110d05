"""Pure composition of the mailer's emails: no I/O except reading templates (and a contacts file).

Input is a net-change record as a ``dict`` in the shape design.md gives ("Net change"). Output is a
:class:`ComposedEmail` (subject, plain text, HTML, headers) or a :class:`Refusal` whose ``reason``
never contains personal data. :func:`to_mime` turns a composed email into the real
``multipart/alternative`` message.

Both parts come from one source of truth: the functions here build a neutral :class:`Document`
(title, greeting, sections of sentences and label/before/after rows, contact, footer) holding every
word of the email, and two Jinja2 templates (``templates/email.txt.j2`` and ``email.html.j2``)
only lay that document out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import email.header
import email.policy
import email.utils
import json
import os
import quopri
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from functools import lru_cache
from typing import Any, Final, Literal

import css_inline
import email_validator
import jinja2

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

__all__ = [
    "ADDRESS_NOT_VALID",
    "HEADER_NOT_VALID",
    "MESSAGE_ID_NOT_VALID",
    "NOTHING_TO_SEND",
    "NO_ADDRESS",
    "RECORD_NOT_VALID",
    "SENDER_NOT_VALID",
    "ComposedEmail",
    "Contact",
    "ContactBlock",
    "Contacts",
    "Document",
    "Link",
    "Refusal",
    "Refused",
    "Row",
    "Section",
    "Table",
    "check_header_value",
    "compose_digest",
    "compose_previous_address_notice",
    "deanery_of",
    "digest_document",
    "previous_address_document",
    "render_html",
    "render_text",
    "to_bytes",
    "to_mime",
    "validate_address",
]

# --------------------------------------------------------------------------------------------------
# Results

#: Refusal reasons. None of them carries personal data; ``Refusal.detail`` may add a suppression
#: reason from the record (a fixed vocabulary, design.md "Suppression, not silence").
NOTHING_TO_SEND: Final = "nothing to send"
NO_ADDRESS: Final = "no address"
ADDRESS_NOT_VALID: Final = "address not valid"
HEADER_NOT_VALID: Final = "control characters in a header value"
SENDER_NOT_VALID: Final = "sender address not valid"
MESSAGE_ID_NOT_VALID: Final = "message id not valid"
RECORD_NOT_VALID: Final = "record not valid"


@dataclass(frozen=True)
class Refusal:
    """Why no email was composed. ``reason`` is one of the constants above; the caller records it
    (``NOTHING_TO_SEND`` → SUPPRESSED, the others → FAILED)."""

    reason: str
    detail: str | None = None


class Refused(ValueError):
    """Raised by :func:`validate_address` and :func:`check_header_value`; carries a :class:`Refusal`."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.refusal = Refusal(reason, detail)


@dataclass(frozen=True)
class ComposedEmail:
    """A composed email, ready for :func:`to_mime`.

    ``to`` is the bare validated address (the SMTP envelope recipient); ``headers`` holds every
    header to set, in order (``From``, ``To`` with a display name, ``Subject``, ``Message-ID``,
    ``Auto-Submitted``, ``X-Auto-Response-Suppress``) except ``Date``, which :func:`to_mime` adds.
    """

    to: str
    subject: str
    text: str
    html: str
    message_id: str
    headers: Mapping[str, str] = field(hash=False)


# --------------------------------------------------------------------------------------------------
# Safety: header values and addresses

# C0 controls, DEL, C1 controls (NEL among them), Unicode line and paragraph separators.
_HEADER_BAD_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MESSAGE_ID_RE: Final = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>$")


def check_header_value(value: str) -> str:
    """Return ``value`` unchanged, or raise :class:`Refused` if it holds CR, LF, NUL or any other
    control character (header injection)."""
    if _HEADER_BAD_RE.search(value):
        raise Refused(HEADER_NOT_VALID)
    return value


def validate_address(addr: str, *, allow_test_domains: bool = False) -> str:
    """Validate one bare address with email-validator (no DNS) and return its normalised form.

    ``example.*`` domains (``a.doctor@example.nhs.uk``) are accepted as any other domain.
    email-validator refuses special-use domains (``.test``, ``.invalid``, ``localhost`` …);
    ``allow_test_domains=True`` lets ``*.test`` through for local stacks. Raises :class:`Refused`
    (``HEADER_NOT_VALID`` for control characters, ``ADDRESS_NOT_VALID`` otherwise); the message
    never includes the address.
    """
    check_header_value(addr)
    try:
        result = email_validator.validate_email(
            addr.strip(),
            check_deliverability=False,
            allow_smtputf8=False,
            allow_display_name=False,
            test_environment=allow_test_domains,
        )
    except email_validator.EmailNotValidError:
        raise Refused(ADDRESS_NOT_VALID) from None
    return result.ascii_email or result.normalized


def _normalise_message_id(message_id: str) -> str:
    check_header_value(message_id)
    text = message_id.strip()
    if not text.startswith("<"):
        text = f"<{text}>"
    if not _MESSAGE_ID_RE.match(text):
        raise Refused(MESSAGE_ID_NOT_VALID)
    return text


def _sender_header(mail_from: str, allow_test_domains: bool) -> str:
    try:
        check_header_value(mail_from)
        header = email.policy.default.header_factory("From", mail_from)
        addresses: tuple[Address, ...] = getattr(header, "addresses", ())
        if len(addresses) != 1 or header.defects:
            raise Refused(SENDER_NOT_VALID)
        name: str = addresses[0].display_name
        addr = validate_address(addresses[0].addr_spec, allow_test_domains=allow_test_domains)
    except (Refused, ValueError, IndexError):
        raise Refused(SENDER_NOT_VALID) from None
    return str(Address(display_name=name, addr_spec=addr)) if name else addr


# --------------------------------------------------------------------------------------------------
# Local office contacts


@dataclass(frozen=True)
class Contact:
    """Whom to contact if something is wrong: a name and an email address and/or a web page."""

    name: str
    email: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if not self.name.strip() or _HEADER_BAD_RE.search(self.name):
            raise ValueError("a contact needs a name on one line")
        if self.email is None and self.url is None:
            raise ValueError(f"contact {self.name!r} needs an email or a url")
        if self.email is not None:
            try:
                object.__setattr__(self, "email", validate_address(self.email, allow_test_domains=True))
            except Refused:
                raise ValueError(f"contact {self.name!r}: email not valid") from None
        if self.url is not None and not re.match(r"^https?://[^\s\"'<>]+$", self.url):
            raise ValueError(f"contact {self.name!r}: url must be http(s) with no spaces or quotes")


def _deanery_key(name: str) -> str:
    key = name.lower().replace("&", " and ")
    key = re.sub(r"[^a-z0-9]+", " ", key).strip()
    for prefix in ("health education england ", "nhs england ", "nhse ", "hee ", "nhs "):
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    for suffix in (" local office", " deanery"):
        key = key.removesuffix(suffix)
    return key.strip()


@dataclass(frozen=True)
class Contacts:
    """Local office contacts keyed by ``managing_deanery``, with a fallback general contact.

    Names are matched loosely: case, punctuation and a leading "Health Education England" / "NHS
    England" are ignored, so ``Health Education England Kent, Surrey and Sussex`` finds an entry
    configured as ``NHS England Kent Surrey and Sussex``.
    """

    fallback: Contact
    local_offices: Mapping[str, Contact] = field(default_factory=dict, hash=False)
    _index: Mapping[str, Contact] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index = {_deanery_key(name): contact for name, contact in self.local_offices.items()}
        object.__setattr__(self, "_index", index)

    def for_deanery(self, deanery: str | None) -> Contact:
        """The contact for a managing deanery (local office), or the fallback."""
        if not deanery:
            return self.fallback
        return self._index.get(_deanery_key(deanery), self.fallback)

    def for_record(self, record: Mapping[str, Any]) -> Contact:
        """The contact for a net-change record: see :func:`deanery_of` for its limits."""
        return self.for_deanery(deanery_of(record))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Contacts:
        """``{"fallback": {name, email?, url?}, "local_offices": {deanery: {name, email?, url?}}}``;
        a missing ``fallback`` takes the built-in one. Raises ``ValueError`` on a bad entry."""

        def contact(entry: Any, where: str) -> Contact:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise ValueError(f"contacts: {where} needs a name")  # noqa: TRY004
            email_ = entry.get("email")
            url = entry.get("url")
            if email_ is not None and not isinstance(email_, str):
                raise ValueError(f"contacts: {where} email must be text")
            if url is not None and not isinstance(url, str):
                raise ValueError(f"contacts: {where} url must be text")
            return Contact(name=entry["name"], email=email_, url=url)

        offices = data.get("local_offices", {})
        if not isinstance(offices, Mapping):
            raise ValueError("contacts: local_offices must be an object")  # noqa: TRY004
        fallback = contact(data["fallback"], "fallback") if "fallback" in data else DEFAULT_CONTACTS.fallback
        return cls(
            fallback=fallback,
            local_offices={str(k): contact(v, f"local office {k!r}") for k, v in offices.items()},
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Contacts:
        """Load contacts from a JSON file (format as :meth:`from_mapping`)."""
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if not isinstance(data, Mapping):
            raise ValueError("contacts: the file must hold a JSON object")  # noqa: TRY004
        return cls.from_mapping(data)

    @classmethod
    def default(cls) -> Contacts:
        """The built-in mapping for the NHS England local offices (example addresses)."""
        return DEFAULT_CONTACTS


def _office(short: str, code: str) -> tuple[str, Contact]:
    return (
        f"Health Education England {short}",
        Contact(
            name=f"NHS England {short} local office",
            email=f"trainee.records.{code}@example.nhs.uk",
            url=f"https://www.example.nhs.uk/local-offices/{code}/contact",
        ),
    )


DEFAULT_CONTACTS: Final = Contacts(
    fallback=Contact(
        name="NHS England training records team",
        email="trainee.records@example.nhs.uk",
        url="https://www.example.nhs.uk/training-record/help",
    ),
    local_offices=dict(
        [
            _office("East of England", "eoe"),
            _office("East Midlands", "em"),
            _office("West Midlands", "wm"),
            _office("North East", "ne"),
            _office("North West", "nw"),
            _office("Yorkshire and the Humber", "yh"),
            _office("Kent, Surrey and Sussex", "kss"),
            _office("Thames Valley", "tv"),
            _office("Wessex", "wx"),
            _office("South West", "sw"),
            _office("North Central and East London", "ncel"),
            _office("North West London", "nwl"),
            _office("South London", "sl"),
            (
                "London LETBs",
                Contact(
                    name="NHS England London local office",
                    email="trainee.records.london@example.nhs.uk",
                    url="https://www.example.nhs.uk/local-offices/london/contact",
                ),
            ),
        ]
    ),
)


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


def deanery_of(record: Mapping[str, Any]) -> str | None:
    """The managing deanery (local office) for a record's trainee, when the record shows it.

    Limit: a net-change record carries only the fields that changed, so the deanery is known only
    when a ``programme_membership`` change in the record (suppressed or not) has
    ``managing_deanery`` in its fields — a created or deleted programme, or one whose local office
    changed. Otherwise this returns ``None`` and the caller uses the fallback contact. Current
    values (new) are preferred to removed ones (old).
    """
    raw = record.get("changes")
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        return None
    current: list[str] = []
    removed: list[str] = []
    for item in raw:
        if not isinstance(item, Mapping) or item.get("entity") != "programme_membership":
            continue
        fields_ = item.get("fields")
        pair = fields_.get("managing_deanery") if isinstance(fields_, Mapping) else None
        if not isinstance(pair, Mapping):
            continue
        new, old = pair.get("new"), pair.get("old")
        if isinstance(new, str) and new.strip():
            current.append(new)
        elif isinstance(old, str) and old.strip():
            removed.append(old)
    found = current or removed
    return found[0] if found else None


def _recipient(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
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


def _display_name(recipient: Mapping[str, Any]) -> str:
    parts = []
    for key in ("title", "forenames", "surname"):
        value = recipient.get(key)
        if isinstance(value, str):
            check_header_value(value)
            if value.strip():
                parts.append(" ".join(value.split()))
    return " ".join(parts)


def _day_words(record: Mapping[str, Any]) -> str:
    day = record.get("day")
    if not isinstance(day, str):
        raise _bad_record()
    try:
        return format_day(day)
    except ValueError:
        raise _bad_record() from None


def _copy_note(copy_of: dt.datetime | None) -> str | None:
    if copy_of is None:
        return None
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
        day = _day_words(record)
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
        greeting=_greeting(_recipient(record)),
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
        day = _day_words(record)
    except Refused as refused:
        return refused.refusal
    if record.get("suppressed") is not None:
        return Refusal(NOTHING_TO_SEND, detail=str(record.get("suppressed")))
    recipient = _recipient(record)
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


# --------------------------------------------------------------------------------------------------
# Rendering


@lru_cache(maxsize=1)
def _html_env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("services.notifier", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@lru_cache(maxsize=1)
def _text_env() -> jinja2.Environment:
    # Plain text is not HTML: nothing to escape (every value is already one line, see clean_text).
    return jinja2.Environment(  # the text part is never read as HTML
        loader=jinja2.PackageLoader("services.notifier", "templates"),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@lru_cache(maxsize=1)
def _inliner() -> css_inline.CSSInliner:
    return css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)


def render_text(document: Document) -> str:
    """The plain-text part of a document."""
    text = _text_env().get_template("email.txt.j2").render(doc=document)
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    return text + "\n"


def render_html(document: Document) -> str:
    """The HTML part of a document, CSS inlined."""
    html = _html_env().get_template("email.html.j2").render(doc=document)
    inlined = _inliner().inline(html)
    if not inlined.lstrip().lower().startswith("<!doctype"):
        inlined = "<!DOCTYPE html>\n" + inlined
    return inlined


def _compose(
    document: Document | Refusal,
    *,
    to_addr: object,
    display_name: str,
    subject: str,
    message_id: str,
    mail_from: str,
    allow_test_domains: bool,
) -> ComposedEmail | Refusal:
    if isinstance(document, Refusal):
        return document
    if not isinstance(to_addr, str) or not to_addr.strip():
        return Refusal(NO_ADDRESS)
    try:
        to = validate_address(to_addr, allow_test_domains=allow_test_domains)
        check_header_value(subject)
        sender = _sender_header(mail_from, allow_test_domains)
        mid = _normalise_message_id(message_id)
    except Refused as refused:
        return refused.refusal
    headers = {
        "From": sender,
        "To": str(Address(display_name=display_name, addr_spec=to)) if display_name else to,
        "Subject": subject,
        "Message-ID": mid,
        "Auto-Submitted": "auto-generated",
        "X-Auto-Response-Suppress": "All",
    }
    return ComposedEmail(
        to=to,
        subject=subject,
        text=render_text(document),
        html=render_html(document),
        message_id=mid,
        headers=headers,
    )


def compose_digest(
    record: Mapping[str, Any],
    *,
    contacts: Contacts,
    message_id: str,
    mail_from: str,
    copy_of: dt.datetime | None = None,
    allow_test_domains: bool = False,
) -> ComposedEmail | Refusal:
    """The daily digest for one net-change record, to ``recipient.email``.

    Only unsuppressed changes of an unsuppressed record are shown; when none is left the result is
    ``Refusal(NOTHING_TO_SEND)`` (the record's suppression reason, if any, in ``detail``). No
    recipient or no email gives ``Refusal(NO_ADDRESS)``; an invalid address ``ADDRESS_NOT_VALID``;
    a control character in the recipient's title, forenames, surname or email ``HEADER_NOT_VALID``.
    ``copy_of`` (the time the original was sent) marks an explicit resend as a copy.
    """
    document = digest_document(record, contacts=contacts, copy_of=copy_of)
    if isinstance(document, Refusal):
        return document
    recipient = _recipient(record)
    if recipient is None:
        return Refusal(NO_ADDRESS)
    try:
        display_name = _display_name(recipient)
    except Refused as refused:
        return refused.refusal
    subject = f"Changes to your training record on {_day_words(record)}"
    if copy_of is not None:
        subject = "Copy: " + subject
    return _compose(
        document,
        to_addr=recipient.get("email"),
        display_name=display_name,
        subject=subject,
        message_id=message_id,
        mail_from=mail_from,
        allow_test_domains=allow_test_domains,
    )


def compose_previous_address_notice(
    record: Mapping[str, Any],
    *,
    contacts: Contacts,
    message_id: str,
    mail_from: str,
    copy_of: dt.datetime | None = None,
    allow_test_domains: bool = False,
) -> ComposedEmail | Refusal:
    """The short notice to ``previous_email`` when the email address on the record changed.

    It says the address was changed on the record's day, shows the new address only masked, and
    names the local office to contact if the change was not expected. The To header carries no
    display name (the old address may no longer be the trainee's). ``Refusal(NO_ADDRESS)`` when the
    record has no ``previous_email``; other refusals as :func:`compose_digest`.
    """
    document = previous_address_document(record, contacts=contacts, copy_of=copy_of)
    if isinstance(document, Refusal):
        return document
    recipient = _recipient(record)
    if recipient is not None:
        try:
            _display_name(recipient)  # the greeting uses the name: refuse injected names here too
            email_ = recipient.get("email")
            if isinstance(email_, str):
                check_header_value(email_)
        except Refused as refused:
            return refused.refusal
    subject = f"The email address on your training record was changed on {_day_words(record)}"
    if copy_of is not None:
        subject = "Copy: " + subject
    return _compose(
        document,
        to_addr=record.get("previous_email"),
        display_name="",
        subject=subject,
        message_id=message_id,
        mail_from=mail_from,
        allow_test_domains=allow_test_domains,
    )


def to_mime(composed: ComposedEmail, *, date: dt.datetime | None = None) -> EmailMessage:
    """The real message: ``multipart/alternative`` (plain text, then HTML), UTF-8, with every header
    of ``composed.headers`` and a ``Date`` (``date``, else now; injectable for determinism)."""
    message = EmailMessage(policy=email.policy.SMTP)
    for name, value in composed.headers.items():
        message[name] = check_header_value(value)
    when = date if date is not None else dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    message["Date"] = email.utils.format_datetime(when)
    message.set_content(composed.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(composed.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message


_ADDRESS_HEADERS = frozenset({"From", "To", "Reply-To", "Cc"})


def _header_line(name: str, value: str) -> bytes:
    value = check_header_value(value)
    if name in _ADDRESS_HEADERS:
        display, addr = email.utils.parseaddr(value)
        value = email.utils.formataddr((display, addr), charset="utf-8")
    else:
        charset = "us-ascii" if value.isascii() else "utf-8"
        value = email.header.Header(value, charset, maxlinelen=78, header_name=name).encode(linesep="\r\n")
    return f"{name}: {value}\r\n".encode("ascii")


def _qp_part(content_type: str, body: str) -> bytes:
    body = body.replace("\r\n", "\n")
    if not body.endswith("\n"):
        body += "\n"  # as the email package's set_content does
    encoded = quopri.encodestring(body.encode("utf-8")).replace(b"\n", b"\r\n")
    return (f"Content-Type: {content_type}; charset=\"utf-8\"\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode("ascii") + encoded


def to_bytes(composed: ComposedEmail, *, date: dt.datetime | None = None) -> bytes:
    """The same message as :func:`to_mime`, written directly as bytes (CRLF, RFC 2047 headers, quoted-
    printable parts): the ``email`` package's header registry and generator cost most of a send."""
    when = date if date is not None else dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    boundary = "=_" + hashlib.sha256(composed.message_id.encode()).hexdigest()[:32]
    head = b"".join(_header_line(k, v) for k, v in composed.headers.items())
    head += _header_line("Date", email.utils.format_datetime(when))
    head += (f"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"
             ).encode("ascii")
    sep = f"--{boundary}\r\n".encode("ascii")
    return (head + sep + _qp_part("text/plain", composed.text) + b"\r\n" + sep
            + _qp_part("text/html", composed.html) + f"\r\n--{boundary}--\r\n".encode("ascii"))
