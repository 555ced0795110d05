"""Capture ``trainee-notify status`` and ``trainee-notify trainee ID`` from a running demo into docs/.

    trainee-notify demo run --scratch DIR          # the demo, left running
    python -m scripts.ops_captures --scratch DIR   # picks a trainee whose digest was sent, or --trainee ID
    trainee-notify demo stop --scratch DIR

Both commands run as operators run them (the console script, ``--json``, against the demo's stack and
services); their JSON is kept (docs/ops-status.json, docs/ops-trainee.json, personal fields masked as the
commands mask them) and rendered with the commands' own ``render`` into the text and SVG captures.
tests/unit/test_ops_captures.py renders the JSON again with today's code and compares it with the text,
so a change to what the commands print fails until the captures are made again.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
WIDTH = 150


def recording_console() -> Console:
    return Console(width=WIDTH, record=True, file=io.StringIO(), color_system="truecolor", force_terminal=True)


def render_status(data: dict[str, Any], out: Console) -> None:
    from services.opsctl import status

    status.render(status.from_json(data), out)


def render_trainee(data: dict[str, Any], out: Console) -> None:
    from services.opsctl import timeline

    timeline.render(timeline.from_json(data), out)


def rendered_text(kind: str, data: dict[str, Any]) -> str:
    out = recording_console()
    (render_status if kind == "status" else render_trainee)(data, out)
    return out.export_text()


def _env(scratch: Path) -> dict[str, str]:
    from services.demo import runner
    from services.devstack import stack

    info = stack._load(scratch.resolve())
    if info is None:
        raise SystemExit(f"no stack recorded in {scratch}: run `trainee-notify demo run --scratch {scratch}` first")
    services = runner.running(scratch.resolve())
    env = {**os.environ, **info.env(), "TN_STACK_SCRATCH": str(scratch.resolve()), "COLUMNS": str(WIDTH),
           "TN_DAY_SECONDS": str(runner.DAY_SECONDS), "TN_GRACE_SECONDS": str(runner.GRACE_SECONDS),
           "TN_SEND_IMMEDIATELY": "true"}
    if "aggregator" in services:
        env["TN_AGGREGATOR_URL"] = services["aggregator"].url
    return env


def _json(env: dict[str, str], *args: str) -> dict[str, Any]:
    bin_ = Path(sys.executable).parent / "trainee-notify"
    done = subprocess.run([str(bin_), *args, "--json"],  # noqa: S603  our own command, fixed arguments env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"trainee-notify {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-1000:]}")
    return dict(json.loads(done.stdout))


def _a_trainee_told(env: dict[str, str]) -> str:
    """A trainee whose placement changed today and whose digest was sent (the runbook's example)."""
    import psycopg

    with psycopg.connect(env["TN_LEDGER_DSN"], autocommit=True) as conn:
        row = conn.execute("SELECT trainee_id FROM notify.ledger WHERE status = 'SENT' AND kind = 'digest'"
                           " ORDER BY sent_at DESC LIMIT 1").fetchone()
    if row is None:
        raise SystemExit("no digest SENT yet in the demo's ledger")
    return str(row[0])


SCRATCH = typer.Option(..., help="the demo's scratch dir")
TRAINEE = typer.Option(None, help="the trainee to capture (default: one whose digest was sent)")
OUT = typer.Option(DOCS, "--out", help="where the captures go")


def main(scratch: Path = SCRATCH, trainee: str | None = TRAINEE, out_dir: Path = OUT) -> None:
    env = _env(scratch)
    tid = trainee or _a_trainee_told(env)
    for kind, args in (("status", ["status"]), ("trainee", ["trainee", tid])):
        data = _json(env, *args)
        (out_dir / f"ops-{kind}.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        out = recording_console()
        (render_status if kind == "status" else render_trainee)(data, out)
        title = f"trainee-notify {' '.join(args)}"
        (out_dir / f"ops-{kind}.svg").write_text(out.export_svg(title=title, clear=False))
        (out_dir / f"ops-{kind}.txt").write_text(out.export_text())
        typer.echo(f"{out_dir / f'ops-{kind}'}.{{json,txt,svg}}: {title}")


if __name__ == "__main__":
    typer.run(main)
