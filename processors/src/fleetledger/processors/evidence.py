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

import gc
import hashlib
import json
import multiprocessing
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from decimal import InvalidOperation
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleetledger.kernel.errors import EventValidationError, ProcessorError, VerificationError
from fleetledger.processors.bundle import (
    BUNDLE_VERSION,
    CANONICALIZATION,
    DERIVED,
    DIGEST_ALGORITHM,
    bundle_digest,
    derived_members,
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
from fleetledger.processors.core import CoreConfig
from fleetledger.processors.merkle import ALGORITHM as MERKLE_ALGORITHM
from fleetledger.processors.merkle import root_from_inclusion, root_of_leaf_hashes
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
from fleetledger.schemas import check_canonical_event, is_canonical_event

PROOF_VERSION = "fleetledger.proof/v1"
_PROOF_MEMBERS = frozenset(
    ("proof_version", "run_id", "bundle_digest", "merkle", "seq", "event_hash", "event")
) | {"audit_path"}
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
    #: For a proof: the disclosed event's seq.
    seq: int | None = None


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
        raise VerificationError(
            "canonical", f"{what} is not UTF-8 JSON without floats: {exc}"
        ) from exc


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

#: The checks of a bundle, in the order they run (SPEC.md 8.3, steps 4-9, after the
#: envelope's ``signature`` and ``payload type`` and the file's ``canonical``).
BUNDLE_CHECKS = (
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
)
_ITEM_MEMBERS = frozenset({"seq", "event_hash", "entry_hash", "event"})
_CHAIN_MEMBERS = frozenset({"algorithm", "genesis", "head", "length"})
#: Which check reports a difference in each derived member (the rest: ``derived``).
_DERIVED_CHECK = {"costs": "totals", "totals": "totals", "intercepts": "intercepts"}
#: Derived members in the order they are compared.
_COMPARED = ("totals", "costs", "intercepts", *(m for m in DERIVED if m not in _DERIVED_CHECK))


def _member(bundle: dict[str, Any], name: str, kind: type) -> Any:
    value = bundle.get(name)
    if not isinstance(value, kind):
        raise VerificationError(
            "format", f"found {name} = {_short(value)}, expected a JSON {kind.__name__}"
        )
    return value


def _label(item: dict[str, Any], i: int) -> str:
    seq = item["seq"]
    return f"seq {seq}" if type(seq) is int else f"events[{i}]"


def _shape(bundle: Any) -> tuple[list[dict[str, Any]], str]:
    """``format`` and ``empty``: the members every later check reads, of the right types."""
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
    expected = {"bundle_version", *DERIVED, "chain", "merkle", "events", "integrity"}
    if set(bundle) != expected:
        raise VerificationError(
            "format",
            f"found members {sorted(set(bundle) ^ expected)} differing, expected "
            f"exactly {sorted(expected)}",
        )
    events = _member(bundle, "events", list)
    if not events:
        raise VerificationError("empty", "found a bundle with no events, expected at least one")
    run = _member(bundle, "run", dict)
    for name in ("chain", "integrity", "merkle", "rules"):
        _member(bundle, name, dict)
    run_id = run.get("run_id")
    if not isinstance(run_id, str):
        raise VerificationError("format", f"found run.run_id {_short(run_id)}, expected a string")
    for i, item in enumerate(events):
        if not isinstance(item, dict) or set(item) != _ITEM_MEMBERS:
            raise VerificationError(
                "format",
                f"found {_short(item)}, expected {{seq, event_hash, entry_hash, event}}",
                where=f"events[{i}]",
            )
    return events, run_id


def _digest(bundle: dict[str, Any], parsed: bool) -> str:
    """``digest``: ``integrity`` names sha256 over RFC 8785, and its digest is right."""
    integrity = bundle["integrity"]
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
    if set(integrity) != {"digest_algorithm", "canonicalization", "digest"}:
        raise VerificationError(
            "digest",
            f"found members {sorted(integrity)}, expected canonicalization, digest, "
            "digest_algorithm",
            where="integrity",
        )
    try:
        if not parsed:
            checked_canonical_bytes(bundle)
        digest = bundle_digest(bundle)
    except ProcessorError as exc:
        raise VerificationError("canonical", f"bundle has no canonical form: {exc}") from exc
    if integrity["digest"] != digest:
        raise VerificationError(
            "digest",
            f"found {_short(integrity['digest'])}, expected {digest} "
            "(sha256 of the canonical bundle without integrity.digest)",
            where="integrity.digest",
        )
    return digest


def _contract(events: list[dict[str, Any]]) -> None:
    """``contract``: every event is the canonical object of a valid event (SPEC 1.2, 1.5)."""
    for i, item in enumerate(events):
        try:
            check_canonical_event(item["event"])
        except EventValidationError as exc:
            where = _label(item, i) + (f" event.{exc.field}" if exc.field else " event")
            raise VerificationError("contract", str(exc), where=where) from None


def _chain_member(run_id: str, head: str, length: int) -> dict[str, Any]:
    return {
        "algorithm": DIGEST_ALGORITHM,
        "genesis": genesis(run_id).hex(),
        "head": head,
        "length": length,
    }


def _chain(bundle: dict[str, Any], events: list[dict[str, Any]], run_id: str) -> list[str]:
    """``chain``: genesis, every event hash and entry hash, head and length."""
    chain = bundle["chain"]
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
        label = _label(item, i)
        eh = event_hash(item["event"])
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
    if chain.get("length") != len(events) or type(chain.get("length")) is not int:
        raise VerificationError(
            "chain",
            f"found {_short(chain.get('length'))}, expected {len(events)} (events in the bundle)",
            where="chain.length",
        )
    if set(chain) != _CHAIN_MEMBERS:
        raise VerificationError(
            "chain",
            f"found members {sorted(chain)}, expected algorithm, genesis, head, length",
            where="chain",
        )
    return hashes


def _seq(events: list[dict[str, Any]], run_id: str) -> None:
    """``seq``: events numbered 0..n-1 (outer and inner seq) of the bundle's run."""
    for i, item in enumerate(events):
        ev = item["event"]
        if type(item["seq"]) is not int or item["seq"] != i or ev.get("seq") != i:
            raise VerificationError(
                "seq",
                f"found seq {_short(item['seq'])} (event seq {_short(ev.get('seq'))}) at "
                f"position {i}, expected {i}: contiguous from 0",
                where=f"events[{i}]",
            )
        if ev.get("run_id") != run_id:
            raise VerificationError(
                "seq",
                f"found run_id {_short(ev.get('run_id'))}, expected {run_id!r}",
                where=f"seq {i} event.run_id",
            )


def _merkle(bundle: dict[str, Any], merkle: dict[str, Any]) -> None:
    diff = _first_difference(bundle["merkle"], merkle, "merkle")
    if diff:
        raise VerificationError(
            "merkle", f"found {_short(diff[1])}, expected {_short(diff[2])}", where=diff[0]
        )


def _rederive(bundle: dict[str, Any], run_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        config = CoreConfig.from_rules_json(bundle["rules"])
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise VerificationError("derived", f"rules cannot be read: {exc!r}", where="rules") from exc
    try:
        return derived_members(run_id, [item["event"] for item in events], config)
    except (ProcessorError, KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise VerificationError("derived", f"events cannot be re-folded: {exc!r}") from exc


def _derived(bundle: dict[str, Any], rebuilt: dict[str, Any]) -> None:
    """``totals`` / ``intercepts`` / ``derived``: every derived member equals its re-derivation."""
    for name in _COMPARED:
        diff = _first_difference(bundle[name], rebuilt[name], name)
        if diff:
            raise VerificationError(
                _DERIVED_CHECK.get(name, "derived"),
                f"found {_short(diff[1])}, expected {_short(diff[2])} (re-derived from the events)",
                where=diff[0],
            )


def verify_bundle(bundle: Any, *, parsed: bool = False) -> Verified:
    """Checks ``format`` .. ``derived`` on a bundle value, in the order of
    :data:`BUNDLE_CHECKS`; the first failing one is raised as :class:`VerificationError`.

    ``parsed``: the value came from :func:`parse_json`, which already refused floats.
    This is the reference procedure; :func:`verify_bundle_bytes` runs a faster one over
    the file's bytes and falls back to this one to report a failure.
    """
    events, run_id = _shape(bundle)
    digest = _digest(bundle, parsed)
    _contract(events)
    hashes = _chain(bundle, events, run_id)
    _seq(events, run_id)
    merkle = merkle_member(hashes)
    _merkle(bundle, merkle)
    _derived(bundle, _rederive(bundle, run_id, events))
    return Verified("bundle", run_id, digest, len(events), merkle["root"])


def verify_bundle_bytes(
    data: bytes,
    what: str = "bundle",
    *,
    cache: dict[bytes, Verified] | None = None,
    jobs: int | None = None,
) -> Verified:
    """Verify a bundle file's bytes: ``canonical``, then the bundle checks.

    Fast: the file is canonical (checked first), so each event's canonical bytes are a
    slice of it and are hashed in place instead of being serialized again.  Any doubt
    falls back to :func:`verify_bundle`, which names the first failing check.  ``cache``
    (keyed by the sha256 of ``data``) verifies the same bytes once per caller.  ``jobs``:
    processes for a large bundle (default: every core; 1: this process only).
    """
    key = hashlib.sha256(data).digest() if cache is not None else b""
    if cache is not None and key in cache:
        return cache[key]
    with _gc_paused():
        facts = _verify_fast(data, jobs)
        if facts is None:
            bundle = parse_json(data, what)
            require_canonical(data, bundle, what)
            facts = verify_bundle(bundle, parsed=True)
    if cache is not None:
        cache[key] = facts
    return facts


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Building a large acyclic JSON tree: the cyclic collector finds nothing to free in
    it, yet would traverse it again and again while it grows."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_ITEM_HEAD = b'{"entry_hash":"'
_EVENT_END = b'},"event_hash":"'
_ITEM_START = b'},{"entry_hash":"'
# {"entry_hash":"<64 hex>","event":  and  ,"event_hash":"<64 hex>","seq":   } ,
_HEAD_LEN = len(_ITEM_HEAD) + 64 + len(b'","event":')
_TAIL_LEN = len(b',"event_hash":"') + 64 + len(b'","seq":') + len(b"},")
#: A bundle with fewer events is checked in this process only.
PARALLEL_MIN_EVENTS = 20_000


def _digest_in_place(data: bytes, integrity: dict[str, Any]) -> str | None:
    """The bundle digest of canonical ``data``: its bytes without the ``digest`` member,
    hashed in place.  None unless the integrity member occurs exactly once."""
    claimed = integrity.get("digest")
    if not isinstance(claimed, str):
        return None
    member = canonical_bytes({"digest": claimed})[1:-1] + b","  # "digest":"<hex>",
    text = b'"integrity":' + canonical_bytes(integrity)
    if data.count(text) != 1:
        return None
    at = data.find(text) + text.find(member)
    view = memoryview(data)
    h = hashlib.sha256(view[:at])
    h.update(view[at + len(member) :])
    return h.hexdigest()


def _members(data: bytes, bundle: dict[str, Any]) -> tuple[dict[str, bytes], int, int] | None:
    """The canonical bytes of every top-level member but ``events``, checked against
    ``data`` around the content of ``events``, and where that content starts and ends
    (its ``]``).  None unless ``data`` is canonical outside ``events``."""
    names = sorted(bundle)
    if not all(name.isascii() for name in names):
        return None  # JCS orders by UTF-16 code units; keep to the obvious case
    out = {name: canonical_bytes(bundle[name]) for name in names if name != "events"}
    k = names.index("events")
    prefix = b"{" + b"".join(canonical_bytes(n) + b":" + out[n] + b"," for n in names[:k])
    prefix += b'"events":['
    suffix = b"]" + b"".join(b"," + canonical_bytes(n) + b":" + out[n] for n in names[k + 1 :])
    suffix += b"}"
    end = len(data) - len(suffix)
    if not (data.startswith(prefix) and data.endswith(suffix)) or end < len(prefix):
        return None
    return out, len(prefix), end


def _verify_fast(data: bytes, jobs: int | None = None) -> Verified | None:
    """:func:`_verify_in_place`, joining its worker processes at the very end."""
    exits: list[BaseProcess] = []
    try:
        return _verify_in_place(data, jobs, exits)
    finally:
        for proc in exits:
            proc.join()


def _verify_in_place(data: bytes, jobs: int | None, exits: list[BaseProcess]) -> Verified | None:
    """``canonical`` and the bundle checks over ``data``, hashing each event's bytes in
    place.  Returns None, never raises, when anything does not hold: the reference
    procedure then reports the first failure.

    Why slices are exact: ``data`` is canonical and every event passes the contract
    check.  An item is ``{"entry_hash":"<64 hex>","event":E,"event_hash":"<64 hex>",
    "seq":N}``; in a contract-valid canonical event ``E`` the bytes ``},"event_hash":"``
    cannot occur (no record has an ``event_hash`` field and the only free-keyed map,
    ``labels``, holds strings, whose quotes are escaped), so the first occurrence after
    ``E`` starts is where ``E`` ends.  The hashes compared are 64 hex characters when
    they match, so every offset follows from the last, and the walk must end exactly at
    the ``]`` of ``events``.

    ``data`` is checked canonical piecewise: the members around ``events`` here, the
    events' bytes by whoever walks them (one serialization of everything in all).

    Floats need no walk: orjson parses them, but every value of an accepted bundle is
    either checked by the contract (strict types), or equal to a string, or byte-equal
    to its re-derivation, which holds none.  A large bundle's events are walked by
    ``jobs`` processes (default: every core) while this one re-derives the rest.
    """
    try:
        bundle = orjson.loads(data)
        events, run_id = _shape(bundle)
    except (orjson.JSONDecodeError, ProcessorError, VerificationError):
        return None
    integrity = bundle["integrity"]
    if (
        integrity.get("digest_algorithm") != DIGEST_ALGORITHM
        or integrity.get("canonicalization") != CANONICALIZATION
        or len(integrity) != 3
    ):
        return None
    try:
        digest = _digest_in_place(data, integrity)
        layout = _members(data, bundle)
        if digest is None or integrity.get("digest") != digest or layout is None:
            return None
        members, start, end = layout
        chunks = _split(data, events, run_id, (start, end), jobs)
        if chunks is None:
            text = memoryview(canonical_bytes(events))[1:-1]
            canonical = text == memoryview(data)[start:end]
            walked = _walk(data, events, 0, start, genesis(run_id), run_id) if canonical else None
            rebuilt = _rederive_quiet(bundle, run_id, events)
        else:
            walked, rebuilt = _walk_parallel(data, chunks, run_id, bundle, events, exits)
    except ProcessorError:  # a value without a canonical form (an integer beyond 2^53)
        return None
    if walked is None or rebuilt is None or walked.end != end + 1:
        return None
    root = root_of_leaf_hashes(walked.leaves).hex()
    merkle = {
        "algorithm": MERKLE_ALGORITHM,
        "leaf": "event_hash",
        "size": len(events),
        "root": root,
    }
    rebuilt["chain"] = _chain_member(run_id, walked.head.hex(), len(events))
    rebuilt["merkle"] = merkle
    # JSON equality is equality of canonical bytes (Python's == would take true for 1)
    for name in ("chain", "merkle", *_COMPARED):
        if members[name] != canonical_bytes(rebuilt[name]):
            return None
    return Verified("bundle", run_id, digest, len(events), root)


def _rederive_quiet(
    bundle: dict[str, Any], run_id: str, events: list[dict[str, Any]]
) -> dict[str, Any] | None:
    try:
        return _rederive(bundle, run_id, events)
    except VerificationError:
        return None


@dataclass
class _Walked:
    """What walking a run of items established: Merkle leaves, last entry hash, and the
    offset just past the byte that follows the last item."""

    leaves: list[bytes]
    head: bytes
    end: int


def _walk(
    data: bytes, items: list[dict[str, Any]], first: int, pos: int, prev: bytes, run_id: str
) -> _Walked | None:
    """Items ``first, first + 1, ...`` (``items[0]`` is item ``first``) starting at byte
    ``pos`` of canonical ``data``: the contract, event hashes over the bytes in place,
    entry hashes from ``prev``, seq and run id.  None when anything does not hold."""
    view = memoryview(data)
    sha = hashlib.sha256
    find, startswith = data.find, data.startswith
    leaves: list[bytes] = []
    for i, item in enumerate(items, first):
        ev = item["event"]
        if not is_canonical_event(ev) or not startswith(_ITEM_HEAD, pos):
            return None
        begin = pos + _HEAD_LEN
        stop = find(_EVENT_END, begin) + 1
        if stop == 0:
            return None
        eh = sha(view[begin:stop]).digest()
        prev = sha(prev + eh).digest()
        if (
            item["event_hash"] != eh.hex()
            or item["entry_hash"] != prev.hex()
            or type(item["seq"]) is not int
            or item["seq"] != i
            or ev["seq"] != i
            or ev["run_id"] != run_id
        ):
            return None
        leaves.append(sha(b"\x00" + eh).digest())
        pos = stop + _TAIL_LEN + len(str(i))
    return _Walked(leaves, prev, pos)


@dataclass(frozen=True)
class _Chunk:
    """Items ``first..stop-1``, bytes ``pos..end`` (``end``: the ``,`` or ``]`` after the
    last item), chained from ``prev``."""

    first: int
    stop: int
    pos: int
    end: int
    prev: bytes


def _split(
    data: bytes,
    events: list[dict[str, Any]],
    run_id: str,
    span: tuple[int, int],
    jobs: int | None,
) -> list[_Chunk] | None:
    """Chunks of the events array for ``jobs`` processes, cut where an item starts; None
    when one process is better (a small bundle, one core, or no safe way to fork).

    A cut is the first ``},{"entry_hash":"`` after an even share of the bytes; in a
    contract-valid canonical bundle these bytes only occur between items (no record has
    an ``entry_hash`` field).  The walkers check every item, so a cut elsewhere fails.
    """
    workers = jobs if jobs is not None else (os.cpu_count() or 1)
    start, end = span
    n = len(events)
    if workers < 2 or n < PARALLEL_MIN_EVENTS or not _can_fork():
        return None
    cuts = [(0, start)]
    share = (end - start) // workers
    for k in range(1, workers):
        at = data.find(_ITEM_START, start + k * share, end) + 2
        seq_at = data.rfind(b'"seq":', cuts[-1][1], at)
        if at < 2 or seq_at < 0:
            return None
        try:
            index = int(data[seq_at + 6 : at - 2]) + 1
        except ValueError:
            return None
        if not cuts[-1][0] < index < n:
            return None
        cuts.append((index, at))
    chunks = []
    for k, (first, at) in enumerate(cuts):
        stop, next_at = cuts[k + 1] if k + 1 < len(cuts) else (n, end + 1)
        try:
            prev = bytes.fromhex(events[first - 1]["entry_hash"]) if first else genesis(run_id)
        except (TypeError, ValueError):
            return None
        chunks.append(_Chunk(first, stop, at, next_at - 1, prev))
    return chunks


def _can_fork() -> bool:
    """Fork copies only the calling thread: safe while it is the only one."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _walk_parallel(
    data: bytes,
    chunks: list[_Chunk],
    run_id: str,
    bundle: dict[str, Any],
    events: list[dict[str, Any]],
    exits: list[BaseProcess],
) -> tuple[_Walked | None, dict[str, Any] | None]:
    """Walk the chunks in forked workers (each parses its own items from the bytes, so
    this process's objects stay untouched) while this process re-derives the rest.  The
    workers go to ``exits``: the caller joins them once done (tearing down a forked
    process of a large heap takes a while; no reason to wait for it here)."""
    ctx = multiprocessing.get_context("fork")
    receivers = []
    try:
        for chunk in chunks:
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_walk_chunk, args=(data, chunk, run_id, send), daemon=True)
            proc.start()
            exits.append(proc)
            send.close()
            receivers.append(receive)
        rebuilt = _rederive_quiet(bundle, run_id, events)
        parts = [receive.recv_bytes() for receive in receivers]
    except (OSError, EOFError):
        return None, None
    finally:
        for receive in receivers:
            receive.close()
    leaves: list[bytes] = []
    head, end = b"", -1
    for chunk, part in zip(chunks, parts, strict=True):
        if len(part) < 84 or (head and part[:32] != head):
            return None, rebuilt
        head, end = part[32:64], int(part[64:84])
        if end != chunk.end + 1:
            return None, rebuilt
        body = part[84:]
        leaves += [body[i : i + 32] for i in range(0, len(body), 32)]
    if len(leaves) != len(events):
        return None, rebuilt
    return _Walked(leaves, head, end), rebuilt


def _walk_chunk(data: bytes, chunk: _Chunk, run_id: str, conn: Connection) -> None:
    """In a worker: parse the chunk's items from the bytes, walk them, send the result
    (``prev``, head, end offset, leaves), or nothing when anything does not hold."""
    try:
        gc.disable()
        text = b"[" + data[chunk.pos : chunk.end] + b"]"
        items = orjson.loads(text)
        walked = None
        if (
            isinstance(items, list)
            and len(items) == chunk.stop - chunk.first
            and canonical_bytes(items) == text
        ):
            walked = _walk(data, items, chunk.first, chunk.pos, chunk.prev, run_id)
        if walked is None:
            conn.send_bytes(b"")
        else:
            end = str(walked.end).encode().rjust(20)
            conn.send_bytes(b"".join([chunk.prev, walked.head, end, *walked.leaves]))
    except Exception:
        conn.send_bytes(b"")
    finally:
        conn.close()


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


def verify_statement_payload(
    payload: bytes,
    load: Loader,
    cache: dict[bytes, Verified] | None = None,
    jobs: int | None = None,
) -> Verified:
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
    facts = verify_bundle_bytes(data, f"subject {name}", cache=cache, jobs=jobs)
    expected = statement(name, data, json.loads(data))["predicate"]
    diff = _first_difference(stmt.get("predicate"), expected, "predicate")
    if diff:
        raise VerificationError(
            "statement", f"found {_short(diff[1])}, expected {_short(diff[2])}", where=diff[0]
        )
    return replace(facts, kind="statement")


def verify_file(
    data: bytes,
    trusted: Sequence[Ed25519PublicKey],
    load: Loader,
    cache: dict[bytes, Verified] | None = None,
    jobs: int | None = None,
) -> Verified:
    """Verify one evidence file: a bundle, a signed bundle or a signed statement.

    With trusted keys, a plain bundle file only passes when ``<stem>.dsse.json`` beside
    it (``load``) verifies and signs exactly its bytes; ``<stem>`` comes from the run id
    inside the bundle, never from a file name.  Without keys a plain bundle is checked
    for integrity only, and an envelope fails (nothing to trust it with).  ``cache``
    lets the files of one run share the verification of their bundle bytes; ``jobs``:
    processes for a large bundle (:func:`verify_bundle_bytes`).
    """
    obj = parse_json(data, "file")
    if isinstance(obj, dict) and "payloadType" in obj:
        ptype, payload, kid = open_envelope(data, trusted)
        if ptype == INTOTO_PAYLOAD_TYPE:
            facts = verify_statement_payload(payload, load, cache, jobs)
            return replace(facts, signed_by=kid)
        _expect_type(ptype, BUNDLE_PAYLOAD_TYPE)
        facts = verify_bundle_bytes(payload, "payload", cache=cache, jobs=jobs)
        return replace(facts, kind="signed bundle", signed_by=kid)
    facts = verify_bundle_bytes(data, cache=cache, jobs=jobs)
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


def verify_proof_bytes(
    data: bytes,
    *,
    bundle_digest_hex: str | None = None,
    trusted: Sequence[Ed25519PublicKey] = (),
    bundle: Verified | None = None,
) -> Verified:
    """Check a proof file: its bytes are canonical (a receipt in any other form is
    refused), then :func:`verify_proof`."""
    proof = parse_json(data, "proof")
    require_canonical(data, proof, "proof")
    return verify_proof(proof, bundle_digest_hex=bundle_digest_hex, trusted=trusted, bundle=bundle)


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
    members = set(proof)
    if not _PROOF_MEMBERS <= members <= _PROOF_MEMBERS | {"attestation"}:
        raise VerificationError(
            "format",
            f"found members {sorted(members ^ _PROOF_MEMBERS)} differing, expected "
            f"exactly {sorted(_PROOF_MEMBERS)} and optionally attestation",
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
    if not (
        type(seq) is int
        and type(size) is int
        and isinstance(run_id, str)
        and isinstance(claimed, str)
        and isinstance(root, str)
        and isinstance(path, list)
        and all(isinstance(h, str) for h in path)
        and set(merkle) == {"algorithm", "leaf", "size", "root"}
    ):
        raise VerificationError(
            "format",
            "found a proof member of the wrong type, expected run_id, bundle_digest, "
            "merkle.root and audit_path[] strings, seq and merkle.size integers, and "
            "merkle = {algorithm, leaf, size, root}",
        )
    try:
        check_canonical_event(event)
    except EventValidationError as exc:
        where = f"seq {seq} event" + (f".{exc.field}" if exc.field else "")
        raise VerificationError("contract", str(exc), where=where) from None
    eh = event_hash(event)
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
        require_canonical(payload, stmt, "attestation payload")
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
    return Verified("proof", run_id, claimed, size, root, signed_by, seq)
