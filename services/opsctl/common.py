"""What every operator command shares: settings, errors and exit codes, output, decoding, masking.

Public names (helper modules import these; keep them stable):

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

import contextlib
import datetime as dt
import functools
import getpass
import json
import logging
import os
import re
import shutil
import socket
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog
import typer
from rich.console import Console

from services import serde
from services.settings import AggregatorSettings, KafkaSettings, MailerSettings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

log = structlog.get_logger("opsctl")

F = TypeVar("F", bound=Callable[..., Any])


# --------------------------------------------------------------------------------------------- errors
class OpsError(Exception):
    """An error the operator can act on; said in one line, with an exit code."""

    code = EXIT_ERROR

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class UnknownTopic(OpsError):
    pass


class UnknownGroup(OpsError):
    pass


class UnknownTrainee(OpsError):
    pass


class UsageError(OpsError):
    code = EXIT_USAGE


class Unreachable(OpsError):
    code = EXIT_UNREACHABLE


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print ``error: <message>`` on stderr and return the ``typer.Exit`` to raise."""
    typer.echo(f"error: {one_line(message)}", err=True)
    return typer.Exit(code)


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn an ``OpsError`` (or an unexpected Kafka error) into one line on stderr and its exit code."""
    from confluent_kafka import KafkaException

    try:
        yield
    except OpsError as exc:
        raise fail(exc.message, exc.code) from None
    except KafkaException as exc:
        raise fail(f"Kafka: {exc.args[0] if exc.args else exc}") from None


def handles_errors(fn: F) -> F:
    """Decorator form of :func:`cli_errors` for typer commands."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with cli_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


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
                return
        except OSError as exc:
            errors.append(f"{host}:{port} ({exc.strerror or type(exc).__name__})")
    raise Unreachable(f"cannot reach the Kafka broker at {', '.join(errors)}")


