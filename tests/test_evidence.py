"""Offline verification: signed bundles pass; every tampering is refused with its reason."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from fleetledger.kernel.errors import VerificationError
from fleetledger.processors import evidence, signing
from fleetledger.processors.bundle import bundle_digest
from fleetledger.processors.canonical import canonical_bytes
from fleetledger.schemas import is_canonical_event

from .evidence_fixtures import simulated_bundles

KEY = signing.generate_key()
PUB = [KEY.public_key()]


def signed(
    bundle: dict[str, Any], key: Any = KEY, ptype: str = signing.BUNDLE_PAYLOAD_TYPE
) -> bytes:
    env = signing.sign_envelope(canonical_bytes(bundle), ptype, key)
    return signing.envelope_bytes(env)


def reason(data: bytes, keys: Any = PUB, files: dict[str, bytes] | None = None) -> str:
    with pytest.raises(VerificationError) as info:
        evidence.verify_file(data, keys, (files or {}).get)
    return info.value.check


def leaves(v: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(v, dict):
        for k, x in v.items():
            yield from leaves(x, (*path, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from leaves(x, (*path, i))
    else:
        yield path, v


def mutated(bundle: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    b = copy.deepcopy(bundle)
    target = b
    for p in path[:-1]:
        target = target[p]
    if isinstance(value, str):
        target[path[-1]] = value + "x" if value[-1:] != "x" else value[:-1] + "y"
    elif isinstance(value, bool):
        target[path[-1]] = not value
    elif isinstance(value, int):
        target[path[-1]] = value + 1
    else:
        target[path[-1]] = 0
    return b


def redigest(b: dict[str, Any]) -> dict[str, Any]:
    b["integrity"]["digest"] = bundle_digest(b)
    return b


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    # a run with gates, artifacts, recoveries and model calls
    return max(simulated_bundles(), key=lambda b: (len(b["gates"]), len(b["events"])))


def test_signed_bundle_and_statement_verify(bundle: dict[str, Any]) -> None:
    files = dict(evidence.evidence_files(bundle, KEY))
    assert len(files) == 3
    for data in files.values():
        got = evidence.verify_file(data, PUB, files.get)
        assert got.run_id == bundle["run"]["run_id"]
        assert got.digest == bundle["integrity"]["digest"]
        assert got.signed_by == signing.keyid(KEY.public_key())
    plain = evidence.verify_file(canonical_bytes(bundle), [], files.get)
    assert plain.signed_by is None and plain.events == len(bundle["events"])


def test_every_field_changed_in_a_signed_bundle_is_refused(bundle: dict[str, Any]) -> None:
    data = signed(bundle)
    env = json.loads(data)
    count = 0
    for path, value in leaves(bundle):
        b = mutated(bundle, path, value)
        # the envelope's payload replaced by the changed bundle, signature kept
        env2 = {**env, "payload": base64.b64encode(canonical_bytes(b)).decode()}
        assert reason(signing.envelope_bytes(env2)) == "signature", path
        # re-signed by the trusted key, digest left as it was
        want = "format" if path == ("bundle_version",) else "digest"
        assert reason(signed(b)) == want, path
        count += 1
    assert count > 300


def expected_deep_reason(path: tuple[Any, ...], changed: dict[str, Any]) -> str | set[str]:
    head = path[0]
    if head == "events" and path[2:] == ("seq",):
        return "seq"  # the outer seq is not hashed; numbering is checked after the chain
    if head == "events" and path[2] == "event":
        # a value the contract refuses (or not in its canonical form) fails the contract
        # check; any other change fails the chain (the event hash no longer matches)
        return "chain" if is_canonical_event(changed["events"][path[1]]["event"]) else "contract"
    if head == "events" or path == ("run", "run_id"):
        return "chain"
    if head == "chain":
        return "chain"
    if head == "merkle":
        return "merkle"
    if head in ("totals", "costs"):
        return "totals"
    if head == "intercepts":
        return "intercepts"
    if head == "bundle_version":
        return "format"
    if head == "integrity":
        return "digest"
    return "derived"


def test_every_field_changed_with_a_fresh_digest_names_its_check(bundle: dict[str, Any]) -> None:
    for path, value in leaves(bundle):
        if path[0] == "rules" or path == ("integrity", "digest"):
            continue  # rules: see below; the digest itself: covered above
        b = (
            redigest(mutated(bundle, path, value))
            if path[0] != "integrity"
            else mutated(bundle, path, value)
        )
        assert reason(signed(b)) == expected_deep_reason(path, b), path


def test_a_rule_change_that_changes_intercepts_is_refused() -> None:
    runs = [b for b in simulated_bundles() if b["recovery"]]
    assert runs
    b = runs[0]
    b["rules"]["max_recoveries"] = 0
    assert reason(signed(redigest(b))) == "intercepts"


def _rechain(b: dict[str, Any], renumber: bool) -> dict[str, Any]:
    from fleetledger.processors.bundle import merkle_member
    from fleetledger.processors.canonical import event_hash, genesis, link

    prev = genesis(b["run"]["run_id"])
    for i, item in enumerate(b["events"]):
        if renumber:
            item["seq"] = i
            item["event"]["seq"] = i
        eh = event_hash(item["event"])
        prev = link(prev, eh)
        item["event_hash"], item["entry_hash"] = eh.hex(), prev.hex()
    b["chain"]["head"], b["chain"]["length"] = prev.hex(), len(b["events"])
    b["merkle"] = merkle_member([e["event_hash"] for e in b["events"]])
    return redigest(b)


@pytest.mark.parametrize(
    ("edit", "plain", "rechained", "renumbered"),
    [
        ("delete", "chain", "seq", "totals"),
        ("insert", "chain", "seq", "totals"),
        ("reorder", "chain", "seq", None),
        ("truncate", "chain", "chain", "totals"),
    ],
)
def test_event_edits(
    bundle: dict[str, Any], edit: str, plain: str, rechained: str, renumbered: str
) -> None:
    def apply() -> dict[str, Any]:
        b = copy.deepcopy(bundle)
        ev = b["events"]
        if edit == "delete":
            del ev[3]
        elif edit == "insert":
            ev.insert(4, copy.deepcopy(ev[3]))
        elif edit == "reorder":
            ev[3], ev[4] = ev[4], ev[3]
        else:
            del ev[-1]
        return b

    assert reason(signed(apply())) == "digest"
    assert reason(signed(redigest(apply()))) == plain
    b = _rechain(apply(), renumber=False)
    if edit == "truncate":
        b["chain"]["length"] += 1
        b = redigest(b)
    assert reason(signed(b)) == rechained
    if renumbered is not None:
        # a consistent re-signed bundle with an event less or more: the re-fold differs
        assert reason(signed(_rechain(apply(), renumber=True))) == renumbered


def test_payload_type_keys_and_nothing_to_check(bundle: dict[str, Any]) -> None:
    data = signed(bundle)
    env = json.loads(data)
    swapped = {**env, "payloadType": "application/json"}
    assert reason(signing.envelope_bytes(swapped)) == "signature"
    assert reason(signed(bundle, ptype="application/json")) == "payload type"
    assert reason(signed(bundle, key=signing.generate_key())) == "signature"
    assert reason(data, keys=[]) == "signature"  # never the envelope's own key
    empty = copy.deepcopy(bundle)
    empty["events"] = []
    assert reason(signed(redigest(empty))) == "empty"
    # a non-canonical payload (same JSON, other bytes) signed by the trusted key
    pretty = json.dumps(bundle, indent=1).encode()
    env3 = signing.sign_envelope(pretty, signing.BUNDLE_PAYLOAD_TYPE, KEY)
    assert reason(signing.envelope_bytes(env3)) == "canonical"
    # unsigned bundle with keys: needs its signed sibling
    assert reason(canonical_bytes(bundle)) == "signature"


def test_any_single_byte_change_to_any_file_is_refused(bundle: dict[str, Any]) -> None:
    files = dict(evidence.evidence_files(bundle, KEY))
    for name, data in files.items():
        step = max(1, len(data) // 400)
        for i in range(0, len(data), step):
            for new in (data[i] ^ 0x01, 0x20):
                if new == data[i]:
                    continue
                changed = data[:i] + bytes([new]) + data[i + 1 :]
                others = {**files, name: changed}
                with pytest.raises(VerificationError):
                    evidence.verify_file(changed, PUB, others.get)


def test_inclusion_proofs(bundle: dict[str, Any]) -> None:
    files = dict(evidence.evidence_files(bundle, KEY))
    att = json.loads(next(v for k, v in files.items() if k.endswith(".intoto.json")))
    digest = bundle["integrity"]["digest"]
    for seq in range(len(bundle["events"])):
        proof = evidence.make_proof(bundle, seq, att)
        got = evidence.verify_proof(proof, bundle_digest_hex=digest, trusted=PUB)
        assert got.merkle_root == bundle["merkle"]["root"]
    proof = evidence.make_proof(bundle, 2, att)
    with pytest.raises(VerificationError, match=r"^binding"):
        evidence.verify_proof(proof, bundle_digest_hex=digest)  # nothing trusted
    with pytest.raises(VerificationError, match=r"^digest"):
        evidence.verify_proof(proof, bundle_digest_hex="0" * 64, trusted=PUB)
    bad = copy.deepcopy(proof)
    bad["event"]["ts"] = "2020-01-01T00:00:00.000Z"
    with pytest.raises(VerificationError, match=r"^event"):
        evidence.verify_proof(bad, bundle_digest_hex=digest, trusted=PUB)
    from fleetledger.processors.canonical import event_hash

    bad["event_hash"] = event_hash(bad["event"]).hex()  # consistent, but not in the tree
    with pytest.raises(VerificationError, match=r"^proof"):
        evidence.verify_proof(bad, bundle_digest_hex=digest, trusted=PUB)
    other = signing.generate_key().public_key()
    with pytest.raises(VerificationError, match=r"^signature"):
        evidence.verify_proof(proof, bundle_digest_hex=digest, trusted=[other])


def _nothing(_name: str) -> bytes | None:
    return None


def _resigned_event_edit(
    bundle: dict[str, Any], seq: int, edit: Any, renumber: bool = False
) -> dict[str, Any]:
    """The bundle with event ``seq`` edited, re-hashed, re-chained and re-digested: what a
    signer with the key (or a bug) could produce; only the contract can refuse it."""
    b = copy.deepcopy(bundle)
    edit(b["events"][seq]["event"])
    return _rechain(b, renumber=renumber)


@pytest.mark.parametrize("amount", [0, "0.01278750", "12.7875E-3", "1.2e1", "-0", "+1", " 1"])
def test_a_resigned_bundle_with_non_canonical_money_fails_the_contract(
    bundle: dict[str, Any], amount: Any
) -> None:
    seq = next(i for i, e in enumerate(bundle["events"]) if e["event"]["type"] == "model_io")

    def edit(ev: dict[str, Any]) -> None:
        ev["payload"]["cost"]["amount"] = amount

    with pytest.raises(VerificationError) as info:
        evidence.verify_file(signed(_resigned_event_edit(bundle, seq, edit)), PUB, _nothing)
    assert info.value.check == "contract"
    assert info.value.where == f"seq {seq} event.payload.cost.amount"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ts", "2026-11-01T00:00:00Z"),  # no milliseconds
        ("ts", "2026-11-01T00:00:00.000+00:00"),
        ("ts", "2026-02-30T00:00:00.000Z"),  # no such day
        ("event_id", "0190F3A2-7C1E-7B3A-9D4E-2F6A8B1C0D9E"),  # upper case
        ("event_id", "{0190f3a2-7c1e-7b3a-9d4e-2f6a8b1c0d9e}"),
        ("seq", True),
        ("schema_version", 0),
        ("tenant", ""),
        ("unknown", "x"),
        ("step_id", None),  # nulls are omitted, never written
    ],
)
def test_a_resigned_bundle_breaking_a_value_rule_fails_the_contract(
    bundle: dict[str, Any], field: str, value: Any
) -> None:
    def edit(ev: dict[str, Any]) -> None:
        ev[field] = value

    with pytest.raises(VerificationError) as info:
        evidence.verify_file(signed(_resigned_event_edit(bundle, 3, edit)), PUB, _nothing)
    assert info.value.check == "contract", info.value
    assert info.value.where == f"seq 3 event.{field}"


def test_a_resealed_intercept_edit_is_refused(bundle: dict[str, Any]) -> None:
    runs = [b for b in simulated_bundles() if b["intercepts"]]
    assert runs
    b = runs[0]
    first = b["intercepts"][0]
    for name, value in (("reason", first["reason"] + "!"), ("severity", "warning")):
        edited = copy.deepcopy(b)
        edited["intercepts"][0][name] = value
        with pytest.raises(VerificationError) as info:
            evidence.verify_file(signed(redigest(edited)), PUB, _nothing)
        assert (info.value.check, info.value.where) == ("intercepts", f"intercepts[0].{name}")
    # a param changed together with a reason rendered from it: the re-derived params differ
    edited = copy.deepcopy(b)
    param = sorted(first["params"])[0]
    edited["intercepts"][0]["params"][param] = "changed"
    from fleetledger.processors.core import render_reason

    edited["intercepts"][0]["reason"] = render_reason(
        first["kind"], first["seq"], edited["intercepts"][0]["params"]
    )
    with pytest.raises(VerificationError) as info:
        evidence.verify_file(signed(redigest(edited)), PUB, _nothing)
    assert info.value.check == "intercepts"


def test_every_intercept_reason_is_its_template_filled_from_its_params() -> None:
    from fleetledger.processors.core import INTERCEPT_KINDS, render_reason

    seen = set()
    for b in simulated_bundles():
        for i in b["intercepts"]:
            assert INTERCEPT_KINDS[i["kind"]].event_derived
            assert i["severity"] == INTERCEPT_KINDS[i["kind"]].severity
            assert i["reason"] == render_reason(i["kind"], i["seq"], i["params"])
            assert all(isinstance(v, str | int) for v in i["params"].values())
            seen.add(i["kind"])
    assert seen  # every kind: the conformance vectors


def test_fail_closed(bundle: dict[str, Any], tmp_path: Any) -> None:
    from pathlib import Path

    from fleetledger.kernel.errors import ConfigError
    from fleetledger.processors.verification import verify_paths

    env = json.loads(signed(bundle))
    # an envelope with zero signatures, and one with an unknown payload type
    assert reason(signing.envelope_bytes({**env, "signatures": []})) == "signature"
    assert reason(signed(bundle, ptype="application/x-unknown")) == "payload type"
    # zero events
    empty = copy.deepcopy(bundle)
    empty["events"] = []
    assert reason(signed(redigest(empty))) == "empty"
    # an empty folder, and a folder with only other files
    folder = Path(tmp_path)
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("x")
    (result,) = verify_paths([folder], PUB, jobs=1)
    assert not result.ok and result.error is not None and result.error.startswith("empty")
    with pytest.raises(VerificationError, match=r"^empty"):
        verify_paths([], PUB)
    # a trust file with no keys
    with pytest.raises(ConfigError, match="found no PEM public key"):
        signing.load_public_keys(b"", "trust.pem")


def test_a_folder_is_verified_on_every_core(tmp_path: Any) -> None:
    from pathlib import Path

    from fleetledger.processors.verification import verify_paths

    folder = Path(tmp_path)
    bundles = simulated_bundles()
    for b in bundles:
        day = folder / b["run"]["tenant"] / "2026"
        day.mkdir(parents=True, exist_ok=True)
        for name, data in evidence.evidence_files(b, KEY):
            (day / name).write_bytes(data)
    broken = next(folder.rglob("*.dsse.json"))
    broken.write_bytes(broken.read_bytes()[:-2] + b"}")
    results = verify_paths([folder], PUB, jobs=2)
    assert len(results) == 3 * len(bundles)
    assert [r.path for r in results] == sorted(r.path for r in results)
    failed = [r for r in results if not r.ok]
    assert [r.path for r in failed] == [broken] or broken in [r.path for r in failed]
    # the plain bundle beside the broken envelope fails too (its signature is unreadable)
    assert all(r.path.parent == broken.parent for r in failed)
    assert sum(r.ok for r in results) >= 3 * len(bundles) - 2
    assert [r.ok for r in results] == [r.ok for r in verify_paths([folder], PUB, jobs=1)]


def test_the_fast_path_accepts_exactly_what_the_reference_procedure_accepts(
    bundle: dict[str, Any],
) -> None:
    """verify_bundle_bytes hashes slices of the file; it must never accept a bundle the
    reference procedure refuses (and should accept every bundle it accepts)."""
    from fleetledger.processors.evidence import _verify_fast

    def agree(b: dict[str, Any]) -> bool:
        data = canonical_bytes(b)
        try:
            evidence.verify_bundle(json.loads(data), parsed=True)
        except VerificationError:
            ok = False
        else:
            ok = True
        assert (_verify_fast(data) is not None) == ok
        return ok

    assert agree(bundle)
    refused = 0
    for path, value in leaves(bundle):
        changed = mutated(bundle, path, value)
        for b in (redigest(changed), _rechain(copy.deepcopy(changed), renumber=False)):
            refused += not agree(b)
    assert refused > 300
    # values the fast path's slicing depends on: labels that look like item framing
    b = copy.deepcopy(bundle)
    b["events"][0]["event"]["payload"]["labels"] = {
        "a": '"}},"event_hash":"' + "0" * 64 + '","seq":0},{"entry_hash":"',
        "event_hash": "0" * 64,
        "seq": "1",
    }
    assert agree(_rechain(b, renumber=False)) is False  # labels are also in run.labels
    b = _rechain(b, renumber=False)
    b["run"]["labels"] = b["events"][0]["event"]["payload"]["labels"]
    assert agree(redigest(b))


def test_a_large_bundle_is_walked_by_several_processes(
    bundle: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same verdicts with the events split over forked workers (threshold lowered)."""
    from fleetledger.processors import evidence as ev

    monkeypatch.setattr(ev, "PARALLEL_MIN_EVENTS", 4)
    monkeypatch.setattr(ev, "_can_fork", lambda: True)
    data = canonical_bytes(bundle)
    for jobs in (2, 3, 5):
        facts = ev._verify_fast(data, jobs)
        assert facts is not None and facts == ev._verify_fast(data, 1)
    for path, value in list(leaves(bundle))[::13]:
        if path[0] != "events":
            continue
        changes = (mutated(bundle, path, value) for _ in range(2))
        for b in (redigest(next(changes)), _rechain(next(changes), renumber=False)):
            changed = canonical_bytes(b)
            assert (ev._verify_fast(changed, 3) is None) == (ev._verify_fast(changed, 1) is None)


