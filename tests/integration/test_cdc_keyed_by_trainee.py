"""The connector keys every change by trainee (ADR 0004), on the real PostgreSQL → Debezium → Kafka path.

deploy/connect/tss-postgres.json sets ``message.key.columns`` to trainee_id for all six tables and
``tombstones.on.delete`` off. So every event's key is ``{"trainee_id": ...}``, one trainee's events
of all six topics are on one partition number (the topics are co-partitioned), and a change of owner
arrives as a delete keyed by the old owner and a create keyed by the new one, each on its owner's
partition, linked by the ``__debezium.newkey`` / ``__debezium.oldkey`` headers.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, TopicPartition

from services.devstack.stack import StackInfo
from services.kafka_security import client_config
from services.topics import CDC_TABLES

OLDKEY, NEWKEY = "__debezium.oldkey", "__debezium.newkey"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as an unsigned 32-bit value."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    whole = len(data) & ~3
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    rest = data[whole:]
    if len(rest) == 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if rest:
        h ^= rest[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def key_bytes(trainee: str) -> bytes:
    """The exact key the connector writes: compact JSON (the JSON converter, schemas off)."""
    return json.dumps({"trainee_id": trainee}, separators=(",", ":")).encode()


def java_partition(trainee: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (Connect's producer) picks for this trainee's key."""
    return (murmur2(key_bytes(trainee)) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Event:
    topic: str
    table: str
    partition: int
    offset: int
    raw_key: bytes | None
    key: Any
    headers: dict[str, str]
    value: dict[str, Any] | None

    @property
    def row(self) -> dict[str, Any]:
        assert self.value is not None
        return self.value["after"] if self.value["op"] != "d" else self.value["before"]

    @property
    def row_id(self) -> str:
        return str(self.row.get("id", self.row["trainee_id"]))


class Workload:
    """Runs SQL against tss and remembers which (table, row id, op) events it must produce, in order."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.expected: list[tuple[str, str, str]] = []

    def do(self, table: str, row_id: str, op: str, sql: str, params: tuple[Any, ...]) -> None:
        self.conn.execute(sql, params)  # type: ignore[arg-type]  # fixed test SQL
        self.expected.append((table, row_id, op))

    def trainee(self, t: str) -> dict[str, str]:
        ids = {"programme_membership": str(uuid.uuid4()), "curriculum_membership": f"cm-{t}",
               "placement": f"pl-{t}", "form_r": str(uuid.uuid4()), "arcp": f"arcp-{t}"}
        self.do("personal_details", t, "c",
                "INSERT INTO tss.personal_details (trainee_id, role, title, forenames, surname, email)"
                " VALUES (%s, 'DR in Training', 'Dr', 'Keyed', 'Trainee', %s)", (t, f"{t}@example.nhs.uk"))
        self.do("programme_membership", ids["programme_membership"], "c",
                "INSERT INTO tss.programme_membership (id, trainee_id, programme_name, managing_deanery,"
                " start_date, end_date) VALUES (%s, %s, 'Cardiology', 'Health Education England East of England',"
                " '2026-08-05', '2029-08-06')", (ids["programme_membership"], t))
        self.do("curriculum_membership", ids["curriculum_membership"], "c",
                "INSERT INTO tss.curriculum_membership (id, trainee_id, programme_membership_id, curriculum_name,"
                " specialty) VALUES (%s, %s, %s, 'Cardiology', 'Cardiology')",
                (ids["curriculum_membership"], t, ids["programme_membership"]))
        self.do("placement", ids["placement"], "c",
                "INSERT INTO tss.placement (id, trainee_id, placement_type, start_date, end_date, grade, site,"
                " whole_time_equivalent) VALUES (%s, %s, 'In post', '2026-08-05', '2027-08-03', 'ST3',"
                " 'Addenbrooke''s Hospital', 1.0)", (ids["placement"], t))
        self.do("form_r", ids["form_r"], "c",
                "INSERT INTO tss.form_r (id, trainee_id, part, programme_membership_id, is_arcp, lifecycle_state)"
                " VALUES (%s, %s, 'A', %s, true, 'DRAFT')", (ids["form_r"], t, ids["programme_membership"]))
        self.do("arcp", ids["arcp"], "c",
                "INSERT INTO tss.arcp (id, trainee_id, programme_membership_id, review_date)"
                " VALUES (%s, %s, %s, '2027-06-15')", (ids["arcp"], t, ids["programme_membership"]))
        return ids

    def edit(self, t: str, ids: dict[str, str]) -> None:
        self.do("personal_details", t, "u", "UPDATE tss.personal_details SET surname = 'Edited' WHERE trainee_id = %s",
                (t,))
        self.do("programme_membership", ids["programme_membership"], "u",
                "UPDATE tss.programme_membership SET end_date = '2028-02-02' WHERE id = %s",
                (ids["programme_membership"],))
        self.do("curriculum_membership", ids["curriculum_membership"], "u",
                "UPDATE tss.curriculum_membership SET specialty = 'Acute Internal Medicine' WHERE id = %s",
                (ids["curriculum_membership"],))
        self.do("placement", ids["placement"], "u", "UPDATE tss.placement SET site = 'Royal Papworth Hospital'"
                " WHERE id = %s", (ids["placement"],))
        self.do("form_r", ids["form_r"], "u", "UPDATE tss.form_r SET lifecycle_state = 'SUBMITTED',"
                " submitted_at = now() WHERE id = %s", (ids["form_r"],))
        self.do("arcp", ids["arcp"], "d", "DELETE FROM tss.arcp WHERE id = %s", (ids["arcp"],))

    def touch(self, t: str, ids: dict[str, str]) -> None:
        """One more event per table for the trainee: on each of its partitions it comes after every
        earlier event of the trainee, so once it is there a tombstone would have been seen already."""
        self.do("personal_details", t, "u", "UPDATE tss.personal_details SET updated_at = now() WHERE trainee_id = %s",
                (t,))
        for table in ("programme_membership", "curriculum_membership", "placement", "form_r"):
            self.do(table, ids[table], "u", f"UPDATE tss.{table} SET updated_at = now() WHERE id = %s", (ids[table],))  # noqa: S608  table names from a fixed tuple, values as parameters
        self.do("arcp", f"{ids['arcp']}-2", "c", "INSERT INTO tss.arcp (id, trainee_id, review_date)"
                " VALUES (%s, %s, '2028-06-15')", (f"{ids['arcp']}-2", t))


def _trainees(run: str, partitions: int, n: int = 3) -> list[str]:
    """``n`` trainee ids of this run, on distinct partitions where there are enough of them."""
    chosen: list[str] = []
    used: set[int] = set()
    i = 0
    while len(chosen) < n:
        t = f"kt-{run}-{i}"
        i += 1
        p = java_partition(t, partitions)
        if p not in used or len(used) >= partitions:
            chosen.append(t)
            used.add(p)
    return chosen


class Reader:
    """Reads the six CDC topics from their end offsets at creation: only what this test caused."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.consumer = Consumer({**client_config(bootstrap), "group.id": f"it-keyed-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "enable.partition.eof": False})
        md = self.consumer.list_topics(timeout=10)
        self.topics = {f"{prefix}.tss.{t}": t for t in CDC_TABLES}
        self.partitions = {topic: len(md.topics[topic].partitions) for topic in self.topics}
        start = []
        for topic in self.topics:
            for p in range(self.partitions[topic]):
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                start.append(TopicPartition(topic, p, high))
        self.consumer.assign(start)
        self.events: list[Event] = []

    def until(self, missing: Callable[[list[Event]], list[Any]], timeout: float) -> list[Event]:
        """Poll until ``missing(events)`` is empty; a key that is not a trainee's fails at once."""
        deadline = time.monotonic() + timeout
        while lacking := missing(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"within {timeout:.0f} s got {len(self.events)} events; still missing "
                                     f"(table, row id, op): {lacking[:10]}")
            msg = self.consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consuming: {msg.error()}")
            raw_value = msg.value()
            headers = {name: (v.decode() if v is not None else "") for name, v in (msg.headers() or [])}
            key = json.loads(msg.key()) if msg.key() else None
            if not (isinstance(key, dict) and set(key) == {"trainee_id"}):
                raise AssertionError(f"{msg.topic()}: key {msg.key()!r} is not a trainee id: is the connector's "
                                     "message.key.columns set?")
            self.events.append(Event(msg.topic(), self.topics[msg.topic()], msg.partition(), msg.offset(),
                                     msg.key(), key, headers, json.loads(raw_value) if raw_value is not None else None))
        return self.events

    def close(self) -> None:
        self.consumer.close()


