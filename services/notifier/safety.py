"""Refusals and the checks behind them: every value that reaches a mail header, every address.

A composed email is refused rather than sent when something in it could not be trusted: this module
holds the fixed, personal-data-free refusal reasons, the :class:`Refusal` result and the
:class:`Refused` exception that carries one, and the checks that raise it — control characters in a
header value (header injection), recipient and sender addresses (email-validator, no DNS), the
``Message-ID`` and the recipient's display name. It has no I/O.
"""

from __future__ import annotations

import email.policy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.headerregistry import Address
from functools import lru_cache
from typing import Any, Final

import email_validator

__all__ = [
    "ADDRESS_NOT_VALID",
    "HEADER_NOT_VALID",
    "MESSAGE_ID_NOT_VALID",
    "NOTHING_TO_SEND",
    "NO_ADDRESS",
    "RECORD_NOT_VALID",
    "SENDER_NOT_VALID",
    "Refusal",
    "Refused",
    "check_header_value",
    "has_control_characters",
    "normalise_message_id",
    "recipient_display_name",
    "sender_header",
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


# --------------------------------------------------------------------------------------------------
# Header values and addresses

# C0 controls, DEL, C1 controls (NEL among them), Unicode line and paragraph separators.
_HEADER_BAD_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MESSAGE_ID_RE: Final = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>$")


def has_control_characters(value: str) -> bool:
    """Whether ``value`` holds CR, LF, NUL or any other control character (see
    :func:`check_header_value`)."""
    return _HEADER_BAD_RE.search(value) is not None


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


def normalise_message_id(message_id: str) -> str:
    """``message_id`` in angle brackets; raises :class:`Refused` (``MESSAGE_ID_NOT_VALID``) if it is not
    one ``left@right`` id of printable ASCII (``HEADER_NOT_VALID`` for control characters)."""
    check_header_value(message_id)
    text = message_id.strip()
    if not text.startswith("<"):
        text = f"<{text}>"
    if not _MESSAGE_ID_RE.match(text):
        raise Refused(MESSAGE_ID_NOT_VALID)
    return text


@lru_cache(maxsize=16)
def sender_header(mail_from: str, allow_test_domains: bool) -> str:
    """The ``From`` header for ``mail_from`` (one address, optional display name), its address
    validated; raises :class:`Refused` (``SENDER_NOT_VALID``) otherwise. The mailer has one sender:
    parsed and validated once (a refusal is not cached, so it is raised every time)."""
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


# Breaks a header line (injection): refused. Other control characters are only cleaned for display.
_LINE_BREAKS_RE: Final = re.compile(r"[\r\n\x00\x85\u2028\u2029]")
_OTHER_CONTROLS_RE: Final = re.compile(r"[\x01-\x1f\x7f-\x9f]")
DISPLAY_NAME_MAX: Final = 64  # characters of a name in the To header (the body shows it in full)


def clean_display(value: str) -> str:
    """``value`` for display: a tab or another control character becomes a space, whitespace is
    folded. Raises :class:`Refused` (``HEADER_NOT_VALID``) for CR, LF, NUL or another line break."""
    if _LINE_BREAKS_RE.search(value):
        raise Refused(HEADER_NOT_VALID)
    return " ".join(_OTHER_CONTROLS_RE.sub(" ", value).split())


def shorten(value: str, limit: int = DISPLAY_NAME_MAX) -> str:
    """At most ``limit`` characters, cut at a space where one is near, with an ellipsis."""
    if len(value) <= limit:
        return value
    cut = value[:limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "\u2026"


def recipient_display_name(recipient: Mapping[str, Any]) -> str:
    """The ``To`` display name from the recipient's title, forenames and surname: control characters
    cleaned (:func:`clean_display`), shortened to :data:`DISPLAY_NAME_MAX` characters. Raises
    :class:`Refused` (``HEADER_NOT_VALID``) if any of them holds a line break (header injection)."""
    parts = []
    for key in ("title", "forenames", "surname"):
        value = recipient.get(key)
        if isinstance(value, str):
            cleaned = clean_display(value)
            if cleaned:
                parts.append(cleaned)
    return shorten(" ".join(parts))
