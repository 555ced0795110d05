"""MailDev (from npm) as the demo's SMTP server with a web inbox and a REST API.

Installed once into ``${XDG_CACHE_HOME:-~/.cache}/trainee-notify/maildev`` with npm; started on free
loopback ports as a background process whose pid and ports are kept in ``<scratch>/maildev.json``;
received emails are listed through ``GET /email``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from services.devstack.errors import StackError
from services.devstack.proc import (
    LOOPBACK,
    free_port,
    pid_alive,
    port_open,
    run,
    spawn,
    stop_group,
    wait_until,
)

log = structlog.get_logger(__name__)

MAILDEV_VERSION = "2.2.1"  # 3.0.0 changed the package layout; 2.2.1 installs and runs on Node 20
STATE_FILE = "maildev.json"


@dataclass(frozen=True)
class MailDev:
    pid: int
    smtp_port: int
    web_port: int
    mail_dir: str

    @property
    def web_url(self) -> str:
        return f"http://{LOOPBACK}:{self.web_port}"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trainee-notify" / "maildev"


def _bin(root: Path) -> Path:
    return root / "node_modules" / "maildev" / "bin" / "maildev"


def ensure_installed(root: Path | None = None) -> Path:
    """Install the pinned MailDev with npm into ``root`` (the cache) unless it is there; returns its script."""
    root = root or cache_dir()
    script = _bin(root)
    installed = root / "node_modules" / "maildev" / "package.json"
    if installed.exists() and json.loads(installed.read_text()).get("version") == MAILDEV_VERSION:
        return script
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        raise StackError("MailDev needs Node.js 20+ and npm on PATH (Debian: apt-get install nodejs npm)")
    root.mkdir(parents=True, exist_ok=True)
    log.info("installing maildev", version=MAILDEV_VERSION, into=str(root))
    run([npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(root), f"maildev@{MAILDEV_VERSION}"],
        what="npm install maildev", timeout=600)
    if not script.exists():
        raise StackError(f"npm install maildev finished but {script} is missing")
    return script


def _state(scratch: Path) -> Path:
    return scratch / STATE_FILE


def current(scratch: Path) -> MailDev | None:
    """The MailDev started for ``scratch``, when it still runs."""
    try:
        md = MailDev(**json.loads(_state(scratch).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None
    return md if pid_alive(md.pid, "maildev") and port_open(md.web_port) else None


def start(scratch: Path, *, root: Path | None = None, timeout: float = 30.0) -> MailDev:
    """Start MailDev for ``scratch`` on free ports (or return the running one). Idempotent."""
    scratch = scratch.resolve()
    running = current(scratch)
    if running is not None:
        return running
    script = ensure_installed(root)
    node = shutil.which("node") or "node"
    smtp_port, web_port = free_port(), free_port()
    mail_dir = scratch / "maildev" / "mail"
    mail_dir.mkdir(parents=True, exist_ok=True)
    proc = spawn([node, str(script), "--ip", LOOPBACK, "--web-ip", LOOPBACK, "--smtp", str(smtp_port),
                  "--web", str(web_port), "--mail-directory", str(mail_dir)],
                 log_file=scratch / "logs" / "maildev.log")
    md = MailDev(pid=proc.pid, smtp_port=smtp_port, web_port=web_port, mail_dir=str(mail_dir))
    try:
        wait_until(lambda: port_open(smtp_port) and port_open(web_port), timeout=timeout, what="maildev",
                   alive=lambda: pid_alive(proc.pid), hint=f" (see {scratch / 'logs' / 'maildev.log'})")
    except StackError:
        stop_group(proc.pid, name="maildev")
        raise
    _state(scratch).write_text(json.dumps(asdict(md)))
    log.info("maildev started", pid=md.pid, smtp_port=smtp_port, web=md.web_url)
    return md


def stop(scratch: Path) -> bool:
    """Stop the MailDev of ``scratch``; False when none ran."""
    path = _state(scratch.resolve())
    try:
        md = MailDev(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return False
    alive = pid_alive(md.pid, "maildev")
    if alive:
        stop_group(md.pid, name="maildev", marker="maildev")
    path.unlink(missing_ok=True)
    return alive


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310  MailDev's http:// URL, made here
        return json.loads(resp.read().decode())


def emails(md: MailDev) -> list[dict[str, Any]]:
    """Every email MailDev holds, as its REST API gives them (newest last)."""
    data = _get(f"{md.web_url}/email")
    return list(data) if isinstance(data, list) else []


def recipients(message: dict[str, Any]) -> list[str]:
    """The envelope recipients of one MailDev email, lower case."""
    envelope = message.get("envelope") or {}
    addrs = ([r.get("address", "") for r in envelope.get("to") or []]
             or [r.get("address", "") for r in message.get("to") or []])
    return [a.lower() for a in addrs if a]


def clear(md: MailDev) -> None:
    """Delete every email in the inbox."""
    req = urllib.request.Request(f"{md.web_url}/email/all", method="DELETE")  # noqa: S310  MailDev's http:// URL, made here
    with urllib.request.urlopen(req, timeout=5.0):  # noqa: S310  MailDev's http:// URL, made here
        pass


def wait_for(md: MailDev, count: int, *, timeout: float, interval: float = 1.0) -> list[dict[str, Any]]:
    """Poll until at least ``count`` emails are in the inbox or ``timeout`` passes; returns them."""
    deadline = time.monotonic() + timeout
    got: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            got = emails(md)
        except (urllib.error.URLError, OSError):
            got = []
        if len(got) >= count:
            break
        time.sleep(interval)
    return got
