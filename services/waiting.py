"""Waiting for a dependency at start-up: the broker, the ledger's PostgreSQL, the relay.

A service started before its broker or database (a deploy, a node restart) should wait for it and
say so, not die with a pool timeout: each failed attempt is logged with what and where (host and
port, never credentials) and retried with a capped exponential backoff until it works or the
service is asked to stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from psycopg.conninfo import conninfo_to_dict

T = TypeVar("T")


class Stopped(Exception):
    """Asked to stop while still waiting for a dependency."""


class Fatal(Exception):
    """An attempt that no retry can mend (a refused login, an untrusted certificate): raised at once."""


def where_dsn(dsn: str) -> str:
    """``host:port`` of a libpq conninfo (or URL), for logs: no user, password or database."""
    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - a malformed DSN is reported as such by psycopg itself later
        return "an unreadable DSN"
    return f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}"


async def until_up(what: str, where: str, attempt: Callable[[], Awaitable[T]], *, log: Any,
                   stop: asyncio.Event | None = None, first: float = 1.0, cap: float = 30.0) -> T:
    """``await attempt()`` until it succeeds; between failures, log and wait (1, 2, 4 ... ``cap`` s)."""
    delay, n = first, 0
    while True:
        n += 1
        try:
            return await attempt()
        except Fatal:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to reach it: wait and try again
            log.warning("waiting_for_dependency", dependency=what, at=where, attempt=n, retry_in_seconds=delay,
                        error=type(exc).__name__)
        if stop is not None:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                raise Stopped(what)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(delay)
        delay = min(cap, delay * 2)
