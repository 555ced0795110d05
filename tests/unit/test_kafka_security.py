"""The TN_KAFKA_* security settings, and what each Kafka library is given for them.

(That the configurations really connect — SASL_SSL with SCRAM, mutual TLS, a wrong password, an
untrusted CA — is proved against a real broker in tests/integration/test_kafka_sasl_ssl.py.)
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from services import kafka_security as ks
from services.cli import settings_error
from services.settings import AggregatorSettings, KafkaSettings, MailerSettings

SECRET = "pa55-w0rd-not-printed"


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a client certificate with its key (openssl), so the TLS contexts really load them."""
    d = tmp_path_factory.mktemp("pem")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=unit CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=client")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "client.pem", "-days", "2")
    return {"ca": d / "ca.pem", "cert": d / "client.pem", "key": d / "client.key"}


def sasl_ssl(pem: dict[str, Path], **over: object) -> KafkaSettings:
    return KafkaSettings(**{"kafka_bootstrap": "k1:9093,k2:9093", "kafka_security_protocol": "SASL_SSL",
                            "kafka_ssl_ca_file": pem["ca"], "kafka_sasl_username": "notify",
                            "kafka_sasl_password": SECRET, **over})


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    s = KafkaSettings(kafka_bootstrap="b:9092")
    assert ks.librdkafka_config(s) == {"bootstrap.servers": "b:9092", "security.protocol": "plaintext"}
    assert ks.aiokafka_kwargs(s) == {"bootstrap_servers": "b:9092", "security_protocol": "PLAINTEXT"}
    assert ks.faust_kwargs(s) == {"broker": "kafka://b:9092", "broker_credentials": None}


def test_sasl_ssl_for_librdkafka_verifies_the_host_name_by_default(pem: dict[str, Path]) -> None:
    conf = ks.librdkafka_config(sasl_ssl(pem), **{"group.id": "g"})
    assert conf == {"bootstrap.servers": "k1:9093,k2:9093", "security.protocol": "sasl_ssl",
                    "ssl.ca.location": str(pem["ca"]), "ssl.endpoint.identification.algorithm": "https",
                    "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "notify", "sasl.password": SECRET,
                    "group.id": "g"}
    off = ks.librdkafka_config(sasl_ssl(pem, kafka_ssl_check_hostname=False))
    assert off["ssl.endpoint.identification.algorithm"] == "none"


def test_mutual_tls_for_librdkafka_and_the_system_cas_without_a_ca_file(pem: dict[str, Path]) -> None:
    s = KafkaSettings(kafka_security_protocol="SSL", kafka_ssl_cert_file=pem["cert"], kafka_ssl_key_file=pem["key"])
    conf = ks.librdkafka_config(s)
    assert conf["security.protocol"] == "ssl" and conf["ssl.ca.location"] == "probe"
    assert conf["ssl.certificate.location"] == str(pem["cert"]) and conf["ssl.key.location"] == str(pem["key"])
    assert not any(k.startswith("sasl.") for k in conf)


