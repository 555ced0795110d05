"""Seeded multi-day workloads of Debezium envelopes, and a harness that runs the real aggregator
against its own topics on the shared broker (so tests never see each other's records)."""

from __future__ import annotations

import datetime as dt
import random
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from services import serde
from services.kafka_security import client_config, librdkafka_config
from services.netchange.cdc import PRIMARY_KEY
from services.netchange.trainee import as_connector_keys
from services.topics import apply_topics
from tests.integration.procs import Service, aggregator
from tests.unit.envelopes import envelope, person, placement

LONDON = ZoneInfo("Europe/London")
SITES = ("Addenbrooke's Hospital", "Royal Papworth Hospital", "Peterborough City Hospital", "Hinchingbrooke Hospital")


def london_ms(day: dt.date, hour: float) -> int:
    start = dt.datetime.combine(day, dt.time(), tzinfo=LONDON)
    return int(start.timestamp() * 1000 + hour * 3_600_000)


def workload(seed: int, prefix: str, trainees: int, days: list[dt.date], edits_per_day: int) -> list[dict[str, Any]]:
    """A snapshot of ``trainees`` people with placements the day before ``days[0]``, then random edits
    (site, grade, moves, creates, deletes, email changes, undone edits) at random London times."""
    rng = random.Random(seed)
    lsn = [10_000]

    def next_lsn() -> int:
        lsn[0] += 8
        return lsn[0]

    db: dict[tuple[str, str], dict[str, Any] | None] = {}
    out: list[dict[str, Any]] = []
    ids = [f"{prefix}{i}" for i in range(trainees)]
    snap = london_ms(days[0] - dt.timedelta(days=1), 12)
    for i, tid in enumerate(ids):
        db[("personal_details", tid)] = person(tid, surname=f"Surname{i}", email=f"dr.{tid}@example.nhs.uk")
        for j in range(2):
            pid = f"{tid}-p{j}"
            db[("placement", pid)] = placement(pid, tid, site=SITES[(i + j) % len(SITES)])
    for (table, _), row in db.items():
        out.append(envelope(table, "r", None, row, snap, lsn=next_lsn(), snapshot="true"))
    serial = 0
    for day in days:
        times = sorted(rng.uniform(0, 23.99) for _ in range(edits_per_day))
        for hour in times:
            ts = london_ms(day, hour)
            tid = rng.choice(ids)
            what = rng.choice(["site", "site", "grade", "move", "create", "delete", "email", "undo"])
            mine = [k for k, v in db.items() if k[0] == "placement" and v is not None and v["trainee_id"] == tid]
            steps: list[tuple[tuple[str, str], dict[str, Any] | None]] = []
            if what == "email":
                key = ("personal_details", tid)
                old = db[key]
                assert old is not None
                steps.append((key, {**old, "email": f"dr.{tid}.{serial}@example.nhs.uk"}))
            elif what == "create" or not mine:
                serial += 1
                key = ("placement", f"{tid}-n{serial}")
                steps.append((key, placement(key[1], tid, site=rng.choice(SITES))))
            else:
                key = rng.choice(mine)
                old = db[key]
                assert old is not None
                if what == "delete":
                    steps.append((key, None))
                elif what == "move":
                    steps.append((key, {**old, "trainee_id": rng.choice(ids)}))
                elif what == "grade":
                    steps.append((key, {**old, "grade": rng.choice(["ST3", "ST4", "ST5"])}))
                elif what == "undo":
                    steps += [(key, {**old, "site": "Temporary Site"}), (key, old)]
                else:
                    steps.append((key, {**old, "site": rng.choice(SITES)}))
            for key, new in steps:
                old = db.get(key)
                op = "c" if old is None else "d" if new is None else "u"
                out.append(envelope(key[0], op, old, new, ts, lsn=next_lsn()))
                db[key] = new
    return out


def entity_key(env: dict[str, Any]) -> bytes:
    """The key of a connector without ``message.key.columns``: the primary key (refused by the aggregator)."""
    table = env["source"]["table"]
    row = env["after"] or env["before"]
    pk = PRIMARY_KEY[table]
    return orjson.dumps({pk: row[pk]})


