"""Records of our topics for people: decoding (JSON envelopes, our Avro single-object values with their
schema version) and partitioning (Kafka's default partitioner, the trainee a record is about).

Re-exported by ``services.opsctl.common``.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson

from services import serde
from services.settings import KafkaSettings


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
