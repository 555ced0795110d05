"""The mailer as a real process on the real broker and the PostgreSQL ledger, against scripted SMTP.

Every test gets its own net-change topic (so no mailer ever sees another test's records), unique
trainee ids and its own consumer group. Net-change records are produced directly, Avro-encoded.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg.rows import dict_row

from services import serde
from services.kafka_security import librdkafka_config
from services.notifier.labels import format_instant
from services.notifier.plan import message_id
from tests.integration.procs import BIN, Inbox, Service, free_port, mailer, text_of

STATUS_TOPIC = "trainee-notify.delivery-status.v1"
DLQ_TOPIC = "trainee-notify.mail-dlq.v1"
DAY = "2026-11-24"
DOMAIN = "notify.example.nhs.uk"
FAST = {"TN_SMTP_RETRY_BASE_SECONDS": "0.1", "TN_SMTP_RETRY_CAP_SECONDS": "0.5",
        "TN_SMTP_RETRY_HORIZON_SECONDS": "60", "TN_SMTP_RATE_PER_SECOND": "2000",
        "TN_SESSION_TIMEOUT_MS": "6000", "TN_LOG_FORMAT": "json"}


# ---------------------------------------------------------------------------------------------- records
def record(tid: str, *, email: str | None = None, surname: str = "Okafor", forenames: str = "Ada",
           previous_email: str | None = None, suppressed: str | None = None, recipient: bool = True,
           address_line: str = "Flat 3, 40 Hills Road") -> dict[str, Any]:
    changes: list[dict[str, Any]] = [
        {"entity": "placement", "id": f"pl-{tid}", "kind": "updated", "suppressed": None,
         "fields": {"site": {"old": "Addenbrooke's Hospital", "new": "Royal Papworth Hospital"}}},
        {"entity": "personal_details", "id": tid, "kind": "updated", "suppressed": None,
         "fields": {"address1": {"old": "12 Cherry Hinton Road", "new": address_line}}},
    ]
    if previous_email:
        changes[1]["fields"]["email"] = {"old": previous_email, "new": email}
    who = {"email": email if email is not None else f"dr.{tid}@example.nhs.uk", "title": "Dr",
           "forenames": forenames, "surname": surname}
    return {"id": f"{tid}:{DAY}", "trainee_id": tid, "day": DAY, "late": False, "changes": changes,
            "recipient": who if recipient else None, "previous_email": previous_email, "suppressed": suppressed}


def address_of(tid: str) -> str:
    return f"dr.{tid}@example.nhs.uk"


def digest_id(tid: str) -> str:
    return f"{tid}:{DAY}:digest"


def mid(tid: str, kind: str = "digest", generation: int = 0) -> str:
    return message_id(f"{tid}:{DAY}:{kind}", generation, DOMAIN)


def new_topic(stack: Any, partitions: int = 4) -> str:
    name = f"it-netchange-{uuid.uuid4().hex[:10]}"
    admin = AdminClient(librdkafka_config(stack.kafka_settings()))
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)
    return name


def produce(stack: Any, topic: str, records: list[dict[str, Any]]) -> None:
    producer = Producer({**librdkafka_config(stack.kafka_settings()), "linger.ms": 5})
    for r in records:
        producer.produce(topic, serde.encode(serde.NETCHANGE, r), key=r["id"].encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def committed(stack: Any, group: str, topic: str, partitions: int) -> int:
    """Sum of the committed offsets of ``group`` on ``topic`` (0 for a partition without one)."""
    c = Consumer({**librdkafka_config(stack.kafka_settings()), "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        c.close()
    return sum(max(tp.offset, 0) for tp in tps)


# ---------------------------------------------------------------------------------------------- SMTP
Script = Callable[[Any, Any], Any]  # async (server, envelope) -> reply string or None (accept)


@dataclass
class Smtp:
    """An in-process aiosmtpd relay whose DATA replies are scripted; counts every DATA it saw."""

    script: Script | None = None
    auth: tuple[str, str] | None = None
    rcpt: Callable[[str], Any] | None = None  # async (address) -> reply string or None (accept), at RCPT
    tls: tuple[Path, Path] | None = None  # (certificate, key): STARTTLS required, AUTH only after it
    implicit: bool = False  # with tls: TLS from the first byte (port 465 style) instead of STARTTLS
    port: int = field(default_factory=free_port)
    inbox: Inbox = field(default_factory=Inbox)
    data_seen: Counter[str] = field(default_factory=Counter)  # recipient -> DATA commands completed
    controller: Controller | None = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.rcpt is not None:
            reply = await self.rcpt(address)
            if reply is not None:
                return str(reply)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            self.data_seen[rcpt] += 1
        if self.script is not None:
            reply = await self.script(server, envelope)
            if reply is not None:
                return str(reply)
        self.inbox.add(envelope.content)
        return "250 2.0.0 OK: queued"

    def start(self) -> Smtp:
        kwargs: dict[str, Any] = {}
        if self.auth is not None:
            user, password = self.auth

            def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
                ok = (isinstance(data, LoginPassword)
                      and (data.login.decode(), data.password.decode()) == (user, password))
                return AuthResult(success=ok, handled=False)

            kwargs = {"auth_required": True, "auth_require_tls": self.tls is not None, "authenticator": authenticator}
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            kwargs |= {"ssl_context": context} if self.implicit else {"tls_context": context, "require_starttls": True}
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def message_ids(self) -> Counter[str]:
        with self.inbox.lock:
            return Counter(str(m["Message-ID"]) for m in self.inbox.messages)


@pytest.fixture
def smtp() -> Iterator[Callable[..., Smtp]]:
    servers: list[Smtp] = []

    def make(script: Script | None = None, *, auth: tuple[str, str] | None = None, start: bool = True,
             rcpt: Callable[[str], Any] | None = None, tls: tuple[Path, Path] | None = None,
             implicit: bool = False) -> Smtp:
        server = Smtp(script, auth, rcpt, tls, implicit)
        servers.append(server)
        return server.start() if start else server

    yield make
    for s in servers:
        s.stop()


def subject(m: Message) -> str:
    return " ".join(str(m["Subject"]).split())  # unfolded


def to(address: str) -> Callable[[Message], bool]:
    return lambda m: address in (m["To"] or "")


# ---------------------------------------------------------------------------------------------- ledger
@pytest.fixture
def ledger(stack: Any) -> Iterator[Callable[[str], dict[str, Any] | None]]:
    conn = psycopg.connect(stack.pg_dsn, autocommit=True, row_factory=dict_row)

    def row(notification_id: str) -> dict[str, Any] | None:
        try:
            return conn.execute("SELECT * FROM notify.ledger WHERE notification_id = %s", (notification_id,)).fetchone()
        except psycopg.errors.UndefinedTable:
            return None

    yield row
    conn.close()


def statuses(stack: Any, ids: list[str]) -> dict[str, str]:
    with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT notification_id, status FROM notify.ledger WHERE notification_id = ANY(%s)",
                            (ids,)).fetchall()
    return {r[0]: r[1] for r in rows}


FINAL = {"SENT", "FAILED", "UNCERTAIN", "SUPPRESSED", "NO_ADDRESS"}


def wait_final(stack: Any, ids: list[str], timeout: float = 60, svc: Service | None = None) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    while time.monotonic() < deadline:
        found = statuses(stack, ids)
        if len(found) == len(ids) and set(found.values()) <= FINAL:
            return found
        time.sleep(0.3)
    tail = svc.log()[-3000:] if svc else ""
    raise AssertionError(f"{sum(v in FINAL for v in found.values())} of {len(ids)} final within {timeout} s\n{tail}")


def status_events(consume_topic: Any, notification_id: str, n: int, timeout: float = 20) -> list[dict[str, Any]]:
    key = notification_id.encode()
    got = consume_topic(STATUS_TOPIC, n, timeout=timeout, predicate=lambda r: r.key == key)
    return [serde.decode(serde.DELIVERY_STATUS, r.raw_value) for r in got]


def run_mailer(stack: Any, tmp: Path, smtp_port: int, topic: str, *, name: str = "mailer",
               group: str | None = None, **env: str) -> Service:
    group = group or f"it-mailer-{uuid.uuid4().hex[:8]}"
    return mailer(stack, tmp, smtp_port, name=name, TN_NETCHANGE_TOPIC=topic, TN_GROUP_ID=group,
                  **{**FAST, **env}).start()


def finish(svc: Service, timeout: float = 30) -> int | None:
    code = svc.stop(timeout)
    assert "Traceback" not in svc.log(), f"{svc.name} crashed:\n{svc.log()[-3000:]}"
    return code


# ============================================================================================== tests
def test_4xx_then_success_sends_one_email_after_retrying(stack: Any, tmp_path: Path, smtp: Any, ledger: Any,
                                                         consume_topic: Any) -> None:
    tid = f"t4xx-{uuid.uuid4().hex[:8]}"
    tries: Counter[str] = Counter()

    async def script(server: Any, envelope: Any) -> str | None:
        tries[envelope.rcpt_tos[0]] += 1
        return "451 4.3.0 try later" if tries[envelope.rcpt_tos[0]] <= 2 else None

    server = smtp(script)
    topic = new_topic(stack)
    produce(stack, topic, [record(tid), record(tid)])  # a duplicate in the same batch: still one email
    svc = run_mailer(stack, tmp_path, server.port, topic)
    server.inbox.wait_for(to(address_of(tid)), timeout=60)
    wait_final(stack, [digest_id(tid)], svc=svc)
    time.sleep(1)
    assert finish(svc) == 0
    assert server.message_ids() == {mid(tid): 1}
    row = ledger(digest_id(tid))
    assert row["status"] == "SENT" and row["attempts"] == 3 and row["message_id"] == mid(tid)
    events = status_events(consume_topic, digest_id(tid), 3)
    assert [e["status"] for e in events] == ["RETRYING", "RETRYING", "SENT"]
    assert [e["smtp_code"] for e in events] == [451, 451, 250]
    assert [e["attempt"] for e in events] == [1, 2, 3]


def test_a_record_with_nothing_to_send_waits_for_a_send_of_its_id_still_in_data(
        stack: Any, tmp_path: Path, smtp: Any, ledger: Any, consume_topic: Any) -> None:
    """The same notification id twice in one batch, the first to send (a slow relay holds it in DATA),
    the second re-derived with nothing to send: the second waits for the first and records the change
    of content (SUPERSEDED, over the SENT), instead of taking this instance's own live send for one
    that died in DATA (UNCERTAIN)."""
    tid = f"tdup-{uuid.uuid4().hex[:8]}"
    in_data = threading.Event()

    async def script(server: Any, envelope: Any) -> None:
        in_data.set()
        await asyncio.sleep(2)  # the second record is ready meanwhile

    server = smtp(script)
    topic = new_topic(stack)
    produce(stack, topic, [record(tid), record(tid, suppressed="no notifiable change")])
    svc = run_mailer(stack, tmp_path, server.port, topic)
    assert in_data.wait(60)
    server.inbox.wait_for(to(address_of(tid)), timeout=60)
    events = status_events(consume_topic, digest_id(tid), 2)
    assert finish(svc) == 0
    assert [e["status"] for e in events] == ["SENT", "SUPERSEDED"], events
    assert server.message_ids() == {mid(tid): 1}
    row = ledger(digest_id(tid))
    assert (row["status"], row["superseded_status"]) == ("SUPERSEDED", "SENT"), row


def test_5xx_fails_at_once_and_goes_to_the_dead_letter_topic(stack: Any, tmp_path: Path, smtp: Any, ledger: Any,
                                                             consume_topic: Any) -> None:
    tid = f"t5xx-{uuid.uuid4().hex[:8]}"

    async def script(server: Any, envelope: Any) -> str:
        return "550 5.1.1 mailbox unavailable"

    server = smtp(script)
    topic = new_topic(stack)
    produce(stack, topic, [record(tid)])
    svc = run_mailer(stack, tmp_path, server.port, topic)
    wait_final(stack, [digest_id(tid)], svc=svc)
    assert finish(svc) == 0
    row = ledger(digest_id(tid))
    assert row["status"] == "FAILED" and row["attempts"] == 1 and row["smtp_code"] == 550
    assert server.data_seen[address_of(tid)] == 1 and not server.inbox.messages
    [event] = status_events(consume_topic, digest_id(tid), 1)
    assert event["status"] == "FAILED" and event["smtp_code"] == 550
    [dead] = consume_topic(DLQ_TOPIC, 1, predicate=lambda r: r.key == digest_id(tid).encode())
    assert serde.decode(serde.NETCHANGE, dead.raw_value)["trainee_id"] == tid
    headers = _headers(stack, DLQ_TOPIC, lambda m: m.key() == digest_id(tid).encode())
    assert b"mailbox unavailable" in headers["reason"]
    assert headers["notification_id"] == digest_id(tid).encode()


def _headers(stack: Any, topic: str, match: Callable[[Any], bool]) -> dict[str, bytes]:
    """The headers of the first message on ``topic`` that ``match``es (read from the beginning)."""
    c = Consumer({**librdkafka_config(stack.kafka_settings()), "group.id": f"it-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error() and match(msg):
                pairs: Any = msg.headers() or []  # a list of (name, bytes) from a consumer
                return dict(pairs)
    finally:
        c.close()
    raise AssertionError(f"no such message on {topic}")


def test_connection_dropped_mid_data_is_uncertain_and_not_resent(stack: Any, tmp_path: Path, smtp: Any,
                                                                ledger: Any, consume_topic: Any) -> None:
    tid = f"tdrop-{uuid.uuid4().hex[:8]}"

    async def script(server: Any, envelope: Any) -> str:
        server.transport.abort()  # the content arrived; the reply never goes
        await asyncio.sleep(3600)
        return "250 never"

    server = smtp(script)
    topic = new_topic(stack)
    produce(stack, topic, [record(tid)])
    svc = run_mailer(stack, tmp_path, server.port, topic)
    assert wait_final(stack, [digest_id(tid)], svc=svc) == {digest_id(tid): "UNCERTAIN"}
    assert finish(svc) == 0
    assert server.data_seen[address_of(tid)] == 1
    [event] = status_events(consume_topic, digest_id(tid), 1)
    assert event["status"] == "UNCERTAIN" and event["attempt"] == 1
    # a restart that reads the topic again (a new group) does not resend it
    again = run_mailer(stack, tmp_path, server.port, topic, name="mailer-again")
    _wait_committed(stack, again, topic, 1)
    assert finish(again) == 0
    assert server.data_seen[address_of(tid)] == 1
    assert ledger(digest_id(tid))["status"] == "UNCERTAIN"
    # an operator asks for it again: it goes, marked as a copy that may repeat the uncertain attempt
    with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE notify.ledger SET resend_requested = true WHERE notification_id = %s", (digest_id(tid),))
    relay = smtp()
    resend = run_mailer(stack, tmp_path, relay.port, topic, name="mailer-resend")
    [copy] = relay.inbox.wait_for(to(address_of(tid)), timeout=60)
    assert subject(copy).startswith("Copy: ")
    plain = next(part for part in copy.walk() if part.get_content_type() == "text/plain")
    body = plain.get_payload(decode=True).decode("utf-8")  # type: ignore[union-attr]
    assert "This may repeat an email we tried to send on" in " ".join(body.split())
    assert wait_final(stack, [digest_id(tid)], svc=resend) == {digest_id(tid): "SENT"}
    assert finish(resend) == 0


def _wait_committed(stack: Any, svc: Service, topic: str, n: int, partitions: int = 4, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if committed(stack, svc.env["TN_GROUP_ID"], topic, partitions) >= n:
            return
        time.sleep(0.3)
    raise AssertionError(f"{svc.name} did not commit {n} offsets:\n{svc.log()[-3000:]}")


def _metric(svc: Service, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{svc.env['TN_METRICS_PORT']}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def wait_alert(svc: Service, timeout: float = 40) -> None:
    """Until the mailer's configuration alert (mailer_relay_refused_auth) is 1."""
    alert = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alert != 1.0:
        alert = _metric(svc, "mailer_relay_refused_auth")
        time.sleep(0.2)
    assert alert == 1.0, svc.log()[-3000:]


