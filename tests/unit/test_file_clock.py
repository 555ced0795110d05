"""The tests' file clock (services/netchange/watermark.py): what the file says, read at most every ttl."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from services.netchange.watermark import FileClock


def test_the_file_is_the_clock_and_a_change_is_seen_within_the_ttl(tmp_path: Path, monkeypatch: Any) -> None:
    ticks = iter([100.0, 100.04, 100.2])
    monkeypatch.setattr("services.netchange.watermark.time.monotonic", lambda: next(ticks))
    f = tmp_path / "clock"
    f.write_text("1000.5")
    clock = FileClock(f, ttl=0.1)
    assert clock.now_ms() == 1_000_500
    f.write_text("2000")
    assert clock.now_ms() == 1_000_500  # within the ttl: not read again
    assert clock.now_ms() == 2_000_000  # the ttl has passed


def test_a_missing_or_unreadable_file_is_the_wall_clock(tmp_path: Path) -> None:
    f = tmp_path / "clock"
    clock = FileClock(f, ttl=0)
    before = int(time.time() * 1000)
    assert before <= clock.now_ms() <= int(time.time() * 1000)
    f.write_text("not a number")
    assert before <= clock.now_ms() <= int(time.time() * 1000)
    f.write_text("5")
    assert clock.now_ms() == 5000
