"""``trainee-notify connector status | apply | restart``: the Debezium connector and its WAL.

- ``status``: the connector's and each task's state (with the first line of a failure's trace), and
  the replication slot's retained WAL (``pg_replication_slots``) with a threshold (``--warn-bytes``,
  default 1 GiB; docs/runbook.md). ``--prometheus`` prints the figures as Prometheus text (for the
  node exporter's textfile collector), ``--check`` exits 1 when a task is not RUNNING or the WAL is
  past the threshold.
- ``apply``: deploy/connect/tss-postgres.json (keys starting with ``_`` stripped) with the idempotent
  ``PUT /connectors/<name>/config``; on the local stack the database endpoint is added as
  ``trainee-notify stack up`` does (services/devstack/connect.py). Unchanged config: no call. ``--dry-run``
  shows the difference only.
- ``restart``: restart the failed tasks (``--all``: connector and every task; ``--task N``: one).

Connect's URL: ``--connect-url``, ``TN_CONNECT_URL`` or the local stack's. Exit codes: common.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.table import Table

from services.opsctl import common
from services.opsctl.common import JSON_OPTION, OpsError, UsageError

app = typer.Typer(help="The Debezium connector: status, apply, restart.", no_args_is_help=True,
                  add_completion=False)

GIB = 1024 ** 3
DEFAULT_WARN_BYTES = GIB
CONNECTOR_FILE = Path(__file__).resolve().parents[2] / "deploy" / "connect" / "tss-postgres.json"
SECRET_HINTS = ("password", "secret", "token")

CONNECT_URL_OPTION = typer.Option(None, "--connect-url", help="Kafka Connect REST URL (default: TN_CONNECT_URL "
                                  "or the local stack's)")
SOURCE_DSN_OPTION = typer.Option(None, "--source-dsn", help="the source database (default: TN_SOURCE_DSN or the "
                                 "local stack's)")
SET_OPTION = typer.Option(None, "--set", help="KEY=VALUE added to the config (repeatable), e.g. database.hostname=..")


@dataclass(frozen=True)
class TaskState:
    id: int
    state: str
    worker: str
    trace: str = ""


@dataclass(frozen=True)
class ConnectorState:
    name: str
    state: str
    worker: str
    tasks: list[TaskState]
    trace: str = ""

    @property
    def healthy(self) -> bool:
        return self.state == "RUNNING" and bool(self.tasks) and all(t.state == "RUNNING" for t in self.tasks)


@dataclass(frozen=True)
class Slot:
    slot_name: str
    active: bool
    retained_bytes: int | None


@dataclass
class Report:
    connector: ConnectorState | None = None
    slots: list[Slot] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def file_spec(path: Path = CONNECTOR_FILE) -> tuple[str, dict[str, str]]:
    """(name, config) of the connector file, keys starting with ``_`` stripped (pure)."""
    spec = json.loads(path.read_text())
    return str(spec["name"]), {k: str(v) for k, v in spec["config"].items() if not k.startswith("_")}


def connector_name() -> str:
    return file_spec()[0]


def slot_name() -> str:
    return file_spec()[1].get("slot.name", "debezium")


def desired_config(sets: list[str] | None = None) -> tuple[str, dict[str, str]]:
    """The config to apply: on the local stack exactly what ``stack up`` registers; else the file."""
    from services.devstack import connect as devconnect

    info = common.local_stack()
    if info is not None:
        name, config = devconnect.connector_config(info.pg_port, partitions=common.kafka_settings().topic_partitions)
    else:
        name, config = file_spec()
    for item in sets or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--set wants KEY=VALUE, got '{item}'")
        config[key.strip()] = value
    return name, config


def _first_line(trace: str | None) -> str:
    return trace.strip().splitlines()[0] if trace and trace.strip() else ""


def _url(option: str | None) -> str:
    url = common.connect_url(option)
    if url is None:
        raise UsageError("no Kafka Connect URL: pass --connect-url or set TN_CONNECT_URL")
    return url


def get_state(url: str, name: str) -> ConnectorState:
    status = common.http_json("GET", f"{url}/connectors/{name}/status", what="Kafka Connect")
    c = status.get("connector", {})
    tasks = [TaskState(int(t.get("id", 0)), t.get("state", "?"), t.get("worker_id", ""), _first_line(t.get("trace")))
             for t in status.get("tasks", [])]
    return ConnectorState(name, c.get("state", "UNKNOWN"), c.get("worker_id", ""), tasks, _first_line(c.get("trace")))


def get_slots(dsn: str) -> list[Slot]:
    with common.pg_connect(dsn, "source database") as conn:
        rows = conn.execute("SELECT slot_name, active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
                            " FROM pg_replication_slots ORDER BY slot_name").fetchall()
    return [Slot(str(r[0]), bool(r[1]), None if r[2] is None else int(r[2])) for r in rows]


def report(url: str | None, dsn: str, name: str, warn_bytes: int) -> Report:
    """What can be read of the connector and the slots; what could not be is in ``problems``."""
    out = Report()
    if url is None:
        out.problems.append("Kafka Connect: no URL (pass --connect-url or set TN_CONNECT_URL)")
    else:
        try:
            out.connector = get_state(url, name)
            if not out.connector.healthy:
                out.problems.append(f"connector {name} {out.connector.state}, tasks "
                                    f"{[t.state for t in out.connector.tasks]}")
        except OpsError as exc:
            out.problems.append(exc.message)
    try:
        out.slots = get_slots(dsn)
        for s in out.slots:
            if s.retained_bytes is not None and s.retained_bytes >= warn_bytes:
                out.problems.append(f"replication slot {s.slot_name} retains {human_bytes(s.retained_bytes)} of WAL "
                                    f"(threshold {human_bytes(warn_bytes)})")
    except OpsError as exc:
        out.problems.append(exc.message)
    return out


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def prometheus_text(rep: Report, warn_bytes: int) -> str:
    """The figures as Prometheus exposition text (for a textfile collector)."""
    lines = ["# HELP tn_replication_slot_retained_wal_bytes WAL the source database keeps for the slot",
             "# TYPE tn_replication_slot_retained_wal_bytes gauge"]
    for s in rep.slots:
        lines.append(f'tn_replication_slot_retained_wal_bytes{{slot="{s.slot_name}"}} {s.retained_bytes or 0}')
    lines += ["# HELP tn_replication_slot_active 1 when a client (the connector) streams from the slot",
              "# TYPE tn_replication_slot_active gauge"]
    lines += [f'tn_replication_slot_active{{slot="{s.slot_name}"}} {int(s.active)}' for s in rep.slots]
    lines += ["# HELP tn_replication_slot_retained_wal_threshold_bytes the alert threshold",
              "# TYPE tn_replication_slot_retained_wal_threshold_bytes gauge",
              f"tn_replication_slot_retained_wal_threshold_bytes {warn_bytes}"]
    if rep.connector is not None:
        lines += ["# HELP tn_connector_task_running 1 when the connector's task is RUNNING",
                  "# TYPE tn_connector_task_running gauge"]
        lines += [f'tn_connector_task_running{{connector="{rep.connector.name}",task="{t.id}"}} '
                  f'{int(t.state == "RUNNING")}' for t in rep.connector.tasks]
    return "\n".join(lines) + "\n"


def render_tables(rep: Report, warn_bytes: int) -> list[Table]:
    tables = []
    if rep.connector is not None:
        c = rep.connector
        t = Table("connector / task", "state", "worker", "error", title=f"connector {c.name}")
        t.add_row(c.name, _styled(c.state), c.worker, c.trace)
        for task in c.tasks:
            t.add_row(f"  task {task.id}", _styled(task.state), task.worker, task.trace)
        tables.append(t)
    if rep.slots:
        t = Table("slot", "active", "retained WAL", "bytes", "threshold", title="replication slots")
        for s in rep.slots:
            over = s.retained_bytes is not None and s.retained_bytes >= warn_bytes
            size = "-" if s.retained_bytes is None else human_bytes(s.retained_bytes)
            t.add_row(s.slot_name, "yes" if s.active else "[red]no[/]", f"[red]{size}[/]" if over else size,
                      str(s.retained_bytes if s.retained_bytes is not None else "-"), human_bytes(warn_bytes))
        tables.append(t)
    return tables


def _styled(state: str) -> str:
    if state == "RUNNING":
        return f"[green]{state}[/]"
    return f"[red]{state}[/]" if state == "FAILED" else f"[yellow]{state}[/]"


@app.command("status")
def status_cmd(
    connect_url: str | None = CONNECT_URL_OPTION,
    source_dsn: str | None = SOURCE_DSN_OPTION,
    warn_bytes: int = typer.Option(DEFAULT_WARN_BYTES, "--warn-bytes", help="retained WAL alert threshold"),
    prometheus: bool = typer.Option(False, "--prometheus", help="print Prometheus exposition text"),
    check: bool = typer.Option(False, "--check",
                               help="exit 1 unless every task RUNS and the WAL is under the threshold"),
    as_json: bool = JSON_OPTION,
) -> None:
    """The connector's and its tasks' states; the replication slot's retained WAL."""
    with common.cli_errors():
        name = connector_name()
        rep = report(common.connect_url(connect_url), common.source_dsn(source_dsn), name, warn_bytes)
        if rep.connector is None and not rep.slots:
            raise common.Unreachable("; ".join(rep.problems) or "nothing reachable")
        if as_json:
            common.print_json({"connector": rep.connector, "slots": rep.slots, "warn_bytes": warn_bytes,
                               "problems": rep.problems})
        elif prometheus:
            typer.echo(prometheus_text(rep, warn_bytes), nl=False)
        else:
            out = common.console()
            for table in render_tables(rep, warn_bytes):
                out.print(table)
            for problem in rep.problems:
                out.print(f"[red]![/] {problem}")
        if check and rep.problems:
            raise typer.Exit(common.EXIT_ERROR)


