"""Email composition (services/notifier/compose.py): golden files, content rules, safety.

Golden files live in tests/unit/golden/: the HTML is compared structurally (headings, paragraphs,
table cells with their scope, links) as JSON, the plain text as is. Regenerate them, and the
samples in docs/email-samples/, with ``UPDATE_GOLDEN=1 pytest tests/unit/test_compose.py``.
"""

from __future__ import annotations

import copy
import datetime as dt
import email
import email.policy
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.notifier import compose as compose_module
from services.notifier.compose import (
    ADDRESS_NOT_VALID,
    HEADER_NOT_VALID,
    MESSAGE_ID_NOT_VALID,
    NO_ADDRESS,
    NOTHING_TO_SEND,
    RECORD_NOT_VALID,
    SENDER_NOT_VALID,
    ComposedEmail,
    Contact,
    Contacts,
    Refusal,
    Refused,
    check_header_value,
    compose_digest,
    compose_previous_address_notice,
    deanery_of,
    local_offices_of,
    to_mime,
    validate_address,
)
from services.notifier.labels import (
    FIELD_LABELS,
    NOT_RECORDED,
    display_value,
    format_date,
    format_day,
    format_instant,
    format_time,
)
from services.notifier.mask import HIDDEN, mask_address_line, mask_email, mask_phone, mask_postcode

GOLDEN = Path(__file__).parent / "golden"
SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "email-samples"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

MAIL_FROM = "NHS England training records <no-reply@example.nhs.uk>"
SENT_AT = dt.datetime(2026, 11, 25, 7, 0, tzinfo=dt.UTC)
CONTACTS = Contacts.default()


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / name).read_text(encoding="utf-8"))
    return data


def digest(record: dict[str, Any], **kwargs: Any) -> ComposedEmail | Refusal:
    kwargs.setdefault("contacts", CONTACTS)
    kwargs.setdefault("message_id", f"digest.{record.get('id', 'x')}@notify.example.nhs.uk".replace(":", "."))
    kwargs.setdefault("mail_from", MAIL_FROM)
    return compose_digest(record, **kwargs)


def notice(record: dict[str, Any], **kwargs: Any) -> ComposedEmail | Refusal:
    kwargs.setdefault("contacts", CONTACTS)
    kwargs.setdefault("message_id", "notice.47165.2026-11-24@notify.example.nhs.uk")
    kwargs.setdefault("mail_from", MAIL_FROM)
    return compose_previous_address_notice(record, **kwargs)


def composed(result: ComposedEmail | Refusal) -> ComposedEmail:
    assert isinstance(result, ComposedEmail), result
    return result


# --------------------------------------------------------------------------------------------------
# HTML structure


class Structure(HTMLParser):
    """Headings, paragraphs, list items, tables (cells with tag and scope), links, and every tag seen."""

    BLOCKS: ClassVar[set[str]] = {"h1", "h2", "h3", "h4", "p", "li", "th", "td", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lang: str | None = None
        self.tags: set[str] = set()
        self.blocks: list[list[str]] = []
        self.tables: list[list[list[list[str]]]] = []
        self.links: list[list[str]] = []
        self.text_parts: list[str] = []
        self._open: list[tuple[str, dict[str, str | None], list[str]]] = []
        self._row: list[list[str]] | None = None
        self._href: str | None = None
        self._link_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        attributes = dict(attrs)
        if tag == "html":
            self.lang = attributes.get("lang")
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self._row = []
        if tag == "a":
            self._href = attributes.get("href") or ""
            self._link_text = []
        if tag in self.BLOCKS:
            self._open.append((tag, attributes, []))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append([self._href, "".join(self._link_text).strip()])
            self._href = None
        if tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None
        if self._open and self._open[-1][0] == tag:
            name, attributes, parts = self._open.pop()
            text = " ".join("".join(parts).split())
            if name in ("th", "td") and self._row is not None:
                self._row.append([name, attributes.get("scope") or "", text])
            else:
                self.blocks.append([name, text])

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)
        for _, _, parts in self._open:
            parts.append(data)
        if self._href is not None:
            self._link_text.append(data)

    def as_json(self) -> dict[str, Any]:
        return {"lang": self.lang, "blocks": self.blocks, "tables": self.tables, "links": self.links}


def structure(html: str) -> Structure:
    parser = Structure()
    parser.feed(html)
    parser.close()
    return parser


