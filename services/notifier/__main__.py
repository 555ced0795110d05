"""Composition root of the mailer: ``trainee-notify mailer run``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import typer

app = typer.Typer(no_args_is_help=True)


async def serve_health(host: str, port: int, ready: asyncio.Event, waiting: dict[str, str] | None = None,
                       stalled: Any = lambda: None, readiness: list[Any] | None = None) -> Any:
    """/healthz: 503 while ``stalled()`` names a stall (the consume loop made no progress); /readyz:
    503 until the consumer runs, saying what it waits for (``waiting['why']``), then while a dependency
    of ``readiness`` (a :class:`~services.notifier.readiness.Readiness`, once there) does not answer."""
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    async def healthz(_: web.Request) -> web.Response:
        why = stalled()
        if why:
            return web.json_response({"status": "stalled", "why": why}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if ready.is_set():
            problems = await readiness[0].problems() if readiness else []
            if problems:
                return web.json_response({"ready": False, "why": "; ".join(problems)}, status=503)
            return web.json_response({"ready": True})
        return web.json_response({"ready": False, "why": (waiting or {}).get("why", "starting")}, status=503)

    web_app = web.Application()
    web_app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)])
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def broker_answers(producer: Any) -> None:
    """Readiness: the broker answers a metadata request for the topics this producer writes."""
    if not await producer.client.force_metadata_update():
        raise ConnectionError("no broker answered a metadata request")


async def main_async() -> int:
    from aiokafka import AIOKafkaProducer

    from services import logs
    from services.kafka_security import aiokafka_kwargs, preflight
    from services.notifier.compose import Contacts
    from services.notifier.consumer import Mailer, RelayRefused, consume
    from services.notifier.ledger import Ledger
    from services.notifier.readiness import Dependency, Readiness
    from services.notifier.render import Context, Renderer
    from services.notifier.smtp import SmtpPool
    from services.settings import MailerSettings

    log = logs.get("mailer")
    settings = MailerSettings()
    ready = asyncio.Event()
    waiting: dict[str, str] = {}
    mailer_ref: list[Any] = []
    readiness: list[Any] = []

    def stalled() -> str | None:
        if not mailer_ref or not ready.is_set():
            return None
        idle = time.monotonic() - mailer_ref[0].progress
        return f"no progress for {idle:.0f} s" if idle > settings.stall_seconds else None

    runner = await serve_health(settings.metrics_host, settings.metrics_port, ready, waiting, stalled, readiness)
    from services.waiting import Stopped, until_up, where_dsn

    early_stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, early_stop.set)
    ledger = Ledger(settings.ledger_dsn, settings.instance_id, settings.ledger_lease_seconds,
                    settings.ledger_pool_size)

    async def start_producer() -> AIOKafkaProducer:
        # status events are batched (linger); a commit waits for them anyway (producer.flush)
        await preflight(settings)  # a refused login or certificate: one clear line, not a retry loop
        p = AIOKafkaProducer(**aiokafka_kwargs(settings), acks="all", enable_idempotence=True,
                             linger_ms=5, client_id=settings.instance_id)
        try:
            await p.start()
        except BaseException:
            await p.stop()
            raise
        return p

    try:
        waiting["why"] = f"waiting for the ledger at {where_dsn(settings.ledger_dsn)}"
        await until_up("ledger", where_dsn(settings.ledger_dsn), lambda: ledger.open(timeout=5), log=log,
                       stop=early_stop)
        waiting["why"] = f"waiting for the broker at {settings.kafka_bootstrap}"
        producer = await until_up("broker", settings.kafka_bootstrap, start_producer, log=log, stop=early_stop)
        waiting["why"] = "joining the consumer group"
    except Stopped:
        await ledger.close()
        await runner.cleanup()
        return 0
    pool = SmtpPool(settings)
    contacts = Contacts.from_json(settings.contacts_file) if settings.contacts_file else Contacts.default()
    renderer = Renderer(Context(contacts, settings.mail_from, settings.allow_test_domains), settings.render_workers)
    await renderer.start()
    mailer = Mailer(settings, ledger, pool, producer, contacts, renderer=renderer)
    mailer_ref.append(mailer)
    readiness.append(Readiness([
        Dependency("broker", settings.kafka_bootstrap, lambda: broker_answers(producer)),
        Dependency("ledger", where_dsn(settings.ledger_dsn), lambda: ledger.ping(timeout=2.0)),
        Dependency("relay", f"{settings.smtp_host}:{settings.smtp_port}", pool.probe,
                   every=settings.relay_check_seconds, timeout=min(10.0, settings.smtp_timeout_seconds)),
    ]))
    readiness[0].start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, mailer.stop.set)  # drain: finish what is in flight, commit, exit
    if early_stop.is_set():  # a SIGTERM that came while the producer started
        mailer.stop.set()
    log.info("mailer.started", instance=settings.instance_id, topic=settings.netchange_topic)
    code = 0
    try:
        await consume(mailer, ready)
    except RelayRefused as exc:
        ready.clear()
        log.error("mailer.relay_refused_auth", error=str(exc), linger_seconds=settings.fault_linger_seconds)
        code = 3
        # keep /metrics up a while so the alert (mailer_relay_refused_auth 1) is scraped before we exit
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(mailer.stop.wait(), settings.fault_linger_seconds)
    finally:
        await readiness[0].stop()
        await producer.stop()
        await pool.close()
        await ledger.close()
        renderer.close()
        await runner.cleanup()
        log.info("mailer.stopped", code=code)
    return code


@app.command("run")
def run() -> None:
    """Run the mailer (settings from TN_* environment variables)."""
    from services import logs

    logs.configure()
    raise typer.Exit(asyncio.run(main_async()))


if __name__ == "__main__":
    app()