@pytest.fixture(scope="module")
def relay_certs(tmp_path_factory: Any) -> dict[str, Path]:
    """A throwaway CA and a relay certificate for 127.0.0.1 signed by it (openssl, Debian's)."""
    d = tmp_path_factory.mktemp("relay-tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=trainee-notify test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "relay.key", "-out", "relay.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "relay.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "relay.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": d / "ca.pem", "cert": d / "relay.pem", "key": d / "relay.key"}


@pytest.mark.parametrize("credentials", [("mailer", "wrong-password"), None], ids=["535-bad-password", "530-no-auth"])
def test_relay_refusing_auth_stops_the_mailer_with_an_alert(stack: Any, tmp_path: Path, smtp: Any, ledger: Any,
                                                            credentials: tuple[str, str] | None,
                                                            relay_certs: dict[str, Path]) -> None:
    """A relay that requires STARTTLS and then AUTH (as a production relay does): a wrong password or no
    login stops the mailer with the alert; the right one, over STARTTLS, sends each record once."""
    tids = [f"tauth-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    server = smtp(auth=("mailer", "right-password"), tls=(relay_certs["cert"], relay_certs["key"]))
    topic = new_topic(stack)
    produce(stack, topic, [record(t) for t in tids])
    env = {"TN_FAULT_LINGER_SECONDS": "20", "TN_SMTP_SECURITY": "starttls", "TN_SMTP_CA_FILE": str(relay_certs["ca"])}
    if credentials:
        env |= {"TN_SMTP_USERNAME": credentials[0], "TN_SMTP_PASSWORD": credentials[1]}
    svc = run_mailer(stack, tmp_path, server.port, topic, **env)
    wait_alert(svc)
    code = finish(svc)  # SIGTERM ends the linger
    assert code == 3
    assert not server.inbox.messages
    assert '"event": "mailer.relay_refused_auth"' in svc.log()
    assert not any(s == "SENT" for s in statuses(stack, [digest_id(t) for t in tids]).values())
    assert committed(stack, svc.env["TN_GROUP_ID"], topic, 4) == 0  # nothing decided, nothing committed
    # with the right password the same records go, each once
    ok = run_mailer(stack, tmp_path, server.port, topic, name="mailer-fixed", group=svc.env["TN_GROUP_ID"],
                    TN_SMTP_USERNAME="mailer", TN_SMTP_PASSWORD="right-password", TN_SMTP_SECURITY="starttls",
                    TN_SMTP_CA_FILE=str(relay_certs["ca"]))
    assert set(wait_final(stack, [digest_id(t) for t in tids], svc=ok).values()) == {"SENT"}
    assert finish(ok) == 0
    assert server.message_ids() == {mid(t): 1 for t in tids}


def test_a_login_in_clear_is_refused_before_anything_starts(stack: Any, tmp_path: Path) -> None:
    env = {**os.environ, "TN_KAFKA_BOOTSTRAP": stack.bootstrap, "TN_SMTP_USERNAME": "mailer",
           "TN_SMTP_PASSWORD": "s3cret-pw", "TN_SMTP_SECURITY": "none"}
    done = subprocess.run([str(BIN), "mailer", "run"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "TN_SMTP_SECURITY is none" in done.stderr and "TN_SMTP_ALLOW_PLAINTEXT_AUTH" in done.stderr
    assert "Traceback" not in done.stderr and "s3cret-pw" not in done.stderr + done.stdout


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_a_relay_certificate_not_trusted_sends_nothing_and_says_why(
        stack: Any, tmp_path: Path, smtp: Any, relay_certs: dict[str, Path], security: str) -> None:
    """STARTTLS to a relay whose certificate this mailer does not trust (no TN_SMTP_CA_FILE): a
    configuration fault like a refused login, not a reason to retry: one clear line, the alert, exit 3."""
    tid = f"tcert-{uuid.uuid4().hex[:8]}"
    server = smtp(tls=(relay_certs["cert"], relay_certs["key"]), implicit=security == "tls")
    topic = new_topic(stack)
    produce(stack, topic, [record(tid)])
    svc = run_mailer(stack, tmp_path, server.port, topic, TN_SMTP_SECURITY=security, TN_FAULT_LINGER_SECONDS="20")
    wait_alert(svc)
    assert finish(svc) == 3
    [line] = [ln for ln in svc.log().splitlines() if '"event": "mailer.relay_refused_auth"' in ln]
    assert "relay certificate not trusted" in line and "certificate" in line
    assert svc.log().count('"status": "RETRYING"') <= 1  # not retried as if the network had failed
    assert not server.inbox.messages and server.data_seen[address_of(tid)] == 0


def test_relay_down_for_a_while_then_back_loses_nothing(stack: Any, tmp_path: Path, smtp: Any) -> None:
    tids = [f"tdown-{uuid.uuid4().hex[:8]}" for _ in range(30)]
    server = smtp(start=False)
    topic = new_topic(stack)
    produce(stack, topic, [record(t) for t in tids])
    svc = run_mailer(stack, tmp_path, server.port, topic)
    time.sleep(6)  # connection refused, retried with backoff
    assert svc.alive and "SENT" not in statuses(stack, [digest_id(t) for t in tids]).values()
    server.start()
    assert set(wait_final(stack, [digest_id(t) for t in tids], svc=svc).values()) == {"SENT"}
    assert finish(svc) == 0
    assert server.message_ids() == {mid(t): 1 for t in tids}
    assert '"status": "RETRYING"' in svc.log()


def test_offsets_are_committed_only_after_the_ledger_holds_the_outcome(stack: Any, tmp_path: Path, smtp: Any,
                                                                      ledger: Any) -> None:
    tid = f"tofs-{uuid.uuid4().hex[:8]}"
    release, entered = threading.Event(), threading.Event()

    async def script(server: Any, envelope: Any) -> None:
        entered.set()
        while not release.is_set():  # noqa: ASYNC110  release is a threading.Event, set from the test's thread
            await asyncio.sleep(0.05)

    server = smtp(script)
    topic = new_topic(stack, partitions=1)
    produce(stack, topic, [record(tid)])
    svc = run_mailer(stack, tmp_path, server.port, topic)
    group = svc.env["TN_GROUP_ID"]
    assert entered.wait(60), svc.log()[-3000:]
    for _ in range(6):  # the relay holds the reply: the ledger says SENDING, nothing is committed
        assert committed(stack, group, topic, 1) == 0
        assert ledger(digest_id(tid))["status"] == "SENDING"
        time.sleep(0.3)
    release.set()
    # sample the offset first, then the ledger: once the offset covers the record, the outcome is there
    deadline, seen_commit = time.monotonic() + 30, False
    while time.monotonic() < deadline and not seen_commit:
        seen_commit = committed(stack, group, topic, 1) == 1
        status = ledger(digest_id(tid))["status"]
        assert not seen_commit or status == "SENT"
        time.sleep(0.05)
    assert seen_commit
    assert finish(svc) == 0


def test_a_replay_from_the_beginning_sends_nothing_new(stack: Any, tmp_path: Path, smtp: Any) -> None:
    tids = [f"trep-{uuid.uuid4().hex[:8]}" for _ in range(10)]
    server = smtp()
    topic = new_topic(stack)
    produce(stack, topic, [record(t) for t in tids])
    first = run_mailer(stack, tmp_path, server.port, topic)
    wait_final(stack, [digest_id(t) for t in tids], svc=first)
    assert finish(first) == 0
    assert len(server.inbox.messages) == 10
    replay = run_mailer(stack, tmp_path, server.port, topic, name="mailer-replay")
    _wait_committed(stack, replay, topic, 10)
    assert finish(replay) == 0
    assert len(server.inbox.messages) == 10
    assert replay.log().count('"event": "mail.replay_skipped"') == 10


def test_an_explicit_resend_is_a_copy_naming_the_first_send(stack: Any, tmp_path: Path, smtp: Any,
                                                           ledger: Any) -> None:
    tid = f"tcopy-{uuid.uuid4().hex[:8]}"
    server = smtp()
    topic = new_topic(stack)
    produce(stack, topic, [record(tid)])
    first = run_mailer(stack, tmp_path, server.port, topic)
    wait_final(stack, [digest_id(tid)], svc=first)
    assert finish(first) == 0
    import datetime as dt

    first_sent = dt.datetime(2026, 11, 25, 7, 2, tzinfo=dt.UTC)
    with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE notify.ledger SET first_sent_at = %s, resend_requested = true,"
                     " resend_by = 'it', resend_reason = 'test' WHERE notification_id = %s",
                     (first_sent, digest_id(tid)))
    again = run_mailer(stack, tmp_path, server.port, topic, name="mailer-resend")
    [copy] = server.inbox.wait_for(lambda m: m["Message-ID"] == mid(tid, generation=1), timeout=60)
    wait_final(stack, [digest_id(tid)], svc=again)
    assert finish(again) == 0
    assert subject(copy).startswith("Copy: ")
    body = re.sub(r"\s+", " ", text_of(copy))
    assert f"first sent on {format_instant(first_sent)}" in body, body[:600]
    row = ledger(digest_id(tid))
    assert row["generation"] == 1 and row["first_sent_at"] == first_sent and row["status"] == "SENT"


def test_sigterm_mid_batch_drains_records_what_was_sent_and_exits_0(stack: Any, tmp_path: Path, smtp: Any) -> None:
    tids = [f"tterm-{uuid.uuid4().hex[:8]}" for _ in range(300)]

    async def script(server: Any, envelope: Any) -> None:
        await asyncio.sleep(0.02)  # a slow relay, so the batch is still going when SIGTERM comes

    server = smtp(script)
    topic = new_topic(stack)
    produce(stack, topic, [record(t) for t in tids])
    svc = run_mailer(stack, tmp_path, server.port, topic)
    server.inbox.wait_for(lambda m: True, n=40, timeout=60)
    t0 = time.monotonic()
    code = finish(svc)
    assert code == 0 and time.monotonic() - t0 < 10
    sent = server.message_ids()
    assert 40 <= len(sent) < 300 and set(sent.values()) == {1}
    with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
        rows: dict[str, str] = dict(conn.execute(
            "SELECT message_id, status FROM notify.ledger WHERE notification_id = ANY(%s)"
            " AND message_id IS NOT NULL", ([digest_id(t) for t in tids],)).fetchall())
    assert {m: rows.get(m) for m in sent} == {m: "SENT" for m in sent}
    assert '"event": "mailer.stopped"' in svc.log()
    # and the rest go, once each, when a mailer comes back in the same group
    back = run_mailer(stack, tmp_path, server.port, topic, name="mailer-back", group=svc.env["TN_GROUP_ID"])
    assert set(wait_final(stack, [digest_id(t) for t in tids], svc=back, timeout=120).values()) == {"SENT"}
    assert finish(back) == 0
    assert server.message_ids() == {mid(t): 1 for t in tids}


@pytest.mark.slow
def test_two_instances_in_one_group_with_a_rebalance_mid_batch_send_once(stack: Any, tmp_path: Path,
                                                                         smtp: Any) -> None:
    tids = [f"tpair-{uuid.uuid4().hex[:8]}" for _ in range(600)]
    relay_open = threading.Event()
    relay_open.set()

    async def script(server: Any, envelope: Any) -> None:
        # the relay stalls while the second instance joins, so the first is mid-batch when the partitions
        # move, however fast it is
        while not relay_open.is_set():  # noqa: ASYNC110  relay_open is a threading.Event, set from the test's thread
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.01)

    server = smtp(script)
    topic = new_topic(stack)
    produce(stack, topic, [record(t) for t in tids])
    group = f"it-pair-{uuid.uuid4().hex[:8]}"
    a = run_mailer(stack, tmp_path, server.port, topic, name="mailer-a", group=group, TN_BATCH_SIZE="50")
    server.inbox.wait_for(lambda m: True, n=150, timeout=120)
    relay_open.clear()
    b = run_mailer(stack, tmp_path, server.port, topic, name="mailer-b", group=group, TN_BATCH_SIZE="50")
    deadline = time.monotonic() + 60
    while not re.search(r'"partitions": \[\d', b.log()) and time.monotonic() < deadline:
        time.sleep(0.2)
    relay_open.set()
    assert re.search(r'"partitions": \[\d', b.log()), b.log()[-2000:]
    assert set(wait_final(stack, [digest_id(t) for t in tids], svc=a, timeout=180).values()) == {"SENT"}
    time.sleep(2)
    assert finish(a) == 0 and finish(b) == 0
    assert server.message_ids() == {mid(t): 1 for t in tids}
    assert '"status": "SENT"' in b.log() and '"status": "SENT"' in a.log()  # partitions moved mid-batch
    assert len(server.inbox.messages) == 600


@pytest.mark.slow
def test_kill_9_at_random_points_during_1000_records_sends_each_once(stack: Any, tmp_path: Path, smtp: Any) -> None:
    tids = [f"tkill-{uuid.uuid4().hex[:8]}" for _ in range(1000)]
    ids = [digest_id(t) for t in tids]

    async def script(server: Any, envelope: Any) -> None:
        await asyncio.sleep(0.005)  # a relay that takes a moment, so kills also land during DATA

    server = smtp(script)
    topic = new_topic(stack)
    produce(stack, topic, [record(t) for t in tids])
    group, rng = f"it-kill-{uuid.uuid4().hex[:8]}", random.Random(4242)
    # kill when random shares of the records are done (not after random times: a fast mailer would
    # finish before the first kill), then a random moment later
    thresholds = sorted(rng.sample(range(50, 900), 6))
    svc = run_mailer(stack, tmp_path, server.port, topic, group=group, TN_BATCH_SIZE="100")
    kills = 0
    for threshold in thresholds:
        deadline = time.monotonic() + 120
        while sum(v in FINAL for v in statuses(stack, ids).values()) < threshold:
            assert time.monotonic() < deadline, (
                f"stuck below {threshold} final after {kills} kills\n{svc.log()[-3000:]}")
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.1))
        svc.kill()
        kills += 1
        svc = run_mailer(stack, tmp_path, server.port, topic, group=group, TN_BATCH_SIZE="100")
    final = wait_final(stack, ids, svc=svc, timeout=300)
    assert finish(svc) == 0
    seen = server.message_ids()
    uncertain = {mid(t) for t in tids if final[digest_id(t)] == "UNCERTAIN"}
    assert set(final.values()) <= {"SENT", "UNCERTAIN"}
    assert {m: n for m, n in seen.items() if m not in uncertain} == {mid(t): 1 for t in tids if mid(t) not in uncertain}
    assert all(seen.get(m, 0) <= 1 for m in uncertain)
    assert kills == len(thresholds)
    assert len(uncertain) <= kills * 16, f"{len(uncertain)} uncertain after {kills} kills"
    print(f"\nkills={kills} uncertain={len(uncertain)} sent={len(seen)}")