def golden_compare(name: str, mail: ComposedEmail) -> None:
    expected_path = GOLDEN / f"{name}.json"
    text_path = GOLDEN / f"{name}.txt"
    actual = {
        "subject": mail.subject,
        "headers": dict(mail.headers),
        "html": structure(mail.html).as_json(),
    }
    if UPDATE:
        expected_path.write_text(json.dumps(actual, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        text_path.write_text(mail.text, encoding="utf-8")
    assert json.loads(expected_path.read_text(encoding="utf-8")) == actual
    assert text_path.read_text(encoding="utf-8") == mail.text


# --------------------------------------------------------------------------------------------------
# Golden files


def test_full_digest_matches_golden() -> None:
    mail = composed(digest(load("full_record.json")))
    golden_compare("full_digest", mail)


def test_full_digest_copy_matches_golden() -> None:
    mail = composed(digest(load("full_record.json"), copy_of=SENT_AT))
    golden_compare("full_digest_copy", mail)


def test_minimal_digest_matches_golden() -> None:
    mail = composed(digest(load("minimal_record.json")))
    golden_compare("minimal_digest", mail)


def test_previous_address_notice_matches_golden() -> None:
    mail = composed(notice(load("full_record.json")))
    golden_compare("previous_address_notice", mail)


def test_docs_samples_are_rendered_from_the_full_golden_record() -> None:
    mail = composed(digest(load("full_record.json")))
    if UPDATE:
        SAMPLES.mkdir(parents=True, exist_ok=True)
        (SAMPLES / "digest.html").write_text(mail.html, encoding="utf-8")
        (SAMPLES / "digest.txt").write_text(mail.text, encoding="utf-8")
    assert (SAMPLES / "digest.html").read_text(encoding="utf-8") == mail.html
    assert (SAMPLES / "digest.txt").read_text(encoding="utf-8") == mail.text


# --------------------------------------------------------------------------------------------------
# Content rules (content.md)


def test_subject_greeting_and_first_line() -> None:
    mail = composed(digest(load("full_record.json")))
    assert mail.subject == "Changes to your training record on 24 November 2026"
    lines = [line for line in mail.text.splitlines() if line.strip()]
    assert lines[2] == "Dear Dr Okafor,"
    assert lines[3] == "Your training record changed on 24 November 2026. The details are below."
    blocks = structure(mail.html).blocks
    paragraphs = [text for tag, text in blocks if tag == "p"]
    assert paragraphs[0] == "Dear Dr Okafor,"
    assert paragraphs[1].startswith("Your training record changed on 24 November 2026.")


def test_sections_are_in_order_and_suppressed_changes_are_not_shown() -> None:
    mail = composed(digest(load("full_record.json")))
    headings = [text for tag, text in structure(mail.html).blocks if tag == "h2"]
    assert headings == [
        "Personal details",
        "Programme: Cardiology",
        "Curriculum",
        "Placement: Ipswich Hospital",
        "Placement: West Suffolk Hospital",
        "Placement: Royal Papworth Hospital",
        "If something is wrong",
    ]
    for part in (mail.text, mail.html):
        assert "SECRET-SUPPRESSED" not in part
        assert "2020" not in part


def test_sentences_a_person_would_say() -> None:
    text = composed(digest(load("full_record.json"))).text
    assert "Your placement at Royal Papworth Hospital has changed." in text
    assert (
        "A new placement was added: Cardiology (ST4) at West Suffolk Hospital, "
        "from 4 August 2027 to 1 February 2028." in text
    )
    assert "Your Cardiology placement at Ipswich Hospital starting 3 February 2027 was removed." in text
    assert "A new programme was added: Cardiology (EOE8950), from 5 August 2026 to 5 February 2030." in text
    assert "One of your curricula has changed." in text
    assert "Some of these changes were made earlier but reached us late." in text


def test_placement_sentence_with_start_date_and_known_as() -> None:
    record = load("minimal_record.json")
    record["changes"] = [
        {
            "entity": "placement", "id": "315", "kind": "updated", "suppressed": None,
            "fields": {
                "site_known_as": {"old": "Addenbrooke's Hospital", "new": "Royal Papworth Hospital"},
                "site": {"old": "Addenbrooke's Hospital", "new": "Papworth Hospital"},
                "start_date": {"old": "2027-02-03", "new": "2027-02-02"},
            },
        }
    ]
    text = composed(digest(record)).text
    assert "Your placement at Royal Papworth Hospital starting 2 February 2027 has changed." in text


def test_no_jargon_no_ids_no_email_address_in_the_body() -> None:
    record = load("full_record.json")
    mail = composed(digest(record))
    for part in (mail.text, mail.html):
        lowered = part.lower()
        for word in ("net change", "cdc", "record id", "debezium", "kafka", "none", "null", "suppress"):
            assert word not in lowered, word
        assert record["id"] not in part
        assert record["trainee_id"] not in part
        assert "6f1c9a52" not in part
        assert "a.doctor@example.nhs.uk" not in part
        assert "ada.okafor@example.ac.uk" not in part


def test_labels_values_and_masking_in_the_tables() -> None:
    tables = structure(composed(digest(load("full_record.json"))).html).tables
    personal = {row[0][2]: (row[1][2], row[2][2]) for row in tables[0][1:]}
    assert personal == {
        "Surname": ("Okafor-Smith", "Okafor"),
        "GMC number": (NOT_RECORDED, "7654321"),
        "Email address": ("a***@example.ac.uk", "a***@example.nhs.uk"),
        "Telephone number": (NOT_RECORDED, "ending 151"),
        "Mobile number": ("ending 123", "ending 456"),
        "Address line 1": ("12 C\u2026", "Flat\u2026"),
        "Postcode": ("CB1 \u2026", "CB2 \u2026"),
    }
    papworth = {row[0][2]: (row[1][2], row[2][2]) for row in tables[-1][1:]}
    assert papworth["Whole time equivalent"] == ("1.00 (full time)", "0.80 (80% of full time)")
    assert papworth["Host organisation"][1] == "Royal Papworth Hospital NHS Foundation Trust"
    added = {row[0][2]: row[1][2] for row in tables[-2][1:]}
    assert added["Employing organisation"] == "East of England Lead Employer"
    assert added["Start date"] == "4 August 2027"


def test_tables_have_header_cells_with_scope_and_html_is_accessible() -> None:
    parsed = structure(composed(digest(load("full_record.json"))).html)
    assert parsed.lang == "en-GB"
    assert "img" not in parsed.tags
    assert "h1" in parsed.tags
    for table in parsed.tables:
        header, *rows = table
        assert all(cell[0] == "th" and cell[1] == "col" for cell in header)
        for row in rows:
            assert row[0][0] == "th" and row[0][1] == "row"
            assert all(cell[0] == "td" for cell in row[1:])


def test_contact_is_the_local_office_from_the_programme() -> None:
    mail = composed(digest(load("full_record.json")))
    assert "NHS England East of England local office" in mail.text
    assert ["mailto:trainee.records.eoe@example.nhs.uk", "trainee.records.eoe@example.nhs.uk"] in structure(
        mail.html
    ).links


EAST_OF_ENGLAND = "Health Education England East of England"
EOE_CONTACT = "NHS England East of England local office"
GENERAL_CONTACT = "NHS England training records team"


def contact_in(mail: ComposedEmail) -> tuple[str, list[list[str]]]:
    """The contact section of both parts: the plain text from its heading on, the HTML's links."""
    text = mail.text[mail.text.index("If something is wrong"):]
    links = [link for link in structure(mail.html).links if "example.nhs.uk" in link[0]]
    return text, links


def test_contact_is_the_trainees_local_office_when_only_a_placement_changed() -> None:
    """NetChange v2: the record names the local offices of the trainee's current programmes."""
    record = {**load("minimal_record.json"), "local_offices": [EAST_OF_ENGLAND]}
    mail = composed(digest(record))
    text, links = contact_in(mail)
    assert f"contact the {EOE_CONTACT}." in text and GENERAL_CONTACT not in mail.text
    assert "Email: trainee.records.eoe@example.nhs.uk" in text
    assert "Website: https://www.example.nhs.uk/local-offices/eoe/contact" in text
    html = structure(mail.html)
    assert any(EOE_CONTACT in block[1] for block in html.blocks if block[0] == "p")
    assert not any(GENERAL_CONTACT in block[1] for block in html.blocks)
    assert ["mailto:trainee.records.eoe@example.nhs.uk", "trainee.records.eoe@example.nhs.uk"] in links
    assert ["https://www.example.nhs.uk/local-offices/eoe/contact",
            "https://www.example.nhs.uk/local-offices/eoe/contact"] in links


@pytest.mark.parametrize("offices", ["absent", None, [], ["Somewhere not configured"]])
def test_contact_is_the_general_one_when_no_local_office_is_known(offices: Any) -> None:
    record = load("minimal_record.json")
    if offices != "absent":
        record["local_offices"] = offices
    mail = composed(digest(record))
    text, links = contact_in(mail)
    assert f"contact the {GENERAL_CONTACT}." in text and "local office" not in mail.text
    assert any(GENERAL_CONTACT in block[1] for block in structure(mail.html).blocks if block[0] == "p")
    assert ["mailto:trainee.records@example.nhs.uk", "trainee.records@example.nhs.uk"] in links


def test_programme_change_wins_over_local_offices() -> None:
    record = {**load("minimal_record.json"), "local_offices": ["Health Education England Wessex"]}
    record["changes"] = [*record["changes"], {
        "entity": "programme_membership", "id": "pm-1", "kind": "updated", "suppressed": None,
        "fields": {"managing_deanery": {"old": "Health Education England Wessex", "new": EAST_OF_ENGLAND}}}]
    mail = composed(digest(record))
    text, links = contact_in(mail)
    assert f"contact the {EOE_CONTACT}." in text and "Wessex local office" not in mail.text
    assert ["mailto:trainee.records.eoe@example.nhs.uk", "trainee.records.eoe@example.nhs.uk"] in links
    assert any(EOE_CONTACT in block[1] for block in structure(mail.html).blocks if block[0] == "p")


def test_first_configured_local_office_in_sorted_order() -> None:
    contacts = Contacts.default()
    wessex = contacts.for_deanery("Health Education England Wessex")
    thames = contacts.for_deanery("Health Education England Thames Valley")
    record = load("minimal_record.json")
    for offices, expected in [
        (["Health Education England Wessex", "Health Education England Thames Valley"], thames),
        (["Health Education England Thames Valley", "Health Education England Wessex"], thames),
        (["An Unconfigured Office", "Health Education England Wessex"], wessex),
        (["Health Education England Wessex", "Health Education England Wessex"], wessex),
        (["Unknown A", "Unknown B"], contacts.fallback),
    ]:
        assert contacts.for_record({**record, "local_offices": offices}) == expected, offices
    # a changed deanery with no configured contact gives way to the trainee's local offices
    record["changes"] = [{"entity": "programme_membership", "id": "pm-1", "kind": "created", "suppressed": None,
                          "fields": {"managing_deanery": {"old": None, "new": "Somewhere Else"}}}]
    assert contacts.for_record(record) is contacts.fallback
    assert contacts.for_record({**record, "local_offices": ["Health Education England Wessex"]}) == wessex


def test_previous_address_notice_uses_the_local_offices_too() -> None:
    record = {**load("minimal_record.json"), "previous_email": "old.address@example.ac.uk",
              "local_offices": [EAST_OF_ENGLAND]}
    mail = composed(notice(record))
    assert f"contact the {EOE_CONTACT} straight away." in mail.text


@pytest.mark.parametrize(
    ("raw", "offices"),
    [
        ("absent", ()),
        (None, ()),
        ([], ()),
        ("Health Education England Wessex", ()),
        (["b", "a", "b", "", "  ", None, 3], ("a", "b")),
    ],
)
def test_local_offices_of(raw: Any, offices: tuple[str, ...]) -> None:
    record = load("minimal_record.json")
    if raw != "absent":
        record["local_offices"] = raw
    assert local_offices_of(record) == offices
    assert composed(digest(record)).text  # any of these still composes


def test_minimal_record_neutral_greeting_and_fallback_contact() -> None:
    mail = composed(digest(load("minimal_record.json")))
    assert "Dear doctor," in mail.text
    assert mail.headers["To"] == "b.trainee@example.nhs.uk"
    assert "NHS England training records team" in mail.text
    assert "One of your placements has changed." in mail.text


@pytest.mark.parametrize(
    ("recipient", "greeting"),
    [
        ({"title": "Dr", "forenames": "Ada", "surname": "Okafor"}, "Dear Dr Okafor,"),
        ({"title": None, "forenames": "Ada", "surname": "Okafor"}, "Dear Ada Okafor,"),
        ({"title": "Dr", "forenames": "Ada", "surname": ""}, "Dear doctor,"),
        ({"title": "Dr", "forenames": None, "surname": None}, "Dear doctor,"),
    ],
)
def test_greeting(recipient: dict[str, Any], greeting: str) -> None:
    record = load("minimal_record.json")
    record["recipient"] = {"email": "b.trainee@example.nhs.uk", **recipient}
    mail = composed(digest(record))
    assert greeting in mail.text
    assert "b.trainee" not in mail.text


def test_copy_is_marked_at_the_top() -> None:
    mail = composed(digest(load("full_record.json"), copy_of=SENT_AT))
    assert mail.subject == "Copy: Changes to your training record on 24 November 2026"
    assert mail.text.splitlines()[0] == "This is a copy of an email we first sent on 25 November 2026 at 7am."
    assert structure(mail.html).blocks[1] == [
        "p",
        "This is a copy of an email we first sent on 25 November 2026 at 7am.",
    ]


def test_short_day_instant_subject_uses_london_time() -> None:
    record = load("minimal_record.json")
    record["day"] = "2026-11-24T10:31:00Z"
    assert composed(digest(record)).subject == "Changes to your training record on 24 November 2026 at 10:31am"
    record["day"] = "2026-07-01T10:31:00Z"
    assert composed(digest(record)).subject == "Changes to your training record on 1 July 2026 at 11:31am"


def test_previous_address_notice_content() -> None:
    mail = composed(notice(load("full_record.json")))
    assert mail.to == "ada.okafor@example.ac.uk"
    assert mail.headers["To"] == "ada.okafor@example.ac.uk"
    assert mail.subject == "The email address on your training record was changed on 24 November 2026"
    assert "The email address on your training record was changed on 24 November 2026." in mail.text
    assert "a***@example.nhs.uk" in mail.text
    assert "NHS England East of England local office" in mail.text
    for part in (mail.text, mail.html):
        assert "a.doctor@example.nhs.uk" not in part
        assert "Cardiology" not in part  # nothing else of the record


def test_previous_address_notice_refusals() -> None:
    record = load("minimal_record.json")
    assert notice(record) == Refusal(NO_ADDRESS)
    record["previous_email"] = "old\r\nBcc: x@example.com"
    assert notice(record) == Refusal(HEADER_NOT_VALID)
    record["previous_email"] = "old@example.com"
    record["suppressed"] = "placeholder person"
    assert notice(record) == Refusal(NOTHING_TO_SEND, "placeholder person")


def test_previous_address_notice_when_email_removed() -> None:
    record = load("full_record.json")
    record["recipient"] = None
    mail = composed(notice(record))
    assert "was removed on 24 November 2026" in mail.text
    assert "Dear doctor," in mail.text


# --------------------------------------------------------------------------------------------------
# Refusals


def test_suppressed_record_is_nothing_to_send() -> None:
    record = load("full_record.json")
    record["suppressed"] = "dummy record person"
    assert digest(record) == Refusal(NOTHING_TO_SEND, "dummy record person")


def test_all_changes_suppressed_is_nothing_to_send() -> None:
    record = load("full_record.json")
    record["changes"] = [c for c in record["changes"] if c["suppressed"] is not None]
    assert digest(record) == Refusal(NOTHING_TO_SEND)


def test_only_unknown_entities_or_fields_is_nothing_to_send() -> None:
    record = load("minimal_record.json")
    record["changes"] = [
        {"entity": "form_r", "id": "1", "kind": "updated", "suppressed": None,
         "fields": {"lifecycle_state": {"old": "DRAFT", "new": "SUBMITTED"}}},
        {"entity": "placement", "id": "2", "kind": "updated", "suppressed": None,
         "fields": {"owner": {"old": "a", "new": "b"}}},
    ]
    assert digest(record) == Refusal(NOTHING_TO_SEND)


@pytest.mark.parametrize("recipient", [None, {"email": None, "title": "Dr", "forenames": "A", "surname": "B"},
                                       {"email": "  ", "title": "Dr", "forenames": "A", "surname": "B"}])
def test_no_address(recipient: dict[str, Any] | None) -> None:
    record = load("minimal_record.json")
    record["recipient"] = recipient
    assert digest(record) == Refusal(NO_ADDRESS)


@pytest.mark.parametrize("field", ["title", "forenames", "surname", "email"])
@pytest.mark.parametrize("bad", ["Okafor\r\nBcc: victim@example.com", "Okafor\nX", "Oka\x00for", "Oka\u2028for"])
def test_control_characters_in_header_values_are_refused(field: str, bad: str) -> None:
    record = load("full_record.json")
    record["recipient"][field] = bad if field != "email" else "a.doctor@example.nhs.uk" + bad
    result = digest(record)
    assert result == Refusal(HEADER_NOT_VALID)
    assert isinstance(result, Refusal)
    assert "Okafor" not in result.reason and "@" not in result.reason


def test_invalid_addresses_are_refused_without_personal_data() -> None:
    record = load("minimal_record.json")
    for bad in ("not an address", "b.trainee@", "b.trainee@localhost", "b.trainee@example.test",
                "Ada <b.trainee@example.nhs.uk>"):
        record["recipient"]["email"] = bad
        result = digest(record)
        assert result == Refusal(ADDRESS_NOT_VALID), bad
    record["recipient"]["email"] = "b.trainee@nhs.test"
    assert isinstance(digest(record, allow_test_domains=True), ComposedEmail)


def test_bad_sender_and_message_id_are_refused() -> None:
    record = load("minimal_record.json")
    assert digest(record, mail_from="no-reply@example.nhs.uk\r\nBcc: x@example.com") == Refusal(SENDER_NOT_VALID)
    assert digest(record, mail_from="not an address") == Refusal(SENDER_NOT_VALID)
    assert digest(record, message_id="a b@c") == Refusal(MESSAGE_ID_NOT_VALID)
    assert digest(record, message_id="abc\r\n@x") == Refusal(HEADER_NOT_VALID)
    assert composed(digest(record, message_id="<x.1@notify.example.nhs.uk>")).message_id == (
        "<x.1@notify.example.nhs.uk>"
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.update(day="yesterday"),
        lambda r: r.update(day=None),
        lambda r: r.update(changes=None),
        lambda r: r.update(changes=[{"entity": "placement", "kind": "moved", "fields": {}}]),
        lambda r: r.update(changes=[{"entity": "placement", "kind": "updated", "fields": {"grade": "F2"}}]),
    ],
)
def test_malformed_record_is_refused(mutate: Any) -> None:
    record = load("minimal_record.json")
    mutate(record)
    assert digest(record) == Refusal(RECORD_NOT_VALID)


def test_validate_address() -> None:
    assert validate_address("a.doctor@example.nhs.uk") == "a.doctor@example.nhs.uk"
    assert validate_address(" a.doctor@Example.NHS.uk ") == "a.doctor@example.nhs.uk"
    with pytest.raises(Refused) as caught:
        validate_address("a.doctor@example.nhs.uk\r\n")
    assert caught.value.refusal == Refusal(HEADER_NOT_VALID)
    with pytest.raises(Refused):
        validate_address("x@foo.invalid", allow_test_domains=True)
    assert validate_address("x@foo.test", allow_test_domains=True) == "x@foo.test"
    assert check_header_value("Dr Ada Okafor") == "Dr Ada Okafor"


# --------------------------------------------------------------------------------------------------
# Hostile payloads

PAYLOADS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "' onmouseover='alert(1)"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_text_is_escaped_everywhere(payload: str) -> None:
    record = load("full_record.json")
    for change in record["changes"]:
        for pair in change["fields"].values():
            for side in ("old", "new"):
                if pair[side] is not None:
                    pair[side] = payload
    for key in ("title", "forenames", "surname"):
        record["recipient"][key] = payload
    contacts = Contacts(fallback=Contact(name=payload, email="help@example.nhs.uk"))
    for result in (digest(record, contacts=contacts), notice(record, contacts=contacts)):
        mail = composed(result)
        parsed = structure(mail.html)
        assert not parsed.tags & {"script", "img"}
        assert "<script" not in mail.html and "<img" not in mail.html
        visible = "".join(parsed.text_parts)
        assert payload in visible or payload[:4] in visible  # shown as text (masked values are cut)
        message = to_mime(mail, date=SENT_AT)
        assert message["To"].addresses[0].addr_spec == "a.doctor@example.nhs.uk" or result is not None


def test_hostile_contact_url_is_rejected() -> None:
    for url in ("javascript:alert(1)", 'https://x.example.nhs.uk/"><script>', "data:text/html,<b>"):
        with pytest.raises(ValueError):
            Contact(name="Office", url=url)


def test_html_environment_autoescapes_and_is_strict() -> None:
    env = compose_module._html_env()
    assert env.autoescape is True
    assert env.undefined.__name__ == "StrictUndefined"


# --------------------------------------------------------------------------------------------------
# MIME


def test_to_mime_is_multipart_alternative_text_then_html() -> None:
    mail = composed(digest(load("full_record.json")))
    message = to_mime(mail, date=SENT_AT)
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert message["Message-ID"] == "<digest.47165.2026-11-24@notify.example.nhs.uk>"
    assert message["Date"] == "Wed, 25 Nov 2026 07:00:00 +0000"
    assert message["Subject"] == mail.subject
    assert message["Auto-Submitted"] == "auto-generated"
    reparsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    text_part = reparsed.get_body(preferencelist=("plain",))
    html_part = reparsed.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None
    assert text_part.get_content() == mail.text.replace("\n", "\r\n") or text_part.get_content() == mail.text
    assert "Dear Dr Okafor," in html_part.get_content()
    assert str(reparsed["To"]) == "Dr Ada Okafor <a.doctor@example.nhs.uk>"
    assert to_mime(mail, date=SENT_AT).as_bytes().count(b"Date:") == 1


def test_to_mime_non_ascii_names() -> None:
    record = load("full_record.json")
    record["recipient"].update(forenames="Siân", surname="Öztürk")
    message = to_mime(composed(digest(record)), date=SENT_AT)
    raw = message.as_bytes()
    assert raw.isascii()
    reparsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(reparsed["To"]) == "Dr Siân Öztürk <a.doctor@example.nhs.uk>"


def test_to_mime_refuses_injected_header() -> None:
    mail = composed(digest(load("minimal_record.json")))
    bad = ComposedEmail(
        to=mail.to, subject=mail.subject, text=mail.text, html=mail.html, message_id=mail.message_id,
        headers={**mail.headers, "Subject": "x\r\nBcc: y@example.com"},
    )
    with pytest.raises(Refused):
        to_mime(bad, date=SENT_AT)


# --------------------------------------------------------------------------------------------------
# Masking


@pytest.mark.parametrize(
    ("value", "masked"),
    [("07700 900123", "ending 123"), ("+44 (0)1223 245151", "ending 151"), ("12345", HIDDEN), ("", HIDDEN)],
)
def test_mask_phone(value: str, masked: str) -> None:
    assert mask_phone(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [("12 Cherry Hinton Road", "12 C\u2026"), ("Flat 3", "Fla\u2026"), ("AB", "A\u2026"), ("A", HIDDEN)],
)
def test_mask_address_line(value: str, masked: str) -> None:
    assert mask_address_line(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [("CB2 0QQ", "CB2 \u2026"), ("cb20qq", "CB2 \u2026"), ("SW1A 1AA", "SW1A \u2026"), ("M1 1AE", "M1 \u2026"),
     ("BFPO 105", "BF\u2026"), ("X", HIDDEN)],
)
def test_mask_postcode(value: str, masked: str) -> None:
    assert mask_postcode(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [("a.doctor@example.nhs.uk", "a***@example.nhs.uk"), ("z@example.org", "z***@example.org"),
     ("nonsense", "n***"), ("x", HIDDEN)],
)
def test_mask_email(value: str, masked: str) -> None:
    assert mask_email(value) == masked


PHONES = st.from_regex(r"0[1-9][0-9]{3} ?[0-9]{6}", fullmatch=True)
LOCALS = st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z0-9]{1,8})?", fullmatch=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=PHONES, new=PHONES)
def test_full_phone_never_appears(old: str, new: str) -> None:
    record = load("minimal_record.json")
    record["changes"] = [
        {"entity": "personal_details", "id": "51234", "kind": "updated", "suppressed": None,
         "fields": {"mobile_number": {"old": old, "new": new}}}
    ]
    mail = composed(digest(record))
    for part in (mail.text, mail.html):
        for phone in (old, new):
            assert phone not in part
            assert phone.replace(" ", "") not in part.replace(" ", "")
    assert f"ending {new[-3:]}" in mail.text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=LOCALS, new=LOCALS)
