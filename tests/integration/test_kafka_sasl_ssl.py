"""Kafka over TLS and SASL on a real broker: the aggregator and the mailer end to end over SASL_SSL
(SCRAM-SHA-512), mutual TLS, and the faults a user meets — a wrong password, a CA that did not sign
the broker's certificate, a host name the certificate does not name — each one clear line.

This module starts a second local Kafka (the devstack's own code, ``kafka.SecureListeners``) with a
PLAINTEXT, a SASL_SSL and an SSL (client certificate required) listener; the certificates are made
here with openssl. The session stack's PostgreSQL holds the mailer's ledger; its broker is not used.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from confluent_kafka import Consumer, KafkaError, Producer

from services import kafka_security
from services.devstack import connect, kafka
from services.devstack.fetch import ensure_jars
from services.devstack.proc import LOOPBACK, free_port, stop_group
from services.settings import KafkaSettings
from tests.integration.procs import BIN, mailer, smtp_server, text_of
from tests.integration.workload import AggregatorRun, london_ms, wait_metric
from tests.unit.envelopes import envelope, person, placement

USER, PASSWORD = "trainee-notify", "scram-Secret-7f3a"  # a throwaway SCRAM user of this test broker only
CONNECT_USER, CONNECT_PASSWORD = "tis-connect", "connect-Secret-91c2"  # the user of deploy/connect's worker file
WORKER_FILE = Path(__file__).resolve().parents[2] / "deploy" / "connect" / "worker-sasl-ssl.properties"
GRACE_MS = 900_000


# ------------------------------------------------------------------------------------------ certificates
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA; the broker's certificate for 127.0.0.1 only (IP SAN: "localhost" is another name) in a
    PKCS#12 keystore; a client certificate for mutual TLS; and a second CA that signed nothing here."""
    d = tmp_path_factory.mktemp("kafka-pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "2", "-subj", f"/CN=trainee-notify test {ca}",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, ext in (("broker", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={'127.0.0.1' if name == 'broker' else 'trainee-notify client'}")
        (d / f"{name}.cnf").write_text(ext)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.cnf")
    openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
            "-out", "broker.p12", "-passout", "pass:keystore-pw")
    return {"ca": d / "ca.pem", "other_ca": d / "other-ca.pem", "keystore": d / "broker.p12",
            "client": d / "client.pem", "client_key": d / "client.key"}


# ------------------------------------------------------------------------------------------ the broker
@dataclass
class SecureKafka:
    """Quacks like the session's StackInfo for the test helpers (AggregatorRun, procs): ``bootstrap`` is
    the SASL_SSL listener and ``kafka_settings()`` logs in there; ``pg_dsn`` is the session stack's."""

    plain: str
    sasl_ssl_port: int
    ssl_port: int
    pg_dsn: str
    pg_port: int
    pki: dict[str, Path]
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.sasl_ssl_port}"

    def kafka_settings(self, **over: Any) -> KafkaSettings:
        return KafkaSettings(**{"kafka_bootstrap": self.bootstrap, "kafka_security_protocol": "SASL_SSL",
                                "kafka_ssl_ca_file": self.pki["ca"], "kafka_sasl_username": USER,
                                "kafka_sasl_password": PASSWORD, **self.overrides, **over})

    def mtls_settings(self, **over: Any) -> KafkaSettings:
        return KafkaSettings(**{"kafka_bootstrap": f"{LOOPBACK}:{self.ssl_port}", "kafka_security_protocol": "SSL",
                                "kafka_ssl_ca_file": self.pki["ca"], "kafka_ssl_cert_file": self.pki["client"],
                                "kafka_ssl_key_file": self.pki["client_key"], **over})


