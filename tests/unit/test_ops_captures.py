"""docs/ops-status.* and docs/ops-trainee.*: the captures of `status` and `trainee` from a demo run
(scripts/ops_captures.py) are what today's commands print. Their JSON is rendered again with today's
``render``; a change to the commands' output fails here until the captures are made again from a demo."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scripts import ops_captures
from services.settings import AggregatorSettings
from services.topics import declared_topics

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("kind", ["status", "trainee"])
def test_the_capture_is_what_todays_command_prints(kind: str) -> None:
    data = json.loads((DOCS / f"ops-{kind}.json").read_text())
    text = (DOCS / f"ops-{kind}.txt").read_text()
    assert ops_captures.rendered_text(kind, data) == text
    svg = (DOCS / f"ops-{kind}.svg").read_text()
    assert svg.lstrip().startswith("<svg") and f"trainee-notify&#160;{kind}" in svg  # rich writes spaces as &#160;


def test_the_status_capture_names_only_declared_topics_and_reads_everything() -> None:
    data = json.loads((DOCS / "ops-status.json").read_text())
    declared = {t.name for t in declared_topics(AggregatorSettings())}
    named = {topic for g in data["groups"].values() for topic in g["lag"]}
    assert named and named <= declared, named - declared
    assert data["unreachable"] == [] and data["connector"]["state"] == "RUNNING"
    assert {"trainee-notify-aggregator", "trainee-notify-mailer"} <= set(data["groups"])


def test_the_trainee_capture_is_a_trainee_who_was_told_and_the_runbook_links_it() -> None:
    data = json.loads((DOCS / "ops-trainee.json").read_text())
    assert any(n["status"] == "SENT" and n["sent_at"] for a in data["told"] for n in a["notifications"])
    assert {"netchange", "ledger", "delivery-status"} <= {e["source"] for e in data["events"]}
    runbook = (DOCS / "runbook.md").read_text()
    assert f"[`trainee {data['trainee_id']}`](ops-trainee.svg)" in runbook
    assert "[`status`](ops-status.svg)" in runbook
    # personal fields are masked in what is kept
    text = json.dumps(data)
    assert not re.search(r"[\w.+-]+@(?!notify\.example\.nhs\.uk)[\w-]+\.[\w.]+", text), "an address in the capture"
