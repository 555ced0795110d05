"""``trainee-notify deadletter list | show | retry``: the two dead-letter topics, with their reasons and
the original coordinates.

- CDC (``trainee-notify.cdc-dlq.v1``, written by the aggregator): the change envelope as it came, with
  headers ``reason``, ``source.topic``, ``source.partition``, ``source.offset``.
- mail (``trainee-notify.mail-dlq.v1``, written by the mailer): the net-change record whose mail finally
  failed (header ``notification_id``) or that could not be read, with ``reason`` and (since this
  version) ``source.topic/partition/offset``.

A dead letter is named ``cdc:PARTITION:OFFSET`` or ``mail:PARTITION:OFFSET``. ``retry`` re-submits the
selected ones to their original topic (after the fix), audited like ``resend``: ``--operator`` and
``--reason`` are stored in ``notify.ops_audit`` under a request id (a request run again re-submits
nothing twice), in the headers of the re-submitted record and in the log. A failed mail is also marked
for a resend in the ledger, so the mailer sends it (the ledger would otherwise see it as final).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import typer
from rich.table import Table

from services import serde
from services.opsctl import common
from services.opsctl.audit import audit, new_request_id

app = typer.Typer(help="List, show and retry dead-lettered records.", no_args_is_help=True, add_completion=False)

DLQ_OPTION = typer.Option("all", "--dlq", help="cdc, mail or all")
REFS_ARGUMENT = typer.Argument(None, help="dead letters to retry: cdc:P:O or mail:P:O (default: every one "
                               "that --match selects)")


@dataclass(frozen=True)
class Entry:
    dlq: str  # cdc | mail
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.dlq}:{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        return self.headers.get("reason", "")

    @property
    def source(self) -> str:
        h = self.headers
        if "source.topic" not in h:
            return ""
        return f"{h['source.topic']}:{h.get('source.partition', '?')}:{h.get('source.offset', '?')}"

    def original_topic(self, settings: Any) -> str | None:
        if "source.topic" in self.headers:
            return self.headers["source.topic"]
        return settings.netchange_topic if self.dlq == "mail" else None


def dlq_topics(settings: Any, which: str) -> dict[str, str]:
    both = {"cdc": settings.cdc_dlq_topic, "mail": settings.mail_dlq_topic}
    if which == "all":
        return both
    if which not in both:
        raise common.UsageError(f"--dlq must be cdc, mail or all, not '{which}'")
    return {which: both[which]}


def read(settings: Any, which: str, since_ms: int | None = None, only: set[tuple[str, int, int]] | None = None
         ) -> list[Entry]:
    """Every dead letter of the chosen topics (from ``since_ms``), in topic, partition, offset order."""
    from confluent_kafka import TopicPartition

    from services.opsctl import groups

    adm = common.admin(settings)
    out: list[Entry] = []
    for name, topic in dlq_topics(settings, which).items():
        tps = groups.topic_partition_list(adm, topic)
        if only is not None:
            tps = [tp for tp in tps if any(o[0] == name and o[1] == tp[1] for o in only)]
        lows, highs = groups.earliest_offsets(adm, tps), groups.end_offsets(adm, tps)
        starts = groups.offsets_for_time(adm, tps, since_ms) if since_ms is not None else lows
        assign = [TopicPartition(t, p, starts[(t, p)]) for t, p in tps if starts[(t, p)] < highs[(t, p)]]
        if only is not None:
            wanted = {(o[1], o[2]) for o in only if o[0] == name}
            assign = [TopicPartition(t.topic, t.partition, min(o for p, o in wanted if p == t.partition))
                      for t in assign if any(p == t.partition for p, _ in wanted)]
        if not assign:
            continue
        c = common.consumer(settings)
        try:
            c.assign(assign)
            left = {(t.topic, t.partition) for t in assign}
            while left:
                msg = c.poll(5.0)
                if msg is None:
                    break
                tp = (msg.topic(), msg.partition())
                if msg.error():
                    left.discard(tp)  # end of partition (or an error there): that one is done
                    continue
                if msg.offset() >= highs[tp] - 1:
                    left.discard(tp)
                if only is not None and (name, msg.partition(), msg.offset()) not in only:
                    continue
                out.append(Entry(name, topic, msg.partition(), msg.offset(), msg.timestamp()[1], msg.key(),
                                 msg.value(), common.decode_headers(msg.headers())))
        finally:
            c.close()
    return sorted(out, key=lambda e: (e.dlq, e.partition, e.offset))


def _original_key(e: Entry) -> bytes | None:
    """The key the record had on its original topic: a CDC dead letter keeps it; a mail dead letter is
    keyed by notification id, so the net-change record's own id is used."""
    if e.dlq == "mail" and e.value:
        try:
            return str(serde.decode(serde.NETCHANGE, e.value)["id"]).encode()
        except Exception:  # noqa: BLE001 - an unreadable record keeps the key it has
            return e.key
    return e.key