class AggregatorRun:
    """Topics of its own (CDC prefix, output, dead letters), a file clock, and real aggregator processes."""

    def __init__(self, stack: Any, scratch: Path, partitions: int = 4) -> None:
        self.stack = stack
        self.scratch = scratch
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.settings = stack.kafka_settings().model_copy(update={  # the stack's broker, TLS and SASL
            "cdc_topic_prefix": self.prefix, "topic_partitions": partitions,
            "netchange_topic": f"{self.prefix}.netchange", "cdc_dlq_topic": f"{self.prefix}.cdc-dlq",
            "app_id": f"agg-{self.prefix}"})
        apply_topics(self.settings)  # with the heartbeat topic of this prefix and the aggregator's own
        self.clock = scratch / "clock"
        # idempotent: keeps each trainee's order; murmur2: the partitions Kafka Connect picks for a key
        self.producer = Producer({**librdkafka_config(stack.kafka_settings()), "linger.ms": 20,
                                  "enable.idempotence": True, "partitioner": "murmur2_random"})
        self.app_id = self.settings.app_id

    def set_clock(self, epoch_ms: int, heartbeat: bool = True) -> None:
        """The aggregator's wall clock; with ``heartbeat``, the connector reports progress up to it."""
        self.clock.write_text(str(epoch_ms / 1000))
        if heartbeat:
            self.producer.produce(f"__debezium-heartbeat.{self.prefix}", key=b'{"serverName":"tis"}',
                                  value=orjson.dumps({"ts_ms": epoch_ms}))
            self.producer.flush(30)

    def produce(self, envelopes: list[dict[str, Any]] | list[bytes], table: str | None = None,
                key: bytes = b"bad") -> None:
        """Envelopes keyed by trainee as the connector sends them (an owner change split into delete and
        create), or raw values on ``table``'s topic with ``key``."""
        if envelopes and isinstance(envelopes[0], bytes):
            assert table is not None
            for value in envelopes:
                self.producer.produce(f"{self.prefix}.tss.{table}", key=key, value=value)
        else:
            for k, env in as_connector_keys(envelopes):  # type: ignore[arg-type]
                self.producer.produce(f"{self.prefix}.tss.{env['source']['table']}", key=k, value=orjson.dumps(env))
        self.producer.flush(60)

    def service(self, name: str = "aggregator", **env: str) -> Service:
        base = {"TN_CDC_TOPIC_PREFIX": self.prefix, "TN_NETCHANGE_TOPIC": self.settings.netchange_topic,
                "TN_CDC_DLQ_TOPIC": self.settings.cdc_dlq_topic, "TN_APP_ID": self.app_id,
                "TN_CLOCK_FILE": str(self.clock), "TN_TOPIC_PARTITIONS": str(self.settings.topic_partitions),
                "TN_GRACE_SECONDS": "900", "TN_MAX_HOLD_SECONDS": "3600"}
        return aggregator(self.stack, self.scratch, name, **{**base, **env})

    def records(self, expected: int, timeout: float = 120, idle: float = 3.0, topic: str | None = None
                ) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
        """Everything on the output topic: wait for ``expected`` messages, then until ``idle`` s of quiet."""
        consumer = Consumer({**librdkafka_config(self.stack.kafka_settings()), "group.id": f"read-{uuid.uuid4().hex}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([topic or self.settings.netchange_topic])
        found: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        try:
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    if len(found) >= expected and time.monotonic() - last > idle:
                        break
                    continue
                found.append((msg.key(), msg.value(), list(msg.headers() or [])))
                last = time.monotonic()
        finally:
            consumer.close()
        return found

    def netchange(self, expected: int, timeout: float = 120, idle: float = 3.0) -> list[dict[str, Any]]:
        return [serde.decode(serde.NETCHANGE, v) for _, v, _ in self.records(expected, timeout, idle)]


def metric(service: Service, name: str, least: bool = False) -> float:
    """Sum (or with ``least``, the smallest) of a Prometheus metric's samples on a running service (0
    when not reachable yet or when it has no samples)."""
    port = service.env["TN_WEB_PORT"]
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith((name + " ", name + "{"))]
    if not values:
        return 0.0
    return min(values) if least else sum(values)


def wait_metric(service: Service, name: str, at_least: float, timeout: float = 120, least: bool = False) -> float:
    deadline = time.monotonic() + timeout
    value = 0.0
    while time.monotonic() < deadline:
        value = metric(service, name, least)
        if value >= at_least:
            return value
        assert service.alive, f"{service.name} died:\n{service.log()[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"{name} reached {value}, not {at_least}, within {timeout:.0f} s")


def committed_offsets(bootstrap: str, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset consumer group ``group`` has committed (negative: none)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    admin = AdminClient(client_config(bootstrap))
    meta = admin.list_topics(timeout=10)
    tps = [TopicPartition(t, p) for t in topics for p in meta.topics[t].partitions]
    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])[group]
    return {(tp.topic, tp.partition): tp.offset for tp in fut.result(10).topic_partitions}


def partition_lag(bootstrap: str, group: str, topics: list[str]) -> dict[str, int]:
    """"topic:partition" -> records not yet committed by consumer group ``group`` (only those behind)."""
    from confluent_kafka import TopicPartition

    committed = committed_offsets(bootstrap, group, topics)
    probe = Consumer({**client_config(bootstrap), "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        lag = {}
        for (topic, partition), done in committed.items():
            _, high = probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > max(done, 0):
                lag[f"{topic}:{partition}"] = high - max(done, 0)
        return lag
    finally:
        probe.close()


def group_lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Records of ``topics`` not yet committed by consumer group ``group``."""
    return sum(partition_lag(bootstrap, group, topics).values())


def wait_caught_up(run: AggregatorRun, timeout: float = 180, services: tuple[Service, ...] = ()) -> None:
    """Until the aggregator's group has committed every CDC record (one stage: a committed CDC record
    has been applied and its trainee's state written). On failure: the partitions behind and the end
    of each named service's log."""
    cdc = list(run.settings.cdc_topics())
    deadline = time.monotonic() + timeout
    lag: dict[str, int] = {}
    while time.monotonic() < deadline:
        lag = partition_lag(run.stack.bootstrap, run.app_id, cdc)
        if not lag:
            return
        time.sleep(1)
    logs = "".join(f"\n--- {s.name} ({'alive' if s.alive else 'stopped'}) ---\n{s.log()[-4000:]}" for s in services)
    raise AssertionError(f"aggregator still {sum(lag.values())} CDC records behind after {timeout:.0f} s: {lag}{logs}")
