"""The one configuration loader: environment variables with the FUNDWATCH_ prefix, or a .env file.

Nested settings use a double underscore (FUNDWATCH_TOPICS__SETTLEMENT__PARTITIONS=12).
Secrets are SecretStr: they print as '**********' and are only unwrapped where a client needs them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / ".local"
DAY_MS = 24 * 3600 * 1000
DEV_PSEUDONYM_KEY = "fundwatch-dev-key-change-me"


APPEND_TIME = "LogAppendTime"


class TopicSpec(BaseModel):
    """A topic's name, partition count, retention and timestamp type.

    Inputs carry the event time as the record timestamp (`CreateTime`): that is what replays
    seek by. Derived topics (repartitioned copies, alerts, aggregates, dead letters) age by the
    time the broker appended them (`LogAppendTime`): retention counts from when a record was
    written, so replaying last month's history does not feed the worker copies that time-based
    retention deletes before it reads them. Their event time travels in the payload.
    """

    name: str
    partitions: int = Field(ge=1)
    retention_ms: int = Field(description="-1 keeps records forever")
    timestamp_type: Literal["CreateTime", "LogAppendTime"] = "CreateTime"
    cleanup_policy: Literal["delete", "compact"] = "delete"

    def config(self) -> dict[str, str]:
        config = {
            "retention.ms": str(self.retention_ms),
            "message.timestamp.type": self.timestamp_type,
        }
        if self.cleanup_policy != "delete":  # the broker's default stays implicit
            config["cleanup.policy"] = self.cleanup_policy
        return config


class Topics(BaseModel):
    """Input and output topics. Inputs keep 30 days so a month can be replayed for backtests."""

    settlement: TopicSpec = TopicSpec(name="settlement", partitions=4, retention_ms=30 * DAY_MS)
    trace_scan: TopicSpec = TopicSpec(name="trace-scan", partitions=4, retention_ms=30 * DAY_MS)
    face_verify: TopicSpec = TopicSpec(name="face-verify", partitions=4, retention_ms=30 * DAY_MS)
    alerts: TopicSpec = TopicSpec(
        name="alerts", partitions=4, retention_ms=90 * DAY_MS, timestamp_type=APPEND_TIME
    )
    aggregates: TopicSpec = TopicSpec(
        name="aggregates", partitions=4, retention_ms=30 * DAY_MS, timestamp_type=APPEND_TIME
    )
    dead_letters: TopicSpec = TopicSpec(
        name="dead-letters", partitions=1, retention_ms=90 * DAY_MS, timestamp_type=APPEND_TIME
    )
    sim_labels: TopicSpec = TopicSpec(name="sim-labels", partitions=1, retention_ms=-1)
    # analysts' review outcomes (`fundwatch review`): the labels the alert ranker learns from
    reviews: TopicSpec = TopicSpec(name="reviews", partitions=1, retention_ms=-1)
    # internal: input records re-keyed for the worker's institution, doctor and group stages
    by_institution: TopicSpec = TopicSpec(
        name="fundwatch-by-institution",
        partitions=4,
        retention_ms=7 * DAY_MS,
        timestamp_type=APPEND_TIME,
    )
    by_doctor: TopicSpec = TopicSpec(
        name="fundwatch-by-doctor",
        partitions=4,
        retention_ms=7 * DAY_MS,
        timestamp_type=APPEND_TIME,
    )
    # settlements re-keyed by their institution's peer group (the worker's group stage)
    by_group: TopicSpec = TopicSpec(
        name="fundwatch-by-group",
        partitions=4,
        retention_ms=7 * DAY_MS,
        timestamp_type=APPEND_TIME,
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        """Let one field be overridden (FUNDWATCH_TOPICS__ALERTS__PARTITIONS=8), keep the rest."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, fld in cls.model_fields.items():
            if isinstance(data.get(name), dict):
                merged[name] = {**fld.default.model_dump(), **data[name]}
        return merged

    def inputs(self) -> list[TopicSpec]:
        return [self.settlement, self.trace_scan, self.face_verify]

    def all(self) -> list[TopicSpec]:
        return [getattr(self, name) for name in type(self).model_fields]