def parse_ref(ref: str) -> tuple[str, int, int]:
    parts = ref.strip().split(":")
    if len(parts) != 3 or parts[0] not in ("cdc", "mail") or not parts[1].isdigit() or not parts[2].isdigit():
        raise common.UsageError(f"not a dead letter: '{ref}' (cdc:PARTITION:OFFSET or mail:PARTITION:OFFSET)")
    return parts[0], int(parts[1]), int(parts[2])


def _when(ms: int) -> str:
    return common.ms_to_datetime(ms).isoformat(timespec="seconds") if ms > 0 else ""


def _json(e: Entry, show_personal: bool, value: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"ref": e.ref, "topic": e.topic, "partition": e.partition, "offset": e.offset,
                           "time": _when(e.timestamp_ms), "key": common.decode_record(None, e.topic, e.key, None).key,
                           "reason": e.reason, "source": e.source or None,
                           "notification_id": e.headers.get("notification_id"), "headers": e.headers}
    if value:
        decoded = common.decode_record(None, e.topic, e.key, e.value)
        out["format"] = decoded.format
        out["value"] = decoded.value if show_personal else common.mask_personal(decoded.value)
    return out


@app.command("list")
def list_cmd(
    dlq: str = DLQ_OPTION,
    match: str | None = typer.Option(None, "--match", help="only dead letters whose reason contains this"),
    since: str | None = typer.Option(None, "--since", help="only those written since (2h, 2026-11-25)"),
    limit: int = typer.Option(200, "--limit", help="at most this many (the newest)"),
    bootstrap: str | None = common.BOOTSTRAP_OPTION,
    as_json: bool = common.JSON_OPTION,
) -> None:
    """Dead letters with their reason and where they came from."""
    with common.cli_errors():
        settings = common.kafka_settings(bootstrap)
        since_ms = int(common.parse_when(since).timestamp() * 1000) if since else None
        entries = [e for e in read(settings, dlq, since_ms) if not match or match.lower() in e.reason.lower()]
        entries = sorted(entries, key=lambda e: e.timestamp_ms)[-limit:] if limit > 0 else entries
        if as_json:
            common.print_json([_json(e, False) for e in entries])
            return
        table = Table(title=f"dead letters ({dlq})")
        for col in ("ref", "time", "key", "reason", "original", "notification"):
            table.add_column(col, overflow="fold")
        for e in entries:
            key = common.decode_record(None, e.topic, e.key, None).key
            table.add_row(e.ref, _when(e.timestamp_ms), str(key) if key is not None else "", e.reason, e.source,
                          e.headers.get("notification_id", ""))
        out = common.console()
        out.print(table)
        out.print(f"{len(entries)} dead letter(s)")


@app.command("show")
def show_cmd(
    ref: str = typer.Argument(..., help="cdc:PARTITION:OFFSET or mail:PARTITION:OFFSET"),
    show_personal: bool = common.SHOW_PERSONAL_OPTION,
    bootstrap: str | None = common.BOOTSTRAP_OPTION,
    as_json: bool = common.JSON_OPTION,
) -> None:
    """One dead letter: headers (reason, original coordinates) and its decoded value."""
    with common.cli_errors():
        wanted = parse_ref(ref)
        settings = common.kafka_settings(bootstrap)
        found = read(settings, wanted[0], only={wanted})
        if not found:
            raise common.OpsError(f"no dead letter {ref}")
        if show_personal:
            common.audit_personal("deadletter show", ref=ref)
        data = _json(found[0], show_personal, value=True)
        if as_json:
            common.print_json(data)
            return
        out = common.console()
        for k in ("ref", "topic", "time", "reason", "source", "notification_id", "format"):
            out.print(f"[bold]{k}[/bold]: {data.get(k) or ''}", highlight=False)
        out.print_json(data=common.to_jsonable({"key": data["key"], "headers": data["headers"],
                                                "value": data["value"]}))


def _mark_failed_mail(conn: Any, e: Entry, rid: str, who: str, reason: str) -> str:
    """For a mail dead letter of a notification the ledger holds as final: ask for a resend of it."""
    from services.notifier.plan import content_hash
    from services.opsctl import resend as rs

    nid = e.headers.get("notification_id")
    if not nid:
        return "no notification id: the mailer reads it as a new record"
    row = conn.execute(f"SELECT {rs._COLUMNS} FROM notify.ledger WHERE notification_id = %s", (nid,)).fetchone()  # noqa: S608  a fixed column list, values as parameters
    if row is None:
        return "not in the ledger: the mailer sends it as new"
    if row["resend_requested"]:
        return f"a resend is already pending (request {row['resend_request_id']})"
    if row["status"] not in rs.FINAL:
        return f"in flight ({row['status']})"
    try:
        h = content_hash(serde.decode(serde.NETCHANGE, e.value or b""))
    except Exception:  # noqa: BLE001 - an unreadable value has no content hash: the resend still goes
        h = None
    updated = conn.execute(
        "UPDATE notify.ledger SET resend_requested = true, resend_by = %s, resend_reason = %s, resend_request_id = %s,"
        " resend_hash = %s, resend_requested_at = now(), updated_at = now()"
        " WHERE notification_id = %s AND NOT resend_requested RETURNING 1", (who, reason, rid, h, nid)).fetchone()
    return "ledger marked for a resend" if updated else "the ledger row changed meanwhile"


