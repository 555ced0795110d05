"""The Faust shell around the net-change core.

Two agents, both ``concurrency=1`` (faust #606):

* ``resolve``: CDC topics → the core's :func:`~services.netchange.core.resolve`, with each entity's
  :class:`~services.netchange.core.Known` state in the ``known`` table (co-partitioned with the CDC
  topics, which Debezium keys by primary key). Each resolved change is re-keyed to every trainee it
  touches (old and new owner of a moved record) on the ``resolved`` topic, in *packs*: one message
  per partition of that topic carries up to ``TN_PACK_EVENTS`` changes (or what ``TN_PACK_SECONDS``
  gathered), partitioned as a message keyed by the trainee would be. The stream's acknowledgements are
  manual: a CDC event is acknowledged (so its offset may be committed) only after the pack carrying
  its change is delivered. Malformed envelopes go to the CDC dead-letter topic with the reason and
  their coordinates in headers.
* ``fold``: the ``resolved`` topic, keyed by trainee → per (trainee, London day) folds in the ``days``
  table and per trainee (``trainees``) the personal-details history and the last position applied per
  entity; each trainee of a pack is read and written once. Tick records carrying the watermark
  reach every partition; a tick closes the days of *that* partition whose end + grace it has passed:
  records are produced and acknowledged first, state deleted after, so a crash re-emits identical
  records (same key) and never loses one.

The tick sender is the worker that holds the connector's heartbeat partition: it knows the
connector's progress. faust's windowed tables and ``on_window_close`` are not used (notes-stack.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import defaultdict
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from services import logs, serde
from services.netchange import core
from services.netchange.cdc import ENTITIES, MalformedEnvelope, parse_envelope
from services.netchange.days import Calendar
from services.netchange.stall import Verdict, Watch
from services.netchange.watermark import Clock, WallClock, watermark
from services.settings import AggregatorSettings

log = logs.get("aggregator")

EVENTS = Counter("netchange_events_applied_total", "CDC events applied to the core", ["table"])
REPLAYS = Counter("netchange_replays_skipped_total", "events recognised as already applied")
BASELINES = Counter("netchange_baselines_total", "snapshot reads and first-seen rows (original unknown)")
DAYS_CLOSED = Counter("netchange_days_closed_total", "(trainee, day) folds closed")
RECORDS = Counter("netchange_records_emitted_total", "net-change records produced", ["suppressed"])
FOLDED = Counter("netchange_events_folded_total", "resolved changes folded into a trainee's day")
LATE = Counter("netchange_late_events_total", "events that arrived after their day closed")
DEAD = Counter("netchange_dead_letters_total", "envelopes sent to the CDC dead-letter topic", ["reason"])
WM_LAG = Gauge("netchange_watermark_lag_seconds", "how far the watermark is held behind the wall clock")
STALLED = Gauge("netchange_stalled", "1 when no event was processed for TN_STALL_SECONDS while there is lag")
WM_FORCED = Gauge("netchange_watermark_forced", "1 when the connector lags past the maximum hold (alert)")
PACKS = Counter("netchange_packs_sent_total", "messages of resolved changes sent on the re-key hop")
TICK = b"__tick__"
PACK = b"__pack__"


def _reason_label(reason: str) -> str:
    return reason.split(":")[0][:40]


def resolved_topic_name(settings: AggregatorSettings) -> str:
    return f"{settings.app_id}-resolved"


def build_app(settings: AggregatorSettings, clock: Clock | None = None) -> faust.App:
    clock = clock or WallClock()
    cal = Calendar(settings.timezone, settings.day_seconds)
    grace_ms = int(settings.grace_seconds * 1000)
    app = faust.App(
        settings.app_id,
        broker=";".join(f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")),
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
        table_standby_replicas=0,
        stream_wait_empty=False,
        # measured (docs/benchmarks.md): batching the producer is +50 % events/s; a short session
        # timeout lets a restarted worker take its partitions back in seconds, not a minute
        producer_linger=0.05,
        producer_max_batch_size=1 << 20,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
    )
    cdc = app.topic(*settings.cdc_topics(), key_type=bytes, value_type=bytes)
    heartbeat_name = settings.heartbeat_topic()
    heartbeat = app.topic(heartbeat_name, key_type=bytes, value_type=bytes)
    resolved_topic = app.topic(resolved_topic_name(settings), key_type=bytes, value_type=bytes, internal=True,
                               partitions=settings.topic_partitions)
    netchange = app.topic(settings.netchange_topic, key_type=bytes, value_type=bytes)
    dlq = app.topic(settings.cdc_dlq_topic, key_type=bytes, value_type=bytes)
    known = app.Table("known", key_type=bytes, value_type=bytes, partitions=settings.topic_partitions,
                      options=_rocksdb_options())
    days = app.Table("days", key_type=bytes, value_type=bytes, partitions=settings.topic_partitions,
                      options=_rocksdb_options())
    # per trainee: personal-details history ("h") and the last position applied per entity ("s")
    trainees = app.Table("trainees", key_type=bytes, value_type=bytes, partitions=settings.topic_partitions,
                      options=_rocksdb_options())
    marks = app.Table("marks", key_type=bytes, value_type=bytes, partitions=settings.topic_partitions,
                      options=_rocksdb_options())

    progress: dict[str, int] = {}
    # what each stage is doing right now, and when it last did something (the stall watchdog reads it)
    doing: dict[str, float] = {}
    watch = Watch(settings.stall_seconds, moved={"resolve": time.monotonic(), "fold": time.monotonic()})
    # partition -> day label -> trainees with an open fold; rebuilt from ``days`` after a rebalance
    index: dict[int, dict[str, set[str]]] = {}

    async def dead_letter(message: Any, reason: str) -> None:
        DEAD.labels(_reason_label(reason)).inc()
        headers = [("reason", reason.encode()), ("source.topic", message.topic.encode()),
                   ("source.partition", str(message.partition).encode()),
                   ("source.offset", str(message.offset).encode())]
        await dlq.send(key=message.key, value=message.value, headers=headers, force=True)
        log.warning("cdc.dead_letter", topic=message.topic, partition=message.partition,
                    offset=message.offset, reason=reason)

    packs = _Packs(settings.topic_partitions, settings.pack_events, settings.pack_seconds)
    seen_holes: dict[Any, int | None] = {}  # CDC partition -> committed offset below a hole, last round
    packing = asyncio.Lock()

    async def flush_packs() -> None:
        """Send each partition's pack, wait for the broker, then acknowledge the events it carries."""
        if not packs.events:
            return
        bodies, events, acker = packs.take()
        doing["flush"] = time.monotonic()
        futures = [await resolved_topic.send(key=PACK, value=body, partition=partition, force=True)
                   for partition, body in bodies]
        await asyncio.gather(*futures)
        doing.pop("flush", None)
        PACKS.inc(len(futures))
        stale = 0
        for e, generation in events:
            # an event read before a rebalance began is not acknowledged after it: faust has dropped its
            # offset bookkeeping for the partition by then, and a late ack can leave a hole that its
            # commits never pass. Unacknowledged, it is read again from the committed offset (by this
            # worker or the partition's new owner) and applied as a replay, which is idempotent.
            if generation == app.rebalancing_count and not app.rebalancing:
                await acker.ack(e)
            else:
                stale += 1
        if stale:
            log.info("resolve.acks_withheld_after_rebalance", events=stale)

    @app.agent(cdc, concurrency=1)
    async def resolve(stream: Any) -> None:
        manual = stream.noack()
        async for event in manual.events():
            watch.progress("resolve", time.monotonic())
            async with packing:
                await resolve_one(event)
                packs.hold(event, manual, app.rebalancing_count)  # after: a flush inside resolve_one must not ack it
                if packs.full():
                    await flush_packs()

    async def resolve_one(event: Any) -> None:
        msg = event.message
        try:
            change = parse_envelope(msg.value)
        except MalformedEnvelope as exc:
            await dead_letter(msg, exc.reason)
            return
        if change is None:
            return  # tombstone after a delete
        if change.table not in ENTITIES or not msg.topic.endswith("." + change.table):
            await dead_letter(msg, f"unknown table for this topic: {change.table[:40]}")
            return
        progress["events"] = max(progress.get("events", 0), change.ts_ms)
        if change.op in ("t", "m"):
            log.info("cdc.truncate_ignored", table=change.table, op=change.op)
            return
        key = f"{change.table}|{change.entity_id}".encode()
        if packs.touches(key) >= core.RECENT - 1:
            # a replay after a crash re-derives only the last RECENT changes of an entity: never hold more
            await flush_packs()
        raw = _read(known, key)
        prior = core.Known.from_dict(orjson.loads(raw)) if raw else None
        new_known, resolved, replay = core.resolve(prior, change)
        if replay:
            REPLAYS.inc()
        elif new_known is not None:
            known[key] = orjson.dumps(new_known.to_dict())
        EVENTS.labels(change.table).inc()
        if resolved is None:
            return
        BASELINES.inc(resolved.baseline and not replay)
        packs.add(key, resolved.owners(), resolved.to_dict())

    @app.timer(interval=max(0.05, settings.pack_seconds / 2))
    async def flush_stale_packs() -> None:
        if packs.stale():
            async with packing:
                await flush_packs()

    @app.agent(heartbeat, concurrency=1)
    async def heartbeats(stream: Any) -> None:
        async for value in stream:
            try:
                ts = orjson.loads(value).get("ts_ms")
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                continue
            if isinstance(ts, int):
                progress["heartbeat"] = max(progress.get("heartbeat", 0), ts)

    @app.timer(interval=settings.tick_seconds)
    async def send_ticks() -> None:
        if not any(tp.topic == heartbeat_name for tp in app.consumer.assignment()):
            return  # the workers holding the connector's heartbeats send the ticks
        seen = max(progress.values()) if progress else None
        mark = watermark(clock.now_ms(), seen, int(settings.max_hold_seconds * 1000))
        WM_LAG.set(mark.held_ms / 1000)
        WM_FORCED.set(1 if mark.forced and progress else 0)
        body = orjson.dumps({"tick": mark.watermark_ms})
        for partition in range(settings.topic_partitions):
            await resolved_topic.send(key=TICK, value=body, partition=partition, force=True)

    def build_index(partition: int) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for raw in days.values():
            entry = orjson.loads(raw)
            if entry["p"] == partition:
                found[entry["d"]].add(entry["t"])
        return found

    async def close_days(partition: int, wm: int) -> None:
        mark_key = b"p%d" % partition
        prior = _read(marks, mark_key)
        if prior is not None and int(prior) >= wm:
            wm = int(prior)  # watermarks never go back (several workers may send ticks)
        else:
            marks[mark_key] = str(wm).encode()
        open_days = index.get(partition)
        if open_days is None:
            open_days = index[partition] = build_index(partition)
        for label in sorted(open_days):
            day = cal.by_label(label)
            if day.end_ms + grace_ms > wm:
                continue
            pending = []
            closed = []
            for trainee in sorted(open_days[label]):
                key = f"{trainee}|{label}".encode()
                raw = _read(days, key)
                if raw is None:
                    continue
                entry = orjson.loads(raw)
                tstate = _TraineeState.load(_read(trainees, trainee.encode()))
                hist = tstate.history
                record = core.close(trainee, day, core.fold_from_dict(entry["f"]), core.person_at(hist, day))
                if record is not None:
                    fut = await netchange.send(key=record["id"].encode(), value=serde.encode(serde.NETCHANGE, record),
                                               force=True)
                    pending.append(fut)
                    RECORDS.labels(str(record["suppressed"] is not None).lower()).inc()
                    log.debug("netchange.emitted", record_id=record["id"], changes=len(record["changes"]),
                              suppressed=record["suppressed"], late=record["late"])
                closed.append((key, trainee, tstate, day))
            doing["close"] = time.monotonic()
            await asyncio.gather(*pending)  # acknowledged by the broker before the state goes
            doing.pop("close", None)
            for key, trainee, tstate, day in closed:
                del days[key]
                trimmed = core.person_trim(tstate.history, day.end_ms)
                if trimmed != tstate.history:
                    trainees[trainee.encode()] = tstate.replace_history(trimmed).dump()
                DAYS_CLOSED.inc()
            del open_days[label]
            log.info("netchange.day_closed", partition=partition, day=label, trainees=len(closed),
                     records=len(pending))

    def fold_entries(partition: int, entries: list[Any]) -> None:
        """Fold a pack of resolved changes: each trainee's state is read once and written once."""
        raw_mark = _read(marks, b"p%d" % partition)
        mark = int(raw_mark) if raw_mark is not None else None
        by_trainee: dict[str, list[dict[str, Any]]] = {}
        for trainee, body in entries:
            by_trainee.setdefault(trainee, []).append(body)
        for trainee, bodies in by_trainee.items():
            tkey = trainee.encode()
            tstate = _TraineeState.load(_read(trainees, tkey))
            touched = False
            folds: dict[str, core.DayFold | None] = {}
            dirty: list[str] = []
            for body in bodies:
                resolved = core.Resolved.from_dict(body)
                if tstate.applied(resolved):
                    REPLAYS.inc()  # already folded (and perhaps closed and emitted) before a restart
                    continue
                day = cal.day_of(resolved.ts_ms)
                late = False
                if mark is not None and day.end_ms + grace_ms <= mark:
                    late = True
                    LATE.inc()
                    day = cal.day_of(mark - grace_ms)  # the open day
                    log.warning("netchange.late_event", trainee_id=trainee, entity=resolved.table,
                                entity_id=resolved.entity_id, folded_into=day.label)
                tstate = tstate.after(resolved, core.person_apply(tstate.history, day, resolved))
                touched = True
                FOLDED.inc()
                if day.label not in folds:
                    raw = _read(days, f"{trainee}|{day.label}".encode())
                    folds[day.label] = core.fold_from_dict(orjson.loads(raw)["f"]) if raw else None
                folded = core.fold(folds[day.label], resolved, late=late)
                if folded is None:
                    continue
                folds[day.label] = folded
                if day.label not in dirty:
                    dirty.append(day.label)
            if touched:
                trainees[tkey] = tstate.dump()
            for label in dirty:
                days[f"{trainee}|{label}".encode()] = orjson.dumps(
                    {"p": partition, "d": label, "t": trainee, "f": core.fold_to_dict(folds[label])})
                if partition in index:
                    index[partition].setdefault(label, set()).add(trainee)

    @app.agent(resolved_topic, concurrency=1)
    async def fold(stream: Any) -> None:
        async for event in stream.events():
            watch.progress("fold", time.monotonic())
            partition = event.message.partition
            if event.key == TICK:
                await close_days(partition, orjson.loads(event.value)["tick"])
            elif event.key == PACK:
                fold_entries(partition, orjson.loads(event.value))
            else:  # one change keyed by its trainee (the format before packs)
                fold_entries(partition, [(event.key.decode(), orjson.loads(event.value))])

    @app.on_partitions_revoked.connect
    async def _forget_index(sender: Any, revoked: Any, **kwargs: Any) -> None:
        index.clear()

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    def lagging(stage: str) -> list[str]:
        """The stage's input partitions whose newest offset is past what this worker has committed."""
        consumer = app.consumer
        out = []
        for tp in consumer.assignment():
            if (tp.topic == resolved_topic.get_topic_name()) != (stage == "fold"):
                continue
            if stage == "resolve" and tp.topic not in cdc.topics:
                continue
            # faust keeps no public view of its committed offsets; +1 spares an off-by-one between the
            # offset it commits and the one it last acknowledged (ticks keep the fold's input moving)
            committed = consumer._committed_offset.get(tp)
            high = consumer.highwater(tp)
            if high is not None and high > (committed or 0) + 1:
                out.append(f"{tp.topic}:{tp.partition}")
        return sorted(out)

    def starved() -> list[Any]:
        """Assigned input partitions faust is not fetching (its buffer flow control can leave a partition
        out after a rebalance; the stage then waits for events that never come)."""
        consumer = app.consumer
        active = consumer._active_partitions  # no public view either
        if active is None:
            return []
        inputs = set(cdc.topics) | {resolved_topic.get_topic_name()}
        return sorted((tp for tp in consumer.assignment() if tp.topic in inputs and tp not in active),
                      key=lambda tp: (tp.topic, tp.partition))

    async def skipped(names: list[str]) -> dict[Any, int | None]:
        """Lagging input partitions with records that will never be acknowledged unless read again. Two
        ways, both seen around rebalances: (1) the Kafka client has fetched records (its position is
        past them) that faust never handed to the stage (it drops a fetched record whose partition is
        not in its active set at that moment), and nothing fetches them again; (2) a hole at the head
        of faust's acknowledged offsets (the committed offset is below the lowest acknowledged one)
        that no held or in-flight event covers: those records were handed out but their
        acknowledgements were lost, so the commits never pass them. Maps each partition to the offset
        to fetch again from (None: from the beginning, nothing was committed)."""
        consumer = app.consumer
        out: dict[Any, int | None] = {}
        for tp in consumer.assignment():
            if f"{tp.topic}:{tp.partition}" not in names:
                continue
            committed = consumer._committed_offset.get(tp)
            read = consumer._read_offset.get(tp)
            position = await consumer.position(tp)
            delivered = max(read if read is not None else -1, committed if committed is not None else -1)
            if (position is not None and position > delivered + 1) or acks_lost(tp):
                out[tp] = committed
        return out

    def unacked_head(tp: Any) -> range:
        """The offsets from the committed one that were handed out to the stage and not acknowledged:
        up to the lowest acknowledged offset, or to faust's read offset when none is."""
        consumer = app.consumer
        start = consumer._committed_offset.get(tp) or 0
        read = consumer._read_offset.get(tp)
        if read is None or read < start:
            return range(start, start)
        acked = consumer._acked.get(tp)
        return range(start, min(acked) if acked else read + 1)

    def acks_lost(tp: Any) -> bool:
        """Records of a CDC partition at the head of the uncommitted offsets that were handed out but
        are neither acknowledged nor waiting in a pack: the commits cannot pass them. (A record still
        queued for the stage also looks so, briefly: callers ask twice.)"""
        committed = app.consumer._committed_offset.get(tp)
        if committed is None or "flush" in doing:
            return False
        high = app.consumer.highwater(tp)
        if high is None or high <= committed:
            return False  # everything there is has been committed
        head = unacked_head(tp)
        return bool(head) and not packs.holds(tp, below=head.stop)

    async def refetch(lost: dict[Any, int | None]) -> None:
        for tp, offset in lost.items():  # replays are idempotent (by Debezium position)
            # forget acknowledgements of the offsets read again, so that theirs count this time
            app.consumer._acked_index[tp].difference_update(unacked_head(tp))
            # nothing committed: from the start (the client resets to the earliest offset kept)
            await app.consumer.seek(tp, offset or 0)

    @app.timer(interval=max(1.0, min(10.0, settings.stall_seconds / 4)))
    async def watchdog() -> None:
        now = time.monotonic()
        left_out = starved()
        busy = app.rebalancing or app.in_recovery or not app.tables.recovery.completed.is_set()
        if not busy:
            # resolve holds every record until its pack is delivered and acknowledges in order, so
            # records at the head of a CDC partition that are neither acknowledged nor held, with the
            # same committed offset two rounds running, lost their acknowledgements (seen after
            # rebalances: faust does not hand out again what it had handed out before, even to a
            # worker that keeps the partition). Read from the committed offset again now, rather than
            # wait for a stall.
            holes = {tp: app.consumer._committed_offset.get(tp) for tp in app.consumer.assignment()
                     if tp.topic in cdc.topics and acks_lost(tp)}
            again = {tp: offset for tp, offset in holes.items() if seen_holes.get(tp, -2) == offset}
            seen_holes.clear()
            seen_holes.update({tp: offset for tp, offset in holes.items() if tp not in again})
            if again:
                log.info("aggregator.reread_lost_acks",
                         refetch={f"{tp.topic}:{tp.partition}": offset for tp, offset in again.items()})
                await refetch(again)
        by_stage = {} if busy else {stage: lagging(stage) for stage in ("resolve", "fold")}
        behind_now = [tp for tps in by_stage.values() for tp in tps]
        lost = await skipped(behind_now) if behind_now else {}
        verdict, behind = watch.check(now, busy=busy, lagging=lambda stage: by_stage.get(stage, []),
                                      starved=bool(left_out or lost))
        STALLED.set(1 if verdict in (Verdict.STALLED, Verdict.STILL) else 0)
        if verdict is Verdict.HEAL:
            log.warning("aggregator.healing", lagging=behind,
                        not_fetched=[f"{tp.topic}:{tp.partition}" for tp in left_out],
                        refetch={f"{tp.topic}:{tp.partition}": offset for tp, offset in lost.items()})
            app.consumer._buffered_partitions.difference_update(left_out)
            app.consumer.resume_partitions(left_out)
            await refetch(lost)
        elif verdict is Verdict.STALLED:
            log.error("aggregator.stalled", idle_seconds={k: round(v, 1) for k, v in watch.idle(now).items()},
                      lagging=behind, waiting_on={k: round(now - v, 1) for k, v in doing.items()},
                      not_fetched=[f"{tp.topic}:{tp.partition}" for tp in left_out],
                      held_events=len(packs.events), packing_locked=packing.locked(),
                      offsets=_offsets_of(app.consumer, behind), exiting=settings.exit_on_stall)
            if settings.exit_on_stall:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(3)  # a restart is safe: state and offsets are in Kafka (as after kill -9)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        if watch.stalled_at:
            return web.json({"status": "stalled"}, status=503)
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = (not app.rebalancing and not app.in_recovery and bool(app.consumer.assignment())
                 and app.tables.recovery.completed.is_set())
        return web.json({"ready": ready}, status=200 if ready else 503)

    return app


