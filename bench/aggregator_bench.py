"""Aggregator benchmark: one command, figures as JSON on stdout, progress on stderr.

    .venv/bin/python bench/aggregator_bench.py                 # 80,000 trainees, ~800,000 envelopes
    .venv/bin/python bench/aggregator_bench.py --quick         # 5,000 trainees (smoke run)
    .venv/bin/python bench/aggregator_bench.py --no-kafka      # pure phases only

Workload: a rotation day of the seeded generator (services/demo/generator.py). Every change
envelope is shaped like the connector's captures in tests/fixtures/*.jsonl (same keys, same order,
REPLICA IDENTITY FULL before images, ``source.sequence`` LSN pairs increasing in log order,
``source.ts_ms`` inside one Europe/London day, a tombstone after each delete). No snapshot (op r) is
sent first: every update carries its full before image, so the core needs no baseline.

Phases (one run): 1. orjson.loads alone; 2. the pure core (parse, apply, parse+apply, close_all);
3. Kafka end to end with the real ``trainee-notify aggregator run`` process (RocksDB, fresh app id,
data dir and topic prefix); 4. raw confluent-kafka consume of the same CDC topics; 5. peak RSS
(VmHWM) of the aggregator; 6. state recovery after kill -9 (data dir kept, and data dir wiped =
full changelog replay), then the day is closed on the recovered instance and every record is compared
with the core's by id and content. Also: faust's own ceiling (bench/faust_noop.py, a no-op agent on
the same topics, with faust's fetch loop and ours); ``--workers N`` runs N workers in one group.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.demo import refdata as ref
from services.demo.generator import _edit_placement, generate, rotation_day_edits
from services.netchange.batch import Aggregation
from services.netchange.cdc import ENTITIES, PRIMARY_KEY, parse_envelope
from services.netchange.days import Calendar

BIN = Path(sys.executable).parent / "trainee-notify"
_EPOCH = dt.date(1970, 1, 1)
_UTC = dt.UTC


def say(*parts: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ workload

def _value(v: Any) -> Any:
    """A column value as Debezium's JSON converter writes it (schemas disabled)."""
    if isinstance(v, dt.datetime):
        return v.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(v, dt.date):
        return (v - _EPOCH).days
    if isinstance(v, uuid.UUID):
        return str(v)
    return v


def _row(r: Any) -> dict[str, Any]:
    return {k: _value(v) for k, v in zip(r._fields, r)}


def _envelope(table: str, op: str, before: dict | None, after: dict | None, ts_us: int, lsn: int,
              tx: int) -> bytes:
    ts_ms = ts_us // 1000
    emitted_us = ts_us + 250_000 + (lsn % 97) * 1000  # the connector emits a little after the commit
    return orjson.dumps({
        "before": before, "after": after,
        "source": {"version": "3.6.1.Final", "connector": "postgresql", "name": "tis", "ts_ms": ts_ms,
                   "snapshot": "false", "db": "tss", "sequence": f'["{lsn}","{lsn}"]', "ts_us": ts_us,
                   "ts_ns": ts_us * 1000, "schema": "tss", "table": table, "txId": tx, "lsn": lsn,
                   "xmin": None, "origin": None, "origin_lsn": None},
        "transaction": None, "op": op, "ts_ms": emitted_us // 1000, "ts_us": emitted_us,
        "ts_ns": emitted_us * 1000 + 123,
    })


