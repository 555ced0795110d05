"""Hostile names through the bytes the mailer actually sends (``to_bytes``), read back by the
``email`` package's parser: no line over 998 octets (headers at most 78), headers in ASCII only,
the To display name and the Subject read back exactly as composed, one To address and no header
the name could add. A reference model says what the display name should be: control characters
cleaned, whitespace folded, shortened to 64 characters; a line break refuses the email."""

from __future__ import annotations

import email
import email.policy
import re
from email.header import decode_header, make_header
from email.utils import parseaddr

from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier.compose import ComposedEmail, Refusal
from services.notifier.mime import to_bytes
from services.notifier.safety import DISPLAY_NAME_MAX, HEADER_NOT_VALID
from tests.unit.test_compose import SENT_AT, digest, load

BREAKS = "\r\n\x00\x85\u2028\u2029"
TRICKS = ["=?utf-8?q?Evil?=", "=?UTF-8?B?SGk=?=", "\"Quoted\" <x@evil.test>", "a, b@evil.test", "<>", "\\",
          "Siân", "Öztürk", "李", "\U0001f600", "\t", "\x01", "\x7f", "\x9b", "Bcc: x@evil.test", "  ", ":", ";"]

names = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(TRICKS), max_size=8).map("".join),
    st.builds(lambda s, n: s * n, st.sampled_from(["Zoë ", "A", "=?x?= ", "é"]), st.integers(0, 2600)),
)


def read_to(raw: bytes) -> tuple[str, str]:
    """(display name, address) of the To header as RFC 2047 reads it: whitespace between adjacent
    encoded words is not part of the text. (The ``email`` package's address parser puts a space there,
    for its own writer's output too, so the display name is decoded with ``decode_header``.)"""
    head = raw.partition(b"\r\n\r\n")[0].decode("ascii")
    (line,) = [h for h in re.split(r"\r\n(?![ \t])", head) if h.lower().startswith("to:")]
    value = re.sub(r"\r\n[ \t]", " ", line[3:]).strip()
    found = re.fullmatch(r"(.*?)\s*<([^<>]*)>", value)
    if found is None:
        return "", value
    display, addr = found.groups()
    if display.startswith("=?"):
        return str(make_header(decode_header(display))), addr
    return parseaddr(value)[0], addr


def expected_display(title: str, forenames: str, surname: str) -> str | None:
    """The reference: None when the email must be refused, else the display name."""
    parts = []
    for value in (title, forenames, surname):
        if any(c in value for c in BREAKS):
            return None
        cleaned = " ".join(re.sub(r"[\x01-\x1f\x7f-\x9f]", " ", value).split())
        if cleaned:
            parts.append(cleaned)
    full = " ".join(parts)
    if len(full) <= DISPLAY_NAME_MAX:
        return full
    cut = full[:DISPLAY_NAME_MAX - 1]
    if cut.rfind(" ") >= DISPLAY_NAME_MAX // 2:
        cut = cut[:cut.rfind(" ")]
    return cut.rstrip() + "\u2026"


@settings(max_examples=400, deadline=None)
@given(names, names, names)
def test_hostile_names_in_the_bytes_sent(title: str, forenames: str, surname: str) -> None:
    record = load("full_record.json")
    record["recipient"].update(title=title, forenames=forenames, surname=surname)
    result = digest(record)
    want = expected_display(title, forenames, surname)
    if want is None:
        assert isinstance(result, Refusal) and result.reason == HEADER_NOT_VALID
        return
    assert isinstance(result, ComposedEmail), result
    raw = to_bytes(result, date=SENT_AT)
    head = raw.partition(b"\r\n\r\n")[0]
    assert head.isascii()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert not parsed.defects and all(not p.defects for p in parsed.walk())
    (to,) = parsed["To"].addresses  # one address, whatever the name held
    assert to.addr_spec == "a.doctor@example.nhs.uk"
    assert read_to(raw) == (want, "a.doctor@example.nhs.uk")
    assert str(parsed["Subject"]) == result.subject
    assert sorted(parsed.keys()) == sorted([*result.headers, "Date", "MIME-Version", "Content-Type"])
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    assert text.rstrip("\n") == result.text.replace("\r\n", "\n").rstrip("\n")  # the body as composed


def test_plain_names_of_every_length_fold_before_the_address() -> None:
    inner = test_hostile_names_in_the_bytes_sent.hypothesis.inner_test  # type: ignore[attr-defined]
    for n in range(70):
        inner("", "", "A" * n)
        inner("Dr", "Ada " * (n // 4), "O'Neill-" + "B" * (n % 9))


def test_a_ten_kilobyte_forename_and_an_encoded_word_lookalike() -> None:
    record = load("full_record.json")
    record["recipient"].update(forenames="=?utf-8?q?Evil?= " + "Zoë" * 3400, surname="Okafor")
    mail = digest(record)
    assert isinstance(mail, ComposedEmail)
    raw = to_bytes(mail, date=SENT_AT)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    display, _ = read_to(raw)
    assert display.startswith("Dr =?utf-8?q?Evil?= Zoë") and display.endswith("\u2026")
    assert len(display) <= DISPLAY_NAME_MAX
    record["recipient"].update(forenames="Ada\tMaria\x01", surname="Okafor")  # cleaned, not refused
    mail = digest(record)
    assert isinstance(mail, ComposedEmail)
    assert read_to(to_bytes(mail, date=SENT_AT))[0] == "Dr Ada Maria Okafor"
    assert "Dear Dr Okafor," in mail.text
    record["recipient"].update(forenames="Ada\r\nBcc: x@evil.test")
    refused = digest(record)
    assert isinstance(refused, Refusal) and refused.reason == HEADER_NOT_VALID
