"""Typed settings from the environment: one frozen object per service, secrets masked.

Every variable is prefixed ``TN_``. Defaults are safe for the local stack; nothing here is read at
import time: each service builds its settings in its ``__main__``/composition root.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import AliasChoices, Field, FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TN_", frozen=True, extra="ignore")


class KafkaSecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaSaslMechanism(StrEnum):
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    PLAIN = "PLAIN"


class KafkaSettings(_Base):
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        KafkaSecurityProtocol.PLAINTEXT, description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, for every Kafka "
        "client of the project (services, operator commands, tests, benchmarks)")
    kafka_ssl_ca_file: FilePath | None = Field(None, description="CA certificates (PEM) that signed the brokers' "
                                               "certificates; unset: the system's CAs")
    kafka_ssl_cert_file: FilePath | None = Field(None, description="mutual TLS: this client's certificate (PEM), "
                                                 "with TN_KAFKA_SSL_KEY_FILE")
    kafka_ssl_key_file: FilePath | None = Field(None, description="mutual TLS: the private key (PEM) of "
                                                "TN_KAFKA_SSL_CERT_FILE")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="the password of an encrypted "
                                                     "TN_KAFKA_SSL_KEY_FILE (secret)")
    kafka_ssl_check_hostname: bool = Field(True, description="verify that the broker's certificate names the host "
                                           "in TN_KAFKA_BOOTSTRAP (turn off only for a test broker)")
    kafka_sasl_mechanism: KafkaSaslMechanism = Field(KafkaSaslMechanism.SCRAM_SHA_512, description="SCRAM-SHA-512, "
                                                     "SCRAM-SHA-256 or PLAIN (with SASL_PLAINTEXT/SASL_SSL)")
    kafka_sasl_username: str | None = Field(None, description="the SASL user (with SASL_PLAINTEXT/SASL_SSL)")
    kafka_sasl_password: SecretStr | None = Field(None, description="the SASL user's password (secret, never "
                                                  "printed)")
    cdc_topic_prefix: str = Field("tis", description="Debezium topic.prefix; CDC topics are <prefix>.tss.<table>")
    topic_partitions: int = Field(12, ge=1, description="partitions of the topics this project creates (and "
                                  "the connector's): up to this many busy aggregator workers")
    replication_factor: int = Field(1, ge=1, description="replicas of the topics this project creates (3 in "
                                    "production)")
    netchange_topic: str = Field("trainee-notify.netchange.v1", description="the net-change records (Avro)")
    cdc_dlq_topic: str = Field("trainee-notify.cdc-dlq.v1", description="CDC events and records that could not "
                               "be used, with the reason in a header")
    delivery_status_topic: str = Field("trainee-notify.delivery-status.v1", description="every delivery attempt's "
                                       "outcome (Avro)")
    mail_dlq_topic: str = Field("trainee-notify.mail-dlq.v1", description="notifications that could not be sent, "
                                "with the reason")
    app_id: str = Field("trainee-notify-aggregator", description="the aggregator's faust app id: its consumer "
                        "group and the prefix of its own topics (table changelog, ticks)")

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> KafkaSettings:
        """Refuse a combination that would be ignored in part or would expose the password."""
        protocol = self.kafka_security_protocol.value
        sasl = protocol.startswith("SASL_")
        tls = protocol.endswith("SSL")
        problems = []
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            problems.append(f"TN_KAFKA_SECURITY_PROTOCOL is {protocol}: set TN_KAFKA_SASL_USERNAME and "
                            "TN_KAFKA_SASL_PASSWORD")
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            problems.append(f"TN_KAFKA_SASL_USERNAME/TN_KAFKA_SASL_PASSWORD are set but TN_KAFKA_SECURITY_PROTOCOL "
                            f"is {protocol}: use SASL_SSL (or SASL_PLAINTEXT)")
        if protocol == "SASL_PLAINTEXT" and self.kafka_sasl_mechanism is KafkaSaslMechanism.PLAIN:
            problems.append("TN_KAFKA_SASL_MECHANISM is PLAIN over SASL_PLAINTEXT: the password would cross the "
                            "network in clear; use SASL_SSL or a SCRAM mechanism")
        files = [n for n, v in (("TN_KAFKA_SSL_CA_FILE", self.kafka_ssl_ca_file),
                                ("TN_KAFKA_SSL_CERT_FILE", self.kafka_ssl_cert_file),
                                ("TN_KAFKA_SSL_KEY_FILE", self.kafka_ssl_key_file),
                                ("TN_KAFKA_SSL_KEY_PASSWORD", self.kafka_ssl_key_password)) if v is not None]
        if files and not tls:
            problems.append(f"{', '.join(files)} set but TN_KAFKA_SECURITY_PROTOCOL is {protocol}, which has no "
                            "TLS: use SSL or SASL_SSL")
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            problems.append("TN_KAFKA_SSL_CERT_FILE and TN_KAFKA_SSL_KEY_FILE go together (mutual TLS)")
        if self.kafka_ssl_key_password is not None and self.kafka_ssl_key_file is None:
            problems.append("TN_KAFKA_SSL_KEY_PASSWORD is set without TN_KAFKA_SSL_KEY_FILE")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def heartbeat_topic(self) -> str:
        """Where Debezium's heartbeats land (topic.heartbeat.prefix + topic.prefix)."""
        return f"__debezium-heartbeat.{self.cdc_topic_prefix}"

    def ticks_topic(self) -> str:
        """The aggregator's watermark ticks, one per partition, co-partitioned with the CDC topics."""
        return f"{self.app_id}-ticks"

    def changelog_topic(self) -> str:
        """The changelog of the aggregator's ``trainee_state`` table (faust's name for it)."""
        return f"{self.app_id}-trainee_state-changelog"

    def leader_topic(self) -> str:
        """faust's partition assignor's topic."""
        return f"{self.app_id}-__assignor-__leader"

    def cdc_topics(self) -> list[str]:
        from services.netchange.cdc import ENTITIES

        return [f"{self.cdc_topic_prefix}.tss.{t}" for t in ENTITIES]


