"""A throw-away PostgreSQL server for the stack: initdb in the scratch dir, logical decoding, loopback only.

initdb refuses to run as root, so as root every server command runs as the ``postgres`` user
(``runuser -u postgres --``) in a data directory owned by that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg
import structlog

from services.devstack.errors import StackError
from services.devstack.prereqs import is_root, require_pg_bindir, require_postgres_user
from services.devstack.proc import LOOPBACK, port_open, run

log = structlog.get_logger(__name__)

DATABASE = "tss"
USER = "postgres"
SCHEMA_SQL = Path(__file__).resolve().parents[2] / "deploy" / "local" / "schema.sql"

_SERVER_SETTINGS = """
# --- trainee-notify devstack ---
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
max_connections = 50
shared_buffers = 64MB
# a throw-away dev/test database: durability is not wanted, speed is
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
"""

_HBA = """# trainee-notify devstack: trust on loopback and the local socket only
local   all          all                    trust
local   replication  all                    trust
host    all          all    127.0.0.1/32    trust
host    replication  all    127.0.0.1/32    trust
"""


@dataclass(frozen=True)
class PgPaths:
    root: Path  # <scratch>/pg, owned by postgres

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"


def dsn(port: int, dbname: str = DATABASE) -> str:
    """A psycopg conninfo string for the stack's database."""
    return f"host={LOOPBACK} port={port} user={USER} dbname={dbname}"


def _as_pg_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", *argv] if is_root() else argv


def _chown_to_pg(path: Path) -> None:
    if is_root():
        entry = pwd.getpwnam(USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _check_traversable(path: Path) -> None:
    """As root, the postgres user must be able to reach the scratch dir (a 0700 parent would stop it)."""
    if not is_root():
        return
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if parent.stat().st_uid != pwd.getpwnam(USER).pw_uid and not mode & 0o001:
            raise StackError(f"the postgres user cannot enter {parent} (mode {oct(mode & 0o777)}): "
                             f"use a scratch dir under a world-searchable path or `chmod o+x {parent}`")


def init(paths: PgPaths, port: int) -> None:
    """initdb a fresh cluster and write its settings (a previous data dir is removed)."""
    require_postgres_user()
    bindir = require_pg_bindir()
    shutil.rmtree(paths.root, ignore_errors=True)
    paths.root.mkdir(parents=True)
    paths.root.chmod(0o700)
    _chown_to_pg(paths.root)
    _check_traversable(paths.root)
    run(_as_pg_user([str(bindir / "initdb"), "-D", str(paths.data), "-U", USER, "--auth=trust",
                     "--encoding=UTF8", "--locale=C", "--no-sync"]),
        what="initdb", timeout=120)
    conf = _SERVER_SETTINGS.format(port=port, socket_dir=paths.root)
    with open(paths.data / "postgresql.conf", "a") as fh:
        fh.write(conf)
    (paths.data / "pg_hba.conf").write_text(_HBA)
    _chown_to_pg(paths.data / "pg_hba.conf")


def start(paths: PgPaths, port: int) -> None:
    if port_open(port):
        raise StackError(f"port {port} is already taken; run `trainee-notify stack down` and retry")
    bindir = require_pg_bindir()
    run(_as_pg_user([str(bindir / "pg_ctl"), "-D", str(paths.data), "-l", str(paths.log_file),
                     "-w", "-t", "60", "start"]),
        what=f"pg_ctl start (log: {paths.log_file})", timeout=90)


def stop(paths: PgPaths) -> None:
    """Fast shutdown; a cluster that is not running (or not there) is fine."""
    if not (paths.data / "postmaster.pid").exists():
        return
    bindir = require_pg_bindir()
    run(_as_pg_user([str(bindir / "pg_ctl"), "-D", str(paths.data), "-m", "fast", "-w", "-t", "60", "stop"]),
        what="pg_ctl stop", timeout=90)
    log.info("process stopped", component="postgres")


def running(paths: PgPaths, port: int) -> bool:
    return (paths.data / "postmaster.pid").exists() and port_open(port)


def create_database_and_schema(port: int) -> None:
    """CREATE DATABASE tss (if missing) and apply deploy/local/schema.sql (idempotent)."""
    with psycopg.connect(dsn(port, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    with psycopg.connect(dsn(port), autocommit=True) as conn:
        conn.execute(SCHEMA_SQL.read_text().encode())  # a trusted file, no parameters
    log.info("schema applied", database=DATABASE)