def test_full_email_never_appears(old: str, new: str) -> None:
    old_addr, new_addr = f"{old}@hyp.example.org", f"{new}@hyp.example.org"
    record = load("minimal_record.json")
    record["recipient"]["email"] = new_addr
    record["previous_email"] = old_addr
    record["changes"] = [
        {"entity": "personal_details", "id": "51234", "kind": "updated", "suppressed": None,
         "fields": {"email": {"old": old_addr, "new": new_addr}}}
    ]
    for result in (digest(record), notice(record)):
        mail = composed(result)
        for part in (mail.text, mail.html):
            assert old_addr not in part
            assert new_addr not in part
        assert f"{new[0]}***@hyp.example.org" in mail.text


# --------------------------------------------------------------------------------------------------
# Labels and values


NOTIFYING_FIELDS = {
    "personal_details": {"title", "forenames", "surname", "known_as", "email", "telephone_number",
                         "mobile_number", "address1", "address2", "address3", "address4", "post_code",
                         "gmc_number"},
    "programme_membership": {"programme_name", "programme_number", "managing_deanery", "designated_body",
                             "programme_membership_type", "start_date", "end_date"},
    "curriculum_membership": {"curriculum_name", "specialty", "start_date", "end_date"},
    "placement": {"placement_type", "start_date", "end_date", "grade", "specialty", "sub_specialty", "site",
                  "site_known_as", "site_location", "employing_body", "training_body",
                  "whole_time_equivalent"},
}


