"""Aggregator benchmark: one command, figures as JSON on stdout, progress on stderr.

    .venv/bin/python bench/aggregator_bench.py                 # 80,000 trainees, ~800,000 envelopes
    .venv/bin/python bench/aggregator_bench.py --quick         # 5,000 trainees (smoke run)
    .venv/bin/python bench/aggregator_bench.py --quick --skip-recovery --no-compare   # while iterating
    .venv/bin/python bench/aggregator_bench.py --no-kafka      # pure phases only

Workload: a rotation day of the seeded generator (services/demo/generator.py). Every change
envelope is shaped like the connector's captures in tests/fixtures/*.jsonl (same keys, same order,
REPLICA IDENTITY FULL before images, ``source.sequence`` LSN pairs increasing in log order,
``source.ts_ms`` inside one Europe/London day), keyed as the connector keys it
(``message.key.columns`` = trainee_id: :func:`services.netchange.trainee.as_connector_keys`, so a
placement moved to another trainee (``--moves``, a fraction of the placements) is a delete keyed by
the old owner and a create keyed by the new one). No tombstones (the connector has
``tombstones.on.delete=false``), no snapshot (op r) first: every update carries its full before
image, so the core needs no baseline.

Phases (one run, the same CDC topics throughout, ``--partitions`` each, 12 as deployed):

1. the pure core: orjson.loads alone, parse, apply, parse + apply, close_all, over the envelopes in
   log order (before the connector's split): this is the batch output every record is compared with;
2. load: an idempotent producer (``enable.idempotence``, acks all, Java's murmur2 partitioner), then
   the topics are read back and, per partition, every (table, entity id)'s ``source.sequence``/LSN
   order is checked to be non-decreasing (``load.out_of_order_events``: the run stops if it is not 0);
3. raw confluent-kafka consume of the CDC topics (with and without orjson.loads);
4. faust's own ceiling: bench/faust_noop.py, a faust agent that does nothing, on faust's fetch loop;
5. the aggregator of another tree (``--compare-tree REF``, default 06826bc: the two-stage aggregator
   with the re-key hop), extracted with ``git archive`` and run with this venv's python and its
   PYTHONPATH, fresh app id, data dir and output topics; the topics faust would create for it (its
   four table changelogs, the re-key hop, the assignor's topic) are created first, as the current tree
   does for its own, so its start does not hit the metadata race of issue 8. Its events/s (all events
   resolved, and all folded with the fold's input committed), peak RSS, changelog messages per event,
   and its records against the batch output by id and content *ignoring local_offices* (a field it
   does not have). ``--no-compare`` skips it;
6. this aggregator (``trainee-notify aggregator run``): events/s (all events applied, their states
   written; and all CDC offsets committed), table writes per event (``netchange_state_writes_total``
   and the changelog's messages), peak RSS, recovery after kill -9 with the data dir kept and wiped
   (ready again, and a new event processed), then the day closed on the recovered instance and every
   record compared with the batch output by id and content (local_offices included).

Ratios: ``ratio_this_to_faust_noop`` (all applied / no-op), ``ratio_this_to_compare_tree`` (every
event's state written and its input committed, both trees) and ``ratio_this_to_compare_tree_applied``
(all applied / all resolved); ``cpu_ratio_faust_noop_to_this`` and ``cpu_ratio_compare_tree_to_this``
the same by CPU time per event (user + system of the process, all threads: the other load of a shared
machine moves events/s a lot and these little; the phases run one after the other, so compare the
``loadavg_1m_*`` figures too). ``--workers N`` runs N workers of this aggregator in one group (no
recovery phases then; the bench waits for the first worker's /readyz, which a worker that is not
the group's leader was seen to answer "table changelog not usable" throughout: faust's
``topic_partitions`` is known on the group's leader only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
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
from services.kafka_security import client_config
from services.netchange.batch import Aggregation
from services.netchange.cdc import ENTITIES, PRIMARY_KEY, parse_envelope
from services.netchange.days import Calendar
from services.netchange.trainee import as_connector_keys

BIN = Path(sys.executable).parent / "trainee-notify"
_EPOCH = dt.date(1970, 1, 1)
_UTC = dt.UTC
IGNORED_FOR_COMPARE_TREE = ("local_offices",)  # fields the compare tree's records do not have


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
    return {k: _value(v) for k, v in zip(r._fields, r, strict=True)}


def _envelope(table: str, op: str, before: dict | None, after: dict | None, ts_us: int, lsn: int,
              tx: int) -> dict[str, Any]:
    ts_ms = ts_us // 1000
    emitted_us = ts_us + 250_000 + (lsn % 97) * 1000  # the connector emits a little after the commit
    return {
        "before": before, "after": after,
        "source": {"version": "3.6.1.Final", "connector": "postgresql", "name": "tis", "ts_ms": ts_ms,
                   "snapshot": "false", "db": "tss", "sequence": f'["{lsn}","{lsn}"]', "ts_us": ts_us,
                   "ts_ns": ts_us * 1000, "schema": "tss", "table": table, "txId": tx, "lsn": lsn,
                   "xmin": None, "origin": None, "origin_lsn": None},
        "transaction": None, "op": op, "ts_ms": emitted_us // 1000, "ts_us": emitted_us,
        "ts_ns": emitted_us * 1000 + 123,
    }


def keyed(envelopes: list[dict[str, Any]]) -> list[list[tuple[str, bytes, bytes, bytes]]]:
    """One entity's envelopes (in its log order) as the connector sends them: per envelope, its
    messages (table, key, value) and the envelope itself (the batch command's input line)."""
    sent = as_connector_keys(envelopes)
    out: list[list[tuple[str, bytes, bytes, bytes]]] = []
    j = 0
    for env in envelopes:
        line = orjson.dumps(env)
        table = env["source"]["table"]
        if sent[j][1] is env:  # unchanged: one message (its value is the line itself)
            out.append([(table, sent[j][0], line, line)])
            j += 1
        else:  # an owner change: a delete keyed by the old owner and a create keyed by the new one
            out.append([(table, key, orjson.dumps(value), line) for key, value in sent[j:j + 2]])
            j += 2
    assert j == len(sent), "as_connector_keys split an envelope into more than two messages"
    return out


def build_workload(n_trainees: int, events_per_trainee: float, seed: int, moves: float) -> dict[str, Any]:
    """The day's envelopes in log order (``log``: the batch input) and the messages the connector
    sends for them (``events``: table, key, value; an owner change is two messages)."""
    t0 = time.perf_counter()
    pop = generate(n_trainees, seed)
    say(f"generated {n_trainees} trainees in {time.perf_counter() - t0:.1f} s")
    edits = rotation_day_edits(pop, seed, 1.0)
    day = edits.day  # a rotation day (first Wednesday of February: London = UTC, 24 h)
    rng = random.Random(seed + 1)
    offices = {o.name: o for o in ref.LOCAL_OFFICES}
    trainee_ids = [pd.trainee_id for pd in pop.personal_details]
    # entity -> list of (op, new row or None); each entity's edits are applied in order
    scripts: list[tuple[str, str, list[tuple[str, Any]]]] = []  # (table, id, [(op, row)])
    updated_by_rotation = {p.id: p for p in edits.updates}
    stamp = dt.datetime.combine(day, dt.time(9), _UTC)
    moved: set[str] = set()  # trainees that lose or gain a placement (never the recovery marker's)
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
        if moves and rng.random() < moves:  # given to another trainee (a correction): owner change
            other = rng.choice(trainee_ids)
            if other != cur.trainee_id:
                moved.update((cur.trainee_id, other))
                cur = cur._replace(trainee_id=other, updated_at=stamp)
                steps.append(("u", cur))
                if rng.random() < 0.5:  # and edited again, now the new owner's
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
    # the log's positions, in log order; then each entity's envelopes built and keyed on their own
    # (the connector's split of an owner change depends only on the entity's own rows)
    lsn, tx = 3_400_000_000, 900_000
    slots: dict[tuple[int, int], tuple[int, int, int, int]] = {}  # (script, step) -> (log index, ts, lsn, tx)
    for g, (ts_us, si, i) in enumerate(timed):
        lsn += 200 + (ts_us % 7) * 8
        tx += 1
        slots[si, i] = (g, ts_us, lsn, tx)
    by_log: list[list[tuple[str, bytes, bytes, bytes]] | None] = [None] * len(timed)
    for si, (table, eid, steps) in enumerate(scripts):
        orig = originals.get((table, eid))
        state = _row(orig) if orig is not None and steps[0][0] != "c" else None
        envs = []
        for i, (op, row) in enumerate(steps):
            _, ts_us, at, txid = slots[si, i]
            after = _row(row) if row is not None else None
            envs.append(_envelope(table, op, None if op == "c" else state, after, ts_us, at, txid))
            state = after
        for i, msgs in enumerate(keyed(envs)):
            by_log[slots[si, i][0]] = msgs
    del slots
    events: list[tuple[str, bytes, bytes]] = []
    log: list[bytes] = []
    ops: Counter[str] = Counter()
    for msgs in by_log:
        assert msgs is not None
        log.append(msgs[0][3])
        for table, key, value, _ in msgs:
            events.append((table, key, value))
        if len(msgs) > 1:
            ops["owner_changes_split"] += 1
    del by_log
    ops.update(_ops(log))
    size = sum(len(v) for _, _, v in events)
    say(f"workload: {len(log)} envelopes, {len(events)} messages ({size / len(events):.0f} B avg), "
        f"{ops['owner_changes_split']} owner changes in {time.perf_counter() - t0:.1f} s")
    return {"events": events, "log": log, "day": day, "envelopes": len(log), "messages": len(events),
            "avg_bytes": round(size / len(events)), "ops": dict(sorted((k, v) for k, v in ops.items() if v)),
            "last_lsn": lsn, "last_ts_us": timed[-1][0] if timed else day_start_us, "scripts": scripts,
            "tx": tx, "moved_trainees": moved}


def _ops(log: list[bytes]) -> Counter[str]:
    out: Counter[str] = Counter()
    for line in log:
        env = orjson.loads(line)
        out[f"{env['source']['table']}.{env['op']}"] += 1
    return out


# ------------------------------------------------------------------------------------------ pure phases

def pure_phases(work: dict[str, Any], repeat: int) -> dict[str, Any]:
    values = work["log"]  # the envelopes in log order, before the connector's split: the batch input
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
    out["records_with_local_offices"] = sum(1 for r in records if r.get("local_offices"))
    out["baselines"] = agg.baselines
    out["outcomes"] = dict(sorted(agg.outcomes.items()))
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


def batch_records(values: list[bytes]) -> list[dict[str, Any]]:
    """The batch output of these envelopes (the core driven as ``trainee-notify aggregate`` drives it)."""
    agg = Aggregation(Calendar())
    for v in values:
        c = parse_envelope(v)
        if c is not None and c.table in ENTITIES:
            agg.apply(c)
    return list(agg.close_all())


def canonical(record: dict[str, Any], ignore: tuple[str, ...] = ()) -> bytes:
    """A record as bytes that compare equal exactly when the records do (keys sorted)."""
    if ignore:
        record = {k: v for k, v in record.items() if k not in ignore}
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


# ------------------------------------------------------------------------------------------ processes

def metric(port: int, name: str) -> float | None:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    total = 0.0
    for line in body.splitlines():
        if line.startswith((name + " ", name + "{")):  # not the *_created series
            total += float(line.rsplit(" ", 1)[1])
    return total


def ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
    except OSError:
        return False


def readyz_body(port: int) -> str:
    """What /readyz answers (for a report when it stays not ready)."""
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).read().decode()[:300]
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read().decode()[:300]}"
    except OSError as exc:
        return f"no answer ({exc})"


