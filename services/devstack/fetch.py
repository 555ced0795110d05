"""Resolves the Kafka and Debezium jars with Maven (deploy/local/pom.xml) into a per-user cache.

Layout under ``${XDG_CACHE_HOME:-~/.cache}/trainee-notify/``::

    kafka-4.3.1/libs/*.jar                                  broker, tools, Connect runtime, Log4j2
    debezium-3.6.1/plugins/debezium-connector-postgres/     the connector's plugin archive, unpacked

Each directory is complete when its ``.complete`` marker holds the SHA-256 of the pom that made it, so
a changed pom refetches and a warm cache costs nothing. A file lock serialises concurrent fetches.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from services.devstack.errors import StackError
from services.devstack.prereqs import require_mvn
from services.devstack.proc import run

log = structlog.get_logger(__name__)

KAFKA_VERSION = "4.3.1"
DEBEZIUM_VERSION = "3.6.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "deploy" / "local" / "pom.xml"
LOG4J2_CONFIG = REPO_ROOT / "deploy" / "local" / "log4j2.properties"
MARKER = ".complete"


@dataclass(frozen=True)
class Jars:
    kafka_libs: Path  # every jar the broker, StorageTool and ConnectDistributed need
    plugin_path: Path  # Connect's plugin.path: holds debezium-connector-postgres/
    fetched: bool  # False when both came from the cache

    @property
    def classpath(self) -> str:
        return f"{self.kafka_libs}/*"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trainee-notify"


def _pom_digest() -> str:
    if not POM.exists():
        raise StackError(f"{POM} is missing: run from a checkout of the repository")
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def _complete(path: Path, digest: str) -> bool:
    marker = path / MARKER
    return marker.exists() and marker.read_text().strip() == digest


def _resolve(kafka_libs: Path, plugin_path: Path, digest: str) -> None:
    """Run Maven into temporary siblings, then swap them in, so a half-done fetch is never used."""
    mvn = require_mvn()
    tmp_libs = kafka_libs.with_name(kafka_libs.name + ".tmp")
    tmp_plugins = plugin_path.with_name(plugin_path.name + ".tmp")
    for tmp in (tmp_libs, tmp_plugins):
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
    run([mvn, "-q", "-B", "-f", str(POM),
         "dependency:copy-dependencies@kafka-libs", "dependency:unpack@debezium-plugin",
         f"-Dtn.kafka.libs={tmp_libs}", f"-Dtn.plugins={tmp_plugins}"],
        what="mvn (fetching the Kafka and Debezium jars)", timeout=900)
    shutil.rmtree(tmp_plugins / ".markers", ignore_errors=True)
    _check_layout(tmp_libs, tmp_plugins)
    for tmp, final in ((tmp_libs, kafka_libs), (tmp_plugins, plugin_path)):
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        (final / MARKER).write_text(digest + "\n")


def _check_layout(libs: Path, plugins: Path) -> None:
    bindings = [p.name for p in libs.glob("*.jar")
                if p.name.startswith(("slf4j-reload4j", "slf4j-log4j12", "slf4j-simple", "logback-classic"))]
    if bindings:
        raise StackError(f"more than one SLF4J binding resolved: {', '.join(bindings)}; "
                         "fix deploy/local/pom.xml")
    if not list(libs.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise StackError(f"kafka_2.13-{KAFKA_VERSION}.jar missing after mvn; check deploy/local/pom.xml")
    if not list(plugins.glob("debezium-connector-postgres/debezium-connector-postgres-*.jar")):
        raise StackError("the Debezium PostgreSQL plugin did not unpack; check deploy/local/pom.xml")


def ensure_jars() -> Jars:
    """The jar directories, fetched with Maven the first time (about a minute) and cached after."""
    root = cache_dir()
    kafka_libs = root / f"kafka-{KAFKA_VERSION}" / "libs"
    plugin_path = root / f"debezium-{DEBEZIUM_VERSION}" / "plugins"
    digest = _pom_digest()
    if _complete(kafka_libs, digest) and _complete(plugin_path, digest):
        return Jars(kafka_libs, plugin_path, fetched=False)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(kafka_libs, digest) and _complete(plugin_path, digest):
            return Jars(kafka_libs, plugin_path, fetched=False)
        require_mvn()
        started = time.monotonic()
        log.info("fetching jars with maven", cache=str(root))
        _resolve(kafka_libs, plugin_path, digest)
        log.info("jars fetched", seconds=round(time.monotonic() - started, 1))
    return Jars(kafka_libs, plugin_path, fetched=True)
