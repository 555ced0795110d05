"""What every operator command shares: settings, errors and exit codes, output, decoding, masking.

Public names (helper modules import these from here; keep them stable). This module holds the
settings, the Kafka clients, the shared typer options and the output helpers; the rest lives in
``errors.py`` (exit codes, errors), ``times.py`` (durations, instants), ``records.py`` (decoding,
partitioning), ``personal.py`` (masking, the audit line) and ``endpoints.py`` (PostgreSQL, Connect,
the aggregator), and is re-exported here under the same names:

Exit codes (every ``trainee-notify`` operator command uses them; scripts may rely on them)
    ``EXIT_OK = 0``          done
    ``EXIT_ERROR = 1``       an error: unknown topic, group or trainee, a refused action, a failed call
    ``EXIT_USAGE = 2``       bad options or arguments (typer/click's own code too)
    ``EXIT_UNREACHABLE = 3`` a service could not be reached (Kafka broker, database, Connect, aggregator)

Errors (one line on stderr, never a traceback)
    ``OpsError(message, code=EXIT_ERROR)`` and its kinds ``UnknownTopic``, ``UnknownGroup``,
    ``UnknownTrainee``, ``UsageError`` (code 2), ``Unreachable`` (code 3);
    ``fail(message, code)`` raises ``typer.Exit`` after printing ``error: <message>``;
    ``cli_errors()`` a context manager (and ``@handles_errors`` a decorator) that turns an ``OpsError``
    (and a ``KafkaException``) into that one line and its exit code.

Settings and clients
    ``kafka_settings(bootstrap=None)``, ``mailer_settings(bootstrap=None, ledger_dsn=None)``,
    ``aggregator_settings(bootstrap=None)``: the services' own settings (``TN_`` environment);
    ``admin(settings)``: a quiet ``AdminClient`` after ``ensure_reachable(settings)``, which raises
    ``Unreachable`` naming host and port; ``consumer(settings, **overrides)``: a quiet ``Consumer`` that
    never commits; ``topic_partitions(admin, topic)`` → partition count or ``UnknownTopic``;
    ``BOOTSTRAP_OPTION``, ``JSON_OPTION``, ``SHOW_PERSONAL_OPTION``: the shared typer options.

Output
    ``console()`` a wide rich Console on stdout; ``print_json(obj)`` JSON (datetimes as ISO-8601,
    bytes as text or hex; ``print_json_line(obj)`` the same on one line) on stdout;
    ``to_jsonable(obj)``.

Time
    ``parse_duration("2h")`` → timedelta (s, m, h, d, w; combined: ``1h30m``);
    ``parse_when("2h" | "2026-01-02" | "2026-01-02T07:00" | "now", now=None)`` → an aware datetime
    (a duration means that long before ``now``; naive times are UTC); ``ms_to_datetime(ms)``.

Decoding
    ``decode_record(settings, topic, key, value, headers)`` → ``Decoded`` (key, value, format such as
    ``json``, ``avro NetChange v2``, ``text``, ``bytes``, headers as text); ``avro_version(data)`` →
    (schema name, version label) by fingerprint, ``None`` when not ours.

Personal data
    ``PERSONAL_FIELDS``; ``mask_personal(obj)`` (pure, recursive: masks the value of any personal
    field, including net-change ``fields`` maps ``{"email": {"old":..,"new":..}}``);
    ``audit_personal(command, **context)`` writes the audit line (operator's login name) to the
    structured log; ``operator_name()``.

Endpoints (option, then environment, then the local stack's scratch dir, then settings)
    ``connect_url(opt)`` (``TN_CONNECT_URL``), ``source_dsn(opt)`` (``TN_SOURCE_DSN``),
    ``ledger_dsn(opt)`` (``TN_LEDGER_DSN``), ``aggregator_url(opt)`` (``TN_AGGREGATOR_URL`` or
    ``TN_WEB_HOST``/``TN_WEB_PORT``), ``local_stack()``; ``pg_connect(dsn, what)`` and
    ``http_json(method, url, body, what=)`` raise ``Unreachable`` naming host and port.

Partitioning
    ``murmur2(data)`` and ``partition_for_key(key_bytes, partitions)`` (Kafka's default partitioner);
    ``trainee_partition(trainee_id, partitions)``; ``is_cdc_topic(settings, topic)``;
    ``trainee_of(decoded)`` the trainee a record is about (key or value), None if none;
    ``cdc_key(trainee_id)`` the connector's key bytes ``{"trainee_id":"ID"}``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import socket
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from services import kafka_security
from services.opsctl.endpoints import (
    aggregator_url,
    connect_url,
    dsn_endpoint,
    http_json,
    ledger_dsn,
    local_stack,
    pg_connect,
    source_dsn,
)
from services.opsctl.errors import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    OpsError,
    UnknownGroup,
    UnknownTopic,
    UnknownTrainee,
    Unreachable,
    UsageError,
    cli_errors,
    fail,
    handles_errors,
    one_line,
)
from services.opsctl.personal import (
    MASK,
    PERSONAL_FIELDS,
    _is_personal,
    audit_personal,
    mask_personal,
    operator_name,
)
from services.opsctl.records import (
    Decoded,
    avro_version,
    cdc_key,
    decode_headers,
    decode_record,
    decode_value,
    is_cdc_topic,
    murmur2,
    partition_for_key,
    schema_versions,
    trainee_of,
    trainee_partition,
)
from services.opsctl.times import (
    ms_to_datetime,
    parse_duration,
    parse_when,
)
from services.settings import AggregatorSettings, KafkaSettings, MailerSettings

# the names above are this module's public interface too (see the docstring)
__all__ = [
    "BOOTSTRAP_OPTION",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "JSON_OPTION",
    "MASK",
    "PERSONAL_FIELDS",
    "SHOW_PERSONAL_OPTION",
    "Decoded",
    "OpsError",
    "UnknownGroup",
    "UnknownTopic",
    "UnknownTrainee",
    "Unreachable",
    "UsageError",
    "_is_personal",
    "admin",
    "aggregator_settings",
    "aggregator_url",
    "audit_personal",
    "avro_version",
    "cdc_key",
    "cli_errors",
    "client_config",
    "connect_url",
    "console",
    "consumer",
    "decode_headers",
    "decode_record",
    "decode_value",
    "dsn_endpoint",
    "ensure_reachable",
    "fail",
    "handles_errors",
    "http_json",
    "is_cdc_topic",
    "kafka_settings",
    "ledger_dsn",
    "local_stack",
    "mailer_settings",
    "mask_personal",
    "ms_to_datetime",
    "murmur2",
    "one_line",
    "operator_name",
    "parse_duration",
    "parse_when",
    "partition_for_key",
    "pg_connect",
    "print_json",
    "print_json_line",
    "schema_versions",
    "source_dsn",
    "to_jsonable",
    "topic_partitions",
    "trainee_of",
    "trainee_partition",
]


# ------------------------------------------------------------------------------------------- settings
BOOTSTRAP_OPTION = typer.Option(None, "--bootstrap", help="Kafka bootstrap servers (default: TN_KAFKA_BOOTSTRAP)")
JSON_OPTION = typer.Option(False, "--json", help="print JSON instead of tables")
SHOW_PERSONAL_OPTION = typer.Option(False, "--show-personal",
                                    help="show personal fields unmasked "
                                         "(written to the audit log with your login name)")


def kafka_settings(bootstrap: str | None = None) -> KafkaSettings:
    return KafkaSettings(kafka_bootstrap=bootstrap) if bootstrap else KafkaSettings()


def mailer_settings(bootstrap: str | None = None, ledger_dsn: str | None = None) -> MailerSettings:
    over: dict[str, Any] = {}
    if bootstrap:
        over["kafka_bootstrap"] = bootstrap
    if ledger_dsn:
        over["ledger_dsn"] = ledger_dsn
    return MailerSettings(**over)


def aggregator_settings(bootstrap: str | None = None) -> AggregatorSettings:
    return AggregatorSettings(kafka_bootstrap=bootstrap) if bootstrap else AggregatorSettings()


def _hostports(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        item = item.strip()
        for scheme in ("PLAINTEXT://", "SSL://", "SASL_SSL://", "SASL_PLAINTEXT://"):
            if item.upper().startswith(scheme):
                item = item[len(scheme):]
        host, _, port = item.rpartition(":")
        if not host:
            host, port = item, "9092"
        out.append((host.strip("[]"), int(port) if port.isdigit() else 9092))
    return out


def ensure_reachable(settings: KafkaSettings, timeout: float = 3.0) -> None:
    """Raise :class:`Unreachable` naming host and port unless one bootstrap server accepts a connection."""
    errors = []
    for host, port in _hostports(settings.kafka_bootstrap):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                break
        except OSError as exc:
            errors.append(f"{host}:{port} ({exc.strerror or type(exc).__name__})")
    else:
        raise Unreachable(f"cannot reach the Kafka broker at {', '.join(errors)}")
    kafka_security.check(settings, max(timeout, 10.0))  # a refused login or certificate: one line, not a timeout


@cache
def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("opsctl.librdkafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def client_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    return kafka_security.librdkafka_config(settings, logger=_quiet_logger(), **overrides)


def admin(settings: KafkaSettings) -> Any:
    """A confluent_kafka ``AdminClient`` (librdkafka's own log silenced) on a reachable broker."""
    from confluent_kafka.admin import AdminClient

    ensure_reachable(settings)
    return AdminClient(client_config(settings))


def consumer(settings: KafkaSettings, **overrides: Any) -> Any:
    """A ``Consumer`` for reading only: its own throw-away group, no commits, read_committed off."""
    from confluent_kafka import Consumer

    ensure_reachable(settings)
    conf = client_config(settings, **{"group.id": f"trainee-notify-opsctl-{os.getpid()}",
                                      "enable.auto.commit": False, "enable.auto.offset.store": False,
                                      "auto.offset.reset": "earliest", "enable.partition.eof": True})
    conf.update(overrides)
    return Consumer(conf)


def topic_partitions(admin_client: Any, topic: str, timeout: float = 10.0) -> int:
    """The number of partitions of ``topic``; :class:`UnknownTopic` when the broker does not have it."""
    md = admin_client.list_topics(timeout=timeout)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise UnknownTopic(f"unknown topic '{topic}' (see `trainee-notify topics list`)")
    return len(meta.partitions)


# --------------------------------------------------------------------------------------------- output
def console(stderr: bool = False) -> Console:
    """A rich Console wide enough that topic names are not cut."""
    return Console(width=max(shutil.get_terminal_size().columns, 150), stderr=stderr)


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    if isinstance(obj, bytes):
        try:
            return obj.decode()
        except UnicodeDecodeError:
            return obj.hex()
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(to_jsonable(obj), indent=2, sort_keys=False, ensure_ascii=False))


def print_json_line(obj: Any) -> None:
    """One compact JSON object on one line (streams: ``tail --json | jq``)."""
    typer.echo(json.dumps(to_jsonable(obj), ensure_ascii=False, separators=(",", ":")))

