"""reset-offsets, replays, resend and dead letters on the real broker, ledger database and SMTP server,
with the mailer running as a real process and the operator commands run as the console script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from services import serde
from services.kafka_security import librdkafka_config
from tests.integration.procs import BIN, text_of
from tests.integration.test_mailer import (  # noqa: F401  (fixtures)
    DAY,
    DLQ_TOPIC,
    STATUS_TOPIC,
    _wait_committed,
    committed,
    digest_id,
    finish,
    ledger,
    mid,
    new_topic,
    produce,
    record,
    run_mailer,
    smtp,
    subject,
    wait_final,
)


def cli(stack: Any, *args: str, topic: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TN_KAFKA_BOOTSTRAP": stack.bootstrap, "TN_LEDGER_DSN": stack.pg_dsn,
           "TN_LOG_FORMAT": "json"}
    if topic:
        env["TN_NETCHANGE_TOPIC"] = topic
    return subprocess.run([str(BIN), *args], check=False, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def ledger_schema(stack: Any) -> None:
    """The ledger's tables exist before a test polls them (the mailer creates them when it starts)."""
    from services.notifier.ledger import SCHEMA

    with psycopg.connect(stack.pg_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('notify.ledger schema'))")
        conn.execute(SCHEMA)


def row(stack: Any, nid: str) -> dict[str, Any]:
    with psycopg.connect(stack.pg_dsn, autocommit=True, row_factory=dict_row) as conn:
        found = conn.execute("SELECT * FROM notify.ledger WHERE notification_id = %s", (nid,)).fetchone()
    assert found is not None
    return found


def events(stack: Any, nid: str, n: int, timeout: float = 30) -> list[dict[str, Any]]:
    from tests.integration.conftest import consume

    got = consume(stack.bootstrap, STATUS_TOPIC, n, timeout=timeout, predicate=lambda r: r.key == nid.encode())
    return [serde.decode(serde.DELIVERY_STATUS, r.raw_value) for r in got]


