"""The stream's message keys and the batch command's routing of owner changes (pure)."""

from __future__ import annotations

import orjson
import pytest

from services.netchange.cdc import UNAVAILABLE, MalformedEnvelope, parse_envelope
from services.netchange.trainee import Router, trainee_of_key
from tests.unit.envelopes import envelope, placement


def change(before: dict | None, after: dict | None, op: str = "u"):  # type: ignore[no-untyped-def]
    return parse_envelope(orjson.dumps(envelope("placement", op, before, after)))


def test_a_trainee_key_names_the_trainee() -> None:
    p = placement("1", "47165")
    assert trainee_of_key(b'{"trainee_id":"47165"}', change(p, {**p, "grade": "ST4"})) == "47165"
    assert trainee_of_key(b'{"trainee_id":47165}', change(p, {**p, "grade": "ST4"})) == "47165"


@pytest.mark.parametrize("key, words", [
    (None, "message.key.columns"),
    (b"not json", "message.key.columns"),
    (b'{"id":"1"}', "message.key.columns"),
    (b'{"trainee_id":"99999"}', "not the row's trainee_id"),
    (b'{"trainee_id":"~mark:3"}', "not a trainee id"),
    (b'{"schema":{"type":"struct"},"payload":{"trainee_id":"47165"}}', "key.converter.schemas.enable=false"),
])
def test_keys_that_are_not_this_rows_trainee_are_refused_naming_the_setting(key: bytes | None, words: str) -> None:
    p = placement("1", "47165")
    with pytest.raises(MalformedEnvelope) as err:
        trainee_of_key(key, change(p, {**p, "grade": "ST4"}))
    assert words in err.value.reason and "47165" not in err.value.reason


def test_a_row_of_no_trainee_is_nobodys_not_a_connector_fault() -> None:
    p = placement("1", None)
    assert trainee_of_key(b'{"trainee_id":null}', change(p, {**p, "grade": "ST4"})) is None
    with pytest.raises(MalformedEnvelope):  # a null key for a row that does name a trainee
        trainee_of_key(b'{"trainee_id":null}', change(placement("1", "47165"), placement("1", "47165", grade="ST4")))


def test_the_router_splits_a_move_and_fills_unchanged_toast_values_for_the_new_owner() -> None:
    old = placement("1", "A", site="Big text")
    moved = {**old, "trainee_id": "B", "site": UNAVAILABLE}
    [(a, gone), (b, came)] = Router().route(change(old, moved))
    assert (a, gone.op, gone.after) == ("A", "d", None)
    assert (b, came.op, came.before) == ("B", "c", None)
    assert came.after is not None and came.after["site"] == "Big text" and came.after["trainee_id"] == "B"