def wait_ready(agg: Aggregator, timeout: float, what: str) -> float:
    try:
        return wait_for(lambda: ready(agg.port), timeout, agg, what=what)
    except TimeoutError:
        applied = metric(agg.port, "netchange_events_applied_total")
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}: /readyz answers "
                           f"{readyz_body(agg.port)}; events applied so far {applied}; see {agg.log}") from None


def vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (Linux /proc): other load on the machine moves
    throughput a lot and this little, so the ratios of CPU per event say what the code costs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_STARTED: list[Aggregator] = []


class Aggregator:
    """One aggregator process: this tree's ``trainee-notify aggregator run``, or another tree's
    (``tree``: its ``services`` first on PYTHONPATH, run with this venv's python from that tree)."""

    def __init__(self, env: dict[str, str], log: Path, tree: Path | None = None) -> None:
        self.env, self.log, self.tree = env, log, tree
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = int(env["TN_WEB_PORT"])

    def start(self) -> Aggregator:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.log, "ab")  # noqa: SIM115 - handed to the child as its stdout
        env = {**os.environ, **self.env}
        if self.tree is None:
            cmd, cwd = [str(BIN), "aggregator", "run"], None
        else:
            cmd, cwd = [sys.executable, "-m", "services.cli", "aggregator", "run"], str(self.tree)
            env["PYTHONPATH"] = str(self.tree)
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)
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


