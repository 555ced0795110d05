"""The content hash of a net-change record (services/notifier/plan.py): what the ledger compares to
tell a replay (same content: nothing to do) from a re-derivation with other content (SUPERSEDED)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services import serde
from services.notifier.plan import canonical_json, content_hash

GOLDEN = Path(__file__).parent / "golden"


def full() -> dict[str, Any]:
    return json.loads((GOLDEN / "full_record.json").read_text())


def test_the_same_record_has_the_same_hash_whatever_the_key_order() -> None:
    a = full()
    b = json.loads(json.dumps(a, sort_keys=True))
    assert content_hash(a) == content_hash(b) and len(content_hash(a)) == 32


def test_volatile_fields_and_nulls_do_not_count() -> None:
    a = full()
    assert content_hash({**a, "late": not a.get("late", False)}) == content_hash(a)
    # a field a later schema version adds, null in the old records: the same content
    assert content_hash({**a, "local_offices": None}) == content_hash(
        {k: v for k, v in a.items() if k != "local_offices"})
    assert b'"late"' not in canonical_json(a)


def test_a_record_read_from_the_wire_hashes_as_the_record_written() -> None:
    a = full()
    assert content_hash(serde.decode(serde.NETCHANGE, serde.encode(serde.NETCHANGE, a))) == content_hash(a)


def test_what_the_email_says_changes_the_hash() -> None:
    a = full()
    for change in (lambda r: r["changes"][0]["fields"].__setitem__("x", {"old": None, "new": "1"}),
                   lambda r: r.__setitem__("local_offices", ["Health Education England Wessex"]),
                   lambda r: r["changes"].pop(),
                   lambda r: r.__setitem__("suppressed", "placeholder person")):
        b = copy.deepcopy(a)
        change(b)
        assert content_hash(b) != content_hash(a)


@given(st.dictionaries(st.text(max_size=5), st.one_of(st.none(), st.text(max_size=5), st.integers()), max_size=6))
def test_hash_is_a_function_of_the_non_null_non_volatile_content(extra: dict[str, Any]) -> None:
    a = {**full(), **{f"x{k}": v for k, v in extra.items()}}
    stripped = {k: v for k, v in a.items() if v is not None and k != "late"}
    assert content_hash(a) == content_hash(stripped)
