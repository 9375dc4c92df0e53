"""Throwaway TLS material and SCRAM password for the secured Compose cluster.

Run once by the ``kafka-secrets`` service of ``docker-compose.secure.yml`` (with the
fleetledger image's Python, which has ``cryptography``; this folder is mounted into it):

    python make_secrets.py BROKER_DIR CLIENT_DIR [HOST ...]

* ``BROKER_DIR`` (mounted at /etc/kafka/secrets in the broker): ``kafka.keystore.p12`` (the
  broker's key and certificate, signed by a new CA, valid for every HOST), its password in
  ``keystore-password``, and ``ca.pem``;
* ``CLIENT_DIR`` (mounted read-only in the workers and the cli): ``ca.pem`` and
  ``fleetledger-password``, the SCRAM password of the ``fleetledger`` user.

Existing files are kept, so restarting the cluster keeps its certificates and password.
Development only: the CA's key is not kept, and the files are readable by the container
users that need them.  The test suite uses the same functions for its throwaway CAs.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The user ids that read the files: the apache/kafka image's and the fleetledger image's.
KAFKA_UID = 1000
CLIENT_UID = 10001

Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(
        now + datetime.timedelta(days=days)
    )


def make_ca(common_name: str, *, days: int = 825) -> tuple[Key, x509.Certificate]:
    """A new self-signed CA: its key and certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return key, _validity(builder, days).sign(key, hashes.SHA256())


def make_certificate(
    ca: tuple[Key, x509.Certificate],
    common_name: str,
    hosts: list[str],
    *,
    client: bool = False,
    days: int = 825,
) -> tuple[Key, x509.Certificate]:
    """A key and a certificate signed by ``ca``: a server's for ``hosts`` (DNS names or IP
    addresses), or a client's."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, _validity(builder, days).sign(ca_key, hashes.SHA256())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Key, password: str | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password.encode())
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def keystore_p12(
    key: Key, cert: x509.Certificate, ca_cert: x509.Certificate, password: str
) -> bytes:
    """A PKCS#12 keystore (key, certificate, CA chain) for a Java broker."""
    return pkcs12.serialize_key_and_certificates(
        b"kafka", key, cert, [ca_cert], serialization.BestAvailableEncryption(password.encode())
    )


def _write(path: Path, data: bytes, uid: int, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)
    if os.geteuid() == 0:
        os.chown(path, uid, uid)


def write_secrets(broker_dir: Path, client_dir: Path, hosts: list[str]) -> bool:
    """Write the broker's and the clients' files unless they exist; True when written."""
    broker_dir.mkdir(parents=True, exist_ok=True)
    client_dir.mkdir(parents=True, exist_ok=True)
    if (broker_dir / "kafka.keystore.p12").exists() and (client_dir / "ca.pem").exists():
        return False
    ca = make_ca("fleetledger compose CA")
    key, cert = make_certificate(ca, hosts[0], hosts)
    keystore_password = secrets.token_urlsafe(24)
    _write(
        broker_dir / "kafka.keystore.p12",
        keystore_p12(key, cert, ca[1], keystore_password),
        KAFKA_UID,
        0o400,
    )
    _write(broker_dir / "keystore-password", keystore_password.encode(), KAFKA_UID, 0o400)
    _write(broker_dir / "ca.pem", cert_pem(ca[1]), KAFKA_UID, 0o444)
    _write(client_dir / "ca.pem", cert_pem(ca[1]), CLIENT_UID, 0o444)
    _write(
        client_dir / "fleetledger-password",
        secrets.token_urlsafe(24).encode(),
        CLIENT_UID,
        0o400,
    )
    return True


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(f"usage: {sys.argv[0]} BROKER_DIR CLIENT_DIR [HOST ...]", file=sys.stderr)
        return 2
    hosts = argv[2:] or ["kafka", "localhost"]
    written = write_secrets(Path(argv[0]), Path(argv[1]), hosts)
    print("wrote new secrets" if written else "secrets exist; kept them")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