# ---------------------------------------------------------------------------------------------- one mixed run
PII: dict[str, Any] = {"surname": "Quillfeather-Zebedee", "forenames": "Marigold",
                       "address_line": "Flat 9, 77 Pennywhistle Lane"}


@dataclass
class Mixed:
    server: Smtp
    svc: Service
    tids: dict[str, str]
    final: dict[str, str]


@pytest.fixture(scope="module")
def mixed(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mixed]:
    """One mailer run over records of every kind, with distinctive personal data in all of them."""
    tmp = tmp_path_factory.mktemp("mixed")
    tids = {k: f"tmix-{k}-{uuid.uuid4().hex[:6]}" for k in
            ("plain", "noaddr", "suppressed", "changed", "crlf_surname", "crlf_email", "retry", "reject")}
    retried: Counter[str] = Counter()

    async def script(server: Any, envelope: Any) -> str | None:
        rcpt = envelope.rcpt_tos[0]
        if tids["reject"] in rcpt:
            return f"550 5.1.1 <{rcpt}> Marigold Quillfeather-Zebedee unknown"
        if tids["retry"] in rcpt:
            retried[rcpt] += 1
            return "451 4.3.0 Marigold Quillfeather-Zebedee: try later" if retried[rcpt] == 1 else None
        return None

    server = Smtp(script).start()
    records = [
        record(tids["plain"], **PII),
        record(tids["noaddr"], recipient=False),
        record(tids["suppressed"], suppressed="placeholder person", **PII),
        record(tids["changed"], email=f"new.{tids['changed']}@example.nhs.uk",
               previous_email=f"old.{tids['changed']}@example.ac.uk", **PII),
        record(tids["crlf_surname"], surname="Okafor\r\nBcc: victim@example.org", forenames="Marigold"),
        record(tids["crlf_email"], email=f"dr.{tids['crlf_email']}@example.nhs.uk\r\nBcc: victim@example.org",
               **PII),
        record(tids["retry"], **PII),
        record(tids["reject"], **PII),
    ]
    topic = new_topic(stack)
    produce(stack, topic, records)
    garbage = Producer(librdkafka_config(stack.kafka_settings()))
    garbage.produce(topic, b"Marigold Quillfeather-Zebedee, Flat 9, 77 Pennywhistle Lane", key=tids["plain"].encode())
    assert garbage.flush(10) == 0
    svc = run_mailer(stack, tmp, server.port, topic, name="mailer-mixed")
    ids = [digest_id(t) for t in tids.values()] + [f"{tids['changed']}:{DAY}:previous-address"]
    final = wait_final(stack, ids, svc=svc)
    time.sleep(0.5)
    assert finish(svc) == 0
    yield Mixed(server, svc, tids, final)
    server.stop()


