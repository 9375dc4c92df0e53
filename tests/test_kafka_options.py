"""One module builds every Kafka client's options (fleetledger.kernel.kafka).

Without a broker: the security settings and their checks, secrets from files, the options
reaching aiokafka's clients and Faust's broker credentials, the compression mapping and
message sizes every producer shares, masking of secrets wherever settings or connections
are printed or logged, and the one-line explanations of connection failures.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, codec
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError
from aiokafka.protocol.admin import SaslAuthenticateRequest_v1
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from fleetledger.cli.commands import main
from fleetledger.kernel import kafka
from fleetledger.kernel.config import Settings, load_settings
from fleetledger.kernel.errors import ConfigError
from fleetledger.kernel.kafka import KafkaConnection, kafka_connection
from fleetledger.processors.runtimes.faust_app import _faust_options, build_app
from fleetledger.processors.runtimes.kafka_io import topic_specs, worker_state_specs
from fleetledger.producers.transports import KafkaTransport

from .tls import Pki, make_pki

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / d / "src" for d in ("schemas", "producers", "processors")]
SECRET = "s3cret-Pa55word-a1b2c3"
BROKER = "kafka://127.0.0.1:9093"


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FLEETLEDGER_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def secret_file(tmp_path: Path, text: str = SECRET + "\n") -> Path:
    path = tmp_path / "password"
    path.write_text(text, encoding="utf-8")
    return path


def scram(tmp_path: Path, pki: Pki, **extra: Any) -> Settings:
    return load_settings(
        broker=BROKER,
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=pki.ca,
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="fleetledger-worker",
        kafka_sasl_password_file=secret_file(tmp_path),
        **extra,
    )


# --------------------------------------------------------------------------- settings


def test_plaintext_is_the_default_and_a_bootstrap_string_means_plaintext() -> None:
    conn = kafka_connection(load_settings(broker="kafka://a:1,b:2"))
    assert conn.security_options() == {"security_protocol": "PLAINTEXT"}
    assert conn.client_options("x") == {
        "bootstrap_servers": "a:1,b:2",
        "client_id": "x",
        "security_protocol": "PLAINTEXT",
    }
    assert kafka.as_connection("a:1").security_options() == conn.security_options()
    with pytest.raises(ConfigError, match="kafka:// broker"):
        kafka_connection(load_settings(broker="sqlite:///x.db"))


def test_secrets_come_from_files_without_their_trailing_newline(tmp_path: Path, pki: Pki) -> None:
    settings = scram(tmp_path, pki)
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == SECRET
    conn = kafka_connection(settings)
    options = conn.security_options()
    assert options["sasl_plain_password"] == SECRET
    assert options["sasl_plain_username"] == "fleetledger-worker"
    assert options["security_protocol"] == "SASL_SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].check_hostname and options["ssl_context"].verify_mode == (
        ssl.CERT_REQUIRED
    )

    with pytest.raises(ConfigError, match="both set"):
        load_settings(kafka_sasl_password="x", kafka_sasl_password_file=secret_file(tmp_path))
    with pytest.raises(ConfigError, match="empty"):
        load_settings(kafka_sasl_password_file=secret_file(tmp_path, "\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(kafka_sasl_password_file=tmp_path / "absent")


def test_the_environment_and_the_flags_set_the_same_settings(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETLEDGER_BROKER", BROKER)
    monkeypatch.setenv("FLEETLEDGER_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FLEETLEDGER_KAFKA_SSL_CAFILE", str(pki.ca))
    monkeypatch.setenv("FLEETLEDGER_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("FLEETLEDGER_KAFKA_SASL_USERNAME", "fleetledger-worker")
    monkeypatch.setenv("FLEETLEDGER_KAFKA_SASL_PASSWORD_FILE", str(secret_file(tmp_path)))
    from_env = kafka_connection(load_settings()).security_options()
    for name in list(os.environ):
        if name.startswith("FLEETLEDGER_KAFKA_"):
            monkeypatch.delenv(name)
    from_flags = kafka_connection(scram(tmp_path, pki)).security_options()
    assert {k: v for k, v in from_env.items() if k != "ssl_context"} == {
        k: v for k, v in from_flags.items() if k != "ssl_context"
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs FLEETLEDGER_KAFKA_SASL_MECHANISM"),
        ({"kafka_sasl_mechanism": "PLAIN"}, "uses no SASL"),
        ({"kafka_sasl_password": "x"}, "uses no SASL"),
        ({"kafka_ssl_cafile": "ca.pem"}, "uses no TLS"),
        ({"kafka_ssl_check_hostname": False}, "uses no TLS"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-256"},
            "needs FLEETLEDGER_KAFKA_SASL_USERNAME and FLEETLEDGER_KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER"},
            "needs FLEETLEDGER_KAFKA_SASL_OAUTH_TOKEN_PROVIDER",
        ),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "OAUTHBEARER",
                "kafka_sasl_oauth_token_provider": "tests.tokens:FileTokenProvider",
                "kafka_sasl_password": "x",
            },
            "expected the token",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "k.pem"},
            "without FLEETLEDGER_KAFKA_SSL_CERTFILE",
        ),
        (
            {"broker": "kafka+plaintext://h:1", "kafka_security_protocol": "SSL"},
            "says plaintext",
        ),
    ],
)
def test_contradicting_security_settings_are_one_clear_error(
    overrides: dict[str, Any], message: str
) -> None:
    settings = load_settings(**{"broker": BROKER, **overrides})
    with pytest.raises(ConfigError, match=message) as info:
        kafka.check_security(settings)
    assert "\n" not in str(info.value)


def test_unreadable_tls_files_and_token_providers_are_config_errors(
    tmp_path: Path, pki: Pki
) -> None:
    with pytest.raises(ConfigError, match=r"FLEETLEDGER_KAFKA_SSL_CAFILE.*cannot load"):
        kafka_connection(
            load_settings(
                broker=BROKER, kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "no"
            )
        )
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"FLEETLEDGER_KAFKA_SSL_CAFILE.*cannot load"):
        kafka_connection(
            load_settings(
                broker=BROKER, kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "junk.pem"
            )
        )
    wrong_password = load_settings(
        broker=BROKER,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki.ca,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
        kafka_ssl_key_password=SECRET,
    )
    with pytest.raises(ConfigError, match="cannot load the client certificate") as info:
        kafka_connection(wrong_password)
    assert SECRET not in str(info.value)
    for spec, message in [
        ("tests.tokens", "expected package.module:factory"),
        ("tests.no_such_module:x", "cannot import"),
        ("tests.tokens:Missing", "has no 'Missing'"),
        ("tests.tokens:not_a_provider", "expected an object with `async def token"),
    ]:
        with pytest.raises(ConfigError, match=message):
            kafka.load_token_provider(spec)


# --------------------------------------------------------------------------- clients


async def test_the_options_reach_every_aiokafka_client(tmp_path: Path, pki: Pki) -> None:
    conn = kafka_connection(scram(tmp_path, pki))
    clients = [
        AIOKafkaProducer(**conn.client_options("p")).client,
        AIOKafkaConsumer(**conn.client_options("c"))._client,
        AIOKafkaAdminClient(**conn.client_options("a"))._client,
    ]
    for client in clients:
        assert client._security_protocol == "SASL_SSL"
        assert client._ssl_context is conn.ssl_context
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "fleetledger-worker"
        assert client._sasl_plain_password == SECRET


@pytest.mark.parametrize("kind", ["SSL", "SASL_SSL PLAIN", "SASL_PLAINTEXT SCRAM", "OAUTHBEARER"])
def test_faust_gets_the_same_options_as_every_other_client(
    kind: str, tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    base: dict[str, Any] = {"broker": BROKER, "group_id": "g"}
    if kind == "SSL":
        base |= {
            "kafka_security_protocol": "SSL",
            "kafka_ssl_cafile": pki.ca,
            "kafka_ssl_certfile": pki.client_cert,
            "kafka_ssl_keyfile": pki.client_key,
            "kafka_ssl_key_password": pki.client_key_password,
        }
    elif kind == "SASL_SSL PLAIN":
        base |= {
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "PLAIN",
            "kafka_sasl_username": "key",
            "kafka_sasl_password": SECRET,
        }
    elif kind == "SASL_PLAINTEXT SCRAM":
        base |= {
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "SCRAM-SHA-256",
            "kafka_sasl_username": "u",
            "kafka_sasl_password": SECRET,
        }
    else:
        monkeypatch.setenv("TEST_OAUTH_TOKEN_FILE", str(secret_file(tmp_path)))
        base |= {
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "OAUTHBEARER",
            "kafka_sasl_oauth_token_provider": "tests.tokens:FileTokenProvider",
        }
    settings = load_settings(**base)
    conn = kafka_connection(settings)
    app = build_app(settings, connection=conn)
    # What Faust's aiokafka driver hands its consumer, producer and admin client.
    assert credentials_to_aiokafka_auth(app.conf.broker_credentials) == conn.security_options()
    assert app.conf.broker_credentials is not None
    assert SECRET not in repr(app.conf.broker_credentials)
    runtime = app.fleetledger_runtime  # type: ignore[attr-defined]
    assert runtime.connection is conn and runtime.sink._connection is conn


def test_every_kafka_client_in_the_code_is_built_from_the_one_module() -> None:
    """A client constructed with its own bootstrap/security keywords would drift."""
    constructors = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
    found = 0
    for src in SOURCES:
        for path in src.rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name not in constructors:
                    continue
                found += 1
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                keywords = {k.arg for k in node.keywords}
                assert not keywords & {"bootstrap_servers", "security_protocol", "ssl_context"}, (
                    where
                )
                spread = [
                    k.value
                    for k in node.keywords
                    if k.arg is None and isinstance(k.value, ast.Call)
                ]
                assert any(getattr(c.func, "attr", None) == "client_options" for c in spread), (
                    f"{where}: build it with **connection.client_options(client_id)"
                )
    assert found >= 6  # SDK producer and admin, sink, reader, worker admin and gap reader


# --------------------------------------------------------------------------- producers


@pytest.mark.parametrize("compression", kafka.COMPRESSIONS)
def test_every_producer_maps_compression_and_sizes_the_same_way(compression: str) -> None:
    settings = load_settings(broker=BROKER, compression=compression, max_message_bytes=2_000_000)
    expected = kafka.compression_type(compression)
    assert expected == (None if compression == "none" else compression)
    sdk = KafkaTransport.from_settings(settings)
    outputs = kafka.output_producer_options(settings)
    faust = _faust_options(settings, kafka_connection(settings), None)
    assert sdk.compression_type == outputs["compression_type"] == expected
    assert faust["producer_compression_type"] == expected

    # The SDK's largest request fits every topic the worker writes (so any input can be
    # dead-lettered unchanged), and the worker's producers may send what the topics take.
    largest_input = kafka.events_request_bytes(settings)
    assert sdk.max_request_size == largest_input == 2_100_000
    record = kafka.max_record_bytes(settings)
    assert record == largest_input + kafka.MESSAGE_OVERHEAD_BYTES
    assert outputs["max_request_size"] == faust["producer_max_request_size"] == record
    for spec in (*topic_specs(settings).all()[1:], *worker_state_specs(settings)):
        assert spec.configs["max.message.bytes"] == str(record), spec.name
    small = load_settings(broker=BROKER, max_message_bytes=10_000)
    assert kafka.events_request_bytes(small) == kafka.MIN_REQUEST_BYTES


def test_compression_libraries_are_the_clients_and_a_missing_one_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    for name, check in (("lz4", codec.has_lz4), ("zstd", codec.has_zstd)):
        library = kafka._CODEC_LIBRARY[name]
        assert (importlib.util.find_spec(library) is not None) == check(), name
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "cramjam" else real(n, *a)
    )
    with pytest.raises(ConfigError, match=r"'zstd'.*missing.*FLEETLEDGER_COMPRESSION=gzip"):
        kafka.compression_type("zstd")
    assert kafka.compression_type("gzip") == "gzip"
    with pytest.raises(ConfigError, match="expected one of none, gzip"):
        kafka.compression_type("brotli")


# --------------------------------------------------------------------------- secrets


def test_secrets_are_masked_wherever_settings_and_connections_are_printed(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = scram(
        tmp_path,
        pki,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
        kafka_ssl_key_password=pki.client_key_password,
    )
    conn = kafka_connection(settings)
    printed = [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(conn),
        conn.describe(),
        str(settings.model_dump()),
    ]
    for text in printed:
        assert SECRET not in text and pki.client_key_password not in text
    assert "**********" in repr(settings)
    assert "SCRAM-SHA-512 as 'fleetledger-worker'" in conn.describe()

    env = {
        "FLEETLEDGER_KAFKA_SASL_PASSWORD": SECRET,
        "FLEETLEDGER_KAFKA_SSL_KEY_PASSWORD": SECRET,
    }
    os.environ.update(env)
    try:
        assert main(["config"]) == 0
        assert main(["config", "--json"]) == 0
    finally:
        for name in env:
            del os.environ[name]
    out = capsys.readouterr().out
    assert SECRET not in out
    shown = json.loads(out[out.index("{") :])
    assert shown["FLEETLEDGER_KAFKA_SASL_PASSWORD"] == "**********"
    assert shown["FLEETLEDGER_KAFKA_SSL_KEY_PASSWORD"] == "**********"


def test_a_bad_setting_next_to_a_secret_never_echoes_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(kafka_sasl_password=SECRET, partitions="many")
    assert "FLEETLEDGER_PARTITIONS" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings(kafka_sasl_password=12345678)
    assert "12345678" not in str(info.value) and "<secret>" in str(info.value)


def test_client_debug_logs_never_carry_the_sasl_exchange_or_a_secret(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    conn = kafka_connection(scram(tmp_path, pki))
    kafka.redact_client_logs(conn)
    kafka.redact_client_logs(conn)  # idempotent: one filter per logger
    log = logging.getLogger("aiokafka.conn")
    assert sum(isinstance(f, kafka._RedactSecrets) for f in log.filters) == 1
    payload = b"\x00fleetledger-worker\x00" + SECRET.encode()
    with caplog.at_level(logging.DEBUG, logger="aiokafka"):
        # As aiokafka's connection logs every request it sends.
        log.debug("Request to %s:%d %d: %s", "h", 1, 7, SaslAuthenticateRequest_v1(payload))
        log.debug("Closing connection (%s)", f"password was {SECRET}")
    text = caplog.text
    assert "SASL exchange not logged" in text and "password was **********" in text
    assert SECRET not in text


# --------------------------------------------------------------------------- failures


def test_sasl_failures_are_explained_in_one_line(tmp_path: Path, pki: Pki) -> None:
    conn = kafka_connection(scram(tmp_path, pki))
    rejected = kafka.explain(conn, SaslAuthenticationFailed("Authentication failed"))
    assert rejected is not None
    assert rejected.startswith("the broker rejected the SASL SCRAM-SHA-512 credentials")
    assert "'fleetledger-worker'" in rejected
    unsupported = kafka.explain(
        conn,
        UnsupportedSaslMechanismError(
            "Kafka broker does not support SCRAM-SHA-512 sasl mechanism. "
            "Enabled mechanisms are: ['PLAIN']"
        ),
    )
    assert unsupported is not None
    assert unsupported.startswith("the broker does not offer SASL SCRAM-SHA-512")
    assert "['PLAIN']" in unsupported
    for line in (rejected, unsupported):
        assert "\n" not in line and SECRET not in line


def test_a_connection_describes_itself_without_secrets() -> None:
    conn = KafkaConnection(
        bootstrap="b:1", protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", token_provider=object()
    )
    assert conn.describe() == "b:1 over SASL_SSL (OAUTHBEARER)"
    assert kafka.as_connection(conn) is conn
