"""The demo's Form R part: the report behind a stand-in for the sign-in proxy, the first reminder
pass waited for, and the checks of the scripted day (a trainee out of "at risk", a reminder)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from services.demo import runner
from services.demo.script import DayScript
from services.devstack.errors import StackError


def start_report_proxy(scratch: Path, formr: runner.ServiceProc) -> runner.ServiceProc:
    """The loopback stand-in for oauth2-proxy in front of the report, entitled to every demo office."""
    from services.demo import refdata as ref

    groups = ",".join(o.name for o in ref.LOCAL_OFFICES)
    proxy = runner.start_proxy(scratch, formr.url, groups)
    deadline = time.monotonic() + 30
    while not runner.http_ok(proxy.url + "/healthz"):
        if time.monotonic() > deadline:
            raise StackError(f"the report's demo sign-in proxy did not start (see {proxy.log_file})")
        time.sleep(0.5)
    return proxy


def first_reminder_pass(formr: runner.ServiceProc, console: Console, timeout: float = 180) -> None:
    """Wait for the Form R service's first reminder pass: it sends what is already due for the seeded
    population (the catch-up a first deployment makes), before the day starts and the inbox is cleared."""
    with console.status("Waiting for the Form R service's first reminder pass..."):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in Path(formr.log_file).read_text(errors="replace").splitlines():
                if '"formr.reminders.pass"' in line:
                    try:
                        sent = json.loads(line).get("sent")
                    except ValueError:
                        sent = "?"
                    console.print(f"[green]Form R reminders[/]: the first pass sent {sent} already due "
                                  "(cleared from the inbox before the day starts)")
                    return
            time.sleep(1.0)
    raise StackError(f"the Form R service made no reminder pass in {timeout:.0f} s (see {formr.log_file})")


REMINDER_SUBJECT = "Submit your Form R"


def is_reminder(message: dict[str, Any]) -> bool:
    return str(message.get("subject") or "").startswith(REMINDER_SUBJECT)


def reminder_mismatches(script: DayScript, counts: dict[str, int]) -> list[str]:
    """Trainees whose Form R reminders received (``counts``) differ from what the script expects."""
    want = {t: script.reminders.get(t, 0) for t in script.addresses}
    return [t for t, n in want.items() if counts.get(t, 0) != n]


def still_at_risk(script: DayScript, proxy: runner.ServiceProc, timeout: float = 60) -> list[str]:
    """The trainees the script takes out of "at risk" that the report (read through the demo's
    sign-in proxy, as a programme manager would) still shows at risk after ``timeout``."""
    deadline = time.monotonic() + timeout
    left = list(script.leaves_at_risk)
    while left and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(proxy.url + "/report.json", timeout=10) as resp:  # noqa: S310  the demo proxy's own http:// URL
                rows = json.loads(resp.read())["rows"]
        except (OSError, ValueError, KeyError):
            rows = []
        seen = {r["trainee_id"]: r["at_risk"] for r in rows}
        left = [t for t in script.leaves_at_risk if seen.get(t) is not False]
        if left:
            time.sleep(1.0)
    return left


def table(script: DayScript, counts: dict[str, int], left: list[str]) -> Table:
    table = Table(title="Form R (ids only)")
    for col in ("trainee", "step", "expected", "seen", ""):
        table.add_column(col)
    for tid in script.leaves_at_risk:
        ok = tid not in left
        table.add_row(tid, "Form R submitted", "at risk -> not at risk in the report",
                      "not at risk" if ok else "still at risk", "[green]ok[/]" if ok else "[red]differs[/]")
    for tid, want in script.reminders.items():
        got = counts.get(tid, 0)
        table.add_row(tid, "ARCP booked", f"{want} reminder email", f"{got} received",
                      "[green]ok[/]" if got == want else "[red]differs[/]")
    return table