def test_a_record_with_no_recipient_is_no_address(mixed: Mixed) -> None:
    assert mixed.final[digest_id(mixed.tids["noaddr"])] == "NO_ADDRESS"
    assert not mixed.server.data_seen[address_of(mixed.tids["noaddr"])]


def test_a_suppressed_record_is_suppressed_and_sends_nothing(mixed: Mixed) -> None:
    assert mixed.final[digest_id(mixed.tids["suppressed"])] == "SUPPRESSED"
    assert not mixed.server.inbox.matching(to(address_of(mixed.tids["suppressed"])))


def test_an_email_change_sends_the_digest_to_the_new_address_and_a_notice_to_the_old(mixed: Mixed) -> None:
    tid = mixed.tids["changed"]
    [digest] = mixed.server.inbox.matching(to(f"new.{tid}@example.nhs.uk"))
    [notice] = mixed.server.inbox.matching(to(f"old.{tid}@example.ac.uk"))
    assert digest["Message-ID"] == mid(tid) and notice["Message-ID"] == mid(tid, "previous-address")
    assert subject(notice).startswith("The email address on your training record was changed")
    assert f"new.{tid}@example.nhs.uk" not in text_of(notice)  # the new address is shown masked only
    assert mixed.final[f"{tid}:{DAY}:previous-address"] == "SENT"


