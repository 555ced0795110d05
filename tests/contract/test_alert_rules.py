"""deploy/prometheus/trainee-notify-alerts.yaml: the retained-WAL alert thresholds are the documented ones
(docs/runbook.md) and the `connector status --check` default, and every metric a rule uses is one that
`trainee-notify connector status --prometheus` writes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from services.opsctl import connector

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "trainee-notify-alerts.yaml"
GIB = 1024 ** 3


def rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for group in doc["groups"] for r in group["rules"]}


def threshold(expr: str, metric: str) -> int:
    found = re.fullmatch(rf"\s*{metric}\s*>\s*(\d+)\s*", expr)
    assert found, expr
    return int(found.group(1))


def test_the_wal_thresholds_are_the_documented_ones() -> None:
    r = rules()
    warn = threshold(r["TraineeNotifyReplicationSlotWALWarning"]["expr"], "tn_replication_slot_retained_wal_bytes")
    page = threshold(r["TraineeNotifyReplicationSlotWALCritical"]["expr"], "tn_replication_slot_retained_wal_bytes")
    assert warn == connector.DEFAULT_WARN_BYTES == GIB
    assert page == 10 * GIB
    assert r["TraineeNotifyReplicationSlotWALCritical"]["labels"]["severity"] == "page"
    runbook = " ".join((ROOT / "docs" / "runbook.md").read_text().split())
    assert "warn at 1 GiB**, page at 10 GiB" in runbook
    assert "deploy/prometheus/trainee-notify-alerts.yaml" in runbook
    assert r["TraineeNotifyReplicationSlotInactive"]["for"] == "10m"  # the runbook's "for more than 10 minutes"


def test_every_metric_a_rule_uses_is_written_by_connector_status_prometheus() -> None:
    state = connector.ConnectorState("tss-postgres", "RUNNING", "w", [connector.TaskState(0, "FAILED", "w")])
    rep = connector.Report(state,
                           [connector.Slot("tss_debezium", False, 5 * GIB)])
    text = connector.prometheus_text(rep, connector.DEFAULT_WARN_BYTES)
    written = {line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")}
    used = {m for r in rules().values() for m in re.findall(r"\btn_[a-z_]+", r["expr"])}
    assert used and used <= written, used - written
    # the sample would fire the warning, the inactive slot and the task rules (expressions evaluated by hand)
    assert 'tn_replication_slot_retained_wal_bytes{slot="tss_debezium"} 5368709120' in text
    assert 'tn_replication_slot_active{slot="tss_debezium"} 0' in text
    assert 'tn_connector_task_running{connector="tss-postgres",task="0"} 0' in text

