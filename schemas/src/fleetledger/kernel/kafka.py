"""How every Kafka client fleetledger opens is configured, from :class:`Settings`, in one place.

The SDK's producer, the worker's Faust app, its output producer, admin client and gap
reader, the CLI's readers and the benchmark all connect through a :class:`KafkaConnection`
built by :func:`kafka_connection`: the bootstrap servers plus the security settings (TLS
with a CA bundle, an optional client certificate and hostname verification; SASL PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER with a pluggable token provider).  Its
:meth:`~KafkaConnection.client_options` are the keyword arguments of aiokafka's producer,
consumer and admin client; the Faust runtime turns :meth:`~KafkaConnection.security_options`
into Faust's broker credentials, so Faust's own clients connect the same way.

This module is also the one home of the compression mapping (:func:`compression_type`)
and of the message-size formulas (:func:`events_request_bytes`, :func:`max_record_bytes`)
that the producers and the topic configs share, and of the key partitioning
(:func:`partition_for`, :class:`KeyPartitioner`) the SDK and the worker both use.

It imports no Kafka library at import time (:func:`key_hash` borrows aiokafka's
``murmur2`` when called): options are plain values (strings, an :class:`ssl.SSLContext`,
the token provider object the settings name).  When a client cannot connect,
:func:`connect_failure` turns what went wrong into one line (wrong CA, hostname mismatch,
a plaintext listener, rejected credentials, a mechanism the broker does not offer...).

Secrets (the SASL password, the client key's password) are :class:`~pydantic.SecretStr`
in the settings and revealed only inside :meth:`~KafkaConnection.security_options`; no
message, ``repr`` or log line written here contains them, and :func:`redact_client_logs`
keeps the Kafka client's debug log of the SASL exchange out of the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

from fleetledger.kernel.errors import ConfigError
from fleetledger.kernel.errors import one_line as _one_line
from fleetledger.kernel.plugins import load_callable

if TYPE_CHECKING:
    from fleetledger.kernel.config import Settings

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]

SECURITY_PROTOCOLS: tuple[SecurityProtocol, ...] = (
    "PLAINTEXT",
    "SSL",
    "SASL_PLAINTEXT",
    "SASL_SSL",
)
SASL_MECHANISMS: tuple[SaslMechanism, ...] = (
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
    "OAUTHBEARER",
)
COMPRESSIONS = ("none", "gzip", "lz4", "zstd", "snappy")

#: The Python library the Kafka client needs for each compression (gzip is stdlib).
_CODEC_LIBRARY = {"lz4": "cramjam", "zstd": "cramjam", "snappy": "cramjam"}

#: Room on top of the largest bundle for the rest of the SDK's largest request.
REQUEST_HEADROOM_BYTES = 100_000
#: The smallest producer request size (the Kafka client's default).
MIN_REQUEST_BYTES = 1_048_576
#: Headroom between the largest input message and the broker/producer limits of the
#: topics the worker writes (record framing, key and dead-letter headers).
MESSAGE_OVERHEAD_BYTES = 64 * 1024

#: Loggers of the Kafka clients that log requests and connection errors.
CLIENT_LOGGERS = ("aiokafka.conn", "aiokafka.client", "faust.transport.drivers.aiokafka")
#: The Kafka API key of SaslAuthenticate, whose requests carry the credentials.
_SASL_AUTHENTICATE_API_KEY = 36

_TLS = ("SSL", "SASL_SSL")
_SASL = ("SASL_PLAINTEXT", "SASL_SSL")


# --------------------------------------------------------------------------- producers


def compression_type(name: str) -> str | None:
    """The Kafka client's ``compression_type`` for a ``FLEETLEDGER_COMPRESSION`` value.

    ``none`` is no compression; lz4, zstd and snappy need their library installed (it ships
    with the SDK's ``kafka`` extra).
    """
    if name not in COMPRESSIONS:
        raise ConfigError(f"compression: found {name!r}, expected one of {', '.join(COMPRESSIONS)}")
    if name == "none":
        return None
    library = _CODEC_LIBRARY.get(name)
    if library is not None and importlib.util.find_spec(library) is None:
        raise ConfigError(
            f"compression {name!r}: found its Python library {library!r} missing, expected it "
            "installed (it ships with fleetledger; or use FLEETLEDGER_COMPRESSION=gzip)"
        )
    return name


def events_request_bytes(settings: Settings) -> int:
    """Largest request (so largest events message) the SDK's producer may send."""
    return max(settings.max_message_bytes + REQUEST_HEADROOM_BYTES, MIN_REQUEST_BYTES)


def max_record_bytes(settings: Settings) -> int:
    """Largest record the worker publishes, and the ``max.message.bytes`` of its topics.

    At least the largest events message the SDK may send plus header room, so that any input
    message fits the dead-letter topic unchanged (bundles above ``max_message_bytes`` are
    archived, never published whole).
    """
    return events_request_bytes(settings) + MESSAGE_OVERHEAD_BYTES


def output_producer_options(settings: Settings) -> dict[str, Any]:
    """The worker's output producer options (besides the connection)."""
    return {
        "acks": "all",
        "enable_idempotence": settings.enable_idempotence,
        "compression_type": compression_type(settings.compression),
        "max_request_size": max_record_bytes(settings),
        # A partition's batches go one per produce request: 16 KiB (the default) held ~19
        # ledger entries, so a busy message waited for ~9 round trips per partition.
        "max_batch_size": max_record_bytes(settings),
        "linger_ms": 0,
    }


def key_hash(key: str) -> int:
    """``murmur2(UTF-8 key) & 0x7fffffff``: what the Java/aiokafka default partitioner
    takes modulo the partition count, so a run's messages and outputs land where any other
    client would put them (SPEC 9.1, "Partitioning")."""
    from aiokafka.partitioner import murmur2

    return int(murmur2(key.encode())) & 0x7FFFFFFF


def partition_for(key: str, partitions: int) -> int:
    """The partition of ``key`` under the default partitioner."""
    return key_hash(key) % partitions


class KeyPartitioner:
    """:func:`partition_for`, memoized: aiokafka's ``murmur2`` is pure Python (~4 us for a
    run id) and every record of a run has the same key, so hashes are kept per key, at most
    ``limit`` of them (the memo starts over when full)."""

    def __init__(self, limit: int = 65_536) -> None:
        self._limit = limit
        self._hashes: dict[str, int] = {}

    def __call__(self, key: str, partitions: int) -> int:
        h = self._hashes.get(key)
        if h is None:
            if len(self._hashes) >= self._limit:
                self._hashes.clear()
            h = self._hashes[key] = key_hash(key)
        return h % partitions


# --------------------------------------------------------------------------- connection


@dataclass(frozen=True, repr=False, eq=False)
class KafkaConnection:
    """Where the cluster is and how to connect to it; every client is built from one.

    Build it with :func:`kafka_connection` (from settings) or :meth:`plaintext`.  The
    ``repr`` names the servers and the security protocol, never a secret.
    """

    bootstrap: str
    protocol: SecurityProtocol = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    token_provider: Any = None
    #: For messages: where the trusted CAs came from, and whether a client cert is sent.
    cafile: Path | None = None
    client_certificate: bool = False
    check_hostname: bool = True

    @classmethod
    def plaintext(cls, bootstrap: str) -> KafkaConnection:
        return cls(bootstrap=bootstrap)

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(s for s in self.bootstrap.split(",") if s)

    @property
    def tls(self) -> bool:
        return self.protocol in _TLS

    @property
    def sasl(self) -> bool:
        return self.protocol in _SASL

    def security_options(self) -> dict[str, Any]:
        """The security keyword arguments of every aiokafka client (and of a connection).

        The same keys, for the same protocol, as Faust derives from its broker credentials.
        Whoever asks for them gets a client whose debug log keeps the secrets out
        (:func:`redact_client_logs`).
        """
        if self.sasl:
            redact_client_logs(self)
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context
        if self.sasl:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["ssl_context"] = self.ssl_context
            if self.sasl_mechanism == "OAUTHBEARER":
                options["sasl_oauth_token_provider"] = self.token_provider
            else:
                options["sasl_plain_username"] = self.sasl_username
                options["sasl_plain_password"] = (
                    None if self.sasl_password is None else self.sasl_password.get_secret_value()
                )
        return options

    def client_options(self, client_id: str) -> dict[str, Any]:
        """``bootstrap_servers``, ``client_id`` and the security options of one client."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "client_id": client_id}
        return options | self.security_options()

    def describe(self) -> str:
        """``host:port over SASL_SSL (SCRAM-SHA-512 as 'user')``: no secret, one line."""
        if self.protocol == "PLAINTEXT":
            return self.bootstrap
        how: str = self.protocol
        if self.sasl:
            who = "" if self.sasl_mechanism == "OAUTHBEARER" else f" as {self.sasl_username!r}"
            how = f"{how} ({self.sasl_mechanism}{who})"
        return f"{self.bootstrap} over {how}"

    def __repr__(self) -> str:
        return f"KafkaConnection({self.describe()})"


def as_connection(target: str | KafkaConnection) -> KafkaConnection:
    """A bootstrap string (``host:port[,host:port]``) is a plaintext connection."""
    return target if isinstance(target, KafkaConnection) else KafkaConnection.plaintext(target)


def _var(field: str) -> str:
    return f"FLEETLEDGER_{field.upper()}"


def check_security(settings: Settings) -> None:
    """Raise :class:`ConfigError` for security settings that contradict each other.

    Settings that the chosen protocol would silently ignore are errors too: a CA file with
    ``PLAINTEXT``, a password without SASL...  Reads no file.
    """
    protocol = settings.kafka_security_protocol
    mechanism = settings.kafka_sasl_mechanism
    p = f"{_var('kafka_security_protocol')}={protocol}"
    url = settings.broker_url()
    if url.kind == "kafka" and url.raw.lower().startswith("kafka+plaintext:") and protocol in _TLS:
        raise ConfigError(
            f"broker URL {url.raw!r} says plaintext but {p}; expected kafka://host:port "
            "(the security protocol setting says how to connect)"
        )
    if protocol in _SASL and mechanism is None:
        raise ConfigError(
            f"{p} needs {_var('kafka_sasl_mechanism')}; expected one of "
            f"{', '.join(SASL_MECHANISMS)}"
        )
    if protocol not in _SASL:
        given = [
            f
            for f in (
                "kafka_sasl_mechanism",
                "kafka_sasl_username",
                "kafka_sasl_password",
                "kafka_sasl_oauth_token_provider",
            )
            if getattr(settings, f) is not None
        ]
        if given:
            raise ConfigError(
                f"{', '.join(_var(f) for f in given)} given but {p} uses no SASL; expected "
                f"{_var('kafka_security_protocol')}=SASL_SSL (or SASL_PLAINTEXT)"
            )
    if protocol not in _TLS:
        given = [
            f
            for f in (
                "kafka_ssl_cafile",
                "kafka_ssl_certfile",
                "kafka_ssl_keyfile",
                "kafka_ssl_key_password",
            )
            if getattr(settings, f) is not None
        ]
        if not settings.kafka_ssl_check_hostname:
            given.append("kafka_ssl_check_hostname")
        if given:
            raise ConfigError(
                f"{', '.join(_var(f) for f in given)} given but {p} uses no TLS; expected "
                f"{_var('kafka_security_protocol')}=SSL (or SASL_SSL)"
            )
    if settings.kafka_ssl_keyfile is not None and settings.kafka_ssl_certfile is None:
        raise ConfigError(
            f"{_var('kafka_ssl_keyfile')} given without {_var('kafka_ssl_certfile')}; expected "
            "the client certificate with its key"
        )
    if settings.kafka_ssl_key_password is not None and settings.kafka_ssl_certfile is None:
        raise ConfigError(
            f"{_var('kafka_ssl_key_password')} given without {_var('kafka_ssl_certfile')}; "
            "expected a client certificate whose key it decrypts"
        )
    if mechanism == "OAUTHBEARER":
        if settings.kafka_sasl_oauth_token_provider is None:
            raise ConfigError(
                f"{_var('kafka_sasl_mechanism')}=OAUTHBEARER needs "
                f"{_var('kafka_sasl_oauth_token_provider')}=package.module:factory"
            )
        for f in ("kafka_sasl_username", "kafka_sasl_password"):
            if getattr(settings, f) is not None:
                raise ConfigError(
                    f"{_var(f)} given with {_var('kafka_sasl_mechanism')}=OAUTHBEARER; expected "
                    f"the token from {_var('kafka_sasl_oauth_token_provider')} only"
                )
    elif mechanism is not None:
        missing = [
            f
            for f in ("kafka_sasl_username", "kafka_sasl_password")
            if getattr(settings, f) is None
        ]
        if missing:
            raise ConfigError(
                f"{_var('kafka_sasl_mechanism')}={mechanism} needs "
                f"{' and '.join(_var(f) for f in missing)} (the password also as "
                f"{_var('kafka_sasl_password_file')})"
            )
        if settings.kafka_sasl_oauth_token_provider is not None:
            raise ConfigError(
                f"{_var('kafka_sasl_oauth_token_provider')} given with "
                f"{_var('kafka_sasl_mechanism')}={mechanism}; expected OAUTHBEARER"
            )


def tls_context(
    cafile: Path | None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    key_password: SecretStr | None = None,
    *,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client TLS context: brokers verified against ``cafile`` (else the system's CAs)."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{_var('kafka_ssl_cafile')}={str(cafile)!r}: cannot load it ({_one_line(exc)}); "
            "expected a PEM file with the certificates of the CAs that signed the brokers'"
        ) from None
    context.check_hostname = check_hostname
    if certfile is not None:
        password = None if key_password is None else key_password.get_secret_value()
        try:
            context.load_cert_chain(certfile, keyfile, password)
        except (OSError, ssl.SSLError) as exc:
            where = f"{_var('kafka_ssl_certfile')}={str(certfile)!r}"
            if keyfile is not None:
                where += f", {_var('kafka_ssl_keyfile')}={str(keyfile)!r}"
            raise ConfigError(
                f"{where}: cannot load the client certificate and key ({_one_line(exc)}); "
                "expected PEM files with a certificate and its private key (and "
                f"{_var('kafka_ssl_key_password')}[_FILE] when the key is encrypted)"
            ) from None
    return context


def load_token_provider(spec: str) -> Any:
    """The OAUTHBEARER token provider ``package.module:factory`` names, made by calling it.

    The factory (a class or a function taking no argument) returns an
    ``aiokafka.abc.AbstractTokenProvider``: an object whose ``async token()`` returns the
    current access token.
    """
    where = _var("kafka_sasl_oauth_token_provider")
    factory = load_callable(spec, where=where, expected="factory")
    try:
        provider = factory()
    except Exception as exc:
        raise ConfigError(f"{where}: calling it failed ({_one_line(exc)})") from exc
    if not callable(getattr(provider, "token", None)):
        raise ConfigError(
            f"{where}: it returned {type(provider).__name__}, expected an object with "
            "`async def token()` (an aiokafka.abc.AbstractTokenProvider)"
        )
    return provider


def kafka_connection(settings: Settings) -> KafkaConnection:
    """The connection every Kafka client of ``settings`` uses (a ``kafka://`` broker).

    Checks the security settings (:func:`check_security`), loads the CA bundle and client
    certificate, and makes the token provider: a problem is one :class:`ConfigError`.
    """
    url = settings.broker_url()
    if url.kind != "kafka":
        raise ConfigError(f"Kafka clients need a kafka:// broker; found {url.raw!r}")
    check_security(settings)
    protocol = settings.kafka_security_protocol
    context = None
    if protocol in _TLS:
        context = tls_context(
            settings.kafka_ssl_cafile,
            settings.kafka_ssl_certfile,
            settings.kafka_ssl_keyfile,
            settings.kafka_ssl_key_password,
            check_hostname=settings.kafka_ssl_check_hostname,
        )
    provider = None
    if settings.kafka_sasl_mechanism == "OAUTHBEARER" and protocol in _SASL:
        assert settings.kafka_sasl_oauth_token_provider is not None
        provider = load_token_provider(settings.kafka_sasl_oauth_token_provider)
    sasl = protocol in _SASL
    return KafkaConnection(
        bootstrap=url.bootstrap,
        protocol=protocol,
        ssl_context=context,
        sasl_mechanism=settings.kafka_sasl_mechanism if sasl else None,
        sasl_username=settings.kafka_sasl_username if sasl else None,
        sasl_password=settings.kafka_sasl_password if sasl else None,
        token_provider=provider,
        cafile=settings.kafka_ssl_cafile,
        client_certificate=settings.kafka_ssl_certfile is not None,
        check_hostname=settings.kafka_ssl_check_hostname,
    )


# --------------------------------------------------------------------------- failures

#: Kafka protocol error codes of the SASL exchange.
_UNSUPPORTED_SASL_MECHANISM = 33
_ILLEGAL_SASL_STATE = 34
_SASL_AUTHENTICATION_FAILED = 58

#: OpenSSL's X509_V_ERR codes the messages tell apart.
_X509_HOSTNAME_MISMATCH = (62, 64)  # host name, IP address
_X509_UNTRUSTED = (2, 18, 19, 20, 21)
_X509_EXPIRED = (9, 10)

Connect = Callable[..., Awaitable[Any]]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _var_protocol() -> str:
    return _var("kafka_security_protocol")


def explain(conn: KafkaConnection, exc: BaseException, host: str = "") -> str | None:
    """What went wrong, as ``found ...; expected ...``, when ``exc`` says it; else None."""
    for e in _chain(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            code = e.verify_code
            detail = e.verify_message or e.reason or "certificate verify failed"
            if code in _X509_HOSTNAME_MISMATCH:
                return (
                    f"the broker's certificate is not valid for {host or 'the host name'} "
                    f"({detail}); expected a certificate naming the host in "
                    f"FLEETLEDGER_BROKER, or {_var('kafka_ssl_check_hostname')}=false"
                )
            where = (
                f"the CA bundle {str(conn.cafile)!r}"
                if conn.cafile is not None
                else "the system trust store"
            )
            if code in _X509_EXPIRED:
                return (
                    f"the broker's certificate is outside its validity period ({detail}); "
                    "expected a current certificate"
                )
            if code in _X509_UNTRUSTED:
                return (
                    f"the broker's certificate is not signed by a CA in {where} ({detail}); "
                    f"expected {_var('kafka_ssl_cafile')} to name the CA bundle that signed "
                    "the brokers' certificates"
                )
            return f"the broker's certificate failed verification ({detail})"
        if isinstance(e, ssl.SSLError):
            reason = (e.reason or "").upper()
            if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL") or (
                isinstance(e, ssl.SSLEOFError)
            ):
                return (
                    f"the broker did not answer the TLS handshake ({_one_line(e)}); expected a "
                    f"TLS listener, or {_var_protocol()}=PLAINTEXT (or SASL_PLAINTEXT) for a "
                    "plaintext one"
                )
            if "CERTIFICATE_REQUIRED" in reason or (
                not conn.client_certificate and "HANDSHAKE_FAILURE" in reason
            ):
                return (
                    f"the broker requires a client certificate ({_one_line(e)}); expected "
                    f"{_var('kafka_ssl_certfile')} and {_var('kafka_ssl_keyfile')}"
                )
            if any(w in reason for w in ("BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN")):
                return (
                    f"the broker rejected the client certificate ({_one_line(e)}); expected one "
                    "signed by a CA the broker trusts"
                )
            return f"the TLS handshake failed ({_one_line(e)})"
        errno = getattr(e, "errno", None)
        if errno == _SASL_AUTHENTICATION_FAILED:
            return (
                f"the broker rejected the SASL {conn.sasl_mechanism} credentials"
                f"{_who(conn)} ({_one_line(e)}); expected {_credentials_hint(conn)}"
            )
        if errno == _UNSUPPORTED_SASL_MECHANISM or type(e).__name__.startswith(
            "UnsupportedSaslMechanism"
        ):
            return _not_offered(conn, _one_line(e))
        if errno == _ILLEGAL_SASL_STATE:
            return f"the broker refused the SASL exchange ({_one_line(e)})"
    return None


def _who(conn: KafkaConnection) -> str:
    return "" if conn.sasl_username is None else f" of user {conn.sasl_username!r}"


def _credentials_hint(conn: KafkaConnection) -> str:
    if conn.sasl_mechanism == "OAUTHBEARER":
        return f"a token the broker accepts from {_var('kafka_sasl_oauth_token_provider')}"
    return (
        f"the user and password the broker knows ({_var('kafka_sasl_username')}, "
        f"{_var('kafka_sasl_password')}[_FILE]) for this mechanism"
    )


def _not_offered(conn: KafkaConnection, found: str) -> str:
    return (
        f"the broker does not offer SASL {conn.sasl_mechanism} ({found}); expected "
        f"{_var('kafka_sasl_mechanism')} set to a mechanism its listener enables"
    )


def unreachable(bootstrap: str, found: str) -> str:
    """The line for a cluster no bootstrap server of which answered at all."""
    return (
        f"cannot reach Kafka at {bootstrap}: {found}; expected a running broker "
        "(check --broker / FLEETLEDGER_BROKER)"
    )


async def connect_failure(
    conn: KafkaConnection,
    exc: BaseException | None,
    connect: Connect | None = None,
    *,
    timeout_s: float = 10.0,
) -> str:
    """One line saying why a client could not connect, after ``exc`` (None: a timeout).

    A client's start often reports only that no bootstrap server answered; then each
    server is tried once more with ``connect`` (the Kafka client's connection factory,
    called as ``connect(host, port, request_timeout_ms=..., **security_options)``) to learn
    why: a certificate the CA bundle does not cover, a host name the certificate does not
    name, a plaintext listener, rejected credentials, a mechanism the broker does not offer.
    """
    found = None if exc is None else explain(conn, exc)
    refused = None
    if found is None and connect is not None:
        found, refused = await _probe(conn, connect, timeout_s)
        if found == _CONNECTED:
            assert exc is not None
            found = (
                f"a connection works but the client's requests failed ({_one_line(exc)}); "
                "a broker closes connections that skip the authentication its listener "
                f"requires: expected {_var_protocol()} (and the SASL settings) to match it"
            )
    if found is not None:
        return f"cannot connect to Kafka at {conn.describe()}: {found}"
    if refused is None:
        if exc is None or isinstance(exc, TimeoutError) or not str(exc):
            refused = f"no answer within {timeout_s:g}s"
            if conn.tls:
                refused += (
                    "; a plaintext listener never answers a TLS handshake, so check "
                    f"{_var_protocol()} too"
                )
        else:
            refused = _one_line(exc)
    return unreachable(conn.describe(), f"found no broker answering ({refused})")


#: What :func:`_probe` finds when a connection works.
_CONNECTED = "connected"


async def _probe(
    conn: KafkaConnection, connect: Connect, timeout_s: float
) -> tuple[str | None, str | None]:
    """Connect to each bootstrap server once: (the explanation of the first failure that
    has one, else why the last server did not answer)."""
    refused: str | None = None
    for server in conn.servers:
        host, _, port = server.rpartition(":")
        try:
            client = await asyncio.wait_for(
                connect(
                    host,
                    int(port),
                    request_timeout_ms=int(timeout_s * 1000),
                    **conn.security_options(),
                ),
                timeout_s,
            )
        except ssl.SSLError as exc:
            return explain(conn, exc, host), None
        except (OSError, TimeoutError) as exc:
            refused = _one_line(exc) if str(exc) else f"no answer within {timeout_s:g}s"
            continue
        except Exception as exc:
            return explain(conn, exc, host) or _during_handshake(conn, exc), None
        with contextlib.suppress(Exception):
            client.close()
        return _CONNECTED, None
    return None, refused


def _during_handshake(conn: KafkaConnection, exc: BaseException) -> str:
    """A connection that broke before it was ready, explained by the protocol in use."""
    text = _one_line(exc)
    if (
        conn.sasl
        and conn.sasl_mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
        and isinstance(exc, (KeyError, ValueError))
    ):
        # The SCRAM client found no server signature in the broker's last message: the
        # broker ended the exchange with an error (unknown user, wrong password).
        return (
            f"the broker rejected the SASL {conn.sasl_mechanism} credentials{_who(conn)} "
            f"(the SCRAM exchange ended without a server signature: {text}); expected "
            f"{_credentials_hint(conn)}"
        )
    closed = "closed" in text.lower()
    if conn.sasl and closed:
        return _not_offered(conn, f"it closed the connection at the SASL handshake: {text}")
    if conn.tls and closed:
        return (
            f"the broker closed the connection after the TLS handshake ({text}); expected "
            + (
                "the client certificate it requires "
                f"({_var('kafka_ssl_certfile')}, {_var('kafka_ssl_keyfile')})"
                if not conn.client_certificate
                else "a client certificate it accepts"
            )
            + f", or {_var_protocol()} set to what the listener speaks"
        )
    if conn.protocol == "PLAINTEXT" and closed:
        return (
            f"the broker closed the connection ({text}); expected a plaintext listener, or "
            f"{_var_protocol()} set to what the listener speaks (SSL, SASL_SSL...)"
        )
    return f"the connection failed ({text})"


# --------------------------------------------------------------------------- logs


class _RedactSecrets(logging.Filter):
    """Keeps SASL exchanges and known secret values out of the Kafka clients' log records."""

    def __init__(self) -> None:
        super().__init__("fleetledger-redact")
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_is_sasl_exchange(a) for a in args):
            record.args = tuple(
                "<SASL exchange not logged>" if _is_sasl_exchange(a) else a for a in args
            )
        if self.secrets:
            try:
                message = record.getMessage()
            except Exception:
                return True
            if any(s in message for s in self.secrets):
                for secret in self.secrets:
                    message = message.replace(secret, "**********")
                record.msg, record.args = message, ()
        return True


def _is_sasl_exchange(value: object) -> bool:
    return getattr(value, "API_KEY", None) == _SASL_AUTHENTICATE_API_KEY or type(
        value
    ).__name__.startswith("SaslAuthenticate")


def redact_client_logs(conn: KafkaConnection) -> None:
    """Keep ``conn``'s secrets and SASL exchanges out of the Kafka clients' log records.

    The clients log every request at DEBUG level, the SASL ones with their payload (a PLAIN
    password, an OAUTHBEARER token).  A filter on their loggers replaces those arguments and
    any known secret value; installing it again only adds the new secrets.
    """
    secrets = set()
    if conn.sasl_password is not None:
        secrets.add(conn.sasl_password.get_secret_value())
    for name in CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        found = next((f for f in logger.filters if isinstance(f, _RedactSecrets)), None)
        if found is None:
            found = _RedactSecrets()
            logger.addFilter(found)
        found.secrets |= {s for s in secrets if s}


__all__ = [
    "COMPRESSIONS",
    "MESSAGE_OVERHEAD_BYTES",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "KafkaConnection",
    "KeyPartitioner",
    "SaslMechanism",
    "SecurityProtocol",
    "as_connection",
    "check_security",
    "compression_type",
    "connect_failure",
    "events_request_bytes",
    "explain",
    "kafka_connection",
    "key_hash",
    "load_token_provider",
    "max_record_bytes",
    "output_producer_options",
    "partition_for",
    "redact_client_logs",
    "tls_context",
    "unreachable",
]
