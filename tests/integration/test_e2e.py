"""The whole path on real parts: SQL in PostgreSQL → Debezium → Kafka → aggregator → mailer → SMTP.

Days are shortened to WINDOW seconds; the aggregator and mailer run as real processes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services import serde
from tests.integration.procs import Inbox, aggregator, mailer, smtp_server, text_of

WINDOW = 8


@pytest.fixture(scope="module")
def pipeline(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Inbox, Path]]:
    scratch = tmp_path_factory.mktemp("e2e")
    ctl, inbox = smtp_server()
    days = {"TN_DAY_SECONDS": str(WINDOW), "TN_GRACE_SECONDS": "1", "TN_MAX_HOLD_SECONDS": "20"}
    agg = aggregator(stack, scratch, **days).start()
    mail = mailer(stack, scratch, ctl.port, TN_GROUP_ID=f"mailer-e2e-{uuid.uuid4().hex[:6]}", **days).start()
    try:
        yield inbox, scratch
    finally:
        mail.stop()
        agg.stop()
        ctl.stop()
        for svc in (agg, mail):
            assert "Traceback" not in svc.log(), f"{svc.name} crashed:\n{svc.log()[-3000:]}"


def next_window() -> None:
    """Sleep into the start of the next short day, so the following SQL lands in one window."""
    now = time.time()
    time.sleep(WINDOW - (now % WINDOW) + 0.3)


def add_trainee(conn: Any, tid: str, site: str = "Addenbrooke's Hospital") -> str:
    address = f"dr.{tid}@example.nhs.uk"
    conn.execute("INSERT INTO tss.personal_details (trainee_id, role, title, forenames, surname, email, updated_at)"
                 " VALUES (%s, 'DR in Training', 'Dr', 'Ada', 'Okafor', %s, now())", (tid, address))
    conn.execute("INSERT INTO tss.placement (id, trainee_id, placement_type, start_date, end_date, grade, specialty,"
                 " site, employing_body, training_body, whole_time_equivalent, updated_at) VALUES"
                 " (%s, %s, 'In post', '2027-02-03', '2027-08-03', 'ST3', 'Cardiology', %s,"
                 " 'Cambridge University Hospitals NHS Foundation Trust',"
                 " 'Royal Papworth Hospital NHS Foundation Trust',"
                 " 1.00, now())", (f"pl-{tid}", tid, site))
    return address


def to(address: str) -> Any:
    return lambda m: address in (m["To"] or "")


def test_a_site_change_in_postgresql_reaches_the_trainee_by_email(pipeline: Any, pg: Any) -> None:
    inbox, _ = pipeline
    conn = pg()
    tid = f"e2e-{uuid.uuid4().hex[:8]}"
    address = add_trainee(conn, tid)
    next_window()
    conn.execute("UPDATE tss.placement SET site = 'Royal Papworth Hospital', updated_at = now() WHERE id = %s",
                 (f"pl-{tid}",))
    [msg] = inbox.wait_for(lambda m: to(address)(m) and "Royal Papworth Hospital" in text_of(m), timeout=90)
    body = text_of(msg)
    assert "Addenbrooke's Hospital" in body and "Royal Papworth Hospital" in body
    assert "Dear Dr Okafor" in body
    assert msg["Subject"].startswith("Changes to your training record on")
    assert msg["Message-ID"]


def test_an_edit_undone_in_the_same_day_sends_nothing(pipeline: Any, pg: Any, consume_topic: Any) -> None:
    inbox, _ = pipeline
    conn = pg()
    tid, control = f"undo-{uuid.uuid4().hex[:8]}", f"ctl-{uuid.uuid4().hex[:8]}"
    undo_address, control_address = add_trainee(conn, tid), add_trainee(conn, control)
    # the insert days' digests ("a new placement was added") arrive first
    inbox.wait_for(to(undo_address), timeout=90)
    inbox.wait_for(to(control_address), timeout=30)
    next_window()
    pid = f"pl-{tid}"
    conn.execute("UPDATE tss.placement SET site = 'Royal Papworth Hospital' WHERE id = %s", (pid,))
    conn.execute("UPDATE tss.placement SET grade = 'ST4' WHERE id = %s", (f"pl-{control}",))
    conn.execute("UPDATE tss.placement SET site = 'Addenbrooke''s Hospital' WHERE id = %s", (pid,))
    # the control trainee's change of the same day arrives: that day has closed and been mailed
    inbox.wait_for(lambda m: to(control_address)(m) and "ST4" in text_of(m), timeout=90)
    time.sleep(3)
    assert len(inbox.matching(to(undo_address))) == 1  # only the earlier "added" digest
    records = consume_topic("trainee-notify.netchange.v1", 1, timeout=20,
                            predicate=lambda r: r.raw_value is not None and serde.decode(serde.NETCHANGE, r.raw_value)[
                                "trainee_id"] == tid)
    changes = [(c["entity"], c["kind"]) for r in records for c in serde.decode(serde.NETCHANGE, r.raw_value)["changes"]]
    assert changes == [("personal_details", "created"), ("placement", "created")]
