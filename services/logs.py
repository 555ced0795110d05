"""Structured logs: JSON lines when not on a terminal, readable key=value on one. Ids only, never
personal data: call sites bind trainee ids, record ids and notification ids, nothing else."""

from __future__ import annotations

import logging
import logging.config
import os
import sys
from typing import Any, TextIO, cast

import structlog


def from_env() -> tuple[str, bool]:
    """``TN_LOG_LEVEL`` (INFO) and ``TN_LOG_FORMAT`` (json, or console on a terminal)."""
    level = os.environ.get("TN_LOG_LEVEL", "INFO").upper()
    return level, os.environ.get("TN_LOG_FORMAT", "json" if not sys.stderr.isatty() else "console") == "json"


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured: a command
    run in-process (typer's test runner swaps the streams and closes its own) must not leave the
    logs writing to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str | None = None, *, json: bool | None = None) -> tuple[str, bool]:
    """Configure structlog and the stdlib loggers; returns the (level, json) it chose."""
    env_level, env_json = from_env()
    level = (level or env_level).upper()
    json = env_json if json is None else json
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level, logging.INFO)),
        # it writes and flushes, all that PrintLogger does with a file
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(stdlib_config(level, json=json))
    return level, json


def stdlib_config(level: str, *, json: bool) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` that renders the libraries' own log records (faust, aiokafka)
    like ours: JSON lines with a level and a UTC timestamp (handed to faust's Worker as well)."""
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processor": renderer,
            "foreign_pre_chain": [structlog.stdlib.add_logger_name, structlog.processors.add_log_level,
                                  structlog.processors.TimeStamper(fmt="iso", utc=True)],
        }},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "structured", "level": level,
                                 "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["default"]},
    }


def get(name: str) -> Any:
    return structlog.get_logger(name)
