"""Running a console command with its stderr on a pseudo-terminal, as an operator's shell has it, to see
what only a terminal gets (rich's progress bars). stdout stays a pipe (the command's --json output)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import threading
from dataclasses import dataclass

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


@dataclass
class TerminalRun:
    returncode: int
    stdout: str
    terminal: str  # what the command wrote to its terminal (stderr), escape sequences removed


def run_with_a_terminal(argv: list[str], env: dict[str, str], timeout: float = 180) -> TerminalRun:
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, env={**env, "TERM": "xterm-256color", "COLUMNS": "160"}, stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    screen = bytearray()

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the command closed its terminal
                return
            if not data:
                return
            screen.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    os.close(master)
    return TerminalRun(proc.returncode, out.decode(errors="replace"), _ANSI.sub("", screen.decode(errors="replace")))
