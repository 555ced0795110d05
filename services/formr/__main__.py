"""Composition root of the Form R service: ``trainee-notify formr run`` and ``trainee-notify report formr``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from services.formr.auth import Trust
    from services.formr.rules import Rules
    from services.settings import FormrSettings

app = typer.Typer(no_args_is_help=True)
report_app = typer.Typer(no_args_is_help=True)


def now_from(settings: FormrSettings) -> Any:
    """The clock: the wall clock, or (tests) the instant written in ``TN_FORMR_CLOCK_FILE``."""
    path = settings.formr_clock_file

    def now() -> dt.datetime:
        if path is not None:
            try:
                text = Path(path).read_text().strip()
                if text:
                    ts = dt.datetime.fromisoformat(text)
                    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)
            except (OSError, ValueError):
                pass
        return dt.datetime.now(dt.UTC)

    return now


def rules_from(settings: FormrSettings) -> Rules:
    from services.formr.rules import Rules

    return Rules(horizon_weeks=settings.formr_horizon_weeks, window_months=settings.formr_window_months,
                 at_risk_weeks=settings.formr_at_risk_weeks)


def trust_from(settings: FormrSettings) -> Trust:
    from services.formr.auth import Trust

    secret = settings.formr_proxy_secret.get_secret_value() if settings.formr_proxy_secret else None
    return Trust(proxies=frozenset(settings.formr_trusted_proxies), secret=secret or None,
                 secret_header=settings.formr_secret_header, user_header=settings.formr_user_header,
                 groups_header=settings.formr_groups_header, office_groups=dict(settings.formr_office_groups))


@app.command("run")
def run() -> None:
    """Keep the read model from the CDC topics, serve the report page, send the reminders."""
    from aiohttp import web
    from psycopg_pool import ConnectionPool

    from services import kafka_security, logs
    from services.formr.consumer import ReadModelConsumer, topics_of
    from services.formr.web import OfficeCache, build_web
    from services.settings import FormrSettings

    logs.configure()
    log = logs.get("formr")
    settings = FormrSettings()
    # made once the broker has let this client in (its clients connect as they are made: a refused login
    # would be logged by librdkafka itself, line after line, before the one clear line)
    consumers: list[ReadModelConsumer] = []
    failed: list[BaseException] = []
    db_up = threading.Event()
    broker_up = threading.Event()

    def consume() -> None:
        try:
            consumers[0].run()
        except BaseException as exc:
            failed.append(exc)
            log.exception("formr.consumer.failed")

    import psycopg

    from services.formr.store import ensure_schema
    from services.waiting import Stopped, until_up, where_dsn

    database = where_dsn(settings.formr_dsn)

    def prepare() -> None:
        # bounded: a lock held elsewhere is an attempt that failed (retried), not a wait for ever
        with psycopg.connect(settings.formr_dsn, autocommit=True, connect_timeout=5,
                             options="-c lock_timeout=5000 -c statement_timeout=30000") as conn:
            ensure_schema(conn)  # before the page's first query

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        thread = threading.Thread(target=consume, name="formr-consumer", daemon=True)
        pool: ConnectionPool[Any] = ConnectionPool(settings.formr_dsn, min_size=1, max_size=4,
                                                   kwargs={"autocommit": True}, open=False)
        now = now_from(settings)
        rules = rules_from(settings)

        def ready() -> str | None:
            if not db_up.is_set():
                return f"waiting for the database at {database}"
            if not broker_up.is_set():
                return f"waiting for the broker at {settings.kafka_bootstrap}"
            if not thread.is_alive():
                return "the read model's consumer stopped"
            return None if consumers[0].synced.is_set() else "the read model is catching up with the change topics"

        def stalled() -> str | None:
            if not (db_up.is_set() and broker_up.is_set()):
                return None  # waiting for the database or the broker is not a stall
            if not thread.is_alive():
                return "the read model's consumer stopped"
            idle = consumers[0].idle()
            if idle <= settings.stall_seconds:
                return None
            return f"the read model's consumer made no progress for {idle:.0f} s"

        runner = web.AppRunner(build_web(OfficeCache(pool), trust_from(settings), rules, now, ready, stalled),
                               access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.formr_web_host, settings.formr_web_port)
        await site.start()
        log.info("formr.web.start", host=settings.formr_web_host, port=settings.formr_web_port)
        try:  # /healthz answers meanwhile; /readyz says what it waits for
            await until_up("database", database, lambda: asyncio.to_thread(prepare), log=log, stop=stop)
        except Stopped:
            await runner.cleanup()
            return 0
        pool.open()
        db_up.set()
        try:  # over TLS or SASL a refused login or certificate stops here with one line (exit 2)
            await kafka_security.wait_for_broker(settings, log, stop)
        except Stopped:
            await runner.cleanup()
            pool.close()
            return 0
        consumer = ReadModelConsumer(kafka=settings, group_id=settings.formr_group_id,
                                     topics=topics_of(settings.cdc_topic_prefix),
                                     dlq_topic=settings.cdc_dlq_topic, dsn=settings.formr_dsn)
        consumers.append(consumer)
        broker_up.set()
        thread.start()
        tasks: list[asyncio.Task[Any]] = []
        if settings.formr_reminders:
            from services.formr.remind import reminder_loop

            tasks.append(asyncio.create_task(reminder_loop(settings, pool, rules, now, stop,
                                                          consumer.caught_up.is_set)))
        while not stop.is_set() and thread.is_alive() and not any(t.done() for t in tasks):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        code = 0
        for t in tasks:
            if t.done() and t.exception() is not None:
                log.error("formr.reminders.failed", error=repr(t.exception()))
                code = 1
            t.cancel()
        consumer.stopping.set()
        await runner.cleanup()
        await asyncio.to_thread(thread.join, 15)
        pool.close()
        return 1 if failed or code else 0

    raise typer.Exit(asyncio.run(main()))


@report_app.command("formr")
def report_formr(
    local_office: Annotated[list[str] | None, typer.Option("--local-office",
                                                           help="a local office (repeat); default: all")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv, html or json")] = "html",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
    today: Annotated[str | None, typer.Option("--today", help="the day of the report (YYYY-MM-DD)")] = None,
) -> None:
    """The Form R before ARCP report, from the read model (schema formr)."""
    import psycopg

    from services.formr import report
    from services.formr.rules import local_date
    from services.formr.store import load_rows
    from services.settings import FormrSettings

    if fmt not in ("csv", "html", "json"):
        print("--format must be csv, html or json", file=sys.stderr)
        raise typer.Exit(2)
    local_office = local_office or []
    settings = FormrSettings()
    rules = rules_from(settings)
    day = dt.date.fromisoformat(today) if today else local_date(now_from(settings)(), rules.zone)
    with psycopg.connect(settings.formr_dsn, autocommit=True) as conn:
        rows = load_rows(conn, local_office or None, day, rules)
    if fmt == "csv":
        text = report.to_csv(rows)
    elif fmt == "json":
        text = report.to_json(rows, day).decode()
    else:
        offices = sorted(set(local_office) or {r.local_office for r in rows if r.local_office})
        text = report.to_html(rows, report.Page(
            user="command line", offices=offices, office=local_office[0] if len(local_office) == 1 else None,
            programmes=sorted({r.programme_name for r in rows if r.programme_name}), programme=None, today=day))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


if __name__ == "__main__":
    app()
