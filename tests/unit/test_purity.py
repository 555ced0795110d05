"""The pure modules import no I/O framework: Kafka, Faust, SMTP, PostgreSQL and the CLI stay at the edge."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = ["services.netchange.core", "services.netchange.cdc", "services.netchange.days", "services.netchange.batch",
        "services.notifier.safety", "services.notifier.contacts", "services.notifier.document",
        "services.notifier.mime",
        "services.netchange.watermark", "services.notifier.plan", "services.notifier.compose",
        "services.formr.rules", "services.formr.readmodel", "services.formr.auth", "services.formr.report",
        "services.formr.reminders"]
EDGE = ("faust", "mode", "aiokafka", "confluent_kafka", "aiosmtplib", "psycopg", "typer", "aiohttp")


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io_framework(module: str) -> None:
    code = (f"import sys, {module}; "
            f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {EDGE!r})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"{module} pulls in {loaded}"
