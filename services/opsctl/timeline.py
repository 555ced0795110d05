"""``trainee-notify trainee ID``: one trainee's timeline, in time order, across every place that
knows about them — the answer to "was this trainee told about the new placement, and when?".

Sources: the CDC topics (only the trainee's partition: the connector keys by ``{"trainee_id": ID}``
and Kafka's default partitioner puts one trainee on one partition), the net-change records (keyed
``<trainee>:<day>``: every partition, keys compared before any value is decoded), the CDC and mail
dead letters, the mailer's ledger (``notify.ledger``) and the delivery-status events. A progress bar
(on stderr) shows the scan. Personal fields are masked unless ``--show-personal`` (audited).
``UnknownTrainee`` (exit 1) when no source knows the trainee. Exit codes: common.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.opsctl import common
from services.opsctl.common import (
    BOOTSTRAP_OPTION,
    JSON_OPTION,
    SHOW_PERSONAL_OPTION,
    Decoded,
    UnknownTrainee,
)
from services.opsctl.scan import Raw, Start, scan

_PK = {"personal_details": "trainee_id"}  # the other tables' primary key is ``id``
_OPS = {"c": "created", "u": "updated", "d": "deleted", "r": "snapshot", "t": "truncated", "m": "message"}


@dataclass(frozen=True)
class Event:
    at: dt.datetime
    source: str  # cdc:<table> | netchange | cdc-dlq | ledger | delivery-status | mail-dlq
    what: str
    ref: str  # topic/partition@offset or a notification id
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Timeline:
    trainee_id: str
    events: list[Event] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- pure parts
def _masked(value: Any, key: str, show: bool) -> Any:
    return value if show or not common._is_personal(key) or value is None else common.MASK


def describe_envelope(table: str, envelope: Mapping[str, Any], show_personal: bool) -> tuple[str, dict[str, Any]]:
    """A one-line description of a Debezium envelope and its changed fields, masked (pure)."""
    op = str(envelope.get("op", "?"))
    before = envelope.get("before") or {}
    after = envelope.get("after") or {}
    row = after or before
    pk = _PK.get(table, "id")
    entity = row.get(pk) if isinstance(row, Mapping) else None
    changed: dict[str, Any] = {}
    if op == "u" and isinstance(before, Mapping) and isinstance(after, Mapping):
        for k in sorted(set(before) | set(after)):
            if before.get(k) != after.get(k):
                changed[k] = {"old": _masked(before.get(k), k, show_personal),
                              "new": _masked(after.get(k), k, show_personal)}
    elif isinstance(row, Mapping):
        changed = {k: _masked(v, k, show_personal) for k, v in row.items() if v is not None and k != pk}
    names = ", ".join(changed) if op == "u" else ""
    what = f"{table} {entity} {_OPS.get(op, op)}" + (f": {names}" if names else "")
    return what, changed


def describe_netchange(record: Mapping[str, Any]) -> str:
    parts = []
    for c in record.get("changes") or []:
        fields = ", ".join(sorted((c.get("fields") or {}).keys()))
        sup = f" (suppressed: {c['suppressed']})" if c.get("suppressed") else ""
        parts.append(f"{c.get('entity')} {c.get('id')} {c.get('kind')}" + (f" [{fields}]" if fields else "") + sup)
    head = f"net change of {record.get('day')}" + (" (late)" if record.get("late") else "")
    if record.get("suppressed"):
        head += f", suppressed: {record['suppressed']}"
    return head + (": " + "; ".join(parts) if parts else ": no changes")


def answers(events: list[Event]) -> list[dict[str, Any]]:
    """Per net-change record: what changed and whether and when the trainee was told (pure)."""
    out = []
    records = [e for e in events if e.source == "netchange"]
    sent = {}
    for e in events:
        if e.source == "ledger":
            sent[e.detail.get("notification_id")] = e.detail
    seen = set()
    for e in records:
        rid = e.detail.get("id")
        if rid in seen:
            continue
        seen.add(rid)
        told = []
        for nid, row in sent.items():
            if row.get("record_id") == rid or (isinstance(nid, str) and nid.startswith(f"{rid}:")):
                told.append({"notification_id": nid, "kind": row.get("kind"), "status": row.get("status"),
                             "sent_at": row.get("sent_at"), "message_id": row.get("message_id"),
                             "generation": row.get("generation"), "content_hash": row.get("content_hash"),
                             "superseded_hash": row.get("superseded_hash")})
        out.append({"record_id": rid, "day": e.detail.get("day"), "changes": e.what, "notifications": told})
    return out


# -------------------------------------------------------------------------------------------- reading
def _ref(raw: Raw) -> str:
    return f"{raw.topic}/{raw.partition}@{raw.offset}"


def _ts(raw: Raw) -> dt.datetime:
    return common.ms_to_datetime(raw.timestamp_ms)


def _scan_topic(settings: Any, admin: Any, topic: str, partitions: list[int] | None,
                keep: Callable[[Raw], bool], progress: Progress | None) -> Iterator[Raw]:
    task = progress.add_task(topic, total=None) if progress else None

    def on_progress(done: int, total: int) -> None:
        if progress is not None and task is not None:
            progress.update(task, completed=done, total=max(total, 1))

    for raw in scan(settings, admin, topic, partitions=partitions, start=Start(earliest=True),
                    on_progress=on_progress, idle_timeout=10.0):
        if keep(raw):
            yield raw
    if progress is not None and task is not None:
        t = progress.tasks[task]
        progress.update(task, completed=t.total or 1, total=t.total or 1)


def kafka_events(settings: Any, admin: Any, trainee: str, show_personal: bool,
                 progress: Progress | None) -> list[Event]:
    from services.topics import CDC_TABLES

    events: list[Event] = []
    key = common.cdc_key(trainee)
    md = admin.list_topics(timeout=10).topics

    def mask(d: Decoded) -> Any:
        return d.value if show_personal else common.mask_personal(d.value)

    for table in CDC_TABLES:
        topic = f"{settings.cdc_topic_prefix}.tss.{table}"
        if topic not in md:
            continue
        part = common.trainee_partition(trainee, len(md[topic].partitions))
        for raw in _scan_topic(settings, admin, topic, [part], lambda r: r.key == key, progress):
            d = common.decode_record(settings, raw.topic, raw.key, raw.value, raw.headers)
            if not isinstance(d.value, Mapping):
                continue
            what, changed = describe_envelope(table, d.value, show_personal)
            src_ms = (d.value.get("source") or {}).get("ts_ms") or raw.timestamp_ms
            events.append(Event(common.ms_to_datetime(int(src_ms)), f"cdc:{table}", what, _ref(raw),
                                {"op": d.value.get("op"), "fields": changed}))
    prefix = f"{trainee}:".encode()
    by_key = [(settings.netchange_topic, "netchange"), (settings.delivery_status_topic, "delivery-status"),
              (settings.mail_dlq_topic, "mail-dlq")]
    for topic, source in by_key:
        if topic not in md:
            continue
        for raw in _scan_topic(settings, admin, topic, None, lambda r: (r.key or b"").startswith(prefix), progress):
            d = common.decode_record(settings, raw.topic, raw.key, raw.value, raw.headers)
            value = d.value if isinstance(d.value, Mapping) else {}
            if source == "netchange":
                if not isinstance(d.value, Mapping):
                    events.append(Event(_ts(raw), source, f"undecodable record ({d.format})", _ref(raw)))
                    continue
                events.append(Event(_ts(raw), source, describe_netchange(value) + f"  [{d.format}]", _ref(raw),
                                    mask(d)))
            elif source == "delivery-status":
                at = value.get("at_ms")
                when = at if isinstance(at, dt.datetime) else _ts(raw)
                what = (f"{value.get('notification_id')} {value.get('status')} (attempt {value.get('attempt')}, "
                        f"generation {value.get('generation')})"
                        + (f": {value['reason']}" if value.get("reason") else ""))
                events.append(Event(when, source, what, _ref(raw), value))
            else:
                what = f"mail dead letter: {d.headers.get('reason', '?')} ({d.headers.get('notification_id', '')})"
                events.append(Event(_ts(raw), source, what, _ref(raw), {"headers": d.headers}))
    if settings.cdc_dlq_topic in md:
        for raw in _scan_topic(settings, admin, settings.cdc_dlq_topic, None, lambda r: r.key == key, progress):
            d = common.decode_record(settings, raw.topic, raw.key, raw.value, raw.headers)
            what = f"CDC dead letter: {d.headers.get('reason', '?')} (from {d.headers.get('source.topic', '?')}/" \
                   f"{d.headers.get('source.partition', '?')}@{d.headers.get('source.offset', '?')})"
            events.append(Event(_ts(raw), "cdc-dlq", what, _ref(raw), {"headers": d.headers}))
    return events


def ledger_events(dsn: str, trainee: str) -> list[Event]:
    events = []
    with common.pg_connect(dsn, "ledger database") as conn:
        cur = conn.execute("SELECT * FROM notify.ledger WHERE trainee_id = %s ORDER BY day, kind", (trainee,))
        cols = [c.name for c in cur.description or []]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    for full in rows:
        # the ledger's copies of the records (Avro bytes, with the address) are not shown; their hashes are
        row = {k: v for k, v in full.items() if k not in LEDGER_COPIES}
        nid = row["notification_id"]
        events.append(Event(row["created_at"], "ledger", f"{nid} claimed", nid, row))
        if row.get("sent_at"):
            events.append(Event(row["sent_at"], "ledger", f"{nid} SENT (generation {row.get('generation')}, "
                                f"Message-ID {row.get('message_id')})", nid, row))
        if row.get("status") != "SENT" or (row.get("updated_at") and row.get("sent_at")
                                           and row["updated_at"] > row["sent_at"] + dt.timedelta(seconds=1)):
            extra = f": {row['reason']}" if row.get("reason") else ""
            if row.get("status") == "SUPERSEDED":
                extra += (f" ({str(row.get('superseded_status') or '').lower() or 'final'} content "
                          f"{_short_hash(row.get('content_hash'))}, "
                          f"new content {_short_hash(row.get('superseded_hash'))};"
                          " decide: `trainee-notify resend --status SUPERSEDED`)")
            events.append(Event(row["updated_at"], "ledger", f"{nid} now {row.get('status')}{extra}", nid, row))
    return events


LEDGER_COPIES = ("record_value", "superseded_value")


def _short_hash(value: Any) -> str:
    return str(value)[:12] if value else "?"


def build(trainee: str, bootstrap: str | None, ledger_dsn: str | None, show_personal: bool,
          progress: Progress | None = None) -> Timeline:
    tl = Timeline(str(trainee))
    settings = common.kafka_settings(bootstrap)
    try:
        admin = common.admin(settings)
        tl.events += kafka_events(settings, admin, tl.trainee_id, show_personal, progress)
    except common.Unreachable as exc:
        tl.unreachable.append(exc.message)
    try:
        tl.events += ledger_events(common.ledger_dsn(ledger_dsn), tl.trainee_id)
    except common.Unreachable as exc:
        tl.unreachable.append(exc.message)
    except Exception as exc:  # noqa: BLE001 - e.g. no notify schema yet: said, the rest is shown
        tl.unreachable.append(f"ledger: {type(exc).__name__}: {common.one_line(exc)}")
    tl.events.sort(key=lambda e: (e.at, e.source))
    tl.answers = answers(tl.events)
    return tl


def _fmt(value: Any) -> str:
    return value.isoformat(timespec="seconds") if isinstance(value, dt.datetime) else str(value)


def trainee(
    trainee_id: str = typer.Argument(..., metavar="ID", help="the trainee id"),
    as_json: bool = JSON_OPTION,
    show_personal: bool = SHOW_PERSONAL_OPTION,
    bootstrap: str | None = BOOTSTRAP_OPTION,
    ledger_dsn: str | None = typer.Option(None, "--ledger-dsn", help="default: TN_LEDGER_DSN"),
) -> None:
    """One trainee's timeline: CDC changes, net-change records, ledger rows and deliveries, in time order."""
    with common.cli_errors():
        if show_personal:
            common.audit_personal("trainee", trainee=trainee_id)
        err = common.console(stderr=True)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=err, transient=True, disable=not err.is_terminal)
        with progress:
            tl = build(trainee_id, bootstrap, ledger_dsn, show_personal, progress)
        if not tl.events:
            if tl.unreachable:
                raise common.Unreachable("; ".join(tl.unreachable))
            raise UnknownTrainee(f"unknown trainee '{trainee_id}': no CDC event, net-change record, ledger row or "
                                 "delivery event")
        if as_json:
            common.print_json({"trainee_id": tl.trainee_id, "events": [
                {"at": e.at, "source": e.source, "what": e.what, "ref": e.ref, "detail": e.detail} for e in tl.events],
                "told": tl.answers, "unreachable": tl.unreachable})
        else:
            render(tl)
        if tl.unreachable:
            raise typer.Exit(common.EXIT_UNREACHABLE)