def test_header_injection_is_refused_with_a_clear_reason_and_nothing_sent(stack: Any, mixed: Mixed,
                                                                           ledger: Any) -> None:
    for key in ("crlf_surname", "crlf_email"):
        tid = mixed.tids[key]
        row = ledger(digest_id(tid))
        assert row["status"] == "FAILED" and row["reason"] == "control characters in a header value"
        assert row["attempts"] == 0 and row["message_id"] is None
        assert not mixed.server.data_seen[address_of(tid)]
    assert not any("victim" in str(m) for m in mixed.server.inbox.messages)


def test_the_other_records_of_the_mixed_run_have_their_outcomes(mixed: Mixed) -> None:
    final = mixed.final
    assert final[digest_id(mixed.tids["plain"])] == "SENT"
    assert final[digest_id(mixed.tids["retry"])] == "SENT"
    assert final[digest_id(mixed.tids["reject"])] == "FAILED"
    assert len(mixed.server.inbox.messages) == 4  # plain, retry, digest + notice of the email change


def test_an_unreadable_record_goes_to_the_dead_letter_topic_with_its_reason(stack: Any, mixed: Mixed) -> None:
    found = _headers(stack, DLQ_TOPIC, lambda m: m.key() is None and (m.value() or b"").startswith(b"Marigold"))
    assert found["reason"] == b"undecodable net-change record: not an Avro single-object value"
    assert '"event": "mail.undecodable_record"' in mixed.svc.log()


def test_the_logs_of_a_full_run_hold_no_address_name_or_address_line(mixed: Mixed) -> None:
    text = mixed.svc.log()
    assert '"event": "mail.status"' in text and '"status": "FAILED"' in text and '"status": "RETRYING"' in text
    assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.-]+", text), "an email address in the logs"
    for needle in ("Marigold", "Quillfeather", "Zebedee", "Pennywhistle", "Flat 9", "Hills Road", "Cherry Hinton",
                   "Okafor", "victim", "example.ac.uk", "example.nhs.uk", "Royal Papworth"):
        assert needle not in text, f"{needle!r} in the mailer's log"


