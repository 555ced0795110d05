"""Mailer throughput against Postfix's ``smtp-sink``, beside what the SMTP path alone can do.

One run, same sink, same message size, same number of connections (``--connections``):

* ``mailer``: the real mailer process over records pre-produced to a fresh Kafka topic: consume,
  decode, ledger claim/SENDING/SENT in PostgreSQL, compose + render, SMTP, status event, commit.
  Rate = emails / (last ``sent_at`` - first ``sent_at``) from the ledger (start-up excluded), and
  also end to end from process start.
* ``mailer_without_composition``: the same with composition replaced by a cached email (a
  diagnostic: what consuming, the ledger, SMTP and status events cost without rendering).
* ``aiosmtplib_pooled``: a bare aiosmtplib loop over ``--connections`` reused connections.
* ``aiosmtplib_new_connection``: a new connection (connect, EHLO, MAIL, RCPT, DATA, QUIT) per email,
  ``--connections`` at a time.
* ``smtp_source_reused`` / ``smtp_source_new``: Postfix ``smtp-source -s <connections>`` with and
  without ``-d`` (reuse the session).
* ``*_cpu_ms_per_email``: CPU (user + system) of the mailer process, or of the bare loop, per email
  while sending: the machine's other load moves throughput a lot and this little, so the ratio of
  the two (``cpu_ratio_aiosmtplib_pooled_to_mailer``) says what the code costs.
* ``--compare-tree DIR`` runs the mailer of another source tree too (an earlier commit:
  ``git archive <commit> | tar -x -C DIR``), and ``--rounds N`` repeats (compare tree, mailer, bare
  loop) N times, alternating; medians are reported and the ratios are taken within each round.

Needs the local stack (``trainee-notify stack up``) and ``/usr/sbin/smtp-sink`` (Debian ``postfix``).
Prints one JSON object. Never a test: figures depend on the machine.

    .venv/bin/python bench/mailer_bench.py --stack .stack --emails 2000 --connections 8 [--profile out.prof]
        [--compare-tree /tmp/before --rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiosmtplib
import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services import serde
from services.kafka_security import client_config
from services.notifier import compose

SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
SENDER = "no-reply@notify.example.nhs.uk"
DAY = "2026-11-24"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record(tid: str) -> dict[str, Any]:
    """A typical digest: one placement change (the golden minimal record's shape) with a name."""
    return {"id": f"{tid}:{DAY}", "trainee_id": tid, "day": DAY, "late": False,
            "changes": [{"entity": "placement", "id": f"pl-{tid}", "kind": "updated", "suppressed": None,
                         "fields": {"site": {"old": "Addenbrooke's Hospital", "new": "Royal Papworth Hospital"},
                                    "grade": {"old": "ST3", "new": "ST4"}}}],
            "recipient": {"email": f"dr.{tid}@example.nhs.uk", "title": "Dr", "forenames": "Ada",
                          "surname": "Okafor"},
            "previous_email": None, "suppressed": None}


def sample_message() -> bytes:
    composed = compose.compose_digest(record("bench-sample"), contacts=compose.Contacts.default(),
                                      message_id="<sample@notify.example.nhs.uk>", mail_from=SENDER)
    assert isinstance(composed, compose.ComposedEmail)
    return compose.to_mime(composed).as_bytes()


# ---------------------------------------------------------------------------------------------- sink
def start_sink(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([SINK, "-u", "nobody", f"127.0.0.1:{port}", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("smtp-sink did not start")


# ---------------------------------------------------------------------------------------------- baselines
async def bare_pooled(port: int, emails: int, connections: int, message: bytes) -> float:
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30) for _ in range(connections)]
    await asyncio.gather(*(c.connect() for c in clients))
    counts = [emails // connections + (1 if i < emails % connections else 0) for i in range(connections)]

    async def run(client: aiosmtplib.SMTP, n: int) -> None:
        for i in range(n):
            await client.sendmail(SENDER, [f"dr.{i}@example.nhs.uk"], message)

    t0 = time.perf_counter()
    await asyncio.gather(*(run(c, n) for c, n in zip(clients, counts, strict=True)))
    elapsed = time.perf_counter() - t0
    await asyncio.gather(*(c.quit() for c in clients))
    return emails / elapsed


async def bare_new_connection(port: int, emails: int, connections: int, message: bytes) -> float:
    slots = asyncio.Semaphore(connections)

    async def one(i: int) -> None:
        async with slots:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
            await client.connect()
            await client.sendmail(SENDER, [f"dr.{i}@example.nhs.uk"], message)
            await client.quit()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(emails)))
    return emails / (time.perf_counter() - t0)


def smtp_source(port: int, emails: int, connections: int, size: int, reuse: bool) -> float:
    args = [SOURCE, "-s", str(connections), "-m", str(emails), "-l", str(size)] + (["-d"] if reuse else [])
    t0 = time.perf_counter()
    subprocess.run([*args, f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return emails / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- the mailer
def produce(bootstrap: str, topic: str, tids: list[str]) -> None:
    admin = AdminClient(client_config(bootstrap))
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(30)
    producer = Producer({**client_config(bootstrap), "linger.ms": 20})
    for tid in tids:
        producer.produce(topic, serde.encode(serde.NETCHANGE, record(tid)), key=f"{tid}:{DAY}".encode())
        producer.poll(0)
    assert producer.flush(60) == 0


def ledger_progress(dsn: str, run: str) -> tuple[int, Any, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            row = conn.execute("SELECT count(*), min(sent_at), max(sent_at) FROM notify.ledger"
                               " WHERE status = 'SENT' AND trainee_id LIKE %s", (f"{run}-%",)).fetchone()
        except psycopg.errors.UndefinedTable:  # a fresh database: the mailer has not created it yet
            return 0, None, None
    assert row is not None
    return int(row[0]), row[1], row[2]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (Linux /proc): a figure the other load on the machine barely moves."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# the mailer with composition replaced by a cached email: what everything but rendering costs
STUB_RENDER = """
import sys
from services.notifier import render
cached = {}
real = render.render
def stub(ctx, kind, record, message_id, copy_of):
    if kind not in cached:
        cached[kind] = real(ctx, kind, record, message_id, copy_of)
    r = cached[kind]
    return render.Rendered(record["recipient"]["email"], message_id, r.data)
render.render = stub
sys.argv = ["trainee-notify", "mailer", "run"]
from services.cli import main
main()
"""


def whole_mailer(stack: dict[str, Any], port: int, emails: int, connections: int, profile: Path | None,
                 log_dir: Path, stub_render: bool = False, tree: Path = ROOT) -> dict[str, float]:
    run = f"bench{uuid.uuid4().hex[:8]}"
    topic = f"bench-netchange-{run}"
    produce(stack["bootstrap"], topic, [f"{run}-{i}" for i in range(emails)])
    env = {**os.environ, "TN_KAFKA_BOOTSTRAP": stack["bootstrap"], "TN_LEDGER_DSN": stack["pg_dsn"],
           "TN_NETCHANGE_TOPIC": topic, "TN_GROUP_ID": f"bench-{run}", "TN_INSTANCE_ID": f"bench-{run}",
           "TN_SMTP_PORT": str(port), "TN_SMTP_POOL_SIZE": str(connections), "TN_SMTP_RATE_PER_SECOND": "100000",
           "TN_SEND_IMMEDIATELY": "true", "TN_METRICS_PORT": str(free_port()), "TN_LOG_LEVEL": "WARNING",
           "TN_BATCH_SIZE": "500"}
    if tree != ROOT:  # another source tree (an earlier version): its services package comes first
        env["PYTHONPATH"] = str(tree)
    cmd = [sys.executable, "-m", "services.cli", "mailer", "run"]
    if stub_render:
        cmd = [sys.executable, "-c", STUB_RENDER]
        env["TN_RENDER_WORKERS"] = "0"
    elif profile is not None:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "services.cli", "mailer", "run"]
    log = open(log_dir / f"{run}.log", "wb")  # noqa: SIM115 - handed to the child as its stdout
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=tree, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cpu_from: tuple[int, float] | None = None  # (sent, CPU seconds) when the first emails were sent
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            sent, first, last = ledger_progress(stack["pg_dsn"], run)
            cpu = cpu_seconds(proc.pid) if proc.poll() is None else 0.0
            if sent >= emails:
                break
            if cpu_from is None and sent > 0:
                cpu_from = (sent, cpu)
            if proc.poll() is not None:
                raise SystemExit(f"the mailer exited ({proc.returncode}): see {log.name}")
            time.sleep(0.2)
        end_to_end = time.perf_counter() - t0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        log.close()
    span = (last - first).total_seconds()
    figures = {"mailer": (sent - 1) / span, "mailer_from_process_start": sent / end_to_end}
    if cpu_from is not None and sent > cpu_from[0]:
        figures["mailer_cpu_ms_per_email"] = (cpu - cpu_from[1]) / (sent - cpu_from[0]) * 1000
    return figures


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stack", type=Path, default=ROOT / ".stack", help="scratch dir of a running stack")
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the mailer process here")
    parser.add_argument("--no-stub", action="store_true", help="skip the run with composition stubbed out")
    parser.add_argument("--compare-tree", type=Path, metavar="DIR",
                        help="also run the mailer of this source tree (e.g. `git archive HEAD | tar -x -C DIR`), "
                        "alternating with this one, for a before/after within one run")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of (compare tree,) mailer, bare loop; medians reported")
    args = parser.parse_args()
    if not shutil.which(SINK) or not shutil.which(SOURCE):
        raise SystemExit("needs Postfix's smtp-sink and smtp-source (Debian package postfix)")
    stack = json.loads((args.stack / "stack.json").read_text())
    message = sample_message()
    port = free_port()
    sink = start_sink(port)
    figures: dict[str, Any] = {"emails": args.emails, "connections": args.connections, "message_bytes": len(message),
                               "cpus": os.cpu_count()}
    rounds: list[dict[str, float]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="mailer-bench-") as tmp:
            for _ in range(args.rounds):  # the variants alternate, so a change of load hits them alike
                one: dict[str, float] = {}
                if args.compare_tree is not None:
                    before = whole_mailer(stack, port, args.emails, args.connections, None, Path(tmp),
                                          tree=args.compare_tree.resolve())
                    one |= {k.replace("mailer", "mailer_compare_tree", 1): v for k, v in before.items()}
                one |= whole_mailer(stack, port, args.emails, args.connections, args.profile, Path(tmp))
                cpu0 = time.process_time()
                one["aiosmtplib_pooled"] = asyncio.run(bare_pooled(port, args.emails, args.connections, message))
                one["aiosmtplib_pooled_cpu_ms_per_email"] = (time.process_time() - cpu0) / args.emails * 1000
                rounds.append(one)
            if not args.no_stub:
                stubbed = whole_mailer(stack, port, args.emails, args.connections, None, Path(tmp), stub_render=True)
                figures |= {k.replace("mailer", "mailer_without_composition", 1): v for k, v in stubbed.items()}
        figures["aiosmtplib_new_connection"] = asyncio.run(
            bare_new_connection(port, args.emails, args.connections, message))
        figures["smtp_source_reused"] = smtp_source(port, args.emails, args.connections, len(message), reuse=True)
        figures["smtp_source_new"] = smtp_source(port, args.emails, args.connections, len(message), reuse=False)
    finally:
        os.killpg(sink.pid, signal.SIGTERM)
        sink.wait(10)
    for key in rounds[0]:  # the median of the rounds; each round's figure too when there are several
        runs = [r[key] for r in rounds]
        figures[key] = sorted(runs)[len(runs) // 2]
        if len(runs) > 1:
            figures[f"{key}_rounds"] = [round(v, 3 if "cpu_ms" in key else 1) for v in runs]
    ratios = [r["mailer"] / r["aiosmtplib_pooled"] for r in rounds]  # within a round
    figures = {k: round(v, 3 if "cpu_ms" in k else 1) if isinstance(v, float) else v for k, v in figures.items()}
    figures["ratio_mailer_to_aiosmtplib_pooled"] = round(sorted(ratios)[len(ratios) // 2], 3)
    figures["cpu_ratio_aiosmtplib_pooled_to_mailer"] = round(
        figures["aiosmtplib_pooled_cpu_ms_per_email"] / figures["mailer_cpu_ms_per_email"], 3)
    figures["ratio_mailer_to_smtp_source_reused"] = round(figures["mailer"] / figures["smtp_source_reused"], 3)
    if args.compare_tree is not None:
        before_ratios = sorted(r["mailer_compare_tree"] / r["aiosmtplib_pooled"] for r in rounds)
        speedups = sorted(r["mailer"] / r["mailer_compare_tree"] for r in rounds)
        figures["ratio_compare_tree_to_aiosmtplib_pooled"] = round(before_ratios[len(rounds) // 2], 3)
        figures["speedup_over_compare_tree"] = round(speedups[len(rounds) // 2], 2)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
