"""The replacement of faust's fetch loop is installed only on the faust version it was read from, and
its one change is the delivery: the rest of the loop is faust's, line for line."""

from __future__ import annotations

import inspect

import faust
import pytest
from faust.transport import consumer as faust_consumer

from services.netchange import faust_drain


@pytest.fixture(autouse=True)
def _restore():
    before = faust_consumer.Consumer._drain_messages
    yield
    faust_consumer.Consumer._drain_messages = before


def test_installs_on_the_version_it_was_read_from() -> None:
    assert faust.__version__ == faust_drain.FOR_VERSION  # pinned in pyproject.toml
    assert faust_drain.install()
    assert faust_drain.installed()
    faust_drain.uninstall()
    assert not faust_drain.installed()
    assert faust_consumer.Consumer._drain_messages is faust_drain._original


def test_refuses_any_other_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    faust_drain.uninstall()
    monkeypatch.setattr(faust, "__version__", "0.16.0")
    assert not faust_drain.install()
    assert not faust_drain.installed()


def _statements(fn) -> list[str]:
    lines = inspect.getsource(fn).splitlines()
    body = [ln.split("#")[0].strip() for ln in lines]
    return [ln for ln in body if ln and not ln.startswith(("async def", "def"))]


def test_the_loop_is_fausts_but_for_the_delivery() -> None:
    ours = _statements(faust_drain._drain_messages)
    theirs = _statements(faust_drain._original)
    only_theirs = [ln for ln in theirs if ln not in ours]
    only_ours = [ln for ln in ours if ln not in theirs]
    assert only_theirs == [  # faust's delivery, a log line, and names ours reaches without cast()
        "consumer_should_stop = cast(Service, self)._stopped.is_set",
        "fetcher_should_stop = cast(Service, fetcher)._stopped.is_set",
        "flag_consumer_fetching = CONSUMER_FETCHING",
        "await self.wait_first(", "callback(message), self.suspend_flow.wait()", ")",
        "self.log.dev(", '"DROPPED MESSAGE ROFF %r: k=%r v=%r",', "offset,", "message.key,", "message.value,", ")",
    ]
    assert only_ours == [
        "consumer_should_stop = self._stopped.is_set",
        "fetcher_should_stop = fetcher._stopped.is_set",
        "rebalancing = self.suspend_flow.is_set",
        "flag_consumer_fetching = _consumer.CONSUMER_FETCHING",
        "if rebalancing():",
        "await self.wait_first(callback(message), self.suspend_flow.wait())",  # faust's, while rebalancing
        "await callback(message)",  # the change
        'self.log.dev("DROPPED MESSAGE ROFF %r", offset)',  # no message key or value in logs
    ]


class _Offsets:
    """The four attributes of faust's consumer that its commit-offset rule reads and trims."""

    def __init__(self, committed: int | None, acked: list[int]) -> None:
        from collections import defaultdict

        from intervaltree import IntervalTree

        self._committed_offset = defaultdict(lambda: None, {"tp": committed})
        self._acked = {"tp": list(acked)}
        self._acked_index = {"tp": set(acked)}
        self._gap = defaultdict(IntervalTree)


@pytest.mark.parametrize(("committed", "start", "acked", "faust", "ours"), [
    (10, None, [10, 11, 12], 13, 13),  # no hole: both commit the run
    (10, None, [11, 12], 13, None),  # offset 10 never acknowledged: faust commits past it
    (10, None, [15, 16], None, None),  # a wider hole: both wait
    (0, None, [3, 4], 5, None),  # committed at 0: faust never checks
    (None, 0, [2, 3], 4, None),  # nothing committed yet, fetching began at 0: faust never checks
    (None, 2, [2, 3], 4, 4),  # nothing committed yet, the run starts where fetching began
    (None, None, [7, 8], 9, 9),  # nothing known: faust's rule
])
def test_commits_never_pass_a_hole_at_the_head(committed, start, acked, faust, ours) -> None:
    faust_drain.starts.clear()
    if start is not None:
        faust_drain.starts["tp"] = start
    try:
        assert faust_drain._original_new_offset(_Offsets(committed, acked), "tp") == faust
        assert faust_drain._new_offset(_Offsets(committed, acked), "tp") == ours
    finally:
        faust_drain.starts.clear()


def test_known_gaps_count_as_acknowledged() -> None:
    offsets = _Offsets(10, [10, 11, 14, 15])
    offsets._gap["tp"].addi(12, 14)  # offsets 12 and 13 do not exist (compaction, markers)
    assert faust_drain._new_offset(offsets, "tp") == 16
