"""Structured logs: JSON lines when not on a terminal, readable key=value on one. Ids only, never
personal data: call sites bind trainee ids, record ids and notification ids, nothing else."""

from __future__ import annotations

import logging
import logging.config
import os
import sys
from typing import Any

import structlog


def configure(level: str | None = None, *, json: bool | None = None) -> None:
    level = (level or os.environ.get("TN_LOG_LEVEL", "INFO")).upper()
    if json is None:
        json = os.environ.get("TN_LOG_FORMAT", "json" if not sys.stderr.isatty() else "console") == "json"
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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(stdlib_config(level, json=json))


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
