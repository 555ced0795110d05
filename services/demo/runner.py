"""The demo's moving parts outside the stack: the aggregator and mailer processes, and waiting for
Debezium's snapshot. Pids and ports are kept in ``<scratch>/demo.json`` so ``stop`` can end them."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition

from services.devstack.proc import LOOPBACK, free_port, pid_alive, spawn, stop_group
from services.kafka_security import client_config
from services.topics import CDC_TABLES

log = structlog.get_logger(__name__)

STATE_FILE = "demo.json"
DAY_SECONDS = 60
GRACE_SECONDS = 5
SERVICES: dict[str, str] = {"aggregator": "services.netchange.__main__", "mailer": "services.notifier.__main__",
                            "formr": "services.formr.__main__"}
PROXY = "report-proxy"  # the demo's stand-in for oauth2-proxy in front of the Form R report
REMINDER_EVERY_SECONDS = 5


@dataclass(frozen=True)
class ServiceProc:
    name: str
    pid: int
    port: int          # aggregator: faust web (/healthz, /readyz, /metrics); mailer: /metrics
    log_file: str

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@dataclass(frozen=True)
class DemoState:
    services: dict[str, ServiceProc] = field(default_factory=dict)


def available(name: str) -> bool:
    """Whether the service's module exists in this checkout (``trainee-notify <name> run``)."""
    try:
        return importlib.util.find_spec(SERVICES[name]) is not None
    except ModuleNotFoundError:
        return False


def _command() -> list[str]:
    script = Path(sys.executable).parent / "trainee-notify"
    if script.exists():
        return [str(script)]
    found = shutil.which("trainee-notify")
    return [found] if found else [sys.executable, "-m", "services.cli"]


