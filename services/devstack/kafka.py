"""A single-node Kafka 4 (KRaft, combined broker+controller) run from the Maven-resolved jars."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from pathlib import Path

import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from services.devstack.fetch import LOG4J2_CONFIG, Jars
from services.devstack.prereqs import require_java
from services.devstack.proc import LOOPBACK, pid_alive, port_open, run, spawn, wait_until

log = structlog.get_logger(__name__)

JVM_OPTS = ["-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"]


@dataclass(frozen=True)
class KafkaPaths:
    root: Path  # <scratch>/kafka

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def logs(self) -> Path:
        return self.root.parent / "logs"


@dataclass(frozen=True)
class SecureListeners:
    """Opt-in listeners besides PLAINTEXT (which stays, for the broker itself and the stack's tools):
    SASL_SSL with SCRAM-SHA-512 on ``sasl_ssl_port`` and, with ``ssl_port``, SSL that requires a
    client certificate signed by ``truststore`` (mutual TLS). The broker's key and certificate are in
    the PKCS#12 ``keystore``; the SCRAM ``users`` (name, password) are created when the storage is
    formatted (KRaft keeps them in its metadata log)."""

    sasl_ssl_port: int
    keystore: Path
    keystore_password: str
    truststore: Path  # PEM: the CA of the client certificates
    users: tuple[tuple[str, str], ...]
    ssl_port: int | None = None

    def listeners(self) -> dict[str, int]:
        out = {"SASL_SSL": self.sasl_ssl_port}
        if self.ssl_port is not None:
            out["SSL"] = self.ssl_port
        return out

    def properties(self) -> dict[str, str]:
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        props = {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": self.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.truststore),
        }
        if self.ssl_port is not None:
            props["listener.name.ssl.ssl.client.auth"] = "required"
        return props


def server_properties(paths: KafkaPaths, port: int, controller_port: int,
                      secure: SecureListeners | None = None) -> str:
    """The broker settings of notes-stack.md: one combined node, replication factors 1, fast rebalances;
    with ``secure``, its SASL_SSL (and SSL) listeners too."""
    extra = secure.listeners() if secure else {}
    listeners = ",".join([f"PLAINTEXT://{LOOPBACK}:{port}", f"CONTROLLER://{LOOPBACK}:{controller_port}",
                          *(f"{name}://{LOOPBACK}:{p}" for name, p in extra.items())])
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{LOOPBACK}:{controller_port}",
        "listeners": listeners,
        "advertised.listeners": listeners,
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": ",".join(["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT",
                                                    *(f"{name}:{name}" for name in extra)]),
        "log.dirs": str(paths.data),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.check.interval.ms": "60000",
        "log.flush.interval.messages": "9223372036854775807",
        **(secure.properties() if secure else {}),
    }
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def _cluster_id() -> str:
    while True:  # Kafka's own random-uuid avoids ids that start with '-'
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _java(jars: Jars, name: str, logs: Path) -> list[str]:
    return [require_java(), *JVM_OPTS, f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dkafka.logs.dir={logs}", f"-Dtn.log.name={name}", "-cp", jars.classpath]


def format_storage(jars: Jars, paths: KafkaPaths, port: int, controller_port: int,
                   secure: SecureListeners | None = None) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(server_properties(paths, port, controller_port, secure))
    paths.config.chmod(0o600)  # with secure: the keystore password
    scram = [a for name, password in (secure.users if secure else ())
             for a in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")]
    run([*_java(jars, "storage-tool", paths.logs), "kafka.tools.StorageTool", "format",
         "-t", _cluster_id(), "-c", str(paths.config), "--standalone", *scram],
        what="kafka StorageTool format", timeout=120)


def start(jars: Jars, paths: KafkaPaths) -> int:
    """Start the broker in its own process group; returns its pid (wait with :func:`wait_ready`)."""
    proc = spawn([*_java(jars, "kafka", paths.logs), "kafka.Kafka", str(paths.config)],
                 log_file=paths.logs / "kafka.out")
    log.info("process started", component="kafka", pid=proc.pid)
    return proc.pid


def metadata_ok(bootstrap: str, timeout: float = 5.0) -> bool:
    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(md.brokers)


def wait_ready(bootstrap: str, port: int, pid: int, marker: str, timeout: float = 120.0) -> None:
    hint = f" (see {marker}/logs/kafka.log)"
    wait_until(lambda: port_open(port), timeout=timeout, what="kafka", alive=lambda: pid_alive(pid),
               hint=hint)
    wait_until(lambda: metadata_ok(bootstrap), timeout=timeout, what="kafka metadata", interval=0.5,
               alive=lambda: pid_alive(pid), hint=hint)