class _TraineeState:
    """What the fold keeps per trainee: personal-details history and the last position per entity."""

    __slots__ = ("history", "seen")

    def __init__(self, history: core.PersonHistory, seen: dict[str, list[int]]) -> None:
        self.history = history
        self.seen = seen

    @classmethod
    def load(cls, raw: bytes | None) -> _TraineeState:
        if not raw:
            return cls((), {})
        d = orjson.loads(raw)
        return cls(tuple((s, tuple(p) if p else None, st) for s, p, st in d["h"]), d["s"])

    def dump(self) -> bytes:
        return orjson.dumps({"h": [[s, list(p) if p else None, st] for s, p, st in self.history], "s": self.seen})

    def applied(self, change: core.Resolved) -> bool:
        last = self.seen.get(f"{change.table}|{change.entity_id}")
        return change.position is not None and last is not None and tuple(change.position) <= tuple(last)

    def after(self, change: core.Resolved, history: core.PersonHistory | None) -> _TraineeState:
        seen = self.seen
        if change.position is not None:
            seen = {**seen, f"{change.table}|{change.entity_id}": list(change.position)}
        return _TraineeState(history if history is not None else self.history, seen)

    def replace_history(self, history: core.PersonHistory) -> _TraineeState:
        return _TraineeState(history, self.seen)


