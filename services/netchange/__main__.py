"""Composition root of the aggregator: ``trainee-notify aggregator run``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from services.settings import AggregatorSettings

app = typer.Typer(no_args_is_help=True)


def ensure_resolved_topic(settings: AggregatorSettings) -> None:
    """Create the re-keyed topic before Faust subscribes: a topic missing at subscription time is
    ignored by Faust for the life of the worker ("Ignoring missing topic")."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from services.netchange.app import resolved_topic_name

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    name = resolved_topic_name(settings)
    if name in admin.list_topics(timeout=30).topics:
        return
    futures = admin.create_topics([NewTopic(name, settings.topic_partitions, settings.replication_factor,
                                            config={"retention.ms": str(7 * 86_400_000)})])
    try:
        futures[name].result(30)
    except Exception as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise


@app.command("run")
def run() -> None:
    """Run the Faust aggregator (settings from TN_* environment variables)."""
    import faust

    from services import logs
    from services.netchange.app import build_app
    from services.netchange.watermark import FileClock, WallClock
    from services.settings import AggregatorSettings

    level, json_logs = logs.configure()
    settings = AggregatorSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_resolved_topic(settings)
    clock = FileClock(settings.watermark_file) if settings.watermark_file else WallClock()
    faust_app = build_app(settings, clock)
    worker = faust.Worker(faust_app, loglevel=level, quiet=True,
                          logging_config=logs.stdlib_config(level, json=json_logs))
    worker.execute_from_commandline()


if __name__ == "__main__":
    app()
