"""TLS and SASL against the real Kafka-protocol test broker.

TLS: Tansu 0.6.0 does not terminate TLS itself (see tests/kafka_broker.py), so it runs
behind a TLS terminator it advertises; every client connection goes through it.  With a
throwaway CA (made as the secured Compose cluster makes its own), the SDK -> worker ->
reader path runs over mutual TLS (client certificate with an encrypted key whose password
comes from a _FILE), and each misconfiguration a user meets is one line: a CA that did not
sign the broker, a certificate for another host, no client certificate.

SASL: Tansu's authentication (``--authentication``) works with its in-memory storage only
as far as the exchange: its storage keeps no SCRAM credentials (storing one is a no-op,
looking one up finds none) and it validates no OAUTHBEARER token, so no client can ever
authenticate.  What is tested is what that allows: the options reach the broker (the
SCRAM exchange runs until the broker answers ``unknown-user``; the token provider is asked
for a token that is sent and rejected), the one-line errors for rejected credentials and
for a mechanism the broker does not offer (PLAIN), and that no password or token shows in
any log line, error or printed settings, with --verbose on.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetledger.cli.commands import main
from fleetledger.kernel.config import Settings, load_settings
from fleetledger.kernel.errors import DeliveryError, StoreError
from fleetledger.kernel.kafka import kafka_connection
from fleetledger.processors.bundle import bundle_digest
from fleetledger.processors.runtimes.kafka_io import KafkaOutputReader, ensure_topics, topic_specs
from fleetledger.producers import Recorder
from fleetledger.producers.simulator import simulate

from .kafka_broker import TansuBroker, TlsTerminator, free_port
from .tls import Pki, make_pki

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[1]
FLEETLEDGER = str(Path(sys.executable).with_name("fleetledger"))
RUNS = 6
PASSWORD = "scram-Pa55-9d2e41c7"
TOKEN = "oauth-token-5b7f0e93c1"


@dataclass
class TlsCluster:
    pki: Pki
    broker: TansuBroker
    mtls: TlsTerminator  # requires a client certificate
    wrong_host: TlsTerminator  # a certificate for kafka.example.test
    key_password_file: Path


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    mtls_port = free_port()
    broker = TansuBroker(advertised_port=mtls_port, max_lifetime_s=600)
    broker.start()
    mtls = TlsTerminator(pki.server_context(client_auth=True), broker.port, port=mtls_port)
    wrong = TlsTerminator(pki.server_context(wrong_host=True), broker.port)
    password_file = pki.client_key.with_name("client-key-password")
    password_file.write_text(pki.client_key_password + "\n", encoding="utf-8")
    try:
        mtls.start()
        wrong.start()
        yield TlsCluster(pki, broker, mtls, wrong, password_file)
    finally:
        mtls.stop()
        wrong.stop()
        broker.cleanup()


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[TansuBroker]:
    broker = TansuBroker(authentication=True, max_lifetime_s=600)
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()


def tls_env(cluster: TlsCluster, port: int, **extra: str) -> dict[str, str]:
    pki = cluster.pki
    return {
        "FLEETLEDGER_BROKER": f"kafka://127.0.0.1:{port}",
        "FLEETLEDGER_KAFKA_SECURITY_PROTOCOL": "SSL",
        "FLEETLEDGER_KAFKA_SSL_CAFILE": str(pki.ca),
        "FLEETLEDGER_KAFKA_SSL_CERTFILE": str(pki.client_cert),
        "FLEETLEDGER_KAFKA_SSL_KEYFILE": str(pki.client_key),
        "FLEETLEDGER_KAFKA_SSL_KEY_PASSWORD_FILE": str(cluster.key_password_file),
        "FLEETLEDGER_ENABLE_IDEMPOTENCE": "false",
        **extra,
    }


def settings_of(env: dict[str, str]) -> Settings:
    return load_settings(
        **{k.removeprefix("FLEETLEDGER_").lower(): v for k, v in env.items() if "FLEETLEDGER_" in k}
    )


def process_env(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without FLEETLEDGER_* settings, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLEDGER_")}
    return {**base, "PYTHONPATH": str(ROOT), **env}


def fleetledger(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    # the projector keeps its read model out of the working folder
    read_db = f"sqlite:///{tempfile.mkdtemp(prefix='fleetledger-read-')}/read.db"
    return subprocess.run(
        [FLEETLEDGER, *args],
        env=process_env({"FLEETLEDGER_READ_DB": read_db, **env}),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single ``fleetledger: error:`` line a failed command printed last."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("fleetledger: error: "), proc.stderr[-3000:]
    return lines[-1]


async def record(settings: Settings, runs: int) -> list[str]:
    async with Recorder.from_url(settings.broker, settings=settings) as rec:
        summary = await simulate(rec, runs=runs, seed=13)
    return list(summary.run_ids)


# --------------------------------------------------------------------------- TLS


def test_sdk_worker_and_reader_run_over_mutual_tls(
    tls_cluster: TlsCluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = f"tls-{os.getpid()}-{int(time.time())}"
    env = tls_env(
        tls_cluster,
        tls_cluster.mtls.port,
        FLEETLEDGER_TOPIC_PREFIX=prefix,
        FLEETLEDGER_GROUP_ID=f"{prefix}-workers",
        FLEETLEDGER_PARTITIONS="2",
        FLEETLEDGER_SESSION_TIMEOUT_S="6",
        FLEETLEDGER_ARCHIVE_DIR=str(tmp_path / "archive"),
    )
    settings = settings_of(env)
    run_ids = asyncio.run(record(settings, RUNS))
    assert len(run_ids) == RUNS

    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [FLEETLEDGER, "--verbose", "worker"],
            env=process_env(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        reader = KafkaOutputReader(settings, timeout_s=20)
        deadline = time.monotonic() + 90
        bundles: dict[str, bytes] = {}
        while time.monotonic() < deadline:
            assert worker.poll() is None, log_path.read_text(errors="replace")[-4000:]
            reader.close()
            try:
                bundles = {b.run_id: b.data for b in reader.bundles()}
            except StoreError:  # the outputs topics exist once the worker has started
                bundles = {}
            if len(bundles) == RUNS:
                break
            time.sleep(1)
        assert sorted(bundles) == sorted(run_ids), log_path.read_text(errors="replace")[-4000:]
        for value in bundles.values():
            bundle = json.loads(value)
            assert bundle["integrity"]["digest"] == bundle_digest(bundle)
        assert {t["run_id"] for t in reader.totals()} == set(run_ids)
    finally:
        os.kill(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)

    # The read commands over TLS, configured with flags this time.
    pki = tls_cluster.pki
    flags = [
        "--kafka-security-protocol", "SSL",
        "--kafka-ssl-cafile", str(pki.ca),
        "--kafka-ssl-certfile", str(pki.client_cert),
        "--kafka-ssl-keyfile", str(pki.client_key),
        "--kafka-ssl-key-password-file", str(tls_cluster.key_password_file),
    ]  # fmt: skip
    broker = ["--broker", env["FLEETLEDGER_BROKER"]]
    monkeypatch.setenv("FLEETLEDGER_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("FLEETLEDGER_READ_DB", f"sqlite:///{tmp_path / 'read.db'}")
    monkeypatch.setenv("FLEETLEDGER_PROJECTOR_GROUP_ID", f"{prefix}-projector")
    # the projector reads the output topics over TLS into the read model
    assert main([*flags, "projector", "--once", *broker]) == 0
    capsys.readouterr()
    assert main([*flags, "costs", "--json", *broker]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report, "a cost report read over TLS"

    # Every connection went through the TLS listener; the worker ran with --verbose and
    # its log has Faust's and aiokafka's debug lines, but never the key's password.
    assert tls_cluster.mtls.connections >= 4
    text = log_path.read_text(errors="replace")
    assert "DEBUG" in text
    assert tls_cluster.pki.client_key_password not in text


def test_a_ca_that_did_not_sign_the_broker_is_one_line_for_the_sdk_the_worker_and_the_cli(
    tls_cluster: TlsCluster,
) -> None:
    other = str(tls_cluster.pki.other_ca)
    env = tls_env(tls_cluster, tls_cluster.mtls.port, FLEETLEDGER_KAFKA_SSL_CAFILE=other)
    where = f"cannot connect to Kafka at 127.0.0.1:{tls_cluster.mtls.port} over SSL: "
    found = f"the broker's certificate is not signed by a CA in the CA bundle '{other}' ("
    expected = "); expected FLEETLEDGER_KAFKA_SSL_CAFILE to name the CA bundle that signed"
    with pytest.raises(DeliveryError) as info:
        asyncio.run(record(settings_of(env), 1))
    message = str(info.value)
    assert message.startswith(where + found) and expected in message and "\n" not in message
    # the Kafka client among the read commands is the projector: `runs` reads the read model
    for command in (["worker"], ["projector", "--once"]):
        line = one_error_line(fleetledger(*command, env=env))
        assert line.startswith(f"fleetledger: error: {where}{found}") and expected in line


def test_a_certificate_for_another_host_is_one_line_unless_hostname_checks_are_off(
    tls_cluster: TlsCluster, topic_prefix: str
) -> None:
    env = tls_env(tls_cluster, tls_cluster.wrong_host.port, FLEETLEDGER_TOPIC_PREFIX=topic_prefix)
    settings = settings_of(env)
    with pytest.raises(StoreError) as info:
        asyncio.run(ensure_topics(kafka_connection(settings), [topic_specs(settings).events]))
    message = str(info.value)
    assert "the broker's certificate is not valid for 127.0.0.1" in message
    assert "FLEETLEDGER_KAFKA_SSL_CHECK_HOSTNAME=false" in message and "\n" not in message
    # Still verified against the CA, only not against the host name.  (The bootstrap goes
    # through the mismatched listener; the broker it advertises has the right certificate.)
    relaxed = settings_of({**env, "FLEETLEDGER_KAFKA_SSL_CHECK_HOSTNAME": "false"})
    created = asyncio.run(
        ensure_topics(kafka_connection(relaxed), [topic_specs(relaxed).events], timeout_s=20)
    )
    assert created == {f"{topic_prefix}.events": "created"}


def test_a_broker_that_requires_a_client_certificate_says_so_in_one_line(
    tls_cluster: TlsCluster,
) -> None:
    env = tls_env(tls_cluster, tls_cluster.mtls.port)
    for name in ("CERTFILE", "KEYFILE", "KEY_PASSWORD_FILE"):
        del env[f"FLEETLEDGER_KAFKA_SSL_{name}"]
    line = one_error_line(fleetledger("projector", "--once", env=env))
    assert "the broker closed the connection after the TLS handshake" in line
    assert "expected the client certificate it requires (FLEETLEDGER_KAFKA_SSL_CERTFILE" in line


# --------------------------------------------------------------------------- SASL


def sasl_env(broker: TansuBroker, mechanism: str, tmp_path: Path) -> dict[str, str]:
    env = {
        "FLEETLEDGER_BROKER": f"kafka://{broker.bootstrap}",
        "FLEETLEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "FLEETLEDGER_KAFKA_SASL_MECHANISM": mechanism,
        "FLEETLEDGER_ENABLE_IDEMPOTENCE": "false",
    }
    if mechanism == "OAUTHBEARER":
        token = tmp_path / "token"
        token.write_text(TOKEN, encoding="utf-8")
        env["FLEETLEDGER_KAFKA_SASL_OAUTH_TOKEN_PROVIDER"] = "tests.tokens:FileTokenProvider"
        env["TEST_OAUTH_TOKEN_FILE"] = str(token)
    else:
        password = tmp_path / "password"
        password.write_text(PASSWORD + "\n", encoding="utf-8")
        env["FLEETLEDGER_KAFKA_SASL_USERNAME"] = "fleetledger-worker"
        env["FLEETLEDGER_KAFKA_SASL_PASSWORD_FILE"] = str(password)
    return env


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "OAUTHBEARER"])
def test_rejected_credentials_are_one_line_and_no_secret_is_ever_shown(
    sasl_broker: TansuBroker,
    mechanism: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The worker with --verbose (debug logs, traceback), a read command and the printed
    settings: the password or token is in none of them."""
    env = sasl_env(sasl_broker, mechanism, tmp_path)
    secret = TOKEN if mechanism == "OAUTHBEARER" else PASSWORD
    worker = fleetledger("--verbose", "worker", env=env)
    line = one_error_line(worker)
    assert f"over SASL_PLAINTEXT ({mechanism}" in line
    assert f"the broker rejected the SASL {mechanism} credentials" in line
    if mechanism == "OAUTHBEARER":
        # The provider was asked for the token, which aiokafka sent (and logged at DEBUG
        # level, as every request: the log filter replaced it).
        assert (tmp_path / "token.calls").read_text().count("token") >= 1
        assert "SASL exchange not logged" in worker.stderr
    else:
        assert "of user 'fleetledger-worker'" in line
    assert "Traceback" in worker.stderr and "DEBUG" in worker.stderr  # --verbose was on
    texts = [worker.stdout, worker.stderr]

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("FLEETLEDGER_READ_DB", f"sqlite:///{tmp_path / 'read.db'}")
    assert main(["--verbose", "projector", "--once"]) == 2
    monkeypatch.delenv("FLEETLEDGER_KAFKA_SASL_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("FLEETLEDGER_KAFKA_SASL_PASSWORD", secret)
    assert main(["config"]) == 0 and main(["config", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "the broker rejected" in err and "**********" in out
    texts += [out, err]
    for text in texts:
        assert secret not in text


def test_the_sdk_reports_rejected_credentials_and_unoffered_mechanisms_in_one_line(
    sasl_broker: TansuBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    scram = settings_of(sasl_env(sasl_broker, "SCRAM-SHA-512", tmp_path))
    with caplog.at_level(logging.DEBUG), pytest.raises(DeliveryError) as info:
        asyncio.run(record(scram, 1))
    message = str(info.value)
    assert "the broker rejected the SASL SCRAM-SHA-512 credentials of user" in message
    assert "\n" not in message and PASSWORD not in message
    assert PASSWORD not in caplog.text

    scram256 = settings_of(sasl_env(sasl_broker, "SCRAM-SHA-256", tmp_path))
    with pytest.raises(DeliveryError, match="rejected the SASL SCRAM-SHA-256 credentials"):
        asyncio.run(record(scram256, 1))

    plain = settings_of(sasl_env(sasl_broker, "PLAIN", tmp_path))
    with pytest.raises(DeliveryError) as info:
        asyncio.run(record(plain, 1))
    message = str(info.value)
    assert "the broker does not offer SASL PLAIN" in message
    assert "expected FLEETLEDGER_KAFKA_SASL_MECHANISM set to a mechanism" in message
    assert "\n" not in message and PASSWORD not in message

    # A client without SASL against a listener that requires it.
    none = load_settings(broker=f"kafka://{sasl_broker.bootstrap}")
    with pytest.raises(StoreError, match="skip the authentication its listener requires"):
        asyncio.run(ensure_topics(kafka_connection(none), [], timeout_s=10))
