"""Ed25519 keys and DSSE envelopes (optionally wrapping an in-toto Statement v1).

A signed bundle is a DSSE envelope whose payload is the *exact* canonical (RFC 8785)
bundle bytes; the signature is Ed25519 over ``PAE("DSSEv1", payloadType, payload)``.
``keyid`` is ``sha256(raw 32-byte public key)`` in hex and is only a hint: verifiers
check signatures against keys they pinned, never against a key an envelope names.
Everything here works on bytes; reading and writing files is the caller's business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleetledger.kernel.errors import ConfigError, VerificationError
from fleetledger.processors.canonical import canonical_bytes

BUNDLE_PAYLOAD_TYPE = "application/vnd.fleetledger.bundle+json"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://fleetledger.dev/attestation/bundle/v1"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: ``"DSSEv1" SP len(type) SP type SP len(body) SP body``."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def keyid(key: Ed25519PublicKey) -> str:
    """sha256 hex of the raw 32-byte public key (a hint, never a trust decision)."""
    return hashlib.sha256(raw_public(key)).hexdigest()


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (protect it with the file mode)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes, source: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"key {source!r} cannot be read: {exc}; expected an unencrypted PKCS#8 PEM "
            "Ed25519 private key (fleetledger keys generate)"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"key {source!r} is a {type(key).__name__}; expected an Ed25519 private key"
        )
    return key


_PEM_BEGIN = b"-----BEGIN PUBLIC KEY-----"
_PEM_END = b"-----END PUBLIC KEY-----"


def load_public_keys(pem: bytes, source: str) -> list[Ed25519PublicKey]:
    """Every PEM public key block in ``pem`` (a trust file may hold several)."""
    keys: list[Ed25519PublicKey] = []
    rest = pem
    while (start := rest.find(_PEM_BEGIN)) >= 0:
        end = rest.find(_PEM_END, start)
        if end < 0:
            break
        block, rest = rest[start : end + len(_PEM_END)], rest[end + len(_PEM_END) :]
        try:
            key = serialization.load_pem_public_key(block)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"public key in {source!r} cannot be read: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(
                f"public key in {source!r} is a {type(key).__name__}; expected Ed25519"
            )
        keys.append(key)
    if not keys:
        raise ConfigError(
            f"found no PEM public key in {source!r}; expected '-----BEGIN PUBLIC KEY-----' blocks"
        )
    return keys


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, what: str) -> bytes:
    """Strict standard base64: the text must be exactly what re-encoding gives."""
    if not isinstance(text, str):
        raise VerificationError(
            "envelope", f"found {what} of type {type(text).__name__}, expected a base64 string"
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError("envelope", f"{what} is not base64 ({exc})") from exc
    if b64(data) != text:
        raise VerificationError(
            "envelope", f"found non-canonical base64 in {what}, expected standard padded base64"
        )
    return data


def sign_envelope(payload: bytes, payload_type: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    """A DSSE envelope with one Ed25519 signature over PAE(payload_type, payload)."""
    sig = key.sign(pae(payload_type, payload))
    return {
        "payload": b64(payload),
        "payloadType": payload_type,
        "signatures": [{"keyid": keyid(key.public_key()), "sig": b64(sig)}],
    }


def envelope_bytes(envelope: dict[str, Any]) -> bytes:
    """Envelopes are stored as canonical JSON, so any changed byte is noticed."""
    return canonical_bytes(envelope)


def statement(subject_name: str, subject_bytes: bytes, bundle: dict[str, Any]) -> dict[str, Any]:
    """in-toto Statement v1 about a bundle file: its sha256, digest, chain head and Merkle root."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": subject_name, "digest": {"sha256": hashlib.sha256(subject_bytes).hexdigest()}}
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "run_id": bundle["run"]["run_id"],
            "tenant": bundle["run"]["tenant"],
            "bundle_digest": bundle["integrity"]["digest"],
            "chain_head": bundle["chain"]["head"],
            "merkle": bundle["merkle"],
        },
    }


def check_signatures(
    envelope: dict[str, Any], payload_type: str, payload: bytes, trusted: Sequence[Ed25519PublicKey]
) -> str:
    """Return the keyid of the trusted key that signed; raise VerificationError otherwise.

    Every trusted key is tried against every signature; ``keyid`` only has to agree with
    the key that verified (a wrong hint is a changed byte, so it is refused too).
    """
    if not trusted:
        raise VerificationError(
            "signature",
            "found no trusted key, expected --key PUB.pem or --trust FILE "
            "(keys named by an envelope are never trusted)",
        )
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise VerificationError(
            "signature", f"found signatures {sigs!r}, expected a non-empty list"
        )
    message = pae(payload_type, payload)
    for i, s in enumerate(sigs):
        if not isinstance(s, dict) or set(s) - {"keyid", "sig"} or "sig" not in s:
            raise VerificationError(
                "envelope",
                f"found signature {i} with members {sorted(s) if isinstance(s, dict) else s!r}, "
                "expected {sig, keyid?}",
            )
        sig = unb64(s["sig"], f"signatures[{i}].sig")
        for key in trusted:
            try:
                key.verify(sig, message)
            except InvalidSignature:
                continue
            kid = keyid(key)
            if "keyid" in s and s["keyid"] != kid:
                raise VerificationError(
                    "signature",
                    f"found keyid {s['keyid']!r}, expected {kid!r} (the key that verified)",
                    where=f"signatures[{i}]",
                )
            return kid
    pinned = ", ".join(keyid(k)[:16] for k in trusted)
    hints = ", ".join(str(s.get("keyid", "?"))[:16] for s in sigs if isinstance(s, dict))
    raise VerificationError(
        "signature",
        f"found {len(sigs)} signature(s) (keyid {hints}) valid for none of the trusted keys "
        f"({pinned}); expected a signature over the payload type and payload by a pinned key",
    )