def end_offset(stack: Any, topic: str, partitions: int) -> int:
    """The sum of the end offsets of ``topic``'s partitions."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**librdkafka_config(stack.kafka_settings()), "group.id": f"it-ends-{uuid.uuid4().hex[:6]}"})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions))
    finally:
        c.close()


def cli_json(stack: Any, *args: str, topic: str | None = None, codes: tuple[int, ...] = (0,)) -> Any:
    done = cli(stack, *args, "--json", topic=topic)
    assert done.returncode in codes, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    return json.loads(done.stdout)


def wait_row(stack: Any, nid: str, pred: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = row(stack, nid)
        if pred(r):
            return r
        time.sleep(0.3)
    raise AssertionError(f"ledger row {nid} not as expected: {r}")


# ---------------------------------------------------------------------------------------------- reset-offsets
def test_reset_offsets_plans_until_execute_refuses_a_live_group_and_a_replay_sends_nothing(
        stack: Any, tmp_path: Path, smtp: Any) -> None:  # noqa: F811 - pytest fixtures imported by name
    tids = [f"treset-{uuid.uuid4().hex[:8]}" for _ in range(6)]
    server = smtp()
    topic = new_topic(stack, partitions=2)
    produce(stack, topic, [record(t) for t in tids])
    group = f"it-reset-{uuid.uuid4().hex[:8]}"
    svc = run_mailer(stack, tmp_path, server.port, topic, name="mailer-reset", group=group)
    wait_final(stack, [digest_id(t) for t in tids], svc=svc)
    _wait_committed(stack, svc, topic, 6, partitions=2)

    # live: --execute is refused, naming the member; a dry run still shows the plan, with a warning
    refused = cli(stack, "reset-offsets", group, "--to-earliest", "--execute")
    assert refused.returncode == 1, refused
    assert "live member" in refused.stderr and "mailer-reset" in refused.stderr and "Traceback" not in refused.stderr
    assert committed(stack, group, topic, 2) == 6
    live_dry = cli(stack, "reset-offsets", group, "--to-earliest")
    assert live_dry.returncode == 0 and "--execute would be refused" in live_dry.stderr
    assert finish(svc) == 0

    # stopped: the dry run prints the plan and changes nothing
    dry = cli(stack, "reset-offsets", group, "--to-earliest", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["executed"] is False and plan["totals"] == {"reread": 6, "skipped": 0, "partitions": 2}
    assert {(p["topic"], p["new"]) for p in plan["partitions"]} == {(topic, 0)}
    assert sum(p["current"] for p in plan["partitions"]) == 6
    assert committed(stack, group, topic, 2) == 6
    table = cli(stack, "reset-offsets", group, "--to-earliest")
    assert "dry run" in table.stdout and "6 record(s) read again" in table.stdout

    # by time: before every record, every record is read again; after the last one, none
    early = json.loads(cli(stack, "reset-offsets", group, "--to-datetime", "2000-01-01T00:00:00Z", "--json").stdout)
    assert early["totals"] == {"reread": 6, "skipped": 0, "partitions": 2} and early["target"]["mode"] == "to-datetime"
    late = json.loads(cli(stack, "reset-offsets", group, "--to-datetime", "2h", "--json").stdout)
    assert late["totals"]["reread"] == 6  # produced minutes ago: within the last two hours
    future = json.loads(cli(stack, "reset-offsets", group, "--to-datetime", "2999-01-01", "--json").stdout)
    assert future["totals"]["reread"] == 0 and {p["new"] for p in future["partitions"]} == {
        p["high"] for p in future["partitions"]}
    at = json.loads(cli(stack, "reset-offsets", group, "--to-offset", "1", "--topic", f"{topic}:1", "--json").stdout)
    [p1] = at["partitions"]
    assert (p1["partition"], p1["new"], p1["reread"]) == (1, 1, p1["current"] - 1)
    assert committed(stack, group, topic, 2) == 6  # dry runs, all of them

    # a partition and a shift: only that partition moves
    one = json.loads(cli(stack, "reset-offsets", group, "--shift-by", "-1", "--topic", f"{topic}:0", "--json").stdout)
    assert [(p["partition"], p["reread"]) for p in one["partitions"]] == [(0, 1)]

    executed = cli(stack, "reset-offsets", group, "--to-earliest", "--execute", "--json")
    assert executed.returncode == 0, executed.stderr
    assert json.loads(executed.stdout)["executed"] is True
    assert committed(stack, group, topic, 2) == 0

    # the replay of the mailer's group: everything read again, nothing sent again
    replay = run_mailer(stack, tmp_path, server.port, topic, name="mailer-replayed", group=group)
    _wait_committed(stack, replay, topic, 6, partitions=2)
    assert finish(replay) == 0
    assert server.message_ids() == {mid(t): 1 for t in tids}
    assert replay.log().count('"event": "mail.replay_skipped"') == 6

    # clear one-line errors
    unknown = cli(stack, "reset-offsets", f"no-such-group-{uuid.uuid4().hex[:6]}", "--to-latest")
    assert unknown.returncode == 1 and "unknown consumer group" in unknown.stderr
    bad_topic = cli(stack, "reset-offsets", group, "--to-latest", "--topic", "no-such-topic")
    assert bad_topic.returncode == 1 and "unknown topic 'no-such-topic'" in bad_topic.stderr
    usage = cli(stack, "reset-offsets", group, "--to-latest", "--to-earliest")
    assert usage.returncode == 2


# ---------------------------------------------------------------------------------------------- superseded
def test_a_rederived_record_with_other_content_is_superseded_not_sent_and_can_be_resent(
        stack: Any, tmp_path: Path, smtp: Any) -> None:  # noqa: F811 - pytest fixtures imported by name
    tid = f"tsup-{uuid.uuid4().hex[:8]}"
    nid = digest_id(tid)
    server = smtp()
    topic = new_topic(stack, partitions=1)
    produce(stack, topic, [record(tid)])
    svc = run_mailer(stack, tmp_path, server.port, topic, name="mailer-sup")
    wait_final(stack, [nid], svc=svc)
    sent = row(stack, nid)
    assert sent["status"] == "SENT" and sent["content_hash"] and sent["record_value"]
    # the aggregator, replayed after a fix, derives the same id with other content
    produce(stack, topic, [record(tid), record(tid, address_line="Flat 4, 41 Hills Road")])
    sup = wait_row(stack, nid, lambda r: r["status"] == "SUPERSEDED")
    assert sup["superseded_status"] == "SENT" and sup["superseded_hash"] not in (None, sent["content_hash"])
    assert sup["content_hash"] == sent["content_hash"] and sup["generation"] == 0
    _wait_committed(stack, svc, topic, 3, partitions=1)  # every record read and decided
    assert server.message_ids() == {mid(tid): 1}
    by_status = {e["status"]: e for e in events(stack, nid, 2)}
    assert by_status["SUPERSEDED"]["previous_content_hash"] == sent["content_hash"]
    assert by_status["SUPERSEDED"]["content_hash"] == sup["superseded_hash"]
    assert by_status["SENT"]["content_hash"] == sent["content_hash"]

    # status shows it: the day's count (--day) and, for any day, a warning that it waits for a decision
    screen = cli_json(stack, "status", "--day", DAY, codes=(0, 3))  # 3: no aggregator or Connect in this test
    assert screen["digests"][DAY]["by_status"].get("SUPERSEDED", 0) >= 1 and screen["superseded"][DAY] >= 1
    assert any("SUPERSEDED" in w and DAY in w for w in cli_json(stack, "status", codes=(0, 3))["warnings"])
    table = cli(stack, "status", "--day", DAY)
    assert "SUPERSEDED" in table.stdout and DAY in table.stdout
    # and trainee: the ledger row now SUPERSEDED, with the sent and the new content's hashes
    tl = cli_json(stack, "trainee", tid, topic=topic)
    [now] = [e for e in tl["events"] if e["source"] == "ledger" and "now SUPERSEDED" in e["what"]]
    assert sent["content_hash"][:12] in now["what"] and sup["superseded_hash"][:12] in now["what"]
    assert "record_value" not in now["detail"] and "superseded_value" not in now["detail"]  # no copies (addresses)
    [answer] = tl["told"]
    [note] = answer["notifications"]
    assert (note["status"], note["content_hash"], note["superseded_hash"]) == (
        "SUPERSEDED", sent["content_hash"], sup["superseded_hash"])
    assert any(e["source"] == "delivery-status" and " SUPERSEDED " in e["what"] for e in tl["events"])
    assert f"dr.{tid}@example.nhs.uk" not in json.dumps(tl)
    shown = cli(stack, "trainee", tid, topic=topic)
    assert "superseded: not sent; decide" in " ".join(shown.stdout.split())

    # the operator decides: resend the superseding record, as a copy, through the running mailer
    done = cli(stack, "resend", "--status", "SUPERSEDED", "--trainee", tid, "--reason", "placement fix",
               "--operator", "it-op", "--execute", topic=topic)
    assert done.returncode == 0, done.stderr
    [copy] = server.inbox.wait_for(lambda m: m["Message-ID"] == mid(tid, generation=1), timeout=60)
    assert subject(copy).startswith("Copy: ") and "first sent on" in re.sub(r"\s+", " ", text_of(copy))
    final = wait_row(stack, nid, lambda r: r["status"] == "SENT" and r["generation"] == 1)
    assert final["content_hash"] == sup["superseded_hash"] and final["superseded_hash"] is None
    assert finish(svc) == 0


# ---------------------------------------------------------------------------------------------- resend
def test_resend_is_a_dry_run_until_execute_sends_one_copy_and_a_replayed_request_sends_nothing(
        stack: Any, tmp_path: Path, smtp: Any) -> None:  # noqa: F811 - pytest fixtures imported by name
    tid = f"tres-{uuid.uuid4().hex[:8]}"
    nid = digest_id(tid)
    server = smtp()
    topic = new_topic(stack, partitions=2)
    produce(stack, topic, [record(tid)])
    group = f"it-resend-{uuid.uuid4().hex[:8]}"
    svc = run_mailer(stack, tmp_path, server.port, topic, name="mailer-resend", group=group)
    wait_final(stack, [nid], svc=svc)

    missing = cli(stack, "resend", "--trainee", tid, topic=topic)
    assert missing.returncode == 2  # --reason is required
    dry = cli(stack, "resend", "--trainee", tid, "--day", DAY, "--reason", "trainee asked", "--json", topic=topic)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["execute"] is False and [n["action"] for n in planned["notifications"]] == ["send"]
    # a dry run changes nothing: no mark, no audit row, nothing published (the last line of the test checks
    # that the only copy ever sent is the one --execute asked for)
    assert not row(stack, nid)["resend_requested"] and end_offset(stack, topic, 2) == 1
    # by time range: when the outcome was recorded
    ranged = cli_json(stack, "resend", "--trainee", tid, "--since", "1h", "--until", "now", "--reason", "r",
                      topic=topic)
    assert [n["notification_id"] for n in ranged["notifications"]] == [nid]
    outside = cli(stack, "resend", "--status", "SENT", "--until", "2000-01-01", "--reason", "r", topic=topic)
    assert outside.returncode == 1 and outside.stderr.startswith("error: no notification in the ledger matches")

    rid = f"rs-it-{uuid.uuid4().hex[:6]}"
    done = cli(stack, "resend", "--trainee", tid, "--reason", "trainee asked", "--operator", "it-op",
               "--request-id", rid, "--execute", topic=topic)
    assert done.returncode == 0, done.stderr
    assert "opsctl.resend_requested" in done.stderr  # the audit line
    [copy] = server.inbox.wait_for(lambda m: m["Message-ID"] == mid(tid, generation=1), timeout=60)
    assert subject(copy).startswith("Copy: ") and "first sent on" in re.sub(r"\s+", " ", text_of(copy))
    r = wait_row(stack, nid, lambda r: r["status"] == "SENT" and r["generation"] == 1)
    assert (r["resend_by"], r["resend_reason"], r["resend_request_id"], r["resend_requested"]) == (
        "it-op", "trainee asked", rid, False)
    evs = events(stack, nid, 3)
    requested = [e for e in evs if e["status"] == "RESEND_REQUESTED"]
    copies = [e for e in evs if e["status"] == "SENT" and e["generation"] == 1]
    assert requested and requested[0]["operator"] == "it-op" and requested[0]["request_id"] == rid
    assert copies and (copies[0]["request_id"], copies[0]["operator"], copies[0]["operator_reason"]) == (
        rid, "it-op", "trainee asked")

    # the same request again: nothing more; a replay of the mailer's group: nothing more either
    again = cli(stack, "resend", "--trainee", tid, "--reason", "trainee asked", "--request-id", rid,
                "--execute", "--json", topic=topic)
    assert again.returncode == 0, again.stderr
    assert [n["action"] for n in json.loads(again.stdout)["notifications"]] == ["skip"]
    assert finish(svc) == 0
    assert cli(stack, "reset-offsets", group, "--to-earliest", "--execute").returncode == 0
    replay = run_mailer(stack, tmp_path, server.port, topic, name="mailer-resend-replay", group=group)
    _wait_committed(stack, replay, topic, 2, partitions=2)  # the record and its re-published copy
    assert finish(replay) == 0
    assert server.message_ids() == {mid(tid): 1, mid(tid, generation=1): 1}


def test_a_bulk_resend_shows_a_progress_bar_and_sends_each_copy_once(stack: Any, tmp_path: Path,
                                                                      smtp: Any) -> None:  # noqa: F811
    from tests.integration.terminal import run_with_a_terminal

    tids = [f"tbulk-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    server = smtp()
    topic = new_topic(stack, partitions=2)
    produce(stack, topic, [record(t) for t in tids])
    svc = run_mailer(stack, tmp_path, server.port, topic, name="mailer-bulk")
    wait_final(stack, [digest_id(t) for t in tids], svc=svc)

    env = {**os.environ, "TN_KAFKA_BOOTSTRAP": stack.bootstrap, "TN_LEDGER_DSN": stack.pg_dsn,
           "TN_NETCHANGE_TOPIC": topic, "TN_LOG_FORMAT": "json"}
    done = run_with_a_terminal([str(BIN), "resend", "--trainee", ",".join(tids), "--reason", "bulk test",
                                "--operator", "it-op", "--execute"], env)
    assert done.returncode == 0, done.terminal[-2000:]
    assert "asking for copies" in done.terminal and "━" in done.terminal and "100%" in done.terminal, done.terminal
    assert "3 of 3 selected: asked the mailer to send 3" in " ".join(done.stdout.split())
    for t in tids:
        server.inbox.wait_for(lambda m, t=t: m["Message-ID"] == mid(t, generation=1), timeout=60)
    _wait_committed(stack, svc, topic, 6, partitions=2)  # the three records and their three re-published copies
    assert server.message_ids() == {**{mid(t): 1 for t in tids}, **{mid(t, generation=1): 1 for t in tids}}
    assert finish(svc) == 0


# ---------------------------------------------------------------------------------------------- dead letters
def test_deadletter_lists_shows_and_retries_a_failed_mail_once(stack: Any, tmp_path: Path, smtp: Any) -> None:  # noqa: F811 - pytest fixtures imported by name
    tid = f"tdlq-{uuid.uuid4().hex[:8]}"
    nid = digest_id(tid)
    relay_fixed = {"yes": False}

    async def script(server: Any, envelope: Any) -> str | None:
        return None if relay_fixed["yes"] else "550 5.7.1 relay says no"

    server = smtp(script)
    topic = new_topic(stack, partitions=1)
    produce(stack, topic, [record(tid)])
    svc = run_mailer(stack, tmp_path, server.port, topic, name="mailer-dlq")
    wait_final(stack, [nid], svc=svc)
    assert row(stack, nid)["status"] == "FAILED"

    deadline = time.monotonic() + 30
    mine: list[dict[str, Any]] = []
    while not mine and time.monotonic() < deadline:
        listed = cli(stack, "deadletter", "list", "--dlq", "mail", "--json", "--limit", "0")
        assert listed.returncode == 0, listed.stderr
        mine = [e for e in json.loads(listed.stdout) if e["notification_id"] == nid]
    [entry] = mine
    assert "relay says no" in entry["reason"] and entry["source"] == f"{topic}:0:0" and entry["topic"] == DLQ_TOPIC
    shown = cli(stack, "deadletter", "show", entry["ref"], "--json")
    assert shown.returncode == 0, shown.stderr
    value = json.loads(shown.stdout)["value"]
    assert value["trainee_id"] == tid and value["recipient"]["email"] != f"dr.{tid}@example.nhs.uk"  # masked

    relay_fixed["yes"] = True
    rid = f"dl-it-{uuid.uuid4().hex[:6]}"
    dry = cli(stack, "deadletter", "retry", entry["ref"], "--reason", "relay fixed", "--request-id", rid)
    assert dry.returncode == 0 and "dry run" in dry.stdout
    # the dry run re-submitted nothing and marked nothing
    assert end_offset(stack, topic, 1) == 1 and not row(stack, nid)["resend_requested"]
    done = cli(stack, "deadletter", "retry", entry["ref"], "--reason", "relay fixed", "--operator", "it-op",
               "--request-id", rid, "--execute")
    assert done.returncode == 0, done.stderr
    server.inbox.wait_for(lambda m: m["Message-ID"] == mid(tid, generation=1), timeout=60)
    wait_row(stack, nid, lambda r: r["status"] == "SENT" and r["resend_request_id"] == rid)
    again = cli(stack, "deadletter", "retry", entry["ref"], "--reason", "relay fixed", "--request-id", rid,
                "--execute", "--json")
    assert [d["action"] for d in json.loads(again.stdout)["dead_letters"]] == ["skip"]
    # once the mailer has read (and committed) everything on the topic, the retried record went once
    assert end_offset(stack, topic, 1) == 2
    _wait_committed(stack, svc, topic, 2, partitions=1)
    assert server.message_ids() == {mid(tid, generation=1): 1}
    assert finish(svc) == 0
