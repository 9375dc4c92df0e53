"""The one place configuration is read: flags override ``FLEETLEDGER_*`` variables.

``Settings`` is constructed explicitly (never at import time) and passed into whatever
needs it.  The broker is chosen by one URL-style setting:

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` - the embedded store
  (the default, ``sqlite:///fleetledger.db``);
* ``kafka://host:port[,host:port...]`` - a Kafka cluster.  How to connect to it (TLS,
  SASL) is said by the ``FLEETLEDGER_KAFKA_*`` settings; :mod:`fleetledger.kernel.kafka`
  turns them into the options of every Kafka client.

Secrets (``FLEETLEDGER_KAFKA_SASL_PASSWORD``, ``FLEETLEDGER_KAFKA_SSL_KEY_PASSWORD``) come
from the environment or, as container platforms mount them, from a file named by the same
variable with ``_FILE`` appended.  They are :class:`~pydantic.SecretStr`: masked whenever
settings are printed, and never echoed in an error.

The read model (what the read commands and the console query) lives in SQL, chosen by
``FLEETLEDGER_READ_DB``: ``sqlite:///path.db`` or ``postgresql://user@host:port/db``.
Unset, it is the embedded store's own file, or ``sqlite:///fleetledger-read.db`` in
Kafka mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetledger.kernel.errors import ConfigError
from fleetledger.kernel.kafka import SaslMechanism, SecurityProtocol

DEFAULT_BROKER = "sqlite:///fleetledger.db"
#: The read model's default file in Kafka mode (the embedded store's file otherwise).
DEFAULT_KAFKA_READ_DB = "sqlite:///fleetledger-read.db"


@dataclass(frozen=True)
class BrokerURL:
    """A parsed ``FLEETLEDGER_BROKER`` value."""

    kind: Literal["sqlite", "kafka"]
    raw: str
    path: Path | None = None
    bootstrap_servers: tuple[str, ...] = ()

    @property
    def bootstrap(self) -> str:
        return ",".join(self.bootstrap_servers)


def parse_broker_url(url: str) -> BrokerURL:
    """Parse a broker URL; raise :class:`ConfigError` naming what is wrong."""
    if not url or "://" not in url:
        raise ConfigError(
            f"broker URL {url!r} has no scheme; expected kafka://host:port or sqlite:///path.db"
        )
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "sqlite":
        # sqlite:///rel.db -> "rel.db"; sqlite:////abs.db -> "/abs.db"
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                f"broker URL {url!r} has no database path; expected sqlite:///path/ledger.db"
            )
        return BrokerURL(kind="sqlite", raw=url, path=Path(rest[1:]))
    if scheme in ("kafka", "kafka+plaintext"):
        parts = urlsplit(f"kafka://{rest}")
        servers = tuple(s.strip() for s in parts.netloc.split(",") if s.strip())
        if not servers:
            raise ConfigError(f"broker URL {url!r} names no host; expected kafka://host:port")
        for server in servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(
                    f"broker URL {url!r}: {server!r} is not host:port with a port in 1-65535"
                )
        return BrokerURL(kind="kafka", raw=url, bootstrap_servers=servers)
    raise ConfigError(f"broker URL {url!r} has scheme {scheme!r}; expected 'kafka' or 'sqlite'")


@dataclass(frozen=True)
class ReadDbURL:
    """A parsed ``FLEETLEDGER_READ_DB`` value: which engine, and where."""

    kind: Literal["sqlite", "postgresql"]
    raw: str
    #: the SQLAlchemy URL (driver named: ``postgresql+psycopg://...``)
    sqlalchemy_url: str
    path: Path | None = None

    def __str__(self) -> str:
        """The URL without a password, for messages."""
        if self.kind == "sqlite":
            return self.raw
        parts = urlsplit(self.raw)
        host = parts.hostname or ""
        netloc = f"{parts.username + '@' if parts.username else ''}{host}"
        if parts.port:
            netloc += f":{parts.port}"
        return f"{parts.scheme}://{netloc}{parts.path}"


def parse_read_db_url(url: str) -> ReadDbURL:
    """Parse a read-model URL; raise :class:`ConfigError` naming what is wrong."""
    if "://" not in url:
        raise ConfigError(
            f"read model URL {url!r} has no scheme; expected sqlite:///path.db or "
            "postgresql://user@host:port/db"
        )
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                f"read model URL {url!r} has no database path; expected sqlite:///path.db"
            )
        path = Path(rest[1:])
        return ReadDbURL("sqlite", url, f"sqlite:///{path}", path)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        if not urlsplit(f"x://{rest}").hostname and "host=" not in rest:
            raise ConfigError(
                f"read model URL {url!r} names no host; expected postgresql://user@host:port/db"
            )
        return ReadDbURL("postgresql", url, f"postgresql+psycopg://{rest}")
    raise ConfigError(
        f"read model URL {url!r} has scheme {scheme!r}; expected 'sqlite' or 'postgresql'"
    )


#: Settings whose value is a secret; each may also come from ``FLEETLEDGER_<NAME>_FILE``.
SECRET_FIELDS = ("kafka_ssl_key_password", "kafka_sasl_password", "otlp_token")


def read_secret_file(path: Path, field: str) -> str:
    """The secret in ``path``: its text without one trailing newline; never empty."""
    where = f"FLEETLEDGER_{field.upper()}={str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{where}: cannot read it ({reason}); expected a readable file") from None
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text:
        raise ConfigError(f"{where}: the file is empty; expected the secret in it")
    return text


class Settings(BaseSettings):
    """Every ``FLEETLEDGER_*`` setting, with its default.  Documented in the README."""

    model_config = SettingsConfigDict(
        env_prefix="FLEETLEDGER_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    broker: str = Field(DEFAULT_BROKER, description="kafka://host:port or sqlite:///path.db")
    topic_prefix: str = Field("fleetledger", description="prefix of every Kafka topic")
    partitions: int = Field(4, ge=1, description="partitions of the events topic")
    replication_factor: int = Field(1, ge=1, description="replication factor of created topics")
    enable_idempotence: bool = Field(True, description="idempotent Kafka producer")
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = Field(
        "zstd", description="Kafka producer compression (SDK and worker outputs)"
    )
    max_message_bytes: int = Field(
        900_000, ge=10_000, description="larger bundles go to the archive with a manifest"
    )
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (every Kafka client)"
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM bundle of the CAs that signed the brokers' certificates"
    )
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (PEM), mTLS")
    kafka_ssl_keyfile: Path | None = Field(None, description="client certificate's key (PEM)")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="password of an encrypted client key (secret)"
    )
    kafka_ssl_key_password_file: Path | None = Field(
        None, description="file holding FLEETLEDGER_KAFKA_SSL_KEY_PASSWORD"
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="check that the broker's certificate names the host connected to"
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="SASL mechanism (with SASL_SSL or SASL_PLAINTEXT)"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user (PLAIN, SCRAM)")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (PLAIN, SCRAM; secret)"
    )
    kafka_sasl_password_file: Path | None = Field(
        None, description="file holding FLEETLEDGER_KAFKA_SASL_PASSWORD"
    )
    kafka_sasl_oauth_token_provider: str | None = Field(
        None, description="OAUTHBEARER: package.module:factory returning a token provider"
    )
    archive_dir: Path = Field(Path("archive"), description="folder for oversized bundles")
    blob_dir: Path | None = Field(
        Path("blobs"), description="SDK: content-addressed store of large inputs/outputs"
    )
    blob_threshold_bytes: int = Field(
        65_536, ge=0, description="SDK: inputs/outputs larger than this go to the blob store"
    )
    compliance_archive: Path | None = Field(
        None, description="worker: archive every bundle under this folder (--archive)"
    )
    signing_key: Path | None = Field(
        None, description="Ed25519 private key (PEM) signing archived bundles (--sign)"
    )
    price_overrides: Path | None = Field(
        None, description="SDK: a price file whose prices take precedence over genai-prices"
    )
    otlp_token: SecretStr | None = Field(
        None, description="fleetledger otlp: bearer token clients must send (secret; --token)"
    )
    otlp_token_file: Path | None = Field(None, description="file holding FLEETLEDGER_OTLP_TOKEN")
    group_id: str = Field("fleetledger-worker", description="Kafka consumer group of workers")
    batch_max_events: int = Field(500, ge=1, description="SDK: most events in one message")
    linger_ms: int = Field(5, ge=0, description="SDK: wait to fill a batch")
    pack_messages: bool = Field(
        True, description="SDK, Kafka: one record per partition and linger window (EventPack)"
    )
    max_buffered_events: int = Field(100_000, ge=1, description="SDK: backpressure threshold")
    gap_timeout_s: float = Field(30.0, gt=0, description="open sequence gap older than this")
    budget_warn_ratio: Decimal = Field(Decimal("1"), description="budget intercept ratio")
    intervention_rate: Decimal = Field(
        Decimal("0.5"), description="(rejections+edits)/gates above which to intercept"
    )
    intervention_min_gates: int = Field(4, ge=1, description="gates before the rate rule applies")
    max_recoveries: int = Field(3, ge=0, description="retries/escalations above which to intercept")
    session_timeout_s: float = Field(30.0, gt=0, description="worker consumer session timeout")
    fetch_max_wait_ms: int = Field(
        100,
        ge=1,
        le=30_000,
        description="worker, projector: longest a fetch waits at the broker for records",
    )
    read_db: str | None = Field(
        None,
        description="read model: sqlite:///path.db or postgresql://user@host:port/db "
        "(unset: the embedded store's file; sqlite:///fleetledger-read.db with Kafka)",
    )
    projector_group_id: str = Field(
        "fleetledger-projector", description="Kafka consumer group of `fleetledger projector`"
    )
    retention_days: int | None = Field(
        None,
        ge=1,
        description="drop runs older than this from the read model once their bundle is in "
        "the compliance archive (unset: keep every run)",
    )
    report_interval_s: float = Field(
        10.0, gt=0, description="worker and projector: seconds between progress log lines"
    )
    console_host: str = Field(
        "127.0.0.1", description="`fleetledger console`: address to bind (loopback by default)"
    )
    console_port: int = Field(8760, ge=0, le=65535, description="`fleetledger console`: port")
    console_token: str | None = Field(
        None,
        min_length=16,
        repr=False,
        description="`fleetledger console`: bearer token every request must carry; required "
        "to bind anything but a loopback address",
    )
    replay_agents: str | None = Field(
        None,
        description="`fleetledger console`: the agent functions its Simulation tab replays "
        "runs with, `agent_id=package.module:function,...` (unset: it starts no replays)",
    )
    verbose: bool = Field(False, description="tracebacks and debug logs")

    @field_validator(
        "compliance_archive",
        "signing_key",
        "price_overrides",
        "otlp_token",
        "otlp_token_file",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "kafka_ssl_key_password",
        "kafka_ssl_key_password_file",
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_sasl_password_file",
        "kafka_sasl_oauth_token_provider",
        "read_db",
        "retention_days",
        "console_token",
        "replay_agents",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("blob_dir", mode="before")
    @classmethod
    def _none_disables(cls, v: object) -> object:
        return None if v in ("", "none") else v

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """``X_FILE`` names a file holding secret ``X`` (one trailing newline dropped)."""
        if not isinstance(data, dict):
            return data
        for name in SECRET_FIELDS:
            path = data.get(f"{name}_file")
            if path in (None, ""):
                continue
            if data.get(name) not in (None, ""):
                raise ConfigError(
                    f"FLEETLEDGER_{name.upper()} and FLEETLEDGER_{name.upper()}_FILE are both "
                    "set; expected one of them"
                )
            data = {**data, name: read_secret_file(Path(str(path)), f"{name}_file")}
        return data

    def broker_url(self) -> BrokerURL:
        return parse_broker_url(self.broker)

    def read_db_url(self) -> ReadDbURL:
        """The read model's URL: ``read_db``, else the embedded store's file, else
        :data:`DEFAULT_KAFKA_READ_DB` in Kafka mode."""
        if self.read_db is not None:
            return parse_read_db_url(self.read_db)
        broker = self.broker_url()
        if broker.kind == "sqlite":
            return parse_read_db_url(broker.raw)
        return parse_read_db_url(DEFAULT_KAFKA_READ_DB)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment with explicit overrides (flags) on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        shown = "<secret>" if field in SECRET_FIELDS else repr(err.get("input"))
        if not field:
            raise ConfigError(f"settings: {err['msg']}") from None
        # ``from None``: the validation error would repeat every input, secrets included.
        raise ConfigError(f"setting FLEETLEDGER_{field.upper()}={shown}: {err['msg']}") from None
