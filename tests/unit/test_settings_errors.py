"""A bad setting is reported for people: the variable's name and what is wrong, exit 2, no traceback,
never the value (it may be a secret). A relay login in clear is refused unless explicitly allowed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from services.cli import settings_error
from services.settings import MailerSettings, SmtpSettings


def test_a_relay_login_over_a_connection_without_tls_is_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TN_SMTP_USERNAME", "mailer")
    monkeypatch.setenv("TN_SMTP_PASSWORD", "hunter2")
    with pytest.raises(ValidationError) as err:
        SmtpSettings()
    text = settings_error(err.value)
    assert "TN_SMTP_SECURITY is none" in text and "TN_SMTP_ALLOW_PLAINTEXT_AUTH" in text and "hunter2" not in text
    monkeypatch.setenv("TN_SMTP_SECURITY", "starttls")
    assert SmtpSettings().smtp_username == "mailer"
    monkeypatch.setenv("TN_SMTP_SECURITY", "none")
    monkeypatch.setenv("TN_SMTP_ALLOW_PLAINTEXT_AUTH", "true")
    assert SmtpSettings().smtp_allow_plaintext_auth


def test_each_bad_variable_is_named_and_its_value_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TN_DAY_SECONDS", "one-minute")
    monkeypatch.setenv("TN_SMTP_POOL_SIZE", "0")
    with pytest.raises(ValidationError) as err:
        MailerSettings()
    text = settings_error(err.value)
    assert "TN_DAY_SECONDS: Input should be a valid integer" in text
    assert "TN_SMTP_POOL_SIZE: Input should be greater than or equal to 1" in text
    assert "one-minute" not in text


@pytest.mark.parametrize(("service", "variable", "value"), [
    ("mailer", "TN_DAY_SECONDS", "abc"),
    ("formr", "TN_FORMR_OFFICE_GROUPS", "{not-json-secret"),  # not even JSON: pydantic-settings' own error
])
def test_the_command_line_exits_2_with_the_name_and_no_traceback(service: str, variable: str, value: str) -> None:
    env = {**os.environ, variable: value}
    exe = os.path.join(os.path.dirname(sys.executable), "trainee-notify")
    done = subprocess.run([exe, service, "run"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert variable in done.stderr and "Traceback" not in done.stderr and value not in done.stderr


def test_stack_env_exports_every_setting_a_service_needs_and_quotes_them(tmp_path: object) -> None:
    """``eval "$(trainee-notify stack env)"`` then ``trainee-notify mailer run`` must reach the stack's
    ledger on its random port, not the default one (the DSN holds spaces: quoted)."""
    import shlex
    from pathlib import Path

    from services.devstack.stack import StackInfo
    from services.settings import FormrSettings

    dsn = "host=127.0.0.1 port=54321 user=postgres dbname=tss"
    info = StackInfo(Path("/tmp/x"), "127.0.0.1:40000", dsn, 54321, 40000, 40001, 1, connect_url="http://127.0.0.1:8083")
    lines = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in info.env().items())
    script = lines + '\nprintf "%s|%s|%s" "$TN_LEDGER_DSN" "$TN_FORMR_DSN" "$TN_KAFKA_BOOTSTRAP"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, timeout=30).stdout
    assert out == f"{dsn}|{dsn}|127.0.0.1:40000"
    env = dict(os.environ, **info.env())
    old = os.environ.copy()
    try:
        os.environ.update(info.env())
        assert MailerSettings().ledger_dsn == dsn and FormrSettings().formr_dsn == dsn
        assert MailerSettings().kafka_bootstrap == "127.0.0.1:40000"
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert env["TN_CONNECT_URL"] == "http://127.0.0.1:8083"


def test_the_clock_file_has_its_name_and_the_old_one_is_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.settings import AggregatorSettings

    monkeypatch.setenv("TN_CLOCK_FILE", "/tmp/clock")
    assert str(AggregatorSettings().clock_file) == "/tmp/clock"
    monkeypatch.delenv("TN_CLOCK_FILE")
    monkeypatch.setenv("TN_WATERMARK_FILE", "/tmp/old")
    assert str(AggregatorSettings().clock_file) == "/tmp/old"
