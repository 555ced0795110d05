"""The operator's commands (status, tail, trainee, preview, topics describe, connector) against the real
stack: PostgreSQL, Kafka, Connect + Debezium, a real aggregator and mailer, a real SMTP server.

The CLI is run as operators run it: the ``trainee-notify`` console script in a subprocess. Days are
shortened to WINDOW seconds (as in test_e2e.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.opsctl.common import trainee_partition
from tests.integration.procs import BIN, Inbox, Service, aggregator, mailer, smtp_server, text_of

WINDOW = 8
DAYS = {"TN_DAY_SECONDS": str(WINDOW), "TN_GRACE_SECONDS": "1", "TN_MAX_HOLD_SECONDS": "20"}


@dataclass
class Ops:
    stack: Any
    inbox: Inbox
    agg: Service
    mail: Service
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), *args], check=False, env={**os.environ, **self.env, **env},
                              capture_output=True, text=True, timeout=timeout)

    def json(self, *args: str, **env: str) -> Any:
        done = self.run(*args, "--json", **env)
        assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def ops(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    scratch = tmp_path_factory.mktemp("opsctl")
    ctl, inbox = smtp_server()
    group = f"mailer-ops-{uuid.uuid4().hex[:6]}"
    agg = aggregator(stack, scratch, **DAYS).start()
    mail = mailer(stack, scratch, ctl.port, TN_GROUP_ID=group, **DAYS).start()
    env = {"TN_KAFKA_BOOTSTRAP": stack.bootstrap, "TN_LEDGER_DSN": stack.pg_dsn, "TN_SOURCE_DSN": stack.pg_dsn,
           "TN_CONNECT_URL": stack.connect_url, "TN_STACK_SCRATCH": str(stack.scratch), "TN_GROUP_ID": group,
           "TN_AGGREGATOR_URL": f"http://127.0.0.1:{agg.env['TN_WEB_PORT']}", "TN_LOG_FORMAT": "json", **DAYS}
    try:
        yield Ops(stack, inbox, agg, mail, env)
    finally:
        mail.stop()
        agg.stop()
        ctl.stop()
        for svc in (agg, mail):
            assert "Traceback" not in svc.log(), f"{svc.name} crashed:\n{svc.log()[-3000:]}"


def next_window() -> None:
    time.sleep(WINDOW - (time.time() % WINDOW) + 0.3)


@pytest.fixture(scope="module")
def told(ops: Ops, stack: Any) -> dict[str, str]:
    """A trainee whose new placement site was mailed to them: their id, address and the email's text."""
    import psycopg

    tid = f"ops-{uuid.uuid4().hex[:8]}"
    address = f"dr.{tid}@example.nhs.uk"
    with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO tss.personal_details (trainee_id, role, title, forenames, surname, email, updated_at)"
                     " VALUES (%s, 'DR in Training', 'Dr', 'Ada', 'Okafor', %s, now())", (tid, address))
        conn.execute("INSERT INTO tss.placement (id, trainee_id, placement_type, start_date, end_date, grade,"
                     " specialty, site, employing_body, training_body, whole_time_equivalent, updated_at) VALUES"
                     " (%s, %s, 'In post', '2027-02-03', '2027-08-03', 'ST3', 'Cardiology', 'Addenbrooke''s Hospital',"
                     " 'Cambridge University Hospitals NHS Foundation Trust', 'Royal Papworth Hospital NHS Foundation"
                     " Trust', 1.00, now())", (f"pl-{tid}", tid))
        next_window()
        conn.execute("UPDATE tss.placement SET site = 'Royal Papworth Hospital', updated_at = now() WHERE id = %s",
                     (f"pl-{tid}",))
    # two digests: the day the trainee and placement were created, and the day the site changed
    msg = ops.inbox.wait_for(lambda m: address in (m["To"] or ""), n=2, timeout=120)[-1]
    assert "Addenbrooke's Hospital" in text_of(msg) and "Royal Papworth Hospital" in text_of(msg)
    # the ledger rows and the delivery events: written after the relay took the emails
    wait_sent(stack, tid, 2)
    return {"id": tid, "address": address, "text": text_of(msg), "message_id": msg["Message-ID"]}