class DaySettings(_Base):
    timezone: str = Field("Europe/London", description="the zone whose calendar days are the windows")
    day_seconds: int = Field(0, ge=0, description="0 = calendar days; "
                                                  ">0 = fixed windows of that many seconds (tests, demo)")
    grace_seconds: float = Field(900.0, ge=0, description="how long after a day ends it stays open")
    max_hold_seconds: float = Field(3600.0, ge=0, description="longest the watermark waits for a lagging connector")


class AggregatorSettings(KafkaSettings, DaySettings):
    data_dir: Path = Field(Path(".data/aggregator"), description="faust's data directory (RocksDB of the "
                           "trainee_state table): kept across restarts it saves a changelog replay")
    tick_seconds: float = Field(5.0, gt=0, description="how often the watermark tick is sent to every partition")
    web_port: int = Field(6066, description="faust web: /healthz, /readyz, /metrics")
    web_host: str = Field("127.0.0.1", description="faust web binds here")
    store: str = Field("rocksdb://", description="faust table store: rocksdb:// or memory://")
    clock_file: Path | None = Field(None, validation_alias=AliasChoices("TN_CLOCK_FILE", "TN_WATERMARK_FILE"),
                                    description="tests: the wall clock (epoch seconds) is read from this file; the "
                                    "watermark follows it, held back by the connector's progress up to "
                                    "TN_MAX_HOLD_SECONDS (TN_WATERMARK_FILE, its old name, is still read)")
    standby_replicas: int = Field(0, ge=0, description="faust standby replicas of the trainee_state table: a worker "
                                  "keeps a copy of other partitions' state, so a fail-over does not replay "
                                  "the changelog (production: 1)")
    state_cache: int = Field(5000, ge=1, description="decoded trainee states kept in memory per worker")
    stall_seconds: float = Field(120.0, gt=0, description="an input partition with lag whose committed offset "
                                 "has not moved this long is stalled (logged with faust's view of it, /healthz "
                                 "fails, the worker exits 3 to be restarted); half-way it is logged as stuck")
    exit_on_stall: bool = Field(True, description="after a stall, exit (code 3) so the supervisor restarts the "
                                "worker; state and offsets are in Kafka, so a restart is safe")


