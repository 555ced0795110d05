"""Times and durations as operators type them: ``2h``, ``2026-01-02``, ``2026-01-02T07:00Z``, ``now``.

Re-exported by ``services.opsctl.common``.
"""

from __future__ import annotations

import datetime as dt
import re

from services.opsctl.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_duration(text: str) -> dt.timedelta:
    """``90s``, ``15m``, ``2h``, ``1d``, ``1w``, ``1h30m`` → a timedelta; :class:`UsageError` otherwise."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION_RE.sub("", compact):
        raise UsageError(f"not a duration: '{text}' (e.g. 90s, 15m, 2h, 1d, 1h30m)")
    seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_RE.findall(compact))
    return dt.timedelta(seconds=seconds)


def parse_when(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """An instant from ``2h`` (that long ago), ``now``, an ISO date or date-time (naive = UTC), or
    epoch milliseconds."""
    now = now or dt.datetime.now(dt.UTC)
    value = text.strip()
    if value.lower() == "now":
        return now
    if _DURATION_RE.fullmatch(value.lower().replace(" ", "")) or re.fullmatch(r"(\d+(\.\d+)?[smhdw])+", value.lower()):
        return now - parse_duration(value)
    if value.isdigit() and len(value) >= 12:
        return ms_to_datetime(int(value))
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"not a time: '{text}' (e.g. 2h, 2026-01-02, 2026-01-02T07:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def ms_to_datetime(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
