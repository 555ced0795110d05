"""The one console script, ``trainee-notify``: a subcommand per job.

Sub-apps are imported lazily so that ``trainee-notify aggregate`` never pays for faust/aiokafka
imports, and a broken piece cannot break unrelated commands. A subcommand whose module cannot be
imported is never dropped silently: invoking it (or ``--help``) prints which module failed and why,
and exits with status 1.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from typing import Any, cast

import typer

app = typer.Typer(help="Daily training-record change notifications for doctors in training.",
                  no_args_is_help=True, add_completion=False)

# name -> (module, attribute, help). The attribute is a typer.Typer (a group of commands) or a function
# (one command).
_SUBAPPS: dict[str, tuple[str, str, str]] = {
    "stack": ("services.devstack.cli", "app", "Start, stop and inspect the local no-Docker stack."),
    "topics": ("services.topics", "app", "Declare and apply the Kafka topics; lag and end offsets."),
    "demo": ("services.demo.cli", "app", "Run the end-to-end demo on the local stack."),
    "aggregator": ("services.netchange.__main__", "app", "The Faust aggregator service."),
    "mailer": ("services.notifier.__main__", "app", "The mailer service."),
    "formr": ("services.formr.__main__", "app", "The Form R service: read model, report page, reminders."),
    "report": ("services.formr.__main__", "report_app", "Reports from the command line (formr: Form R before ARCP)."),
    # operator commands (docs/runbook.md)
    "status": ("services.opsctl.status", "status",
               "One screen: groups and lag, watermark, digests, dead letters, connector."),
    "tail": ("services.opsctl.tail", "tail", "Decoded records of a topic (JSON envelopes, Avro records)."),
    "trainee": ("services.opsctl.timeline", "trainee", "One trainee's timeline: changes, records, ledger, deliveries."),
    "preview": ("services.opsctl.preview", "preview", "Render the email of a net-change record."),
    "reset-offsets": ("services.opsctl.offsets", "reset_offsets",
                      "Move a consumer group's offsets (dry run until --execute)."),
    "resend": ("services.opsctl.resend", "resend", "Send digests again, audited (dry run until --execute)."),
    "deadletter": ("services.opsctl.deadletter", "app", "List, show and retry dead-lettered records."),
    "connector": ("services.opsctl.connector", "app", "The Debezium connector: status, apply, restart."),
}


class SubcommandImportError(RuntimeError):
    pass


def _load(name: str) -> object:
    module, attr, _ = _SUBAPPS[name]
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as exc:
        raise SubcommandImportError(f"trainee-notify: the '{name}' command cannot be loaded: "
                                    f"{module}.{attr}: {type(exc).__name__}: {exc}") from exc


def _register() -> None:
    wanted = sys.argv[1] if len(sys.argv) > 1 else None
    for name, (_, _, help_) in _SUBAPPS.items():
        if wanted != name:
            # listed in --help without importing
            app.add_typer(typer.Typer(help=help_), name=name, help=help_)
            continue
        sub = _load(name)
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=name, help=help_)
        else:
            app.command(name, help=help_)(cast(Callable[..., Any], sub))  # the table names a command function


@app.command("aggregate")
def aggregate_cmd(
    events: str = typer.Argument(..., metavar="EVENTS.jsonl",
                                 help="Debezium envelope values, one per line; - for stdin"),
) -> None:
    """Run the net-change core over a file of Debezium envelopes; print one record per line."""
    from services.netchange.batch import run_batch

    raise typer.Exit(run_batch(events))


def settings_error(exc: Exception) -> str:
    """A settings ValidationError for people: each variable's name and what is wrong with its value
    (never the value itself: it may be a secret)."""
    lines = ["trainee-notify: the configuration is not valid:"]
    for err in exc.errors():  # type: ignore[attr-defined]
        loc = err.get("loc") or ()
        field = str(loc[0]).upper() if loc else ""
        name = (field if field.startswith("TN_") else f"TN_{field}") if field else "settings"  # an alias: as is
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"  {name}: {msg}")
    return "\n".join(lines)


def unparsable_setting(exc: Exception) -> str:
    """pydantic-settings' "error parsing value for field "x" ...": the variable named, not the value."""
    found = re.search(r'field "([^"]+)"', str(exc))
    name = f"TN_{found.group(1).upper()}" if found else "a TN_ variable"
    why = type(exc.__cause__).__name__ if exc.__cause__ is not None else "unreadable"
    return (f"trainee-notify: the configuration is not valid:\n  {name}: cannot be read ({why}); "
            "lists and maps are JSON, e.g. [\"a\", \"b\"] or {\"k\": \"v\"}")


def main() -> None:
    from pydantic import ValidationError

    try:
        _register()
    except SubcommandImportError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
    from pydantic_settings import SettingsError

    try:
        app()  # typer re-raises what a command raised (its hook would print a traceback)
    except ValidationError as exc:
        print(settings_error(exc), file=sys.stderr)
        raise SystemExit(2) from None
    except SettingsError as exc:  # a value that is not even JSON where JSON is expected (lists, maps)
        print(unparsable_setting(exc), file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as exc:
        from services.waiting import Fatal

        if not isinstance(exc, Fatal):
            raise
        # a configuration fault no retry mends (services.kafka_security: a refused login or certificate)
        print(f"trainee-notify: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
