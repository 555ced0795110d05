"""``trainee-notify deadletter retry`` of a CDC dead letter, on the real broker and ledger database, with the
aggregator running as a real process and the operator commands run as the console script.

The poison is a bug, not the event: a "release" of the aggregator that refuses a valid grade (a check too
strict, injected with a ``sitecustomize`` on its ``PYTHONPATH``) dead-letters one change; the fixed release
(the same app id, so the same table, without the injection) runs; the operator retries the dead letter.
Retry re-submits the same bytes, so only a fix of what refused them can make them apply: this is the case
it exists for (docs/runbook.md, "Inspect and retry the dead letter")."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import errors as pg_errors

from services.kafka_security import client_config
from services.opsctl import groups
from tests.integration.procs import BIN
from tests.integration.test_aggregator import GRACE_MS, http_status
from tests.integration.workload import AggregatorRun, london_ms, metric, wait_metric
from tests.unit.envelopes import envelope, person, placement

REFUSED_GRADE = "F1"

# The bug: this release's check refuses a grade it should accept. Only its process loads this file.
BUGGY_RELEASE = '''
import os

from services.netchange import cdc

_grade = os.environ["TN_IT_REFUSED_GRADE"]
_marker = ('"grade":"%s"' % _grade).encode()
_parse = cdc.parse_envelope


def parse_envelope(value):
    if isinstance(value, (bytes, bytearray)) and _marker in bytes(value):
        raise cdc.MalformedEnvelope("value out of range: grade " + _grade + " (the bug under test)")
    return _parse(value)


cdc.parse_envelope = parse_envelope
'''


def cli(run: AggregatorRun, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    s = run.settings
    env = {**os.environ, "TN_KAFKA_BOOTSTRAP": run.stack.bootstrap, "TN_LEDGER_DSN": run.stack.pg_dsn,
           "TN_CDC_TOPIC_PREFIX": s.cdc_topic_prefix, "TN_NETCHANGE_TOPIC": s.netchange_topic,
           "TN_CDC_DLQ_TOPIC": s.cdc_dlq_topic, "TN_APP_ID": s.app_id,
           "TN_TOPIC_PARTITIONS": str(s.topic_partitions), "TN_LOG_FORMAT": "json"}
    return subprocess.run([str(BIN), *args], check=False, env=env, capture_output=True, text=True, timeout=timeout)


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({**client_config(bootstrap), "group.id": f"ends-{uuid.uuid4().hex}"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


def read_from(bootstrap: str, topic: str, partition: int, offset: int, timeout: float = 20) -> list[Any]:
    """Every message of one partition from ``offset`` to its current end."""
    end = end_offsets(bootstrap, topic, partition + 1)[partition]
    c = Consumer({**client_config(bootstrap), "group.id": f"read-{uuid.uuid4().hex}",
                  "enable.auto.commit": False})
    out: list[Any] = []
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while offset + len(out) < end and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                out.append(msg)
    finally:
        c.close()
    assert offset + len(out) == end, f"{topic}:{partition}: read {len(out)} of {end - offset}"
    return out


def wait_committed(bootstrap: str, group: str, topic: str, partitions: int, timeout: float = 60) -> None:
    """The group has committed every partition of ``topic`` up to its end (so a restart reads on from there)."""
    admin = AdminClient(client_config(bootstrap))
    ends = end_offsets(bootstrap, topic, partitions)
    deadline = time.monotonic() + timeout
    got: dict[int, int] = {}
    while time.monotonic() < deadline:
        got = {p: o for (t, p), o in groups.committed_offsets(admin, group).items() if t == topic}
        if all(got.get(p, -1) >= ends[p] for p in range(partitions) if ends[p] > 0):
            return
        time.sleep(0.5)
    raise AssertionError(f"{group} committed {got} of {topic}, end offsets {ends}")


def wait_ready(service: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while http_status(service, "/readyz") != 200:
        assert service.alive, f"{service.name} died:\n{service.log()[-3000:]}"
        assert time.monotonic() < deadline, f"{service.name} not ready:\n{service.log()[-3000:]}"
        time.sleep(0.5)


def audit_rows(dsn: str, request_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            return list(conn.execute("SELECT item, action, operator, reason FROM notify.ops_audit"
                                     " WHERE request_id = %s", (request_id,)).fetchall())
        except pg_errors.UndefinedTable:
            return []


def test_a_cdc_dead_letter_is_retried_after_the_fix_once_and_the_aggregator_applies_it(
        run: AggregatorRun, tmp_path: Path) -> None:
    day = dt.date(2026, 11, 24)
    tid, other = f"{run.prefix}r", f"{run.prefix}o"
    p0, q0 = placement(f"{tid}-p", tid), placement(f"{other}-p", other)
    placements = f"{run.prefix}.tss.placement"
    parts = run.settings.topic_partitions
    dlq = run.settings.cdc_dlq_topic
    run.set_clock(london_ms(day, 12))
    run.produce([envelope("personal_details", "r", None, person(tid), london_ms(day, 1), snapshot="true"),
                 envelope("placement", "r", None, p0, london_ms(day, 1), snapshot="true"),
                 envelope("personal_details", "r", None, person(other), london_ms(day, 1), snapshot="true"),
                 envelope("placement", "r", None, q0, london_ms(day, 1), snapshot="true"),
                 envelope("placement", "u", p0, {**p0, "grade": REFUSED_GRADE}, london_ms(day, 10)),
                 envelope("placement", "u", q0, {**q0, "site": "Royal Papworth Hospital"}, london_ms(day, 10))])

    # the buggy release: the grade change is dead-lettered, the rest goes on
    release = tmp_path / "buggy-release"
    release.mkdir()
    (release / "sitecustomize.py").write_text(BUGGY_RELEASE)
    path = os.pathsep.join(p for p in (str(release), os.environ.get("PYTHONPATH", "")) if p)
    buggy = run.service("aggregator-buggy", PYTHONPATH=path, TN_IT_REFUSED_GRADE=REFUSED_GRADE).start()
    try:
        wait_metric(buggy, "netchange_dead_letters_total", 1)
        wait_metric(buggy, "netchange_events_folded_total", 1)  # the other trainee's site change
        wait_committed(run.stack.bootstrap, run.app_id, placements, parts)
    finally:
        buggy.stop()
    [(dlq_key, dlq_value, dlq_headers)] = run.records(1, topic=dlq, idle=1)
    assert dlq_key == orjson.dumps({"trainee_id": tid})
    assert b"grade F1 (the bug under test)" in dict(dlq_headers)["reason"]

    # the fixed release: same app id (its table), nothing re-applied by itself
    fixed = run.service("aggregator-fixed").start()
    try:
        wait_ready(fixed)
        time.sleep(3)
        assert metric(fixed, "netchange_events_folded_total") == 0

        listed = cli(run, "deadletter", "list", "--dlq", "cdc", "--json", "--limit", "0")
        assert listed.returncode == 0, listed.stderr
        [entry] = json.loads(listed.stdout)
        src_topic, src_part, _ = entry["source"].rsplit(":", 2)
        assert src_topic == placements and "grade F1" in entry["reason"] and entry["topic"] == dlq
        ref = entry["ref"]
        _, ref_part, ref_off = ref.split(":")
        before = end_offsets(run.stack.bootstrap, placements, parts)

        # a dry run lists it and sends nothing
        rid = f"dl-it-{uuid.uuid4().hex[:6]}"
        reason = "fixed in the next release: grade F1 accepted"
        dry = cli(run, "deadletter", "retry", ref, "--reason", reason, "--request-id", rid, "--json")
        assert dry.returncode == 0, dry.stderr
        planned = json.loads(dry.stdout)
        assert planned["execute"] is False and planned["request_id"] == rid
        assert [(d["ref"], d["action"], d["to"]) for d in planned["dead_letters"]] == [(ref, "retry", placements)]
        assert "opsctl.deadletter_retried" not in dry.stderr
        time.sleep(2)
        assert end_offsets(run.stack.bootstrap, placements, parts) == before
        assert audit_rows(run.stack.pg_dsn, rid) == []
        assert metric(fixed, "netchange_events_folded_total") == 0

        # --execute: back on its original topic and partition, same key and bytes, audited
        done = cli(run, "deadletter", "retry", ref, "--reason", reason, "--operator", "it-op",
                   "--request-id", rid, "--execute", "--json")
        assert done.returncode == 0, done.stderr
        assert [d["action"] for d in json.loads(done.stdout)["dead_letters"]] == ["retry"]
        assert "opsctl.deadletter_retried" in done.stderr and "Traceback" not in done.stderr
        after = end_offsets(run.stack.bootstrap, placements, parts)
        assert {p: after[p] - before[p] for p in after} == {p: int(p == int(src_part)) for p in after}
        [again] = read_from(run.stack.bootstrap, placements, int(src_part), before[int(src_part)])
        assert again.key() == dlq_key and again.value() == dlq_value
        headers = dict(again.headers() or [])
        assert headers["retry.request_id"] == rid.encode() and headers["retry.operator"] == b"it-op"
        assert headers["retry.of"] == f"{dlq}:{ref_part}:{ref_off}".encode()
        assert audit_rows(run.stack.pg_dsn, rid) == [(f"{dlq}:{ref_part}:{ref_off}", "deadletter-retry", "it-op",
                                                      reason)]

        # the fixed aggregator applies it: the trainee's day has the change, nothing is dead-lettered again
        wait_metric(fixed, "netchange_events_folded_total", 1)
        assert metric(fixed, "netchange_dead_letters_total") == 0

        # the same request again: nothing re-submitted
        twice = cli(run, "deadletter", "retry", ref, "--reason", reason, "--request-id", rid, "--execute", "--json")
        assert twice.returncode == 0, twice.stderr
        [skipped] = json.loads(twice.stdout)["dead_letters"]
        assert skipped["action"] == "skip" and rid in skipped["note"]
        time.sleep(2)
        assert end_offsets(run.stack.bootstrap, placements, parts) == after
        assert len(audit_rows(run.stack.pg_dsn, rid)) == 1

        run.set_clock(london_ms(day + dt.timedelta(days=1), 0) + GRACE_MS + 5_000)
        by_id = {r["id"]: r for r in run.netchange(2, timeout=60)}
        assert metric(fixed, "netchange_events_folded_total") == 1
    finally:
        fixed.stop()
    assert set(by_id) == {f"{tid}:2026-11-24", f"{other}:2026-11-24"}
    assert by_id[f"{tid}:2026-11-24"]["changes"][0]["fields"] == {"grade": {"old": "ST3", "new": REFUSED_GRADE}}
    assert by_id[f"{other}:2026-11-24"]["changes"][0]["fields"]["site"]["new"] == "Royal Papworth Hospital"
    assert "Traceback" not in fixed.log()
