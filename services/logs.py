"""Structured logs: JSON lines when not on a terminal, readable key=value on one. Ids only, never
personal data: call sites bind trainee ids, record ids and notification ids, nothing else."""

from __future__ import annotations

import logging
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
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def get(name: str) -> Any:
    return structlog.get_logger(name)