def build_workload(n_trainees: int, events_per_trainee: float, seed: int) -> dict[str, Any]:
    """Envelopes (table, key bytes, value bytes or None for a tombstone) in log order."""
    t0 = time.perf_counter()
    pop = generate(n_trainees, seed)
    say(f"generated {n_trainees} trainees in {time.perf_counter() - t0:.1f} s")
    edits = rotation_day_edits(pop, seed, 1.0)
    day = edits.day  # a rotation day (first Wednesday of February: London = UTC, 24 h)
    rng = random.Random(seed + 1)
    offices = {o.name: o for o in ref.LOCAL_OFFICES}
    # entity -> list of (op, new row or None); each entity's edits are applied in order
    scripts: list[tuple[str, str, list[tuple[str, Any]]]] = []  # (table, id, [(op, row)])
    updated_by_rotation = {p.id: p for p in edits.updates}
    placements_by_trainee: dict[str, list[Any]] = {}
    for p in pop.placement:
        placements_by_trainee.setdefault(p.trainee_id, []).append(p)
    stamp = dt.datetime.combine(day, dt.time(9), _UTC)
    # budget: the rotation edits (~1 per trainee) + personal-details and programme edits, the rest
    # spread as repeated placement edits (admins correcting the rotation during the day)
    per_placement = max(0.0, (events_per_trainee - 1.6) / max(1, len(pop.placement) / max(1, n_trainees)))
    for p in pop.placement:
        office = offices[p.owner]
        steps: list[tuple[str, Any]] = []
        cur = updated_by_rotation.get(p.id)
        if cur is not None:
            steps.append(("u", cur))
        else:
            cur = p
        k = int(per_placement) + (rng.random() < per_placement - int(per_placement))
        for _ in range(k):
            if rng.random() < 0.15:
                cur = cur._replace(updated_at=stamp)  # touched, nothing notifying changed
            else:
                cur = _edit_placement(rng, cur, office)._replace(updated_at=stamp)
            steps.append(("u", cur))
        if rng.random() < 0.01:
            steps.append(("d", None))
        if steps:
            scripts.append(("placement", p.id, [(op, row) for op, row in steps]))
    for p in edits.inserts:
        steps = [("c", p)]
        if rng.random() < 0.05:
            steps.append(("u", _edit_placement(rng, p, offices[p.owner])._replace(updated_at=stamp)))
        scripts.append(("placement", p.id, steps))
    originals = {("placement", p.id): p for p in pop.placement}
    for pd in pop.personal_details:
        if rng.random() < 0.3:
            new = pd._replace(mobile_number=f"{ref.MOBILE_PREFIX}{rng.randrange(1000):03d}", updated_at=stamp)
            if rng.random() < 0.3:
                new = new._replace(email=f"x{pd.email}")
            scripts.append(("personal_details", pd.trainee_id, [("u", new)]))
            originals[("personal_details", pd.trainee_id)] = pd
    for pm in pop.programme_membership:
        if rng.random() < 0.1:
            scripts.append(("programme_membership", str(pm.id),
                            [("u", pm._replace(end_date=pm.end_date + dt.timedelta(days=28), updated_at=stamp))]))
            originals[("programme_membership", str(pm.id))] = pm
    for cm in pop.curriculum_membership:
        if rng.random() < 0.1:
            scripts.append(("curriculum_membership", cm.id,
                            [("u", cm._replace(end_date=cm.end_date + dt.timedelta(days=28), updated_at=stamp))]))
            originals[("curriculum_membership", cm.id)] = cm
    # timestamps: working hours of the day, in order per entity; then one global log order
    day_start_us = int(dt.datetime.combine(day, dt.time(8), _UTC).timestamp() * 1_000_000)
    span_us = 10 * 3600 * 1_000_000
    timed: list[tuple[int, int, int]] = []  # (ts_us, script index, step index)
    for si, (_, _, steps) in enumerate(scripts):
        times = sorted(day_start_us + rng.randrange(span_us) for _ in steps)
        timed.extend((ts, si, i) for i, ts in enumerate(times))
    timed.sort()
    events: list[tuple[str, bytes, bytes | None]] = []
    state: dict[int, dict[str, Any] | None] = {}
    lsn = 3_400_000_000
    tx = 900_000
    ops: Counter[str] = Counter()
    for ts_us, si, i in timed:
        table, eid, steps = scripts[si]
        op, row = steps[i]
        if si not in state:
            orig = originals.get((table, eid))
            state[si] = _row(orig) if orig is not None and op != "c" else None
        before = state[si]
        after = _row(row) if row is not None else None
        if op == "c":
            before = None
        lsn += 200 + (ts_us % 7) * 8
        tx += 1
        pk = PRIMARY_KEY[table]
        key = orjson.dumps({pk: eid})
        events.append((table, key, _envelope(table, op, before, after, ts_us, lsn, tx)))
        ops[f"{table}.{op}"] += 1
        if op == "d":
            events.append((table, key, None))  # Debezium's tombstone after a delete
        state[si] = after
    n_env = sum(1 for e in events if e[2] is not None)
    size = sum(len(e[2]) for e in events if e[2] is not None)
    say(f"workload: {n_env} envelopes ({size / n_env:.0f} B avg), "
        f"{len(events) - n_env} tombstones in {time.perf_counter() - t0:.1f} s")
    return {"events": events, "day": day, "envelopes": n_env, "tombstones": len(events) - n_env,
            "avg_bytes": round(size / n_env), "ops": dict(sorted(ops.items())), "last_lsn": lsn,
            "last_ts_us": timed[-1][0] if timed else day_start_us, "scripts": scripts, "tx": tx}


