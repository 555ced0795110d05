"""Thousands of hostile envelopes of every kind, interleaved with good ones, through the real broker:
no poison stops a partition (issue 8, "No poison stops a partition")."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter

import orjson

from services.netchange.cdc import ENTITIES
from tests.integration.test_aggregator import GRACE_MS, assert_matches_batch, batch
from tests.integration.workload import AggregatorRun, london_ms, wait_metric, workload
from tests.unit.envelopes import envelope, person, placement
from tests.unit.hostile import hostile_envelopes

DAYS = [dt.date(2026, 11, 24), dt.date(2026, 11, 25)]


def test_hostile_envelopes_go_to_the_dead_letter_and_every_good_record_equals_the_batch(run: AggregatorRun) -> None:
    rng = random.Random(41)
    envs = workload(43, run.prefix, trainees=30, days=DAYS, edits_per_day=120)
    tids = sorted({e["after"]["trainee_id"] for e in envs
                   if e["op"] == "r" and e["source"]["table"] == "personal_details"})
    # a trainee whose record cannot be encoded (an email that is a number: a scalar, so the envelope is
    # valid, but the record's recipient is not text): dead-lettered as a record, the rest still close
    odd = f"{run.prefix}odd"
    odd_place = placement(f"{odd}-p", odd)
    envs_odd = [envelope("personal_details", "r", None, person(odd, email=12345), london_ms(DAYS[0], 0.5),
                         snapshot="true"),
                envelope("placement", "r", None, odd_place, london_ms(DAYS[0], 0.5), snapshot="true"),
                envelope("placement", "u", odd_place, {**odd_place, "grade": "ST4"}, london_ms(DAYS[0], 11))]
    expected = batch(envs + envs_odd)
    odd_id = f"{odd}:{DAYS[0].isoformat()}"
    assert odd_id in expected
    del expected[odd_id]
    # every kind of hostile value, keyed by trainees of the workload, on every CDC topic
    bad: list[tuple[str, bytes, bytes, str]] = []  # (table, key, value, reason wanted)
    for i, table in enumerate(ENTITIES):
        for tid in tids[i::len(ENTITIES)][:3]:
            for value, reason in hostile_envelopes(260, seed=i * 100 + len(bad), table=table, trainee_id=tid,
                                                   oversize=False):
                bad.append((table, orjson.dumps({"trainee_id": tid}), value, reason))
    bad += [(t, k, v, r) for t, k, v, r in
            ((ENTITIES[3], orjson.dumps({"trainee_id": tids[0]}), value, reason)
             for value, reason in hostile_envelopes(44 * 3, seed=7, table="placement", trainee_id=tids[0])
             if len(value) > 400_000)]  # a few oversize ones too
    rng.shuffle(bad)
    assert len(bad) >= 3000
    run.set_clock(london_ms(DAYS[0], 0))
    run.produce(envs_odd)
    step = max(1, len(envs) // 60)
    per_slice = len(bad) // 60 + 1
    for n, start in enumerate(range(0, len(envs), step)):  # a slice of good, then a slice of bad
        run.produce(envs[start:start + step])
        for table, key, value, _ in bad[n * per_slice:(n + 1) * per_slice]:
            run.producer.produce(f"{run.prefix}.tss.{table}", key=key, value=value)
        run.producer.flush(60)
    for table, key, value, _ in bad[(n + 1) * per_slice:]:
        run.producer.produce(f"{run.prefix}.tss.{table}", key=key, value=value)
    run.producer.flush(60)
    agg = run.service().start()
    try:
        wait_metric(agg, "netchange_dead_letters_total", len(bad), timeout=300)
        run.set_clock(london_ms(DAYS[-1] + dt.timedelta(days=1), 0) + GRACE_MS + 5_000)
        emitted = run.netchange(len(expected), timeout=180)
        dead = run.records(len(bad) + 1, topic=run.settings.cdc_dlq_topic, idle=2, timeout=180)
    finally:
        agg.stop()
    assert_matches_batch(emitted, expected)
    assert {r["day"] for r in emitted} == {d.isoformat() for d in DAYS}  # later days still closed
    # every bad one is in the dead letter with its reason and coordinates; the odd record too
    wanted = {value: reason for _, _, value, reason in bad}
    got = Counter()
    records = []
    for key, value, headers in dead:
        h = dict(headers)
        if h["source.topic"].endswith(b"-ticks"):
            records.append((key, orjson.loads(value), h["reason"]))
            continue
        assert h["source.offset"].isdigit() and h["source.partition"].isdigit()
        assert value in wanted, value[:80]
        assert wanted[value].encode() in h["reason"], (wanted[value], h["reason"])
        got[value] += 1
    assert sum(got.values()) == len(bad) and set(got) == set(wanted)
    [(key, body, reason)] = records
    assert key == odd_id.encode() and body["id"] == odd_id and b"cannot be encoded" in reason
    assert b"12345" not in reason and "email" not in body  # the reason carries no personal data
    log = agg.log()
    assert "Traceback" not in log and "aggregator.agent_crashed" not in log
