"""The mailer's readiness beyond its own loop: do the broker, the ledger and the relay answer?

Each dependency is checked in the background, once per its interval (the relay less often: each
check is a connection of its own, with TLS and login as configured), with a timeout; ``/readyz``
answers at once from the last answers: 503 naming each dependency that did not answer, with host and
port and the kind of failure, never a credential. A change of answer is logged once (as
``mailer.dependency``). A relay that does not answer makes the mailer unready (sends wait and retry
meanwhile, nothing is lost); in Kubernetes that also holds back a rolling deploy until it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from services import logs

log = logs.get("mailer")


@dataclass
class Dependency:
    name: str  # "ledger", "relay", "broker"
    where: str  # host:port, for people
    check: Callable[[], Awaitable[object]]
    every: float = 5.0  # seconds between checks
    timeout: float = 3.0
    checked_at: float = float("-inf")
    problem: str | None = None


class Readiness:
    def __init__(self, dependencies: Sequence[Dependency]) -> None:
        self.dependencies = list(dependencies)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="readiness")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def round(self) -> None:
        """Check the dependencies that are due."""
        now = time.monotonic()
        due = [d for d in self.dependencies if now - d.checked_at >= d.every]
        await asyncio.gather(*(self._check(d) for d in due))

    async def _run(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(1.0)

    async def problems(self) -> list[str]:
        """What did not answer at its last check, one phrase each (empty: all answered)."""
        return [d.problem for d in self.dependencies if d.problem]

    async def _check(self, d: Dependency) -> None:
        try:
            await asyncio.wait_for(d.check(), d.timeout)
            problem = None
        except TimeoutError:
            problem = f"{d.name} at {d.where} not answering (no reply in {d.timeout:g} s)"
        except Exception as exc:  # noqa: BLE001 - any failure of the check is the answer
            problem = f"{d.name} at {d.where} not answering ({type(exc).__name__})"
        d.checked_at = time.monotonic()
        if problem != d.problem:
            if problem:
                log.warning("mailer.dependency", dependency=d.name, at=d.where, ok=False, problem=problem)
            else:
                log.info("mailer.dependency", dependency=d.name, at=d.where, ok=True)
        d.problem = problem
