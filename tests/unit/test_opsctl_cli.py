"""The operator CLI without a stack: loud import failures, preview from a file, and the pure helpers of
status, trainee and connector."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from services.opsctl import connector, status, timeline
from services.opsctl.timeline import Event

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "trainee-notify"
GOLDEN = ROOT / "tests" / "unit" / "golden"


def test_a_subcommand_that_cannot_be_imported_fails_loudly_in_process() -> None:
    code = ("import sys, services.cli as c; "
            "c._SUBAPPS['status'] = ('services.opsctl.no_such_module', 'status', 'x'); "
            "sys.argv = ['trainee-notify', 'status']; c.main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          check=False)
    assert done.returncode == 1
    assert "the 'status' command cannot be loaded: services.opsctl.no_such_module.status" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_broken_module_fails_loudly_through_the_console_script(tmp_path: Path) -> None:
    # a PYTHONPATH shim whose sitecustomize makes `import services.opsctl.tail` fail, as a broken
    # dependency would
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Broken:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'services.opsctl.tail':\n"
        "            raise ImportError('simulated: a dependency of tail is missing')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Broken())\n")
    done = subprocess.run([str(BIN), "tail", "x"], capture_output=True, text=True, timeout=60, check=False,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1, done.stderr
    assert "'tail' command cannot be loaded: services.opsctl.tail.tail: ImportError: simulated" in done.stderr
    assert "Traceback" not in done.stderr
    # the other commands still work
    ok = subprocess.run([str(BIN), "topics", "list", "--json"], capture_output=True, text=True, timeout=60, check=False,
                        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert ok.returncode == 0, ok.stderr


def test_preview_from_a_file_is_the_mailers_golden_email(tmp_path: Path) -> None:
    import typer

    from services.opsctl.preview import preview

    app = typer.Typer()
    app.command()(preview)
    done = CliRunner().invoke(app, ["--file", str(GOLDEN / "full_record.json"), "--kind", "digest",
                                    "--out", str(tmp_path)])
    assert done.exit_code == 0, done.output
    [txt] = tmp_path.glob("*digest.txt")
    assert txt.read_text(encoding="utf-8") == (GOLDEN / "full_digest.txt").read_text(encoding="utf-8")
    [html] = tmp_path.glob("*digest.html")
    assert "<html" in html.read_text(encoding="utf-8").lower()
    [eml] = tmp_path.glob("*digest.eml")
    assert b"Subject: Changes to your training record" in eml.read_bytes()
    bad = CliRunner().invoke(app, ["--file", str(tmp_path / "missing.json")])
    assert bad.exit_code == 2


def test_parse_metrics_and_send_time() -> None:
    text = ("# HELP netchange_watermark_lag_seconds x\n# TYPE netchange_watermark_lag_seconds gauge\n"
            "netchange_watermark_lag_seconds 12.5\nnetchange_watermark_forced 0.0\n"
            'netchange_dead_letters_total{reason="malformed"} 3.0\n')
    m = status.parse_metrics(text)
    assert m["netchange_watermark_lag_seconds"] == 12.5 and m["netchange_watermark_forced"] == 0.0
    assert m['netchange_dead_letters_total{reason="malformed"}'] == 3.0
    due = status.send_time(dt.date(2026, 3, 28), "07:00", "Europe/London")  # the clocks change on the 29th
    assert due.astimezone(dt.UTC) == dt.datetime(2026, 3, 29, 6, 0, tzinfo=dt.UTC)


def test_describe_envelope_names_changed_fields_and_masks() -> None:
    env = {"op": "u", "before": {"trainee_id": "1", "email": "a@x.nhs.uk", "site": "A"},
           "after": {"trainee_id": "1", "email": "b@x.nhs.uk", "site": "B"}}
    what, fields = timeline.describe_envelope("personal_details", env, show_personal=False)
    assert what == "personal_details 1 updated: email, site"
    assert fields == {"email": {"old": "‹masked›", "new": "‹masked›"}, "site": {"old": "A", "new": "B"}}
    _, shown = timeline.describe_envelope("personal_details", env, show_personal=True)
    assert shown["email"] == {"old": "a@x.nhs.uk", "new": "b@x.nhs.uk"}
    what, _ = timeline.describe_envelope("placement", {"op": "c", "after": {"id": "p1", "site": "S"}}, False)
    assert what == "placement p1 created"


def test_answers_link_records_to_their_ledger_rows() -> None:
    t0 = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
    events = [
        Event(t0, "netchange", "net change of 2026-03-04: placement p1 updated [site]", "n/0@1",
              {"id": "1:2026-03-04", "day": "2026-03-04"}),
        Event(t0, "ledger", "claimed", "1:2026-03-04:digest",
              {"notification_id": "1:2026-03-04:digest", "record_id": "1:2026-03-04", "kind": "digest",
               "status": "SENT", "sent_at": t0, "message_id": "<m@x>", "generation": 0}),
        Event(t0, "netchange", "net change of 2026-03-05: no changes", "n/0@2",
              {"id": "1:2026-03-05", "day": "2026-03-05"}),
    ]
    [first, second] = timeline.answers(events)
    assert first["notifications"][0]["status"] == "SENT" and first["notifications"][0]["sent_at"] == t0
    assert second["notifications"] == []


def test_connector_config_diff_and_prometheus_text() -> None:
    name, cfg = connector.file_spec()
    assert name == "tss-postgres" and not any(k.startswith("_") for k in cfg)
    assert connector.config_diff({**cfg, "name": name}, cfg) == {}
    assert connector.config_diff(None, {"a": "1"}) == {"a": (None, "1")}
    rep = connector.Report(connector.ConnectorState("tss-postgres", "RUNNING", "w", [
        connector.TaskState(0, "FAILED", "w")]), [connector.Slot("tss_debezium", False, 2 * connector.GIB)])
    text = connector.prometheus_text(rep, connector.GIB)
    assert 'tn_replication_slot_retained_wal_bytes{slot="tss_debezium"} 2147483648' in text
    assert 'tn_replication_slot_active{slot="tss_debezium"} 0' in text
    assert 'tn_connector_task_running{connector="tss-postgres",task="0"} 0' in text
    assert connector.human_bytes(connector.GIB) == "1.0 GiB"
