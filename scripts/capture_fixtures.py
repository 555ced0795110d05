#!/usr/bin/env python3
"""Capture the change events Debezium really sends, as test fixtures, in two shapes from one run.

Starts a fresh local stack (services.devstack) in a temporary scratch dir, inserts a baseline before
the connectors are registered — so the baseline arrives as snapshot reads (op "r") in snapshot.jsonl —,
then registers two connectors on the same database and runs each scripted SQL scenario:

- ``tests/fixtures/keyed/<scenario>.jsonl``: the connector as deployed (deploy/connect/tss-postgres.json:
  ``message.key.columns`` = trainee_id on every table, no tombstones). One JSON object per line,
  ``{"topic", "partition", "offset", "key", "headers", "value"}``: the decoded JSON key, every header
  as text, the envelope value. A change of trainee_id arrives as a delete keyed by the old owner
  (header ``__debezium.newkey``) and a create keyed by the new one (header ``__debezium.oldkey``).
- ``tests/fixtures/<scenario>.jsonl``: the raw envelope values of a second, entity-keyed connector on
  the same database (the same config without ``message.key.columns``, tombstones on: what the topics
  held before ADR 0004, so a move is one un-split update), one JSON per line, tombstones as the line
  ``null`` — the input of ``trainee-notify aggregate``. Its topics are renamed by a RegexRouter, so
  its envelopes are those of the deployed prefix (``source.name``), commit for commit the same as
  the keyed ones.

Both are in log order: by ``source.sequence``; the two halves of a split move share one position, the
delete first (the order Debezium emits them in).

Scenarios after the snapshot operate on baseline rows, so a test can replay snapshot.jsonl followed
by one scenario file and get "known state" semantics (design.md). Ids, names and addresses are
invented. Commit times (source.ts_ms) are those of the capture run: tests shift them as they need.

    .venv/bin/python scripts/capture_fixtures.py            # all scenarios, fresh stack
    .venv/bin/python scripts/capture_fixtures.py --keep     # leave the stack running afterwards
"""


from __future__ import annotations

import json
import random
import re
import string
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import typer
from confluent_kafka import Consumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.devstack import connect
from services.devstack.stack import StackInfo, down, up
from services.kafka_security import client_config
from services.topics import CDC_TABLES, apply_topics

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
KEYED = FIXTURES / "keyed"
NS = uuid.UUID("6f1c2a52-6e0b-4b57-9d0f-5a8f2b1d7c11")


def uid(name: str) -> str:
    """A stable uuid for a fixture row, so the files keep their ids from one capture to the next."""
    return str(uuid.uuid5(NS, name))


PM1, PM2 = uid("pm-90001-1"), uid("pm-90001-2")

BASELINE = [
    ("INSERT INTO tss.personal_details (trainee_id, role, title, forenames, surname, known_as, email,"
     " telephone_number, mobile_number, address1, address2, address3, address4, post_code, gmc_number)"
     " VALUES ('90001', 'DR in Training', 'Dr', 'Ada', 'Okafor', 'Ada', 'ada.okafor@example.nhs.uk',"
     " '01223 000001', '07700 900001', '1 Example Road', 'Cambridge', NULL, NULL, 'CB2 0QQ', '7000001'),"
     " ('90002', 'DR in Training', 'Dr', 'Ben', 'Adeyemi', NULL, 'ben.adeyemi@example.nhs.uk',"
     " NULL, '07700 900002', '2 Example Road', 'Norwich', NULL, NULL, 'NR4 7UY', '7000002'),"
     " ('90009', 'Placeholder', NULL, 'Place', 'Holder', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"),
    ("INSERT INTO tss.programme_membership (id, trainee_id, programme_name, programme_number, managing_deanery,"
     " designated_body, programme_membership_type, start_date, end_date) VALUES"
     f" ('{PM1}', '90001', 'Cardiology', 'EOE8950', 'Health Education England East of England',"
     " 'Health Education England East of England', 'SUBSTANTIVE', '2024-08-07', '2029-08-06')"),
    ("INSERT INTO tss.curriculum_membership (id, trainee_id, programme_membership_id, curriculum_name,"
     " curriculum_sub_type, specialty, start_date, end_date) VALUES"
     f" ('cm-90001-1', '90001', '{PM1}', 'Cardiology', 'MEDICAL_CURRICULUM', 'Cardiology',"
     " '2024-08-07', '2029-08-06')"),
    ("INSERT INTO tss.placement (id, trainee_id, placement_type, start_date, end_date, grade, specialty,"
     " sub_specialty, site, site_known_as, site_location, employing_body, training_body, whole_time_equivalent, owner)"
     " VALUES ('pl-90001-1', '90001', 'In post', '2026-08-05', '2027-08-03', 'ST3', 'Cardiology', NULL,"
     " 'Addenbrooke''s Hospital', 'Addenbrooke''s', 'Cambridge', 'Cambridge University Hospitals NHS Foundation Trust',"
     " 'Cambridge University Hospitals NHS Foundation Trust', 1.00, 'Health Education England East of England'),"
     " ('pl-90001-2', '90001', 'In post', '2027-08-04', '2028-08-01', 'ST4', 'Cardiology', NULL,"
     " 'Royal Papworth Hospital', NULL, 'Cambridge', 'Royal Papworth Hospital NHS Foundation Trust',"
     " 'Royal Papworth Hospital NHS Foundation Trust', 0.80, 'Health Education England East of England')"),
]