def wait_sent(stack: Any, tid: str, n: int, timeout: float = 60) -> None:
    """Until the ledger has ``n`` SENT rows of ``tid`` and the delivery-status topic ``n`` SENT events."""
    import psycopg

    from services import serde
    from tests.integration.conftest import consume

    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
            (sent,) = conn.execute("SELECT count(*) FROM notify.ledger WHERE trainee_id = %s AND status = 'SENT'",
                                   (tid,)).fetchone() or (0,)
        if sent >= n:
            break
        assert time.monotonic() < deadline, f"{sent} of {n} ledger rows SENT"
        time.sleep(0.3)
    consume(stack.bootstrap, "trainee-notify.delivery-status.v1", n, timeout=timeout,
            predicate=lambda r: (r.key or b"").startswith(f"{tid}:".encode())
            and serde.decode(serde.DELIVERY_STATUS, r.raw_value)["status"] == "SENT")


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr


# ------------------------------------------------------------------------------------------- trainee
def test_timeline_of_a_trainee_whose_digest_was_sent(ops: Ops, told: dict[str, str]) -> None:
    out = ops.json("trainee", told["id"])
    events = out["events"]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events), "not in time order"
    sources = {e["source"] for e in events}
    assert {"cdc:personal_details", "cdc:placement", "netchange", "ledger", "delivery-status"} <= sources, sources
    update = [e for e in events if e["source"] == "cdc:placement" and "updated" in e["what"]]
    assert update and "site" in update[0]["what"]
    assert update[0]["detail"]["fields"]["site"] == {"old": "Addenbrooke's Hospital", "new": "Royal Papworth Hospital"}
    assert any(e["source"] == "delivery-status" and " SENT " in e["what"] for e in events)
    # the answer: the record with the placement change, its digest SENT, with a time and the Message-ID sent
    [answer] = [a for a in out["told"] if "updated [site]" in a["changes"]]
    [digest] = [n for n in answer["notifications"] if n["kind"] == "digest"]
    assert digest["status"] == "SENT" and digest["sent_at"]
    assert digest["message_id"] == told["message_id"]
    # personal data masked: neither the address nor the surname is printed
    assert told["address"] not in json.dumps(out) and "Okafor" not in json.dumps(out)
    assert out["unreachable"] == []
    # the table, for people
    done = ops.run("trainee", told["id"])
    assert done.returncode == 0, done.stderr
    assert "was the trainee told?" in done.stdout and "SENT" in done.stdout and told["address"] not in done.stdout


def test_timeline_shows_a_progress_bar_on_a_terminal_while_it_scans(ops: Ops, told: dict[str, str]) -> None:
    from tests.integration.terminal import run_with_a_terminal

    done = run_with_a_terminal([str(BIN), "trainee", told["id"], "--json"], {**os.environ, **ops.env})
    assert done.returncode == 0, done.terminal[-2000:]
    # one bar per topic scanned (the trainee's CDC partitions, the net-change and status topics), with counts
    for topic in ("tis.tss.placement", "trainee-notify.netchange.v1", "trainee-notify.delivery-status.v1"):
        assert topic in done.terminal, done.terminal[-2000:]
    assert "━" in done.terminal and re.search(r"\b\d+/\d+\b", done.terminal)
    assert json.loads(done.stdout)["trainee_id"] == told["id"]  # stdout is still the JSON alone
    # without a terminal (a pipe, a script): no bar at all
    piped = ops.run("trainee", told["id"], "--json")
    assert piped.returncode == 0 and "━" not in piped.stderr and not piped.stderr.startswith("\n")


def test_timeline_shows_personal_data_only_when_asked_and_audits_it(ops: Ops, told: dict[str, str]) -> None:
    done = ops.run("trainee", told["id"], "--json", "--show-personal")
    assert done.returncode == 0, done.stderr
    assert told["address"] in done.stdout
    audit = [json.loads(line) for line in done.stderr.splitlines() if '"audit"' in line]
    assert audit and audit[0]["command"] == "trainee" and audit[0]["operator"] and audit[0]["trainee"] == told["id"]


