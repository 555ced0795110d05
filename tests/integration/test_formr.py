"""The Form R service as a real process: Debezium -> Kafka -> read model in PostgreSQL -> report.

Rows are written to tss.* with the ``pg`` fixture; the connector streams them; the service folds
them into schema formr and serves the report through the proxy headers (the shared secret, since
the test talks from 127.0.0.1, which is not the configured proxy address). Every test uses its own
local office and trainee ids, and its own consumer group, so tests never see each other's rows.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from services.kafka_security import librdkafka_config
from tests.integration.procs import BIN, Service, free_port

SECRET = "it-secret"
NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


class FormrService:
    def __init__(self, stack: Any, scratch: Path, **env: str) -> None:
        self.port = free_port()
        self.clock = scratch / "clock.txt"
        if not self.clock.exists():
            self.clock.write_text(NOW.isoformat())
        base = {"TN_KAFKA_BOOTSTRAP": stack.bootstrap, "TN_FORMR_DSN": stack.pg_dsn,
                "TN_FORMR_WEB_PORT": str(self.port), "TN_FORMR_PROXY_SECRET": SECRET,
                "TN_FORMR_TRUSTED_PROXIES": '["10.255.255.1"]', "TN_FORMR_CLOCK_FILE": str(self.clock),
                "TN_FORMR_GROUP_ID": f"formr-it-{uuid.uuid4().hex[:8]}", "TN_FORMR_REMINDERS": "false",
                "TN_LOG_FORMAT": "json"}
        self.env = {**base, **env}
        self.svc = Service("formr", ["formr", "run"], self.env, scratch / "formr" / "log.txt")

    def start(self) -> FormrService:
        self.svc.start()
        self.wait(lambda: self.get("/healthz", auth=False)[0] == 200, "the service to listen")
        return self

    def get(self, path: str, *, office: str | None = None, auth: bool = True,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        h = dict(headers or {})
        if auth:
            h.update({"X-Forwarded-User": "pm@example.nhs.uk", "X-Forwarded-Groups": office or "",
                      "X-Proxy-Secret": SECRET})
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=h)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310  our own http://127.0.0.1 URL
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def rows(self, office: str) -> list[dict[str, Any]]:
        status, body = self.get("/report.json", office=office)
        return json.loads(body)["rows"] if status == 200 else []

    def wait(self, cond: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if not self.svc.alive:
                raise AssertionError(f"formr service exited:\n{self.svc.log()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.svc.log()[-3000:]}")


@pytest.fixture
def formr(stack: Any, tmp_path: Path) -> Iterator[Callable[..., FormrService]]:
    made: list[FormrService] = []

    def make(**env: str) -> FormrService:
        s = FormrService(stack, tmp_path, **env).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.svc.stop()


def seed(conn: Any, tid: str, office: str, review: dt.date, programme: str = "Cardiology") -> str:
    pm = str(uuid.uuid4())
    conn.execute("INSERT INTO tss.personal_details (trainee_id, role, title, forenames, surname, email) "
                 "VALUES (%s, 'DR in Training', 'Dr', 'Ada', %s, %s)",
                 (tid, f"Okafor-{tid}", f"dr.{tid}@example.nhs.uk"))
    conn.execute("INSERT INTO tss.programme_membership (id, trainee_id, programme_name, programme_number, "
                 "managing_deanery) VALUES (%s, %s, %s, 'EOE8950', %s)", (pm, tid, programme, office))
    conn.execute("INSERT INTO tss.arcp (id, trainee_id, programme_membership_id, review_date) VALUES (%s, %s, %s, %s)",
                 (f"arcp-{tid}", tid, pm, review))
    return pm


def parts(rows: list[dict[str, Any]], tid: str) -> tuple[str, str, bool] | None:
    for r in rows:
        if r["trainee_id"] == tid:
            return r["part_a"]["status"], r["part_b"]["status"], r["at_risk"]
    return None


def test_submit_a_then_b_returned_and_resubmitted(formr: Callable[..., FormrService], pg: Any, stack: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    office, other = f"Local office {tag}", f"Other office {tag}"
    tid, stranger = f"fr-{tag}", f"fx-{tag}"
    svc = formr()
    conn = pg()
    review = NOW.date() + dt.timedelta(days=20)
    pm = seed(conn, tid, office, review)
    seed(conn, stranger, other, review)
    svc.wait(lambda: parts(svc.rows(office), tid) == ("missing", "missing", True), "the ARCP in the report")

    a, b = uuid.uuid4(), uuid.uuid4()
    conn.execute("INSERT INTO tss.form_r (id, trainee_id, part, programme_membership_id, is_arcp, lifecycle_state) "
                 "VALUES (%s, %s, 'A', %s, true, 'DRAFT'), (%s, %s, 'B', %s, true, 'DRAFT')", (a, tid, pm, b, tid, pm))
    svc.wait(lambda: parts(svc.rows(office), tid) == ("draft", "draft", True), "both drafts")
    t0 = time.monotonic()
    conn.execute("UPDATE tss.form_r SET lifecycle_state = 'SUBMITTED', submitted_at = %s WHERE id = %s",
                 (NOW - dt.timedelta(days=1), a))
    svc.wait(lambda: parts(svc.rows(office), tid) == ("submitted", "draft", True), "Part A submitted", timeout=15)
    assert time.monotonic() - t0 < 15
    conn.execute("UPDATE tss.form_r SET lifecycle_state = 'SUBMITTED', submitted_at = %s WHERE id = %s",
                 (NOW - dt.timedelta(hours=5), b))
    conn.execute("UPDATE tss.form_r SET lifecycle_state = 'UNSUBMITTED', revision = revision + 1 WHERE id = %s", (b,))
    svc.wait(lambda: parts(svc.rows(office), tid) == ("submitted", "returned", True), "Part B returned", timeout=15)
    conn.execute("UPDATE tss.form_r SET lifecycle_state = 'SUBMITTED', submitted_at = %s WHERE id = %s",
                 (NOW - dt.timedelta(hours=1), b))
    svc.wait(lambda: parts(svc.rows(office), tid) == ("submitted", "submitted", False), "Part B resubmitted",
             timeout=15)

    # only their own office: the stranger's row is in the read model but never shown to this reader
    assert parts(svc.rows(other), stranger) is not None
    for path in ("/", "/report.csv", "/report.json"):
        status, body = svc.get(path, office=office)
        assert status == 200 and stranger.encode() not in body and tid.encode() in body
        status, body = svc.get(path + ("&" if "?" in path else "?") + "local_office=" + other.replace(" ", "+"),
                               office=office)
        assert status == 403 and stranger.encode() not in body
        forged = {"X-Forwarded-User": "x", "X-Forwarded-Groups": other}  # no secret, not from the proxy
        status, body = svc.get(path, auth=False, headers=forged)
        assert status == 401 and stranger.encode() not in body

    # the command line reads the same read model
    out = subprocess.run([str(BIN), "report", "formr", "--local-office", office, "--format", "csv",
                          "--today", NOW.date().isoformat()], env={**svc.env}, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert tid in out and stranger not in out and "Submitted" in out


def test_poison_goes_to_the_dead_letter_and_restart_replays_nothing_new(
        formr: Callable[..., FormrService], pg: Any, stack: Any, consume_topic: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    office, tid = f"Local office {tag}", f"fp-{tag}"
    group = f"formr-it-{tag}"
    svc = formr(TN_FORMR_GROUP_ID=group)
    bad = json.dumps({"op": "u", "source": {"table": "arcp", "ts_ms": 1796161408500}, "after": {"id": tag,
                      "trainee_id": tid, "review_date": "not a date"}}).encode()
    p = Producer(librdkafka_config(stack.kafka_settings()))
    p.produce("tis.tss.arcp", key=json.dumps({"trainee_id": tid}).encode(), value=bad)
    p.flush(10)
    dead = consume_topic("trainee-notify.cdc-dlq.v1", 1, timeout=60,
                         predicate=lambda r: r.raw_value == bad)
    assert dead
    conn = pg()
    seed(conn, tid, office, NOW.date() + dt.timedelta(days=50))
    svc.wait(lambda: parts(svc.rows(office), tid) == ("missing", "missing", False), "the ARCP after the poison")
    svc.svc.kill()  # kill -9; the same group restarts from its committed offsets
    svc2 = formr(TN_FORMR_GROUP_ID=group)
    conn.execute("UPDATE tss.arcp SET review_date = %s WHERE id = %s", (NOW.date() + dt.timedelta(days=10),
                                                                       f"arcp-{tid}"))
    svc2.wait(lambda: parts(svc2.rows(office), tid) == ("missing", "missing", True), "the moved review")


def test_reminders_once_per_milestone_across_kill_9(formr: Callable[..., FormrService], pg: Any,
                                                    stack: Any) -> None:
    from psycopg.rows import dict_row

    from tests.integration.procs import smtp_server, text_of

    ctl, inbox = smtp_server()
    try:
        tag = uuid.uuid4().hex[:8]
        office = f"Local office {tag}"
        conn = pg()
        t1, t2, t3, t4 = (f"r{i}-{tag}" for i in range(1, 5))
        seed(conn, t1, office, NOW.date() + dt.timedelta(weeks=8))  # the 8-week milestone is today
        seed(conn, t2, office, NOW.date() + dt.timedelta(days=10))  # both passed (as if down): one, late
        seed(conn, t3, office, NOW.date() + dt.timedelta(weeks=8))
        conn.execute("UPDATE tss.personal_details SET role = 'Placeholder' WHERE trainee_id = %s", (t3,))
        pm4 = seed(conn, t4, office, NOW.date() + dt.timedelta(weeks=8))
        for part in "AB":
            conn.execute("INSERT INTO tss.form_r (id, trainee_id, part, programme_membership_id, lifecycle_state, "
                         "submitted_at) VALUES (%s, %s, %s, %s, 'SUBMITTED', %s)",
                         (uuid.uuid4(), t4, part, pm4, NOW - dt.timedelta(days=3)))
        env = {"TN_FORMR_REMINDERS": "true", "TN_FORMR_REMINDER_EVERY_SECONDS": "0.5",
               "TN_SMTP_PORT": str(ctl.port), "TN_FORMR_INSTANCE_ID": f"formr-{tag}"}
        svc = formr(**env)

        def to(tid: str) -> Callable[[Any], bool]:
            return lambda m: f"dr.{tid}@example.nhs.uk" in (m["To"] or "")

        (first,) = inbox.wait_for(to(t1), 1, timeout=90)
        assert "Part A and Part B have not been submitted" in text_of(first)
        (late,) = inbox.wait_for(to(t2), 1, timeout=30)
        assert "Part A and Part B" in text_of(late) and "Dear Dr Okafor-" in text_of(late)
        svc.svc.kill()  # kill -9
        svc.clock.write_text((NOW + dt.timedelta(weeks=6)).isoformat())  # now the 2-week milestone of t1
        svc2 = formr(**env)
        inbox.wait_for(to(t1), 2, timeout=90)
        svc2.svc.stop()
        assert len(inbox.matching(to(t1))) == 2  # 8 weeks and 2 weeks: once each, across the kill
        assert len(inbox.matching(to(t2))) == 1  # its catch-up reminder stays the only one
        assert inbox.matching(to(t3)) == [] and inbox.matching(to(t4)) == []
        with conn.cursor(row_factory=dict_row) as cur:
            ledger = {r["notification_id"]: r for r in cur.execute(
                "SELECT notification_id, status, reason, kind FROM notify.ledger WHERE trainee_id = ANY(%s)",
                ([t1, t2, t3, t4],)).fetchall()}
        assert ledger[f"{t2}:arcp-arcp-{t2}:formr-reminder-2w"]["reason"].startswith("sent late")
        assert ledger[f"{t2}:arcp-arcp-{t2}:formr-reminder-8w"]["status"] == "SUPPRESSED"
        # the kill may land after DATA and before the SENT mark (outcomes are group commits): then the
        # pass that finds the milestone passed records it UNCERTAIN; never left SENDING, never sent twice
        eight = ledger[f"{t1}:arcp-arcp-{t1}:formr-reminder-8w"]
        assert (eight["status"], eight["reason"]) in {
            ("SENT", None), ("UNCERTAIN", "the sending instance stopped during DATA; delivery unknown")}, eight
        assert ledger[f"{t1}:arcp-arcp-{t1}:formr-reminder-2w"]["kind"] == "formr-reminder"
        assert not any(k.startswith((t3, t4)) for k in ledger)
    finally:
        ctl.stop()


def test_started_before_its_database_it_waits_and_a_stuck_database_fails_liveness(
        stack: Any, tmp_path: Path, pg: Any) -> None:
    """The database is not there at start: the service listens, /healthz ok, /readyz says it waits for
    the database at host:port, each attempt logged (no traceback); once it appears, ready. Then a stuck
    database (another session holds the writers' lock while a change arrives): /healthz 503 stalled
    after TN_STALL_SECONDS, ok again once the lock goes, and the change is in the report."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from tests.integration.test_mailer import Forwarder

    where = conninfo_to_dict(stack.pg_dsn)
    late = Forwarder((str(where.get("host") or "127.0.0.1"), int(where.get("port") or 5432)))
    s = FormrService(stack, tmp_path, TN_FORMR_DSN=make_conninfo(stack.pg_dsn, port=str(late.port)),
                     TN_STALL_SECONDS="4")
    s.svc.start()

    def answer(path: str) -> tuple[int, Any]:
        status, body = s.get(path, auth=False)
        return status, json.loads(body) if body else None

    try:
        s.wait(lambda: s.svc.log().count('"dependency": "database"') >= 2, "two attempts logged")
        assert answer("/healthz") == (200, {"status": "ok"})
        assert answer("/readyz") == (503, {"ready": False, "why": f"waiting for the database at 127.0.0.1:{late.port}"})
        late.start()
        s.wait(lambda: answer("/readyz")[0] == 200, "ready once the database is there", timeout=90)
        tag = uuid.uuid4().hex[:8]
        office, tid = f"Stuck office {tag}", f"fs-{tag}"
        blocker = pg()
        blocker.execute("SELECT pg_advisory_lock(hashtext('formr.apply_writes'))")
        try:
            seed(pg(), tid, office, NOW.date() + dt.timedelta(days=20))
            s.wait(lambda: answer("/healthz")[0] == 503, "liveness to fail", timeout=60)
            status, body = answer("/healthz")
            assert status == 503 and body["status"] == "stalled" and "no progress" in body["why"]
        finally:
            blocker.execute("SELECT pg_advisory_unlock(hashtext('formr.apply_writes'))")
        s.wait(lambda: answer("/healthz") == (200, {"status": "ok"}), "liveness back")
        s.wait(lambda: parts(s.rows(office), tid) == ("missing", "missing", True), "the change in the report")
    finally:
        s.svc.stop()
        late.stop()
    assert "Traceback" not in s.svc.log()
