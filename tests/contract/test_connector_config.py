"""deploy/connect/tss-postgres.json keys every change by trainee (ADR 0004) and agrees with the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from services.settings import KafkaSettings
from services.topics import CDC_TABLES

ROOT = Path(__file__).resolve().parents[2]
CONNECTOR = ROOT / "deploy" / "connect" / "tss-postgres.json"
SCHEMA_SQL = ROOT / "deploy" / "local" / "schema.sql"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    spec = json.loads(CONNECTOR.read_text())
    assert spec["name"] == "tss-postgres"
    return dict(spec["config"])


def _key_columns(value: str) -> dict[str, list[str]]:
    """``<table>:<col>,<col>;<table>:<col>`` (Debezium's message.key.columns) as {table: columns}."""
    out: dict[str, list[str]] = {}
    for entry in value.split(";"):
        table, _, columns = entry.strip().rpartition(":")
        assert table and columns, entry
        assert table not in out, f"{table} listed twice"
        out[table] = [c.strip() for c in columns.split(",")]
    return out


def test_the_connector_captures_exactly_the_cdc_tables(config: dict[str, Any]) -> None:
    assert config["table.include.list"].split(",") == [f"tss.{t}" for t in CDC_TABLES]


def test_every_table_is_keyed_by_trainee_id(config: dict[str, Any]) -> None:
    assert _key_columns(config["message.key.columns"]) == {f"tss.{t}": ["trainee_id"] for t in CDC_TABLES}


def test_every_captured_table_has_a_not_null_trainee_id() -> None:
    sql = SCHEMA_SQL.read_text()
    for table in CDC_TABLES:
        body = re.search(rf"CREATE TABLE IF NOT EXISTS tss\.{table} \((.*?)\n\);", sql, re.DOTALL)
        assert body, table
        column = re.search(r"^\s*trainee_id\s+text\s+(NOT NULL|PRIMARY KEY)", body.group(1), re.MULTILINE)
        assert column, f"tss.{table} has no non-null trainee_id: it cannot be the message key"


def test_no_tombstones(config: dict[str, Any]) -> None:
    assert config["tombstones.on.delete"] == "false"  # a tombstone keyed by trainee would mean nothing


def test_topics_the_connector_creates_get_the_project_partition_count(config: dict[str, Any]) -> None:
    default = KafkaSettings.model_fields["topic_partitions"].default
    assert config["topic.creation.default.partitions"] == str(default)