@pytest.fixture(scope="module")
def secure(stack: Any, pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    root = tmp_path_factory.mktemp("kafka-sasl-ssl")
    paths = kafka.KafkaPaths(root / "kafka")
    port, controller, sasl_port, ssl_port = free_port(), free_port(), free_port(), free_port()
    listeners = kafka.SecureListeners(sasl_ssl_port=sasl_port, ssl_port=ssl_port, keystore=pki["keystore"],
                                      keystore_password="keystore-pw", truststore=pki["ca"],
                                      users=((USER, PASSWORD), (CONNECT_USER, CONNECT_PASSWORD)))
    jars = ensure_jars()
    kafka.format_storage(jars, paths, port, controller, listeners)
    pid = kafka.start(jars, paths)
    try:
        kafka.wait_ready(f"{LOOPBACK}:{port}", port, pid, str(root))
        yield SecureKafka(f"{LOOPBACK}:{port}", sasl_port, ssl_port, stack.pg_dsn, stack.pg_port, pki)
    finally:
        stop_group(pid, name="kafka-sasl-ssl", marker=str(root))
        if not os.environ.get("TN_KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)


def cli(args: list[str], settings: KafkaSettings, extra: dict[str, str] | None = None,
        timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``trainee-notify ARGS`` with these Kafka settings (and no TN_KAFKA_* of the test run's own)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TN_KAFKA_")},
           **kafka_security.environment(settings), "TN_LOG_FORMAT": "json", **(extra or {})}
    return subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


# ================================================================================================ tests
def test_the_aggregator_and_the_mailer_run_end_to_end_over_sasl_ssl(secure: SecureKafka, tmp_path: Path) -> None:
    """CDC-shaped envelopes produced over SASL_SSL → the aggregator (faust) → a net-change record over
    SASL_SSL → the mailer (aiokafka) → the email at the SMTP server. Topics applied over SASL_SSL too."""
    run = AggregatorRun(secure, tmp_path)  # applies its topics and produces with secure.kafka_settings()
    tid = f"tls-{uuid.uuid4().hex[:8]}"
    day = dt.date(2026, 11, 24)
    row = placement(f"pl-{tid}", tid)
    me = person(tid, email=f"dr.{tid}@example.nhs.uk")
    envs = [envelope("personal_details", "r", None, me, london_ms(day, -12), snapshot="true"),
            envelope("placement", "r", None, row, london_ms(day, -12), snapshot="true"),
            envelope("placement", "u", row, {**row, "site": "Royal Papworth Hospital"}, london_ms(day, 10))]
    run.set_clock(london_ms(day, 11))
    run.produce(envs)
    ctl, inbox = smtp_server()
    agg = run.service().start()
    mail = mailer(secure, tmp_path, ctl.port, TN_NETCHANGE_TOPIC=run.settings.netchange_topic,
                  TN_GROUP_ID=f"mailer-tls-{uuid.uuid4().hex[:6]}").start()
    try:
        wait_metric(agg, "netchange_events_folded_total", 1)
        run.set_clock(london_ms(day + dt.timedelta(days=1), 0) + GRACE_MS + 5_000)
        [msg] = inbox.wait_for(lambda m: f"dr.{tid}@example.nhs.uk" in (m["To"] or ""), timeout=120)
        [record] = run.netchange(1, idle=1)
    finally:
        mail.stop()
        agg.stop()
        ctl.stop()
    body = text_of(msg)
    assert "Addenbrooke's Hospital" in body and "Royal Papworth Hospital" in body
    assert record["id"] == f"{tid}:{day.isoformat()}"
    for svc in (agg, mail):
        log = svc.log()
        assert "Traceback" not in log and PASSWORD not in log, f"{svc.name}:\n{log[-3000:]}"


def test_mutual_tls_admits_a_client_certificate_signed_by_the_ca(secure: SecureKafka) -> None:
    """The SSL listener requires a client certificate: librdkafka and aiokafka both present it."""
    settings = secure.mtls_settings()
    kafka_security.check(settings)
    topic = f"it-mtls-{uuid.uuid4().hex[:8]}"
    p = Producer(kafka_security.librdkafka_config(settings))
    p.produce(topic, b"over mutual TLS")
    assert p.flush(30) == 0

    async def aio() -> None:
        producer = AIOKafkaProducer(**kafka_security.aiokafka_kwargs(settings))
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"and with aiokafka")
        finally:
            await producer.stop()

    asyncio.run(aio())


def test_the_ssl_listener_refuses_a_client_without_a_certificate(secure: SecureKafka) -> None:
    settings = secure.mtls_settings(kafka_ssl_cert_file=None, kafka_ssl_key_file=None)
    with pytest.raises(kafka_security.KafkaSecurityFault) as err:
        kafka_security.check(settings)
    assert f"127.0.0.1:{secure.ssl_port}" in str(err.value) and "TN_KAFKA_SSL_CERT_FILE" in str(err.value)


def librdkafka_errors(settings: KafkaSettings, timeout: float = 30) -> list[KafkaError]:
    """Produce one record with confluent-kafka and return the errors librdkafka reported until it was
    delivered or the first error came (none: delivered)."""
    errors: list[KafkaError] = []
    p = Producer(kafka_security.librdkafka_config(settings, error_cb=errors.append,
                                                  **{"message.timeout.ms": int(timeout * 1000)}))
    p.produce(f"it-tls-{uuid.uuid4().hex[:8]}", b"x")
    deadline = time.monotonic() + timeout
    while not errors and p.flush(0.5) and time.monotonic() < deadline:
        pass
    return errors


def test_the_host_name_is_verified_by_default_by_every_client(secure: SecureKafka) -> None:
    """The broker's certificate names 127.0.0.1 only: through "localhost" every client refuses it, unless
    TN_KAFKA_SSL_CHECK_HOSTNAME=false (the chain is still checked: the CA file still matters)."""
    wrong_name = secure.kafka_settings(kafka_bootstrap=f"localhost:{secure.sasl_ssl_port}")
    with pytest.raises(kafka_security.KafkaSecurityFault) as err:
        kafka_security.check(wrong_name)
    assert "certificate for another name" in str(err.value) and "TN_KAFKA_BOOTSTRAP" in str(err.value)
    [first] = librdkafka_errors(wrong_name)[:1]
    # librdkafka's own verification, without our preflight (reported as _SSL or _TRANSPORT, by timing)
    assert first.code() in (KafkaError._SSL, KafkaError._TRANSPORT) and "certificate verify failed" in first.str()
    relaxed = secure.kafka_settings(kafka_bootstrap=f"localhost:{secure.sasl_ssl_port}",
                                    kafka_ssl_check_hostname=False)
    kafka_security.check(relaxed)
    assert librdkafka_errors(relaxed) == []
    with pytest.raises(kafka_security.KafkaSecurityFault, match="not trusted"):
        kafka_security.check(secure.kafka_settings(kafka_bootstrap=f"localhost:{secure.sasl_ssl_port}",
                                                   kafka_ssl_check_hostname=False,
                                                   kafka_ssl_ca_file=secure.pki["other_ca"]))


def test_the_libraries_themselves_refuse_a_wrong_password(secure: SecureKafka) -> None:
    """Without the preflight, the broker still refuses: librdkafka reports an authentication error and
    aiokafka cannot bootstrap (the preflight only makes the reason one clear line)."""
    bad = secure.kafka_settings(kafka_sasl_password="not-the-password")
    [first] = librdkafka_errors(bad)[:1]
    assert first.code() == KafkaError._AUTHENTICATION, first

    async def aio() -> None:
        producer = AIOKafkaProducer(**kafka_security.aiokafka_kwargs(bad), request_timeout_ms=10000)
        try:
            with pytest.raises(KafkaConnectionError):
                await producer.start()
        finally:
            await producer.stop()

    asyncio.run(aio())


FAULTS = {
    "wrong-password": ({"kafka_sasl_password": "not-the-password"}, "refused the SASL login (SCRAM-SHA-512)"),
    "untrusted-ca": ({"kafka_ssl_ca_file": "other_ca"}, "certificate at 127.0.0.1:{port} is not trusted"),
}


@pytest.mark.parametrize("command", [["topics", "apply"], ["aggregator", "run"], ["mailer", "run"], ["formr", "run"]],
                         ids=["topics(librdkafka)", "aggregator(faust)", "mailer(aiokafka)", "formr(librdkafka)"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_wrong_password_or_an_untrusted_ca_fails_with_one_clear_line(secure: SecureKafka, tmp_path: Path,
                                                                       command: list[str], fault: str) -> None:
    """Each library's client, started by its command: exit 2 and one line on stderr that names the broker
    and the settings to look at — not a retry loop, not a timeout, not a traceback, not the password."""
    over, expected = FAULTS[fault]
    over = {k: secure.pki[v] if k == "kafka_ssl_ca_file" else v for k, v in over.items()}
    extra = {"aggregator": {"TN_DATA_DIR": str(tmp_path / "agg"), "TN_WEB_PORT": str(free_port())},
             "mailer": {"TN_LEDGER_DSN": secure.pg_dsn, "TN_METRICS_PORT": str(free_port())},
             "formr": {"TN_FORMR_DSN": secure.pg_dsn, "TN_FORMR_WEB_PORT": str(free_port()),
                       "TN_FORMR_PROXY_SECRET": "a-proxy-secret-of-this-test"}}.get(command[0], {})
    done = cli(command, secure.kafka_settings(**over), extra)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("{")]  # not a log record
    assert len(lines) == 1, done.stderr[-3000:]
    line = lines[0]
    assert "waiting_for_dependency" not in done.stderr + done.stdout  # refused at once, not retried
    assert line.startswith("trainee-notify: the Kafka broker") and expected.format(port=secure.sasl_ssl_port) in line
    assert f"127.0.0.1:{secure.sasl_ssl_port}" in line
    assert "Traceback" not in done.stdout
    assert PASSWORD not in done.stderr + done.stdout and "not-the-password" not in done.stderr + done.stdout


def test_the_aggregator_and_form_r_started_before_their_sasl_ssl_broker_wait_for_it(
        secure: SecureKafka, tmp_path: Path) -> None:
    """The SASL_SSL listener cannot be reached when they start (a forwarder that does not listen yet
    stands in for it): each logs every attempt with the bootstrap address, without a traceback or the
    password, and stays up (Form R's /readyz says it waits for the broker, /healthz ok); once the
    listener is there, both log in and work: the aggregator folds an event, Form R becomes ready."""
    from tests.integration.test_formr import FormrService
    from tests.integration.test_mailer import Forwarder

    late = Forwarder((LOOPBACK, secure.sasl_ssl_port))
    where = f"{LOOPBACK}:{late.port}"
    run = AggregatorRun(secure, tmp_path)  # its topics, applied over SASL_SSL
    env = {**kafka_security.environment(secure.kafka_settings()), "TN_KAFKA_BOOTSTRAP": where}
    day = dt.date(2026, 11, 24)
    run.set_clock(london_ms(day, 11))
    tid = f"late-{uuid.uuid4().hex[:8]}"
    row = placement(f"pl-{tid}", tid)  # read at the snapshot (a baseline), then changed that day (folded)
    run.produce([envelope("placement", "r", None, row, london_ms(day, -12), snapshot="true"),
                 envelope("placement", "u", row, {**row, "site": "Royal Papworth Hospital"}, london_ms(day, 10))])
    agg = run.service(**env).start()
    (tmp_path / "formr").mkdir()  # its own clock file, not the aggregator's
    formr = FormrService(secure, tmp_path / "formr", **env, TN_CDC_TOPIC_PREFIX=run.prefix).start()
    try:
        for svc in (agg, formr.svc):
            deadline = time.monotonic() + 60
            while svc.log().count('"dependency": "broker"') < 2 and time.monotonic() < deadline:
                assert svc.alive, f"{svc.name} exited:\n{svc.log()[-3000:]}"
                time.sleep(0.3)
            log = svc.log()
            assert log.count('"dependency": "broker"') >= 2 and f'"at": "{where}"' in log, log[-3000:]
            assert svc.alive and "Traceback" not in log and PASSWORD not in log
        status, body = formr.get("/readyz", auth=False)
        assert (status, orjson.loads(body)) == (503, {"ready": False, "why": f"waiting for the broker at {where}"})
        assert formr.get("/healthz", auth=False)[0] == 200  # waiting is not a stall
        late.start()
        wait_metric(agg, "netchange_events_folded_total", 1)
        formr.wait(lambda: formr.get("/readyz", auth=False)[0] == 200, "ready once the broker is there", timeout=90)
    finally:
        formr.svc.stop()
        agg.stop()
        late.stop()
    for svc in (agg, formr.svc):
        assert "Traceback" not in svc.log() and PASSWORD not in svc.log(), svc.log()[-3000:]


def worker_security(secure: SecureKafka, secrets: Path) -> dict[str, str]:
    """deploy/connect/worker-sasl-ssl.properties as a deployment would use it, with this broker's
    address and the files of this test in place of the deployment's mount points."""
    text = (WORKER_FILE.read_text().replace("kafka-bootstrap.kafka.svc:9093", secure.bootstrap)
            .replace("/opt/kafka/tls/ca.pem", str(secure.pki["ca"]))
            .replace("/opt/kafka/secrets/kafka-client.properties", str(secrets)))
    return dict(line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))


def test_debezium_in_connect_over_sasl_ssl_with_the_deploy_worker_file(secure: SecureKafka, pg: Any,
                                                                       tmp_path: Path) -> None:
    """The connector's side: a Connect worker configured with deploy/connect/worker-sasl-ssl.properties
    (its own clients, producer., consumer. and admin., the password through the file config provider)
    runs the Debezium connector of deploy/connect/tss-postgres.json; a row inserted in PostgreSQL
    arrives on the CDC topic, read over SASL_SSL."""
    secrets = tmp_path / "kafka-client.properties"
    secrets.write_text(f"password={CONNECT_PASSWORD}\n")
    secrets.chmod(0o600)
    prefix, slot = f"tls{uuid.uuid4().hex[:6]}", f"tls_{uuid.uuid4().hex[:8]}"
    paths = connect.ConnectPaths(tmp_path / "connect")
    rest = free_port()
    url = f"http://{LOOPBACK}:{rest}"
    pid = connect.start(ensure_jars(), paths, secure.bootstrap, rest, worker_security(secure, secrets))
    conn = pg()
    try:
        connect.wait_ready(url, pid, str(tmp_path))
        name, config = connect.connector_config(secure.pg_port, partitions=4, extra={
            "topic.prefix": prefix, "slot.name": slot, "publication.name": f"{slot}_pub",
            "table.include.list": "tss.personal_details", "snapshot.mode": "no_data"})
        connect.register(url, name, config)
        connect.wait_running(url, name)
        tid = f"tls-cdc-{uuid.uuid4().hex[:8]}"
        # the connector's slot exists once it runs; this insert is streamed, not snapshotted
        conn.execute("INSERT INTO tss.personal_details (trainee_id, role, title, forenames, surname, email, "
                     "updated_at) VALUES (%s, 'DR in Training', 'Dr', 'Ada', 'Okafor', %s, now())",
                     (tid, f"dr.{tid}@example.nhs.uk"))
        topic = f"{prefix}.tss.personal_details"
        consumer = Consumer(kafka_security.librdkafka_config(secure.kafka_settings(), **{
            "group.id": f"it-{uuid.uuid4().hex}", "auto.offset.reset": "earliest", "enable.auto.commit": False}))
        consumer.subscribe([topic])
        found = None
        deadline = time.monotonic() + 90
        try:
            while found is None and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and not msg.error() and msg.value() and tid.encode() in msg.value():
                    found = orjson.loads(msg.value())
        finally:
            consumer.close()
        assert found is not None, f"no change event for {tid} on {topic} within 90 s"
        assert found["op"] == "c" and found["after"]["trainee_id"] == tid
        assert CONNECT_PASSWORD not in (tmp_path / "logs" / "connect.log").read_text(errors="replace")
    finally:
        stop_group(pid, name="connect-sasl-ssl", marker=str(tmp_path))
        for _ in range(20):  # the slot is released when the worker has gone
            try:
                conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                             "WHERE slot_name = %s", (slot,))
                break
            except psycopg.errors.ObjectInUse:
                time.sleep(0.5)
        conn.execute(f'DROP PUBLICATION IF EXISTS "{slot}_pub"')