# ---------------------------------------------------------------------------------------------- the ledger itself
async def test_ledger_claims_are_atomic_leased_and_fenced(stack: Any) -> None:
    """Two owners on the real database: one sends, the other waits; a lapsed lease is taken over and
    the old holder can no longer start DATA; a dead holder's SENDING becomes UNCERTAIN."""
    from services.notifier.ledger import Decision, Ledger
    from services.notifier.plan import Kind, Notification, Status

    a, b = Ledger(stack.pg_dsn, "owner-a", 60), Ledger(stack.pg_dsn, "owner-b", 60)
    await a.open()
    await b.open()
    try:
        tid = f"tled-{uuid.uuid4().hex[:8]}"
        n = Notification(digest_id(tid), Kind.DIGEST, f"{tid}:{DAY}", tid, DAY)
        claims = await asyncio.gather(a.claim(n), b.claim(n))
        assert sorted(c.decision for c in claims) == [Decision.BUSY, Decision.SEND]
        holder, other = (a, b) if claims[0].decision is Decision.SEND else (b, a)
        assert (await other.claim(n)).decision is Decision.BUSY
        with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:  # the holder stalls past its lease
            conn.execute("UPDATE notify.ledger SET lease_until = now() - interval '1 second'"
                         " WHERE notification_id = %s", (n.notification_id,))
        assert (await other.claim(n)).decision is Decision.SEND
        assert not await holder.mark_sending(n.notification_id, "<x@y>")  # fenced: no DATA from the old holder
        assert await other.mark_sending(n.notification_id, "<x@y>")
        with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:  # ... and then dies mid-DATA
            conn.execute("UPDATE notify.ledger SET lease_until = now() - interval '1 second'"
                         " WHERE notification_id = %s", (n.notification_id,))
        assert (await holder.claim(n)).decision is Decision.UNCERTAIN
        assert (await other.claim(n)).decision is Decision.DONE

        sent = Notification(digest_id(tid + "s"), Kind.DIGEST, f"{tid}s:{DAY}", tid + "s", DAY)
        assert (await a.claim(sent)).decision is Decision.SEND
        assert await a.mark_sending(sent.notification_id, "<s@y>")
        await a.mark(sent.notification_id, Status.SENT, smtp_code=250)
        done = await b.claim(sent)
        assert done.decision is Decision.DONE and done.first_sent_at is not None
        with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
            conn.execute("UPDATE notify.ledger SET resend_requested = true WHERE notification_id = %s",
                         (sent.notification_id,))
        copy = await b.claim(sent)
        assert copy.decision is Decision.SEND and copy.generation == 1 and copy.first_sent_at == done.first_sent_at
        await b.mark(sent.notification_id, Status.SENT, smtp_code=250)
        row = await b.status(sent.notification_id)
        assert row is not None and row["first_sent_at"] == done.first_sent_at and row["sent_at"] > done.first_sent_at
    finally:
        await a.close()
        await b.close()


async def test_an_outcome_recorded_without_sending_settles_a_dead_senders_row_as_uncertain(stack: Any) -> None:
    """record_final (SUPPRESSED, NO_ADDRESS: no claim follows) on a row left SENDING: by a live holder,
    left alone; by a holder whose lease ran out, or by the caller's own instance before a restart,
    recorded UNCERTAIN (it may have gone), never SUPPRESSED and never left SENDING."""
    from services.notifier.ledger import Decision, Ledger
    from services.notifier.plan import Kind, Notification, Status

    a, b = Ledger(stack.pg_dsn, "owner-a", 60), Ledger(stack.pg_dsn, "owner-b", 60)
    await a.open()
    await b.open()
    try:
        tid = f"tfin-{uuid.uuid4().hex[:8]}"
        live, lapsed, own = (Notification(digest_id(f"{tid}{i}"), Kind.DIGEST, f"{tid}{i}:{DAY}", f"{tid}{i}", DAY)
                             for i in range(3))
        for n in (live, lapsed, own):
            assert (await a.claim(n)).decision is Decision.SEND and await a.mark_sending(n.notification_id, "<m@y>")
        with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
            conn.execute("UPDATE notify.ledger SET lease_until = now() - interval '1 second'"
                         " WHERE notification_id = %s", (lapsed.notification_id,))
        assert (await b.record_final(live, Status.SUPPRESSED, "later one due")).decision == "done"
        assert (await b.record_final(lapsed, Status.SUPPRESSED, "later one due")).decision == "uncertain"
        assert (await a.record_final(own, Status.NO_ADDRESS, "no address")).decision == "uncertain"
        rows = [await a.status(n.notification_id) for n in (live, lapsed, own)]
        assert [(r["status"], r["owner"]) for r in rows if r] == [
            ("SENDING", "owner-a"), ("UNCERTAIN", None), ("UNCERTAIN", None)]
        assert rows[1] is not None and "stopped during DATA" in rows[1]["reason"]
        assert (await b.record_final(lapsed, Status.SUPPRESSED, "later one due")).decision == "done"  # once
        assert (await b.claim(lapsed)).decision is Decision.DONE
        with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:  # the form the release before calls
            old = Notification(digest_id(f"{tid}o"), Kind.DIGEST, f"{tid}o:{DAY}", f"{tid}o", DAY)
            args = (old.notification_id, old.record_id, old.trainee_id, DAY, "digest", "SUPPRESSED", "r", None, None)
            sql = "SELECT * FROM notify.record_final(%s, %s, %s, %s, %s, %s, %s, %s::text, %s::bytea)"
            assert conn.execute(sql, args).fetchall() == [("recorded", "SUPPRESSED", None)]
            assert conn.execute(sql, args).fetchall() == [("done", "SUPPRESSED", None)]
    finally:
        await a.close()
        await b.close()


async def test_batched_ledger_writes_decide_each_notification_as_a_single_claim_would(stack: Any) -> None:
    """A batch claim mixes new, finished, held-elsewhere and died-in-DATA notifications in one
    transaction; concurrent SENDING marks go in one statement, fenced per row; outcomes likewise."""
    from services.notifier.ledger import Decision, Ledger
    from services.notifier.plan import Kind, Notification, Status

    a, b = Ledger(stack.pg_dsn, "owner-a", 60), Ledger(stack.pg_dsn, "owner-b", 60)
    await a.open()
    await b.open()
    try:
        tids = [f"tbat-{uuid.uuid4().hex[:8]}" for _ in range(6)]
        ns = [Notification(digest_id(t), Kind.DIGEST, f"{t}:{DAY}", t, DAY) for t in tids]
        done, busy, dead = ns[0], ns[1], ns[2]
        assert (await b.claim(done)).decision is Decision.SEND
        await b.mark(done.notification_id, Status.SENT, smtp_code=250)
        assert (await b.claim(busy)).decision is Decision.SEND
        assert (await a.claim(dead)).decision is Decision.SEND and await a.mark_sending(dead.notification_id, "<d@y>")
        claims = await a.claim_many(ns)  # a restarted owner-a: its own SENDING row is a death in DATA
        assert {nid: c.decision for nid, c in claims.items()} == {
            done.notification_id: Decision.DONE, busy.notification_id: Decision.BUSY,
            dead.notification_id: Decision.UNCERTAIN, **{n.notification_id: Decision.SEND for n in ns[3:]}}

        held = await asyncio.gather(*(a.mark_sending(n.notification_id, f"<{i}@y>") for i, n in enumerate(ns)))
        assert held == [False, False, False, True, True, True]  # only the rows owner-a holds go SENDING
        await asyncio.gather(a.mark(ns[3].notification_id, Status.SENT, smtp_code=250),
                             a.mark(ns[4].notification_id, Status.FAILED, smtp_code=550, reason="no such user"),
                             a.mark(ns[5].notification_id, Status.RETRYING, smtp_code=451, reason="later"))
        rows = [await a.status(n.notification_id) for n in ns[3:]]
        assert [(r["status"], r["smtp_code"], r["owner"], r["sent_at"] is not None) for r in rows if r] == [
            ("SENT", 250, None, True), ("FAILED", 550, None, False), ("RETRYING", 451, "owner-a", False)]
        await a.release(ns[5].notification_id)  # given up without an outcome: another owner may take it at once
        assert (await b.claim(ns[5])).decision is Decision.SEND
        finished = [done, dead, ns[3], ns[4]]
        assert [c.decision for c in (await a.claim_many(finished)).values()] == [Decision.DONE] * 4
    finally:
        await a.close()
        await b.close()


