"""Offline verification of run evidence: bundles, signed envelopes, statements, proofs.

Pure functions over bytes and JSON values (files are read by the caller, which passes a
``load`` callable for the files an envelope refers to).  The order of checks is the
procedure of the SPEC's verification section:

1. ``signature`` - the DSSE signature by a *pinned* key (never a key an envelope names);
2. ``payload type``;
3. ``canonical`` - the payload (or the bundle file) is exactly its RFC 8785 form;
4. ``digest`` - ``integrity.digest`` over the bundle without it;
5. ``chain`` - every event hash and entry hash, the genesis, head and length;
6. ``seq`` - events numbered 0..n-1 of the bundle's run;
7. ``merkle`` - the RFC 9162 root and size over the event hashes;
8. ``totals``/``intercepts``/``derived`` - everything derived, re-folded from the events.

Each failure raises :class:`VerificationError` naming the check and where (seq, field).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import InvalidOperation
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleetledger.kernel.errors import ProcessorError, VerificationError
from fleetledger.processors.bundle import (
    BUNDLE_VERSION,
    CANONICALIZATION,
    DIGEST_ALGORITHM,
    assemble,
    bundle_digest,
    event_leaf_hashes,
    merkle_member,
)
from fleetledger.processors.canonical import (
    canonical_bytes,
    checked_canonical_bytes,
    event_hash,
    genesis,
    link,
    load_json,
)
from fleetledger.processors.core import CoreConfig, Entry
from fleetledger.processors.merkle import root_from_inclusion
from fleetledger.processors.signing import (
    BUNDLE_PAYLOAD_TYPE,
    INTOTO_PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    check_signatures,
    envelope_bytes,
    sign_envelope,
    statement,
    unb64,
)

PROOF_VERSION = "fleetledger.proof/v1"
Loader = Callable[[str], bytes | None]

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def file_stem(run_id: str) -> str:
    """``run_id`` when it is a safe file name, else ``sha256-<hex of run_id>``."""
    if _SAFE.fullmatch(run_id) and ".." not in run_id:
        return run_id
    return f"sha256-{hashlib.sha256(run_id.encode()).hexdigest()}"


@dataclass(frozen=True)
class Verified:
    """What a successful verification established."""

    kind: str  # "bundle", "signed bundle", "statement", "proof"
    run_id: str
    digest: str
    events: int
    merkle_root: str
    signed_by: str | None = None


# --------------------------------------------------------------------------- producing


def evidence_files(
    bundle: dict[str, Any], key: Ed25519PrivateKey | None, data: bytes | None = None
) -> list[tuple[str, bytes]]:
    """The files of one run: ``<stem>.bundle.json`` (canonical bytes) and, with a key,
    ``<stem>.dsse.json`` (the signed bundle) and ``<stem>.intoto.json`` (a signed in-toto
    Statement about the bundle file).  Deterministic: Ed25519 signatures are.  ``data``:
    the bundle's canonical bytes when the caller has them already."""
    stem = file_stem(bundle["run"]["run_id"])
    if data is None:
        data = canonical_bytes(bundle)
    files = [(f"{stem}.bundle.json", data)]
    if key is not None:
        env = sign_envelope(data, BUNDLE_PAYLOAD_TYPE, key)
        files.append((f"{stem}.dsse.json", envelope_bytes(env)))
        files.append((f"{stem}.intoto.json", envelope_bytes(attestation(bundle, key, data))))
    return files


def attestation(
    bundle: dict[str, Any], key: Ed25519PrivateKey, data: bytes | None = None
) -> dict[str, Any]:
    """The signed in-toto Statement (a DSSE envelope) about ``<stem>.bundle.json``."""
    if data is None:
        data = canonical_bytes(bundle)
    stmt = statement(f"{file_stem(bundle['run']['run_id'])}.bundle.json", data, bundle)
    return sign_envelope(canonical_bytes(stmt), INTOTO_PAYLOAD_TYPE, key)


