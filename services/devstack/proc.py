"""Small process helpers: free ports, waiting for a port, starting and stopping process groups."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from services.devstack.errors import StackError

log = structlog.get_logger(__name__)

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.25,
               alive: Callable[[], bool] | None = None, hint: str = "") -> None:
    """Poll ``check`` until it is true; fail with a one-line error on timeout or when ``alive`` says no."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise StackError(f"{what}: the process exited during start-up{hint}")
        time.sleep(interval)
    raise StackError(f"{what}: not ready after {timeout:.0f} s{hint}")


def spawn(argv: Sequence[str], *, log_file: Path, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (so its process group can be killed as one), output to a file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=cwd, env=env, start_new_session=True)


def _child_state(pid: int) -> bool | None:
    """For a child of this process: True while it runs, False once exited (and reaped). None otherwise."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return done == 0


def pid_alive(pid: int | None, marker: str | None = None) -> bool:
    """True when ``pid`` runs; for a process that is not our child (started by an earlier command), also
    that its command line holds ``marker`` (guards against pid reuse)."""
    if not pid:
        return False
    child = _child_state(pid)
    if child is not None:
        return child
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}:
            return False
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return marker is None or marker in cmdline


def stop_group(pid: int, *, name: str, marker: str | None = None, timeout: float = 30.0) -> None:
    """SIGTERM the process group led by ``pid``, then SIGKILL it if it has not gone within ``timeout``."""
    if not pid_alive(pid, marker):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                log.info("process stopped", component=name, pid=pid, signal=sig.name)
                return
            time.sleep(0.2)
    raise StackError(f"{name} (pid {pid}) did not stop after SIGKILL")


def run(argv: Sequence[str], *, what: str, timeout: float = 300.0, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> str:
    """Run a command to completion; a failure becomes a one-line error naming its last output line."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
                              check=False)
    except FileNotFoundError as exc:
        raise StackError(f"{what}: {exc.filename} not found") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"{what}: timed out after {timeout:.0f} s") from None
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else "no output"
        raise StackError(f"{what} failed (exit {done.returncode}): {last}")
    return done.stdout
