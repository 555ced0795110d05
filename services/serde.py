"""Avro on the wire without a schema registry: the Avro single-object encoding.

Each value is ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema + the
binary body, so a reader can tell which schema wrote it (schemas/history/ keeps the released ones).
"""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

MAGIC = b"\xc3\x01"


def schema_dir() -> Path:
    """``schemas/`` beside the package (a checkout) or in the working directory (the image's /app)."""
    for candidate in (Path(__file__).resolve().parent.parent / "schemas", Path.cwd() / "schemas"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no schemas/ directory beside the package or in the working directory")


class SchemaMismatch(ValueError):
    """A value written with a schema this reader does not know."""


@cache
def schema(name: str) -> Any:
    with open(schema_dir() / f"{name}.avsc", encoding="utf-8") as fh:
        return parse_schema(json.load(fh))


def _fingerprint_of(parsed: Any) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))[::-1]


@cache
def _fingerprint(name: str) -> bytes:
    return _fingerprint_of(schema(name))


@cache
def _writers(name: str) -> dict[bytes, Any]:
    """Every schema a value of ``name`` may have been written with: the current one and the released
    versions in schemas/history/ (``<name>.v<N>.avsc``), by fingerprint."""
    found = {_fingerprint(name): schema(name)}
    for path in sorted((schema_dir() / "history").glob(f"{name}.v*.avsc")):
        with open(path, encoding="utf-8") as fh:
            parsed = parse_schema(json.load(fh))
        found.setdefault(_fingerprint_of(parsed), parsed)
    return found


def encode(name: str, value: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(_fingerprint(name))
    fastavro.schemaless_writer(buf, schema(name), value)
    return buf.getvalue()


def decode(name: str, data: bytes) -> dict[str, Any]:
    """Read a value written with the current schema or any released version of it, as the current one."""
    if data[:2] != MAGIC:
        raise SchemaMismatch("not an Avro single-object value")
    writer = _writers(name).get(data[2:10])
    if writer is None:
        raise SchemaMismatch(f"written with a schema that is neither {name} nor a released version of it")
    reader = schema(name)
    out = fastavro.schemaless_reader(io.BytesIO(data[10:]), writer, None if writer is reader else reader)
    return cast(dict[str, Any], out)  # every schema of ours is a record: fastavro reads it as a dict


NETCHANGE = "uk.nhs.tis.notify.NetChange"
DELIVERY_STATUS = "uk.nhs.tis.notify.DeliveryStatus"
