"""Composition root of the aggregator: ``trainee-notify aggregator run``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from services.settings import AggregatorSettings

app = typer.Typer(no_args_is_help=True)


def ensure_topics(settings: AggregatorSettings) -> int | None:
    """Create every declared topic that is missing and set the declared configs (idempotent: what
    ``topics apply`` does) before faust subscribes: a topic missing at subscription time is ignored by
    faust for the life of the worker, and a changelog faust creates itself is unknown to its consumer
    until a metadata refresh. Returns the changelog's partition count as the broker has it."""
    from services.topics import apply_topics

    for change in apply_topics(settings):
        if change.topic == settings.changelog_topic() and change.action == "partitions-differ":
            from services import logs

            logs.get("aggregator").error("aggregator.changelog_partitions_differ", topic=change.topic,
                                          detail=change.detail)
            return int(change.detail.split()[1])  # "has N partitions, declared M ..."
    return settings.topic_partitions


@app.command("run")
def run() -> None:
    """Run the Faust aggregator (settings from TN_* environment variables)."""
    import asyncio
    import gc

    import faust

    from services import kafka_security, logs
    from services.netchange.app import build_app
    from services.netchange.watermark import FileClock, WallClock
    from services.settings import AggregatorSettings

    level, json_logs = logs.configure()
    settings = AggregatorSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # started before its broker (a deploy, a node restart): wait for it, each attempt logged; a refused
    # login or certificate stops here with one line (exit 2)
    try:
        asyncio.run(kafka_security.wait_for_broker(settings, logs.get("aggregator")))
    except KeyboardInterrupt:  # Ctrl-C while waiting: stop as asked, without a traceback
        raise SystemExit(130) from None
    changelog_partitions = ensure_topics(settings)
    clock = FileClock(settings.clock_file) if settings.clock_file else WallClock()
    faust_app = build_app(settings, clock, changelog_partitions)
    # the worker keeps many long-lived objects (faust, aiokafka, decoded states): a young-generation
    # collection every 700 allocations walks them far too often; what is loaded now is never garbage
    gc.set_threshold(50_000, 20, 20)
    gc.freeze()
    worker = faust.Worker(faust_app, loglevel=level, quiet=True,
                          logging_config=logs.stdlib_config(level, json=json_logs))
    worker.execute_from_commandline()


if __name__ == "__main__":
    app()