class _Packs:
    """Resolved changes waiting to be sent on the re-key hop, one pack per partition of that topic,
    and the CDC events they came from (acknowledged only once their packs are delivered)."""

    MAX_BYTES = 700_000  # under the broker's and the producer's 1 MB message limit

    def __init__(self, partitions: int, max_events: int, max_seconds: float) -> None:
        self.partitions, self.max_events, self.max_seconds = partitions, max_events, max_seconds
        self._reset()

    def _reset(self) -> None:
        self.events: list[tuple[Any, int]] = []
        self.acker: Any = None
        self.bodies: dict[int, list[bytes]] = {}
        self.sizes: dict[int, int] = {}
        self.entities: dict[bytes, int] = {}
        self.since = 0.0

    def hold(self, event: Any, acker: Any, generation: int) -> None:
        """Hold a CDC event until its pack is delivered; ``generation`` counts the rebalances so far."""
        self.since = self.since or time.monotonic()
        self.events.append((event, generation))
        self.acker = acker

    def holds(self, tp: Any, below: int) -> bool:
        """Whether an event of this partition with an offset below ``below`` waits for its pack."""
        return any(e.message.tp == tp and e.message.offset < below for e, _ in self.events)

    def touches(self, entity: bytes) -> int:
        return self.entities.get(entity, 0)

    def add(self, entity: bytes, owners: Any, body: dict[str, Any]) -> None:
        self.since = self.since or time.monotonic()
        self.entities[entity] = self.entities.get(entity, 0) + 1
        for trainee in owners:
            item = orjson.dumps([trainee, body])
            partition = partition_of(trainee, self.partitions)
            self.bodies.setdefault(partition, []).append(item)
            self.sizes[partition] = self.sizes.get(partition, 0) + len(item) + 1

    def full(self) -> bool:
        return len(self.events) >= self.max_events or any(size >= self.MAX_BYTES for size in self.sizes.values())

    def stale(self) -> bool:
        return bool(self.events) and time.monotonic() - self.since >= self.max_seconds

    def take(self) -> tuple[list[tuple[int, bytes]], list[Any], Any]:
        bodies = [(p, b"[" + b",".join(items) + b"]") for p, items in sorted(self.bodies.items())]
        events, acker = self.events, self.acker
        self._reset()
        return bodies, events, acker