@dataclass(frozen=True)
class Scenario:
    name: str
    purpose: str
    statements: list[list[str]]  # transactions, each a list of statements
    expected: int  # records of the entity-keyed connector, tombstones included
    keyed: int  # records of the trainee-keyed connector: no tombstones, a move is a delete and a create


def _big_text(n: int = 9000) -> str:
    rng = random.Random(42)  # incompressible enough to be stored out of line (TOAST)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


SCENARIOS = [
    Scenario("personal_details_crud", "a trainee is created, their surname edited, then deleted", [
        [("INSERT INTO tss.personal_details (trainee_id, role, title, forenames, surname, email, post_code)"
         " VALUES ('90101', 'DR in Training', 'Dr', 'Cara', 'Nwosu', 'cara.nwosu@example.nhs.uk', 'IP4 5PD')")],
        ["UPDATE tss.personal_details SET surname = 'Nwosu-Hart', updated_at = now() WHERE trainee_id = '90101'"],
        ["DELETE FROM tss.personal_details WHERE trainee_id = '90101'"],
    ], 4, 3),
    Scenario("programme_membership_crud", "a programme membership is created, its end date edited, then deleted", [
        [("INSERT INTO tss.programme_membership (id, trainee_id, programme_name, programme_number, managing_deanery,"
         " designated_body, programme_membership_type, start_date, end_date) VALUES"
         f" ('{PM2}', '90001', 'General Internal Medicine', 'EOE8945', 'Health Education England East of England',"
         " 'Health Education England East of England', 'LAT', '2026-08-05', '2027-08-03')")],
        [f"UPDATE tss.programme_membership SET end_date = '2027-02-02', updated_at = now() WHERE id = '{PM2}'"],
        [f"DELETE FROM tss.programme_membership WHERE id = '{PM2}'"],
    ], 4, 3),
    Scenario("curriculum_membership_crud", "a curriculum is created, its specialty edited, then deleted", [
        [("INSERT INTO tss.curriculum_membership (id, trainee_id, programme_membership_id, curriculum_name,"
         " curriculum_sub_type, specialty, start_date, end_date) VALUES"
         f" ('cm-90001-2', '90001', '{PM1}', 'General Internal Medicine', 'MEDICAL_CURRICULUM',"
         " 'General (Internal) Medicine', '2024-08-07', '2029-08-06')")],
        [("UPDATE tss.curriculum_membership SET specialty = 'Acute Internal Medicine', updated_at = now()"
         " WHERE id = 'cm-90001-2'")],
        ["DELETE FROM tss.curriculum_membership WHERE id = 'cm-90001-2'"],
    ], 4, 3),
    Scenario("placement_crud", "a placement is created, its whole time equivalent edited, then deleted", [
        [("INSERT INTO tss.placement (id, trainee_id, placement_type, start_date, end_date, grade, specialty, site,"
         " employing_body, training_body, whole_time_equivalent, owner) VALUES ('pl-90001-3', '90001',"
         " 'In post - Acting up', '2028-08-02', '2029-08-06', 'ST5', 'Cardiology', 'West Suffolk Hospital',"
         " 'West Suffolk NHS Foundation Trust', 'West Suffolk NHS Foundation Trust', 1.00,"
         " 'Health Education England East of England')")],
        ["UPDATE tss.placement SET whole_time_equivalent = 0.60, updated_at = now() WHERE id = 'pl-90001-3'"],
        ["DELETE FROM tss.placement WHERE id = 'pl-90001-3'"],
    ], 4, 3),
    Scenario("placement_edit_undone", "a baseline placement's site is changed and changed back", [
        ["UPDATE tss.placement SET site_known_as = 'Royal Papworth', updated_at = now() WHERE id = 'pl-90001-1'"],
        ["UPDATE tss.placement SET site_known_as = 'Addenbrooke''s', updated_at = now() WHERE id = 'pl-90001-1'"],
    ], 2, 2),
    Scenario("placement_create_then_delete", "a placement is created and deleted again", [
        [("INSERT INTO tss.placement (id, trainee_id, placement_type, start_date, end_date, grade, site,"
         " whole_time_equivalent) VALUES ('pl-90001-4', '90001', 'In post', '2029-08-01', '2030-08-06', 'ST6',"
         " 'Ipswich Hospital', 1.00)")],
        ["DELETE FROM tss.placement WHERE id = 'pl-90001-4'"],
    ], 3, 2),
    Scenario("placement_moved", "a baseline placement is moved from trainee 90001 to trainee 90002", [
        ["UPDATE tss.placement SET trainee_id = '90002', updated_at = now() WHERE id = 'pl-90001-2'"],
    ], 1, 2),
    Scenario("placement_moved_back", "the same placement is moved back to trainee 90001", [
        ["UPDATE tss.placement SET trainee_id = '90001', updated_at = now() WHERE id = 'pl-90001-2'"],
    ], 1, 2),
    Scenario("email_change", "trainee 90001's email address changes", [
        [("UPDATE tss.personal_details SET email = 'ada.okafor2@example.nhs.uk', updated_at = now()"
         " WHERE trainee_id = '90001'")],
    ], 1, 1),
    Scenario("rotation_transaction", "one transaction ends a placement early and adds the next (rotation day)", [
        ["UPDATE tss.placement SET end_date = '2027-02-02', updated_at = now() WHERE id = 'pl-90001-1'",
         ("INSERT INTO tss.placement (id, trainee_id, placement_type, start_date, end_date, grade, specialty, site,"
         " whole_time_equivalent, owner) VALUES ('pl-90001-5', '90001', 'In post', '2027-02-03', '2027-08-03', 'ST3',"
         " 'Cardiology', 'Peterborough City Hospital', 1.00, 'Health Education England East of England')"),
         ("UPDATE tss.personal_details SET telephone_number = '01223 000009', updated_at = now()"
         " WHERE trainee_id = '90001'")],
    ], 3, 3),
    Scenario("toast_unchanged", "a row with a large (TOASTed) text column, then an update of another column", [
        [("INSERT INTO tss.personal_details (trainee_id, role, title, forenames, surname, email, address1)"
         f" VALUES ('90103', 'DR in Training', 'Dr', 'Dee', 'Large', 'dee.large@example.nhs.uk', '{_big_text()}')")],
        [("UPDATE tss.personal_details SET email = 'dee.large2@example.nhs.uk', updated_at = now()"
         " WHERE trainee_id = '90103'")],
    ], 2, 2),
    Scenario("form_r_and_arcp", "an ARCP is scheduled; a Form R Part A is drafted, submitted, unsubmitted", [
        [(f"INSERT INTO tss.arcp (id, trainee_id, programme_membership_id, review_date) VALUES ('arcp-90001-1',"
         f" '90001', '{PM1}', '2027-06-15')")],
        [(f"INSERT INTO tss.form_r (id, trainee_id, part, programme_membership_id, is_arcp, lifecycle_state, revision)"
         f" VALUES ('{uid('fr-90001-a')}', '90001', 'A', '{PM1}', true, 'DRAFT', 0)")],
        [(f"UPDATE tss.form_r SET lifecycle_state = 'SUBMITTED', submitted_at = now(), updated_at = now()"
         f" WHERE id = '{uid('fr-90001-a')}'")],
        [(f"UPDATE tss.form_r SET lifecycle_state = 'UNSUBMITTED', revision = revision + 1, updated_at = now()"
         f" WHERE id = '{uid('fr-90001-a')}'")],
    ], 4, 4),
]


