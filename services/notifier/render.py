"""Composing and rendering the wire bytes of an email, in-process or in worker processes.

Composition (Jinja2, CSS inlining, the ``email`` package's MIME generation) costs a few
milliseconds of CPU per email, more than everything else the mailer does for it; worker processes
keep it off the event loop (heartbeats, SMTP replies, ledger round trips stay prompt) and use
the other cores. Workers ignore SIGTERM/SIGINT (the parent drains and then shuts them down) and
exit on their own when the parent dies (kill -9).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

from services.notifier import compose
from services.notifier.plan import Kind


@dataclass(frozen=True, slots=True)
class Rendered:
    """An email ready for SMTP: the envelope recipient, its Message-ID and the message bytes."""

    to: str
    message_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Context:
    contacts: compose.Contacts
    mail_from: str
    allow_test_domains: bool


def render(ctx: Context, kind: Kind, record: dict[str, Any], message_id: str,
           copy_of: dt.datetime | None) -> Rendered | compose.Refusal:
    make = compose.compose_digest if kind is Kind.DIGEST else compose.compose_previous_address_notice
    composed = make(record, contacts=ctx.contacts, message_id=message_id, mail_from=ctx.mail_from,
                    copy_of=copy_of, allow_test_domains=ctx.allow_test_domains)
    if isinstance(composed, compose.Refusal):
        return composed
    return Rendered(composed.to, composed.message_id, compose.to_bytes(composed))


# ---------------------------------------------------------------------------------------------- workers
_worker_ctx: Context | None = None


def _orphan_watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _init_worker(ctx: Context, parent: int) -> None:
    global _worker_ctx
    _worker_ctx = ctx
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()


def _render_in_worker(kind: Kind, record: dict[str, Any], message_id: str,
                      copy_of: dt.datetime | None) -> Rendered | compose.Refusal:
    assert _worker_ctx is not None  # noqa: S101  an invariant for the type checker, not a check of input
    return render(_worker_ctx, kind, record, message_id, copy_of)


def _ready() -> int:
    return os.getpid()


class Renderer:
    """``await renderer(kind, record, message_id, copy_of)``: in ``workers`` processes, or inline (0)."""

    def __init__(self, ctx: Context, workers: int) -> None:
        self.ctx = ctx
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        if self.workers <= 0:
            return
        self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                         initargs=(self.ctx, os.getpid()))
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, _ready) for _ in range(self.workers)))

    async def __call__(self, kind: Kind, record: dict[str, Any], message_id: str,
                       copy_of: dt.datetime | None) -> Rendered | compose.Refusal:
        if self._pool is None:
            return render(self.ctx, kind, record, message_id, copy_of)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _render_in_worker, kind, record, message_id, copy_of)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