def test_unknown_trainee_is_one_line(ops: Ops) -> None:
    done = ops.run("trainee", f"nobody-{uuid.uuid4().hex[:6]}")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: unknown trainee") and len(done.stderr.strip().splitlines()) == 1
    no_traceback(done)


# ---------------------------------------------------------------------------------------------- tail
def test_tail_a_cdc_topic_by_trainee_decodes_and_masks(ops: Ops, told: dict[str, str]) -> None:
    done = ops.run("tail", "tis.tss.personal_details", "--from-beginning", "--trainee", told["id"], "--json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert records and all(r["key"] == {"trainee_id": told["id"]} for r in records)
    assert all(r["partition"] == trainee_partition(told["id"], 12) for r in records)
    assert all(r["format"] == "json" and r["timestamp"] for r in records)
    assert records[0]["value"]["after"]["email"] == "‹masked›"
    assert records[0]["value"]["after"]["trainee_id"] == told["id"]
    assert told["address"] not in done.stdout


def test_tail_our_avro_topic_names_the_schema_version(ops: Ops, told: dict[str, str]) -> None:
    out = ops.run("tail", "trainee-notify.netchange.v1", "--from-beginning", "--trainee", told["id"], "--json")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert records and all(re.fullmatch(r"avro NetChange v\d+", r["format"]) for r in records)
    assert all(r["key"].startswith(f"{told['id']}:") for r in records)
    assert all(r["value"]["recipient"] is None or r["value"]["recipient"]["email"] == "‹masked›" for r in records)
    status = ops.run("tail", "trainee-notify.delivery-status.v1", "--since", "1h", "--trainee", told["id"], "--json")
    statuses = [json.loads(line) for line in status.stdout.splitlines()]
    assert any(r["value"]["status"] == "SENT" and re.fullmatch(r"avro DeliveryStatus v\d+", r["format"])
               for r in statuses), statuses


def test_tail_show_personal_is_audited(ops: Ops, told: dict[str, str]) -> None:
    done = ops.run("tail", "tis.tss.personal_details", "--from-beginning", "--trainee", told["id"], "--json",
                   "--show-personal")
    assert done.returncode == 0 and told["address"] in done.stdout
    audit = [json.loads(line) for line in done.stderr.splitlines() if '"audit"' in line]
    assert audit and audit[0]["event"] == "opsctl.personal_data_shown" and audit[0]["command"] == "tail"
    assert audit[0]["operator"] and audit[0]["topic"] == "tis.tss.personal_details"


def test_tail_limit_until_and_newest(ops: Ops, told: dict[str, str]) -> None:
    one = ops.run("tail", "tis.tss.placement", "--from-beginning", "--limit", "1", "--json")
    assert one.returncode == 0 and len(one.stdout.splitlines()) == 1
    none = ops.run("tail", "tis.tss.placement", "--from-beginning", "--until", "2000-01-01", "--json")
    assert none.returncode == 0 and none.stdout.strip() == ""
    newest = ops.run("tail", "tis.tss.placement", "-n", "2")  # the rich form, the newest two
    assert newest.returncode == 0 and "2 record(s)" in newest.stderr
    assert newest.stdout.count('key={"trainee_id":') == 2


def test_tail_since_and_until_select_by_time(ops: Ops, told: dict[str, str]) -> None:
    def records(*args: str) -> list[dict[str, Any]]:
        done = ops.run("tail", "tis.tss.placement", "--trainee", told["id"], *args, "--json")
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    # the placement created, then (a window later) its site changed
    created, updated = records("--from-beginning")
    assert (created["value"]["op"], updated["value"]["op"]) == ("c", "u")
    assert records("--since", "2h") == [created, updated]
    assert records("--from-beginning", "--until", created["timestamp"]) == [created]
    assert records("--since", updated["timestamp"]) == [updated]
    assert records("--since", created["timestamp"], "--until", updated["timestamp"], "--limit", "1") == [created]
    bad = ops.run("tail", "tis.tss.placement", "--since", "yesterday-ish")
    assert bad.returncode == 2 and bad.stderr.startswith("error: not a time: 'yesterday-ish'")


def test_tail_follow_sees_a_new_record(ops: Ops, stack: Any) -> None:
    import psycopg

    tid = f"fol-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([str(BIN), "tail", "tis.tss.personal_details", "--follow", "--trainee", tid, "--json",
                             "--limit", "1"], env={**os.environ, **ops.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(90, proc.kill)  # a tail that never says it follows fails the test, not the session
    guard.start()
    try:
        # tail says on stderr when it has read what was there; only then is the change made
        assert proc.stderr is not None
        lines = []
        while not any(line.startswith("following tis.tss.personal_details") for line in lines):
            line = proc.stderr.readline()
            assert line, f"tail ended before following: {''.join(lines)}"
            lines.append(line)
        with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO tss.personal_details (trainee_id, role, forenames, surname, updated_at)"
                         " VALUES (%s, 'DR in Training', 'Fol', 'Low', now())", (tid,))
        out, err = proc.communicate(timeout=60)
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    [record] = [json.loads(line) for line in out.splitlines()]
    assert record["key"] == {"trainee_id": tid} and record["value"]["op"] == "c"


