"""``trainee-notify resend``: send digests again, explicitly and audited, through the mailer's own path.

Nothing here speaks SMTP. For each selected notification the command (with ``--execute``)

1. records the request in ``notify.ops_audit`` (request id, notification id, operator, reason) — a
   request replayed with the same ``--request-id`` finds its rows there and asks for nothing more;
2. marks the ledger row: ``resend_requested``, ``resend_request_id``, ``resend_by`` (operator),
   ``resend_reason``, ``resend_hash`` (the content hash of the record the copy is for);
3. re-publishes that record to the net-change topic, keyed by its id (from the copy the ledger keeps:
   for a SUPERSEDED row the newer record, otherwise the one that was sent), and a ``RESEND_REQUESTED``
   event to the delivery-status topic.

The running mailer then claims the row as a resend: a new generation (so a new ``Message-ID``), the
"copy" banner naming when the original went, its rate limit, retries, ledger and status events (which
carry the request id, operator and reason). The claim clears the flag, so the record read again later
(a replay) sends nothing more.

Exit codes: 0 done (or planned), 1 nothing matched or an error, 2 bad options, 3 Kafka or the ledger
database unreachable.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import typer
from rich.table import Table

from services import serde
from services.notifier.plan import Kind, Status, content_hash, unsent_reason
from services.opsctl import common
from services.opsctl.audit import audit, new_request_id

FINAL = ("SENT", "FAILED", "UNCERTAIN", "SUPPRESSED", "NO_ADDRESS", "SUPERSEDED")
IN_FLIGHT = ("PENDING", "SENDING", "RETRYING")
SELECTABLE = (*FINAL, *IN_FLIGHT)

TRAINEE_OPTION = typer.Option([], "--trainee", help="trainee id; repeatable or comma list")
DAY_OPTION = typer.Option([], "--day", help="day (YYYY-MM-DD, as in the record id); repeatable or comma list")
STATUS_OPTION = typer.Option([], "--status", help=f"ledger status: {', '.join(FINAL)}; repeatable or comma list")

_COLUMNS = ("notification_id, record_id, trainee_id, day, kind, status, generation, message_id, sent_at,"
            " first_sent_at, updated_at, content_hash, superseded_hash, resend_requested, resend_request_id,"
            " record_value, superseded_value")


@dataclass(frozen=True)
class Candidate:
    """One ledger row and what a resend would do with it."""

    notification_id: str
    record_id: str
    trainee_id: str
    day: str
    kind: str
    status: str
    generation: int
    updated_at: dt.datetime | None
    action: str  # send | republish (this request's, not yet taken by the mailer) | skip
    why: str
    value: bytes | None = None
    content_hash: str | None = None


def _split(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def classify(row: dict[str, Any], request_id: str, done_by_request: bool) -> Candidate:
    """Pure: what a resend does with one ledger row (``done_by_request``: this request id already has an
    audit row for it)."""
    base = {k: row[k] for k in ("notification_id", "record_id", "trainee_id", "day", "kind", "status", "generation",
                                "updated_at")}

    def out(action: str, why: str, value: bytes | None = None, h: str | None = None) -> Candidate:
        return Candidate(**base, action=action, why=why, value=value, content_hash=h)

    if row["resend_requested"]:
        if row["resend_request_id"] == request_id:
            value = (row["superseded_value"] if row["status"] == "SUPERSEDED" and row["superseded_value"]
                     else row["record_value"])
            return out("republish", "requested by this request, not yet sent: published again", value,
                       _hash_of(value))
        return out("skip", f"a resend is already pending (request {row['resend_request_id'] or 'by hand'})")
    if done_by_request:
        return out("skip", f"already resent by request {request_id}")
    if row["status"] in IN_FLIGHT:
        return out("skip", f"in flight ({row['status']}): the mailer is on it")
    superseded = row["status"] == "SUPERSEDED" and row["superseded_value"] is not None
    value = row["superseded_value"] if superseded else row["record_value"]
    if value is None:
        return out("skip", "no copy of the record in the ledger (sent before copies were kept): replay its offset "
                           "with reset-offsets instead")
    try:
        record = serde.decode(serde.NETCHANGE, value)
    except Exception as exc:  # noqa: BLE001 - said as the reason to skip it
        return out("skip", f"the ledger's copy of the record cannot be read ({type(exc).__name__})")
    unsent = unsent_reason(record)
    if unsent is Status.SUPPRESSED or (unsent is Status.NO_ADDRESS and row["kind"] == Kind.DIGEST.value):
        return out("skip", f"would not be sent: {unsent.value}")
    if row["kind"] == Kind.PREVIOUS_ADDRESS.value and not record.get("previous_email"):
        return out("skip", "the record has no previous address any more")
    why = "the newer (superseding) record, as a copy" if superseded else (
        "a copy" if row["status"] in ("SENT", "UNCERTAIN") else "first send of a record that was not delivered")
    return out("send", why, value, content_hash(record))


def _hash_of(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return content_hash(serde.decode(serde.NETCHANGE, value))
    except Exception:  # noqa: BLE001 - an unreadable value has no content hash
        return None


# ------------------------------------------------------------------------------------------ database
def connect(dsn: str) -> Any:
    """An autocommit connection to the ledger database (the ledger's schema ensured), or Unreachable."""
    import psycopg
    from psycopg.rows import dict_row

    from services.notifier.ledger_schema import SCHEMA

    try:
        conn = psycopg.connect(dsn, autocommit=True, row_factory=dict_row, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise common.Unreachable(f"cannot reach the ledger database at {_where(dsn)}: "
                                 f"{common.one_line(str(exc).splitlines()[0] if str(exc) else exc)}") from None
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('notify.ledger schema'))")
        conn.execute(SCHEMA)
    return conn


def _where(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - a malformed DSN is named by its variable, never shown
        return "TN_LEDGER_DSN"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}"


def select_rows(conn: Any, trainees: list[str], days: list[str], statuses: list[str], since: dt.datetime | None,
                until: dt.datetime | None, kinds: list[str]) -> list[dict[str, Any]]:
    where: list[str] = ["kind = ANY(%s)"]
    params: list[object] = [kinds]
    if trainees:
        where.append("trainee_id = ANY(%s)")
        params.append(trainees)
    if days:
        where.append("day = ANY(%s)")
        params.append(days)
    if statuses:
        where.append("status = ANY(%s)")
        params.append(statuses)
    if since:
        where.append("updated_at >= %s")
        params.append(since)
    if until:
        where.append("updated_at < %s")
        params.append(until)
    return list(conn.execute(f"SELECT {_COLUMNS} FROM notify.ledger WHERE {' AND '.join(where)}"  # noqa: S608  fixed columns and conditions, values as parameters
                             " ORDER BY day, trainee_id, kind", params).fetchall())


def audited(conn: Any, request_id: str, ids: list[str]) -> set[str]:
    rows = conn.execute("SELECT item FROM notify.ops_audit WHERE request_id = %s AND item = ANY(%s)",
                        (request_id, ids)).fetchall()
    return {r["item"] for r in rows}


def mark(conn: Any, c: Candidate, request_id: str, operator: str, reason: str) -> bool:
    """Audit row and ledger mark in one transaction; False when the row changed meanwhile."""
    import json

    with conn.transaction():
        added = conn.execute(
            "INSERT INTO notify.ops_audit (request_id, item, action, operator, reason, detail)"
            " VALUES (%s, %s, 'resend', %s, %s, %s::jsonb) ON CONFLICT DO NOTHING RETURNING 1",
            (request_id, c.notification_id, operator, reason,
             json.dumps({"status": c.status, "generation": c.generation, "content_hash": c.content_hash}))).fetchone()
        if added is None:
            return False
        updated = conn.execute(
            "UPDATE notify.ledger SET resend_requested = true, resend_by = %s, resend_reason = %s,"
            " resend_request_id = %s, resend_hash = %s, resend_requested_at = now(), updated_at = now()"
            " WHERE notification_id = %s AND NOT resend_requested AND status = ANY(%s) RETURNING 1",
            (operator, reason, request_id, c.content_hash, c.notification_id, list(FINAL))).fetchone()
        if updated is None:
            raise _Changed()
    return True


class _Changed(Exception):
    pass


# ------------------------------------------------------------------------------------------ Kafka
def producer(settings: Any) -> Any:
    from confluent_kafka import Producer

    common.ensure_reachable(settings)
    # murmur2: the partition the aggregator (a Java-compatible partitioner) put the record's id on
    return Producer(common.client_config(settings, **{"partitioner": "murmur2_random", "acks": "all",
                                                      "enable.idempotence": True, "linger.ms": 5}))


def publish(prod: Any, settings: Any, c: Candidate, request_id: str, operator: str, reason: str) -> None:
    headers = [("resend.request_id", request_id.encode()), ("resend.operator", operator.encode()),
               ("resend.notification_id", c.notification_id.encode())]
    prod.produce(settings.netchange_topic, c.value, key=c.record_id.encode(), headers=headers)
    event = {"notification_id": c.notification_id, "record_id": c.record_id, "trainee_id": c.trainee_id,
             "day": c.day, "kind": c.kind, "status": Status.RESEND_REQUESTED.value, "attempt": 0,
             "generation": c.generation, "message_id": None, "smtp_code": None, "reason": None,
             "instance": "opsctl", "at_ms": int(time.time() * 1000), "content_hash": c.content_hash,
             "previous_content_hash": None, "request_id": request_id, "operator": operator,
             "operator_reason": reason}
    prod.produce(settings.delivery_status_topic, serde.encode(serde.DELIVERY_STATUS, event),
                 key=c.notification_id.encode())
    prod.poll(0)


def _flush(prod: Any) -> None:
    left = prod.flush(30)
    if left:
        raise common.OpsError(f"{left} message(s) could not be written to Kafka; run the same command again "
                              "(the same --request-id): what was asked for is published again, sent once")


# ------------------------------------------------------------------------------------------ output
def _row_json(c: Candidate) -> dict[str, Any]:
    return {"notification_id": c.notification_id, "trainee_id": c.trainee_id, "day": c.day, "kind": c.kind,
            "status": c.status, "generation": c.generation, "action": c.action, "why": c.why,
            "content_hash": c.content_hash}


def _table(cands: list[Candidate], title: str) -> Table:
    table = Table(title=title)
    for col in ("notification", "status", "gen", "action", "why"):
        table.add_column(col)
    for c in cands:
        table.add_row(c.notification_id, c.status, str(c.generation), c.action, c.why)
    return table


def resend(
    trainee: list[str] = TRAINEE_OPTION,
    day: list[str] = DAY_OPTION,
    status: list[str] = STATUS_OPTION,
    since: str | None = typer.Option(None, "--since", help="outcome recorded at or after (2h, 2026-11-25T07:00Z)"),
    until: str | None = typer.Option(None, "--until", help="outcome recorded before"),
    kind: str = typer.Option("digest", "--kind", help="digest, previous-address or all"),
    reason: str = typer.Option(..., "--reason", help="why (stored in the ledger and the delivery-status topic)"),
    operator: str | None = typer.Option(None, "--operator", help="who asks (default: your login name)"),
    request_id: str | None = typer.Option(None, "--request-id", help="run a request again (idempotent: sends "
                                          "nothing it already asked for); default: a new id"),
    execute: bool = typer.Option(False, "--execute", help="ask the mailer to send (default: a dry run)"),
    bootstrap: str | None = common.BOOTSTRAP_OPTION,
    ledger_dsn: str | None = typer.Option(None, "--ledger-dsn", help="default: TN_LEDGER_DSN"),
    as_json: bool = common.JSON_OPTION,
) -> None:
    """Send notifications again as copies, through the running mailer: a dry run until --execute.

    Examples:

        trainee-notify resend --trainee 47165 --day 2026-11-24 --reason "trainee asked"
        trainee-notify resend --status FAILED --since 2026-11-25T07:00Z --reason "relay down" --execute
    """
    with common.cli_errors():
        trainees, days = _split(trainee), _split(day)
        statuses = [s.upper() for s in _split(status)]
        bad = [s for s in statuses if s not in SELECTABLE]
        if bad:
            raise common.UsageError(f"unknown status {', '.join(bad)} (one of {', '.join(FINAL)})")
        if not (trainees or days or statuses or since or until):
            raise common.UsageError("select what to resend: --trainee, --day, --status, --since or --until")
        if not reason.strip():
            raise common.UsageError("--reason must say why")
        kinds = {"digest": [Kind.DIGEST.value], "previous-address": [Kind.PREVIOUS_ADDRESS.value],
                 "all": [k.value for k in Kind]}.get(kind)
        if kinds is None:
            raise common.UsageError(f"--kind must be digest, previous-address or all, not '{kind}'")
        who = (operator or common.operator_name()).strip()
        if not who:
            raise common.UsageError("--operator must name someone")
        rid = request_id or new_request_id("rs")
        start, end = (common.parse_when(x) if x else None for x in (since, until))
        settings = common.mailer_settings(bootstrap, ledger_dsn)
        conn = connect(settings.ledger_dsn)
        try:
            rows = select_rows(conn, trainees, days, statuses, start, end, kinds)
            if not rows:
                what = f"trainee {', '.join(trainees)}" if trainees else "the selection"
                raise (common.UnknownTrainee if trainees and not (days or statuses) else common.OpsError)(
                    f"no notification in the ledger matches {what}")
            done = audited(conn, rid, [r["notification_id"] for r in rows])
            cands = [classify(r, rid, r["notification_id"] in done) for r in rows]
            if execute:
                cands = _execute(conn, settings, cands, rid, who, reason, quiet=as_json)
        finally:
            conn.close()
        going = [c for c in cands if c.action in ("send", "republish")]
        if as_json:
            common.print_json({"request_id": rid, "operator": who, "reason": reason, "execute": execute,
                               "selected": len(cands), "resend": len(going),
                               "notifications": [_row_json(c) for c in cands]})
            return
        out = common.console()
        title = (f"resend {rid}: requested" if execute else f"resend {rid}: dry run (nothing asked for; add --execute)")
        out.print(_table(cands, title))
        verb = "asked the mailer to send" if execute else "would send"
        out.print(f"{len(going)} of {len(cands)} selected: {verb} {len(going)} as copies "
                  f"(operator {who}, reason: {reason})" + (
                      f"; run again with --request-id {rid} to retry what did not go" if execute else ""))


def _execute(conn: Any, settings: Any, cands: list[Candidate], rid: str, who: str, reason: str,
             quiet: bool) -> list[Candidate]:
    from rich.progress import Progress

    prod = producer(settings)
    out: list[Candidate] = []
    published: set[tuple[str, str | None]] = set()
    todo = [c for c in cands if c.action in ("send", "republish")]
    with Progress(console=common.console(stderr=True), disable=quiet or len(todo) < 2, transient=True) as bar:
        task = bar.add_task("asking for copies", total=len(todo))
        for c in cands:
            if c.action not in ("send", "republish"):
                out.append(c)
                continue
            if c.action == "send":
                try:
                    if not mark(conn, c, rid, who, reason):
                        c = Candidate(**{**c.__dict__, "action": "skip", "why": f"already resent by request {rid}"})
                except _Changed:
                    c = Candidate(**{**c.__dict__, "action": "skip", "why": "the ledger row changed meanwhile: "
                                                                            "run the dry run again"})
            if c.action != "skip":
                if (c.record_id, c.content_hash) not in published:  # a record's two notifications: one record
                    publish(prod, settings, c, rid, who, reason)
                    published.add((c.record_id, c.content_hash))
                audit("opsctl.resend_requested", request_id=rid, operator=who, reason=reason,
                      notification_id=c.notification_id, status=c.status, content_hash=c.content_hash)
            out.append(c)
            bar.advance(task)
    _flush(prod)
    return out