def test_every_notifying_field_has_a_label_in_words() -> None:
    for entity, fields in NOTIFYING_FIELDS.items():
        assert set(FIELD_LABELS[entity]) == fields
        for label in FIELD_LABELS[entity].values():
            assert "_" not in label and label[0].isupper()
    placement = FIELD_LABELS["placement"]
    assert placement["employing_body"] == "Employing organisation"
    assert placement["training_body"] == "Host organisation"
    assert placement["site_known_as"] == "Site (known as)"
    assert placement["whole_time_equivalent"] == "Whole time equivalent"


@pytest.mark.parametrize(
    ("entity", "field", "value", "shown"),
    [
        ("placement", "start_date", "2027-02-02", "2 February 2027"),
        ("placement", "start_date", None, NOT_RECORDED),
        ("placement", "grade", "", NOT_RECORDED),
        ("placement", "grade", "  ", NOT_RECORDED),
        ("placement", "grade", "ST3\r\nX", "ST3 X"),
        ("placement", "whole_time_equivalent", "0.50", "0.50 (50% of full time)"),
        ("placement", "whole_time_equivalent", "1.00", "1.00 (full time)"),
        ("placement", "whole_time_equivalent", "abc", "abc"),
        ("programme_membership", "programme_membership_type", "LAT", "Locum appointment for training (LAT)"),
        ("programme_membership", "end_date", "not a date", "not a date"),
        ("personal_details", "gmc_number", "7654321", "7654321"),
        ("personal_details", "surname", "Okafor", "Okafor"),
        ("personal_details", "post_code", "CB2 0QQ", "CB2 \u2026"),
    ],
)
def test_display_value(entity: str, field: str, value: object, shown: str) -> None:
    assert display_value(entity, field, value) == shown