def from_json(data: dict[str, Any]) -> Timeline:
    """A Timeline from ``trainee --json`` (the docs' capture is re-rendered from it; pure)."""
    def when(value: Any) -> Any:
        return dt.datetime.fromisoformat(value) if isinstance(value, str) else value

    events = [Event(when(e["at"]), e["source"], e["what"], e["ref"], e.get("detail") or {}) for e in data["events"]]
    answers_ = [{**a, "notifications": [{**n, "sent_at": when(n.get("sent_at"))} for n in a["notifications"]]}
                for a in data["told"]]
    return Timeline(data["trainee_id"], events, answers_, list(data.get("unreachable") or []))


def render(tl: Timeline, out: Any = None) -> None:
    out = out or common.console()
    t = Table("time (UTC)", "source", "what", "where", title=f"trainee {tl.trainee_id}")
    for e in tl.events:
        t.add_row(_fmt(e.at.astimezone(dt.UTC)), e.source, escape(e.what), e.ref)
    out.print(t)
    t = Table("record (day)", "changes", "told?", title="was the trainee told?")
    for a in tl.answers:
        told = "\n".join(f"{n['kind']}: {n['status']}" + (f" at {_fmt(n['sent_at'])}" if n["sent_at"] else "")
                         + (" [yellow](superseded: not sent; decide)[/]" if n["status"] == "SUPERSEDED" else "")
                         for n in a["notifications"]) or "[yellow]no ledger row[/]"
        t.add_row(str(a["record_id"]), escape(a["changes"]), told)
    if tl.answers:
        out.print(t)
    for u in tl.unreachable:
        out.print(f"[red]could not read:[/] {u}")
