"""Masking of personal details shown in emails.

Email is not a secure channel, and an address changed the same day may not be the trainee's, so the
digest shows only part of each contact detail (content.md, "Personal details are masked"):

- phone numbers by their last three digits: ``ending 123``;
- address lines by their first characters: ``12 C…``;
- the postcode by its outward part: ``CB2 …``;
- email addresses by the first character of the local part and the domain: ``a***@example.nhs.uk``.

Every function returns text that never contains the whole input (for any input long enough to be
worth hiding); a value too short to mask safely is replaced by :data:`HIDDEN`.  ``None`` and empty
values are not handled here: the caller shows them as "not recorded".
"""

from __future__ import annotations

import re

__all__ = ["HIDDEN", "mask_address_line", "mask_email", "mask_phone", "mask_postcode"]

#: Shown instead of a value too short to mask without revealing it.
HIDDEN = "recorded (hidden)"

ELLIPSIS = "\u2026"

_MIN_PHONE_DIGITS = 6
_ADDRESS_PREFIX = 4
_POSTCODE_RE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")


def mask_phone(value: str) -> str:
    """``01223 245151`` → ``ending 151``; fewer than six digits → :data:`HIDDEN`."""
    digits = [c for c in value if c.isascii() and c.isdigit()]
    if len(digits) < _MIN_PHONE_DIGITS:
        return HIDDEN
    return "ending " + "".join(digits[-3:])


def mask_address_line(value: str) -> str:
    """``12 Cherry Hinton Road`` → ``12 C…``: at most four characters, and never more than half."""
    text = " ".join(value.split())
    keep = min(_ADDRESS_PREFIX, len(text) // 2)
    prefix = text[:keep].rstrip()
    if not prefix:
        return HIDDEN
    return prefix + ELLIPSIS


def mask_postcode(value: str) -> str:
    """``CB2 0QQ`` → ``CB2 …``; something that is not a UK postcode keeps at most two characters."""
    compact = "".join(value.split()).upper()
    match = _POSTCODE_RE.match(compact)
    if match:
        return match.group(1) + " " + ELLIPSIS
    keep = min(2, len(compact) // 2)
    if keep == 0:
        return HIDDEN
    return compact[:keep] + ELLIPSIS


def mask_email(value: str) -> str:
    """``a.doctor@example.nhs.uk`` → ``a***@example.nhs.uk``; the domain is kept in full."""
    text = value.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        # Not an address: keep one character at most.
        return (text[0] + "***") if len(text) > 1 else HIDDEN
    return local[0] + "***@" + domain