@cache
def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("opsctl.librdkafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def client_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap, "logger": _quiet_logger(), **overrides}


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


# ----------------------------------------------------------------------------------------------- time
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_duration(text: str) -> dt.timedelta:
    """``90s``, ``15m``, ``2h``, ``1d``, ``1w``, ``1h30m`` → a timedelta; :class:`UsageError` otherwise."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION_RE.sub("", compact):
        raise UsageError(f"not a duration: '{text}' (e.g. 90s, 15m, 2h, 1d, 1h30m)")
    seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_RE.findall(compact))
    return dt.timedelta(seconds=seconds)


def parse_when(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """An instant from ``2h`` (that long ago), ``now``, an ISO date or date-time (naive = UTC), or
    epoch milliseconds."""
    now = now or dt.datetime.now(dt.UTC)
    value = text.strip()
    if value.lower() == "now":
        return now
    if _DURATION_RE.fullmatch(value.lower().replace(" ", "")) or re.fullmatch(r"(\d+(\.\d+)?[smhdw])+", value.lower()):
        return now - parse_duration(value)
    if value.isdigit() and len(value) >= 12:
        return ms_to_datetime(int(value))
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"not a time: '{text}' (e.g. 2h, 2026-01-02, 2026-01-02T07:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def ms_to_datetime(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


# ------------------------------------------------------------------------------------------- decoding
@dataclass(frozen=True)
class Decoded:
    """One record, decoded for people: key and value as Python values, and how the value was read."""

    key: Any
    value: Any
    format: str  # json | avro <Name> v<N> | text | bytes | tombstone | undecodable: <why>
    headers: dict[str, str] = field(default_factory=dict)


def _fp(parsed: Any) -> bytes:
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))[::-1]


@cache
def schema_versions() -> dict[bytes, tuple[str, str]]:
    """fingerprint → (schema full name, version label) for the current schemas and schemas/history/."""
    from fastavro.schema import parse_schema

    out: dict[bytes, tuple[str, str]] = {}
    for name in (serde.NETCHANGE, serde.DELIVERY_STATUS):
        versions = []
        for path in sorted((serde.schema_dir() / "history").glob(f"{name}.v*.avsc")):
            match = re.search(r"\.v(\d+)\.avsc$", path.name)
            if match:
                with open(path, encoding="utf-8") as fh:
                    versions.append((int(match.group(1)), _fp(parse_schema(json.load(fh)))))
        for number, fp in versions:
            out.setdefault(fp, (name, f"v{number}"))
        current = _fp(serde.schema(name))
        if current not in out:
            out[current] = (name, f"v{max((n for n, _ in versions), default=0) + 1} (unreleased)")
    return out


def avro_version(data: bytes | None) -> tuple[str, str] | None:
    """(schema full name, version label) of an Avro single-object value of ours; None otherwise."""
    if not data or data[:2] != serde.MAGIC:
        return None
    return schema_versions().get(data[2:10])


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _loads(raw: bytes) -> tuple[Any, str]:
    try:
        return orjson.loads(raw), "json"
    except orjson.JSONDecodeError:
        pass
    try:
        return raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return raw.hex(), "bytes"


def decode_value(raw: bytes | None) -> tuple[Any, str]:
    """A value of any of our topics: Avro single-object (ours, by fingerprint), JSON, text or bytes."""
    if raw is None:
        return None, "tombstone"
    found = avro_version(raw)
    if found is not None:
        name, version = found
        try:
            return serde.decode(name, raw), f"avro {_short(name)} {version}"
        except Exception as exc:  # noqa: BLE001 - shown as the format, the record is still listed
            return raw.hex(), f"undecodable: {type(exc).__name__}"
    if raw[:2] == serde.MAGIC:
        return raw.hex(), "undecodable: Avro written with a schema this tool does not know"
    return _loads(raw)


def decode_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in headers or []:
        if v is None:
            out[k] = ""
        else:
            try:
                out[k] = v.decode()
            except UnicodeDecodeError:
                out[k] = v.hex()
    return out


def decode_record(settings: KafkaSettings | None, topic: str, key: bytes | None, value: bytes | None,
                  headers: Sequence[tuple[str, bytes | None]] | None = None) -> Decoded:
    """Decode one record of any of our topics (``settings``/``topic`` are for future per-topic rules)."""
    del settings, topic
    k: Any = None if key is None else _loads(key)[0]
    v, fmt = decode_value(value)
    return Decoded(k, v, fmt, decode_headers(headers))


# -------------------------------------------------------------------------------------- personal data
PERSONAL_FIELDS: frozenset[str] = frozenset({
    "title", "forenames", "surname", "known_as", "name", "first_name", "last_name", "maiden_name",
    "email", "previous_email", "email_address", "telephone_number", "mobile_number", "phone",
    "address1", "address2", "address3", "address4", "post_code", "postcode",
    "gmc_number", "gdc_number", "public_health_number", "date_of_birth", "dob", "ni_number",
    "national_insurance_number", "to", "recipient",
})
MASK = "‹masked›"


def _is_personal(key: object) -> bool:
    return isinstance(key, str) and key.lower() in PERSONAL_FIELDS


def _mask_scalar(value: Any) -> Any:
    return None if value is None else MASK


def mask_personal(obj: Any) -> Any:
    """A copy of ``obj`` in which the value of every personal field is masked (``None`` stays ``None``).

    A personal field's value that is a mapping (a ``recipient`` record, a net-change field change
    ``{"old": .., "new": ..}``) is masked throughout; lists are walked.
    """
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            out[k] = _mask_all(v) if _is_personal(k) else mask_personal(v)
        return out
    if isinstance(obj, list | tuple):
        return [mask_personal(v) for v in obj]
    return obj


def _mask_all(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _mask_all(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_mask_all(v) for v in obj]
    return _mask_scalar(obj)


def operator_name() -> str:
    """The operator's login name (``getpass.getuser()``; ``unknown`` if there is none)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in a bare container
        return os.environ.get("USER") or "unknown"


def audit_personal(command: str, **context: Any) -> None:
    """Write the audit line for showing personal data unmasked (the structured log, stderr)."""
    from services import logs

    if not structlog.is_configured():
        logs.configure()
    structlog.get_logger("opsctl.audit").warning("opsctl.personal_data_shown", audit=True, command=command,
                                                 operator=operator_name(), **context)


# --------------------------------------------------------------------------------------- partitioning
def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's ``Utils.murmur2``), as a signed 32-bit int."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    n4 = length // 4
    for i in range(n4):
        (k,) = struct.unpack_from("<I", data, i * 4)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = data[n4 * 4:]
    if rest == 3:
        h ^= tail[2] << 16
    if rest >= 2:
        h ^= tail[1] << 8
    if rest >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java client, Kafka Connect) picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def cdc_key(trainee_id: str) -> bytes:
    """The connector's key of a trainee's rows: ``{"trainee_id":"ID"}`` (compact JSON)."""
    return orjson.dumps({"trainee_id": str(trainee_id)})


def trainee_of(decoded: Decoded) -> str | None:
    """The trainee a decoded record is about: the CDC key ``{"trainee_id": ..}``, a key
    ``<trainee>:<day>[:<kind>]``, or a ``trainee_id`` in the value (or its envelope's images)."""
    key = decoded.key
    if isinstance(key, Mapping) and key.get("trainee_id") is not None:
        return str(key["trainee_id"])
    value = decoded.value
    if isinstance(value, Mapping):
        if value.get("trainee_id") is not None:
            return str(value["trainee_id"])
        for image in ("after", "before"):
            row = value.get(image)
            if isinstance(row, Mapping) and row.get("trainee_id") is not None:
                return str(row["trainee_id"])
    if isinstance(key, str | int) and not isinstance(key, bool):
        text = str(key)
        return text.split(":", 1)[0] if ":" in text else None
    return None


