"""Kafka TLS and SASL for every client, from one :class:`~services.settings.KafkaSettings`.

Three libraries talk to Kafka here and each spells security its own way; this module is the one
place that translates the ``TN_KAFKA_*`` settings for them:

* :func:`librdkafka_config` — confluent-kafka (admin, operator commands, Form R, tests, benchmarks);
* :func:`aiokafka_kwargs` — the mailer's aiokafka producer and consumer;
* :func:`faust_kwargs` — the aggregator's ``faust.App`` (``broker`` and ``broker_credentials``).

Hostname verification is on unless ``TN_KAFKA_SSL_CHECK_HOSTNAME=false``. With a CA file only that CA
is trusted; without one, the system's.

A wrong password or an untrusted certificate must stop a client with one clear line, not a retry
loop or a timeout: every library hides the reason (aiokafka logs it and says "Unable to bootstrap",
librdkafka reports it to a callback and times out). :func:`preflight` (and :func:`check`, its
blocking form) opens one authenticated connection with aiokafka's own connection code before a
client starts and turns a refused login or a failed certificate check into a
:class:`KafkaSecurityFault` naming the broker and the settings to look at (never their values).
Other failures (the broker is not up yet) are raised as they are, for the caller's retries.
ADR 0007 says why.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any

from services.waiting import Fatal, until_up

if TYPE_CHECKING:
    from services.settings import KafkaSettings


class KafkaSecurityFault(Fatal):
    """The broker refused this client's credentials, or this client refused the broker's certificate:
    a configuration fault that no retry mends. ``str()`` is one line, without secrets."""


def _protocol(settings: KafkaSettings) -> str:
    return str(settings.kafka_security_protocol.value)


def uses_tls(settings: KafkaSettings) -> bool:
    return _protocol(settings) in ("SSL", "SASL_SSL")


def uses_sasl(settings: KafkaSettings) -> bool:
    return _protocol(settings) in ("SASL_PLAINTEXT", "SASL_SSL")


def _password(settings: KafkaSettings) -> str | None:
    return settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None


# ------------------------------------------------------------------------------------ confluent-kafka
def librdkafka_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """A confluent-kafka client configuration: ``bootstrap.servers``, the security properties, then
    ``overrides`` (keys with dots are awkward as keyword arguments: pass them as ``**{"a.b": v}``)."""
    conf: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap,
                            "security.protocol": _protocol(settings).lower()}
    if uses_tls(settings):
        conf["ssl.ca.location"] = str(settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file else "probe"
        conf["ssl.endpoint.identification.algorithm"] = "https" if settings.kafka_ssl_check_hostname else "none"
        if settings.kafka_ssl_cert_file and settings.kafka_ssl_key_file:
            conf["ssl.certificate.location"] = str(settings.kafka_ssl_cert_file)
            conf["ssl.key.location"] = str(settings.kafka_ssl_key_file)
        if settings.kafka_ssl_key_password is not None:
            conf["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
    if uses_sasl(settings):
        conf["sasl.mechanisms"] = settings.kafka_sasl_mechanism.value
        conf["sasl.username"] = settings.kafka_sasl_username
        conf["sasl.password"] = _password(settings)
    conf.update(overrides)
    return conf


def client_config(bootstrap: str | None = None, **overrides: Any) -> dict[str, Any]:
    """:func:`librdkafka_config` of the ``TN_KAFKA_*`` environment, ``bootstrap`` replacing
    ``TN_KAFKA_BOOTSTRAP`` when given: for benchmarks, the demo and test helpers that take a
    bootstrap string."""
    from services.settings import KafkaSettings

    settings = KafkaSettings(kafka_bootstrap=bootstrap) if bootstrap else KafkaSettings()
    return librdkafka_config(settings, **overrides)


# ------------------------------------------------------------------------------------------- aiokafka
def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """The client's TLS context (aiokafka's helper: the CA file or the system's CAs, the client
    certificate for mutual TLS); hostname verification as configured, the certificate always checked."""
    from aiokafka.helpers import create_ssl_context

    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_ca_file, certfile=settings.kafka_ssl_cert_file,
        keyfile=settings.kafka_ssl_key_file,
        password=settings.kafka_ssl_key_password.get_secret_value() if settings.kafka_ssl_key_password else None)
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def aiokafka_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``/``AIOKafkaConsumer``: ``bootstrap_servers`` and security."""
    kwargs: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap,
                              "security_protocol": _protocol(settings)}
    if uses_tls(settings):
        kwargs["ssl_context"] = ssl_context(settings)
    if uses_sasl(settings):
        kwargs |= {"sasl_mechanism": settings.kafka_sasl_mechanism.value,
                   "sasl_plain_username": settings.kafka_sasl_username,
                   "sasl_plain_password": _password(settings)}
    return kwargs


# ---------------------------------------------------------------------------------------------- faust
def faust_credentials(settings: KafkaSettings) -> Any:
    """``broker_credentials`` for ``faust.App``: faust's aiokafka transport hands the protocol, the
    mechanism (SCRAM included), the user, the password and the TLS context to every consumer and
    producer it makes (faust.transport.drivers.aiokafka.credentials_to_aiokafka_auth)."""
    import faust

    protocol = _protocol(settings)
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return faust.SASLCredentials(username=settings.kafka_sasl_username, password=_password(settings),
                                 mechanism=settings.kafka_sasl_mechanism.value,
                                 ssl_context=ssl_context(settings) if protocol == "SASL_SSL" else None)


