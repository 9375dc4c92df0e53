"""Ed25519 against RFC 8032 / SUPERCOP vectors, DSSE PAE, keyid and envelope checks."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import cryptography_vectors
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetledger.kernel.errors import ConfigError, VerificationError
from fleetledger.processors import signing

SIGN_INPUT = Path(cryptography_vectors.__file__).parent / "asymmetric" / "Ed25519" / "sign.input"


def vectors() -> list[tuple[bytes, bytes, bytes, bytes]]:
    """sign.input lines: sk||pk : pk : msg : sig||msg (hex)."""
    out = []
    for line in SIGN_INPUT.read_text().splitlines():
        sk_pk, pk, msg, sig_msg, _ = line.split(":")
        out.append(
            (
                bytes.fromhex(sk_pk)[:32],
                bytes.fromhex(pk),
                bytes.fromhex(msg),
                bytes.fromhex(sig_msg)[:64],
            )
        )
    return out


def test_rfc8032_test_1_by_hand() -> None:
    # RFC 8032 section 7.1, TEST 1 (empty message)
    sk = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    key = Ed25519PrivateKey.from_private_bytes(sk)
    assert signing.raw_public(key.public_key()).hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    assert key.sign(b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )


def test_every_sign_input_vector_signs_and_verifies() -> None:
    cases = vectors()
    assert len(cases) >= 1024
    for sk, pk, msg, sig in cases:
        key = Ed25519PrivateKey.from_private_bytes(sk)
        assert signing.raw_public(key.public_key()) == pk
        assert key.sign(msg) == sig
        key.public_key().verify(sig, msg)


def test_pae_is_dsse_v1() -> None:
    # the example of the DSSE protocol specification
    assert signing.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert signing.pae("t", b"") == b"DSSEv1 1 t 0 "


def test_envelope_signature_and_keyid() -> None:
    key = signing.generate_key()
    env = signing.sign_envelope(b'{"a":1}', signing.BUNDLE_PAYLOAD_TYPE, key)
    kid = hashlib.sha256(signing.raw_public(key.public_key())).hexdigest()
    assert env["signatures"][0]["keyid"] == kid
    assert base64.b64decode(env["payload"]) == b'{"a":1}'
    got = signing.check_signatures(env, env["payloadType"], b'{"a":1}', [key.public_key()])
    assert got == kid
    other = signing.generate_key().public_key()
    with pytest.raises(VerificationError, match=r"^signature: found 1 signature"):
        signing.check_signatures(env, env["payloadType"], b'{"a":1}', [other])
    with pytest.raises(VerificationError, match=r"^signature: found no trusted key"):
        signing.check_signatures(env, env["payloadType"], b'{"a":1}', [])
    # the payload type is signed too
    with pytest.raises(VerificationError, match=r"^signature"):
        signing.check_signatures(env, "application/json", b'{"a":1}', [key.public_key()])
    env["signatures"][0]["keyid"] = "0" * 64  # a wrong hint is a changed byte
    with pytest.raises(VerificationError, match="keyid"):
        signing.check_signatures(env, env["payloadType"], b'{"a":1}', [key.public_key()])


def test_pem_round_trip_and_bad_keys() -> None:
    key = signing.generate_key()
    back = signing.load_private_key(signing.private_pem(key), "k.pem")
    assert signing.keyid(back.public_key()) == signing.keyid(key.public_key())
    two = signing.public_pem(key.public_key()) + signing.public_pem(
        signing.generate_key().public_key()
    )
    assert len(signing.load_public_keys(two, "trust.pem")) == 2
    with pytest.raises(ConfigError, match="no PEM public key"):
        signing.load_public_keys(b"hello", "x")
    with pytest.raises(ConfigError, match="cannot be read"):
        signing.load_private_key(
            b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n", "x"
        )
    with pytest.raises(VerificationError, match="non-canonical base64"):
        signing.unb64("YR==", "payload")