def compare_tree(ref_or_dir: str) -> tuple[Path, str]:
    """A source tree of another version: a directory as given, or ``git archive`` of a commit into
    /tmp/agg-tree-<commit> (reused by later runs; the checkout and its .git are not touched)."""
    given = Path(ref_or_dir)
    if given.is_dir() and (given / "services").is_dir():
        return given.resolve(), given.name
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{ref_or_dir}^{{commit}}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    tree = Path(tempfile.gettempdir()) / f"agg-tree-{sha[:12]}"
    if not (tree / ".complete").exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", sha], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit(f"git archive {sha} failed")
        (tree / ".complete").write_text(sha + "\n")
    return tree, sha[:12]


# ------------------------------------------------------------------------------------------ kafka helpers

def check_load_order(bootstrap: str, topics: list[str], partitions: int, expected: int) -> dict[str, Any]:
    """Read the CDC topics back: per partition, every (table, entity id)'s Debezium position
    (``source.sequence``, then ``source.lsn``) must never go back from one message to the next."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**client_config(bootstrap), "group.id": f"order-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "enable.partition.eof": False})
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    highs = {(tp.topic, tp.partition): c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
    c.assign([TopicPartition(t, p, 0) for (t, p), h in highs.items() if h > 0])
    done = {tp for tp, h in highs.items() if h == 0}
    last: dict[tuple[int, str, str], tuple[int, ...]] = {}
    read = out_of_order = 0
    examples: list[str] = []
    t0 = time.monotonic()
    while len(done) < len(highs):
        if time.monotonic() - t0 > 600:
            raise TimeoutError("reading the CDC topics back took more than 600 s")
        for m in c.consume(10_000, 1.0):
            if m.error():
                continue
            read += 1
            env = orjson.loads(m.value())
            source, table = env["source"], env["source"]["table"]
            row = env["after"] or env["before"]
            eid = str(row[PRIMARY_KEY[table]])
            seq = tuple(int(x or 0) for x in orjson.loads(source["sequence"]))
            pos = (*seq, int(source["lsn"]))
            k = (m.partition(), table, eid)
            prior = last.get(k)
            if prior is not None and pos < prior:
                out_of_order += 1
                if len(examples) < 5:
                    examples.append(f"{m.topic()}[{m.partition()}]@{m.offset()}: {table} {eid} {pos} after {prior}")
            last[k] = pos
            if m.offset() + 1 >= highs[(m.topic(), m.partition())]:
                done.add((m.topic(), m.partition()))
    c.close()
    return {"messages_read_back": read, "messages_expected": expected, "entities_by_partition": len(last),
            "out_of_order_events": out_of_order, "out_of_order_examples": examples,
            "check_seconds": round(time.monotonic() - t0, 2)}


def check_records(bootstrap: str, topic: str, partitions: int, expected: dict[str, bytes],
                  ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every record on the net-change topic against the batch output's, by id and content (``ignore``:
    fields left out on both sides)."""
    from confluent_kafka import Consumer, TopicPartition

    from services import serde

    c = Consumer({**client_config(bootstrap), "group.id": f"check-{uuid.uuid4().hex}",
                  "enable.auto.commit": False})
    highs = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen: dict[str, bytes] = {}
    duplicates = differ = read = undecodable = 0
    done = {p for p, h in highs.items() if h == 0}
    while len(done) < partitions:
        for m in c.consume(10_000, 1.0):
            if m.error():
                continue
            read += 1
            if m.offset() + 1 >= highs[m.partition()]:
                done.add(m.partition())
            try:
                rec = serde.decode(serde.NETCHANGE, m.value())
            except Exception:  # noqa: BLE001 - counted, not fatal: the figure says it
                undecodable += 1
                continue
            d = canonical(rec, ignore)
            if rec["id"] in seen:
                duplicates += 1
                differ += seen[rec["id"]] != d
            seen[rec["id"]] = d
    c.close()
    wrong = [i for i, d in seen.items() if i in expected and expected[i] != d]
    examples = []
    for i in wrong[:5]:  # which fields differ (names only), to say what a mismatch is
        got, want = orjson.loads(seen[i]), orjson.loads(expected[i])
        examples.append({"id": i, "fields": sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))})
    out: dict[str, Any] = {
        "read": read, "ids": len(seen), "duplicates": duplicates, "duplicates_differing": differ,
        "undecodable": undecodable, "missing": sum(1 for i in expected if i not in seen),
        "unexpected": sum(1 for i in seen if i not in expected), "content_differs": len(wrong)}
    if ignore:
        out["fields_ignored"] = list(ignore)
    if examples:
        out["content_differs_examples"] = examples
    out["all_equal"] = (not out["missing"] and not out["unexpected"] and not wrong and not differ
                        and not undecodable)
    return out


