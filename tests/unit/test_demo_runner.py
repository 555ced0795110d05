"""The demo's pure helpers: day windows, service environments, MailDev recipients, expectations."""

from __future__ import annotations

from pathlib import Path

from services.demo import maildev, runner
from services.demo.script import DayScript, Expected, Step
from tests.contract.test_compose_file import settings_env_names


def test_window_helpers() -> None:
    assert runner.window_start(125.0) == 120.0
    assert runner.seconds_to_fresh_window(120.0 + 10) == 0.0
    assert runner.seconds_to_fresh_window(120.0 + 45) == 16.0
    assert runner.day_label(1795621200.0) == "2026-11-25T15:40:00Z"


def test_service_env_uses_only_settings_names(tmp_path: Path) -> None:
    known = settings_env_names() | {"TN_LOG_FORMAT", "TN_LOG_LEVEL"}
    for name in runner.SERVICES:
        env = runner.service_env(name, bootstrap="127.0.0.1:1", smtp_port=2, port=3, scratch=tmp_path, base={})
        assert {k for k in env if k.startswith("TN_")} <= known
        assert env["TN_DAY_SECONDS"] == "60" and env["TN_SEND_IMMEDIATELY"] == "true"
        assert env["TN_SMTP_PORT"] == "2" and env["TN_KAFKA_BOOTSTRAP"] == "127.0.0.1:1"


def test_maildev_recipients() -> None:
    message = {"envelope": {"to": [{"address": "A.B1@example.nhs.uk"}]}, "to": [{"address": "x@example.nhs.uk"}]}
    assert maildev.recipients(message) == ["a.b1@example.nhs.uk"]
    assert maildev.recipients({"to": [{"address": "C@example.nhs.uk"}]}) == ["c@example.nhs.uk"]


def test_expected_emails_count_digest_and_old_address_notice() -> None:
    script = DayScript(
        steps=(Step("email", "", (), {"1": (Expected("personal_details", "updated"),)}),
               Step("placeholder", "", (), {"2": (Expected("placement", "updated", "placeholder person"),)}),
               Step("undone", "", (), {"3": ()})),
        addresses={"1": "new@example.nhs.uk", "2": "p@example.nhs.uk", "3": "u@example.nhs.uk"},
        old_addresses={"1": "old@example.nhs.uk"},
    )
    assert script.expected_emails() == {"1": 2, "2": 0, "3": 0}
    assert script.trainee_of_address()["old@example.nhs.uk"] == "1"
