"""``trainee-notify stack up|down|status|env|fetch``: the local no-Docker stack."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog
import typer
from rich.console import Console
from rich.table import Table

from services.devstack.errors import StackError

T = TypeVar("T")

app = typer.Typer(help="Start, stop and inspect the local no-Docker stack.", no_args_is_help=True,
                  add_completion=False)
console = Console()

ScratchOpt = typer.Option(None, "--scratch", help="state, data and logs (default: .stack/ in the repo)")


def _scratch(path: Path | None) -> Path:
    from services.devstack.stack import DEFAULT_SCRATCH

    return path or DEFAULT_SCRATCH


def _logs_to_stderr() -> None:
    if not structlog.is_configured():
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; a StackError becomes one line on stderr and exit status 1 (no traceback)."""
    try:
        return fn()
    except StackError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("up")
def up_cmd(scratch: Path | None = ScratchOpt,
           connect: bool = typer.Option(True, "--connect/--no-connect",
                                        help="also run Kafka Connect + Debezium")) -> None:
    """Start PostgreSQL, Kafka and Kafka Connect (or show the running stack) and print the endpoints."""
    from services.devstack.stack import up

    _logs_to_stderr()
    info = _guard(lambda: up(_scratch(scratch), with_connect=connect))
    table = Table("endpoint", "value", title="trainee-notify local stack")
    table.add_row("kafka bootstrap", info.bootstrap)
    table.add_row("kafka connect", info.connect_url or "(not started)")
    table.add_row("connector", info.connector or "-")
    table.add_row("postgres", info.pg_dsn)
    table.add_row("scratch / logs", f"{info.scratch}  ({info.scratch / 'logs'})")
    console.print(table)
    if info.reused:
        console.print(f"already running (started in {info.started_in_s} s)")
    else:
        cache = "cold cache: jars fetched" if info.jars_fetched else "warm cache"
        console.print(f"up in {info.started_in_s} s ({cache})")
    console.print(f"export TN_KAFKA_BOOTSTRAP={info.bootstrap}")


@app.command("down")
def down_cmd(scratch: Path | None = ScratchOpt,
             purge: bool = typer.Option(False, "--purge",
                                        help="also delete the scratch dir (data and logs)")) -> None:
    """Stop every process of the stack (nothing to do if it is not running)."""
    from services.devstack.stack import down

    _logs_to_stderr()
    stopped = _guard(lambda: down(_scratch(scratch), purge=purge))
    console.print("stack stopped" if stopped else "stack was not running")


@app.command("status")
def status_cmd(scratch: Path | None = ScratchOpt) -> None:
    """Show each component, its pid and endpoint; exit status 1 when something is not running."""
    from services.devstack.stack import status

    st = _guard(lambda: status(_scratch(scratch)))
    if st.info is None:
        console.print("stack is not running")
        raise typer.Exit(1)
    table = Table("component", "state", "pid", "endpoint", "detail")
    for c in st.components:
        state = "[green]running[/green]" if c.running else "[red]down[/red]"
        table.add_row(c.name, state, str(c.pid or ""), c.endpoint, c.detail)
    console.print(table)
    raise typer.Exit(0 if st.running else 1)


@app.command("env")
def env_cmd(scratch: Path | None = ScratchOpt) -> None:
    """Print `export` lines for the running stack (eval "$(trainee-notify stack env)")."""
    from services.devstack.stack import status

    st = status(_scratch(scratch))
    if st.info is None:
        typer.echo("error: stack is not running: run `trainee-notify stack up`", err=True)
        raise typer.Exit(1)
    for key, value in st.info.env().items():
        typer.echo(f"export {key}={shlex.quote(value)}")


@app.command("fetch")
def fetch_cmd() -> None:
    """Resolve the Kafka and Debezium jars into the cache (no-op when cached)."""
    from services.devstack.stack import prefetch

    _logs_to_stderr()
    jars = _guard(prefetch)
    console.print(f"kafka libs: {jars.kafka_libs}\nplugin.path: {jars.plugin_path}"
                  f"\n{'fetched' if jars.fetched else 'already cached'}")