def test_aiokafka_gets_a_verifying_context_and_the_scram_mechanism(pem: dict[str, Path]) -> None:
    kw = ks.aiokafka_kwargs(sasl_ssl(pem, kafka_sasl_mechanism="SCRAM-SHA-256"))
    ctx = kw.pop("ssl_context")
    assert kw == {"bootstrap_servers": "k1:9093,k2:9093", "security_protocol": "SASL_SSL",
                  "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "notify", "sasl_plain_password": SECRET}
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "unit CA"),),)]  # only the CA file
    relaxed = ks.aiokafka_kwargs(sasl_ssl(pem, kafka_ssl_check_hostname=False))["ssl_context"]
    assert not relaxed.check_hostname and relaxed.verify_mode is ssl.CERT_REQUIRED  # the chain is still checked


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_faust_hands_aiokafka_the_same_mechanism_user_password_and_context(pem: dict[str, Path],
                                                                            mechanism: str) -> None:
    """Through faust's own translation (what its consumers and producers are built with)."""
    kw = ks.faust_kwargs(sasl_ssl(pem, kafka_sasl_mechanism=mechanism))
    assert kw["broker"] == "kafka://k1:9093;kafka://k2:9093"
    creds = kw["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == mechanism
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("notify", SECRET)
    assert auth["ssl_context"].check_hostname
    assert SECRET not in repr(creds)


def test_faust_over_ssl_and_sasl_plaintext(pem: dict[str, Path]) -> None:
    tls = credentials_to_aiokafka_auth(ks.faust_credentials(KafkaSettings(kafka_security_protocol="SSL",
                                                                          kafka_ssl_ca_file=pem["ca"])))
    assert tls["security_protocol"] == "SSL" and isinstance(tls["ssl_context"], ssl.SSLContext)
    plain = credentials_to_aiokafka_auth(ks.faust_credentials(KafkaSettings(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u", kafka_sasl_password="p")))
    assert plain["security_protocol"] == "SASL_PLAINTEXT" and plain["ssl_context"] is None
    assert plain["sasl_mechanism"] == "SCRAM-SHA-512"


def test_the_aggregators_faust_app_is_built_with_the_credentials(pem: dict[str, Path], tmp_path: Path) -> None:
    from services.netchange.app import build_app

    settings = AggregatorSettings(**{**sasl_ssl(pem).model_dump(), "data_dir": tmp_path, "store": "memory://"})
    app = build_app(settings)
    assert str(app.conf.broker[0]) == "kafka://k1:9093"
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"


@pytest.mark.parametrize(("env", "expected"), [
    ({"TN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "set TN_KAFKA_SASL_USERNAME and TN_KAFKA_SASL_PASSWORD"),
    ({"TN_KAFKA_SASL_USERNAME": "u", "TN_KAFKA_SASL_PASSWORD": SECRET}, "TN_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
    ({"TN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TN_KAFKA_SASL_MECHANISM": "PLAIN",
      "TN_KAFKA_SASL_USERNAME": "u", "TN_KAFKA_SASL_PASSWORD": SECRET}, "in clear"),
    ({"TN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TN_KAFKA_SSL_CA_FILE": "{ca}", "TN_KAFKA_SASL_USERNAME": "u",
      "TN_KAFKA_SASL_PASSWORD": SECRET}, "TN_KAFKA_SSL_CA_FILE set but TN_KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT"),
    ({"TN_KAFKA_SECURITY_PROTOCOL": "SSL", "TN_KAFKA_SSL_CERT_FILE": "{cert}"}, "go together"),
    ({"TN_KAFKA_SECURITY_PROTOCOL": "TLS"}, "TN_KAFKA_SECURITY_PROTOCOL: Input should be"),
    ({"TN_KAFKA_SECURITY_PROTOCOL": "SSL", "TN_KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"},
     "TN_KAFKA_SSL_CA_FILE: Path does not point to a file"),
    ({"TN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TN_KAFKA_SASL_MECHANISM": "GSSAPI", "TN_KAFKA_SASL_USERNAME": "u",
      "TN_KAFKA_SASL_PASSWORD": SECRET}, "TN_KAFKA_SASL_MECHANISM: Input should be"),
])
def test_an_inconsistent_combination_is_refused_by_name_without_the_password(
        monkeypatch: pytest.MonkeyPatch, pem: dict[str, Path], env: dict[str, str], expected: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(**{k: str(p) for k, p in pem.items()}))
    with pytest.raises(ValidationError) as err:
        MailerSettings()
    text = settings_error(err.value)
    assert expected in text and SECRET not in text


def test_the_command_line_refuses_it_with_exit_2_and_no_traceback() -> None:
    env = {**os.environ, "TN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TN_KAFKA_SASL_PASSWORD": SECRET}
    exe = os.path.join(os.path.dirname(sys.executable), "trainee-notify")
    done = subprocess.run([exe, "topics", "apply"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "TN_KAFKA_SASL_USERNAME" in done.stderr and "Traceback" not in done.stderr
    assert SECRET not in done.stderr + done.stdout


def test_the_environment_of_a_child_process_round_trips(pem: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    s = sasl_ssl(pem, kafka_ssl_check_hostname=False, kafka_sasl_mechanism="SCRAM-SHA-256")
    for k, v in ks.environment(s).items():
        monkeypatch.setenv(k, v)
    again = KafkaSettings()
    assert ks.librdkafka_config(again) == ks.librdkafka_config(s)
    assert SECRET not in repr(again) and SECRET not in str(again.model_dump())


def test_preflight_and_check_do_nothing_for_plaintext() -> None:
    ks.check(KafkaSettings(kafka_bootstrap="127.0.0.1:1"))  # no connection attempted: nothing raised