def test_unknown_topic_and_unreachable_broker_are_one_line(ops: Ops) -> None:
    done = ops.run("tail", "no.such.topic")
    assert done.returncode == 1 and done.stderr.strip() == ("error: unknown topic 'no.such.topic' "
                                                          "(see `trainee-notify topics list`)")
    no_traceback(done)
    for args in (["tail", "tis.tss.placement"], ["trainee", "x"], ["topics", "describe"], ["preview", "--trainee",
                                                                                            "x", "--day", "y"]):
        done = ops.run(*args, "--bootstrap", "127.0.0.1:1")
        assert done.returncode == 3, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "cannot reach the Kafka broker" in lines[0], args
        no_traceback(done)


# -------------------------------------------------------------------------------------------- status
def test_status_one_screen(ops: Ops, told: dict[str, str]) -> None:
    out = ops.json("status")
    agg_group = out["groups"]["trainee-notify-aggregator"]
    assert agg_group["state"] == "Stable" and agg_group["members"]
    assert "tis.tss.placement" in agg_group["lag"]
    mail_group = out["groups"][ops.env["TN_GROUP_ID"]]
    assert mail_group["members"] and mail_group["members"][0]["client_id"]
    assert "trainee-notify.netchange.v1" in mail_group["lag"]
    assert out["aggregator"]["forced"] is False and out["aggregator"]["watermark_lag_seconds"] is not None
    [today] = [d for d in out["digests"].values() if d["label"] == "today"]
    assert today["by_status"].get("SENT", 0) >= 1
    assert set(out["dead_letters"]) == {"cdc", "mail"}
    assert out["connector"]["state"] == "RUNNING" and out["connector"]["tasks"][0]["state"] == "RUNNING"
    [slot] = [s for s in out["slots"] if s["slot_name"] == "tss_debezium"]
    assert isinstance(slot["retained_bytes"], int) and slot["active"] is True
    assert out["unreachable"] == []
    screen = ops.run("status")
    assert screen.returncode == 0, screen.stderr
    for heading in ("consumer groups", "notifications by ledger status", "dead letters", "connector tss-postgres",
                    "replication slots", "watermark lag"):
        assert heading in screen.stdout, heading


def test_status_says_what_it_could_not_reach_and_shows_the_rest(ops: Ops) -> None:
    done = ops.run("status", "--aggregator-url", "http://127.0.0.1:1", "--ledger-dsn",
                   "host=127.0.0.1 port=1 user=postgres dbname=tss")
    assert done.returncode == 3
    assert "consumer groups" in done.stdout and "connector tss-postgres" in done.stdout
    assert "could not read: cannot reach the aggregator at 127.0.0.1:1" in " ".join(done.stdout.split())
    assert "cannot reach the ledger database at 127.0.0.1:1" in " ".join(done.stdout.split())
    no_traceback(done)


def test_unknown_group_is_one_line(ops: Ops) -> None:
    done = ops.run("status", "--group", "no-such-group")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: unknown consumer group 'no-such-group' (no members, no committed offsets)"
    no_traceback(done)


