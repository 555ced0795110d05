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


def server_properties(paths: KafkaPaths, port: int, controller_port: int) -> str:
    """The broker settings of notes-stack.md: one combined node, replication factors 1, fast rebalances."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{LOOPBACK}:{controller_port}",
        "listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
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


def format_storage(jars: Jars, paths: KafkaPaths, port: int, controller_port: int) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(server_properties(paths, port, controller_port))
    run([*_java(jars, "storage-tool", paths.logs), "kafka.tools.StorageTool", "format",
         "-t", _cluster_id(), "-c", str(paths.config), "--standalone"],
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
