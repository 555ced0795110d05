"""The faust shell around the per-trainee fold (:mod:`services.netchange.trainee`): one stage.

The connector keys every change by ``trainee_id`` (ADR 0004), so the six CDC topics are co-partitioned
by trainee and one agent, ``aggregate``, reads them all (faust's assignor gives one worker the same
partition of every topic it reads). Per trainee, one value in one changelogged table, ``trainee_state``:
the known state of the trainee's records, its open days and its personal-details history. An event
is parsed and checked, applied by the pure :class:`~services.netchange.trainee.Fold`, and the new
state written once. Anything that goes wrong with one event (its parse, its values, its key, its
apply) sends it to the CDC dead letter with the reason and its coordinates; the trainee's state stays
as it was and the partition goes on.

Days close on watermark ticks: the worker holding the connector's heartbeat partition sends a tick to
every partition of the ticks topic, which the same agent reads, co-partitioned with the CDC topics. A
tick closes the days of *its* partition whose end + grace the watermark has passed: records are
produced and acknowledged by the broker first, state written after, so a crash re-emits identical
records (same key) and never loses one. faust's windowed tables and ``on_window_close`` are not used
(notes-stack.md); the topics faust would create (the table's changelog, the ticks, the assignor's
leader topic) are declared in :mod:`services.topics` and created before the worker starts.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from services import kafka_security, logs, serde
from services.netchange import trainee as tf
from services.netchange import watchdog
from services.netchange.cdc import ENTITIES, Change, MalformedEnvelope, parse_envelope
from services.netchange.days import Calendar
from services.netchange.stall import Watch
from services.netchange.trainee import Fold, TraineeState
from services.netchange.watermark import Clock, WallClock, watermark
from services.settings import AggregatorSettings

log = logs.get("aggregator")

EVENTS = Counter("netchange_events_applied_total", "CDC events applied to the core", ["table"])
REPLAYS = Counter("netchange_replays_skipped_total", "events recognised as already applied")
BASELINES = Counter("netchange_baselines_total", "snapshot reads and first-seen rows (original unknown)")
DAYS_CLOSED = Counter("netchange_days_closed_total", "(trainee, day) folds closed")
RECORDS = Counter("netchange_records_emitted_total", "net-change records produced", ["suppressed"])
FOLDED = Counter("netchange_events_folded_total", "changes folded into a trainee's day")
LATE = Counter("netchange_late_events_total", "events that arrived after their day closed")
DEAD = Counter("netchange_dead_letters_total", "events or records sent to the CDC dead-letter topic", ["reason"])
WRITES = Counter("netchange_state_writes_total", "trainee states written to the table (one changelog message each)")
WM_LAG = Gauge("netchange_watermark_lag_seconds", "how far the watermark is held behind the wall clock")
WM_FORCED = Gauge("netchange_watermark_forced", "1 when the connector lags past the maximum hold (alert)")
WM_APPLIED = Gauge("netchange_watermark_applied_seconds", "the watermark each input partition's days are closed to",
                   ["partition"])
WITHOUT_OWNER = Counter("netchange_events_without_trainee_total", "row changes that belong to no trainee "
                        "(trainee_id null): nobody to notify")
TICK = b"__tick__"
TABLE = "trainee_state"
MARK = b"~mark:%d"  # a partition's watermark, in the same table (trainee ids starting with ~ are refused)
MAX_MESSAGE = 900_000  # under faust's 1,000,000-byte producer request limit, with room for headers
EARLIEST_MS, LATEST_MS = 946_684_800_000, 4_102_444_800_000  # 2000-01-01, 2100-01-01: as source.ts_ms


_COLUMN = re.compile(r"\b(before|after)\.\S+")


def _reason_label(reason: str) -> str:
    """A bounded metric label: the reason's kind, column names left out."""
    return _COLUMN.sub(r"\1.<column>", reason.split(":")[0])[:40]


