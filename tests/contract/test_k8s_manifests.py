"""deploy/k8s: every manifest parses; pods run non-root, read-only, without capabilities, with probes
and resources; settings are real TN_* names; the SMTP password comes from a Secret."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.contract.test_compose_file import settings_env_names

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
WORKLOADS = {"Deployment", "StatefulSet"}
LOG_VARIABLES = {"TN_LOG_FORMAT", "TN_LOG_LEVEL"}  # read by services/logs.py, not a settings class


def documents() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), f"{path}: a document is not a mapping"
            out.append((path, doc))
    return out


def workloads() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in documents() if d.get("kind") in WORKLOADS]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def test_layout() -> None:
    assert (K8S / "base" / "kustomization.yaml").exists()
    for overlay in ("dev", "prod"):
        kust = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        assert "../../base" in kust["resources"]
        for res in kust["resources"]:
            assert (K8S / "overlays" / overlay / res).exists(), res


def test_base_resources_exist() -> None:
    kust = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (K8S / "base" / res).exists(), res


def test_aggregator_is_a_statefulset_with_a_data_volume_and_mailer_a_deployment() -> None:
    kinds = {d["metadata"]["name"]: d for _, d in workloads()}
    assert kinds["aggregator"]["kind"] == "StatefulSet"
    assert kinds["aggregator"]["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert kinds["mailer"]["kind"] == "Deployment"
    assert containers(kinds["aggregator"])[0]["args"] == ["aggregator", "run"]
    assert containers(kinds["mailer"])[0]["args"] == ["mailer", "run"]


@pytest.mark.parametrize(("path", "doc"), workloads(), ids=lambda v: getattr(v, "name", None) or "")
def test_pod_security(path: Path, doc: dict[str, Any]) -> None:
    pod = doc["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"].get("runAsUser", 1) != 0
    assert pod.get("automountServiceAccountToken") is False
    for c in containers(doc):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert not sc["capabilities"].get("add"), c["name"]
        assert sc.get("privileged") is not True, c["name"]


@pytest.mark.parametrize(("path", "doc"), workloads(), ids=lambda v: getattr(v, "name", None) or "")
def test_probes_and_resources(path: Path, doc: dict[str, Any]) -> None:
    for c in doc["spec"]["template"]["spec"]["containers"]:
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        assert c["resources"]["limits"]["memory"]


def test_settings_are_real_names() -> None:
    known = settings_env_names() | LOG_VARIABLES
    for path, doc in documents():
        if doc.get("kind") == "ConfigMap":
            unknown = set(doc["data"]) - known
            assert not unknown, f"{path}: {sorted(unknown)}"
        for c in containers(doc) if doc.get("kind") in WORKLOADS else []:
            unknown = {e["name"] for e in c.get("env", [])} - known
            assert not unknown, f"{path}: {sorted(unknown)}"
    for overlay in ("dev", "prod"):
        kust = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        for gen in kust.get("configMapGenerator", []):
            names = {lit.split("=", 1)[0] for lit in gen.get("literals", [])}
            assert not names - known, f"{overlay}: {sorted(names - known)}"


def test_smtp_password_from_a_secret_never_inline() -> None:
    for path, doc in documents():
        if doc.get("kind") == "ConfigMap":
            assert not {"TN_SMTP_PASSWORD", "TN_LEDGER_DSN"} & set(doc["data"]), path
    mailer = next(d for _, d in workloads() if d["metadata"]["name"] == "mailer")
    env = {e["name"]: e for e in containers(mailer)[0]["env"]}
    for name in ("TN_SMTP_PASSWORD", "TN_LEDGER_DSN"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] and ref["key"]
        assert "value" not in env[name]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlays_render(overlay: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(out) if d}
    assert {"StatefulSet", "Deployment", "ConfigMap", "Service"} <= kinds


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_prod_talks_to_kafka_over_sasl_ssl_with_the_password_from_a_secret_and_the_ca_mounted() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / "prod")], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    [settings] = [d["data"] for d in docs if d["kind"] == "ConfigMap" and "TN_KAFKA_BOOTSTRAP" in d["data"]]
    assert settings["TN_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and settings["TN_KAFKA_SASL_USERNAME"]
    assert "TN_KAFKA_SASL_PASSWORD" not in settings and "TN_KAFKA_SSL_CHECK_HOSTNAME" not in settings  # default: on
    ca = Path(settings["TN_KAFKA_SSL_CA_FILE"])
    for doc in (d for d in docs if d["kind"] in WORKLOADS):
        [c] = doc["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["TN_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password", doc["metadata"]
        assert "value" not in env["TN_KAFKA_SASL_PASSWORD"]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in doc["spec"]["template"]["spec"]["volumes"]}
        [name] = [n for n, path in mounts.items() if Path(path) == ca.parent]
        assert volumes[name]["configMap"]["items"] == [{"key": ca.name, "path": ca.name}]


def test_the_connect_worker_file_secures_every_client_of_the_worker_without_a_secret() -> None:
    """deploy/connect/worker-sasl-ssl.properties: the worker and its producer., consumer. and admin.
    clients all use SASL_SSL with host name verification; the password only through the config provider."""
    path = K8S.parent / "connect" / "worker-sasl-ssl.properties"
    props = dict(line.split("=", 1) for line in path.read_text().splitlines()
                 if line.strip() and not line.startswith("#"))
    for prefix in ("", "producer.", "consumer.", "admin."):
        assert props[f"{prefix}security.protocol"] == "SASL_SSL", prefix
        assert props[f"{prefix}sasl.mechanism"] == "SCRAM-SHA-512", prefix
        assert props[f"{prefix}ssl.endpoint.identification.algorithm"] == "https", prefix
        assert props[f"{prefix}ssl.truststore.location"], prefix
        jaas = props[f"{prefix}sasl.jaas.config"]
        assert 'password="${file:' in jaas, prefix
    assert props["config.providers.file.class"].endswith("FileConfigProvider")