# --------------------------------------------------------------------------------------------------
# Dates and times


def test_format_date() -> None:
    assert format_date(dt.date(2026, 11, 24)) == "24 November 2026"
    assert format_date(dt.date(2027, 2, 2)) == "2 February 2027"
    assert format_day("2026-11-24") == "24 November 2026"


@pytest.mark.parametrize(
    ("day", "words"),
    [
        ("2026-11-24T10:31:00Z", "24 November 2026 at 10:31am"),  # GMT
        ("2026-07-01T13:05:00Z", "1 July 2026 at 2:05pm"),  # BST
        ("2026-03-28T23:30:00Z", "28 March 2026 at 11:30pm"),  # last GMT evening
        ("2026-03-29T00:30:00Z", "29 March 2026 at 12:30am"),  # before the clocks go forward (01:00 UTC)
        ("2026-03-29T01:30:00Z", "29 March 2026 at 2:30am"),  # after: BST
        ("2026-10-24T23:30:00Z", "25 October 2026 at 12:30am"),  # BST: the London date is the next day
        ("2026-10-25T00:30:00Z", "25 October 2026 at 1:30am"),  # first 1:30am (BST)
        ("2026-10-25T01:30:00Z", "25 October 2026 at 1:30am"),  # second 1:30am (GMT)
        ("2026-06-30T23:00:00+00:00", "1 July 2026 at midnight"),
        ("2026-06-30T11:00:00Z", "30 June 2026 at midday"),
    ],
)
def test_format_day_instant_in_london_time(day: str, words: str) -> None:
    assert format_day(day) == words