@app.command("retry")
def retry_cmd(
    refs: list[str] | None = REFS_ARGUMENT,
    dlq: str = DLQ_OPTION,
    match: str | None = typer.Option(None, "--match", help="only dead letters whose reason contains this"),
    reason: str = typer.Option(..., "--reason", help="why (the fix); stored with the request"),
    operator: str | None = typer.Option(None, "--operator", help="who asks (default: your login name)"),
    request_id: str | None = typer.Option(None, "--request-id", help="run a request again (re-submits nothing twice)"),
    execute: bool = typer.Option(False, "--execute", help="re-submit (default: a dry run)"),
    bootstrap: str | None = common.BOOTSTRAP_OPTION,
    ledger_dsn: str | None = typer.Option(None, "--ledger-dsn", help="default: TN_LEDGER_DSN"),
    as_json: bool = common.JSON_OPTION,
) -> None:
    """Re-submit dead letters to their original topic after a fix: a dry run until --execute."""
    with common.cli_errors():
        if not refs and not match:
            raise common.UsageError("name the dead letters (cdc:P:O, mail:P:O) or select them with --match")
        if not reason.strip():
            raise common.UsageError("--reason must say why")
        who = (operator or common.operator_name()).strip()
        rid = request_id or new_request_id("dl")
        settings = common.mailer_settings(bootstrap, ledger_dsn)
        wanted = {parse_ref(r) for r in refs or []}
        entries = read(settings, dlq if not wanted else "all", only=wanted or None)
        if match:
            entries = [e for e in entries if match.lower() in e.reason.lower()]
        missing = sorted(f"{d}:{p}:{o}" for d, p, o in wanted - {(e.dlq, e.partition, e.offset) for e in entries})
        if missing:
            raise common.OpsError(f"no dead letter {', '.join(missing)}")
        if not entries:
            raise common.OpsError("no dead letter matches")
        from services.opsctl.resend import connect, producer

        conn = connect(settings.ledger_dsn)
        rows = []
        try:
            done = {r["item"] for r in conn.execute(
                "SELECT item FROM notify.ops_audit WHERE request_id = %s", (rid,)).fetchall()}
            prod = producer(settings) if execute else None
            for e in entries:
                item = f"{e.topic}:{e.partition}:{e.offset}"
                target = e.original_topic(settings)
                row = {"ref": e.ref, "reason": e.reason, "to": target, "action": "retry", "note": ""}
                if target is None:
                    row.update(action="skip", note="no original topic in its headers")
                elif item in done:
                    row.update(action="skip", note=f"already re-submitted by request {rid}")
                elif prod is not None:  # --execute
                    import json

                    with conn.transaction():
                        added = conn.execute(
                            "INSERT INTO notify.ops_audit (request_id, item, action, operator, reason, detail)"
                            " VALUES (%s, %s, 'deadletter-retry', %s, %s, %s::jsonb)"
                            " ON CONFLICT DO NOTHING RETURNING 1",
                            (rid, item, who, reason, json.dumps({"to": target, "dlq_reason": e.reason}))).fetchone()
                        if added and e.dlq == "mail":
                            row["note"] = _mark_failed_mail(conn, e, rid, who, reason)
                    if not added:
                        row.update(action="skip", note=f"already re-submitted by request {rid}")
                    else:
                        headers = [("retry.request_id", rid.encode()), ("retry.operator", who.encode()),
                                   ("retry.of", item.encode())]
                        prod.produce(target, e.value, key=_original_key(e), headers=headers)
                        prod.poll(0)
                        audit("opsctl.deadletter_retried", request_id=rid, operator=who, reason=reason,
                              dead_letter=item, to=target, dlq_reason=e.reason)
                rows.append(row)
            if prod is not None and prod.flush(30):
                raise common.OpsError(f"not every record reached Kafka; run again with --request-id {rid}")
        finally:
            conn.close()
        if as_json:
            common.print_json({"request_id": rid, "operator": who, "reason": reason, "execute": execute,
                               "dead_letters": rows})
            return
        table = Table(title=f"retry {rid}: " + ("re-submitted" if execute else "dry run (add --execute)"))
        for col in ("ref", "reason", "to", "action", "note"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(r["ref"], r["reason"], r["to"] or "", r["action"], r["note"])
        out = common.console()
        out.print(table)
        n = sum(r["action"] == "retry" for r in rows)
        out.print(f"{n} of {len(rows)} {'re-submitted' if execute else 'would be re-submitted'} "
                  f"(operator {who}, reason: {reason})")