def config_diff(current: dict[str, str] | None, desired: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """Keys whose value differs: key -> (current, desired); ``name`` (Connect adds it) is ignored (pure)."""
    cur = {k: v for k, v in (current or {}).items() if k != "name"}
    keys = sorted(set(cur) | set(desired))
    return {k: (cur.get(k), desired.get(k)) for k in keys if cur.get(k) != desired.get(k)}


def _shown(key: str, value: str | None) -> str:
    if value is None:
        return "-"
    return "***" if any(h in key.lower() for h in SECRET_HINTS) and value else value


@app.command("apply")
def apply_cmd(
    connect_url: str | None = CONNECT_URL_OPTION,
    sets: list[str] | None = SET_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="show the difference, change nothing"),
    wait: float = typer.Option(60.0, "--wait", help="seconds to wait for the task to be RUNNING (0: do not wait)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Apply deploy/connect/tss-postgres.json with PUT /connectors/<name>/config (idempotent)."""
    with common.cli_errors():
        url = _url(connect_url)
        name, desired = desired_config(sets)
        if "database.hostname" not in desired:
            raise UsageError("the config has no database.hostname: no local stack found; pass "
                             "--set database.hostname=.. --set database.port=.. --set database.user=.. "
                             "--set database.dbname=..")
        try:
            current = common.http_json("GET", f"{url}/connectors/{name}/config", what="Kafka Connect")
        except common.Unreachable:
            raise
        except OpsError as exc:
            if "HTTP 404" not in exc.message:
                raise
            current = None
        diff = config_diff(current, desired)
        action = "unchanged" if not diff else ("would create" if current is None else "would update") if dry_run \
            else ("created" if current is None else "updated")
        if diff and not dry_run:
            common.http_json("PUT", f"{url}/connectors/{name}/config", desired, timeout=60.0, what="Kafka Connect")
        state = None
        if diff and not dry_run and wait > 0:
            state = _wait_running(url, name, wait)
        if as_json:
            common.print_json({"connector": name, "action": action,
                               "changes": {k: {"current": _shown(k, a), "desired": _shown(k, b)}
                                           for k, (a, b) in diff.items()}, "state": state})
            return
        out = common.console()
        out.print(f"connector {name}: [bold]{action}[/]")
        if diff:
            t = Table("key", "current", "desired")
            for k, (a, b) in diff.items():
                t.add_row(k, _shown(k, a), _shown(k, b))
            out.print(t)
        if state is not None:
            out.print(f"state: {state.state}, tasks {[t.state for t in state.tasks]}")


def _wait_running(url: str, name: str, timeout: float) -> ConnectorState:
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = get_state(url, name)
        except OpsError:
            state = ConnectorState(name, "UNKNOWN", "", [])
        if state.healthy or state.state == "FAILED" or any(t.state == "FAILED" for t in state.tasks):
            return state
        if time.monotonic() > deadline:
            return state
        time.sleep(0.5)


@app.command("restart")
def restart_cmd(
    connect_url: str | None = CONNECT_URL_OPTION,
    task: int | None = typer.Option(None, "--task", help="restart this task only"),
    all_: bool = typer.Option(False, "--all", help="restart the connector and every task, failed or not"),
    wait: float = typer.Option(60.0, "--wait", help="seconds to wait for RUNNING (0: do not wait)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Restart the connector's failed tasks (or one task, or everything)."""
    with common.cli_errors():
        if task is not None and all_:
            raise UsageError("--task and --all are exclusive")
        url = _url(connect_url)
        name = connector_name()
        before = get_state(url, name)
        if task is not None:
            if task not in {t.id for t in before.tasks}:
                raise OpsError(f"connector {name} has no task {task} (tasks {[t.id for t in before.tasks]})")
            common.http_json("POST", f"{url}/connectors/{name}/tasks/{task}/restart", what="Kafka Connect")
            restarted = [f"task {task}"]
        else:
            failed = [t.id for t in before.tasks if t.state == "FAILED"]
            if not all_ and not failed and before.state != "FAILED":
                restarted = []
            else:
                only_failed = "false" if all_ else "true"
                common.http_json("POST", f"{url}/connectors/{name}/restart?includeTasks=true&onlyFailed={only_failed}",
                                 what="Kafka Connect")
                restarted = ["connector and every task"] if all_ else [f"task {i}" for i in failed] or ["connector"]
        after = _wait_running(url, name, wait) if restarted and wait > 0 else get_state(url, name)
        if as_json:
            common.print_json({"connector": name, "restarted": restarted, "before": before, "after": after})
            return
        out = common.console()
        out.print(f"connector {name}: " + (f"restarted {', '.join(restarted)}" if restarted
                                          else "nothing failed, nothing restarted (use --all or --task N)"))
        for table in render_tables(Report(after), DEFAULT_WARN_BYTES):
            out.print(table)
        if not after.healthy:
            raise typer.Exit(common.EXIT_ERROR)
