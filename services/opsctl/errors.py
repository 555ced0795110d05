"""Errors and exit codes of the operator commands: one line on stderr, never a traceback.

Exit codes (every ``trainee-notify`` operator command uses them; scripts may rely on them)
    ``EXIT_OK = 0``          done
    ``EXIT_ERROR = 1``       an error: unknown topic, group or trainee, a refused action, a failed call
    ``EXIT_USAGE = 2``       bad options or arguments (typer/click's own code too)
    ``EXIT_UNREACHABLE = 3`` a service could not be reached (Kafka broker, database, Connect, aggregator)

Re-exported by ``services.opsctl.common``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

F = TypeVar("F", bound=Callable[..., Any])


# --------------------------------------------------------------------------------------------- errors
class OpsError(Exception):
    """An error the operator can act on; said in one line, with an exit code."""

    code = EXIT_ERROR

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class UnknownTopic(OpsError):
    pass


class UnknownGroup(OpsError):
    pass


class UnknownTrainee(OpsError):
    pass


class UsageError(OpsError):
    code = EXIT_USAGE


class Unreachable(OpsError):
    code = EXIT_UNREACHABLE


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print ``error: <message>`` on stderr and return the ``typer.Exit`` to raise."""
    typer.echo(f"error: {one_line(message)}", err=True)
    return typer.Exit(code)


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn an ``OpsError`` (or an unexpected Kafka error) into one line on stderr and its exit code."""
    from confluent_kafka import KafkaException

    try:
        yield
    except OpsError as exc:
        raise fail(exc.message, exc.code) from None
    except KafkaException as exc:
        raise fail(f"Kafka: {exc.args[0] if exc.args else exc}") from None


def handles_errors(fn: F) -> F:
    """Decorator form of :func:`cli_errors` for typer commands."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with cli_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