# -------------------------------------------------------------------------------------------- topics
def test_topics_describe_with_lag(ops: Ops, told: dict[str, str]) -> None:
    rows = {r["topic"]: r for r in ops.json("topics", "describe")}
    assert all(r["exists"] for r in rows.values()), [t for t, r in rows.items() if not r["exists"]]
    net = rows["trainee-notify.netchange.v1"]
    assert net["partitions"] == 12 and net["end_offset_total"] > 0 and net["cleanup_policy"] == "delete"
    assert net["retention_ms"] == 30 * 86400 * 1000 and net["issues"] == []
    assert ops.env["TN_GROUP_ID"] in net["lag"]
    assert "trainee-notify-aggregator" in rows["tis.tss.placement"]["lag"]
    assert rows["trainee-notify-aggregator-trainee_state-changelog"]["cleanup_policy"] == "compact"
    table = ops.run("topics", "describe")
    assert table.returncode == 0 and "group lag" in table.stdout
    listing = ops.json("topics", "list")
    assert {r["topic"] for r in listing} == set(rows)
    unknown = ops.run("topics", "describe", "no.such.topic")
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: unknown topic 'no.such.topic'")


# ------------------------------------------------------------------------------------------- preview
def test_preview_from_the_topic_is_the_email_that_was_sent(ops: Ops, told: dict[str, str], tmp_path: Path) -> None:
    trainee_json = ops.json("trainee", told["id"])
    [answer] = [a for a in trainee_json["told"] if "updated [site]" in a["changes"]]
    day = answer["day"]
    done = ops.run("preview", "--trainee", told["id"], "--day", day, "--kind", "digest")
    assert done.returncode == 0, done.stderr
    body = done.stdout.split("\n\n", 1)[1]
    assert body.strip() == told["text"].strip().replace("\r\n", "\n")
    opened = ops.run("preview", "--trainee", told["id"], "--day", day, "--open", "--out", str(tmp_path))
    assert opened.returncode == 0, opened.stderr
    html = next(tmp_path.glob("*digest.html"))
    assert html.read_text().lstrip().lower().startswith(("<!doctype html", "<html"))
    assert "Royal Papworth Hospital" in html.read_text() and html.as_uri() in opened.stdout
    missing = ops.run("preview", "--trainee", told["id"], "--day", "1999-01-01")
    assert missing.returncode == 1 and missing.stderr.startswith("error: no net-change record")


# ----------------------------------------------------------------------------------------- connector
def test_connector_status_apply_restart(ops: Ops) -> None:
    st = ops.json("connector", "status")
    assert st["connector"]["state"] == "RUNNING" and st["slots"] and st["problems"] == []
    prom = ops.run("connector", "status", "--prometheus")
    assert 'tn_replication_slot_retained_wal_bytes{slot="tss_debezium"}' in prom.stdout
    assert ops.run("connector", "status", "--check").returncode == 0
    assert ops.run("connector", "status", "--check", "--warn-bytes", "0").returncode == 1
    # the stack registered exactly this config: applying it again changes nothing
    assert ops.json("connector", "apply")["action"] == "unchanged"
    dry = ops.json("connector", "apply", "--set", "heartbeat.interval.ms=4000", "--dry-run")
    assert dry["action"] == "would update" and dry["changes"] == {
        "heartbeat.interval.ms": {"current": "5000", "desired": "4000"}}
    assert ops.json("connector", "status")["connector"]["state"] == "RUNNING"
    restart = ops.json("connector", "restart")
    assert restart["restarted"] == [] and restart["after"]["state"] == "RUNNING"
    one = ops.json("connector", "restart", "--task", "0")
    assert one["restarted"] == ["task 0"] and one["after"]["tasks"][0]["state"] == "RUNNING"
    bad = ops.run("connector", "restart", "--task", "7")
    assert bad.returncode == 1 and bad.stderr.startswith("error: connector tss-postgres has no task 7")
    gone = ops.run("connector", "status", "--connect-url", "http://127.0.0.1:1", "--source-dsn",
                   "host=127.0.0.1 port=1 user=postgres dbname=tss")
    assert gone.returncode == 3 and "127.0.0.1:1" in gone.stderr and len(gone.stderr.strip().splitlines()) == 1
