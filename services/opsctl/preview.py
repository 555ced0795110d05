"""``trainee-notify preview``: the email(s) the mailer would send for a net-change record.

The record comes from the net-change topic (``--trainee ID --day DAY``: the newest record with the
key ``<trainee>:<day>``; a date also finds short test/demo windows of that date) or from a JSON file
(``--file record.json``, the shape of services/notifier's input). Composition is the mailer's own:
``services.notifier.plan.notifications`` (the digest, and the notice to a previous address when
the email changed) and ``services.notifier.compose.compose_digest`` / ``compose_previous_address_notice``
(what ``services.notifier.render.render`` calls), with the mailer's contacts and sender settings.

Output: the plain text on stdout (default); ``--out DIR`` writes ``<notification>.html``, ``.txt`` and
``.eml`` files; ``--open`` writes the HTML to a temporary directory (or ``--out``) and prints its path
and ``file://`` URL for a browser. The email holds the trainee's name and masked contact details, so a
preview from the topic is written to the audit log. ``--json`` prints subject, recipient (masked
unless ``--show-personal``), files and text. Exit codes: common.py.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from services.opsctl import common
from services.opsctl.common import BOOTSTRAP_OPTION, JSON_OPTION, SHOW_PERSONAL_OPTION, OpsError, UsageError
from services.opsctl.scan import Start, scan

KIND_OPTION = typer.Option("all", "--kind", help="digest, previous-address or all")
FILE_OPTION = typer.Option(None, "--file", help="a net-change record as JSON instead of the topic")
OUT_OPTION = typer.Option(None, "--out", help="write <notification>.html/.txt/.eml here")


def find_record(settings: Any, admin: Any, trainee: str, day: str) -> dict[str, Any]:
    """The newest net-change record keyed ``<trainee>:<day>`` (exact key on its own partition first,
    then a prefix over every partition: short windows are labelled with a time)."""
    from services import serde

    topic = settings.netchange_topic
    n = common.topic_partitions(admin, topic)
    exact = f"{trainee}:{day}".encode()
    found = None
    searches: list[tuple[list[int] | None, Callable[[bytes], bool]]] = [
        ([common.partition_for_key(exact, n)], lambda k: k == exact), (None, lambda k: k.startswith(exact))]
    for partitions, match in searches:
        for raw in scan(settings, admin, topic, partitions=partitions, start=Start(earliest=True), idle_timeout=10.0):
            if (raw.key is not None and match(raw.key) and raw.value is not None
                    and (found is None or raw.timestamp_ms >= found.timestamp_ms)):
                found = raw
        if found is not None:
            break
    if found is None:
        raise common.UnknownTrainee(f"no net-change record for trainee '{trainee}' and day '{day}' on {topic}")
    try:
        return serde.decode(serde.NETCHANGE, found.value)  # type: ignore[arg-type]
    except serde.SchemaMismatch as exc:
        raise OpsError(f"the record {found.topic}/{found.partition}@{found.offset} cannot be read: {exc}") from None


def load_file(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if not isinstance(record, dict) or not {"id", "trainee_id", "day"} <= set(record):
        raise UsageError(f"{path} is not a net-change record (needs id, trainee_id, day, changes, recipient)")
    record.setdefault("changes", [])
    record.setdefault("late", False)
    return record


def compose_all(record: dict[str, Any], kind: str) -> list[tuple[Any, Any]]:
    """[(notification, composed email or refusal)] with the mailer's own code and settings."""
    from services.notifier import compose, plan
    from services.notifier.compose import Contacts

    ms = common.mailer_settings()
    contacts = Contacts.from_json(ms.contacts_file) if ms.contacts_file else Contacts.default()
    out = []
    for n in plan.notifications(record):
        if kind != "all" and n.kind.value != kind:
            continue
        make = compose.compose_digest if n.kind is plan.Kind.DIGEST else compose.compose_previous_address_notice
        mid = plan.message_id(n.notification_id, 0, ms.message_id_domain)
        out.append((n, make(record, contacts=contacts, message_id=mid, mail_from=ms.mail_from,
                            allow_test_domains=True)))
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def preview(
    trainee: str | None = typer.Option(None, "--trainee", help="the trainee id (with --day)"),
    day: str | None = typer.Option(None, "--day", help="the record's day, e.g. 2026-03-04"),
    file: Path | None = FILE_OPTION,
    kind: str = KIND_OPTION,
    out_dir: Path | None = OUT_OPTION,
    open_: bool = typer.Option(False, "--open", help="write the HTML for a browser and print its path"),
    as_json: bool = JSON_OPTION,
    show_personal: bool = SHOW_PERSONAL_OPTION,
    bootstrap: str | None = BOOTSTRAP_OPTION,
) -> None:
    """Render the email(s) of a net-change record with the mailer's own composition code."""
    with common.cli_errors():
        if kind not in ("all", "digest", "previous-address"):
            raise UsageError("--kind is digest, previous-address or all")
        if file is None and not (trainee and day):
            raise UsageError("give --trainee and --day, or --file")
        if file is not None and (trainee or day):
            raise UsageError("--file excludes --trainee/--day")
        if file is not None:
            record = load_file(file)
        else:
            settings = common.kafka_settings(bootstrap)
            record = find_record(settings, common.admin(settings), str(trainee), str(day))
        common.audit_personal("preview", trainee=record.get("trainee_id"), record=record.get("id"),
                              show_personal=show_personal)
        emails = compose_all(record, kind)
        if not emails:
            raise OpsError(f"record {record.get('id')} has no {kind} notification")
        from services.notifier import compose

        target = out_dir or (Path(tempfile.mkdtemp(prefix="trainee-notify-preview-")) if open_ else None)
        results = []
        for n, email in emails:
            entry: dict[str, Any] = {"notification_id": n.notification_id, "kind": n.kind.value}
            if isinstance(email, compose.Refusal):
                entry.update(refused=email.reason, detail=getattr(email, "detail", None))
                results.append(entry)
                continue
            entry.update(subject=email.subject, to=email.to if show_personal else common.MASK,
                         message_id=email.message_id, text=email.text)
            if target is not None:
                target.mkdir(parents=True, exist_ok=True)
                base = target / _safe(n.notification_id)
                html, txt, eml = base.with_suffix(".html"), base.with_suffix(".txt"), base.with_suffix(".eml")
                html.write_text(email.html, encoding="utf-8")
                txt.write_text(email.text, encoding="utf-8")
                eml.write_bytes(compose.to_bytes(email))
                entry["files"] = {"html": str(html), "text": str(txt), "eml": str(eml)}
            results.append(entry)
        if as_json:
            common.print_json({"record_id": record.get("id"), "emails": results})
            return
        for r in results:
            if "refused" in r:
                typer.echo(f"# {r['notification_id']}: not sent by the mailer: {r['refused']}"
                           + (f" ({r['detail']})" if r.get("detail") else ""))
                continue
            if target is not None:
                typer.echo(f"{r['notification_id']}: {r['files']['html']}")
                if open_:
                    typer.echo(f"  open in a browser: {Path(r['files']['html']).resolve().as_uri()}")
                typer.echo(f"  text: {r['files']['text']}\n  eml:  {r['files']['eml']}")
            else:
                typer.echo(f"# {r['notification_id']}\nSubject: {r['subject']}\nTo: {r['to']}\n"
                           f"Message-ID: {r['message_id']}\n\n{r['text']}")
