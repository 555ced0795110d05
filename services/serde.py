"""Avro on the wire without a schema registry: the Avro single-object encoding.

Each value is ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema + the
binary body, so a reader can tell which schema wrote it (schemas/history/ keeps the released ones).
"""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path
from typing import Any

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


@cache
def _fingerprint(name: str) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema(name)), "CRC-64-AVRO"))[::-1]


def encode(name: str, value: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(_fingerprint(name))
    fastavro.schemaless_writer(buf, schema(name), value)
    return buf.getvalue()


def decode(name: str, data: bytes) -> dict[str, Any]:
    if data[:2] != MAGIC:
        raise SchemaMismatch("not an Avro single-object value")
    if data[2:10] != _fingerprint(name):
        raise SchemaMismatch(f"written with a schema other than {name}")
    out: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema(name), None)
    return out


NETCHANGE = "uk.nhs.tis.notify.NetChange"
DELIVERY_STATUS = "uk.nhs.tis.notify.DeliveryStatus"
