"""Integration fixtures: the real local stack (PostgreSQL, Kafka, Connect + Debezium) once per session.

The stack is started by the same code as ``trainee-notify stack up`` (services.devstack.stack) in a
per-session scratch dir under /tmp, with the topics applied and the Debezium connector RUNNING, and
stopped at the end. To reuse a stack you started yourself (fast edit-test loops)::

    trainee-notify stack up && TN_STACK_SCRATCH=.stack pytest -m integration

Set TN_KEEP_STACK=1 to keep the per-session scratch dir (logs) after the run.
Every test in this directory is marked ``integration``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError

from services.devstack.errors import StackError
from services.devstack.stack import StackInfo, down, up
from services.kafka_security import client_config
from services.topics import apply_topics

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class Record:
    """One consumed Kafka message, decoded: ``value`` is None for a tombstone."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    raw_value: bytes | None


def _decode(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def consume(bootstrap: str, topic: str, n: int, *, timeout: float = 30.0,
            predicate: Callable[[Record], bool] | None = None) -> list[Record]:
    """Read ``topic`` from the beginning until ``n`` records matching ``predicate`` arrived (or fail).

    Topics are shared by every test of the session: select your own records with ``predicate``
    (e.g. by key). Tombstones are records with ``value`` None.
    """
    consumer = Consumer({
        **client_config(bootstrap),
        "group.id": f"it-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    })
    found: list[Record] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(found) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                raise AssertionError(f"consuming {topic}: {msg.error()}")
            rec = Record(msg.topic(), msg.partition(), msg.offset(), _decode(msg.key()), _decode(msg.value()),
                         msg.value())
            if predicate is None or predicate(rec):
                found.append(rec)
    finally:
        consumer.close()
    if len(found) < n:
        raise AssertionError(f"{topic}: got {len(found)} of {n} records within {timeout:.0f} s")
    return found


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    """The running local stack; topics applied, connector registered and RUNNING."""
    external = os.environ.get("TN_STACK_SCRATCH")
    scratch = Path(external) if external else Path(tempfile.mkdtemp(prefix="tn-stack-", dir="/tmp"))
    try:
        info = up(scratch, with_connect=True)
        apply_topics(info.kafka_settings())  # idempotent; up() already did it
    except StackError as exc:
        if not external:
            down(scratch, purge=not os.environ.get("TN_KEEP_STACK"))
        pytest.fail(f"local stack did not start: {exc}", pytrace=False)
    print(f"\nlocal stack: {info.bootstrap} {info.connect_url} {info.pg_dsn} "
          f"({'reused' if info.reused else f'up in {info.started_in_s} s'})")
    yield info
    if not external:
        down(scratch, purge=not os.environ.get("TN_KEEP_STACK"))


@pytest.fixture
def pg(stack: StackInfo) -> Iterator[Callable[[], psycopg.Connection[Any]]]:
    """A factory of autocommit psycopg connections to the stack's ``tss`` database (closed after the test)."""
    conns: list[psycopg.Connection[Any]] = []

    def connect() -> psycopg.Connection[Any]:
        conn = psycopg.connect(stack.pg_dsn, autocommit=True)
        conns.append(conn)
        return conn

    yield connect
    for conn in conns:
        conn.close()


@pytest.fixture
def consume_topic(stack: StackInfo) -> Callable[..., list[Record]]:
    """``consume_topic(topic, n, timeout=30.0, predicate=None)`` bound to the stack's bootstrap."""

    def _consume(topic: str, n: int, *, timeout: float = 30.0,
                 predicate: Callable[[Record], bool] | None = None) -> list[Record]:
        return consume(stack.bootstrap, topic, n, timeout=timeout, predicate=predicate)

    return _consume


@pytest.fixture
def run(stack: StackInfo, tmp_path: Path) -> Any:
    """An aggregator harness with topics of its own (tests/integration/workload.py)."""
    from tests.integration.workload import AggregatorRun

    return AggregatorRun(stack, tmp_path)
