"""The local stack end to end: PostgreSQL → Debezium → Kafka envelopes as data-model.md describes them."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from services.devstack.stack import StackInfo, up
from services.topics import apply_topics, declared_topics

EPOCH = dt.date(1970, 1, 1)


def _days(d: dt.date) -> int:
    return (d - EPOCH).days


def _assert_sequence(source: dict[str, Any]) -> None:
    """source.sequence is a JSON *string* holding [last commit LSN, LSN]; the first can be null."""
    seq = source["sequence"]
    assert isinstance(seq, str)
    pair = json.loads(seq)
    assert isinstance(pair, list) and len(pair) == 2
    assert isinstance(pair[1], str) and pair[1].isdigit()
    assert pair[0] is None or (isinstance(pair[0], str) and pair[0].isdigit())


def test_placement_insert_update_delete_envelopes(
    stack: StackInfo, pg: Callable[[], psycopg.Connection[Any]], consume_topic: Callable[..., list[Any]],
) -> None:
    pid = f"it-{uuid.uuid4().hex[:12]}"
    conn = pg()
    conn.execute(
        "INSERT INTO tss.placement (id, trainee_id, placement_type, start_date, end_date, grade, site,"
        " whole_time_equivalent, owner) VALUES (%s, '47165', 'In post', '2026-08-05', '2027-08-03', 'ST3',"
        " 'Addenbrooke''s Hospital', 0.8, 'Health Education England East of England')", (pid,))
    conn.execute("UPDATE tss.placement SET site = 'Royal Papworth Hospital' WHERE id = %s", (pid,))
    conn.execute("DELETE FROM tss.placement WHERE id = %s", (pid,))

    def ours(r: Any) -> bool:
        return r.value is not None and (r.value["after"] or r.value["before"] or {}).get("id") == pid

    recs = consume_topic(f"{stack.kafka_settings().cdc_topic_prefix}.tss.placement", 3, predicate=ours)
    create, update, delete = (r.value for r in recs)
    assert all(r.key == {"trainee_id": "47165"} for r in recs)  # keyed by trainee (message.key.columns)
    assert len({r.partition for r in recs}) == 1  # one key, one partition, log order

    assert [create["op"], update["op"], delete["op"]] == ["c", "u", "d"]
    assert create["before"] is None
    after = create["after"]
    assert after["start_date"] == _days(dt.date(2026, 8, 5))  # dates: integer days since 1970-01-01
    assert after["end_date"] == _days(dt.date(2027, 8, 3))
    assert after["whole_time_equivalent"] == "0.80"  # numeric: the decimal string
    assert isinstance(after["updated_at"], str) and after["updated_at"].endswith("Z")  # timestamptz: ISO

    # REPLICA IDENTITY FULL: the full old row on update and delete
    assert update["before"] == after
    assert update["after"] == {**after, "site": "Royal Papworth Hospital"}
    assert delete["before"] == update["after"]
    assert delete["after"] is None  # and no tombstone follows (tombstones.on.delete is off: ADR 0004)

    for env in (create, update, delete):
        src = env["source"]
        assert src["connector"] == "postgresql" and src["schema"] == "tss" and src["table"] == "placement"
        assert src["snapshot"] == "false"  # a string, not a boolean
        assert isinstance(src["ts_ms"], int) and isinstance(src["lsn"], int)
        _assert_sequence(src)
    assert create["source"]["ts_ms"] <= update["source"]["ts_ms"] <= delete["source"]["ts_ms"]


def test_topics_apply_is_idempotent(stack: StackInfo) -> None:
    settings = stack.kafka_settings()
    apply_topics(settings)
    second = apply_topics(settings)
    assert {c.topic for c in second} == {t.name for t in declared_topics(settings)}
    assert all(c.action == "unchanged" for c in second), second


def test_up_on_a_running_stack_returns_it(stack: StackInfo) -> None:
    again = up(stack.scratch)
    assert again.reused
    assert (again.bootstrap, again.connect_url, again.pg_dsn) == (
        stack.bootstrap, stack.connect_url, stack.pg_dsn)