# --- Kafka ----------------------------------------------------------------------------------------

ENTITY_KEYED = "tss-postgres-entity-keyed"  # the second connector: the value-only fixtures
ENTITY_KEYED_PREFIX = "tis_by_entity"
NEWKEY = "__debezium.newkey"  # on the delete half of a change of key; __debezium.oldkey on the create

Order = tuple[int, int, int, int, str, str]  # (last commit LSN, LSN, table index, split half, key, row id)


@dataclass(frozen=True)
class Captured:
    """One record as it arrived: the key and headers decoded, the value as its raw JSON text."""

    topic: str
    partition: int
    offset: int
    key: Any
    headers: dict[str, str]
    value: str | None

    def keyed_line(self) -> str:
        return json.dumps({"topic": self.topic, "partition": self.partition, "offset": self.offset,
                           "key": self.key, "headers": self.headers,
                           "value": json.loads(self.value) if self.value is not None else None},
                          separators=(",", ":"))


def _headers(raw: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw or []:
        if name in out:
            raise SystemExit(f"header {name} repeated on one record: the fixture format has one value per name")
        out[name] = value.decode() if value is not None else ""
    return out


class Capture:
    """Reads the CDC topics of one topic prefix from remembered positions; each call returns what arrived since."""

    def __init__(self, info: StackInfo, prefix: str) -> None:
        self.topics = [f"{prefix}.tss.{t}" for t in CDC_TABLES]
        self.consumer = Consumer({**client_config(info.bootstrap), "group.id": f"capture-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        md = self.consumer.list_topics(timeout=10)
        parts = [TopicPartition(t, p, 0) for t in self.topics for p in md.topics[t].partitions]
        self.consumer.assign(parts)

    def take(self, expected: int, timeout: float = 60.0, settle: float = 2.0) -> list[Captured]:
        """Records until ``expected`` arrived and nothing more came for ``settle`` seconds, in log order."""
        got: list[tuple[Order, int, Captured]] = []
        last_key: dict[tuple[str, int], Order] = {}
        deadline, quiet_since = time.monotonic() + timeout, time.monotonic()
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is None or msg.error():
                if len(got) >= expected and time.monotonic() - quiet_since > settle:
                    break
                continue
            quiet_since = time.monotonic()
            value = msg.value().decode() if msg.value() is not None else None
            tp = (msg.topic(), msg.partition())
            key = msg.key().decode() if msg.key() else ""
            headers = _headers(msg.headers())
            # a tombstone follows its delete on the same partition: it sorts right after it
            order = _order(json.loads(value), key, headers) if value else last_key.get(tp, (0, 0, 0, 0, key, ""))
            last_key[tp] = order
            got.append((order, len(got), Captured(msg.topic(), msg.partition(), msg.offset(),
                                                  json.loads(key) if key else None, headers, value)))
        if len(got) != expected:
            raise SystemExit(f"{self.topics[0]}...: expected {expected} records, got {len(got)}")
        got.sort(key=lambda g: (g[0], g[1]))
        return [c for _, _, c in got]

    def close(self) -> None:
        self.consumer.close()


def _order(envelope: dict[str, Any], key: str, headers: dict[str, str]) -> Order:
    """Log order across topics: the (last commit LSN, LSN) pair of source.sequence. Snapshot reads all
    share one pair: they are put in table order, then key and row order, so the file is stable. The
    delete and the create of a change of key share one pair too: the delete (it carries the new key in
    a header) comes first, as Debezium emits it."""
    source = envelope["source"]
    commit, lsn = json.loads(source.get("sequence") or "[null, null]")
    table = CDC_TABLES.index(source["table"]) if source["table"] in CDC_TABLES else len(CDC_TABLES)
    half = 0 if NEWKEY in headers else 1
    row = envelope.get("after") or envelope.get("before") or {}
    return int(commit or 0), int(lsn or source.get("lsn") or 0), table, half, key, str(row.get("id", ""))


def _write_values(name: str, records: list[Captured]) -> Path:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    path = FIXTURES / f"{name}.jsonl"
    path.write_text("".join(f"{r.value if r.value is not None else 'null'}\n" for r in records))
    return path


def _write_keyed(name: str, records: list[Captured]) -> Path:
    KEYED.mkdir(parents=True, exist_ok=True)
    path = KEYED / f"{name}.jsonl"
    path.write_text("".join(f"{r.keyed_line()}\n" for r in records))
    return path


def _run_sql(dsn: str, transactions: list[list[str]]) -> None:
    with psycopg.connect(dsn) as conn:
        for tx in transactions:
            with conn.transaction():
                for stmt in tx:
                    conn.execute(stmt)  # type: ignore[arg-type]  # fixed fixture SQL


def _register_entity_keyed(info: StackInfo) -> None:
    """The deployed config without message.key.columns, tombstones on, with a slot of its own. Its topics
    are renamed by a RegexRouter, so its envelopes keep the deployed topic.prefix as ``source.name``."""
    assert info.connect_url is not None
    settings = info.kafka_settings()
    apply_topics(settings.model_copy(update={"cdc_topic_prefix": ENTITY_KEYED_PREFIX}))
    _, config = connect.connector_config(info.pg_port, partitions=settings.topic_partitions)
    config.pop("message.key.columns")
    prefix = settings.cdc_topic_prefix
    config.update({"slot.name": "tss_debezium_entity_keyed", "tombstones.on.delete": "true",
                   "custom.metric.tags": "capture=entity-keyed",  # else its JMX names clash with the other's
                   "transforms": "route",
                   "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
                   "transforms.route.regex": f"{re.escape(prefix)}\\.tss\\.(.*)",
                   "transforms.route.replacement": f"{ENTITY_KEYED_PREFIX}.tss.$1"})
    connect.register(info.connect_url, ENTITY_KEYED, config)
    connect.wait_running(info.connect_url, ENTITY_KEYED)


def main(keep: bool = typer.Option(False, "--keep", help="leave the stack running")) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="tn-capture-", dir="/tmp"))
    captures: list[Capture] = []
    try:
        info = up(scratch, with_connect=False)
        _run_sql(info.pg_dsn, [[s] for s in BASELINE])
        keyed = Capture(info, info.kafka_settings().cdc_topic_prefix)
        captures.append(keyed)
        info = up(scratch, with_connect=True)  # registers the connector: the baseline is snapshotted
        _register_entity_keyed(info)  # snapshots it too
        by_entity = Capture(info, ENTITY_KEYED_PREFIX)
        captures.append(by_entity)
        baseline_rows = 3 + 1 + 1 + 2
        taken = [("snapshot", "the baseline, as snapshot reads", keyed.take(baseline_rows),
                  by_entity.take(baseline_rows))]
        for sc in SCENARIOS:
            _run_sql(info.pg_dsn, sc.statements)
            taken.append((sc.name, sc.purpose, keyed.take(sc.keyed), by_entity.take(sc.expected)))
        for name, purpose, by_trainee, entity_keyed in taken:  # all or nothing: no half-regenerated set
            print(_write_keyed(name, by_trainee), _write_values(name, entity_keyed), f"— {purpose}", file=sys.stderr)
    finally:
        for capture in captures:
            capture.close()
        if keep:
            print(f"stack left running in {scratch}", file=sys.stderr)
        else:
            down(scratch, purge=True)


if __name__ == "__main__":
    typer.run(main)