def service_env(name: str, *, bootstrap: str, smtp_port: int, port: int, scratch: Path, pg_dsn: str = "",
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The TN_* environment of one demo service: one-minute days, short grace, mail sent at once."""
    env = dict(os.environ if base is None else base)
    env.update({
        "TN_KAFKA_BOOTSTRAP": bootstrap,
        "TN_DAY_SECONDS": str(DAY_SECONDS),
        "TN_GRACE_SECONDS": str(GRACE_SECONDS),
        "TN_SEND_IMMEDIATELY": "true",
        "TN_SMTP_HOST": LOOPBACK,
        "TN_SMTP_PORT": str(smtp_port),
        "TN_SMTP_SECURITY": "none",
        "TN_LOG_FORMAT": "json",
    })
    if name == "aggregator":
        env.update({"TN_WEB_PORT": str(port), "TN_WEB_HOST": LOOPBACK, "TN_TICK_SECONDS": "1",
                    "TN_DATA_DIR": str(scratch / "data" / "aggregator")})
    elif name in ("formr", PROXY):
        env.update({"TN_FORMR_WEB_PORT": str(port), "TN_FORMR_WEB_HOST": LOOPBACK, "TN_FORMR_DSN": pg_dsn,
                    "TN_FORMR_PROXY_SECRET": proxy_secret(scratch), "TN_FORMR_INSTANCE_ID": "demo-formr",
                    "TN_FORMR_REMINDER_EVERY_SECONDS": str(REMINDER_EVERY_SECONDS)})
    else:
        env.update({"TN_METRICS_PORT": str(port), "TN_METRICS_HOST": LOOPBACK, "TN_INSTANCE_ID": "demo-mailer"})
        if pg_dsn:
            env["TN_LEDGER_DSN"] = pg_dsn
    return env


def proxy_secret(scratch: Path) -> str:
    """The shared secret between the demo's proxy and the report service (made once per scratch dir)."""
    path = scratch / "formr-proxy-secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        secret = secrets.token_urlsafe(24)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secret)
        return secret


def start_proxy(scratch: Path, upstream: str, groups: str) -> ServiceProc:
    """Start the demo's sign-in stand-in in front of the report (or return the one running)."""
    def argv(port: int) -> list[str]:
        return [*_command(), "demo", "proxy", "--upstream", upstream, "--port", str(port), "--groups", groups]

    return _start(PROXY, scratch, argv, lambda port: {**os.environ, "TN_FORMR_PROXY_SECRET": proxy_secret(scratch)})


def _start(name: str, scratch: Path, argv: Callable[[int], list[str]], env: Callable[[int], dict[str, str]],
           before: Callable[[], None] = lambda: None) -> ServiceProc:
    """Spawn ``argv(port)`` on a free port with ``env(port)``, recorded under ``name`` in the demo's
    state (or return the one recorded and still running). Idempotent."""
    scratch = scratch.resolve()
    state = _load(scratch)
    current = state.services.get(name)
    if current is not None and pid_alive(current.pid):
        return current
    port = free_port()
    before()
    log_file = scratch / "logs" / f"{name}.log"
    proc = spawn(argv(port), log_file=log_file, cwd=scratch, env=env(port))
    started = ServiceProc(name=name, pid=proc.pid, port=port, log_file=str(log_file))
    _save(scratch, DemoState({**state.services, name: started}))
    log.info("service started", service=name, pid=proc.pid, port=port)
    return started


def _load(scratch: Path) -> DemoState:
    try:
        raw = json.loads((scratch / STATE_FILE).read_text())
        return DemoState({k: ServiceProc(**v) for k, v in raw.get("services", {}).items()})
    except (FileNotFoundError, ValueError, TypeError):
        return DemoState()


def _save(scratch: Path, state: DemoState) -> None:
    (scratch / STATE_FILE).write_text(json.dumps({"services": {k: asdict(v) for k, v in state.services.items()}}))


def running(scratch: Path) -> dict[str, ServiceProc]:
    return {k: v for k, v in _load(scratch).services.items() if pid_alive(v.pid)}


def start_service(name: str, scratch: Path, *, bootstrap: str, smtp_port: int, pg_dsn: str = "") -> ServiceProc:
    """Start ``trainee-notify <name> run`` in the background (or return the one running). Idempotent."""
    scratch = scratch.resolve()

    def fresh_data_dir() -> None:
        # RocksDB is only a cache of the changelog topics: a fresh start rebuilds it from Kafka, and a
        # stale one from an earlier stack (whose topics are gone) would stop Faust with a ConsistencyError
        shutil.rmtree(scratch / "data" / name, ignore_errors=True)
        (scratch / "data" / name).mkdir(parents=True, exist_ok=True)

    return _start(name, scratch, lambda port: [*_command(), name, "run"],
                  lambda port: service_env(name, bootstrap=bootstrap, smtp_port=smtp_port, port=port, scratch=scratch,
                                           pg_dsn=pg_dsn), before=fresh_data_dir)


def stop_services(scratch: Path) -> list[str]:
    """Stop every demo service of ``scratch``; returns the names that were running."""
    scratch = scratch.resolve()
    stopped = []
    for name, svc in _load(scratch).services.items():
        if pid_alive(svc.pid):
            stop_group(svc.pid, name=name)
            stopped.append(name)
    (scratch / STATE_FILE).unlink(missing_ok=True)
    return stopped


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310  the demo's own http:// health URLs
            return bool(200 <= resp.status < 300)
    except (urllib.error.URLError, OSError):
        return False


# ---------------------------------------------------------------------------------------------- snapshot

def cdc_topic(prefix: str, table: str) -> str:
    return f"{prefix}.tss.{table}"


def topic_ends(bootstrap: str, topics: list[str], timeout: float = 10.0) -> dict[str, int]:
    """Sum of the end offsets of every partition of each topic (absent topics are left out)."""
    consumer = Consumer({**client_config(bootstrap), "group.id": "trainee-notify-demo-probe",
                         "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(timeout=timeout)
        out: dict[str, int] = {}
        for topic in topics:
            tmeta = meta.topics.get(topic)
            if tmeta is None or tmeta.error is not None:
                continue
            total = 0
            for p in tmeta.partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                total += high
            out[topic] = total
        return out
    finally:
        consumer.close()


def snapshot_progress(bootstrap: str, prefix: str, counts: Mapping[str, int]) -> tuple[int, int]:
    """(events on the CDC topics, rows in the tables), each topic counted up to its table's rows."""
    topics = {cdc_topic(prefix, t): t for t in CDC_TABLES}
    try:
        ends = topic_ends(bootstrap, list(topics))
    except KafkaException:
        ends = {}
    done = sum(min(ends.get(topic, 0), counts.get(table, 0)) for topic, table in topics.items())
    return done, sum(counts.get(t, 0) for t in CDC_TABLES)


def wait_snapshot(bootstrap: str, prefix: str, counts: Mapping[str, int], *, timeout: float = 300.0,
                  on_progress: Callable[[int, int], None] | None = None) -> bool:
    """Wait until every CDC topic holds at least as many events as its table has rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, total = snapshot_progress(bootstrap, prefix, counts)
        if on_progress:
            on_progress(done, total)
        if done >= total:
            return True
        time.sleep(1.0)
    return False


# ---------------------------------------------------------------------------------------------- day windows

def window_start(now: float, day_seconds: int = DAY_SECONDS) -> float:
    """The start of the epoch-aligned window holding ``now``."""
    return now - (now % day_seconds)


def seconds_to_fresh_window(now: float, day_seconds: int = DAY_SECONDS, *, room: float = 0.5) -> float:
    """How long to wait so that a script started then runs early in a window: 0 when at most ``room``
    (a fraction) of the current window has gone, else until one second into the next window."""
    into = now % day_seconds
    return 0.0 if into <= day_seconds * room else day_seconds - into + 1.0


# ---------------------------------------------------------------------------------------------- net change

def day_label(window_start_epoch: float) -> str:
    """The label the aggregator gives a fixed-length day: its start instant in ISO-8601 UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(window_start_epoch))


def netchange_seen(bootstrap: str, topic: str, day: str, trainees: set[str],
                   timeout: float = 10.0) -> dict[str, list[tuple[str, str, str | None]]]:
    """Net-change records of ``day`` for ``trainees`` now on ``topic``: trainee -> [(entity, kind,
    suppression)], where suppression is the change's own reason, else its record's (placeholder...)."""
    from services import serde

    consumer = Consumer({**client_config(bootstrap), "group.id": "trainee-notify-demo-probe",
                         "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
                for p in meta.partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        remaining = {p for p, end in ends.items() if end > 0}
        seen: dict[str, list[tuple[str, str, str | None]]] = {}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition is not None and offset is not None and offset >= ends[partition] - 1:
                remaining.discard(partition)
            value = msg.value()
            if not value:
                continue
            record = serde.decode(serde.NETCHANGE, value)
            if record["day"] == day and record["trainee_id"] in trainees:
                seen[record["trainee_id"]] = [(c["entity"], c["kind"], c.get("suppressed") or record.get("suppressed"))
                                              for c in record["changes"]]
        return seen
    finally:
        consumer.close()