def test_format_time_and_instant() -> None:
    assert format_time(dt.time(0, 0)) == "midnight"
    assert format_time(dt.time(12, 0)) == "midday"
    assert format_time(dt.time(7, 0)) == "7am"
    assert format_time(dt.time(12, 5)) == "12:05pm"
    assert format_time(dt.time(0, 5)) == "12:05am"
    assert format_instant(dt.datetime(2026, 7, 1, 6, 0)) == "1 July 2026 at 7am"  # naive = UTC


def test_format_day_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        format_day("24/11/2026")


# --------------------------------------------------------------------------------------------------
# Contacts


def test_contacts_default_and_loose_matching() -> None:
    contacts = Contacts.default()
    assert contacts.for_deanery("Health Education England East of England").email == (
        "trainee.records.eoe@example.nhs.uk"
    )
    assert contacts.for_deanery("NHS England Kent Surrey & Sussex").name == (
        "NHS England Kent, Surrey and Sussex local office"
    )
    assert contacts.for_deanery("Somewhere Else") is contacts.fallback
    assert contacts.for_deanery(None) is contacts.fallback
    for contact in [contacts.fallback, *contacts.local_offices.values()]:
        assert contact.email is None or contact.email.endswith("@example.nhs.uk")
        assert contact.url is None or contact.url.startswith("https://www.example.nhs.uk/")


