"""Pure composition of the mailer's emails: no I/O except reading templates (and a contacts file).

Input is a net-change record as a ``dict`` in the shape design.md gives ("Net change"). Output is a
:class:`ComposedEmail` (subject, plain text, HTML, headers) or a :class:`Refusal` whose ``reason``
never contains personal data. :func:`to_mime` turns a composed email into the real
``multipart/alternative`` message.

Both parts come from one source of truth: :mod:`services.notifier.document` builds a neutral
:class:`Document` (title, greeting, sections of sentences and label/before/after rows, contact,
footer) holding every word of the email, and two Jinja2 templates (``templates/email.txt.j2`` and
``email.html.j2``) only lay that document out. This module renders and assembles; the refusals and
header checks live in :mod:`services.notifier.safety`, the local office contacts in
:mod:`services.notifier.contacts`, the MIME writers in :mod:`services.notifier.mime`. Every name
listed in ``__all__`` is re-exported here and stays importable from this module.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address
from functools import lru_cache
from typing import Any

import css_inline
import jinja2

from services.notifier.contacts import (
    DEFAULT_CONTACTS,  # noqa: F401  (public here before the split)
    Contact,
    Contacts,
    deanery_of,
    local_offices_of,
)
from services.notifier.document import (
    ContactBlock,
    Document,
    Kind,  # noqa: F401  (public here before the split)
    Link,
    Row,
    Section,
    Table,
    day_words,
    digest_document,
    previous_address_document,
    recipient_of,
)
from services.notifier.mime import to_bytes, to_mime
from services.notifier.safety import (
    ADDRESS_NOT_VALID,
    HEADER_NOT_VALID,
    MESSAGE_ID_NOT_VALID,
    NO_ADDRESS,
    NOTHING_TO_SEND,
    RECORD_NOT_VALID,
    SENDER_NOT_VALID,
    Refusal,
    Refused,
    check_header_value,
    normalise_message_id,
    recipient_display_name,
    sender_header,
    validate_address,
)

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
    "local_offices_of",
    "previous_address_document",
    "render_html",
    "render_text",
    "to_bytes",
    "to_mime",
    "validate_address",
]


# --------------------------------------------------------------------------------------------------
# Result


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
# Rendering


@lru_cache(maxsize=1)
def _html_env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("services.notifier", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # packaged templates do not change while we run: no stat per email
    )


@lru_cache(maxsize=1)
def _text_env() -> jinja2.Environment:
    # Plain text is not HTML: nothing to escape (every value is already one line, see clean_text).
    return jinja2.Environment(  # the text part is never read as HTML
        loader=jinja2.PackageLoader("services.notifier", "templates"),
        autoescape=False,  # noqa: S701  the plain-text part: never read as HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # packaged templates do not change while we run: no stat per email
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
        sender = sender_header(mail_from, allow_test_domains)
        mid = normalise_message_id(message_id)
    except Refused as refused:
        return refused.refusal
    # ``to`` is validated (a dot-atom local part, an ASCII domain): built from its parts, not parsed again
    local_part, _, domain = to.rpartition("@")
    headers = {
        "From": sender,
        "To": str(Address(display_name=display_name, username=local_part, domain=domain)) if display_name else to,
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
    recipient = recipient_of(record)
    if recipient is None:
        return Refusal(NO_ADDRESS)
    try:
        display_name = recipient_display_name(recipient)
    except Refused as refused:
        return refused.refusal
    subject = f"Changes to your training record on {day_words(record)}"
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
    recipient = recipient_of(record)
    if recipient is not None:
        try:
            recipient_display_name(recipient)  # the greeting uses the name: refuse injected names here too
            email_ = recipient.get("email")
            if isinstance(email_, str):
                check_header_value(email_)
        except Refused as refused:
            return refused.refusal
    subject = f"The email address on your training record was changed on {day_words(record)}"
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