def faust_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """``broker`` (one ``kafka://`` URL per bootstrap server) and ``broker_credentials``."""
    return {"broker": ";".join(f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")),
            "broker_credentials": faust_credentials(settings)}


# -------------------------------------------------------------------------------------------- preflight
def _explain(where: str, settings: KafkaSettings, exc: BaseException) -> str | None:
    """One line for a security failure; None for anything else (not up yet, network)."""
    from aiokafka import errors

    # a broker that rejects the client's certificate (TLS 1.3: after the handshake) shows as a closed
    # connection whose cause is the TLS alert
    while isinstance(exc, errors.KafkaConnectionError) and exc.__cause__ is not None:
        exc = exc.__cause__

    if isinstance(exc, errors.SaslAuthenticationFailed | errors.IllegalSaslStateError):
        return (f"the Kafka broker at {where} refused the SASL login ({settings.kafka_sasl_mechanism.value}): "
                "check TN_KAFKA_SASL_USERNAME and TN_KAFKA_SASL_PASSWORD")
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return (f"the Kafka broker at {where} does not offer SASL {settings.kafka_sasl_mechanism.value} on this "
                "listener: check TN_KAFKA_SASL_MECHANISM")
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or "verification failed"
        if "mismatch" in why or "hostname" in why.lower():
            return (f"the Kafka broker at {where} presented a certificate for another name ({why}): check "
                    "TN_KAFKA_BOOTSTRAP (TN_KAFKA_SSL_CHECK_HOSTNAME=false only for a test broker)")
        return (f"the Kafka broker's certificate at {where} is not trusted ({why}): check "
                "TN_KAFKA_SSL_CA_FILE")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        hint = ("TN_KAFKA_SSL_CERT_FILE and TN_KAFKA_SSL_KEY_FILE" if "CERTIFICATE" in str(reason).upper()
                else "TN_KAFKA_SECURITY_PROTOCOL and the listener's port")
        return f"the TLS handshake with the Kafka broker at {where} failed ({reason}): check {hint}"
    return None


async def preflight(settings: KafkaSettings, wait_seconds: float = 10.0) -> None:
    """Log in to the first bootstrap server that answers, as the clients will; a refused login or
    certificate raises :class:`KafkaSecurityFault`. No-op for PLAINTEXT (nothing to refuse)."""
    if _protocol(settings) != "PLAINTEXT":
        await reach(settings, wait_seconds)


async def wait_for_broker(settings: KafkaSettings, log: Any, stop: asyncio.Event | None = None) -> None:
    """Until a bootstrap server answers (and, over TLS or SASL, accepts this client's login), each
    failed attempt logged with the bootstrap list and retried with backoff: a service started before
    its broker waits for it. A refused login or certificate raises :class:`KafkaSecurityFault` at
    once; ``stop`` set while waiting raises :class:`services.waiting.Stopped`."""
    await until_up("broker", settings.kafka_bootstrap, lambda: reach(settings), log=log, stop=stop)


async def reach(settings: KafkaSettings, wait_seconds: float = 10.0) -> None:
    """Connect to the first bootstrap server that answers (over TLS and SASL as configured); a
    refused login or certificate raises :class:`KafkaSecurityFault`, anything else is raised for the
    caller's retries."""
    from aiokafka.conn import collect_hosts, create_conn

    kwargs = aiokafka_kwargs(settings)
    kwargs.pop("bootstrap_servers")
    last: BaseException | None = None
    for host, port, _ in collect_hosts(settings.kafka_bootstrap, randomize=False):
        where = f"{host}:{port}"
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, client_id="trainee-notify-preflight",
                            request_timeout_ms=int(wait_seconds * 1000), **kwargs), wait_seconds)
        except Exception as exc:  # noqa: BLE001 - classified below; the rest is for the caller's retries
            fault = _explain(where, settings, exc)
            if fault is not None:
                raise KafkaSecurityFault(fault) from None
            last = exc
            continue
        conn.close()
        return
    if last is None:
        raise ValueError("TN_KAFKA_BOOTSTRAP names no server")
    raise last


def check(settings: KafkaSettings, wait_seconds: float = 10.0) -> None:
    """:func:`preflight` for synchronous callers (confluent-kafka clients); call it outside a running
    event loop."""
    if _protocol(settings) != "PLAINTEXT":
        asyncio.run(preflight(settings, wait_seconds))


def environment(settings: KafkaSettings) -> dict[str, str]:
    """The ``TN_KAFKA_*`` variables that give a child process these Kafka settings (tests, the demo)."""
    env = {"TN_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "TN_KAFKA_SECURITY_PROTOCOL": _protocol(settings),
           "TN_KAFKA_SSL_CHECK_HOSTNAME": str(settings.kafka_ssl_check_hostname).lower(),
           "TN_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism.value}
    for name, value in (("TN_KAFKA_SSL_CA_FILE", settings.kafka_ssl_ca_file),
                        ("TN_KAFKA_SSL_CERT_FILE", settings.kafka_ssl_cert_file),
                        ("TN_KAFKA_SSL_KEY_FILE", settings.kafka_ssl_key_file),
                        ("TN_KAFKA_SASL_USERNAME", settings.kafka_sasl_username)):
        if value is not None:
            env[name] = str(value)
    if settings.kafka_sasl_password is not None:
        env["TN_KAFKA_SASL_PASSWORD"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_key_password is not None:
        env["TN_KAFKA_SSL_KEY_PASSWORD"] = settings.kafka_ssl_key_password.get_secret_value()
    return env
