"""docker-compose.yml and Dockerfile keep the contract: pinned images, the real TN_* settings, the topology."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from services import settings as settings_module

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
LOCAL_IMAGE = "trainee-notify:dev"  # built from the Dockerfile by `docker compose build`


def settings_env_names() -> set[str]:
    """``TN_<FIELD>`` for every field of every settings class in services/settings.py."""
    names: set[str] = set()
    for obj in vars(settings_module).values():
        if isinstance(obj, type) and issubclass(obj, BaseSettings):
            prefix = obj.model_config.get("env_prefix", "")
            names |= {f"{prefix}{field}".upper() for field in obj.model_fields}
    return names


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_settings_names_are_introspected() -> None:
    names = settings_env_names()
    assert {"TN_KAFKA_BOOTSTRAP", "TN_SMTP_HOST", "TN_SMTP_PORT", "TN_DAY_SECONDS"} <= names


def test_topology(services: dict[str, dict[str, Any]]) -> None:
    assert {"postgres", "kafka", "connect", "mailpit", "topics", "connector-register", "aggregator",
            "mailer"} <= set(services)


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        image = svc.get("image")
        assert image or svc.get("build"), f"{name}: neither image nor build"
        if image is None:
            continue
        assert "@sha256:" in image or re.fullmatch(r"[\w.\-/]+:[\w.\-]+", image), f"{name}: {image} has no tag"
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest", f"{name}: {image}"
        if image != LOCAL_IMAGE:
            assert re.search(r"\d", tag), f"{name}: {image} is not pinned to a version"


def test_image_versions(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]["image"]
    assert kafka.startswith("apache/kafka:")
    major, minor = (int(x) for x in kafka.split(":")[1].split(".")[:2])
    assert (major, minor) >= (4, 1)
    assert re.fullmatch(r"quay\.io/debezium/connect:3\.6\.\d+\.Final", services["connect"]["image"])
    assert re.fullmatch(r"postgres:15(\.\d+)?", services["postgres"]["image"])
    assert re.fullmatch(r"axllent/mailpit:v\d+\.\d+\.\d+", services["mailpit"]["image"])


def test_tn_variables_are_settings_fields(services: dict[str, dict[str, Any]]) -> None:
    known = settings_env_names()
    for name, svc in services.items():
        unknown = {k for k in env_of(svc) if k.startswith("TN_")} - known
        assert not unknown, f"{name} sets variables no settings class has: {sorted(unknown)}"


@pytest.mark.parametrize(("service", "required"), [
    ("aggregator", {"TN_KAFKA_BOOTSTRAP", "TN_DATA_DIR", "TN_WEB_HOST"}),
    ("mailer", {"TN_KAFKA_BOOTSTRAP", "TN_SMTP_HOST", "TN_SMTP_PORT", "TN_METRICS_HOST", "TN_LEDGER_DSN"}),
    ("topics", {"TN_KAFKA_BOOTSTRAP"}),
])
def test_settings_without_a_safe_default_are_set(services: dict[str, dict[str, Any]], service: str,
                                                 required: set[str]) -> None:
    env = env_of(services[service])
    assert required <= set(env), f"{service} misses {sorted(required - set(env))}"
    assert "127.0.0.1" not in env["TN_KAFKA_BOOTSTRAP"]


def test_one_image_the_command_picks_the_service(services: dict[str, dict[str, Any]]) -> None:
    assert services["aggregator"]["command"] == ["aggregator", "run"]
    assert services["mailer"]["command"] == ["mailer", "run"]
    assert services["topics"]["command"] == ["topics", "apply"]
    for name in ("aggregator", "mailer", "topics"):
        assert services[name]["build"] == "." and services[name]["image"] == LOCAL_IMAGE


def test_postgres_is_ready_for_debezium(services: dict[str, dict[str, Any]]) -> None:
    pg = services["postgres"]
    assert "wal_level=logical" in str(pg["command"])
    mounts = [str(v) for v in pg["volumes"]]
    assert any(m.startswith("./deploy/local/schema.sql:/docker-entrypoint-initdb.d/") for m in mounts)
    assert (ROOT / "deploy/local/schema.sql").exists()


def test_connector_json_is_registered(services: dict[str, dict[str, Any]]) -> None:
    reg = services["connector-register"]
    assert any(str(v).startswith("./deploy/connect/tss-postgres.json:") for v in reg["volumes"])
    assert "PUT" in str(reg["command"]) and "/config" in str(reg["command"])
    assert (ROOT / "deploy/connect/tss-postgres.json").exists()


def test_no_plain_secret_in_the_connector_config(services: dict[str, dict[str, Any]]) -> None:
    assert "${env:TSS_DB_PASSWORD}" in str(services["connector-register"]["command"]).replace("$$", "$")


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    # every stage on the same base, pinned by tag and by digest (the digest is what is pulled)
    assert froms and all(re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", f) for f in froms), froms
    assert len(set(froms)) == 1, froms
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r'^ENTRYPOINT \["trainee-notify"\]', text, re.MULTILINE)
    assert (ROOT / ".dockerignore").exists()
