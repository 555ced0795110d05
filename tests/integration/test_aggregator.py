"""The Faust aggregator on the real broker: stream = batch, London days across DST, the clock closes
days, the maximum hold, late events, poison envelopes."""

from __future__ import annotations

import datetime as dt
import io
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import orjson

from services import serde
from services.kafka_security import librdkafka_config
from services.netchange import trainee
from services.netchange.batch import Aggregation, aggregate_lines
from services.netchange.cdc import parse_envelope
from services.netchange.days import Calendar
from tests.integration.workload import LONDON, AggregatorRun, london_ms, metric, wait_metric, workload
from tests.unit.envelopes import envelope, person, placement

GRACE_MS = 900_000


def batch(envs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    records, _ = aggregate_lines([orjson.dumps(e) for e in envs], Calendar(), io.StringIO())
    return {r["id"]: r for r in records}


def fold_inputs(envs: list[dict[str, Any]]) -> int:
    """How many changes the aggregator folds into a trainee's day (the batch's count over the same
    events, owner changes split as the connector splits them)."""
    agg = Aggregation(Calendar())
    for env in envs:
        change = parse_envelope(orjson.dumps(env))
        if change is not None:
            agg.apply(change)
    return agg.outcomes[trainee.FOLDED]


def assert_matches_batch(emitted: list[dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for rec in emitted:
        by_id.setdefault(rec["id"], []).append(rec)
    assert set(by_id) == set(expected), (sorted(set(expected) - set(by_id))[:5], sorted(set(by_id) - set(expected))[:5])
    for rid, copies in by_id.items():
        for copy in copies:  # a duplicate after a crash or rebalance carries the same content
            assert copy == expected[rid], rid


def http_json(service: Any, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{service.env['TN_WEB_PORT']}{path}", timeout=5) as resp:
        return orjson.loads(resp.read())


def http_status(service: Any, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{service.env['TN_WEB_PORT']}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def london_date(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, LONDON).date().isoformat()


def test_stream_equals_batch_over_real_london_days_across_both_dst_changes(run: AggregatorRun) -> None:
    days = [dt.date(2026, 3, 28), dt.date(2026, 3, 29), dt.date(2026, 3, 30),
            dt.date(2026, 10, 24), dt.date(2026, 10, 25), dt.date(2026, 10, 26)]
    envs = workload(7, run.prefix, trainees=40, days=days, edits_per_day=60)
    expected = batch(envs)
    assert {r["day"] for r in expected.values()} == {d.isoformat() for d in days}
    run.set_clock(london_ms(days[0], 0) - 3_600_000)
    run.produce(envs)
    agg = run.service().start()
    try:
        wait_metric(agg, "netchange_events_folded_total", fold_inputs(envs))
        run.set_clock(london_ms(days[-1] + dt.timedelta(days=1), 0) + GRACE_MS + 5_000)
        emitted = run.netchange(len(expected))
    finally:
        agg.stop()
    assert_matches_batch(emitted, expected)
    # and independently of the batch: each change lies on the London date of its events
    dates: dict[tuple[str, str], set[str]] = {}
    for env in envs:
        row = env["after"] or env["before"]
        key = (env["source"]["table"], row.get("id") or row["trainee_id"])
        dates.setdefault(key, set()).add(london_date(env["source"]["ts_ms"]))
    for rec in emitted:
        for change in rec["changes"]:
            assert rec["day"] in dates[(change["entity"], change["id"])]
    assert not any(rec["late"] for rec in emitted)


def test_the_clock_closes_days_the_maximum_hold_forces_them_and_late_events_are_flagged(run: AggregatorRun) -> None:
    day = dt.date(2026, 11, 24)
    end = london_ms(day + dt.timedelta(days=1), 0)
    tid = f"{run.prefix}x"
    p0 = placement(f"{tid}-p", tid)
    run.set_clock(london_ms(day, 12))
    run.produce([envelope("personal_details", "r", None, person(tid), london_ms(day, 1), snapshot="true"),
                 envelope("placement", "r", None, p0, london_ms(day, 1), snapshot="true"),
                 envelope("placement", "u", p0, {**p0, "site": "Royal Papworth Hospital"}, london_ms(day, 10))])
    agg = run.service(TN_MAX_HOLD_SECONDS="600").start()
    try:
        wait_metric(agg, "netchange_events_applied_total", 3)
        assert metric(agg, "netchange_baselines_total") == 2 and metric(agg, "netchange_events_folded_total") == 1
        assert http_json(agg, "/healthz") == {"status": "ok"} and http_json(agg, "/readyz") == {"ready": True}
        # 1. the clock passes midnight + grace: the day closes with no further events
        run.set_clock(end + GRACE_MS + 5_000)
        [first] = run.netchange(1, timeout=60)
        assert first["day"] == "2026-11-24"
        assert first["changes"][0]["fields"]["site"]["new"] == "Royal Papworth Hospital"
        # 2. the connector stalls (no heartbeats): the next day is held back ...
        p1 = {**p0, "site": "Royal Papworth Hospital"}
        p2 = {**p1, "grade": "ST4"}
        run.produce([envelope("placement", "u", p1, p2, end + 10 * 3_600_000)])
        wait_metric(agg, "netchange_events_folded_total", 2)
        end2 = end + 24 * 3_600_000
        run.set_clock(end2 + GRACE_MS + 5_000, heartbeat=False)
        wait_metric(agg, "netchange_watermark_forced", 1, timeout=60)  # the alert is up
        held = (end2 + GRACE_MS + 5_000 - 600_000) / 1000  # the wall clock less the maximum hold
        wait_metric(agg, "netchange_watermark_applied_seconds", held, timeout=60, least=True)
        assert len(run.records(1, timeout=8, idle=2)) == 1  # every partition closed to it: still only the first day
        # ... until the maximum hold runs out: the day closes anyway
        run.set_clock(end2 + GRACE_MS + 600_000 + 5_000, heartbeat=False)
        second = next(r for r in run.netchange(2, timeout=60) if r["id"] != first["id"])
        assert second["day"] == "2026-11-25"
        assert second["changes"][0]["fields"] == {"grade": {"old": "ST3", "new": "ST4"}}
        # 3. an event of 25 November arriving now is late: folded into the open day and flagged
        p3 = {**p2, "grade": "ST5"}
        run.produce([envelope("placement", "u", p2, p3, end + 20 * 3_600_000)])
        wait_metric(agg, "netchange_late_events_total", 1)
        run.set_clock(end2 + 24 * 3_600_000 + GRACE_MS + 5_000)
        third = next(r for r in run.netchange(3, timeout=60) if r["day"] == "2026-11-26")
        assert third["day"] == "2026-11-26" and third["late"] is True
        assert third["changes"][0]["fields"] == {"grade": {"old": "ST4", "new": "ST5"}}
    finally:
        agg.stop()


def poison(n: int, prefix: str) -> list[tuple[bytes, str]]:
    good = orjson.loads(orjson.dumps(envelope("placement", "u", placement(), placement(grade="ST4"))))
    kinds: list[tuple[bytes, str]] = []
    for i in range(n):
        k = i % 4
        if k == 0:
            kinds.append((b'{"before": null, "after": {"id": "' + str(i).encode(), "not JSON"))
        elif k == 1:
            kinds.append((orjson.dumps({**good, "source": {**good["source"], "ts_ms": "yesterday"}}), "source.ts_ms"))
        elif k == 2:
            kinds.append((orjson.dumps({**good, "source": {**good["source"], "table": "rotation"}}), "unknown table"))
        else:
            kinds.append((orjson.dumps({**good, "after": {"grade": "ST4"}, "before": None}), "no primary key"))
    return kinds


def test_malformed_envelopes_go_to_the_dead_letter_topic_and_the_rest_is_right(run: AggregatorRun) -> None:
    day = dt.date(2026, 11, 24)
    envs = workload(11, run.prefix, trainees=20, days=[day], edits_per_day=150)
    expected = batch(envs)
    bad = poison(1000, run.prefix)
    run.set_clock(london_ms(day, 0))
    step = max(1, len(envs) // 50)
    for i in range(0, len(envs), step):  # interleave: a slice of good, then a slice of bad
        run.produce(envs[i:i + step])
        run.produce([b for b, _ in bad[i // step * 20:(i // step + 1) * 20]], table="placement")
    run.produce([b for b, _ in bad[(len(envs) // step + 1) * 20:]], table="placement")
    agg = run.service().start()
    try:
        wait_metric(agg, "netchange_dead_letters_total", 1000)
        wait_metric(agg, "netchange_events_folded_total", fold_inputs(envs))
        run.set_clock(london_ms(day + dt.timedelta(days=1), 0) + GRACE_MS + 5_000)
        emitted = run.netchange(len(expected))
        dead = run.records(1000, topic=run.settings.cdc_dlq_topic, idle=1)
    finally:
        agg.stop()
    assert_matches_batch(emitted, expected)
    assert len(dead) == 1000
    reasons = Counter()
    for _, value, headers in dead:
        h = dict(headers)
        assert h["source.topic"] == f"{run.prefix}.tss.placement".encode() and h["source.offset"].isdigit()
        reasons[next(want for raw, want in bad if raw == value)] += 1
        assert any(want.encode() in h["reason"] for raw, want in bad if raw == value)
    assert reasons == {"not JSON": 250, "source.ts_ms": 250, "unknown table": 250, "no primary key": 250}
    assert "Traceback" not in agg.log()


def test_events_not_keyed_by_trainee_go_to_the_dead_letter_naming_the_connector_setting(run: AggregatorRun) -> None:
    """A connector without ``message.key.columns`` keys by primary key: every such event is refused with
    a reason that names the setting, the worker says so once as an error, and keyed events still work."""
    day = dt.date(2026, 11, 24)
    tid = f"{run.prefix}k"
    p0 = placement(f"{tid}-p", tid)
    good = [envelope("placement", "r", None, p0, london_ms(day, 1), snapshot="true"),
            envelope("placement", "u", p0, {**p0, "grade": "ST4"}, london_ms(day, 9))]
    entity_keyed = [envelope("placement", "u", {**p0, "grade": "ST4"}, {**p0, "grade": f"ST{5 + i}"},
                             london_ms(day, 10 + i)) for i in range(5)]
    run.set_clock(london_ms(day, 12))
    run.produce(good)
    run.produce([orjson.dumps(e) for e in entity_keyed], table="placement", key=orjson.dumps({"id": p0["id"]}))
    agg = run.service().start()
    try:
        wait_metric(agg, "netchange_dead_letters_total", 5)
        run.set_clock(london_ms(day + dt.timedelta(days=1), 0) + GRACE_MS + 5_000)
        [record] = run.netchange(1, timeout=60)
        dead = run.records(5, topic=run.settings.cdc_dlq_topic, idle=1)
    finally:
        agg.stop()
    assert record["changes"][0]["fields"] == {"grade": {"old": "ST3", "new": "ST4"}}
    assert len(dead) == 5
    for key, _, headers in dead:
        assert key == orjson.dumps({"id": p0["id"]})
        assert b"message.key.columns" in dict(headers)["reason"]
    errors = [line for line in agg.log().splitlines() if "cdc.key_not_trainee" in line]
    assert len(errors) == 1 and "error" in errors[0].lower()


def test_a_first_start_on_fresh_topics_never_crash_loops_and_closes_the_day_within_30_s(run: AggregatorRun) -> None:
    """Five first starts, each with an app id whose topics (changelog, ticks, leader) nobody created: the
    worker creates them before faust subscribes, is ready, and closes a day within 30 s of the
    watermark passing it."""
    day = dt.date(2026, 11, 24)
    for attempt in range(5):
        tid = f"{run.prefix}f{attempt}"
        p0 = placement(f"{tid}-p", tid)
        run.set_clock(london_ms(day, 12))
        run.produce([envelope("placement", "r", None, p0, london_ms(day, 1), snapshot="true"),
                     envelope("placement", "u", p0, {**p0, "site": "Royal Papworth Hospital"}, london_ms(day, 10))])
        app_id = f"fresh-{run.prefix}-{attempt}"
        agg = run.service(f"fresh-{attempt}", TN_APP_ID=app_id).start()
        try:
            wait_metric(agg, "netchange_events_applied_total", 2 * (attempt + 1))
            deadline = time.monotonic() + 30
            while http_status(agg, "/readyz") != 200:
                assert time.monotonic() < deadline, f"start {attempt}: not ready:\n{agg.log()[-2000:]}"
                time.sleep(0.5)
            run.set_clock(london_ms(day + dt.timedelta(days=1), 0) + GRACE_MS + 1_000)
            passed = time.monotonic()
            ids = set()
            while tid + ":2026-11-24" not in ids:
                assert time.monotonic() - passed < 30, f"start {attempt}: the day did not close within 30 s"
                ids = {serde.decode(serde.NETCHANGE, v)["id"] for _, v, _ in run.records(1, timeout=2, idle=0.5)}
        finally:
            agg.stop()
        log = agg.log()
        assert "PartitionsMismatch" not in log and "Ignoring missing topic" not in log, log[-3000:]
        assert "aggregator.agent_crashed" not in log


def test_readiness_is_false_while_the_table_is_not_usable(run: AggregatorRun) -> None:
    """A changelog with the wrong number of partitions (someone created it by hand): every table write
    fails, faust restarts the agent, and /readyz says so instead of answering ready."""
    from confluent_kafka.admin import AdminClient, NewTopic

    app_id = f"unusable-{run.prefix}"
    admin = AdminClient(librdkafka_config(run.stack.kafka_settings()))
    name = f"{app_id}-trainee_state-changelog"
    admin.create_topics([NewTopic(name, 1, 1, config={"cleanup.policy": "compact"})])[name].result(30)
    day = dt.date(2026, 11, 24)
    tid = f"{run.prefix}u"
    run.set_clock(london_ms(day, 12))
    run.produce([envelope("placement", "r", None, placement(f"{tid}-p", tid), london_ms(day, 1), snapshot="true")])
    agg = run.service("unusable", TN_APP_ID=app_id).start()
    try:
        wait_metric(agg, "netchange_events_applied_total", 1)
        deadline = time.monotonic() + 60
        while True:
            body = http_body(agg, "/readyz")
            if body is not None and body.get("ready") is False and body.get("why") in (
                    "agent crashed", "table changelog not usable"):
                break
            assert time.monotonic() < deadline, f"/readyz never said why: {body}"
            time.sleep(0.5)
        assert http_status(agg, "/readyz") == 503
    finally:
        agg.stop()


def http_body(service: Any, path: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{service.env['TN_WEB_PORT']}{path}", timeout=5) as resp:
            return orjson.loads(resp.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        return orjson.loads(exc.read())  # type: ignore[no-any-return]
    except OSError:
        return None
