"""The one console script, ``trainee-notify``: a subcommand per job.

Sub-apps are imported lazily so that ``trainee-notify aggregate`` never pays for faust/aiokafka
imports, and a missing optional piece cannot break unrelated commands.
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(help="Daily training-record change notifications for doctors in training.",
                  no_args_is_help=True, add_completion=False)

# name -> (module, attribute, help). Each module exposes a typer.Typer (or a function for commands).
_SUBAPPS: dict[str, tuple[str, str, str]] = {
    "stack": ("services.devstack.cli", "app", "Start, stop and inspect the local no-Docker stack."),
    "topics": ("services.topics", "app", "Declare and apply the Kafka topics."),
    "demo": ("services.demo.cli", "app", "Run the end-to-end demo on the local stack."),
    "aggregator": ("services.netchange.__main__", "app", "The Faust aggregator service."),
    "mailer": ("services.notifier.__main__", "app", "The mailer service."),
    "ops": ("services.opsctl.cli", "app", "Operator commands: topics, tail, timeline, preview, replay, resend."),
}


def _register() -> None:
    wanted = sys.argv[1] if len(sys.argv) > 1 else None
    for name, (module, attr, help_) in _SUBAPPS.items():
        if wanted not in (None, "--help", "-h", name):
            # still list it in --help without importing
            app.add_typer(typer.Typer(help=help_), name=name, help=help_)
            continue
        try:
            sub = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("services"):
                continue  # not built yet
            raise
        app.add_typer(sub, name=name, help=help_)


@app.command("aggregate")
def aggregate_cmd(
    events: str = typer.Argument(..., metavar="EVENTS.jsonl", help="Debezium envelope values, one per line; - for stdin"),
) -> None:
    """Run the net-change core over a file of Debezium envelopes; print one record per line."""
    from services.netchange.batch import run_batch

    raise typer.Exit(run_batch(events))


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
