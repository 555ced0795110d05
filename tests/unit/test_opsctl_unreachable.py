"""Every operator command, pointed at services that are not there (Kafka, the ledger and source databases,
Kafka Connect, the aggregator, all on 127.0.0.1:1, where nothing listens): one line on stderr naming what
and where, exit 3 (EXIT_UNREACHABLE), never a traceback. Run as operators run them: the console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "trainee-notify"
NOWHERE = "127.0.0.1:1"
DSN = "host=127.0.0.1 port=1 user=postgres dbname=tss"


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TN_KAFKA_BOOTSTRAP": NOWHERE, "TN_LEDGER_DSN": DSN, "TN_SOURCE_DSN": DSN,
           "TN_CONNECT_URL": f"http://{NOWHERE}", "TN_AGGREGATOR_URL": f"http://{NOWHERE}",
           "TN_STACK_SCRATCH": str(tmp_path / "no-stack"), "TN_LOG_FORMAT": "json"}
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=90, check=False, env=env,
                          cwd=tmp_path)


KAFKA = "cannot reach the Kafka broker at 127.0.0.1:1"
LEDGER = "cannot reach the ledger database at 127.0.0.1:1"
CONNECT = "cannot reach Kafka Connect at 127.0.0.1:1"
SOURCE = "cannot reach the source database at 127.0.0.1:1"


@pytest.mark.parametrize(("args", "says"), [
    (["tail", "tis.tss.placement"], [KAFKA]),
    (["tail", "tis.tss.placement", "--follow"], [KAFKA]),
    (["trainee", "47165"], [KAFKA, LEDGER]),
    (["topics", "describe"], [KAFKA]),
    (["topics", "apply"], [KAFKA]),
    (["preview", "--trainee", "47165", "--day", "2026-11-24"], [KAFKA]),
    (["reset-offsets", "trainee-notify-mailer", "--to-latest"], [KAFKA]),
    (["resend", "--trainee", "47165", "--reason", "asked"], [LEDGER]),
    (["deadletter", "list"], [KAFKA]),
    (["deadletter", "show", "cdc:0:1"], [KAFKA]),
    (["deadletter", "retry", "cdc:0:1", "--reason", "fixed"], [KAFKA]),
    (["connector", "status"], [CONNECT, SOURCE]),
    (["connector", "restart"], [CONNECT]),
    (["connector", "apply", "--set", "database.hostname=db", "--set", "database.port=5432", "--set",
      "database.user=u", "--set", "database.dbname=tss"], [CONNECT]),
], ids=lambda v: " ".join(v[:2]) if v and v[0][0].islower() and not v[0].startswith("cannot") else "")
def test_an_unreachable_service_is_one_line_naming_host_and_port(tmp_path: Path, args: list[str],
                                                                 says: list[str]) -> None:
    done = run(tmp_path, *args)
    assert done.returncode == 3, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    for text in says:
        assert text in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert "%3|" not in done.stderr  # librdkafka's own log is not shown


def test_status_shows_what_it_could_not_reach_and_exits_3(tmp_path: Path) -> None:
    done = run(tmp_path, "status")
    assert done.returncode == 3, done.stderr
    screen = " ".join(done.stdout.split())
    for text in (KAFKA, "cannot reach the aggregator at 127.0.0.1:1", LEDGER, CONNECT, SOURCE):
        assert f"could not read: {text}" in screen, (text, screen)
    assert "Traceback" not in done.stderr + done.stdout
    as_json = run(tmp_path, "status", "--json")
    assert as_json.returncode == 3 and '"unreachable"' in as_json.stdout and KAFKA in as_json.stdout
