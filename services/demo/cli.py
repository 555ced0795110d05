"""``trainee-notify demo [run|stop]``: the whole pipeline on this machine, end to end.

``run`` (the default) brings up the local stack and MailDev, seeds generated trainees, starts the
aggregator and the mailer with one-minute days, plays a scripted day of edits, waits for the day to
close and the emails to arrive, then prints the URLs and expected-versus-received per trainee.
Everything it starts is recorded under ``.stack/``; ``stop`` ends it all. Both are idempotent.
Output names trainees by id only.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from services.demo import formr_demo, maildev, runner
from services.demo.generator import generate
from services.demo.load import load, read_population, row_counts
from services.demo.script import DayScript, Step, plan_day, play
from services.devstack.errors import StackError
from services.devstack.proc import LOOPBACK

app = typer.Typer(help="Run the end-to-end demo on the local stack.", add_completion=False)
console = Console()
ScratchOpt = typer.Option(None, "--scratch", help="state, data and logs (default: .stack/ in the repo)")


def _scratch(path: Path | None) -> Path:
    from services.devstack.stack import DEFAULT_SCRATCH

    return (path or DEFAULT_SCRATCH).resolve()


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


# ---------------------------------------------------------------------------------------------- steps

def _stack_up(scratch: Path, *, with_connect: bool) -> Any:
    from services.devstack.stack import up
    from services.settings import KafkaSettings
    from services.topics import apply_topics

    what = "Kafka Connect with Debezium" if with_connect else "PostgreSQL and Kafka (first run fetches jars)"
    with console.status(f"Starting {what}..."):
        info = up(scratch, with_connect=with_connect)
        apply_topics(KafkaSettings(kafka_bootstrap=info.bootstrap))
    return info


def _bring_up_and_seed(scratch: Path, trainees: int, seed: int, prefix: str) -> Any:
    """Seed before Debezium starts, so the population reaches Kafka as snapshot reads (which never
    notify) rather than as a thousand inserts; a stack already capturing an empty database is restarted."""
    from services.devstack.stack import down, status

    current = status(scratch).info
    if current is not None and current.connect_pid is not None and _is_empty(current.pg_dsn):
        console.print("[yellow]The stack runs Debezium on an empty database: "
                      "restarting it so seeding is a snapshot.[/]")
        down(scratch)
    info = _stack_up(scratch, with_connect=False)
    counts = _seed(info, trainees, seed)
    info = _stack_up(scratch, with_connect=True)
    console.print(f"[green]stack up[/]: Kafka {info.bootstrap}, Connect {info.connect_url}")
    _wait_snapshot(info, prefix, counts)
    return info


def _is_empty(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            return row_counts(conn)["personal_details"] == 0
    except psycopg.Error:
        return False


def _seed(info: Any, trainees: int, seed: int) -> dict[str, int]:
    with psycopg.connect(info.pg_dsn) as conn:
        counts = row_counts(conn)
        if counts["personal_details"]:
            console.print(f"[green]database already seeded[/]: {counts['personal_details']:,} trainees")
            return counts
        started = time.perf_counter()
        with console.status(f"Generating and loading {trainees:,} trainees..."):
            counts = load(conn, generate(trainees, seed, as_of=date.today()))
    console.print(f"[green]seeded[/] {sum(counts.values()):,} rows for {trainees:,} trainees "
                  f"in {time.perf_counter() - started:.1f} s")
    return counts


def _wait_snapshot(info: Any, prefix: str, counts: dict[str, int]) -> None:
    with _progress() as progress:
        task = progress.add_task("Debezium snapshot into Kafka", total=sum(counts.values()))
        ok = runner.wait_snapshot(info.bootstrap, prefix, counts,
                                  on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    if not ok:
        raise StackError("Debezium's snapshot did not reach Kafka in time (see the connect log in the scratch dir)")


def _start_services(scratch: Path, info: Any, md: maildev.MailDev) -> dict[str, runner.ServiceProc]:
    started: dict[str, runner.ServiceProc] = {}
    for name in runner.SERVICES:
        if not runner.available(name):
            console.print(f"[yellow]{name} is not in this checkout yet: not started[/]")
            continue
        started[name] = runner.start_service(name, scratch, bootstrap=info.bootstrap, smtp_port=md.smtp_port,
                                             pg_dsn=info.pg_dsn)
    with console.status("Waiting for the services to be ready..."):
        deadline = time.monotonic() + 120
        for name, svc in started.items():
            while not runner.http_ok(svc.url + "/readyz"):
                if time.monotonic() > deadline or not runner.running(scratch).get(name):
                    raise StackError(f"{name} did not become ready (see {svc.log_file})")
                time.sleep(1.0)
    for name, svc in started.items():
        console.print(f"[green]{name}[/] running, pid {svc.pid}, log {svc.log_file}")
    if "formr" in started:
        started[runner.PROXY] = formr_demo.start_report_proxy(scratch, started["formr"])
        formr_demo.first_reminder_pass(started["formr"], console)
    return started


def _play_day(info: Any, md: maildev.MailDev, seed: int) -> tuple[DayScript, float]:
    wait = runner.seconds_to_fresh_window(time.time())
    if wait:
        with console.status(f"Waiting {wait:.0f} s for a fresh one-minute day so the script fits in one..."):
            time.sleep(wait)
    maildev.clear(md)
    started = time.time()
    today = datetime.fromtimestamp(started, UTC).date()
    with psycopg.connect(info.pg_dsn, autocommit=True) as conn:
        script = plan_day(read_population(conn, as_of=today), day=today, seed=seed,
                          run_label=datetime.fromtimestamp(started, UTC).isoformat())
        with _progress() as progress:
            task = progress.add_task("Playing the scripted day", total=len(script.steps))

            def advance(step: Step) -> None:
                progress.update(task, advance=1, description=f"Step: {step.name}")

            play(conn, script, on_step=advance)
    return script, started


Seen = dict[str, list[tuple[str, str, str | None]]]


def _await_results(info: Any, md: maildev.MailDev, script: DayScript, started: float, timeout: float,
                   services: dict[str, runner.ServiceProc]) -> tuple[Seen | None, list[dict[str, Any]] | None]:
    """Wait for the day to close, then for its net-change records and (with a mailer) the emails."""
    from services.settings import KafkaSettings

    topic = KafkaSettings().netchange_topic
    window = runner.window_start(started)
    label = runner.day_label(window)
    close_at = window + runner.DAY_SECONDS + runner.GRACE_SECONDS
    expect_records = {t for t, changes in script.expected().items() if changes}
    expect_mails = (sum(script.expected_emails().values())
                    + (sum(script.reminders.values()) if "formr" in services else 0))
    seen: Seen | None = None
    got: list[dict[str, Any]] | None = None
    with _progress() as progress:
        day = progress.add_task(f"Day {label} closes (+{runner.GRACE_SECONDS} s grace)",
                                total=max(1, int(close_at - started)))
        records = (progress.add_task("Net-change records", total=len(expect_records))
                   if "aggregator" in services else None)
        mails = progress.add_task("Emails received", total=expect_mails) if "mailer" in services else None
        deadline = close_at + timeout
        while time.time() < deadline:
            progress.update(day, completed=min(int(close_at - started), int(time.time() - started)))
            if time.time() < close_at:
                time.sleep(1.0)
                continue
            if records is not None:
                seen = runner.netchange_seen(info.bootstrap, topic, label, set(script.expected()))
                progress.update(records, completed=len(expect_records & set(seen)))
            if mails is not None:
                got = maildev.emails(md)
                progress.update(mails, completed=len(got))
            done_records = records is None or expect_records <= set(seen or {})
            done_mails = mails is None or len(got or []) >= expect_mails
            if done_records and done_mails:
                break
            time.sleep(1.0)
    return seen, got


# ---------------------------------------------------------------------------------------------- output

def _received_counts(script: DayScript, received: list[dict[str, Any]], reminders: bool = False) -> dict[str, int]:
    """Digests (or, with ``reminders``, Form R reminders) received per trainee, matched by recipient
    address (old and new addresses count)."""
    by_address = script.trainee_of_address()
    counts: dict[str, int] = {}
    for message in received:
        if formr_demo.is_reminder(message) != reminders:
            continue
        for address in maildev.recipients(message):
            tid = by_address.get(address)
            if tid:
                counts[tid] = counts.get(tid, 0) + 1
    return counts


def mismatches(script: DayScript, received: list[dict[str, Any]]) -> list[str]:
    """Trainees whose received email count differs from the expected one."""
    counts = _received_counts(script, received)
    return [tid for tid, want in script.expected_emails().items() if counts.get(tid, 0) != want]


def _fmt(changes: list[tuple[str, str, str | None]]) -> str:
    return ", ".join(f"{e} {k}" + (f" (suppressed: {r})" if r else "") for e, k, r in sorted(changes)) or "nothing"


def net_change_differs(script: DayScript, seen: Seen) -> list[str]:
    """Trainees whose net-change record differs from the expected changes (kinds and suppression)."""
    out = []
    for tid, changes in script.expected().items():
        want = sorted((c.entity, c.kind, c.suppressed) for c in changes)
        if sorted(seen.get(tid, [])) != want:
            out.append(tid)
    return out


def _summary(script: DayScript, seen: Seen | None, received: list[dict[str, Any]] | None) -> Table:
    counts = _received_counts(script, received or [])
    steps = {tid: s.name for s in script.steps for tid in s.expected}
    expected = script.expected()
    bad = set(net_change_differs(script, seen) if seen is not None else []) | set(
        mismatches(script, received) if received is not None else [])
    table = Table(title="Expected vs seen, per trainee (ids only)")
    for col in ("trainee", "step", "expected net change", "net change seen", "emails expected", "emails received", ""):
        table.add_column(col)
    for tid, want in script.expected_emails().items():
        changes = _fmt([(c.entity, c.kind, c.suppressed) for c in expected[tid]])
        mark = "" if seen is None and received is None else ("[red]differs[/]" if tid in bad else "[green]ok[/]")
        table.add_row(tid, steps[tid], changes, "-" if seen is None else _fmt(seen.get(tid, [])), str(want),
                      "-" if received is None else str(counts.get(tid, 0)), mark)
    return table


def _urls(info: Any, md: maildev.MailDev, services: dict[str, runner.ServiceProc]) -> Table:
    table = Table(title="Where to look", show_header=False)
    table.add_row("MailDev inbox", md.web_url)
    if runner.PROXY in services:
        table.add_row("Form R report (demo sign-in)", services[runner.PROXY].url + "/")
        table.add_row("Form R report, direct", f"{services['formr'].url}/ (401: only through the sign-in proxy)")
    table.add_row("Kafka bootstrap", info.bootstrap)
    table.add_row("Kafka Connect REST", f"{info.connect_url}/connectors/{info.connector or 'tss-postgres'}/status")
    table.add_row("PostgreSQL", info.pg_dsn)
    for name, svc in services.items():
        if name in ("aggregator", "mailer"):
            table.add_row(f"{name} /metrics", f"{svc.url}/metrics")
    return table


# ---------------------------------------------------------------------------------------------- commands

TraineesOpt = typer.Option(1000, min=1, help="trainees to generate")
SeedOpt = typer.Option(42, help="generator and script seed")
WaitOpt = typer.Option(120.0, help="seconds to wait for records and emails after the day closes")
PlayOpt = typer.Option(True, "--play/--no-play", help="play the scripted day")


@app.callback(invoke_without_command=True)
def main(ctx: typer.Context, scratch: Path | None = ScratchOpt, trainees: int = TraineesOpt, seed: int = SeedOpt,
         wait: float = WaitOpt, play_day: bool = PlayOpt) -> None:
    """Run the demo (``run``) unless another command is given."""
    if ctx.invoked_subcommand is None:
        run_cmd(scratch=scratch, trainees=trainees, seed=seed, wait=wait, play_day=play_day)


@app.command("run")
def run_cmd(scratch: Path | None = ScratchOpt, trainees: int = TraineesOpt, seed: int = SeedOpt,
            wait: float = WaitOpt, play_day: bool = PlayOpt) -> None:
    """Bring everything up, play a scripted day of edits and show what was emailed."""
    from services.settings import KafkaSettings

    where = _scratch(scratch)
    try:
        info = _bring_up_and_seed(where, trainees, seed, KafkaSettings().cdc_topic_prefix)
        md = maildev.start(where)
        console.print(f"[green]MailDev[/] inbox {md.web_url}, SMTP {LOOPBACK}:{md.smtp_port}")
        services = _start_services(where, info, md)
        if not play_day:
            console.print(_urls(info, md, services))
            return
        script, started = _play_day(info, md, seed)
        seen, received = _await_results(info, md, script, started, wait, services)
    except StackError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(_urls(info, md, services))
    console.print(_summary(script, seen, received))
    formr_bad: list[str] = []
    if runner.PROXY in services and received is not None:
        left = formr_demo.still_at_risk(script, services[runner.PROXY])
        reminded = _received_counts(script, received, reminders=True)
        console.print(formr_demo.table(script, reminded, left))
        formr_bad = left + formr_demo.reminder_mismatches(script, reminded)
    _verdict(script, seen, received, formr_bad)


def _verdict(script: DayScript, seen: Seen | None, received: list[dict[str, Any]] | None,
             formr_bad: list[str] | None = None) -> None:
    missing = [name for name in runner.SERVICES if not runner.available(name)]
    if missing:
        console.print(f"[yellow]Not in this checkout yet: {', '.join(missing)} (its column shows '-').[/]")
    bad = set(net_change_differs(script, seen) if seen is not None else []) | set(
        mismatches(script, received) if received is not None else []) | set(formr_bad or [])
    if seen is None and received is None:
        return
    if bad:
        console.print(f"[red]{len(bad)} trainee(s) differ from what the script expects.[/]")
        raise typer.Exit(1)
    console.print("[green]Everything as expected.[/]")


@app.command("proxy", hidden=True)
def proxy_cmd(upstream: str = typer.Option(..., help="the report service, e.g. http://127.0.0.1:8088"),
              port: int = typer.Option(..., help="loopback port to listen on"),
              groups: str = typer.Option(..., help="the demo programme manager's local offices, "
                                                   "comma-separated")) -> None:
    """The demo's stand-in for the sign-in proxy in front of the Form R report (loopback only)."""
    from services.demo import proxy

    proxy.run(upstream, port, groups)


@app.command("stop")
def stop_cmd(scratch: Path | None = ScratchOpt) -> None:
    """Stop the services, MailDev and the stack (no-op for what is not running)."""
    from services.devstack.stack import down

    where = _scratch(scratch)
    for name in runner.stop_services(where):
        console.print(f"stopped {name}")
    if where.exists() and maildev.stop(where):
        console.print("stopped MailDev")
    console.print("stack stopped" if down(where) else "stack was not running")
