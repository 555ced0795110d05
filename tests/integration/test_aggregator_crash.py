"""Crash, restart and rebalance of the aggregator on the real broker."""

from __future__ import annotations

import datetime as dt
import random
import time

import pytest

from tests.integration.test_aggregator import GRACE_MS, assert_matches_batch, batch
from tests.integration.workload import AggregatorRun, london_ms, wait_caught_up, workload

pytestmark = pytest.mark.slow
DAYS = [dt.date(2026, 11, 23), dt.date(2026, 11, 24), dt.date(2026, 11, 25)]


def test_kill_9_at_random_points_loses_nothing_and_duplicates_are_identical(run: AggregatorRun) -> None:
    rng = random.Random(5)
    envs = workload(23, run.prefix, trainees=80, days=DAYS, edits_per_day=200)
    expected = batch(envs)
    run.set_clock(london_ms(DAYS[0], 0) - 3_600_000)
    run.produce(envs)
    kills = 0
    # while applying: killed mid-flush of tables and changelogs
    for _ in range(4):
        agg = run.service().start()
        time.sleep(rng.uniform(4, 9))
        agg.kill()
        kills += 1
    agg = run.service().start()
    wait_caught_up(run)
    # while closing: killed mid-close, between producing records and deleting state
    run.set_clock(london_ms(DAYS[-1] + dt.timedelta(days=1), 0) + GRACE_MS + 5_000)
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 4))
        agg.kill()
        kills += 1
        agg = run.service().start()
    try:
        emitted = run.netchange(len(expected), timeout=180, idle=8)
    finally:
        agg.stop()
    assert kills == 7
    assert_matches_batch(emitted, expected)


def test_two_workers_share_the_partitions_and_the_survivor_takes_over(run: AggregatorRun) -> None:
    envs = workload(29, run.prefix, trainees=80, days=DAYS[:2], edits_per_day=200)
    expected = batch(envs)
    half = len(envs) // 2
    run.set_clock(london_ms(DAYS[0], 0) - 3_600_000)
    first = run.service("worker-a").start()
    second = run.service("worker-b").start()
    try:
        run.produce(envs[:half])
        time.sleep(10)
        second.stop()  # stopped mid-day: its partitions move to the survivor
        run.produce(envs[half:])
        wait_caught_up(run)
        run.set_clock(london_ms(DAYS[1] + dt.timedelta(days=1), 0) + GRACE_MS + 5_000)
        emitted = run.netchange(len(expected), timeout=180, idle=8)
    finally:
        first.stop()
        second.stop()
    assert "Assigned" in second.log() or "assigned" in second.log()
    assert_matches_batch(emitted, expected)
    assert len(emitted) == len(expected)  # once per id
