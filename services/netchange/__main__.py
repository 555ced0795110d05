"""Composition root of the aggregator: ``trainee-notify aggregator run``."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("run")
def run() -> None:
    """Run the Faust aggregator (settings from TN_* environment variables)."""
    import faust

    from services import logs
    from services.netchange.app import build_app
    from services.netchange.watermark import FileClock, WallClock
    from services.settings import AggregatorSettings

    logs.configure()
    settings = AggregatorSettings()
    clock = FileClock(settings.watermark_file) if settings.watermark_file else WallClock()
    faust_app = build_app(settings, clock)
    worker = faust.Worker(faust_app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    app()