# ------------------------------------------------------------------------------------------ pure phases

def pure_phases(work: dict[str, Any], repeat: int) -> dict[str, Any]:
    values = [v for _, _, v in work["events"] if v is not None]
    n = len(values)
    out: dict[str, Any] = {}

    def best(fn: Any) -> tuple[float, Any]:
        times, result = [], None
        for _ in range(repeat):
            result = None  # only one result alive at a time (the full day is several GB decoded)
            gc.collect()
            t = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t)
        return min(times), result

    loads = orjson.loads

    def decode_all() -> None:
        for v in values:
            loads(v)

    s, _ = best(decode_all)
    out["decode_orjson_events_per_s"] = round(n / s)
    s, changes = best(lambda: [parse_envelope(v) for v in values])
    out["parse_envelope_events_per_s"] = round(n / s)
    changes = [c for c in changes if c is not None and c.table in ENTITIES]

    def apply_only() -> Aggregation:
        agg = Aggregation(Calendar())
        apply = agg.apply
        for c in changes:
            apply(c)
        return agg

    s, agg = best(apply_only)
    out["core_apply_decoded_events_per_s"] = round(len(changes) / s)
    gc.collect()
    t = time.perf_counter()
    records = list(agg.close_all())
    out["core_close_all_seconds"] = round(time.perf_counter() - t, 3)
    out["records"] = len(records)
    out["records_unsuppressed"] = sum(1 for r in records if r["suppressed"] is None)
    out["baselines"] = agg.baselines
    del agg
    changes = []

    def parse_apply() -> Aggregation:
        agg = Aggregation(Calendar())
        apply = agg.apply
        for v in values:
            c = parse_envelope(v)
            if c is not None and c.table in ENTITIES:
                apply(c)
        return agg

    s, _ = best(parse_apply)
    out["core_parse_and_apply_events_per_s"] = round(n / s)
    out["_records"] = records
    return out


# ------------------------------------------------------------------------------------------ kafka phases

def metric(port: int, name: str) -> float | None:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name) and not line.startswith(name + "_created"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
    except OSError:
        return False


def vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_STARTED: list[Aggregator] = []


class Aggregator:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = int(env["TN_WEB_PORT"])

    def start(self) -> Aggregator:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([str(BIN), "aggregator", "run"], env={**os.environ, **self.env}, stdout=fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        _STARTED.append(self)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def check(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"aggregator exited; see {self.log}")


def wait_for(cond: Any, timeout: float, agg: Aggregator | None = None, every: float = 0.1,
             what: str = "") -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if agg is not None:
            agg.check()
        if cond():
            return time.monotonic()
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _digest(record: dict[str, Any]) -> bytes:
    import hashlib

    return hashlib.blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


def check_records(bootstrap: str, topic: str, digests: dict[str, bytes]) -> dict[str, int]:
    """Every record on the net-change topic against the core's, by id and content."""
    from confluent_kafka import Consumer, TopicPartition

    from services import serde

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                  "enable.auto.commit": False})
    highs = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(4)}
    c.assign([TopicPartition(topic, p, 0) for p in range(4)])
    seen: dict[str, bytes] = {}
    duplicates = differ = read = 0
    done = {p for p, h in highs.items() if h == 0}
    while len(done) < 4:
        for m in c.consume(10_000, 1.0):
            if m.error():
                continue
            read += 1
            rec = serde.decode(serde.NETCHANGE, m.value())
            d = _digest(rec)
            if rec["id"] in seen:
                duplicates += 1
                differ += seen[rec["id"]] != d
            seen[rec["id"]] = d
            if m.offset() + 1 >= highs[m.partition()]:
                done.add(m.partition())
    c.close()
    return {"read": read, "ids": len(seen), "duplicates": duplicates, "duplicates_differing": differ,
            "missing": sum(1 for i in digests if i not in seen), "unexpected": sum(1 for i in seen if i not in digests),
            "content_differs": sum(1 for i, d in seen.items() if i in digests and digests[i] != d)}


