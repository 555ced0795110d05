"""MailDev from npm really installs, starts on free ports, receives SMTP and lists it over REST."""

from __future__ import annotations

import shutil
import smtplib
from email.message import EmailMessage
from pathlib import Path

import pytest

from services.demo import maildev


@pytest.mark.skipif(not shutil.which("npm"), reason="needs Node.js and npm")
def test_maildev_round_trip(tmp_path: Path) -> None:
    md = maildev.start(tmp_path)
    try:
        assert maildev.start(tmp_path) == md  # idempotent
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "a@example.nhs.uk", "Someone@example.nhs.uk", "test"
        msg.set_content("body")
        with smtplib.SMTP("127.0.0.1", md.smtp_port, timeout=10) as smtp:
            smtp.send_message(msg)
        got = maildev.wait_for(md, 1, timeout=15)
        assert [maildev.recipients(m) for m in got] == [["someone@example.nhs.uk"]]
        maildev.clear(md)
        assert maildev.emails(md) == []
    finally:
        assert maildev.stop(tmp_path)
    assert maildev.current(tmp_path) is None