def test_contacts_from_json(tmp_path: Path) -> None:
    path = tmp_path / "contacts.json"
    path.write_text(json.dumps({
        "fallback": {"name": "Help desk", "url": "https://help.example.nhs.uk/"},
        "local_offices": {"Health Education England Wessex": {"name": "Wessex office",
                                                               "email": "wessex@example.nhs.uk"}},
    }), encoding="utf-8")
    contacts = Contacts.from_json(path)
    assert contacts.for_deanery("NHS England Wessex") == Contact(name="Wessex office", email="wessex@example.nhs.uk")
    assert contacts.fallback == Contact(name="Help desk", url="https://help.example.nhs.uk/")
    record = load("minimal_record.json")
    text = composed(digest(record, contacts=contacts)).text
    assert "contact the Help desk." in text and "Website: https://help.example.nhs.uk/" in text
    assert "Email:" not in text
    path.write_text(json.dumps({"local_offices": {"X": {"name": "X"}}}), encoding="utf-8")
    with pytest.raises(ValueError):
        Contacts.from_json(path)
    path.write_text(json.dumps({"local_offices": {"X": {"name": "X", "email": "x@example.nhs.uk"}}}),
                    encoding="utf-8")
    assert Contacts.from_json(path).fallback == Contacts.default().fallback