def create_topics(bootstrap: str, specs: list[tuple[str, int, dict[str, str]]]) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(bootstrap))
    futures = admin.create_topics([NewTopic(name, n, 1, config=config) for name, n, config in specs])
    for f in futures.values():
        try:
            f.result(30)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise


class Probe:
    """Offsets of the broker, for one consumer group."""

    def __init__(self, bootstrap: str, group: str) -> None:
        from confluent_kafka import Consumer

        self.c = Consumer({**client_config(bootstrap), "group.id": group, "enable.auto.commit": False})

    def highs(self, topic: str, partitions: int) -> list[int]:
        from confluent_kafka import TopicPartition

        return [self.c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in range(partitions)]

    def count(self, topic: str, partitions: int) -> int:
        try:
            return sum(self.highs(topic, partitions))
        except Exception:  # noqa: BLE001 - the topic may not exist yet
            return 0

    def committed_at_least(self, wanted: dict[tuple[str, int], int]) -> bool:
        """Whether the group has committed at least these offsets."""
        from confluent_kafka import TopicPartition

        try:
            committed = self.c.committed([TopicPartition(t, p) for t, p in wanted], timeout=5)
        except Exception:  # noqa: BLE001 - the group may not exist yet
            return False
        return all(tp.offset >= wanted[(tp.topic, tp.partition)] for tp in committed)

    def written(self, prefix: str) -> dict[str, int]:
        """Messages so far in every topic whose name starts with ``prefix``."""
        from confluent_kafka import TopicPartition

        topics = self.c.list_topics(timeout=10).topics
        return {t: sum(self.c.get_watermark_offsets(TopicPartition(t, p), timeout=5)[1] for p in meta.partitions)
                for t, meta in topics.items() if t.startswith(prefix)}

    def close(self) -> None:
        self.c.close()


# ------------------------------------------------------------------------------------------ kafka phases

def run_env(run: str, name: str, prefix: str, bootstrap: str, scratch: Path, args: argparse.Namespace,
            day_start: float) -> dict[str, str]:
    """TN_* settings of one aggregator: its own app id (group, table topics), output topics, data dir,
    watermark file (midday of the day: nothing closes until the close phase) and web port."""
    base = scratch / name
    base.mkdir(parents=True, exist_ok=True)
    (base / "watermark").write_text(str(day_start + 12 * 3600))
    env = {"TN_KAFKA_BOOTSTRAP": bootstrap, "TN_CDC_TOPIC_PREFIX": prefix, "TN_APP_ID": f"{run}-{name}",
           "TN_NETCHANGE_TOPIC": f"{run}-{name}.netchange.v1", "TN_CDC_DLQ_TOPIC": f"{run}-{name}.cdc-dlq.v1",
           "TN_DELIVERY_STATUS_TOPIC": f"{run}.delivery-status.v1", "TN_MAIL_DLQ_TOPIC": f"{run}.mail-dlq.v1",
           "TN_LEDGER_TOPIC": f"{run}.ledger.v1", "TN_TOPIC_PARTITIONS": str(args.partitions),
           "TN_TICK_SECONDS": "1", "TN_LOG_LEVEL": args.log_level, "TN_STORE": "rocksdb://",
           "TN_DATA_DIR": str(base / "data"), "TN_CLOCK_FILE": str(base / "watermark"),
           "TN_WATERMARK_FILE": str(base / "watermark"),  # the old name: what a --compare-tree reads
           "TN_WEB_PORT": str(free_port())}
    env.update(dict(kv.split("=", 1) for kv in args.faust_env))
    return env


