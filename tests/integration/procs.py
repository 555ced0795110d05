"""Run the project's services as real processes in tests (the same console script operators run),
and an in-process SMTP server (aiosmtpd) that records what it accepted."""

from __future__ import annotations

import email
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from services.kafka_security import environment

BIN = Path(sys.executable).parent / "trainee-notify"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0  # by supervise(): exits with a restart code, each followed by a new start
    _supervised: threading.Event = field(default_factory=threading.Event)

    def supervise(self, codes: tuple[int, ...] = (3,)) -> Service:
        """Restart the process when it exits with one of ``codes``, as its supervisor does in production
        (the aggregator exits 3 after a stall). ``stop`` and ``kill`` end the supervision first."""
        self._supervised.set()

        def watch() -> None:
            while self._supervised.is_set():
                proc = self.proc
                if proc is not None and proc.poll() in codes and self._supervised.is_set():
                    self.restarts += 1
                    self.start()
                time.sleep(0.2)

        threading.Thread(target=watch, name=f"supervise-{self.name}", daemon=True).start()
        return self

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([str(BIN), *self.args], env={**os.environ, **self.env}, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self) -> None:
        """``kill -9``: no drain, no commit, no goodbye."""
        self._supervised.clear()
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        self._supervised.clear()
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def aggregator(stack: Any, scratch: Path, name: str = "aggregator", **env: str) -> Service:
    base = {**environment(stack.kafka_settings()), "TN_DATA_DIR": str(scratch / name / "data"),
            "TN_WEB_PORT": str(free_port()), "TN_TICK_SECONDS": "1", "TN_LOG_LEVEL": "INFO",
            "TN_STALL_SECONDS": "30"}
    return Service(name, ["aggregator", "run"], {**base, **env}, scratch / name / "log.txt")


def mailer(stack: Any, scratch: Path, smtp_port: int, name: str = "mailer", **env: str) -> Service:
    base = {**environment(stack.kafka_settings()), "TN_LEDGER_DSN": stack.pg_dsn, "TN_SMTP_PORT": str(smtp_port),
            "TN_SEND_IMMEDIATELY": "true", "TN_METRICS_PORT": str(free_port()), "TN_INSTANCE_ID": name,
            "TN_SMTP_RETRY_BASE_SECONDS": "0.2"}
    return Service(name, ["mailer", "run"], {**base, **env}, scratch / name / "log.txt")


@dataclass
class Inbox:
    """What the SMTP server accepted, parsed."""

    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, raw: bytes) -> None:
        with self.lock:
            self.messages.append(email.message_from_bytes(raw))

    def matching(self, pred: Callable[[Message], bool]) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if pred(m)]

    def wait_for(self, pred: Callable[[Message], bool], n: int = 1, timeout: float = 60) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(pred)
            if len(found) >= n:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{len(self.matching(pred))} of {n} expected emails within {timeout:.0f} s")


class _Handler:
    def __init__(self, inbox: Inbox, script: Callable[[Any], str | None] | None) -> None:
        self.inbox = inbox
        self.script = script

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.script is not None:
            reply = self.script(envelope)
            if reply is not None:
                return reply
        self.inbox.add(envelope.content)
        return "250 2.0.0 OK: queued"


def smtp_server(script: Callable[[Any], str | None] | None = None) -> tuple[Controller, Inbox]:
    inbox = Inbox()
    ctl = Controller(_Handler(inbox, script), hostname="127.0.0.1", port=free_port())
    ctl.start()
    return ctl, inbox


def text_of(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    return ""
