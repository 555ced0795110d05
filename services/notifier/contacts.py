"""Whom a trainee should contact if an email's news is wrong: the local office contacts.

A :class:`Contacts` table maps a managing deanery (local office) to a :class:`Contact` — a name and
an email address and/or a web page — with a fallback general contact for every record whose local
office is unknown. Deanery names are matched loosely. :meth:`Contacts.for_record` chooses a record's
contact: the deanery of a programme membership among the day's changes (:func:`deanery_of`), else
the first configured one of the trainee's current local offices (:func:`local_offices_of`, the
record's optional ``local_offices``, NetChange v2), else the fallback. The built-in table
(:data:`DEFAULT_CONTACTS`, example addresses) covers the NHS England local offices;
:meth:`Contacts.from_json` reads another from a file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from services.notifier.safety import Refused, has_control_characters, validate_address

__all__ = ["DEFAULT_CONTACTS", "Contact", "Contacts", "deanery_of", "local_offices_of"]


@dataclass(frozen=True)
class Contact:
    """Whom to contact if something is wrong: a name and an email address and/or a web page."""

    name: str
    email: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if not self.name.strip() or has_control_characters(self.name):
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


def local_offices_of(record: Mapping[str, Any]) -> tuple[str, ...]:
    """The local offices (managing deaneries) of the trainee's current programme memberships at the
    day's close, from the record's optional ``local_offices`` (NetChange v2), sorted and deduplicated.

    Empty when the record has no such field (written with v1, or an older batch file), when it is
    null (none known), or when it is not a list; entries that are not non-blank text are ignored.
    """
    raw = record.get("local_offices")
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        return ()
    return tuple(sorted({office for office in raw if isinstance(office, str) and office.strip()}))


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

    def configured(self, deanery: str | None) -> Contact | None:
        """The contact configured for a managing deanery (local office), or ``None``."""
        if not deanery:
            return None
        return self._index.get(_deanery_key(deanery))

    def for_deanery(self, deanery: str | None) -> Contact:
        """The contact for a managing deanery (local office), or the fallback."""
        return self.configured(deanery) or self.fallback

    def for_record(self, record: Mapping[str, Any]) -> Contact:
        """The contact for a net-change record, the first of these that has a configured contact:

        1. the managing deanery of a programme membership among the day's changes
           (:func:`deanery_of`), so a new or moved programme names its own local office;
        2. the trainee's current local offices at the day's close (:func:`local_offices_of`), in
           sorted order;
        3. the fallback general contact.

        A record without ``local_offices`` (v1) gets what it got before v2: step 1, else the fallback.
        """
        for deanery in (deanery_of(record), *local_offices_of(record)):
            contact = self.configured(deanery)
            if contact is not None:
                return contact
        return self.fallback

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Contacts:
        """``{"fallback": {name, email?, url?}, "local_offices": {deanery: {name, email?, url?}}}``;
        a missing ``fallback`` takes the built-in one. Raises ``ValueError`` on a bad entry."""

        def contact(entry: Any, where: str) -> Contact:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise ValueError(f"contacts: {where} needs a name")
            email_ = entry.get("email")
            url = entry.get("url")
            if email_ is not None and not isinstance(email_, str):
                raise ValueError(f"contacts: {where} email must be text")
            if url is not None and not isinstance(url, str):
                raise ValueError(f"contacts: {where} url must be text")
            return Contact(name=entry["name"], email=email_, url=url)

        offices = data.get("local_offices", {})
        if not isinstance(offices, Mapping):
            raise ValueError("contacts: local_offices must be an object")
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
            raise ValueError("contacts: the file must hold a JSON object")
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