def load(bootstrap: str, cdc_topics: dict[str, str], events: list[tuple[str, bytes, bytes]]) -> dict[str, float]:
    """Produce like Kafka Connect, each entity's log order kept: idempotent, acks all, keyed as the
    connector keys (trainee_id), Java's murmur2 partitioner. The seconds it took, and to the first
    delivery (on a fresh broker, the idempotent producer's id waits for the transaction coordinator)."""
    from confluent_kafka import KafkaException, Producer

    failed: list[str] = []
    first: list[float] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))
        elif not first:
            first.append(time.perf_counter())

    producer = Producer({**client_config(bootstrap), "partitioner": "murmur2_random", "linger.ms": 20,
                         "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000,
                         "queue.buffering.max.kbytes": 2_000_000, "acks": "all", "enable.idempotence": True})
    t = time.perf_counter()
    for table, key, value in events:
        while True:
            try:
                producer.produce(cdc_topics[table], value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(300)
    if left or failed:
        raise KafkaException(f"load: {left} messages not delivered, {len(failed)} failed ({failed[:3]})")
    end = time.perf_counter()
    return {"seconds": round(end - t, 2), "seconds_to_first_delivery": round((first or [end])[0] - t, 2)}


def raw_consume(bootstrap: str, topics: list[str], need: int, decode: bool) -> float:
    from confluent_kafka import Consumer

    c = Consumer({**client_config(bootstrap), "group.id": f"raw-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(topics)
    got, t0 = 0, None
    while got < need:
        msgs = c.consume(10_000, 1.0)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        for m in msgs:
            if m.error() is None:
                got += 1
                if decode:
                    orjson.loads(m.value())
    dur = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    return got / dur


def close_day(agg: Aggregator, env: dict[str, str], probe: Probe, day_start: float, expected: int,
              partitions: int, timeout: float) -> dict[str, Any]:
    """Advance the aggregator's watermark past the day's end + grace + maximum hold; wait for the records."""
    topic = env["TN_NETCHANGE_TOPIC"]
    base = probe.count(topic, partitions)
    Path(env["TN_CLOCK_FILE"]).write_text(str(day_start + 86400 + 900 + 3600 + 60))
    t0 = time.monotonic()
    t_first = wait_for(lambda: probe.count(topic, partitions) > base, timeout, agg, 0.1, "first net-change record")
    last = [time.monotonic()]

    def all_out() -> bool:
        n = probe.count(topic, partitions)
        if time.monotonic() - last[0] > 10:
            say(f"  emitted {n} / {expected}")
            last[0] = time.monotonic()
        return n >= expected

    t_all = wait_for(all_out, timeout, agg, 0.25, "all net-change records")
    time.sleep(3)
    return {"records_expected": expected, "records_emitted": probe.count(topic, partitions),
            "first_record_seconds": round(t_first - t0, 2), "all_records_seconds": round(t_all - t0, 2),
            "records_per_s": round(expected / max(t_all - t_first, 1e-9)), "_seconds": t_all - t0}


def compare_tree_phase(tree: Path, name: str, bootstrap: str, prefix: str, run: str, scratch: Path,
                       work: dict[str, Any], expected: dict[str, bytes], args: argparse.Namespace,
                       day_start: float) -> dict[str, Any]:
    """The aggregator of another tree (06826bc: resolve per entity, the packed re-key hop, fold per
    trainee) on the same CDC topics: events/s, peak RSS, changelog messages per event, its records."""
    out: dict[str, Any] = {"tree": str(tree), "ref": name}
    n, parts = work["messages"], args.partitions
    env = run_env(run, f"agg-{name[:7]}", prefix, bootstrap, scratch, args, day_start)
    app_id = env["TN_APP_ID"]
    week = {"retention.ms": str(7 * 86_400_000)}
    compact = {"cleanup.policy": "compact", "retention.ms": "-1"}
    # what faust would create itself just before the group's assignment (the metadata race of issue 8)
    create_topics(bootstrap, [(env["TN_NETCHANGE_TOPIC"], parts, {}), (env["TN_CDC_DLQ_TOPIC"], parts, {}),
                              (f"{app_id}-resolved", parts, week), (f"{app_id}-__assignor-__leader", 1, {})]
                  + [(f"{app_id}-{table}-changelog", parts, compact)
                     for table in ("known", "days", "trainees", "marks")])
    probe = Probe(bootstrap, app_id)
    agg = Aggregator(env, scratch / f"agg-{name[:7]}.log", tree=tree)
    say(f"compare tree {name}: apply phase ({tree})")
    t_start = time.monotonic()
    agg.start()
    try:
        port = agg.port
        t_ready = wait_ready(agg, 180, "readyz (compare tree)")
        t_first = wait_for(lambda: (metric(port, "netchange_events_applied_total") or 0) > 0, 180, agg, 0.05,
                           "first event (compare tree)")
        cpu_first = cpu_seconds(agg.proc.pid)
        last = [time.monotonic()]

        def all_resolved() -> bool:
            v = metric(port, "netchange_events_applied_total") or 0
            if time.monotonic() - last[0] > 10:
                say(f"  resolved {v:.0f} / {n}, rss hwm {vm_hwm_mb(agg.proc.pid)} MB")
                last[0] = time.monotonic()
            return v >= n

        t_resolved = wait_for(all_resolved, args.timeout, agg, 0.25, "all events resolved (compare tree)")
        # every pack sent by then (packs wait at most TN_PACK_SECONDS, 0.2 s) folded and its offset committed
        time.sleep(1.0)
        hop = f"{app_id}-resolved"
        wanted = {(hop, p): h for p, h in enumerate(probe.highs(hop, parts))}
        t_folded = wait_for(lambda: probe.committed_at_least(wanted), args.timeout, agg, 0.25,
                            "fold committed (compare tree)")
        out["cpu_ms_per_event"] = round((cpu_seconds(agg.proc.pid) - cpu_first) / n * 1000, 4)
        out["startup_to_ready_seconds"] = round(t_ready - t_start, 2)
        out["resolve_seconds"] = round(t_resolved - t_first, 2)
        out["events_per_s_resolved"] = round(n / (t_resolved - t_first))
        out["fold_committed_seconds"] = round(t_folded - t_first, 2)
        out["events_per_s"] = round(n / (t_folded - t_first))
        out["loadavg_1m_at_folded"] = round(os.getloadavg()[0], 2)
        out["dead_letters"] = metric(port, "netchange_dead_letters_total")
        time.sleep(6)  # let faust commit and flush its changelogs
        out["peak_rss_mb_apply"] = vm_hwm_mb(agg.proc.pid)
        written = probe.written(app_id + "-")
        out["changelog_messages_per_event"] = round(sum(v for t, v in written.items()
                                                        if t.endswith("-changelog")) / n, 3)
        out["changelog_messages_by_table_per_event"] = {
            t[len(app_id) + 1:-len("-changelog")]: round(v / n, 3) for t, v in sorted(written.items())
            if t.endswith("-changelog")}
        out["resolved_messages_per_event_ticks_included"] = round(written.get(hop, 0) / n, 4)
        say(f"compare tree: resolved {n} in {t_resolved - t_first:.1f} s, folded at {t_folded - t_first:.1f} s")
        say("compare tree: close phase")
        close = close_day(agg, env, probe, day_start, len(expected), parts, args.timeout)
        out["whole_day_end_to_end_seconds"] = round((t_folded - t_first) + close.pop("_seconds"), 2)
        out["close"] = close
        out["peak_rss_mb_after_close"] = vm_hwm_mb(agg.proc.pid)
        out["records_checked_against_batch"] = check_records(bootstrap, env["TN_NETCHANGE_TOPIC"], parts, expected,
                                                             ignore=IGNORED_FOR_COMPARE_TREE)
        say(f"compare tree records against the batch output: {out['records_checked_against_batch']}")
    finally:
        agg.stop()
        probe.close()
    return out


def this_phase(bootstrap: str, prefix: str, run: str, scratch: Path, work: dict[str, Any],
               expected: dict[str, bytes], cdc_topics: dict[str, str], env: dict[str, str],
               args: argparse.Namespace, day_start: float) -> dict[str, Any]:
    """This aggregator: apply phase, table writes per event, recovery after kill -9, close, records."""
    out: dict[str, Any] = {}
    n, parts = work["messages"], args.partitions
    app_id = env["TN_APP_ID"]
    data_dir = Path(env["TN_DATA_DIR"])
    probe = Probe(bootstrap, app_id)
    agg = Aggregator(env, scratch / "aggregator.log")
    # more workers in the same group (--workers): the partitions are shared among them
    extra = [Aggregator({**env, "TN_WEB_PORT": str(free_port()), "TN_DATA_DIR": str(scratch / f"data-w{i}")},
                        scratch / f"aggregator-w{i}.log") for i in range(2, args.workers + 1)]
    out["workers"] = args.workers
    say("this aggregator: apply phase")
    t_start = time.monotonic()
    agg.start()
    for w in extra:
        w.start()
    try:
        port = agg.port
        ports = [port] + [w.port for w in extra]
        t_ready = wait_ready(agg, 180, "readyz")

        def total(name: str) -> float:  # replays after the start-up rebalance count too (several workers)
            return sum(metric(p, name) or 0 for p in ports)

        t_first = wait_for(lambda: total("netchange_events_applied_total") > 0, 180, agg, 0.05, "first event")
        cpu_first = cpu_seconds(agg.proc.pid)
        last = [time.monotonic()]

        def all_applied() -> bool:
            v = total("netchange_events_applied_total")
            for w in extra:
                w.check()
            if time.monotonic() - last[0] > 10:
                say(f"  applied {v:.0f} / {n}, rss hwm {vm_hwm_mb(agg.proc.pid)} MB")
                last[0] = time.monotonic()
            # several workers: replays after their rebalances count as applied too, so also wait until
            # the group has committed every CDC record
            return v >= n and (not extra or probe.committed_at_least(cdc_highs))

        cdc_highs = {(t, p): h for t in cdc_topics.values() for p, h in enumerate(probe.highs(t, parts))}
        t_applied = wait_for(all_applied, args.timeout, agg, 0.25, "all events applied")
        cpu_applied = cpu_seconds(agg.proc.pid)
        out["loadavg_1m_at_applied"] = round(os.getloadavg()[0], 2)
        t_committed = wait_for(lambda: probe.committed_at_least(cdc_highs), args.timeout, agg, 0.25,
                               "every CDC offset committed")
        out["startup_to_ready_seconds"] = round(t_ready - t_start, 2)
        out["apply_seconds"] = round(t_applied - t_first, 2)
        out["events_per_s"] = round(n / (t_applied - t_first))
        out["committed_seconds"] = round(t_committed - t_first, 2)
        out["events_per_s_committed"] = round(n / (t_committed - t_first))
        # the first worker's CPU per event (with --workers, only its share of the events is known: omitted)
        out["cpu_ms_per_event"] = None if extra else round((cpu_applied - cpu_first) / n * 1000, 4)
        out["dead_letters"] = total("netchange_dead_letters_total")
        writes = total("netchange_state_writes_total")
        out["state_writes"] = writes
        out["state_writes_per_event"] = round(writes / n, 3)
        out["events_folded"] = total("netchange_events_folded_total")
        say(f"applied {n} in {t_applied - t_first:.1f} s; committed at {t_committed - t_first:.1f} s")
        time.sleep(6)  # let faust commit (broker_commit_interval 2.8 s) so a restart replays little
        out["peak_rss_mb_apply"] = vm_hwm_mb(agg.proc.pid)
        if extra:
            out["peak_rss_mb_apply_other_workers"] = [vm_hwm_mb(w.proc.pid) for w in extra]
        written = probe.written(app_id + "-")
        out["changelog_messages_per_event"] = round(sum(v for t, v in written.items()
                                                        if t.endswith("-changelog")) / n, 3)
        out["messages_written_by_topic"] = {t[len(app_id) + 1:]: v for t, v in sorted(written.items())}

        # recovery after kill -9: the marker is a new event on a live entity (later LSN, same day) whose
        # trainee's records are then recomputed by the batch core with the markers included
        recovery: dict[str, Any] = {}
        markers: list[bytes] = []
        modes = [] if args.skip_recovery or extra else ["keep", "wipe"] if args.recovery == "both" else [args.recovery]
        for mode in modes:
            agg.kill()
            if mode == "wipe":
                shutil.rmtree(data_dir, ignore_errors=True)
            say(f"recovery with data dir {mode}")
            agg = Aggregator({**env, "TN_WEB_PORT": str(free_port())}, scratch / f"aggregator-{mode}.log")
            port = agg.port
            t0 = time.monotonic()
            agg.start()
            t_r = wait_for(lambda port=port: ready(port) and metric(port, "netchange_events_applied_total") is not None,
                           args.timeout, agg, 0.1, "ready after restart")
            replayed = metric(port, "netchange_events_applied_total") or 0
            markers.append(send_marker(bootstrap, cdc_topics, work, markers))
            t_m = wait_for(lambda port=port, replayed=replayed: (metric(port, "netchange_events_applied_total") or 0)
                           > replayed, args.timeout, agg, 0.05, "marker event")
            recovery[mode] = {"ready_seconds": round(t_r - t0, 2), "ready_and_new_event_seconds": round(t_m - t0, 2),
                              "replayed_events_at_ready": replayed, "peak_rss_mb": vm_hwm_mb(agg.proc.pid)}
            say(f"  {mode}: {recovery[mode]}")
            time.sleep(4)
        out["recovery_after_kill"] = recovery
        if markers:
            expected = with_markers(work, expected, markers)

        say("this aggregator: close phase")
        close = close_day(agg, env, probe, day_start, len(expected), parts, args.timeout)
        out["whole_day_end_to_end_seconds"] = round((t_applied - t_first) + close.pop("_seconds"), 2)
        out["close"] = close
        out["peak_rss_mb_after_close"] = vm_hwm_mb(agg.proc.pid)
        out["dead_letters_at_end"] = metric(agg.port, "netchange_dead_letters_total")
        out["records_checked_against_batch"] = check_records(bootstrap, env["TN_NETCHANGE_TOPIC"], parts, expected)
        say(f"records against the batch output: {out['records_checked_against_batch']}")
    finally:
        agg.stop()
        for w in extra:
            w.stop()
        probe.close()
    return out


def _marker_entity(work: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """A placement whose last step is an update, of a trainee that no owner change touches."""
    moved = work["moved_trainees"]
    for table, eid, steps in work["scripts"]:
        if table == "placement" and steps[-1][0] == "u" and steps[-1][1].trainee_id not in moved:
            return table, eid, _row(steps[-1][1])
    raise RuntimeError("no placement for the recovery marker")


def send_marker(bootstrap: str, cdc_topics: dict[str, str], work: dict[str, Any], sent: list[bytes]) -> bytes:
    """One more update of the marker entity, keyed as the connector keys it: whole_time_equivalent set
    to a value it has not had today, so every marker shows in the day's record."""
    from confluent_kafka import Producer

    table, _, row = _marker_entity(work)
    before = orjson.loads(sent[-1])["after"] if sent else row
    had = {row["whole_time_equivalent"]} | {orjson.loads(m)["after"]["whole_time_equivalent"] for m in sent}
    after = dict(before, whole_time_equivalent=next(w for w, _ in ref.WTE if w not in had))
    k = len(sent) + 1
    env = _envelope(table, "u", before, after, work["last_ts_us"] + 1000 * k, work["last_lsn"] + 1000 * k,
                    work["tx"] + k)
    [(key, value)] = as_connector_keys([env])
    body = orjson.dumps(value)
    producer = Producer({**client_config(bootstrap), "partitioner": "murmur2_random", "acks": "all",
                         "enable.idempotence": True})
    producer.produce(cdc_topics[table], body, key)
    if producer.flush(30):
        raise RuntimeError("the recovery marker was not delivered")
    return body


def with_markers(work: dict[str, Any], expected: dict[str, bytes], markers: list[bytes]) -> dict[str, bytes]:
    """The batch output with the markers applied: the marker trainee's records recomputed from all of
    that trainee's envelopes and the markers (the fold is per trainee: nobody else's record changes)."""
    _, _, row = _marker_entity(work)
    who = str(row["trainee_id"])
    key = orjson.dumps({"trainee_id": who})
    mine = [value for _, k, value in work["events"] if k == key] + markers
    out = {i: v for i, v in expected.items() if not i.startswith(f"{who}:")}
    out.update({r["id"]: canonical(r) for r in batch_records(mine)})
    return out


def kafka_phases(work: dict[str, Any], expected: dict[str, bytes], args: argparse.Namespace) -> dict[str, Any]:
    from services.settings import AggregatorSettings
    from services.topics import apply_topics

    out: dict[str, Any] = {"partitions": args.partitions}
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        from services.devstack import stack

        say(f"starting the local stack in {args.scratch} (no Connect)")
        bootstrap = stack.up(Path(args.scratch), with_connect=False).bootstrap
    run = f"bench{int(time.time())}"
    prefix = run  # fresh CDC topics every run
    out["run_id"] = run
    scratch = Path(args.scratch) / run
    scratch.mkdir(parents=True, exist_ok=True)
    day_start = dt.datetime.combine(work["day"], dt.time(), dt.UTC).timestamp()  # February: London = UTC
    env = run_env(run, "aggregator", prefix, bootstrap, scratch, args, day_start)
    out["faust_env"] = dict(kv.split("=", 1) for kv in args.faust_env)
    settings = AggregatorSettings(**{k[3:].lower(): v for k, v in env.items()
                                     if k.startswith("TN_")
                                     and k not in ("TN_LOG_LEVEL", "TN_CLOCK_FILE", "TN_WATERMARK_FILE")})
    apply_topics(settings)  # the CDC topics, the heartbeat topic and this aggregator's own topics
    cdc_topics = {t: f"{prefix}.tss.{t}" for t in ENTITIES}
    n = work["messages"]

    say(f"loading {n} messages to {prefix}.tss.* (idempotent producer)")
    out["load"] = {**load(bootstrap, cdc_topics, work["events"]), "messages": n}
    say("reading the CDC topics back: each entity's order per partition")
    out["load"].update(check_load_order(bootstrap, list(cdc_topics.values()), args.partitions, n))
    say(f"load: {out['load']}")
    if out["load"]["out_of_order_events"] or out["load"]["messages_read_back"] != n:
        print(json.dumps(out, indent=2), file=sys.stderr)
        raise SystemExit(f"LOAD CHECK FAILED: {out['load']['out_of_order_events']} events out of order, "
                         f"{out['load']['messages_read_back']} of {n} messages read back")

    say("raw consume")
    out["raw_consume_events_per_s"] = round(raw_consume(bootstrap, list(cdc_topics.values()), n, False))
    out["raw_consume_and_orjson_events_per_s"] = round(raw_consume(bootstrap, list(cdc_topics.values()), n, True))

    say("faust no-op agent (faust's fetch loop)")
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("faust_noop.py")), bootstrap, str(n),
                           *cdc_topics.values()], capture_output=True, text=True, timeout=args.timeout, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    noop = json.loads(lines[-1]) if lines else {}
    out["loadavg_1m_after_faust_noop"] = round(os.getloadavg()[0], 2)
    out["faust_noop_events_per_s"] = noop.get("messages_per_s")
    out["faust_noop_cpu_ms_per_event"] = round(noop["cpu_seconds"] / n * 1000, 4) if "cpu_seconds" in noop else None
    if not lines:
        say(f"faust no-op agent failed ({done.returncode}): {done.stderr[-2000:]}")

    if not args.no_compare:
        tree, name = compare_tree(args.compare_tree)
        stripped = {i: canonical(orjson.loads(v), IGNORED_FOR_COMPARE_TREE) for i, v in expected.items()}
        try:
            out["compare_tree"] = compare_tree_phase(tree, name, bootstrap, prefix, run, scratch, work, stripped,
                                                     args, day_start)
        except Exception as exc:  # noqa: BLE001 - reported in the figures, the rest of the run goes on
            say(f"compare tree failed: {type(exc).__name__}: {exc}")
            out["compare_tree"] = {"tree": str(tree), "ref": name, "error": f"{type(exc).__name__}: {exc}"}
        del stripped

    out["this"] = this_phase(bootstrap, prefix, run, scratch, work, expected, cdc_topics, env, args, day_start)

    this, noop, old = out["this"], out.get("faust_noop_events_per_s"), out.get("compare_tree", {})
    ratios: dict[str, Any] = {
        "ratio_this_to_raw_consume": round(this["events_per_s"] / out["raw_consume_events_per_s"], 3)}
    if noop:
        ratios["ratio_this_to_faust_noop"] = round(this["events_per_s"] / noop, 3)
    if old.get("events_per_s"):
        ratios["ratio_this_to_compare_tree"] = round(this["events_per_s_committed"] / old["events_per_s"], 3)
        ratios["ratio_this_to_compare_tree_applied"] = round(this["events_per_s"] / old["events_per_s_resolved"], 3)
    # the same by CPU time per event (what the code costs, whatever else the machine was doing)
    if this.get("cpu_ms_per_event"):
        if out.get("faust_noop_cpu_ms_per_event"):
            ratios["cpu_ratio_faust_noop_to_this"] = round(
                out["faust_noop_cpu_ms_per_event"] / this["cpu_ms_per_event"], 3)
        if old.get("cpu_ms_per_event"):
            ratios["cpu_ratio_compare_tree_to_this"] = round(old["cpu_ms_per_event"] / this["cpu_ms_per_event"], 3)
    out["ratios"] = ratios
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trainees", type=int, default=80_000)
    p.add_argument("--quick", action="store_true", help="5,000 trainees")
    p.add_argument("--events-per-trainee", type=float, default=10.0)
    p.add_argument("--moves", type=float, default=0.001,
                   help="fraction of placements given to another trainee during the day (owner changes)")
    p.add_argument("--seed", type=int, default=20270203)
    p.add_argument("--repeat", type=int, default=3, help="best of N for the pure phases")
    p.add_argument("--no-kafka", action="store_true", help="pure phases only")
    p.add_argument("--bootstrap", help="use this Kafka instead of starting the local stack")
    p.add_argument("--scratch", default="/tmp/benchstack")  # noqa: S108  a default the user can change; the stack's own files
    p.add_argument("--partitions", type=int, default=12, help="partitions of every topic (12 as deployed)")
    p.add_argument("--compare-tree", default="06826bc", metavar="REF",
                   help="also run the aggregator of this commit (git archive into /tmp) or source directory")
    p.add_argument("--no-compare", action="store_true", help="skip the compare tree's aggregator")
    p.add_argument("--recovery", choices=["keep", "wipe", "both"], default="both")
    p.add_argument("--log-level", default="INFO", help="TN_LOG_LEVEL of the aggregators")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--dump", help="write the envelopes (JSON lines, log order: the batch input) to this file")
    p.add_argument("--faust-env", action="append", default=[], metavar="NAME=VALUE",
                   help="experiments: faust settings by environment (PRODUCER_LINGER=0.02, STREAM_BUFFER_MAXSIZE=...)")
    p.add_argument("--skip-recovery", action="store_true")
    p.add_argument("--workers", type=int, default=1,
                   help="workers of this aggregator in one consumer group (more than 1: no recovery phases)")
    args = p.parse_args()
    # the JSON goes to the real stdout; anything else printing there (the stack's logs) goes to stderr
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    n = 5_000 if args.quick else args.trainees
    work = build_workload(n, args.events_per_trainee, args.seed, args.moves)
    if args.dump:
        with open(args.dump, "wb") as fh:
            fh.writelines(v + b"\n" for v in work["log"])
    result: dict[str, Any] = {
        "trainees": n, "day": work["day"].isoformat(), "envelopes": work["envelopes"],
        "messages": work["messages"], "tombstones": 0, "avg_message_bytes": work["avg_bytes"],
        "snapshot_first": False, "ops": work["ops"], "python": sys.version.split()[0], "cpus": os.cpu_count(),
    }
    say("pure phases")
    result["loadavg_1m_before"] = round(os.getloadavg()[0], 2)
    pure = pure_phases(work, args.repeat)
    result["loadavg_1m_after_pure"] = round(os.getloadavg()[0], 2)
    records = pure.pop("_records")
    result["pure"] = pure
    say(json.dumps(pure))
    if not args.no_kafka:
        # what the batch core printed, record by record, to check the stream's records against
        expected = {r["id"]: canonical(r) for r in records}
        del records
        gc.collect()
        result["kafka"] = kafka_phases(work, expected, args)
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