def kafka_phases(work: dict[str, Any], digests: dict[str, bytes], args: argparse.Namespace) -> dict[str, Any]:
    expected_records = len(digests)
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from services.settings import AggregatorSettings
    from services.topics import apply_topics

    out: dict[str, Any] = {}
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        from services.devstack import stack

        say(f"starting the local stack in {args.scratch} (no Connect)")
        bootstrap = stack.up(Path(args.scratch), with_connect=False).bootstrap
    run = f"bench{int(time.time())}"
    prefix = run  # fresh CDC topics every run
    env = {"TN_KAFKA_BOOTSTRAP": bootstrap, "TN_CDC_TOPIC_PREFIX": prefix, "TN_APP_ID": f"{run}-aggregator",
           "TN_NETCHANGE_TOPIC": f"{run}.netchange.v1", "TN_CDC_DLQ_TOPIC": f"{run}.cdc-dlq.v1",
           "TN_DELIVERY_STATUS_TOPIC": f"{run}.delivery-status.v1", "TN_MAIL_DLQ_TOPIC": f"{run}.mail-dlq.v1",
           "TN_LEDGER_TOPIC": f"{run}.ledger.v1", "TN_TOPIC_PARTITIONS": "4", "TN_TICK_SECONDS": "1",
           "TN_LOG_LEVEL": args.log_level, "TN_STORE": "rocksdb://"}
    if args.app_pythonpath:
        env["PYTHONPATH"] = args.app_pythonpath
    out["app_pythonpath"] = args.app_pythonpath
    out["faust_env"] = dict(kv.split("=", 1) for kv in args.faust_env)
    env.update(out["faust_env"])
    scratch = Path(args.scratch) / run
    data_dir = scratch / "data"
    wm_file = scratch / "watermark"
    scratch.mkdir(parents=True, exist_ok=True)
    day = work["day"]
    day_start = dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()  # February: London = UTC
    wm_file.write_text(str(day_start + 12 * 3600))  # midday: nothing closes
    env.update({"TN_DATA_DIR": str(data_dir), "TN_WATERMARK_FILE": str(wm_file), "TN_WEB_PORT": str(free_port())})
    settings = AggregatorSettings(**{k[3:].lower(): v for k, v in env.items()
                                     if k.startswith("TN_") and k not in ("TN_LOG_LEVEL", "TN_WATERMARK_FILE")})
    apply_topics(settings)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(f"__debezium-heartbeat.{prefix}", 1, 1)]).values():
        try:
            f.result()
        except KafkaException as exc:  # declared by apply_topics in newer versions
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    out["run_id"] = run
    cdc_topics = {t: f"{prefix}.tss.{t}" for t in ENTITIES}

    # produce like Kafka Connect: keyed by the primary key JSON, Java's murmur2 partitioner
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 20,
                         "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000,
                         "queue.buffering.max.kbytes": 2_000_000, "acks": "all"})
    say(f"producing {len(work['events'])} messages to {prefix}.tss.*")
    t = time.perf_counter()
    for table, key, value in work["events"]:
        while True:
            try:
                producer.produce(cdc_topics[table], value, key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    out["produce_seconds"] = round(time.perf_counter() - t, 2)
    out["cdc_messages"] = len(work["events"])

    # raw consume rate of the same topics
    def raw_consume(decode: bool) -> float:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{run}-raw-{decode}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe(list(cdc_topics.values()))
        need, got, t0 = len(work["events"]), 0, None
        while got < need:
            msgs = c.consume(10_000, 1.0)
            if msgs and t0 is None:
                t0 = time.perf_counter()
            for m in msgs:
                if m.error() is None:
                    got += 1
                    if decode and m.value() is not None:
                        orjson.loads(m.value())
        dur = time.perf_counter() - (t0 or time.perf_counter())
        c.close()
        return got / dur

    say("raw consume")
    out["raw_consume_events_per_s"] = round(raw_consume(False))
    out["raw_consume_and_orjson_events_per_s"] = round(raw_consume(True))

    # faust's own ceiling: an agent that does nothing, on the same topics (its fetch loop and ours)
    for loop, flag in (("faust_drain", []), ("faust", ["--faust-loop"])):
        say(f"faust no-op agent ({loop} loop)")
        done = subprocess.run([sys.executable, str(Path(__file__).with_name("faust_noop.py")), bootstrap,
                               str(len(work["events"])), *cdc_topics.values(), *flag],
                              capture_output=True, text=True, timeout=args.timeout, check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        out[f"faust_noop_{loop}_loop_events_per_s"] = json.loads(lines[-1])["messages_per_s"] if lines else None

    n_env = work["envelopes"]
    resolved_topic = f"{env['TN_APP_ID']}-resolved"
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": env["TN_APP_ID"], "enable.auto.commit": False})

    def fold_done() -> bool:
        tps = [TopicPartition(resolved_topic, p) for p in range(4)]
        try:
            committed = probe.committed(tps, timeout=5)
        except Exception:  # noqa: BLE001 - the group may not exist yet
            return False
        total_high = total_comm = 0
        for tp in committed:
            high = probe.get_watermark_offsets(TopicPartition(resolved_topic, tp.partition), timeout=5)[1]
            total_high += high
            total_comm += max(tp.offset, 0)
        return total_high > 0 and total_comm >= total_high - 4 * 3  # ticks after the last commit

    def output_count() -> int:
        try:
            return sum(probe.get_watermark_offsets(TopicPartition(env["TN_NETCHANGE_TOPIC"], p), timeout=5)[1]
                       for p in range(4))
        except Exception:  # noqa: BLE001
            return 0

    # end to end: the real aggregator process
    say("aggregator: apply phase")
    agg = Aggregator(env, scratch / "aggregator.log")
    # more workers in the same group (--workers): the partitions are shared among them
    extra = [Aggregator({**env, "TN_WEB_PORT": str(free_port()), "TN_DATA_DIR": str(scratch / f"data-w{i}")},
                        scratch / f"aggregator-w{i}.log") for i in range(2, args.workers + 1)]
    out["workers"] = args.workers
    t_start = time.monotonic()
    agg.start()
    for w in extra:
        w.start()
    port = agg.port
    ports = [port] + [w.port for w in extra]
    t_ready = wait_for(lambda: ready(port), 180, agg, what="readyz")
    def applied_total() -> float:  # replays after the start-up rebalance count too (several workers)
        return sum(metric(p, "netchange_events_applied_total") or 0 for p in ports)

    t_first = wait_for(lambda: applied_total() > 0, 180, agg, 0.05, "first event")
    last_report = [time.monotonic()]

    def all_applied() -> bool:
        v = applied_total()
        for w in extra:
            w.check()
        if time.monotonic() - last_report[0] > 10:
            say(f"  applied {v:.0f} / {n_env}, rss hwm {vm_hwm_mb(agg.proc.pid)} MB")
            last_report[0] = time.monotonic()
        if v < n_env:
            return False
        # several workers: replays after their rebalances count as applied too, so also wait until the
        # group has committed every CDC record
        return not extra or cdc_committed()

    cdc_tps = [TopicPartition(t, p) for t in cdc_topics.values() for p in range(4)]

    def cdc_committed() -> bool:
        try:
            committed = probe.committed(cdc_tps, timeout=5)
        except Exception:  # noqa: BLE001
            return False
        return all(tp.offset >= probe.get_watermark_offsets(tp, timeout=5)[1] for tp in committed)

    t_applied = wait_for(all_applied, args.timeout, agg, 0.25, "all events applied")
    out["loadavg_1m_at_applied"] = round(os.getloadavg()[0], 2)
    t_folded = wait_for(fold_done, args.timeout, agg, 0.5, "fold agent caught up (committed)")
    out["aggregator_startup_to_ready_seconds"] = round(t_ready - t_start, 2)
    out["aggregator_apply_seconds"] = round(t_applied - t_first, 2)
    out["aggregator_events_per_s"] = round(n_env / (t_applied - t_first))
    out["aggregator_fold_committed_seconds"] = round(t_folded - t_first, 2)
    out["aggregator_events_per_s_through_fold"] = round(n_env / (t_folded - t_first))
    out["ratio_aggregator_to_raw_consume"] = round(out["aggregator_events_per_s"] / out["raw_consume_events_per_s"], 3)
    if out.get("faust_noop_faust_drain_loop_events_per_s"):
        out["ratio_aggregator_to_faust_noop"] = round(
            out["aggregator_events_per_s"] / out["faust_noop_faust_drain_loop_events_per_s"], 3)
    time.sleep(6)  # let faust commit (broker_commit_interval 2.8 s) so a restart replays little
    out["aggregator_peak_rss_mb_apply"] = vm_hwm_mb(agg.proc.pid)
    if extra:
        out["aggregator_peak_rss_mb_apply_other_workers"] = [vm_hwm_mb(w.proc.pid) for w in extra]
    # what the worker wrote to Kafka per CDC event (every message of its own topics so far)
    topics = probe.list_topics(timeout=10).topics
    written = {t: sum(probe.get_watermark_offsets(TopicPartition(t, p), timeout=5)[1] for p in meta.partitions)
               for t, meta in topics.items() if t.startswith(env["TN_APP_ID"] + "-")}
    changelog = sum(n for t, n in written.items() if t.endswith("-changelog"))
    out["changelog_messages_per_event"] = round(changelog / n_env, 3)
    out["resolved_messages_per_event_ticks_included"] = round(written.get(resolved_topic, 0) / n_env, 4)
    say(f"applied {n_env} in {t_applied - t_first:.1f} s; fold committed at {t_folded - t_first:.1f} s")

    # recovery after kill -9
    recovery: dict[str, Any] = {}
    producer2 = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    marker = [work["last_lsn"], work["tx"], work["last_ts_us"]]

    def send_marker() -> None:
        # a new event on a live entity: the first placement's update, later LSN, same day
        table, eid, steps = next(s for s in work["scripts"] if s[0] == "placement" and s[2][-1][0] == "u")
        row = _row(steps[-1][1])
        new = dict(row, whole_time_equivalent="0.50" if row["whole_time_equivalent"] != "0.50" else "0.60")
        marker[0] += 1000
        marker[1] += 1
        marker[2] += 1000
        producer2.produce(cdc_topics[table], _envelope(table, "u", row, new, marker[2], marker[0], marker[1]),
                          orjson.dumps({"id": eid}))
        producer2.flush(10)

    modes = [] if args.skip_recovery or extra else ["keep", "wipe"] if args.recovery == "both" else [args.recovery]
    for mode in modes:
        agg.kill()
        if mode == "wipe":
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)
        say(f"recovery with data dir {mode}")
        agg = Aggregator({**env, "TN_WEB_PORT": str(free_port())}, scratch / f"aggregator-{mode}.log")
        port = agg.port
        t0 = time.monotonic()
        agg.start()
        t_r = wait_for(lambda port=port: ready(port) and metric(port, "netchange_events_applied_total") is not None,
                       args.timeout, agg, 0.1, "ready after restart")
        replayed = metric(port, "netchange_events_applied_total") or 0
        send_marker()
        t_m = wait_for(lambda port=port, replayed=replayed: (metric(port, "netchange_events_applied_total") or 0)
                       > replayed, args.timeout,
                       agg, 0.05, "marker event")
        recovery[mode] = {"ready_seconds": round(t_r - t0, 2), "ready_and_new_event_seconds": round(t_m - t0, 2),
                          "replayed_events_at_ready": replayed, "peak_rss_mb": vm_hwm_mb(agg.proc.pid)}
        say(f"  {mode}: {recovery[mode]}")
        time.sleep(4)
    out["recovery_after_kill"] = recovery

    # close the day: advance the watermark past day end + grace + max hold
    say("close phase")
    base = output_count()
    wm_file.write_text(str(day_start + 86400 + 900 + 3600 + 60))
    t0 = time.monotonic()
    t_first_out = wait_for(lambda: output_count() > base, args.timeout, agg, 0.1, "first net-change record")

    def all_out() -> bool:
        n = output_count()
        if time.monotonic() - last_report[0] > 10:
            say(f"  emitted {n} / {expected_records}")
            last_report[0] = time.monotonic()
        return n >= expected_records

    t_all = wait_for(all_out, args.timeout, agg, 0.25, "all net-change records")
    time.sleep(3)
    out["close_records_expected_from_core"] = expected_records
    out["close_records_emitted"] = output_count()
    out["close_records_checked_against_core"] = check_records(bootstrap, env["TN_NETCHANGE_TOPIC"], digests)
    say(f"records against the core: {out['close_records_checked_against_core']}")
    out["close_first_record_seconds"] = round(t_first_out - t0, 2)
    out["close_all_records_seconds"] = round(t_all - t0, 2)
    out["close_records_per_s"] = round(expected_records / max(t_all - t_first_out, 1e-9))
    out["aggregator_peak_rss_mb_after_close"] = vm_hwm_mb(agg.proc.pid)
    # every event applied by resolve and folded (committed) by fold, then the close: the whole day
    out["whole_day_end_to_end_seconds"] = round((t_folded - t_first) + (t_all - t0), 2)
    out["whole_day_resolve_applied_plus_close_seconds"] = round((t_applied - t_first) + (t_all - t0), 2)
    agg.stop()
    for w in extra:
        w.stop()
    probe.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trainees", type=int, default=80_000)
    p.add_argument("--quick", action="store_true", help="5,000 trainees")
    p.add_argument("--events-per-trainee", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=20270203)
    p.add_argument("--repeat", type=int, default=3, help="best of N for the pure phases")
    p.add_argument("--no-kafka", action="store_true", help="pure phases only")
    p.add_argument("--bootstrap", help="use this Kafka instead of starting the local stack")
    p.add_argument("--scratch", default="/tmp/benchstack")
    p.add_argument("--recovery", choices=["keep", "wipe", "both"], default="both")
    p.add_argument("--log-level", default="INFO", help="TN_LOG_LEVEL of the aggregator")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--dump", help="write the envelopes (JSON lines) to this file")
    p.add_argument("--faust-env", action="append", default=[], metavar="NAME=VALUE",
                   help="experiments: faust settings by environment (PRODUCER_LINGER=0.02, STREAM_BUFFER_MAXSIZE=...)")
    p.add_argument("--skip-recovery", action="store_true")
    p.add_argument("--workers", type=int, default=1,
                   help="aggregator workers in one consumer group (more than 1: no recovery phases)")
    p.add_argument("--app-pythonpath", help="experiments: PYTHONPATH for the aggregator (a private copy of services/)")
    args = p.parse_args()
    # the JSON goes to the real stdout; anything else printing there (the stack's logs) goes to stderr
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    n = 5_000 if args.quick else args.trainees
    work = build_workload(n, args.events_per_trainee, args.seed)
    if args.dump:
        with open(args.dump, "wb") as fh:
            fh.writelines((v or b"null") + b"\n" for _, _, v in work["events"])
    result: dict[str, Any] = {
        "trainees": n, "day": work["day"].isoformat(), "envelopes": work["envelopes"],
        "tombstones": work["tombstones"], "avg_envelope_bytes": work["avg_bytes"], "snapshot_first": False,
        "ops": work["ops"], "python": sys.version.split()[0], "cpus": os.cpu_count(),
    }
    say("pure phases")
    result["loadavg_1m_before"] = round(os.getloadavg()[0], 2)
    pure = pure_phases(work, args.repeat)
    result["loadavg_1m_after_pure"] = round(os.getloadavg()[0], 2)
    records = pure.pop("_records")
    result["pure"] = pure
    say(json.dumps(pure))
    if not args.no_kafka:
        # what the core printed, record by record, to check the stream's records against
        digests = {r["id"]: _digest(r) for r in records}
        del records
        gc.collect()
        result["kafka"] = kafka_phases(work, digests, args)
        result["loadavg_1m_after_kafka"] = round(os.getloadavg()[0], 2)
    out.write(json.dumps(result, indent=2) + "\n")
    out.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    finally:
        for started in _STARTED:  # never leave an aggregator behind
            started.kill()
