"""The mailer consumer's pure parts (which offsets may be committed, which reasons may be logged) and
rendering in a worker process (the same email as inline)."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from services.notifier import compose
from services.notifier.consumer import DIED_IN_DATA, Inbound, committable, loggable_reason

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


def item(tp: TopicPartition, offset: int, done: bool) -> Inbound:
    return Inbound(tp, offset, b"", None, done)


def test_only_the_contiguous_prefix_of_done_records_is_committed_per_partition() -> None:
    items = [item(P0, 10, True), item(P0, 11, False), item(P0, 12, True),
             item(P1, 5, True), item(P1, 6, True)]
    assert committable(items) == {P0: 11, P1: 7}


def test_a_partition_whose_first_record_is_not_done_commits_nothing() -> None:
    assert committable([item(P0, 3, False), item(P0, 4, True), item(P1, 0, True)]) == {P1: 1}


def test_order_of_the_batch_does_not_matter() -> None:
    assert committable([item(P0, 2, True), item(P0, 1, True), item(P0, 0, True)]) == {P0: 3}


def test_reasons_the_mailer_words_are_logged_relay_text_is_not() -> None:
    for reason in (compose.HEADER_NOT_VALID, compose.NO_ADDRESS, "no address", "placeholder person",
                   DIED_IN_DATA, "connection error: SMTPConnectError", None):
        assert loggable_reason(reason) == reason
    for reply in ("5.1.1 <address> Ada Okafor unknown", "gave up after 3 attempts: try later, Dr Okafor",
                  "Flat 3, 40 Hills Road"):
        assert loggable_reason(reply) == "<relay reply>"


async def test_rendering_in_a_worker_process_gives_the_same_email_as_inline() -> None:
    import email
    import json
    from pathlib import Path

    from services.notifier.plan import Kind
    from services.notifier.render import Context, Rendered, Renderer

    record = json.loads((Path(__file__).parent / "golden" / "minimal_record.json").read_text())
    ctx = Context(compose.Contacts.default(), "Notifications <no-reply@notify.example.nhs.uk>", False)
    inline, worker = Renderer(ctx, 0), Renderer(ctx, 1)
    await worker.start()
    try:
        a = await inline(Kind.DIGEST, record, "<m1@notify.example.nhs.uk>", None)
        b = await worker(Kind.DIGEST, record, "<m1@notify.example.nhs.uk>", None)
        refused = await worker(Kind.PREVIOUS_ADDRESS, record, "<m2@notify.example.nhs.uk>", None)
    finally:
        worker.close()
    assert isinstance(a, Rendered) and isinstance(b, Rendered)
    assert (a.to, a.message_id) == (b.to, b.message_id) == ("b.trainee@example.nhs.uk", "<m1@notify.example.nhs.uk>")
    ma, mb = email.message_from_bytes(a.data), email.message_from_bytes(b.data)

    def headers(m: email.message.Message) -> list[tuple[str, str]]:
        return [(k, v) for k, v in m.items() if k not in ("Date", "Content-Type")]  # boundaries are random

    def parts(m: email.message.Message) -> list[Any]:
        return [p.get_payload(decode=True) for p in m.walk() if not p.is_multipart()]

    assert headers(ma) == headers(mb) and parts(ma) == parts(mb)
    assert refused == compose.Refusal(compose.NO_ADDRESS)  # no previous email: nothing to send


def test_a_calendar_days_digests_go_from_the_send_time_next_morning_in_london() -> None:
    import datetime as dt

    from services.notifier.plan import send_after

    winter = send_after("2026-11-24", "07:00", "Europe/London")
    assert winter == dt.datetime(2026, 11, 25, 7, 0, tzinfo=dt.UTC)
    # the night the clocks go forward: 07:00 BST is 06:00 UTC
    spring = send_after("2026-03-28", "07:00", "Europe/London")
    assert spring.astimezone(dt.UTC) == dt.datetime(2026, 3, 29, 6, 0, tzinfo=dt.UTC)
    # a short (test or demo) day goes as soon as it has closed
    assert send_after("2026-11-24T10:31:00Z", "07:00", "Europe/London") == dt.datetime(
        2026, 11, 24, 10, 31, tzinfo=dt.UTC)


async def test_concurrent_ledger_writes_go_in_one_statement_and_each_caller_gets_its_own_result() -> None:
    import asyncio

    from services.notifier.ledger import GroupCommit

    statements: list[list[tuple[str, int]]] = []

    async def run(batch: list[tuple[str, int]]) -> list[int]:
        statements.append(batch)
        await asyncio.sleep(0.01)  # the round trip: requests arriving meanwhile wait for the next statement
        return [item * 10 for _, item in batch]

    group: GroupCommit[str, int, int] = GroupCommit(run)
    first = await asyncio.gather(*(group(f"n{i}", i) for i in range(5)))
    assert first == [0, 10, 20, 30, 40] and [len(s) for s in statements] == [5]

    statements.clear()
    # a key at most once per statement: the second request for n1 goes in the next one
    again = await asyncio.gather(group("n1", 1), group("n2", 2), group("n1", 3))
    assert again == [10, 20, 30] and statements == [[("n1", 1), ("n2", 2)], [("n1", 3)]]


async def test_a_failed_ledger_statement_fails_every_caller_in_it_and_the_next_one_still_runs() -> None:
    import asyncio

    import pytest

    from services.notifier.ledger import GroupCommit

    calls = 0

    async def run(batch: list[tuple[str, int]]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database gone")
        return [item for _, item in batch]

    group: GroupCommit[str, int, int] = GroupCommit(run)
    results = await asyncio.gather(group("a", 1), group("b", 2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await group("c", 3) == 3
    with pytest.raises(ConnectionError):
        calls = 0
        await group("d", 4)


def test_the_data_body_is_what_aiosmtplib_would_write() -> None:
    import random

    from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

    from services.notifier.smtp import data_body

    rng = random.Random(7)
    pieces = [b"a", b".", b"\r", b"\n", b"\r\n", b"..", b" ", b"\r\n.\r\n"]
    samples = [b"", b".", b"a\r\n", b"a\r\n.b\r\n", b"a\nb", b"a\r\n\r\n", b"\r\n.\r\n"]
    samples += [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(20000)]
    for message in samples:
        assert data_body(message) == PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"