def is_cdc_topic(settings: KafkaSettings, topic: str) -> bool:
    """A Debezium topic ``<prefix>.tss.<table>``: keyed by trainee, so a trainee is on one partition."""
    return topic.startswith(f"{settings.cdc_topic_prefix}.tss.")


def trainee_partition(trainee_id: str, partitions: int) -> int:
    """The partition of a trainee's rows on every CDC topic (the connector keys by trainee)."""
    return partition_for_key(cdc_key(trainee_id), partitions)


def print_json_line(obj: Any) -> None:
    """One compact JSON object on one line (streams: ``tail --json | jq``)."""
    typer.echo(json.dumps(to_jsonable(obj), ensure_ascii=False, separators=(",", ":")))


# ------------------------------------------------------------------------------------------ endpoints
def local_stack() -> Any:
    """The local stack's ``StackInfo`` (``TN_STACK_SCRATCH`` or ``.stack``), or None when none is recorded."""
    from services.devstack import stack

    scratch = Path(os.environ.get("TN_STACK_SCRATCH") or stack.DEFAULT_SCRATCH)
    try:
        return stack._load(scratch.resolve()) if scratch.exists() else None
    except Exception:  # noqa: BLE001 - no stack: the caller falls back to settings
        return None


def connect_url(option: str | None = None) -> str | None:
    """Kafka Connect's REST URL: the option, ``TN_CONNECT_URL``, or the local stack's; None if unknown."""
    if option:
        return option.rstrip("/")
    if os.environ.get("TN_CONNECT_URL"):
        return os.environ["TN_CONNECT_URL"].rstrip("/")
    info = local_stack()
    return info.connect_url if info is not None and info.connect_url else None


def source_dsn(option: str | None = None) -> str:
    """The source (TSS) database with the replication slot: the option, ``TN_SOURCE_DSN``, the local
    stack's database, else the ledger's DSN (``TN_LEDGER_DSN``: on the local stack they are one)."""
    if option:
        return option
    if os.environ.get("TN_SOURCE_DSN"):
        return os.environ["TN_SOURCE_DSN"]
    info = local_stack()
    if info is not None:
        return str(info.pg_dsn)
    return MailerSettings().ledger_dsn


def ledger_dsn(option: str | None = None) -> str:
    """The mailer's ledger database: the option, ``TN_LEDGER_DSN`` (MailerSettings)."""
    return option or MailerSettings().ledger_dsn


def aggregator_url(option: str | None = None) -> str:
    """The aggregator's web endpoint (/metrics): the option, ``TN_AGGREGATOR_URL``, or
    ``http://TN_WEB_HOST:TN_WEB_PORT``."""
    if option:
        return option.rstrip("/")
    if os.environ.get("TN_AGGREGATOR_URL"):
        return os.environ["TN_AGGREGATOR_URL"].rstrip("/")
    s = AggregatorSettings()
    return f"http://{s.web_host}:{s.web_port}"


def dsn_endpoint(dsn: str) -> str:
    """``host:port`` of a libpq conninfo or URL, for error messages (never the password)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(dsn)
        return f"{d.get('host', 'localhost')}:{d.get('port', 5432)}"
    except Exception:  # noqa: BLE001 - a malformed DSN is reported by the connect that follows
        return "the database"


def pg_connect(dsn: str, what: str = "database", timeout: int = 5) -> Any:
    """A psycopg connection (autocommit); :class:`Unreachable` naming host and port if it fails."""
    import psycopg

    try:
        return psycopg.connect(dsn, connect_timeout=timeout, autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unreachable(f"cannot reach the {what} at {dsn_endpoint(dsn)}: {first}") from None


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0, what: str = "service") -> Any:
    """A JSON HTTP call; :class:`Unreachable` naming host and port when nothing answers, ``OpsError``
    with the status and the body's message on an HTTP error."""
    import urllib.error
    import urllib.parse
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,  # noqa: S310  an operator's http(s) URL from settings
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310  an operator's http(s) URL from settings
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            message = json.loads(text).get("message", text)
        except (ValueError, AttributeError):
            message = text
        raise OpsError(f"{what} answered HTTP {exc.code} to {method} {url}: {one_line(message)[:300]}") from None
    except (urllib.error.URLError, OSError) as exc:
        parsed = urllib.parse.urlsplit(url)
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach {what} at {parsed.hostname}:{parsed.port or 80} ({reason})") from None
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
