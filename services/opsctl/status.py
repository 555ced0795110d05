"""``trainee-notify status``: the one screen an operator opens first.

- each consumer group (the aggregator's ``TN_APP_ID``, the mailer's ``TN_GROUP_ID``, or ``--group``): state, members
  (client id, host, partitions) and lag per topic;
- the aggregator's watermark lag, its maximum hold and the forced flag, from its ``/metrics``
  (``--aggregator-url``, ``TN_AGGREGATOR_URL`` or ``TN_WEB_HOST:TN_WEB_PORT``);
- today's and yesterday's notifications by ledger status (``notify.ledger``), with the send time
  that pending ones wait for;
- dead letters (CDC and mail) by reason, from the dead-letter topics' ``reason`` headers;
- the connector's task states and the replication slot's retained WAL.

Every part is read on its own: what could not be reached is said (``unreachable``) and the rest is
still shown. Exit codes: 0 everything was read; 3 some part could not be reached (common.py).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from services.opsctl import common, connector, groups
from services.opsctl.common import BOOTSTRAP_OPTION, JSON_OPTION, OpsError
from services.opsctl.scan import Start, scan

STATUS_ORDER = ["SENT", "PENDING", "SENDING", "RETRYING", "UNCERTAIN", "FAILED", "SUPERSEDED", "SUPPRESSED",
                "NO_ADDRESS"]
GROUP_OPTION = typer.Option(None, "--group", help="show these consumer groups (repeatable; default: the aggregator's "
                            "and the mailer's); an unknown one is an error")
DAY_OPTION = typer.Option(None, "--day", help="also these days' notifications by ledger status (YYYY-MM-DD; "
                          "repeatable or comma list), besides today and yesterday")
_METRIC_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


@dataclass
class Screen:
    groups: dict[str, Any] = field(default_factory=dict)
    aggregator: dict[str, Any] | None = None
    digests: dict[str, Any] | None = None
    superseded: dict[str, int] = field(default_factory=dict)  # day -> SUPERSEDED rows not yet resent
    dead_letters: dict[str, Any] = field(default_factory=dict)
    connector: Any = None
    slots: list[Any] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus exposition text → {name or name{labels}: value} (pure)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_RE.match(line)
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                continue
    return out


def send_time(day: dt.date, send_at: str, tz: str) -> dt.datetime:
    """When the digests of ``day`` go: ``send_at`` local time on the next day (pure)."""
    hh, mm = (int(x) for x in send_at.split(":"))
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(hh, mm), ZoneInfo(tz))


def _groups(screen: Screen, settings: Any, admin: Any, named: list[str]) -> None:
    ids = named or [settings.app_id, common.mailer_settings().group_id]
    for gid, info in groups.describe_groups(admin, ids).items():
        if isinstance(info, common.UnknownGroup) and named:
            raise info
        if isinstance(info, common.UnknownGroup):
            screen.groups[gid] = {"state": "unknown", "members": [], "lag": {}, "total_lag": None,
                                  "note": "no members and no committed offsets"}
            continue
        screen.groups[gid] = {"state": info.state, "members": [
            {"client_id": m.client_id, "host": m.host, "partitions": len(m.partitions),
             "topics": sorted({t for t, _ in m.partitions})} for m in info.members],
            "lag": info.lag_by_topic(), "total_lag": info.total_lag}


def _aggregator(screen: Screen, url: str) -> None:
    text = common.http_json("GET", f"{url}/metrics", timeout=3.0, what="the aggregator")
    m = parse_metrics(text if isinstance(text, str) else "")
    hold = common.aggregator_settings().max_hold_seconds
    screen.aggregator = {"url": url, "watermark_lag_seconds": m.get("netchange_watermark_lag_seconds"),
                         "max_hold_seconds": hold, "forced": bool(m.get("netchange_watermark_forced", 0)),
                         "stalled": bool(m.get("netchange_stalled", 0)),
                         "dead_letters": {k: v for k, v in m.items() if k.startswith("netchange_dead_letters_total")}}
    if screen.aggregator["forced"]:
        screen.warnings.append("the aggregator's watermark is FORCED: the connector shows no progress "
                               "(see `trainee-notify connector status`)")


def parse_days(values: list[str]) -> list[dt.date]:
    """``--day`` values (YYYY-MM-DD, repeatable or comma lists) → dates; :class:`UsageError` otherwise (pure)."""
    out = []
    for value in values:
        for item in value.split(","):
            if not item.strip():
                continue
            try:
                out.append(dt.date.fromisoformat(item.strip()[:10]))
            except ValueError:
                raise common.UsageError(f"--day wants YYYY-MM-DD, not '{item.strip()}'") from None
    return out


def _digests(screen: Screen, dsn: str, now: dt.datetime, extra_days: list[dt.date] | None = None) -> None:
    ms = common.mailer_settings()
    today = now.astimezone(ZoneInfo(ms.timezone)).date()
    days = [today, today - dt.timedelta(days=1)]
    days += [d for d in dict.fromkeys(extra_days or []) if d not in days]
    with common.pg_connect(dsn, "ledger database") as conn:
        rows = conn.execute("SELECT left(day, 10), status, count(*) FROM notify.ledger"
                            " WHERE left(day, 10) = ANY(%s) GROUP BY 1, 2", ([d.isoformat() for d in days],)).fetchall()
        # SUPERSEDED rows wait for an operator whatever their day (a replay re-derives up to 7 days back)
        undecided = conn.execute("SELECT left(day, 10), count(*) FROM notify.ledger WHERE status = 'SUPERSEDED'"
                                 " AND NOT resend_requested GROUP BY 1 ORDER BY 1").fetchall()
    screen.superseded = {str(day): int(n) for day, n in undecided}
    elsewhere = {day: n for day, n in screen.superseded.items() if day not in {d.isoformat() for d in days}}
    if elsewhere:
        screen.warnings.append(f"{sum(elsewhere.values())} SUPERSEDED notification(s) of other days wait for a "
                               f"decision ({', '.join(f'{d}: {n}' for d, n in elsewhere.items())}): "
                               "`trainee-notify status --day DAY`, `trainee-notify resend --status SUPERSEDED --help`")
    out: dict[str, Any] = {}
    for d in days:
        counts = {str(s): int(n) for day, s, n in rows if day == d.isoformat()}
        ordered = {s: counts[s] for s in STATUS_ORDER if s in counts} | {
            s: n for s, n in sorted(counts.items()) if s not in STATUS_ORDER}
        due = send_time(d, ms.send_at, ms.timezone)
        label = "today" if d == today else "yesterday" if d == today - dt.timedelta(days=1) else "day"
        out[d.isoformat()] = {"label": label, "by_status": ordered,
                              "send_at": due.isoformat(), "overdue": bool(counts.get("PENDING")) and now > due
                              and not ms.send_immediately}
        if out[d.isoformat()]["overdue"]:
            screen.warnings.append(f"{counts['PENDING']} digest(s) of {d} still PENDING after their send time {due}")
        for bad in ("FAILED", "UNCERTAIN", "SUPERSEDED"):
            if counts.get(bad):
                screen.warnings.append(f"{counts[bad]} notification(s) of {d} {bad}: "
                                       "see `trainee-notify resend --help`")
    screen.digests = out


def _dead_letters(screen: Screen, settings: Any, admin: Any) -> None:
    for kind, topic in (("cdc", settings.cdc_dlq_topic), ("mail", settings.mail_dlq_topic)):
        reasons: Counter[str] = Counter()
        newest = 0
        for raw in scan(settings, admin, topic, start=Start(earliest=True), idle_timeout=5.0):
            headers = common.decode_headers(raw.headers)
            reasons[headers.get("reason", "(no reason header)")] += 1
            newest = max(newest, raw.timestamp_ms)
        screen.dead_letters[kind] = {"topic": topic, "total": sum(reasons.values()),
                                     "by_reason": dict(reasons.most_common()),
                                     "newest": common.ms_to_datetime(newest).isoformat() if newest else None}


def gather(bootstrap: str | None, aggregator_url: str | None, ledger_dsn: str | None, connect_url: str | None,
           source_dsn: str | None, now: dt.datetime | None = None, named_groups: list[str] | None = None,
           days: list[dt.date] | None = None) -> Screen:
    """Read every part; what fails is recorded in ``unreachable`` and the rest still read."""
    now = now or dt.datetime.now(dt.UTC)
    screen = Screen()
    settings = common.aggregator_settings(bootstrap)
    admin = None
    try:
        admin = common.admin(settings)
        admin.list_topics(timeout=10)
    except OpsError as exc:
        screen.unreachable.append(exc.message)
        admin = None
    except Exception as exc:  # noqa: BLE001 - said, and the rest is read
        screen.unreachable.append(f"Kafka at {settings.kafka_bootstrap}: {common.one_line(exc)}")
        admin = None
    parts: list[tuple[str, Any]] = []
    if admin is not None:
        _groups(screen, settings, admin, list(named_groups or []))  # an unknown named group is an error
        parts += [
                  ("dead letters", lambda: _dead_letters(screen, settings, admin))]
    parts += [("aggregator", lambda: _aggregator(screen, common.aggregator_url(aggregator_url))),
              ("ledger", lambda: _digests(screen, common.ledger_dsn(ledger_dsn), now, days))]
    for what, read in parts:
        try:
            read()
        except OpsError as exc:
            screen.unreachable.append(exc.message)
        except Exception as exc:  # noqa: BLE001 - said, and the rest is read
            screen.unreachable.append(f"{what}: {type(exc).__name__}: {common.one_line(exc)}")
    rep = connector.report(common.connect_url(connect_url), common.source_dsn(source_dsn), connector.connector_name(),
                           connector.DEFAULT_WARN_BYTES)
    screen.connector, screen.slots = rep.connector, rep.slots
    for problem in rep.problems:
        (screen.unreachable if problem.startswith(("cannot reach", "Kafka Connect: no URL")) else
         screen.warnings).append(problem)
    return screen


def from_json(data: dict[str, Any]) -> Screen:
    """A Screen from ``status --json`` (the docs' capture is re-rendered from it; pure)."""
    c = data.get("connector")
    conn = None if c is None else connector.ConnectorState(
        c["name"], c["state"], c["worker"], [connector.TaskState(**task) for task in c["tasks"]], c.get("trace", ""))
    return Screen(groups=data["groups"], aggregator=data["aggregator"], digests=data["digests"],
                  superseded=data.get("superseded", {}), dead_letters=data["dead_letters"], connector=conn,
                  slots=[connector.Slot(**s) for s in data["slots"]], unreachable=data["unreachable"],
                  warnings=data["warnings"])


def render(screen: Screen, out: Any = None) -> None:
    out = out or common.console()
    t = Table("group", "state", "members (client id @ host: partitions)", "lag per topic", "total lag",
              title="consumer groups")
    for gid, g in screen.groups.items():
        members = "\n".join(f"{m['client_id']} @ {m['host']}: {m['partitions']}" for m in g["members"]) or "-"
        lag = "\n".join(f"{topic}: {n}" for topic, n in sorted(g["lag"].items())) or "-"
        state = g["state"] if g["state"] == "Stable" else f"[yellow]{g['state']}[/]"
        t.add_row(gid, state, members, lag, "-" if g["total_lag"] is None else str(g["total_lag"]))
    if screen.groups:
        out.print(t)
    if screen.aggregator is not None:
        a = screen.aggregator
        lag = a["watermark_lag_seconds"]
        forced = "[red]yes[/]" if a["forced"] else "no"
        out.print(f"[bold]aggregator[/] {a['url']}: watermark lag "
                  f"{'-' if lag is None else f'{lag:.0f} s'} (max hold {a['max_hold_seconds']:.0f} s), forced {forced}"
                  + (", [red]stalled[/]" if a["stalled"] else ""))
    if screen.digests is not None:
        statuses = [s for s in STATUS_ORDER if any(s in d["by_status"] for d in screen.digests.values())]
        extra = sorted({s for d in screen.digests.values() for s in d["by_status"]} - set(STATUS_ORDER))
        cols = statuses + extra or ["(none)"]
        t = Table("day", *cols, "digests go at", title="notifications by ledger status")
        for day, d in screen.digests.items():
            t.add_row(f"{d['label']} {day}" if d["label"] != "day" else day,
                      *[str(d["by_status"].get(s, 0)) for s in cols],
                      d["send_at"] + (" [red](overdue)[/]" if d["overdue"] else ""))
        out.print(t)
    if screen.dead_letters:
        t = Table("dead letters", "topic", "reason", "count", "newest", title="dead letters")
        for kind, d in screen.dead_letters.items():
            if not d["by_reason"]:
                t.add_row(kind, d["topic"], "-", "0", "-")
            for i, (reason, n) in enumerate(d["by_reason"].items()):
                t.add_row(kind if i == 0 else "", d["topic"] if i == 0 else "", reason, str(n),
                          (d["newest"] or "-") if i == 0 else "")
        out.print(t)
    rep = connector.Report(screen.connector, screen.slots)
    for table in connector.render_tables(rep, connector.DEFAULT_WARN_BYTES):
        out.print(table)
    for w in screen.warnings:
        out.print(f"[yellow]![/] {w}")
    for u in screen.unreachable:
        out.print(f"[red]could not read:[/] {u}")


def status(
    as_json: bool = JSON_OPTION,
    bootstrap: str | None = BOOTSTRAP_OPTION,
    aggregator_url: str | None = typer.Option(None, "--aggregator-url", help="the aggregator's web endpoint "
                                              "(default: TN_AGGREGATOR_URL or http://TN_WEB_HOST:TN_WEB_PORT)"),
    ledger_dsn: str | None = typer.Option(None, "--ledger-dsn", help="default: TN_LEDGER_DSN"),
    connect_url: str | None = connector.CONNECT_URL_OPTION,
    source_dsn: str | None = connector.SOURCE_DSN_OPTION,
    group: list[str] | None = GROUP_OPTION,
    day: list[str] | None = DAY_OPTION,
) -> None:
    """One screen: groups and lag, the aggregator's watermark, digests by status, dead letters, connector."""
    with common.cli_errors():
        screen = gather(bootstrap, aggregator_url, ledger_dsn, connect_url, source_dsn, named_groups=group,
                        days=parse_days(list(day or [])))
        if as_json:
            common.print_json(screen)
        else:
            render(screen)
        if screen.unreachable:
            raise typer.Exit(common.EXIT_UNREACHABLE)