def _missing(expected: list[tuple[str, str, str]]) -> Callable[[list[Event]], list[tuple[str, str, str]]]:
    want = Counter(expected)

    def missing(events: list[Event]) -> list[tuple[str, str, str]]:
        got = Counter((e.table, e.row_id, e.value["op"]) for e in events if e.value is not None)
        return sorted((want - got).elements())

    return missing


def test_every_change_is_keyed_by_trainee_and_a_move_reaches_both_owners(
    stack: StackInfo, pg: Callable[[], psycopg.Connection[Any]],
) -> None:
    settings = stack.kafka_settings()
    reader = Reader(stack.bootstrap, settings.cdc_topic_prefix)
    try:
        counts = set(reader.partitions.values())
        assert counts == {settings.topic_partitions}, reader.partitions  # co-partitioned: one count for all six
        n = settings.topic_partitions
        a, b, c = _trainees(uuid.uuid4().hex[:8], n)
        moved = f"pl-{a}-moved"

        w = Workload(pg())
        ids = {t: w.trainee(t) for t in (a, b, c)}
        w.do("placement", moved, "c", "INSERT INTO tss.placement (id, trainee_id, placement_type, start_date,"
             " end_date, grade, site, whole_time_equivalent) VALUES (%s, %s, 'In post', '2027-08-04', '2028-08-01',"
             " 'ST4', 'Royal Papworth Hospital', 0.8)", (moved, a))
        for t in (a, b, c):
            w.edit(t, ids[t])
        w.do("placement", moved, "u", "UPDATE tss.placement SET grade = 'ST5' WHERE id = %s", (moved,))
        # the move: one UPDATE of the key column, updated_at left alone so the images differ only in it
        w.conn.execute("UPDATE tss.placement SET trainee_id = %s WHERE id = %s", (b, moved))
        w.expected += [("placement", moved, "d"), ("placement", moved, "c")]
        for t in (a, b, c):
            w.touch(t, ids[t])

        events = reader.until(_missing(w.expected), timeout=90.0)
    finally:
        reader.close()

    # no tombstones at all, and of this test's trainees nothing but what the workload did
    assert [e for e in events if e.value is None] == []
    events = [e for e in events if e.row["trainee_id"] in (a, b, c)]
    assert sorted(Counter((e.table, e.row_id, e.value["op"]) for e in events if e.value).items()) == sorted(
        Counter(w.expected).items())

    # every key is the owner's trainee id, byte for byte the compact JSON the partitioner hashed
    for e in events:
        owner = e.row["trainee_id"]
        assert e.key == {"trainee_id": owner}, e
        assert e.raw_key == key_bytes(owner), e.raw_key

    # one trainee: one partition number across all six topics, the one Kafka's default partitioner picks
    by_trainee: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for e in events:
        by_trainee[e.key["trainee_id"]].add((e.table, e.partition))
    for t in (a, b, c):
        assert {table for table, _ in by_trainee[t]} == set(CDC_TABLES), t
        assert {p for _, p in by_trainee[t]} == {java_partition(t, n)}, (t, by_trainee[t])
    if n > 1:
        assert java_partition(a, n) != java_partition(b, n)  # so the move really crosses partitions

    # per row, the events are in commit order (one key, one partition)
    for key in {(e.table, e.row_id) for e in events}:
        ops = [e.value["op"] for e in sorted((e for e in events if (e.table, e.row_id) == key),
                                             key=lambda e: (e.partition, e.offset)) if e.value]
        if key != ("placement", moved):
            assert ops == [op for table, rid, op in w.expected if (table, rid) == key], (key, ops)
    if n > 1:
        on_a = [e.value["op"] for e in events if e.row_id == moved and e.partition == java_partition(a, n)]
        on_b = [e.value["op"] for e in events if e.row_id == moved and e.partition == java_partition(b, n)]
        assert (on_a, on_b) == (["c", "u", "d"], ["c"])  # the old owner's whole story; the new owner's start

    # the move: a delete keyed by the old owner on its partition, a create keyed by the new one on its
    [before_move] = [e for e in events if e.row_id == moved and e.value["op"] == "u"]
    [delete] = [e for e in events if e.row_id == moved and e.value["op"] == "d"]
    [create] = [e for e in events if e.row_id == moved and e.value["op"] == "c" and e.key == {"trainee_id": b}]
    assert delete.key == {"trainee_id": a} and delete.partition == java_partition(a, n)
    assert delete.value["before"] == before_move.value["after"]  # the full old row (REPLICA IDENTITY FULL)
    assert delete.value["after"] is None
    assert json.loads(delete.headers[NEWKEY]) == {"trainee_id": b} and OLDKEY not in delete.headers
    assert delete.offset > before_move.offset and delete.partition == before_move.partition

    assert create.key == {"trainee_id": b} and create.partition == java_partition(b, n)
    assert create.value["before"] is None  # a create: no before image, even though the row existed
    assert create.value["after"] == {**before_move.value["after"], "trainee_id": b}
    assert json.loads(create.headers[OLDKEY]) == {"trainee_id": a} and NEWKEY not in create.headers
    # both halves are one change at one position of the log: same transaction, LSN, commit time
    for field in ("sequence", "lsn", "txId", "ts_ms"):
        assert delete.value["source"][field] == create.value["source"][field], field

    # no other event carries the key-change headers
    others = [e for e in events if e not in (delete, create)]
    assert [e for e in others if OLDKEY in e.headers or NEWKEY in e.headers] == []
