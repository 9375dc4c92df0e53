"""The conformance vectors (spec/vectors, SPEC.md section 10): up to date, and verify agrees.

The hash, Merkle, DSSE and template vectors are re-checked here from their definitions
with hashlib and cryptography directly, not with the functions that wrote them.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from fleetledger.kernel.errors import VerificationError
from fleetledger.processors.evidence import verify_file, verify_proof_bytes
from fleetledger.processors.verification import sibling_loader, verify_paths

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vectors_generate", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _json(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def _key() -> Ed25519PublicKey:
    key = load_pem_public_key((VECTORS / "test-key.pub.pem").read_bytes())
    assert isinstance(key, Ed25519PublicKey)
    return key


def test_vectors_are_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert _generator().main(["--check"]) == 0, capsys.readouterr().out


MANIFEST = _json("manifest.json")["files"]


@pytest.mark.parametrize("entry", MANIFEST, ids=[m["file"] for m in MANIFEST])
def test_verify_agrees_with_the_manifest(entry: dict[str, Any]) -> None:
    path = VECTORS / entry["file"]
    data = path.read_bytes()
    trusted = [_key()]
    try:
        if path.name.endswith(".proof.json"):
            verify_proof_bytes(data, bundle_digest_hex=entry["bundle_digest"], trusted=trusted)
        else:
            verify_file(data, trusted, sibling_loader(path))
    except VerificationError as exc:
        assert entry["expect"] == "fail", f"{entry['file']}: {exc}"
        assert exc.check == entry["check"], f"{entry['file']}: {exc}"
        if "where" in entry:
            assert exc.where == entry["where"], f"{entry['file']}: {exc}"
    else:
        assert entry["expect"] == "pass", f"{entry['file']} passed"


def test_every_check_of_the_procedure_has_a_failing_vector() -> None:
    checks = {m["check"] for m in MANIFEST if m["expect"] == "fail"}
    assert {
        "signature",
        "payload type",
        "canonical",
        "format",
        "empty",
        "digest",
        "contract",
        "chain",
        "seq",
        "merkle",
        "totals",
        "intercepts",
        "derived",
        "subject",
        "statement",
        "event",
        "proof",
        "binding",
    } <= checks


def test_the_valid_folder_verifies_on_every_core() -> None:
    results = verify_paths([VECTORS / "bundles" / "valid"], [_key()], jobs=2)
    assert len(results) == 12 and all(r.ok for r in results), [r.error for r in results]


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _mth(d: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, as written there."""
    if not d:
        return _sha(b"")
    if len(d) == 1:
        return _sha(b"\x00" + d[0])
    k = 1
    while k * 2 < len(d):
        k *= 2
    return _sha(b"\x01" + _mth(d[:k]) + _mth(d[k:]))


def _path(m: int, d: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n])."""
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return [*_path(m, d[:k]), _mth(d[k:])]
    return [*_path(m - k, d[k:]), _mth(d[:k])]


def test_hash_vectors_from_their_definitions() -> None:
    h = _json("hashes.json")
    for g in h["genesis"]:
        want = _sha(b"fleetledger/chain/v1\x00" + g["run_id"].encode("utf-8")).hex()
        assert g["genesis"] == want
    chain = h["chain"]
    prev = bytes.fromhex(chain["genesis"])
    for e in chain["entries"]:
        jcs = e["jcs"].encode("utf-8")
        obj = json.loads(jcs)
        assert (
            json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == e["jcs"]
        )
        assert e["event_hash"] == _sha(jcs).hex() and e["prev_hash"] == prev.hex()
        prev = _sha(prev + bytes.fromhex(e["event_hash"]))
        assert e["entry_hash"] == prev.hex()
    assert h["merkle"]["empty_root"] == _sha(b"").hex()
    sizes = []
    for t in h["merkle"]["trees"]:
        d = [bytes.fromhex(x) for x in t["leaf_data"]]
        assert t["root"] == _mth(d).hex()
        assert t["audit_paths"] == [[x.hex() for x in _path(m, d)] for m in range(len(d))]
        sizes.append(t["size"])
    assert sizes == list(range(1, 18))
    key = _key()
    for c in h["dsse"]:
        t, body = c["payloadType"].encode(), base64.b64decode(c["payload"])
        pae = b"DSSEv1 " + str(len(t)).encode() + b" " + t + b" " + str(len(body)).encode()
        pae += b" " + body
        assert base64.b64decode(c["pae"]) == pae and c["pae_text"].encode() == pae
        key.verify(base64.b64decode(c["sig"]), pae)
    assert h["test_key"]["keyid"] == _sha(bytes.fromhex(h["test_key"]["raw_public_hex"])).hex()
    for v in h["bundle_digests"]:
        b = json.loads((VECTORS / v["file"]).read_bytes())
        assert b["integrity"]["digest"] == v["digest"]
    kinds = set()
    for i in h["intercept_reasons"]:
        values: dict[str, Any] = {**i["params"], "seq": i["seq"]}
        text = i["template"]
        for name in re.findall(r"\{([a-z_]+)\}", text):
            text = text.replace("{" + name + "}", str(values[name]), 1)
        assert text == i["reason"]
        kinds.add(i["kind"])
    from fleetledger.processors.core import INTERCEPT_KINDS

    assert kinds == set(INTERCEPT_KINDS)


def test_the_valid_runs_raise_every_event_derived_intercept() -> None:
    kinds = set()
    for p in (VECTORS / "bundles" / "valid").glob("*.bundle.json"):
        kinds |= {i["kind"] for i in json.loads(p.read_bytes())["intercepts"]}
    assert kinds == {
        "run_failed",
        "budget_exceeded",
        "high_intervention",
        "excessive_recoveries",
        "currency_mismatch",
        "malformed_run",
    }