def test_a_days_digests_wait_for_the_send_time_and_the_wait_survives_a_restart(
        stack: Any, tmp_path: Path, smtp: Any, ledger: Any) -> None:
    """A calendar day's digests go from 07:00 London the next morning: yesterday's (due) go at once,
    today's wait, across a restart, with their offsets uncommitted."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    today = dt.datetime.now(ZoneInfo("Europe/London")).date().isoformat()
    past, waiting = f"tdue-{uuid.uuid4().hex[:8]}", f"twait-{uuid.uuid4().hex[:8]}"
    later = {**record(waiting), "id": f"{waiting}:{today}", "day": today}
    server = smtp()
    topic = new_topic(stack, partitions=1)
    produce(stack, topic, [later, record(past)])  # the waiting one first, on the same partition
    group = f"it-mailer-{uuid.uuid4().hex[:8]}"
    svc = run_mailer(stack, tmp_path, server.port, topic, group=group, TN_SEND_IMMEDIATELY="false",
                     TN_SEND_AT="07:00")
    server.inbox.wait_for(to(address_of(past)), timeout=60)  # due: not held up by the one that waits
    time.sleep(3)
    assert server.inbox.matching(to(address_of(waiting))) == []
    assert ledger(f"{waiting}:{today}:digest") is None
    assert finish(svc) == 0
    assert committed(stack, group, topic, 1) == 0  # the waiting record holds the offsets back
    svc = run_mailer(stack, tmp_path, server.port, topic, name="mailer-again", group=group,
                     TN_SEND_IMMEDIATELY="false", TN_SEND_AT="07:00")
    time.sleep(8)
    assert server.inbox.matching(to(address_of(waiting))) == []
    assert len(server.inbox.matching(to(address_of(past)))) == 1  # the replayed due one is not resent
    assert finish(svc) == 0


def test_a_late_4xx_from_an_instance_whose_lease_ran_out_does_not_overwrite_the_new_owners_sent(
        stack: Any, tmp_path: Path, smtp: Any, ledger: Any) -> None:
    """Mailer A claims a digest with a 2 s lease and hangs 6 s at RCPT before a 451; meanwhile its lease
    runs out and mailer B (another group: the record read again, as after a partition move) claims it
    and sends. A's late 451 must not turn B's SENT back into RETRYING: exactly one email, SENT."""
    tid = f"tlate-{uuid.uuid4().hex[:8]}"
    address = address_of(tid)
    seen = threading.Event()
    first = [True]

    async def rcpt(addr: str) -> str | None:
        if addr == address and first[0]:
            first[0] = False
            seen.set()
            await asyncio.sleep(6)
            return "451 4.3.0 try later"
        return None

    server = smtp(rcpt=rcpt)
    topic = new_topic(stack)
    produce(stack, topic, [record(tid)])
    slow = {"TN_LEDGER_LEASE_SECONDS": "2", "TN_SMTP_RETRY_BASE_SECONDS": "3", "TN_SMTP_RETRY_CAP_SECONDS": "3"}
    a = run_mailer(stack, tmp_path, server.port, topic, name="mailer-a", **slow)
    assert seen.wait(60), a.log()[-2000:]
    b = run_mailer(stack, tmp_path, server.port, topic, name="mailer-b", **slow)
    server.inbox.wait_for(to(address), timeout=60)
    deadline = time.monotonic() + 30
    while not ("mail.outcome_not_recorded" in a.log() or "mail.lease_lost" in a.log()) \
            and time.monotonic() < deadline:
        time.sleep(0.3)  # A's late 451 has come back and been refused
    assert "mail.outcome_not_recorded" in a.log() or "mail.lease_lost" in a.log(), a.log()[-3000:]
    row = ledger(digest_id(tid))
    assert row["status"] == "SENT" and row["message_id"] == mid(tid), row
    assert finish(a) == 0 and finish(b) == 0
    assert server.message_ids() == {mid(tid): 1}
    assert ledger(digest_id(tid))["status"] == "SENT"


def test_a_backoff_longer_than_the_lease_keeps_the_claim(stack: Any, tmp_path: Path, smtp: Any, ledger: Any) -> None:
    """The relay answers 451 for 5 s; mailer A retries after a backoff of 8 s with a 2 s lease,
    renewing it while it waits. Mailer B, reading the same record meanwhile (another group, as after a
    partition move), finds the claim live and never sends; A's retry sends the one email. (One backoff:
    B waits for a live holder for one backoff and two leases, then takes its own restart; two backoffs
    in a row, 451 for 10 s, raced B's start-up time against that patience.)"""
    tid = f"tback-{uuid.uuid4().hex[:8]}"
    address = address_of(tid)
    first: list[float] = []

    async def script(server_: Any, envelope: Any) -> str | None:
        if address in envelope.rcpt_tos:
            first.append(first[0] if first else time.monotonic())
            if time.monotonic() - first[0] < 5:
                return "451 4.3.0 try later"
        return None

    server = smtp(script)
    topic = new_topic(stack)
    produce(stack, topic, [record(tid)])
    slow = {"TN_LEDGER_LEASE_SECONDS": "2", "TN_SMTP_RETRY_BASE_SECONDS": "8", "TN_SMTP_RETRY_CAP_SECONDS": "8"}
    a = run_mailer(stack, tmp_path, server.port, topic, name="mailer-a", **slow)
    deadline = time.monotonic() + 60
    while not first and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first, a.log()[-2000:]
    b = run_mailer(stack, tmp_path, server.port, topic, name="mailer-b", **slow)
    server.inbox.wait_for(to(address), timeout=90)
    wait_final(stack, [digest_id(tid)], svc=a)
    time.sleep(1)
    assert finish(a) == 0 and finish(b) == 0
    assert server.message_ids() == {mid(tid): 1}
    row = ledger(digest_id(tid))
    assert row["status"] == "SENT" and row["attempts"] >= 2 and len(first) == row["attempts"]
    assert '"status": "SENT", "attempt"' in a.log()  # A sent it ...
    assert '"status": "RETRYING"' not in b.log() and '"status": "SENT", "attempt"' not in b.log()  # ... B never tried