def make_proof(
    bundle: dict[str, Any], seq: int, attestation: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One event of a bundle with its RFC 9162 audit path (selective disclosure)."""
    from fleetledger.processors.merkle import inclusion_path

    events = bundle["events"]
    if not 0 <= seq < len(events):
        raise VerificationError(
            "proof", f"found seq {seq}, expected 0 <= seq < {len(events)} (events in the bundle)"
        )
    leaves = event_leaf_hashes([e["event_hash"] for e in events])
    proof: dict[str, Any] = {
        "proof_version": PROOF_VERSION,
        "run_id": bundle["run"]["run_id"],
        "bundle_digest": bundle["integrity"]["digest"],
        "merkle": bundle["merkle"],
        "seq": seq,
        "event_hash": events[seq]["event_hash"],
        "event": events[seq]["event"],
        "audit_path": [h.hex() for h in inclusion_path(leaves, seq)],
    }
    if attestation is not None:
        proof["attestation"] = attestation
    return proof


# --------------------------------------------------------------------------- parsing


def parse_json(data: bytes, what: str) -> Any:
    """Parse evidence JSON; floats, NaN and Infinity are refused (so the values it returns
    can be canonicalized without a float check)."""
    try:
        return load_json(data.decode("utf-8"))
    except (UnicodeDecodeError, ProcessorError) as exc:
        raise VerificationError("json", f"{what} is not UTF-8 JSON: {exc}") from exc


def require_canonical(data: bytes, obj: Any, what: str) -> None:
    """``data`` must be exactly the canonical form of ``obj`` (parsed by :func:`parse_json`)."""
    try:
        canon = canonical_bytes(obj)
    except ProcessorError as exc:
        raise VerificationError("canonical", f"{what} has no canonical form: {exc}") from exc
    if canon != data:
        at = next(
            (i for i, (a, b) in enumerate(zip(canon, data, strict=False)) if a != b),
            min(len(canon), len(data)),
        )
        raise VerificationError(
            "canonical",
            f"found {what} of {len(data)} bytes differing from its RFC 8785 form "
            f"({len(canon)} bytes) at byte {at}, expected exactly the canonical bytes",
        )


def _first_difference(found: Any, expected: Any, path: str) -> tuple[str, Any, Any] | None:
    if isinstance(found, dict) and isinstance(expected, dict):
        for k in sorted(set(found) | set(expected)):
            if k not in found or k not in expected:
                return (f"{path}.{k}", found.get(k, "<missing>"), expected.get(k, "<missing>"))
            d = _first_difference(found[k], expected[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(found, list) and isinstance(expected, list):
        for i, (a, b) in enumerate(zip(found, expected, strict=False)):
            d = _first_difference(a, b, f"{path}[{i}]")
            if d:
                return d
        if len(found) != len(expected):
            return (f"{path} length", len(found), len(expected))
        return None
    if type(found) is not type(expected) or found != expected:
        return (path, found, expected)
    return None


def _short(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------- bundles


def _member(bundle: dict[str, Any], name: str, kind: type) -> Any:
    value = bundle.get(name)
    if not isinstance(value, kind):
        raise VerificationError(
            "format", f"found {name} = {_short(value)}, expected a JSON {kind.__name__}"
        )
    return value


def verify_bundle(bundle: Any, *, parsed: bool = False) -> Verified:
    """Checks 4-8 on a bundle value (see the module docstring).

    ``parsed``: the value came from :func:`parse_json`, which already refused floats.
    """
    if not isinstance(bundle, dict):
        raise VerificationError(
            "format", f"found a {type(bundle).__name__}, expected a bundle object"
        )
    if bundle.get("bundle_version") != BUNDLE_VERSION:
        raise VerificationError(
            "format",
            f"found bundle_version {_short(bundle.get('bundle_version'))}, "
            f"expected {BUNDLE_VERSION!r}",
        )
    events = _member(bundle, "events", list)
    if not events:
        raise VerificationError("empty", "found a bundle with no events, expected at least one")
    run = _member(bundle, "run", dict)
    chain = _member(bundle, "chain", dict)
    integrity = _member(bundle, "integrity", dict)
    _member(bundle, "merkle", dict)
    run_id = run.get("run_id")
    if not isinstance(run_id, str):
        raise VerificationError("format", f"found run.run_id {_short(run_id)}, expected a string")

    # digest
    for name, want in (
        ("digest_algorithm", DIGEST_ALGORITHM),
        ("canonicalization", CANONICALIZATION),
    ):
        if integrity.get(name) != want:
            raise VerificationError(
                "digest",
                f"found {_short(integrity.get(name))}, expected {want!r}",
                where=f"integrity.{name}",
            )
    try:
        if not parsed:
            checked_canonical_bytes(bundle)
        digest = bundle_digest(bundle)
    except ProcessorError as exc:
        raise VerificationError("canonical", f"bundle has no canonical form: {exc}") from exc
    if integrity.get("digest") != digest:
        raise VerificationError(
            "digest",
            f"found {_short(integrity.get('digest'))}, expected {digest} "
            "(sha256 of the canonical bundle without integrity.digest)",
            where="integrity.digest",
        )

    # chain
    prev = genesis(run_id)
    if chain.get("algorithm") != DIGEST_ALGORITHM:
        raise VerificationError(
            "chain",
            f"found {_short(chain.get('algorithm'))}, expected {DIGEST_ALGORITHM!r}",
            where="chain.algorithm",
        )
    if chain.get("genesis") != prev.hex():
        raise VerificationError(
            "chain",
            f"found {_short(chain.get('genesis'))}, expected {prev.hex()} "
            f"(genesis of run {run_id!r})",
            where="chain.genesis",
        )
    hashes: list[str] = []
    for i, item in enumerate(events):
        if not isinstance(item, dict) or set(item) != {"seq", "event_hash", "entry_hash", "event"}:
            raise VerificationError(
                "format",
                f"found {_short(item)}, expected {{seq, event_hash, entry_hash, event}}",
                where=f"events[{i}]",
            )
        label = f"seq {item['seq']}" if isinstance(item["seq"], int) else f"events[{i}]"
        try:
            eh = event_hash(item["event"])
        except ProcessorError as exc:
            raise VerificationError("canonical", str(exc), where=f"{label} event") from exc
        if item["event_hash"] != eh.hex():
            raise VerificationError(
                "chain",
                f"found {_short(item['event_hash'])}, expected {eh.hex()} "
                "(sha256 of the canonical event)",
                where=f"{label} event_hash",
            )
        prev = link(prev, eh)
        if item["entry_hash"] != prev.hex():
            raise VerificationError(
                "chain",
                f"found {_short(item['entry_hash'])}, expected {prev.hex()} "
                "(sha256 of the previous entry hash and this event hash)",
                where=f"{label} entry_hash",
            )
        hashes.append(eh.hex())
    if chain.get("head") != prev.hex():
        raise VerificationError(
            "chain",
            f"found {_short(chain.get('head'))}, expected {prev.hex()} (the last entry hash)",
            where="chain.head",
        )
    if chain.get("length") != len(events):
        raise VerificationError(
            "chain",
            f"found {_short(chain.get('length'))}, expected {len(events)} (events in the bundle)",
            where="chain.length",
        )
    if set(chain) != {"algorithm", "genesis", "head", "length"}:
        raise VerificationError(
            "chain",
            f"found members {sorted(chain)}, expected algorithm, genesis, head, length",
            where="chain",
        )

    # seq
    for i, item in enumerate(events):
        ev = item["event"]
        if item["seq"] != i or not isinstance(ev, dict) or ev.get("seq") != i:
            found = ev.get("seq") if isinstance(ev, dict) else None
            raise VerificationError(
                "seq",
                f"found seq {_short(item['seq'])} (event seq {_short(found)}) at "
                f"position {i}, expected {i}: contiguous from 0",
                where=f"events[{i}]",
            )
        if ev.get("run_id") != run_id:
            raise VerificationError(
                "seq",
                f"found run_id {_short(ev.get('run_id'))}, expected {run_id!r}",
                where=f"seq {i} event.run_id",
            )

    # merkle
    merkle = merkle_member(hashes)
    diff = _first_difference(bundle["merkle"], merkle, "merkle")
    if diff:
        raise VerificationError(
            "merkle", f"found {_short(diff[1])}, expected {_short(diff[2])}", where=diff[0]
        )

    # derived: totals, costs, intercepts and the rest, re-folded from the events
    try:
        config = CoreConfig.from_rules_json(_member(bundle, "rules", dict))
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise VerificationError("derived", f"rules cannot be read: {exc!r}", where="rules") from exc
    entries = []
    prev_hex = genesis(run_id).hex()
    for item in events:
        entries.append(
            Entry(
                run_id, item["seq"], item["event_hash"], prev_hex, item["entry_hash"], item["event"]
            )
        )
        prev_hex = item["entry_hash"]
    try:
        rebuilt = assemble(run_id, entries, config)
    except (ProcessorError, KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise VerificationError("derived", f"events cannot be re-folded: {exc!r}") from exc
    if set(bundle) != set(rebuilt):
        raise VerificationError(
            "format",
            f"found members {sorted(set(bundle) ^ set(rebuilt))} differing, expected "
            f"exactly {sorted(rebuilt)}",
        )
    checks = {"costs": "totals", "totals": "totals", "intercepts": "intercepts"}
    for name in (
        "totals",
        "costs",
        "intercepts",
        "run",
        "workflow",
        "artifacts",
        "gates",
        "recovery",
        "rules",
    ):
        diff = _first_difference(bundle[name], rebuilt[name], name)
        if diff:
            raise VerificationError(
                checks.get(name, "derived"),
                f"found {_short(diff[1])}, expected {_short(diff[2])} (re-folded from the events)",
                where=diff[0],
            )
    return Verified("bundle", run_id, digest, len(events), merkle["root"])


def verify_bundle_bytes(data: bytes, what: str = "bundle") -> Verified:
    bundle = parse_json(data, what)
    require_canonical(data, bundle, what)
    return verify_bundle(bundle, parsed=True)


# --------------------------------------------------------------------------- envelopes


def open_envelope(
    data: bytes | dict[str, Any], trusted: Sequence[Ed25519PublicKey]
) -> tuple[str, bytes, str]:
    """Parse a DSSE envelope and check its signature; return (payloadType, payload, keyid)."""
    if isinstance(data, dict):
        env: Any = data
    else:
        env = parse_json(data, "envelope")
    if not isinstance(env, dict) or set(env) != {"payload", "payloadType", "signatures"}:
        found = sorted(env) if isinstance(env, dict) else type(env).__name__
        raise VerificationError(
            "envelope",
            f"found {found}, expected a DSSE envelope {{payload, payloadType, signatures}}}}",
        )
    if not isinstance(data, dict):
        require_canonical(data, env, "envelope file")
    payload = unb64(env["payload"], "payload")
    ptype = env["payloadType"]
    if not isinstance(ptype, str):
        raise VerificationError("envelope", f"found payloadType {_short(ptype)}, expected a string")
    kid = check_signatures(env, ptype, payload, trusted)
    return ptype, payload, kid


def _expect_type(found: str, want: str) -> None:
    if found != want:
        raise VerificationError("payload type", f"found {found!r}, expected {want!r}")


def verify_statement_payload(payload: bytes, load: Loader) -> Verified:
    stmt = parse_json(payload, "statement")
    require_canonical(payload, stmt, "statement payload")
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        raise VerificationError(
            "statement",
            f"found _type {_short(stmt.get('_type') if isinstance(stmt, dict) else stmt)}, "
            f"expected {STATEMENT_TYPE!r}",
        )
    if stmt.get("predicateType") != PREDICATE_TYPE:
        raise VerificationError(
            "statement",
            f"found predicateType {_short(stmt.get('predicateType'))}, expected {PREDICATE_TYPE!r}",
        )
    subjects = stmt.get("subject")
    if (
        not isinstance(subjects, list)
        or len(subjects) != 1
        or not isinstance(subjects[0], dict)
        or not isinstance(subjects[0].get("name"), str)
        or not isinstance(subjects[0].get("digest"), dict)
    ):
        raise VerificationError(
            "statement",
            f"found subject {_short(subjects)}, expected one {{name, digest: {{sha256}}}}",
        )
    name, want = subjects[0]["name"], subjects[0]["digest"].get("sha256")
    data = load(name)
    if data is None:
        raise VerificationError(
            "subject", f"found no file {name!r} beside the statement, expected the attested bundle"
        )
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise VerificationError(
            "subject", f"found sha256 {got}, expected {_short(want)}", where=name
        )
    facts = verify_bundle_bytes(data, f"subject {name}")
    expected = statement(name, data, json.loads(data))["predicate"]
    diff = _first_difference(stmt.get("predicate"), expected, "predicate")
    if diff:
        raise VerificationError(
            "statement", f"found {_short(diff[1])}, expected {_short(diff[2])}", where=diff[0]
        )
    return replace(facts, kind="statement")


def verify_file(data: bytes, trusted: Sequence[Ed25519PublicKey], load: Loader) -> Verified:
    """Verify one evidence file: a bundle, a signed bundle or a signed statement.

    With trusted keys, a plain bundle file only passes when ``<stem>.dsse.json`` beside
    it (``load``) verifies and signs exactly its bytes.  Without keys a plain bundle is
    checked for integrity only, and an envelope fails (nothing to trust it with).
    """
    obj = parse_json(data, "file")
    if isinstance(obj, dict) and "payloadType" in obj:
        ptype, payload, kid = open_envelope(data, trusted)
        if ptype == INTOTO_PAYLOAD_TYPE:
            return replace(verify_statement_payload(payload, load), signed_by=kid)
        _expect_type(ptype, BUNDLE_PAYLOAD_TYPE)
        return replace(verify_bundle_bytes(payload, "payload"), kind="signed bundle", signed_by=kid)
    facts = verify_bundle_bytes(data)
    if not trusted:
        return facts
    name = f"{file_stem(facts.run_id)}.dsse.json"
    signed = load(name)
    if signed is None:
        raise VerificationError(
            "signature",
            f"found an unsigned bundle and no {name} beside it, expected a "
            "bundle signed by a trusted key",
        )
    ptype, payload, kid = open_envelope(signed, trusted)
    _expect_type(ptype, BUNDLE_PAYLOAD_TYPE)
    if payload != data:
        raise VerificationError(
            "signature",
            f"found a bundle file differing from the payload signed in {name}, "
            "expected the same bytes",
        )
    return replace(facts, signed_by=kid)


# --------------------------------------------------------------------------- proofs


def verify_proof(
    proof: Any,
    *,
    bundle_digest_hex: str | None = None,
    trusted: Sequence[Ed25519PublicKey] = (),
    bundle: Verified | None = None,
) -> Verified:
    """Check an inclusion proof: event hash, audit path to the Merkle root, then what binds
    that root to a bundle digest - a verified bundle, or an attestation signed by a
    trusted key.  ``bundle_digest_hex``, when given, must be that digest."""
    if not isinstance(proof, dict) or proof.get("proof_version") != PROOF_VERSION:
        found = proof.get("proof_version") if isinstance(proof, dict) else type(proof).__name__
        raise VerificationError(
            "format", f"found proof_version {_short(found)}, expected {PROOF_VERSION!r}"
        )
    try:
        run_id, seq, event = proof["run_id"], proof["seq"], proof["event"]
        merkle, path = proof["merkle"], proof["audit_path"]
        size, root = merkle["size"], merkle["root"]
        claimed = proof["bundle_digest"]
    except (KeyError, TypeError) as exc:
        raise VerificationError(
            "format", f"proof lacks {exc}, expected a fleetledger proof"
        ) from exc
    try:
        eh = event_hash(event)
    except ProcessorError as exc:
        raise VerificationError("event", str(exc)) from exc
    if proof.get("event_hash") != eh.hex():
        raise VerificationError(
            "event",
            f"found event_hash {_short(proof.get('event_hash'))}, "
            f"expected {eh.hex()} (sha256 of the canonical event)",
            where=f"seq {seq}",
        )
    ev: dict[str, Any] = event if isinstance(event, dict) else {}
    if ev.get("seq") != seq or ev.get("run_id") != run_id:
        raise VerificationError(
            "event",
            f"found event of run {_short(ev.get('run_id'))} seq {_short(ev.get('seq'))}, "
            f"expected run {run_id!r} seq {seq}",
        )
    if merkle.get("algorithm") != "rfc9162-sha256" or merkle.get("leaf") != "event_hash":
        raise VerificationError(
            "proof",
            f"found merkle {_short(merkle)}, expected rfc9162-sha256 over event_hash leaves",
        )
    from fleetledger.processors.merkle import leaf_hash

    try:
        hashes = [bytes.fromhex(h) for h in path]
        got = root_from_inclusion(seq, size, leaf_hash(eh), hashes)
    except (TypeError, ValueError) as exc:
        raise VerificationError("proof", f"audit path unreadable: {exc}") from exc
    if got.hex() != root:
        raise VerificationError(
            "proof",
            f"found root {got.hex()} from the audit path, expected {_short(root)}",
            where=f"seq {seq}",
        )
    if bundle_digest_hex is not None and claimed != bundle_digest_hex:
        raise VerificationError(
            "digest", f"found bundle_digest {_short(claimed)}, expected {bundle_digest_hex}"
        )
    signed_by = None
    if bundle is not None:
        if (bundle.digest, bundle.merkle_root, bundle.run_id) != (claimed, root, run_id):
            raise VerificationError(
                "binding",
                f"found bundle digest {bundle.digest} root {bundle.merkle_root} of "
                f"run {bundle.run_id!r}, expected digest {claimed} root {root} of run {run_id!r}",
            )
        signed_by = bundle.signed_by
    elif "attestation" in proof and trusted:
        ptype, payload, signed_by = open_envelope(proof["attestation"], trusted)
        _expect_type(ptype, INTOTO_PAYLOAD_TYPE)
        stmt = parse_json(payload, "attestation")
        pred = stmt.get("predicate", {}) if isinstance(stmt, dict) else {}
        want = {"run_id": run_id, "bundle_digest": claimed, "merkle": merkle}
        diff = _first_difference({k: pred.get(k) for k in want}, want, "predicate")
        if diff:
            raise VerificationError(
                "binding",
                f"found {_short(diff[1])} in the signed attestation, expected {_short(diff[2])}",
                where=diff[0],
            )
    else:
        raise VerificationError(
            "binding",
            "found nothing trusted that binds the Merkle root to the bundle digest; "
            "expected --key/--trust with a proof carrying a signed attestation, or --bundle",
        )
    return Verified("proof", run_id, claimed, size, root, signed_by)