def _read(table: Any, key: bytes) -> bytes | None:
    """One store lookup (``table.get`` asks the store twice: ``key in`` and then ``[key]``)."""
    return table.data.get(key)  # type: ignore[no-any-return]


def _offsets_of(consumer: Any, names: list[str]) -> dict[str, Any]:
    """For a stall report: what faust has read and committed, and what the Kafka client holds back."""
    out: dict[str, Any] = {}
    try:
        client = consumer._thread._ensure_consumer()
        paused = {f"{tp.topic}:{tp.partition}" for tp in client.paused()}
        for tp in consumer.assignment():
            name = f"{tp.topic}:{tp.partition}"
            if name in names:
                acked = consumer._acked.get(tp) or []
                out[name] = {"read": consumer._read_offset.get(tp), "committed": consumer._committed_offset.get(tp),
                             "acked": [min(acked), max(acked), len(acked)] if acked else None,
                             "gaps": len(consumer._gap.get(tp) or []),
                             "high": consumer.highwater(tp), "client_paused": name in paused,
                             "client_position": client._subscription.subscription.assignment.state_value(tp).position
                             if client._subscription.subscription else None}
    except Exception as exc:  # noqa: BLE001 - a diagnostic must not fail the report
        out["error"] = type(exc).__name__
    return out


def partition_of(trainee: str, partitions: int) -> int:
    """The re-key hop's partition of a trainee: Kafka's default partitioner (murmur2 of the key), so a
    pack lands where a single change keyed by that trainee would."""
    return (murmur2(trainee.encode()) & 0x7FFFFFFF) % partitions


def _rocksdb_options() -> dict[str, Any]:
    """Smaller memtables and block cache than faust's defaults (64 MB x 3 memtables and a 2 GB cache
    per table partition): with those, peak RSS grew past 4 GB on a rotation day."""
    return {"write_buffer_size": 8 << 20, "max_write_buffer_number": 2, "block_cache_size": 32 << 20}
