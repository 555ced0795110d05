"""The Kafka topics of trainee-notify, declared once, and the command that applies them.

``declared_topics(settings)`` is the single list (the README's table is printed from it by
``trainee-notify topics list``). ``apply_topics(settings)`` creates what is missing and sets the
declared configs on topics that exist; partitions are never changed on an existing topic (that would
move keys between partitions), a difference is reported instead. The CDC topics ``<prefix>.tss.<table>``
are declared too, so they exist with ``topic_partitions`` partitions before the connector starts.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Literal

import structlog
import typer
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from rich.console import Console
from rich.table import Table

from services import kafka_security
from services.netchange.cdc import ENTITIES, OTHER_TABLES
from services.settings import KafkaSettings

log = structlog.get_logger(__name__)

DAY_MS = 24 * 60 * 60 * 1000
INFINITE = -1

# every table the Debezium connector captures (deploy/connect/tss-postgres.json)
CDC_TABLES: tuple[str, ...] = ENTITIES + OTHER_TABLES

CleanupPolicy = Literal["delete", "compact"]
Action = Literal["created", "altered", "unchanged", "partitions-differ"]


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    cleanup_policy: CleanupPolicy
    retention_ms: int  # -1 = forever
    purpose: str
    replication_factor: int = 1

    def configs(self) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


@dataclass(frozen=True)
class TopicChange:
    topic: str
    action: Action
    detail: str = ""


def declared_topics(settings: KafkaSettings) -> list[TopicSpec]:
    """Every topic this project owns, with its partitions, cleanup policy, retention and purpose."""
    n, rf = settings.topic_partitions, settings.replication_factor
    cdc = [
        TopicSpec(f"{settings.cdc_topic_prefix}.tss.{table}", n, "delete", 7 * DAY_MS,
                  f"Debezium change envelopes of tss.{table} (written by Kafka Connect)", rf)
        for table in CDC_TABLES
    ]
    own = [
        TopicSpec(settings.netchange_topic, n, "delete", 30 * DAY_MS,
                  "net-change records, one per (trainee, day), Avro; the mailer's input", rf),
        TopicSpec(settings.cdc_dlq_topic, n, "delete", 30 * DAY_MS,
                  "CDC envelopes the aggregator could not use, with the reason", rf),
        TopicSpec(settings.delivery_status_topic, n, "delete", 30 * DAY_MS,
                  "every SMTP attempt and its outcome", rf),
        TopicSpec(settings.mail_dlq_topic, n, "delete", 90 * DAY_MS,
                  "net-change records whose mail finally failed", rf),
        TopicSpec(settings.heartbeat_topic(), 1, "delete", DAY_MS,
                  "Debezium heartbeats: the connector's progress, which holds the aggregator's watermark", rf),
    ]
    # the aggregator's own topics, which faust would otherwise create itself just before its group's
    # assignment (and then fail table writes until a metadata refresh: "changelog topic has 0 partitions")
    aggregator = [
        TopicSpec(settings.changelog_topic(), n, "compact", INFINITE,
                  "the aggregator's trainee_state table: per trainee, known records, open days, person history", rf),
        TopicSpec(settings.ticks_topic(), n, "delete", DAY_MS,
                  "watermark ticks, one per partition, that close the aggregator's days", rf),
        TopicSpec(settings.leader_topic(), 1, "delete", DAY_MS,
                  "faust's partition assignor (the aggregator's group)", rf),
    ]
    return cdc + own + aggregator


def _admin(settings: KafkaSettings) -> AdminClient:
    return AdminClient(kafka_security.librdkafka_config(settings))


def _create(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> list[TopicChange]:
    if not specs:
        return []
    new = [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor,
                    config=s.configs()) for s in specs]
    changes = []
    for name, fut in admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout).items():
        try:
            fut.result()
            changes.append(TopicChange(name, "created"))
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a concurrent apply made it: fine
                raise
            changes.append(TopicChange(name, "unchanged", "created concurrently"))
    return changes


def _drift(admin: AdminClient, spec: TopicSpec, timeout: float) -> dict[str, str]:
    """The declared configs whose current value differs."""
    resource = ConfigResource(ResourceType.TOPIC, spec.name)
    current = admin.describe_configs([resource], request_timeout=timeout)[resource].result()
    return {k: v for k, v in spec.configs().items() if k not in current or current[k].value != v}


def _alter(admin: AdminClient, spec: TopicSpec, drift: dict[str, str], timeout: float) -> None:
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in drift.items()]
    resource = ConfigResource(ResourceType.TOPIC, spec.name, incremental_configs=entries)
    admin.incremental_alter_configs([resource], request_timeout=timeout)[resource].result()


def _reconcile(admin: AdminClient, spec: TopicSpec, partitions: int, timeout: float) -> TopicChange:
    drift = _drift(admin, spec, timeout)
    if drift:
        _alter(admin, spec, drift, timeout)
    detail = ", ".join(f"{k}={v}" for k, v in sorted(drift.items()))
    if partitions != spec.partitions:
        note = f"has {partitions} partitions, declared {spec.partitions} (left as is)"
        return TopicChange(spec.name, "partitions-differ", f"{note}; {detail}" if detail else note)
    return TopicChange(spec.name, "altered", detail) if drift else TopicChange(spec.name, "unchanged")


def apply_topics(settings: KafkaSettings, *, timeout: float = 30.0) -> list[TopicChange]:
    """Create missing topics and set declared configs on existing ones; returns what was done, per topic."""
    kafka_security.check(settings)  # a refused login or certificate says so at once, not after the timeout
    admin = _admin(settings)
    existing = admin.list_topics(timeout=timeout).topics
    specs = declared_topics(settings)
    changes = _create(admin, [s for s in specs if s.name not in existing], timeout)
    for spec in specs:
        if spec.name in existing:
            changes.append(_reconcile(admin, spec, len(existing[spec.name].partitions), timeout))
    for change in changes:
        if change.action != "unchanged":
            log.info("topic applied", topic=change.topic, action=change.action, detail=change.detail)
    order = {s.name: i for i, s in enumerate(specs)}
    return sorted(changes, key=lambda c: order[c.topic])


# --- CLI: trainee-notify topics ... ------------------------------------------------------------------

app = typer.Typer(help="Declare and apply the Kafka topics.", no_args_is_help=True, add_completion=False)


def _settings(bootstrap: str | None) -> KafkaSettings:
    return KafkaSettings(kafka_bootstrap=bootstrap) if bootstrap else KafkaSettings()


def _console() -> Console:
    return Console(width=max(shutil.get_terminal_size().columns, 150))  # topic names must not be cut


def _retention(ms: int) -> str:
    return "forever" if ms < 0 else f"{ms // DAY_MS} d" if ms % DAY_MS == 0 else f"{ms} ms"


@app.command("apply")
def apply_cmd(bootstrap: str | None = typer.Option(None, help="default: TN_KAFKA_BOOTSTRAP"),
              as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """Create missing topics and set the declared configs on existing ones (idempotent)."""
    from services.opsctl import common

    settings = _settings(bootstrap)
    with common.cli_errors():  # an unreachable broker: one line naming host and port, exit 3
        common.ensure_reachable(settings)
    try:
        changes = apply_topics(settings)
    except KafkaException as exc:
        typer.echo(f"error: applying topics on {settings.kafka_bootstrap} failed: {exc.args[0]}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        common.print_json([{"topic": c.topic, "action": c.action, "detail": c.detail} for c in changes])
        return
    table = Table("topic", "action", "detail")
    for c in changes:
        table.add_row(c.topic, c.action, c.detail)
    _console().print(table)


_JSON = typer.Option(False, "--json", help="print JSON instead of a table")
_TOPICS = typer.Argument(None, help="declared topics (default: all)")


@app.command("list")
def list_cmd(bootstrap: str | None = typer.Option(None, help="only for names from TN_ settings"),
             as_json: bool = _JSON) -> None:
    """Print the declared topics: name, partitions, cleanup policy, retention and purpose (no broker needed;
    `topics describe` asks the broker)."""
    specs = declared_topics(_settings(bootstrap))
    if as_json:
        import json

        typer.echo(json.dumps([{"topic": s.name, "partitions": s.partitions, "cleanup_policy": s.cleanup_policy,
                                "retention_ms": s.retention_ms, "purpose": s.purpose} for s in specs], indent=2))
        return
    table = Table("topic", "partitions", "cleanup.policy", "retention", "purpose")
    for s in specs:
        table.add_row(s.name, str(s.partitions), s.cleanup_policy, _retention(s.retention_ms), s.purpose)
    _console().print(table)


@app.command("describe")
def describe_cmd(
    topics: list[str] | None = _TOPICS,
    bootstrap: str | None = typer.Option(None, "--bootstrap", help="default: TN_KAFKA_BOOTSTRAP"),
    as_json: bool = _JSON,
) -> None:
    """Every declared topic as the broker has it: partitions, end offsets, records kept, retention, cleanup,
    and each consumer group's lag on it."""
    from services.opsctl import common, topicinfo

    with common.cli_errors():
        settings = _settings(bootstrap)
        rows = topicinfo.describe(settings, common.admin(settings), list(topics or []) or None)
    if as_json:
        common.print_json([{"topic": r.name, "exists": r.exists, "partitions": r.partitions,
                            "declared_partitions": r.declared_partitions, "end_offsets": r.end_offsets,
                            "end_offset_total": r.end_total, "records": r.records, "retention_ms": r.retention_ms,
                            "cleanup_policy": r.cleanup_policy, "lag": r.lag, "issues": r.issues} for r in rows])
        return
    table = Table("topic", "partitions", "end offsets", "records", "cleanup.policy", "retention", "group lag",
                  "issues")
    for r in rows:
        table.add_row(r.name, "-" if r.partitions is None else str(r.partitions), str(r.end_total), str(r.records),
                      r.cleanup_policy or "-", "-" if r.retention_ms is None else _retention(r.retention_ms),
                      "\n".join(f"{g}: {lag}" for g, lag in r.lag.items()) or "-",
                      "[red]" + "; ".join(r.issues) + "[/]" if r.issues else "")
    _console().print(table)