def build_app(settings: AggregatorSettings, clock: Clock | None = None,
              changelog_partitions: int | None = None) -> faust.App:
    """``changelog_partitions``: what the broker said of the table's changelog before the worker
    started (None: not checked); another count than the CDC topics' makes every table write fail."""
    clock = clock or WallClock()
    fold = Fold(Calendar(settings.timezone, settings.day_seconds), int(settings.grace_seconds * 1000))
    app = faust.App(
        settings.app_id,
        **kafka_security.faust_kwargs(settings),  # broker and broker_credentials (TLS, SASL)
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        table_standby_replicas=settings.standby_replicas,
        stream_wait_empty=False,
        # measured (docs/benchmarks.md): batching the producer is +50 % events/s; a short session
        # timeout lets a restarted worker take its partitions back in seconds, not a minute
        producer_linger=0.05,
        producer_max_batch_size=1 << 20,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
    )
    ticks_name = settings.ticks_topic()
    inputs = app.topic(*settings.cdc_topics(), ticks_name, key_type=bytes, value_type=bytes)
    ticks = app.topic(ticks_name, key_type=bytes, value_type=bytes)
    heartbeat_name = settings.heartbeat_topic()
    heartbeat = app.topic(heartbeat_name, key_type=bytes, value_type=bytes)
    netchange = app.topic(settings.netchange_topic, key_type=bytes, value_type=bytes)
    dlq = app.topic(settings.cdc_dlq_topic, key_type=bytes, value_type=bytes)
    # named "trainee_state", not "trainees": the two-stage aggregator's table of that name held other
    # values, and an upgrade that kept its app id would read them (ADR 0005)
    trainees = app.Table(TABLE, key_type=bytes, value_type=bytes, partitions=settings.topic_partitions,
                         options=_rocksdb_options())

    events_of = {table: EVENTS.labels(table) for table in ENTITIES}  # labels() looked up once, not per event
    progress: dict[str, int] = {}  # the connector's progress: newest source time and heartbeat seen
    watch = Watch(settings.stall_seconds)
    # when the agent last crashed, last wrote the table, and whether closing days last failed
    health = {"crashed": 0.0, "written": 0.0, "close_failed": 0.0}
    warned: set[str] = set()  # configuration faults already logged as errors (once each)
    # decoded states of this worker's partitions (bounded), with the consumer generation they were read
    # in: a state read before a rebalance is never used after it (recovery may have changed the store)
    cache: dict[bytes, tuple[int, TraineeState]] = {}
    marks: dict[int, int] = {}  # partition -> its watermark
    index: dict[int, dict[str, set[str]]] = {}  # partition -> day label -> trainees with that day open
    rewritten: set[bytes] = set()  # trainees whose state was written again after a replay (since the rebalance)

    def load(key: bytes) -> TraineeState:
        generation = app.consumer_generation_id
        hit = cache.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]
        state = TraineeState.loads(trainees.data.get(key))  # one store lookup (``get`` asks twice)
        if len(cache) >= settings.state_cache:
            cache.clear()
        cache[key] = (generation, state)
        return state

    def store(key: bytes, state: TraineeState, partition: int, raw: bytes | None = None) -> None:
        trainees[key] = raw if raw is not None else state.dumps(partition)
        cache[key] = (app.consumer_generation_id, state)
        health["written"] = time.monotonic()
        WRITES.inc()
        if partition in index:
            for label in state.days:
                index[partition].setdefault(label, set()).add(key.decode())

    def mark_of(partition: int) -> int | None:
        if partition not in marks:
            raw = trainees.data.get(MARK % partition)
            if raw is None:
                return None
            marks[partition] = int(raw)
        return marks[partition]

    async def dead_letter(message: Any, reason: str, key: bytes | None = None, value: bytes | None = None) -> None:
        DEAD.labels(_reason_label(reason)).inc()
        headers = [("reason", reason.encode()), ("source.topic", message.topic.encode()),
                   ("source.partition", str(message.partition).encode()),
                   ("source.offset", str(message.offset).encode())]
        key = message.key if key is None else key
        value = message.value if value is None else value
        if len(value or b"") + len(key or b"") > MAX_MESSAGE:  # too big to send again: its coordinates only
            headers.append(("value.bytes", str(len(value)).encode()))
            key, value = key[:1000] if key else key, None
        await dlq.send(key=key, value=value, headers=headers, force=True)
        log.warning("cdc.dead_letter", topic=message.topic, partition=message.partition,
                    offset=message.offset, reason=reason)

    def parse_one(msg: Any) -> tuple[Change, str] | None:
        """Parse and check one CDC message: the change and its trainee, or None when it concerns no
        trainee. Raises :class:`MalformedEnvelope` for an event that cannot be used."""
        change = parse_envelope(msg.value)
        if change is None:
            return None  # a tombstone (the connector's tombstones.on.delete should be off)
        if change.table not in ENTITIES or not msg.topic.endswith("." + change.table):
            raise MalformedEnvelope(f"unknown table for this topic: {change.table[:40]}")
        if change.ts_ms <= clock.now_ms() + 86_400_000:  # a commit time in the future holds nothing back
            progress["events"] = max(progress.get("events", 0), change.ts_ms)
        events_of[change.table].inc()
        if change.op in ("t", "m"):
            log.info("cdc.truncate_ignored", table=change.table, op=change.op)
            return None
        who = tf.trainee_of_key(msg.key, change)
        if who is None:
            WITHOUT_OWNER.inc()  # a row with trainee_id null: nobody to tell
            return None
        return change, who

    def apply_one(msg: Any, change: Change, who: str, state: TraineeState) -> tuple[TraineeState, bytes | None]:
        """Apply a parsed change to the trainee's state: the new state and its stored form (None when
        unchanged). Raises for an event that cannot be applied; ``state`` is never modified."""
        new, outcome = fold.apply(state, who, change, mark_of(msg.partition))
        if outcome == tf.REPLAY:
            REPLAYS.inc()
        elif outcome == tf.BASELINE:
            BASELINES.inc()
        elif outcome in (tf.FOLDED, tf.LATE):
            FOLDED.inc()
            if outcome == tf.LATE:
                LATE.inc()
                log.warning("netchange.late_event", trainee_id=who, entity=change.table,
                            entity_id=change.entity_id, folded_into=max(new.days))
        if new is state:
            return state, None
        raw = new.dumps(msg.partition)
        if len(raw) > MAX_MESSAGE:
            raise MalformedEnvelope(f"the trainee's state would exceed {MAX_MESSAGE} bytes with this event")
        return new, raw

    async def close_days(tick: Any, wm: int) -> None:
        partition = tick.partition
        prior = mark_of(partition)
        if prior is not None and prior >= wm:
            wm = prior  # watermarks never go back (several workers may send ticks)
        else:
            marks[partition] = wm
            trainees[MARK % partition] = str(wm).encode()
            health["written"] = time.monotonic()
        if partition not in index:
            build_index()
        open_days = index.setdefault(partition, {})
        generation = app.consumer_generation_id
        flushed = False
        for label in sorted(open_days):
            day = fold.calendar.by_label(label)
            if day.end_ms + fold.grace_ms > wm:
                continue
            if not flushed:
                # the state writes of the events before this tick go first: a record never overtakes them
                await app.producer.flush()
                flushed = True
                if app.consumer_generation_id != generation or app.rebalancing:
                    return  # the partition may have moved meanwhile: its new owner closes the day
            pending, closed, emitted = [], [], 0
            for who in sorted(open_days[label]):
                key = who.encode()
                reason = None
                try:
                    record, state = fold.close(load(key), who, day)
                    value = serde.encode(serde.NETCHANGE, record) if record is not None else b""
                    if len(value) > MAX_MESSAGE:
                        reason = f"record larger than {MAX_MESSAGE} bytes"
                except Exception as exc:  # noqa: BLE001 - one record that cannot be made must not stop the rest
                    reason = f"record cannot be encoded: {type(exc).__name__}"
                    record, state = None, None
                if reason is not None:
                    rid = f"{who}:{label}"
                    await dead_letter(tick, reason, key=rid.encode(), value=orjson.dumps(
                        {"id": rid, "trainee_id": who, "day": label, "reason": reason}))
                    if state is None:  # the day itself could not be closed: drop it from the state
                        state = load(key)
                        state = TraineeState(state.known, {k: v for k, v in state.days.items() if k != label},
                                             state.history)
                    closed.append((key, state))
                    continue
                assert state is not None  # noqa: S101  no reason: fold.close returned it
                closed.append((key, state))
                if record is None:
                    continue
                pending.append(await netchange.send(key=record["id"].encode(), value=value, force=True))
                emitted += 1
                RECORDS.labels(str(record["suppressed"] is not None).lower()).inc()
            await asyncio.gather(*pending)  # acknowledged by the broker before the state goes
            if app.consumer_generation_id != generation or app.rebalancing:
                return  # the partition may have moved meanwhile: its new owner closes the day again
            for key, state in closed:
                store(key, state, partition)
                DAYS_CLOSED.inc()
            del open_days[label]
            log.info("netchange.day_closed", partition=partition, day=label, trainees=len(closed), records=emitted)
        WM_APPLIED.labels(str(partition)).set(wm / 1000)

    def build_index() -> None:
        """Which trainees have which days open, for every partition this worker holds: one scan of the
        table after each rebalance (the index is in memory only)."""
        held = {tp.partition for tp in app.consumer.assignment() if tp.topic == ticks_name}
        found: dict[int, dict[str, set[str]]] = {p: {} for p in held}
        for key, raw in trainees.data.items():
            if key.startswith(b"~"):
                continue
            try:
                p, labels = TraineeState.partition_of(raw)
            except Exception:  # noqa: BLE001 - one value we cannot read must not stop every close
                log.error("netchange.state_unreadable", partition=None, key_bytes=len(key))
                continue
            if p in found:
                for label in labels:
                    found[p].setdefault(label, set()).add(key.decode())
        index.update(found)

    async def handle(msg: Any) -> None:
        """One CDC message. A failure of the event (parse, checks, key, apply) sends it to the dead
        letter and changes nothing; a failure of the store or of Kafka raises (the agent restarts)."""
        try:
            parsed = parse_one(msg)
        except Exception as exc:  # noqa: BLE001 - any failure of one event: dead letter, go on
            await refuse(msg, exc)
            return
        if parsed is None:
            return
        change, who = parsed
        key = who.encode()
        state = load(key)  # outside the try: the store failing is not the event's fault
        try:
            new, raw = apply_one(msg, change, who, state)
        except Exception as exc:  # noqa: BLE001 - any failure of one event: dead letter, go on
            await refuse(msg, exc)
            return
        if raw is not None:
            store(key, new, msg.partition, raw)
        elif key not in rewritten:
            # a replay after a restart: the store may hold a state whose changelog message a kill -9 lost
            # (the store is written at once, the changelog a moment later); write it again once, so a
            # standby or the next owner recovers what this worker holds
            rewritten.add(key)
            if trainees.data.get(key) is not None:
                store(key, state, msg.partition)

    async def refuse(msg: Any, exc: Exception) -> None:
        reason = exc.reason if isinstance(exc, MalformedEnvelope) else f"cannot apply: {type(exc).__name__}"
        if tf.KEY_SETTING in reason and "key" not in warned:
            warned.add("key")
            log.error("cdc.key_not_trainee", topic=msg.topic, reason=reason)
        await dead_letter(msg, reason)

    @app.agent(inputs, concurrency=1)
    async def aggregate(stream: Any) -> None:
        try:
            async for event in stream.events():
                msg = event.message
                if msg.topic == ticks_name:
                    try:
                        wm = int(orjson.loads(msg.value)["tick"])
                        if not EARLIEST_MS <= wm < LATEST_MS:
                            raise ValueError("out of range")
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        log.warning("netchange.bad_tick", partition=msg.partition, offset=msg.offset)
                        continue
                    try:
                        await close_days(msg, wm)
                    except Exception:
                        health["close_failed"] = time.monotonic()
                        raise
                    health["close_failed"] = 0.0
                else:
                    await handle(msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            health["crashed"] = time.monotonic()
            log.error("aggregator.agent_crashed", error=type(exc).__name__)  # no message: it may hold data
            raise

    # mode types a receiver as (sender, *args, signal=, **kwargs); this signal sends (sender, revoked)
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _forget(sender: Any, revoked: Any, **kwargs: Any) -> None:
        cache.clear()
        marks.clear()
        WM_APPLIED.clear()
        index.clear()
        rewritten.clear()

    @app.agent(heartbeat, concurrency=1)
    async def heartbeats(stream: Any) -> None:
        async for value in stream:
            try:
                ts = orjson.loads(value).get("ts_ms")
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                continue
            if isinstance(ts, int):
                progress["heartbeat"] = max(progress.get("heartbeat", 0), ts)

    # faust annotates App.timer as returning a bare Callable, so the function it decorates is untyped
    @app.timer(interval=settings.tick_seconds)  # type: ignore[untyped-decorator]
    async def send_ticks() -> None:
        if not any(tp.topic == heartbeat_name for tp in app.consumer.assignment()):
            return  # the worker holding the connector's heartbeats sends the ticks
        seen = max(progress.values()) if progress else None
        mark = watermark(clock.now_ms(), seen, int(settings.max_hold_seconds * 1000))
        WM_LAG.set(mark.held_ms / 1000)
        WM_FORCED.set(1 if mark.forced and progress else 0)
        body = orjson.dumps({"tick": mark.watermark_ms})
        for partition in range(settings.topic_partitions):
            await ticks.send(key=TICK, value=body, partition=partition, force=True)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    busy = watchdog.install(app, settings, inputs.topics, watch)

    def table_usable() -> bool:
        return changelog_partitions in (None, settings.topic_partitions)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        if watch.stalled_at:
            return web.json({"status": "stalled"}, status=503)
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        # crashed with no table write working since, or closing days fails
        crashing = health["crashed"] > health["written"] or bool(health["close_failed"])
        ready = not busy() and bool(app.consumer.assignment()) and not crashing and table_usable()
        body: dict[str, bool | str] = {"ready": ready}
        if not ready:
            body["why"] = ("agent crashed" if crashing else "table changelog not usable" if not table_usable()
                           else "rebalancing or recovering")
        return web.json(body, status=200 if ready else 503)

    return app


def _rocksdb_options() -> dict[str, Any]:
    """Smaller memtables and block cache than faust's defaults (64 MB x 3 memtables and a 2 GB cache
    per table partition): with those, peak RSS grew past 4 GB on a rotation day. One RocksDB per
    partition: 12 partitions x (2 x 4 MB memtables + 8 MB cache) stay under 200 MB."""
    return {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 8 << 20}
