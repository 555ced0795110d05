"""The local stack — PostgreSQL, Kafka (KRaft, one node) and Kafka Connect with Debezium — as processes.

One API for the CLI (``trainee-notify stack up|down|status``) and the integration-test fixtures::

    info = up(Path(".stack"))          # idempotent: returns the running stack if there is one
    info.bootstrap, info.connect_url, info.pg_dsn
    down(Path(".stack"))               # no-op when nothing runs

State (ports, pids) is kept in ``<scratch>/stack.json``; logs in ``<scratch>/logs``. A stack that is
not running is started from scratch: fresh database, fresh Kafka log dirs.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from services.devstack import connect, kafka, postgres
from services.devstack.errors import StackError
from services.devstack.fetch import REPO_ROOT, Jars, ensure_jars
from services.devstack.prereqs import require_java, require_pg_bindir
from services.devstack.proc import LOOPBACK, free_port, pid_alive, port_open, stop_group
from services.settings import KafkaSettings
from services.topics import TopicChange, apply_topics

log = structlog.get_logger(__name__)

DEFAULT_SCRATCH = REPO_ROOT / ".stack"
STATE_FILE = "stack.json"


@dataclass(frozen=True)
class StackInfo:
    scratch: Path
    bootstrap: str  # Kafka PLAINTEXT listener, host:port
    pg_dsn: str  # psycopg conninfo: host=127.0.0.1 port=... user=postgres dbname=tss
    pg_port: int
    kafka_port: int
    controller_port: int
    kafka_pid: int
    connect_url: str | None = None  # http://127.0.0.1:<port>, None when started without Connect
    connect_port: int | None = None
    connect_pid: int | None = None
    connector: str | None = None  # the registered Debezium connector's name
    started_in_s: float = 0.0  # how long the `up` that started it took
    jars_fetched: bool = False  # whether that `up` had to fetch the jars (cold cache)
    reused: bool = field(default=False, compare=False)  # True when `up` found it running

    def kafka_settings(self) -> KafkaSettings:
        """KafkaSettings pointing at this stack (other fields from TN_ variables or defaults)."""
        return KafkaSettings(kafka_bootstrap=self.bootstrap)

    def env(self) -> dict[str, str]:
        """Every setting a service or operator command needs to run against this stack (its ports
        are random): the broker, the ledger and Form R databases, the source, Kafka Connect."""
        out = {"TN_KAFKA_BOOTSTRAP": self.bootstrap, "TN_LEDGER_DSN": self.pg_dsn, "TN_FORMR_DSN": self.pg_dsn,
               "TN_SOURCE_DSN": self.pg_dsn}
        if self.connect_url:
            out["TN_CONNECT_URL"] = self.connect_url
        return out


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    pid: int | None
    endpoint: str
    detail: str = ""


@dataclass(frozen=True)
class StackStatus:
    info: StackInfo | None
    components: list[ComponentStatus]

    @property
    def running(self) -> bool:
        return bool(self.components) and all(c.running for c in self.components)


# --- state file ---------------------------------------------------------------------------------

def _state_path(scratch: Path) -> Path:
    return scratch / STATE_FILE


def _save(info: StackInfo) -> None:
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(info).items() if k != "reused"}
    tmp = _state_path(info.scratch).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(_state_path(info.scratch))


def _load(scratch: Path) -> StackInfo | None:
    try:
        data: dict[str, Any] = json.loads(_state_path(scratch).read_text())
        data["scratch"] = Path(data["scratch"])
        return StackInfo(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError):
        log.warning("unreadable stack state, ignoring it", file=str(_state_path(scratch)))
        return None


@contextmanager
def _locked(scratch: Path) -> Iterator[None]:
    with open(scratch / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _prepare(scratch: Path) -> Path:
    scratch = scratch.resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    scratch.chmod(0o755)  # the postgres user must be able to enter it
    return scratch


def _marker(scratch: Path) -> str:
    """Every java process of a stack has its scratch path on its command line: guards against pid reuse."""
    return str(scratch)


# --- health -------------------------------------------------------------------------------------

def _pg_ok(info: StackInfo) -> bool:
    return postgres.running(postgres.PgPaths(info.scratch / "pg"), info.pg_port)


def _kafka_ok(info: StackInfo) -> bool:
    return pid_alive(info.kafka_pid, _marker(info.scratch)) and port_open(info.kafka_port)


def _connect_ok(info: StackInfo) -> bool:
    return (info.connect_pid is not None and info.connect_port is not None
            and pid_alive(info.connect_pid, _marker(info.scratch)) and port_open(info.connect_port))


# --- start --------------------------------------------------------------------------------------

def _start_postgres(scratch: Path) -> int:
    port = free_port()
    paths = postgres.PgPaths(scratch / "pg")
    postgres.init(paths, port)
    postgres.start(paths, port)
    postgres.create_database_and_schema(port)
    log.info("postgres ready", port=port)
    return port


def _start_kafka(scratch: Path, jars: Jars) -> tuple[int, int, int]:
    port, controller_port = free_port(), free_port()
    paths = kafka.KafkaPaths(scratch / "kafka")
    shutil.rmtree(paths.root, ignore_errors=True)
    kafka.format_storage(jars, paths, port, controller_port)
    pid = kafka.start(jars, paths)
    return port, controller_port, pid


def _start_connect(info: StackInfo, jars: Jars, settings: KafkaSettings) -> StackInfo:
    rest_port = free_port()
    paths = connect.ConnectPaths(info.scratch / "connect")
    shutil.rmtree(paths.root, ignore_errors=True)
    pid = connect.start(jars, paths, info.bootstrap, rest_port)
    url = f"http://{LOOPBACK}:{rest_port}"
    info = replace(info, connect_url=url, connect_port=rest_port, connect_pid=pid)
    _save(info)  # so that `down` can stop it even if what follows fails
    connect.wait_ready(url, pid, _marker(info.scratch))
    name, config = connect.connector_config(info.pg_port, partitions=settings.topic_partitions)
    connect.register(url, name, config)
    connect.wait_running(url, name)
    info = replace(info, connector=name)
    _save(info)
    return info


def _start(scratch: Path, *, with_connect: bool, settings: KafkaSettings | None) -> StackInfo:
    started = time.monotonic()
    require_java()
    require_pg_bindir()
    jars = ensure_jars()
    pg_port = _start_postgres(scratch)
    kafka_port, controller_port, kafka_pid = _start_kafka(scratch, jars)
    bootstrap = f"{LOOPBACK}:{kafka_port}"
    info = StackInfo(scratch=scratch, bootstrap=bootstrap, pg_dsn=postgres.dsn(pg_port), pg_port=pg_port,
                     kafka_port=kafka_port, controller_port=controller_port, kafka_pid=kafka_pid,
                     jars_fetched=jars.fetched)
    _save(info)
    kafka.wait_ready(bootstrap, kafka_port, kafka_pid, _marker(scratch))
    log.info("kafka ready", bootstrap=bootstrap)
    settings = _with_bootstrap(settings, bootstrap)
    apply_topics(settings)
    if with_connect:
        info = _start_connect(info, jars, settings)
    info = replace(info, started_in_s=round(time.monotonic() - started, 1))
    _save(info)
    log.info("stack up", seconds=info.started_in_s, jars_fetched=jars.fetched, with_connect=with_connect)
    return info


def _with_bootstrap(settings: KafkaSettings | None, bootstrap: str) -> KafkaSettings:
    if settings is None:
        return KafkaSettings(kafka_bootstrap=bootstrap)
    return settings.model_copy(update={"kafka_bootstrap": bootstrap})


def up(scratch: Path = DEFAULT_SCRATCH, *, with_connect: bool = True,
       settings: KafkaSettings | None = None) -> StackInfo:
    """Start the stack in ``scratch`` (or return the one running there) and apply the topics.

    With ``with_connect`` the Connect worker runs too and the Debezium connector is registered and
    RUNNING when this returns. ``settings`` (its bootstrap is replaced) sets topic names/partitions.
    On a failure everything started is stopped again and a :class:`StackError` says what failed.
    """
    scratch = _prepare(scratch)
    with _locked(scratch):
        current = _load(scratch)
        if (current is not None and _pg_ok(current) and _kafka_ok(current)
                and (current.connect_pid is None or _connect_ok(current))):
            return _reuse(current, with_connect, settings)
        if current is not None:
            log.info("stack state found but not running: starting afresh", scratch=str(scratch))
            _stop_all(current)
        try:
            return _start(scratch, with_connect=with_connect, settings=settings)
        except BaseException:
            stale = _load(scratch)
            if stale is not None:
                _stop_all(stale)
            postgres.stop(postgres.PgPaths(scratch / "pg"))
            raise


def _reuse(current: StackInfo, with_connect: bool, settings: KafkaSettings | None) -> StackInfo:
    if with_connect and current.connect_pid is None:
        settings = _with_bootstrap(settings, current.bootstrap)
        apply_topics(settings)
        current = _start_connect(current, ensure_jars(), settings)
    log.info("stack already running", scratch=str(current.scratch))
    return replace(current, reused=True)


# --- stop / status ------------------------------------------------------------------------------

def _stop_all(info: StackInfo) -> None:
    marker = _marker(info.scratch)
    if info.connect_pid:
        stop_group(info.connect_pid, name="connect", marker=marker)
    stop_group(info.kafka_pid, name="kafka", marker=marker)
    postgres.stop(postgres.PgPaths(info.scratch / "pg"))


def down(scratch: Path = DEFAULT_SCRATCH, *, purge: bool = False) -> bool:
    """Stop every process of the stack in ``scratch``; returns False when nothing was running.

    Data and logs stay (the next ``up`` starts afresh anyway) unless ``purge`` removes the scratch dir.
    """
    scratch = scratch.resolve()
    if not scratch.exists():
        return False
    with _locked(scratch):
        info = _load(scratch)
        was_running = info is not None and (_pg_ok(info) or _kafka_ok(info) or _connect_ok(info))
        if info is not None:
            _stop_all(info)
            _state_path(scratch).unlink(missing_ok=True)
        else:
            postgres.stop(postgres.PgPaths(scratch / "pg"))
    if purge:
        shutil.rmtree(scratch, ignore_errors=True)
    if was_running:
        log.info("stack down", scratch=str(scratch))
    return was_running


def status(scratch: Path = DEFAULT_SCRATCH) -> StackStatus:
    """What runs in ``scratch``: one row per component (no processes are started or stopped)."""
    info = _load(scratch.resolve()) if scratch.exists() else None
    if info is None:
        return StackStatus(None, [])
    rows = [
        ComponentStatus("postgres", _pg_ok(info), None, info.pg_dsn),
        ComponentStatus("kafka", _kafka_ok(info), info.kafka_pid, info.bootstrap),
    ]
    if info.connect_url is not None:
        rows.append(ComponentStatus("connect", _connect_ok(info), info.connect_pid, info.connect_url))
    if info.connect_url is not None and info.connector is not None:
        state, tasks, trace = connect.connector_state(info.connect_url, info.connector)
        ok = state == "RUNNING" and bool(tasks) and all(t == "RUNNING" for t in tasks)
        rows.append(ComponentStatus(f"connector {info.connector}", ok, None, f"{state} tasks={tasks}", trace))
    return StackStatus(info, rows)


def prefetch() -> Jars:
    """Resolve the jars now (CI does this before the tests, so its log shows the fetch on its own)."""
    require_java()
    return ensure_jars()


__all__ = ["DEFAULT_SCRATCH", "ComponentStatus", "StackError", "StackInfo", "StackStatus", "TopicChange",
           "down", "prefetch", "status", "up"]

