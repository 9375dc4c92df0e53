"""Throwaway TLS material for the tests, made with the functions the secured Compose
cluster uses (deploy/compose/secure/make_secrets.py)."""

from __future__ import annotations

import importlib.util
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "compose" / "secure" / "make_secrets.py"


def make_secrets_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_secrets", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Pki:
    """Files of one test CA: the server's certificate for 127.0.0.1/localhost, another for
    a host the clients do not connect to, a client certificate with an encrypted key, and
    a second CA that signed none of them."""

    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    wrong_host_cert: Path
    wrong_host_key: Path
    client_cert: Path
    client_key: Path
    client_key_password: str

    def server_context(
        self, *, wrong_host: bool = False, client_auth: bool = False
    ) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if wrong_host:
            context.load_cert_chain(self.wrong_host_cert, self.wrong_host_key)
        else:
            context.load_cert_chain(self.server_cert, self.server_key)
        if client_auth:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.ca)
        return context


def make_pki(directory: Path) -> Pki:
    m = make_secrets_module()
    directory.mkdir(parents=True, exist_ok=True)
    ca = m.make_ca("fleetledger test CA")
    other = m.make_ca("a CA that signed nothing here")
    password = "client-key-password-7f3a"
    files: dict[str, Path] = {}

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        files[name] = path
        return path

    write("ca.pem", m.cert_pem(ca[1]))
    write("other-ca.pem", m.cert_pem(other[1]))
    key, cert = m.make_certificate(ca, "localhost", ["127.0.0.1", "localhost"])
    write("server.pem", m.cert_pem(cert))
    write("server.key", m.key_pem(key))
    key, cert = m.make_certificate(ca, "kafka.example.test", ["kafka.example.test"])
    write("wrong-host.pem", m.cert_pem(cert))
    write("wrong-host.key", m.key_pem(key))
    key, cert = m.make_certificate(ca, "fleetledger-worker", [], client=True)
    write("client.pem", m.cert_pem(cert))
    write("client.key", m.key_pem(key, password))
    return Pki(
        ca=files["ca.pem"],
        other_ca=files["other-ca.pem"],
        server_cert=files["server.pem"],
        server_key=files["server.key"],
        wrong_host_cert=files["wrong-host.pem"],
        wrong_host_key=files["wrong-host.key"],
        client_cert=files["client.pem"],
        client_key=files["client.key"],
        client_key_password=password,
    )