class Forwarder:
    """A TCP forwarder on a port of its own, started when the test says: a dependency that comes up late."""

    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: Any = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def start(self) -> None:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", self.port), self.loop).result(10)

    def stop(self) -> None:
        if self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_a_mailer_started_before_its_ledger_waits_for_it_and_says_where(stack: Any, tmp_path: Path, smtp: Any) -> None:
    """The ledger's PostgreSQL is not there when the mailer starts: it logs each attempt with host and
    port (no traceback, no credentials), keeps /healthz up, and sends once the database appears."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    tid = f"twait-{uuid.uuid4().hex[:8]}"
    parts = conninfo_to_dict(stack.pg_dsn)
    late = Forwarder((str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432)))
    server = smtp()
    topic = new_topic(stack)
    produce(stack, topic, [record(tid)])
    svc = run_mailer(stack, tmp_path, server.port, topic,
                     TN_LEDGER_DSN=make_conninfo(stack.pg_dsn, port=str(late.port), password="pg-secret"))
    deadline = time.monotonic() + 60
    while svc.log().count('"dependency": "ledger"') < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert svc.log().count('"dependency": "ledger"') >= 2, svc.log()[-3000:]
    assert f'"at": "127.0.0.1:{late.port}"' in svc.log() and "pg-secret" not in svc.log()
    assert svc.alive and "Traceback" not in svc.log()
    assert _health(svc, "/readyz") == (503, {"ready": False, "why": f"waiting for the ledger at 127.0.0.1:{late.port}"})
    assert _health(svc, "/healthz")[0] == 200  # alive: waiting is not a stall
    late.start()
    try:
        server.inbox.wait_for(to(address_of(tid)), timeout=90)
        assert finish(svc) == 0
    finally:
        late.stop()
    assert server.message_ids() == {mid(tid): 1}


def _health(svc: Service, path: str) -> tuple[int, Any]:
    import json

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{svc.env['TN_METRICS_PORT']}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, None  # not listening yet


def test_a_ledger_that_stops_answering_makes_the_mailer_unhealthy_until_it_answers(
        stack: Any, tmp_path: Path, smtp: Any) -> None:
    """The ledger's table is locked by another session (a stuck database): the mailer's claim waits, its
    loop makes no progress, and /healthz says so (503 stalled) until the lock goes; then it sends."""
    tid = f"tstall-{uuid.uuid4().hex[:8]}"
    server = smtp()
    topic = new_topic(stack)
    svc = run_mailer(stack, tmp_path, server.port, topic, TN_STALL_SECONDS="4")
    deadline = time.monotonic() + 60
    while _health(svc, "/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _health(svc, "/readyz") == (200, {"ready": True}) and _health(svc, "/healthz")[0] == 200
    blocker = psycopg.connect(stack.pg_dsn)
    try:
        blocker.execute("LOCK TABLE notify.ledger IN ACCESS EXCLUSIVE MODE")
        produce(stack, topic, [record(tid)])
        deadline = time.monotonic() + 60
        while _health(svc, "/healthz")[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.5)
        status, body = _health(svc, "/healthz")
        assert status == 503 and body["status"] == "stalled" and "no progress" in body["why"], svc.log()[-2000:]
    finally:
        blocker.rollback()
        blocker.close()
    server.inbox.wait_for(to(address_of(tid)), timeout=60)
    deadline = time.monotonic() + 30
    while _health(svc, "/healthz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _health(svc, "/healthz") == (200, {"status": "ok"})
    assert finish(svc) == 0


def _until(svc: Service, path: str, status: int, timeout: float = 60) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout
    while (answer := _health(svc, path))[0] != status and time.monotonic() < deadline:
        time.sleep(0.3)
    return answer


def test_readiness_names_the_relay_and_the_ledger_while_they_do_not_answer(
        stack: Any, tmp_path: Path, smtp: Any) -> None:
    """/readyz checks the mailer's dependencies: the relay stops answering (its port closed), then the
    ledger (its table locked by another session): 503 naming each with host and port, while /healthz
    stays ok (nothing is waiting); each back, ready again, and a record is sent."""
    from psycopg.conninfo import conninfo_to_dict

    tid = f"tready-{uuid.uuid4().hex[:8]}"
    server = smtp()
    relay = Forwarder(("127.0.0.1", server.port))
    relay.start()
    topic = new_topic(stack)
    svc = run_mailer(stack, tmp_path, relay.port, topic, TN_RELAY_CHECK_SECONDS="1")
    assert _until(svc, "/readyz", 200) == (200, {"ready": True}), svc.log()[-2000:]
    relay.stop()
    status, body = _until(svc, "/readyz", 503)
    assert status == 503 and f"relay at 127.0.0.1:{relay.port} not answering" in body["why"], body
    assert _health(svc, "/healthz") == (200, {"status": "ok"})
    back = Forwarder(("127.0.0.1", server.port), port=relay.port)
    back.start()
    try:
        assert _until(svc, "/readyz", 200) == (200, {"ready": True})
        parts = conninfo_to_dict(stack.pg_dsn)
        where = f"{parts.get('host') or '127.0.0.1'}:{parts.get('port') or 5432}"
        blocker = psycopg.connect(stack.pg_dsn)
        try:
            blocker.execute("LOCK TABLE notify.ledger IN ACCESS EXCLUSIVE MODE")
            status, body = _until(svc, "/readyz", 503)
            assert status == 503 and f"ledger at {where} not answering" in body["why"], body
            assert "relay" not in body["why"]
        finally:
            blocker.rollback()
            blocker.close()
        assert _until(svc, "/readyz", 200) == (200, {"ready": True})
        produce(stack, topic, [record(tid)])
        server.inbox.wait_for(to(address_of(tid)), timeout=60)
        assert finish(svc) == 0
    finally:
        back.stop()
    log = svc.log()
    assert '"dependency": "relay"' in log and '"dependency": "ledger"' in log and "pg-secret" not in log


def test_readiness_names_a_broker_that_stops_answering_and_recovers_when_it_is_back(
        stack: Any, tmp_path: Path, smtp: Any) -> None:
    """A broker of its own (the devstack's code), stopped under a running mailer: /readyz 503 naming it
    with host and port, /healthz ok (nothing waits); started again on the same data: ready again."""
    from services.devstack import kafka
    from services.devstack.fetch import ensure_jars
    from services.devstack.proc import LOOPBACK, stop_group

    root = tmp_path / "own-kafka"
    paths = kafka.KafkaPaths(root / "kafka")
    port, controller = free_port(), free_port()
    jars = ensure_jars()
    kafka.format_storage(jars, paths, port, controller)
    bootstrap = f"{LOOPBACK}:{port}"
    pid = kafka.start(jars, paths)
    try:
        kafka.wait_ready(bootstrap, port, pid, str(root))
        topic = f"it-netchange-{uuid.uuid4().hex[:10]}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
        server = smtp()
        svc = run_mailer(stack, tmp_path, server.port, topic, TN_KAFKA_BOOTSTRAP=bootstrap)
        assert _until(svc, "/readyz", 200, timeout=90) == (200, {"ready": True}), svc.log()[-2000:]
        stop_group(pid, name="own-kafka", marker=str(root))
        status, body = _until(svc, "/readyz", 503)
        assert status == 503 and f"broker at {bootstrap} not answering" in body["why"], body
        assert _health(svc, "/healthz") == (200, {"status": "ok"})
        pid = kafka.start(jars, paths)
        kafka.wait_ready(bootstrap, port, pid, str(root))
        assert _until(svc, "/readyz", 200, timeout=90) == (200, {"ready": True}), svc.log()[-2000:]
        assert finish(svc) == 0
    finally:
        stop_group(pid, name="own-kafka", marker=str(root))
