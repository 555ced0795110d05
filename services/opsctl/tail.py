"""``trainee-notify tail TOPIC``: a topic's records, decoded, like kcat but for our formats.

Each record shows its partition, offset, time, key and value, decoded: Debezium JSON envelopes, our
Avro single-object records (with the schema version that wrote them), DLQ headers. Personal fields
are masked unless ``--show-personal``, which writes an audit line with the operator's login name.

Where it starts: ``--from-beginning``; ``--since 2h`` (or a date-time); otherwise the last
``--limit`` records (default 20) of the topic. It stops at the end offsets seen at the start, or
at ``--until``; ``--follow`` keeps reading new records until interrupted (or ``--limit`` records were
shown), and says on stderr (``following TOPIC …``) when it has shown what was there and waits for new
ones. ``--json`` prints one JSON
object per line. Exit codes: see services/opsctl/common.py.
"""

from __future__ import annotations

import heapq
import json
from typing import Any

import typer
from rich.markup import escape

from services.opsctl import common
from services.opsctl.common import (
    BOOTSTRAP_OPTION,
    JSON_OPTION,
    SHOW_PERSONAL_OPTION,
    Decoded,
    UsageError,
    decode_record,
    mask_personal,
    ms_to_datetime,
    parse_when,
    trainee_of,
)
from services.opsctl.scan import Raw, Start, scan

DEFAULT_LIMIT = 20
PARTITION_OPTION = typer.Option(None, "--partition", "-p", help="only these partitions (repeatable)")


def record_json(raw: Raw, decoded: Decoded) -> dict[str, Any]:
    return {"topic": raw.topic, "partition": raw.partition, "offset": raw.offset,
            "timestamp": ms_to_datetime(raw.timestamp_ms).isoformat() if raw.timestamp_ms > 0 else None,
            "key": decoded.key, "format": decoded.format, "headers": decoded.headers, "value": decoded.value}


def _print_rich(out: Any, raw: Raw, decoded: Decoded) -> None:
    when = ms_to_datetime(raw.timestamp_ms).isoformat(timespec="milliseconds") if raw.timestamp_ms > 0 else "-"
    key = decoded.key if isinstance(decoded.key, str) else json.dumps(common.to_jsonable(decoded.key),
                                                                     ensure_ascii=False, separators=(",", ":"))
    out.print(f"[bold cyan]p{raw.partition}[/] [bold]@{raw.offset}[/]  {when}  key=[yellow]{escape(str(key))}[/]"
              f"  [dim]{escape(decoded.format)}[/]")
    if decoded.headers:
        out.print("  [dim]headers[/] " + escape(", ".join(f"{k}={v}" for k, v in decoded.headers.items())))
    if isinstance(decoded.value, dict | list):
        out.print_json(data=common.to_jsonable(decoded.value))
    else:
        out.print(escape(str(decoded.value)))


def tail(
    topic: str = typer.Argument(..., help="a topic name (see `trainee-notify topics list`)"),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="start at each partition's first record"),
    since: str | None = typer.Option(None, "--since", help="start at this time: 2h (ago), 2026-01-02T07:00Z"),
    until: str | None = typer.Option(None, "--until", help="stop at this time (same forms as --since)"),
    trainee: str | None = typer.Option(None, "--trainee", help="only records about this trainee id"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep reading new records (Ctrl-C stops)"),
    limit: int | None = typer.Option(None, "--limit", "-n", min=1,
                                     help=f"at most this many records (default {DEFAULT_LIMIT} when neither "
                                     "--from-beginning nor --since is given: the newest ones)"),
    partition: list[int] | None = PARTITION_OPTION,
    as_json: bool = JSON_OPTION,
    show_personal: bool = SHOW_PERSONAL_OPTION,
    bootstrap: str | None = BOOTSTRAP_OPTION,
) -> None:
    """Print a topic's records, decoded (JSON envelopes, Avro records with their schema version)."""
    with common.cli_errors():
        if from_beginning and since:
            raise UsageError("--from-beginning and --since are exclusive")
        settings = common.kafka_settings(bootstrap)
        admin = common.admin(settings)
        n = common.topic_partitions(admin, topic)
        parts: list[int] | None = list(partition or []) or None
        if parts and any(p < 0 or p >= n for p in parts):
            raise UsageError(f"'{topic}' has partitions 0..{n - 1}")
        if trainee and common.is_cdc_topic(settings, topic):
            mine = common.trainee_partition(trainee, n)
            parts = [p for p in (parts or [mine]) if p == mine]
        until_ms = int(parse_when(until).timestamp() * 1000) if until else None
        newest = not from_beginning and not since
        if from_beginning:
            start = Start(earliest=True)
        elif since:
            start = Start(at_ms=int(parse_when(since).timestamp() * 1000))
        else:
            # the newest records; with --trainee they may be anywhere: read from the beginning
            start = Start(earliest=True) if trainee else Start(last=limit or DEFAULT_LIMIT)
        if show_personal:
            common.audit_personal("tail", topic=topic, trainee=trainee)
        out = common.console()

        def show(raw: Raw, decoded: Decoded) -> None:
            if as_json:
                common.print_json_line(record_json(raw, decoded))
            else:
                _print_rich(out, raw, decoded)

        def decoded_of(raw: Raw) -> Decoded | None:
            d = decode_record(settings, raw.topic, raw.key, raw.value, raw.headers)
            if trainee is not None and trainee_of(d) != str(trainee):
                return None
            if not show_personal:
                d = Decoded(d.key, mask_personal(d.value), d.format, d.headers)
            return d

        if follow:
            # one scan that goes on at the end: nothing between "the end" and "following" is missed
            if newest and not trainee:
                start = Start(last=limit or DEFAULT_LIMIT)
            shown = 0

            def live() -> None:  # on stderr, so that --json stays one record a line
                which = "every partition" if parts is None else f"partition {', '.join(map(str, parts))}"
                common.console(stderr=True).print(f"[dim]following {topic} ({which}): new records as they arrive; "
                                                  "Ctrl-C stops[/]")

            try:
                for raw in scan(settings, admin, topic, partitions=parts, start=start, until_ms=until_ms,
                                follow=True, on_live=live):
                    d = decoded_of(raw)
                    if d is None:
                        continue
                    show(raw, d)
                    shown += 1
                    if limit is not None and shown >= limit:
                        return
            except KeyboardInterrupt:
                return
            return
        records = scan(settings, admin, topic, partitions=parts, start=start, until_ms=until_ms)
        selected = ((raw, d) for raw in records if (d := decoded_of(raw)) is not None)

        def order(rd: tuple[Raw, Decoded]) -> tuple[int, int, int]:
            return (rd[0].timestamp_ms, rd[0].partition, rd[0].offset)

        if newest:
            # the newest `limit` of what was read, in time order
            batch = sorted(heapq.nlargest(limit or DEFAULT_LIMIT, selected, key=order), key=order)
        else:
            batch = []
            for item in selected:
                batch.append(item)
                if limit is not None and len(batch) >= limit:
                    break
            batch.sort(key=order)
        for raw, d in batch:
            show(raw, d)
        if not as_json:
            common.console(stderr=True).print(f"[dim]{len(batch)} record(s)[/]")
