"""Checks for what the local stack needs on the machine: java, mvn and the PostgreSQL server binaries.

Each missing piece stops with one line saying how to install it. The PostgreSQL server is installed
automatically when we run as root (CI, a fresh dev box); otherwise the command to run is printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import structlog

from services.devstack.errors import StackError

log = structlog.get_logger(__name__)

PG_INSTALL = "apt-get update && apt-get install -y postgresql"


def is_root() -> bool:
    return os.geteuid() == 0


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError("java not found: install it with `apt-get install -y openjdk-17-jre-headless`")
    return java


def require_mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("mvn not found (needed once, to fetch the Kafka and Debezium jars): "
                         "install it with `apt-get install -y maven`")
    return mvn


def _version_key(path: Path) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in path.parent.parent.name.split("."))
    except ValueError:
        return (0,)


def find_pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and pg_ctl, else the one on PATH."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key, reverse=True)
    for initdb in candidates:
        if (initdb.parent / "pg_ctl").exists() and (initdb.parent / "postgres").exists():
            return initdb.parent
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    return None


def _install_postgres() -> None:
    log.info("installing the PostgreSQL server", command=PG_INSTALL)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)  # noqa: S603  a fixed apt-get argv, no shell
        if done.returncode != 0:
            raise StackError(f"`{' '.join(argv)}` failed (exit {done.returncode}); "
                             f"run `{PG_INSTALL}` by hand")


def require_pg_bindir() -> Path:
    bindir = find_pg_bindir()
    if bindir is not None:
        return bindir
    if not is_root():
        raise StackError("PostgreSQL server binaries (initdb, pg_ctl) not found: "
                         f"run `sudo sh -c '{PG_INSTALL}'`")
    _install_postgres()
    bindir = find_pg_bindir()
    if bindir is None:
        raise StackError(f"PostgreSQL server binaries still not found after `{PG_INSTALL}`")
    return bindir


def require_postgres_user() -> None:
    """As root, initdb must run as ``postgres`` (it refuses root); that user comes with the Debian package."""
    if not is_root():
        return
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(f"running as root but there is no `postgres` user: run `{PG_INSTALL}`") from None