def test_deanery_of() -> None:
    record = load("full_record.json")
    assert deanery_of(record) == "Health Education England East of England"
    assert deanery_of(load("minimal_record.json")) is None
    record["changes"] = [
        {"entity": "programme_membership", "id": "a", "kind": "deleted", "suppressed": None,
         "fields": {"managing_deanery": {"old": "Health Education England Wessex", "new": None}}},
        {"entity": "programme_membership", "id": "b", "kind": "updated", "suppressed": None,
         "fields": {"managing_deanery": {"old": "Health Education England Wessex",
                                         "new": "Health Education England Thames Valley"}}},
    ]
    assert deanery_of(record) == "Health Education England Thames Valley"


# --------------------------------------------------------------------------------------------------
# Hygiene


def test_no_streaming_or_smtp_imports() -> None:
    package = Path(compose_module.__file__).parent
    for name in ("compose.py", "labels.py", "mask.py"):
        source = (package / name).read_text(encoding="utf-8")
        for module in ("faust", "aiokafka", "confluent_kafka", "aiosmtplib", "typer"):
            assert not re.search(rf"^\s*(import|from)\s+{module}\b", source, re.MULTILINE), (name, module)


def test_input_record_is_not_mutated() -> None:
    record = load("full_record.json")
    before = copy.deepcopy(record)
    digest(record)
    notice(record)
    assert record == before


def test_to_bytes_is_the_same_message_as_to_mime() -> None:
    """The fast writer and the email package agree on every header and decoded part."""
    record = json.loads((GOLDEN / "full_record.json").read_text())
    record["recipient"]["surname"] = "Ó Súilleabháin-Łukasiewicz"  # non-ASCII display name
    composed = compose_module.compose_digest(record, contacts=compose_module.Contacts.default(),
                                             message_id="<x@example.nhs.uk>",
                                             mail_from="Training record notifications <no-reply@example.nhs.uk>")
    assert isinstance(composed, compose_module.ComposedEmail)
    when = dt.datetime(2026, 11, 25, 7, 0, tzinfo=dt.UTC)
    fast = email.message_from_bytes(compose_module.to_bytes(composed, date=when), policy=email.policy.default)
    slow = email.message_from_bytes(compose_module.to_mime(composed, date=when).as_bytes(), policy=email.policy.default)
    for name in ("From", "To", "Subject", "Message-ID", "Date", "Auto-Submitted", "X-Auto-Response-Suppress"):
        assert str(fast[name]) == str(slow[name]), name
    assert "Łukasiewicz" in str(fast["To"])
    fast_parts = [(p.get_content_type(), p.get_content()) for p in fast.walk() if not p.is_multipart()]
    slow_parts = [(p.get_content_type(), p.get_content()) for p in slow.walk() if not p.is_multipart()]
    assert fast_parts == slow_parts and [t for t, _ in fast_parts] == ["text/plain", "text/html"]
