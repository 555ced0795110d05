"""The one function that turns an instant into a trainee's day (pure).

Calendar days are dates in a zone (Europe/London by default): 23 or 25 hours long across DST.
A configured fixed length (tests, demo) gives windows labelled by their start instant in UTC.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

_HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True, order=True)
class Day:
    start_ms: int
    end_ms: int
    label: str  # "2026-11-24" or "2026-11-24T10:31:00Z"
    date: _dt.date  # the local calendar date the day starts on (for "ended before the day")


class Calendar:
    """Maps instants to days. Cached by UTC hour, only for hours that lie wholly inside one day: where
    a zone's offset is not a whole number of hours (Asia/Kolkata +05:30, America/St_Johns -03:30,
    Asia/Kathmandu +05:45) a local midnight falls inside a UTC hour, and that hour is worked out each
    time."""

    def __init__(self, zone: str = "Europe/London", day_seconds: int = 0) -> None:
        self.zone = ZoneInfo(zone)
        self.day_ms = day_seconds * 1000
        self._by_hour: dict[int, Day] = {}
        self._by_label: dict[str, Day] = {}

    def day_of(self, ts_ms: int) -> Day:
        if self.day_ms:
            start = (ts_ms // self.day_ms) * self.day_ms
            return self._fixed(start)
        hour = ts_ms // _HOUR_MS
        day = self._by_hour.get(hour)
        if day is None:
            local = _dt.datetime.fromtimestamp(ts_ms / 1000, tz=self.zone).date()
            day = self._calendar(local)
            if day.start_ms <= hour * _HOUR_MS and (hour + 1) * _HOUR_MS <= day.end_ms:
                self._by_hour[hour] = day
        return day

    def by_label(self, label: str) -> Day:
        day = self._by_label.get(label)
        if day is None:
            if "T" in label:
                start = int(_dt.datetime.fromisoformat(label).timestamp() * 1000)
                day = self._fixed(start)
            else:
                day = self._calendar(_dt.date.fromisoformat(label))
        return day

    def _fixed(self, start: int) -> Day:
        instant = _dt.datetime.fromtimestamp(start / 1000, tz=_dt.UTC)
        label = instant.strftime("%Y-%m-%dT%H:%M:%SZ")
        day = self._by_label.get(label)
        if day is None:
            day = Day(start, start + self.day_ms, label, instant.astimezone(self.zone).date())
            self._by_label[label] = day
        return day

    def _calendar(self, local: _dt.date) -> Day:
        label = local.isoformat()
        day = self._by_label.get(label)
        if day is None:
            start = _dt.datetime.combine(local, _dt.time(), tzinfo=self.zone)
            end = _dt.datetime.combine(local + _dt.timedelta(days=1), _dt.time(), tzinfo=self.zone)
            day = Day(int(start.timestamp() * 1000), int(end.timestamp() * 1000), label, local)
            self._by_label[label] = day
        return day