class SmtpSettings(_Base):
    smtp_host: str = Field("127.0.0.1", description="the SMTP relay")
    smtp_port: int = Field(1025, description="the relay's port")
    smtp_security: str = Field("none", pattern="^(none|starttls|tls)$", description="none, starttls (upgrade "
                               "after connecting) or tls (implicit TLS)")
    smtp_username: str | None = Field(None, description="the relay login (with TN_SMTP_PASSWORD); none: no login")
    smtp_password: SecretStr | None = Field(None, description="the relay password (a secret: never logged)")
    smtp_allow_plaintext_auth: bool = Field(False, description="allow the relay login over a connection "
                                            "that is not TLS (TN_SMTP_SECURITY=none): never in production")
    smtp_ca_file: Path | None = Field(None, description="CA certificates (PEM) to trust for the relay's TLS, "
                                      "besides the system's; the host name is always verified")
    smtp_timeout_seconds: float = Field(30.0, description="per SMTP command")
    smtp_pool_size: int = Field(4, ge=1, description="connections to the relay kept open and reused")
    smtp_rate_per_second: float = Field(50.0, gt=0, description="emails a second at most (the relay's limit)")
    smtp_retry_horizon_seconds: float = Field(3600.0, ge=0, description="a notification still failing "
                                              "temporarily this long after its first attempt is FAILED")
    smtp_retry_base_seconds: float = Field(1.0, gt=0, description="the backoff's base: attempt n waits "
                                           "up to base x 2^n s (full jitter), at most TN_SMTP_RETRY_CAP_SECONDS")
    smtp_retry_cap_seconds: float = Field(300.0, gt=0, description="longest wait between two attempts")
    mail_from: str = Field("Training record notifications <no-reply@notify.example.nhs.uk>",
                           description="the From of every email")
    message_id_domain: str = Field("notify.example.nhs.uk", description="the right-hand side of our Message-IDs")

    @model_validator(mode="after")
    def _no_plaintext_login(self) -> SmtpSettings:
        if self.smtp_username and self.smtp_security == "none" and not self.smtp_allow_plaintext_auth:
            raise ValueError("TN_SMTP_USERNAME is set but TN_SMTP_SECURITY is none: the password would cross "
                             "the network in clear; use starttls or tls (or TN_SMTP_ALLOW_PLAINTEXT_AUTH=true "
                             "for a local test relay)")
        return self


