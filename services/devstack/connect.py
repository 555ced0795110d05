"""One Kafka Connect distributed worker with the Debezium PostgreSQL plugin, and connector registration.

The connector's settings live in deploy/connect/tss-postgres.json (config only, no secrets); this module
adds the database endpoint of the local stack and registers it with the idempotent
``PUT /connectors/<name>/config``. Plain urllib: no extra dependency.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from services.devstack.errors import StackError
from services.devstack.fetch import LOG4J2_CONFIG, REPO_ROOT, Jars
from services.devstack.prereqs import require_java
from services.devstack.proc import LOOPBACK, pid_alive, spawn, wait_until

log = structlog.get_logger(__name__)

CONNECTOR_FILE = REPO_ROOT / "deploy" / "connect" / "tss-postgres.json"
JVM_OPTS = ["-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
POSTGRES_CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"


@dataclass(frozen=True)
class ConnectPaths:
    root: Path  # <scratch>/connect

    @property
    def config(self) -> Path:
        return self.root / "connect-distributed.properties"

    @property
    def logs(self) -> Path:
        return self.root.parent / "logs"


def worker_properties(bootstrap: str, rest_port: int, plugin_path: Path,
                      extra: dict[str, str] | None = None) -> str:
    """``extra`` (e.g. the security block of deploy/connect/worker-sasl-ssl.properties) wins."""
    settings = {
        "bootstrap.servers": bootstrap,
        "group.id": "trainee-notify-connect",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "false",
        "value.converter.schemas.enable": "false",
        "config.storage.topic": "_connect-configs",
        "offset.storage.topic": "_connect-offsets",
        "status.storage.topic": "_connect-status",
        "config.storage.replication.factor": "1",
        "offset.storage.replication.factor": "1",
        "status.storage.replication.factor": "1",
        "offset.storage.partitions": "1",
        "status.storage.partitions": "1",
        "offset.flush.interval.ms": "1000",
        "listeners": f"http://{LOOPBACK}:{rest_port}",
        "rest.advertised.host.name": LOOPBACK,
        "rest.advertised.port": str(rest_port),
        "plugin.path": str(plugin_path),
        "topic.creation.enable": "true",
        # every plugin here ships ServiceLoader manifests: skip the slow reflective classpath scan
        "plugin.discovery": "service_load",
        # secrets come from files in real deployments: ${file:<path>:<key>} in connector configs
        "config.providers": "file",
        "config.providers.file.class": "org.apache.kafka.common.config.provider.FileConfigProvider",
        **(extra or {}),
    }
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def start(jars: Jars, paths: ConnectPaths, bootstrap: str, rest_port: int,
          extra: dict[str, str] | None = None) -> int:
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(worker_properties(bootstrap, rest_port, jars.plugin_path, extra))
    argv = [require_java(), *JVM_OPTS, f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dkafka.logs.dir={paths.logs}", "-Dtn.log.name=connect", "-cp", jars.classpath,
            "org.apache.kafka.connect.cli.ConnectDistributed", str(paths.config)]
    proc = spawn(argv, log_file=paths.logs / "connect.out")
    log.info("process started", component="connect", pid=proc.pid)
    return proc.pid


# --- REST ---------------------------------------------------------------------------------------

def _request(method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,  # noqa: S310  the local Connect's http:// URL
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310  the local Connect's http:// URL
        raw = resp.read()
    return json.loads(raw) if raw else None


def _get_or_none(url: str) -> Any:
    try:
        return _request("GET", url, timeout=3.0)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def plugin_loaded(connect_url: str) -> bool:
    plugins = _get_or_none(f"{connect_url}/connector-plugins")
    return bool(plugins) and any(p.get("class") == POSTGRES_CONNECTOR_CLASS for p in plugins)


def wait_ready(connect_url: str, pid: int, marker: str, timeout: float = 180.0) -> None:
    """Wait for the REST API and for the Debezium plugin to be listed (plugin scanning takes a while)."""
    wait_until(lambda: plugin_loaded(connect_url), timeout=timeout, what="kafka connect", interval=0.5,
               alive=lambda: pid_alive(pid), hint=f" (see {marker}/logs/connect.log)")


def connector_config(pg_port: int, *, partitions: int,
                     extra: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """(name, config) from deploy/connect/tss-postgres.json plus the local database endpoint."""
    spec = json.loads(CONNECTOR_FILE.read_text())
    config = {k: str(v) for k, v in spec["config"].items() if not k.startswith("_")}
    config.update({
        "database.hostname": LOOPBACK,
        "database.port": str(pg_port),
        "database.user": "postgres",
        "database.password": "",  # trust auth on loopback; real deployments use ${file:...}
        "database.dbname": "tss",
        "topic.creation.default.partitions": str(partitions),
    })
    config.update(extra or {})
    return str(spec["name"]), config


def register(connect_url: str, name: str, config: dict[str, str]) -> None:
    try:
        _request("PUT", f"{connect_url}/connectors/{name}/config", config, timeout=60.0)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300].replace("\n", " ")
        raise StackError(f"registering connector {name} failed: HTTP {exc.code} {detail}") from None
    log.info("connector registered", connector=name)


def connector_state(connect_url: str, name: str) -> tuple[str, list[str], str]:
    """(connector state, task states, first line of a failure trace or '')."""
    status = _get_or_none(f"{connect_url}/connectors/{name}/status")
    if not status:
        return "UNKNOWN", [], ""
    tasks = status.get("tasks", [])
    traces = [t.get("trace", "") for t in [status.get("connector", {}), *tasks] if t.get("trace")]
    first = traces[0].splitlines()[0] if traces else ""
    return status.get("connector", {}).get("state", "UNKNOWN"), [t.get("state", "?") for t in tasks], first


def wait_running(connect_url: str, name: str, timeout: float = 120.0) -> None:
    """Until the connector and its task are RUNNING; a FAILED one stops at once with its error."""
    deadline = time.monotonic() + timeout
    state, tasks, trace = "UNKNOWN", list[str](), ""
    while time.monotonic() < deadline:
        state, tasks, trace = connector_state(connect_url, name)
        if state == "FAILED" or "FAILED" in tasks:
            raise StackError(f"connector {name} FAILED: {trace}")
        if state == "RUNNING" and tasks and all(t == "RUNNING" for t in tasks):
            log.info("connector running", connector=name, tasks=len(tasks))
            return
        time.sleep(0.5)
    raise StackError(f"connector {name} not RUNNING after {timeout:.0f} s (connector {state}, tasks {tasks})")


def delete_connector(connect_url: str, name: str) -> None:
    try:
        _request("DELETE", f"{connect_url}/connectors/{name}")
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise StackError(f"deleting connector {name} failed: HTTP {exc.code}") from None