def test_the_contract_keeps_what_the_in_place_slicing_relies_on() -> None:
    """verify cuts each event's bytes at the first ``},"event_hash":"`` (and a large
    bundle between items at ``},{"entry_hash":"``): sound only while no record has a field
    of those names and every free-keyed map holds strings.  A contract change that breaks
    this must revisit ``evidence._verify_in_place``."""
    from typing import get_args, get_origin

    from pydantic import BaseModel

    from fleetledger.schemas import PAYLOAD_TYPES, TraceEvent

    seen: set[type[BaseModel]] = set()

    def walk(ann: Any) -> None:
        origin = get_origin(ann)
        if origin is dict:
            key_t, val_t = get_args(ann)
            for t in (key_t, val_t):
                base = get_args(t)[0] if get_args(t) else t
                assert base is str, f"a map of {val_t!r}: its values could hold item framing"
            return
        for arg in get_args(ann):
            walk(arg)
        if isinstance(ann, type) and issubclass(ann, BaseModel) and ann not in seen:
            seen.add(ann)
            for name, info in ann.model_fields.items():
                assert name not in ("event_hash", "entry_hash"), (ann, name)
                walk(info.annotation)

    for model in (TraceEvent, *PAYLOAD_TYPES.values()):
        walk(model)
    from fleetledger.schemas import Cost, Money, ValidationEvidence, WorkflowEdge, WorkflowStep

    assert {Cost, Money, ValidationEvidence, WorkflowEdge, WorkflowStep} <= seen
