"""The wire form of a composed email: a ``multipart/alternative`` message, plain text then HTML.

:func:`to_bytes` writes what the mailer sends (CRLF line ends, quoted-printable UTF-8 parts, and
headers through ``email.header.Header``: RFC 2047 encoded and folded to 78 octets, so no line
comes near RFC 5322's 998). The ``email`` package's own writer (:func:`to_mime`, kept for the
structure tests) is not used for sending: it writes a display name or subject that merely looks
like an encoded word (``=?utf-8?q?Evil?=``) as it is, and every reader then decodes it into
something else; here such text, and any display name that is not plain ASCII, is always encoded.
The hostile-name tests (tests/unit/test_mime_hostile.py) check the bytes this writes, read back
by the ``email`` package's parser. Both add a ``Date`` header (injectable) and check every header
value again for control characters before it is written.
"""

from __future__ import annotations

import datetime as dt
import email.header
import email.policy
import email.utils
import hashlib
import quopri
import re
from email.message import EmailMessage
from functools import lru_cache
from typing import TYPE_CHECKING

from services.notifier.safety import check_header_value

if TYPE_CHECKING:
    from services.notifier.compose import ComposedEmail

__all__ = ["to_bytes", "to_mime"]


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


# one printable ASCII word: what RFC 2047 encoding and folding leave as it is when it fits on a line
_ONE_WORD = re.compile(r"[\x21-\x7e]+")
# a display name written as it is: letters, digits, spaces and a few marks, no "=?" (which a reader
# would take for the start of an encoded word)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9 .'-]{1,60}")


def _encoded(name: str, value: str) -> str:
    """``value`` as RFC 2047 encoded words (UTF-8), folded to lines of at most 78 octets. Always
    encoded, ASCII too: text that only looks like an encoded word (``=?utf-8?q?...?=``) is then
    read back as the text it is."""
    return email.header.Header(value, "utf-8", maxlinelen=78, header_name=name).encode(linesep="\r\n")


def _header_line(name: str, value: str) -> bytes:
    value = check_header_value(value)
    if name in _ADDRESS_HEADERS:
        display, addr = email.utils.parseaddr(value)
        if not display:
            value = addr
        elif _PLAIN_NAME.fullmatch(display) and "=?" not in display:
            value = email.utils.formataddr((display, addr))
            if len(name) + 2 + len(value) > 78:  # folded before the address
                cut = value.rindex(" <")
                value = value[:cut] + "\r\n" + value[cut:]
        else:
            value = f"{_encoded(name, display)}\r\n <{addr}>"
    elif _ONE_WORD.fullmatch(value) and len(name) + 2 + len(value) <= 78 and "=?" not in value:
        pass  # a Message-ID: written as it is (email.header.Header would return it unchanged)
    elif value.isascii() and "=?" not in value:
        value = email.header.Header(value, "us-ascii", maxlinelen=78, header_name=name).encode(linesep="\r\n")
    else:
        value = _encoded(name, value)
    return f"{name}: {value}\r\n".encode("ascii")


# Headers that are the same for many emails (From, Subject of a day, the fixed ones, Date within a
# second): encoded once.
# The per-email ones (To, Message-ID) are not kept: a cache of them would only hold personal data.
_PER_EMAIL_HEADERS = frozenset({"To", "Message-ID"})
_shared_header_line = lru_cache(maxsize=256)(_header_line)


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
    head = b"".join((_header_line if k in _PER_EMAIL_HEADERS else _shared_header_line)(k, v)
                    for k, v in composed.headers.items())
    head += _shared_header_line("Date", email.utils.format_datetime(when))
    head += (f"MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary=\"{boundary}\"\r\n\r\n"
             ).encode("ascii")
    sep = f"--{boundary}\r\n".encode("ascii")
    return (head + sep + _qp_part("text/plain", composed.text) + b"\r\n" + sep
            + _qp_part("text/html", composed.html) + f"\r\n--{boundary}--\r\n".encode("ascii"))