class Settings(BaseSettings):
    """FundWatch configuration. Every field can be set as FUNDWATCH_<FIELD> (upper case)."""

    model_config = SettingsConfigDict(
        env_prefix="FUNDWATCH_",
        env_file=".env",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = DEFAULT_DATA_DIR

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_client_config: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka properties, as a JSON object"
    )
    kafka_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of the topics `infra up` creates"
    )
    consumer_group: str = "fundwatch-sink"
    topics: Topics = Topics()

    # ClickHouse: chdb:///path (embedded, default) or http(s)://user:password@host:port/database
    clickhouse_url: str = ""
    clickhouse_database: str = "fundwatch"
    clickhouse_cluster: str | None = Field(
        default=None, description="Cluster name for ON CLUSTER DDL and replicated tables"
    )

    # Local broker (infra up)
    kafka_heap: str = "1g"
    local_kafka_version: str = "3.9.1"
    local_kafka_port: int = Field(default=19092, ge=1, le=65535)
    local_kafka_controller_port: int = Field(default=19093, ge=1, le=65535)

    # Privacy: person ids are replaced by HMAC-SHA256 pseudonyms before they reach ClickHouse
    pseudonym_key: SecretStr = SecretStr(DEV_PSEUDONYM_KEY)
    reidentify_key: SecretStr | None = Field(
        default=None,
        description="key of the person vault (pseudonym -> encrypted person id): the sink "
        "writes the vault only when it is set; `fundwatch reidentify` needs it",
    )

    # Worker (faust): consumer group / app id, batches, event-time lateness, reference data
    worker_app_id: str = "fundwatch-worker"
    worker_engine: Literal["transactional", "faust"] = Field(
        default="transactional",
        description="transactional: confluent-kafka, each batch's outputs, states and offsets "
        "in one Kafka transaction (exactly once across kills and rebalances); faust: the "
        "faust-streaming agent with RocksDB tables (at least once, see docs/worker.md)",
    )
    worker_batch_size: int = Field(default=2000, ge=1)
    worker_batch_seconds: float = Field(default=0.2, gt=0)
    worker_linger_seconds: float = Field(default=0.02, ge=0)
    """Transactional engine: once a batch's first record is read, how long to wait for more
    (up to `worker_batch_size`) before processing; `worker_batch_seconds` is then how long an
    idle worker waits for a first record. A busy worker's batches fill at once; a quiet one's
    go out after this much, not after `worker_batch_seconds` (latency)."""
    allowed_lateness_ms: int = Field(default=10 * 60_000, ge=0)
    worker_state: Literal["packed", "objects"] = Field(
        default="packed",
        description="how the transactional worker holds detector state in memory (the "
        "backtest: backtest_state): packed (the person and trace-code states as one zstd blob "
        "per entity, about 280 B per tracked person in the city world) or objects (Python "
        "objects, about 3.6 KB per person, the worker logic about 1.2x faster); docs/worker.md",
    )
    worker_state_hot_groups: int = Field(default=256, ge=1)
    """Packed state: entity groups kept decoded (least recently used packed first). More is
    faster and larger: docs/performance.md has the measured curve."""
    worker_session_timeout_s: float = Field(
        default=60.0,
        ge=6.0,
        description="consumer-group session timeout: how long the group waits for a worker "
        "that died without leaving before its partitions move (the broker's minimum is 6 s)",
    )
    worker_heartbeat_interval_s: float = Field(
        default=3.0, gt=0, description="heartbeat interval (under a third of the session timeout)"
    )
    validate_wall_clock: bool = Field(
        default=True,
        description="dead-letter events more than a day ahead of the wall clock or over ten "
        "years old; `fundwatch run` turns it off for unbounded simulations, which run ahead of "
        "real time",
    )
    registry_dir: Path | None = Field(
        default=None, description="institutions.jsonl and drugs.jsonl (default <data_dir>/registry)"
    )
    backtest_workers: int = Field(
        default=0,
        ge=0,
        description="processes a Kafka-sourced backtest judges on, each reading its share of "
        "the partitions (docs/backtest.md); 0: one per CPU; 1: in the calling process",
    )
    backtest_state: Literal["objects", "packed"] = Field(
        default="objects",
        description="how a backtest holds detector state: objects (Python objects, about "
        "3.6 KB per tracked person, never written back: the fastest) or packed (as the worker "
        "does, about 280 B per person, for a history whose population does not fit in memory; "
        "about 1.3x the CPU); docs/backtest.md",
    )
    rules_config: str = Field(
        default="default",
        description="rule configuration the worker runs: a name in models/rules/configs/ "
        "or a path to a TOML file (`fundwatch rules list`)",
    )

    # Sink batching
    sink_batch_size: int = Field(default=20_000, ge=1)
    sink_batch_seconds: float = Field(default=0.5, gt=0)
    sink_alert_flush_seconds: float = Field(default=0.1, gt=0)
    """A batch holding an alert is stored once it is this old, not `sink_batch_seconds`: alerts
    reach the analysts fast, the bulk of events is still stored in large inserts."""

    # Operations: /metrics and /health of the worker and the sink (port 0: any free port; the
    # address is written to <data_dir>/metrics/ for `fundwatch status`)
    metrics_enabled: bool = True
    metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    sink_metrics_port: int = Field(default=0, ge=0, le=65535)
    health_stall_seconds: float = Field(
        default=120.0, gt=0, description="/health fails when records wait and no batch ends"
    )

    @field_validator("clickhouse_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value and not value.startswith(("chdb://", "http://", "https://")):
            raise ValueError("must start with chdb://, http:// or https://")
        return value

    @property
    def store_url(self) -> str:
        """The ClickHouse URL, defaulting to the embedded chDB store under the data dir."""
        return self.clickhouse_url or f"chdb://{self.data_dir / 'clickhouse'}"

    @property
    def is_embedded_store(self) -> bool:
        return self.store_url.startswith("chdb://")

    @model_validator(mode="after")
    def _default_bootstrap(self) -> Settings:
        """Without an explicit bootstrap, follow the local broker's port."""
        if "kafka_bootstrap" not in self.model_fields_set:
            self.kafka_bootstrap = f"127.0.0.1:{self.local_kafka_port}"
        return self

    @property
    def is_local_kafka(self) -> bool:
        """True when the bootstrap points at the broker `fundwatch infra up` manages."""
        return self.kafka_bootstrap in {
            f"127.0.0.1:{self.local_kafka_port}",
            f"localhost:{self.local_kafka_port}",
        }

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka properties shared by producers, consumers and the admin client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap,
            "security.protocol": self.kafka_security_protocol,
        }
        optional = {
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": _reveal(self.kafka_sasl_password),
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
            "ssl.key.password": _reveal(self.kafka_ssl_key_password),
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        conf.update(self.kafka_client_config)
        return conf

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict safe to print: secrets masked, URL passwords removed."""
        out = self.model_dump(mode="json")
        out["clickhouse_url"] = redact_url(self.store_url)
        secrets = ("kafka_sasl_password", "kafka_ssl_key_password", "pseudonym_key",
                   "reidentify_key")  # fmt: skip
        for key in secrets:
            if out.get(key):
                out[key] = "**********"
        out["kafka_client_config"] = {
            k: ("**********" if "password" in k or "secret" in k else v)
            for k, v in self.kafka_client_config.items()
        }
        return out


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def redact_url(url: str) -> str:
    """Hide the password of a user:password@host URL."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