class MailerSettings(KafkaSettings, SmtpSettings, DaySettings):
    group_id: str = Field("trainee-notify-mailer", description="the mailer's consumer group")
    send_at: str = Field("07:00", pattern=r"^\d{2}:\d{2}$", description="local time from which a day's digests go")
    send_immediately: bool = Field(False, description="ignore send_at (tests, demo)")
    metrics_port: int = Field(9108, description="/metrics, /healthz and /readyz")
    metrics_host: str = Field("127.0.0.1", description="the health and metrics server binds here")
    contacts_file: Path | None = Field(None, description="JSON: managing deanery -> contact; else built-in")
    instance_id: str = Field("mailer-1", description="names this instance in ledger claims and status events")
    ledger_dsn: str = Field("host=127.0.0.1 port=5432 user=postgres dbname=tss",
                            description="PostgreSQL conninfo of the ledger (schema notify)")
    ledger_lease_seconds: float = Field(120.0, gt=0, description="how long a claim stays live without news")
    allow_test_domains: bool = Field(False, description="accept *.test recipient domains (local stack only)")
    batch_size: int = Field(200, ge=1, description="records fetched per poll")
    render_workers: int = Field(0, ge=0, description="processes that compose and render emails; 0 = on the event loop")
    ledger_pool_size: int = Field(4, ge=1, description="PostgreSQL connections of the ledger")
    session_timeout_ms: int = Field(10000, ge=6000, description="Kafka consumer session timeout")
    stall_seconds: float = Field(120.0, gt=0, description="liveness: /healthz answers 503 when the consume loop "
                                 "has made no progress (no poll, no outcome) for this long")
    fault_linger_seconds: float = Field(15.0, ge=0, description="after a fatal fault (530/535), keep /metrics up "
                                        "this long so the alert is scraped before the process exits")
    relay_check_seconds: float = Field(30.0, gt=0, description="readiness: how often /readyz checks the relay with "
                                       "a connection of its own (the broker and the ledger: every 5 s)")


class FormrSettings(KafkaSettings, SmtpSettings):
    """The Form R service (``trainee-notify formr run``): read model, report page, reminders."""

    formr_group_id: str = Field("trainee-notify-formr", description="consumer group of the read model")
    formr_dsn: str = Field("host=127.0.0.1 port=5432 user=postgres dbname=tss",
                           description="PostgreSQL conninfo of the read model (schema formr) and the ledger")
    formr_web_host: str = Field("127.0.0.1", description="the report page binds here; localhost unless configured")
    formr_web_port: int = Field(8088, description="the report page's port")
    stall_seconds: float = Field(120.0, gt=0, description="liveness: /healthz answers 503 when the consume loop "
                                 "has made no progress (no poll, no outcome) for this long")
    formr_trusted_proxies: list[str] = Field(default_factory=list, description="addresses of the authenticating "
                                             "proxy whose identity headers are believed (JSON list)")
    formr_proxy_secret: SecretStr | None = Field(None, description="a shared secret the proxy sends in "
                                                 "formr_secret_header; with it, headers are believed from anywhere")
    formr_secret_header: str = Field("X-Proxy-Secret", description="the header that carries the proxy's secret")
    formr_user_header: str = Field("X-Forwarded-User", description="the header naming the signed-in user")
    formr_groups_header: str = Field("X-Forwarded-Groups", description="the header listing the user's groups "
                                     "(comma-separated)")
    formr_office_groups: dict[str, str] = Field(default_factory=dict, description="group -> local office (JSON); "
                                                "a group not listed entitles the local office it names")
    formr_horizon_weeks: int = Field(16, ge=1, description="the report lists ARCPs up to this many weeks ahead")
    formr_window_months: int = Field(12, ge=1, description="a form submitted this many months before the ARCP "
                                     "still counts for it")
    formr_at_risk_weeks: int = Field(6, ge=0, description="a trainee is at risk with a part missing this many "
                                     "weeks or less before the ARCP")
    formr_reminder_weeks: list[int] = Field(default_factory=lambda: [8, 2], description="reminders this many "
                                            "weeks before the review (JSON list)")
    formr_reminders: bool = Field(True, description="send the trainees' reminders")
    formr_reminder_every_seconds: float = Field(60.0, gt=0, description="how often the reminder clock ticks")
    formr_clock_file: Path | None = Field(None, description="tests: the time now (ISO-8601) is read from this file")
    formr_submit_url: str = Field("https://trainee.tis.nhs.uk/formr", description="where the reminders send "
                                  "trainees to submit their form")
    formr_instance_id: str = Field("formr-1", description="names this instance in ledger claims; keep it "
                                   "across restarts so a restarted instance takes its own claims back at once")
    allow_test_domains: bool = Field(False, description="accept *.test recipient domains (local stack only)")
    contacts_file: Path | None = Field(None, description="JSON: managing deanery -> contact; else built-in")
