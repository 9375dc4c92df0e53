"""Generate the conformance vectors of SPEC.md (section 10) into this folder.

    python spec/vectors/generate.py          # (re)write every vector file
    python spec/vectors/generate.py --check  # exit 1 if a file differs from what it would write

Deterministic: the runs are written out below event by event, the test key is derived
from a fixed seed and Ed25519 signatures are deterministic, so the same code writes the
same bytes.  Run it with fleetledger installed (``make install``); the suite checks that
the files are up to date and that ``fleetledger verify`` agrees with ``manifest.json``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetledger.processors.bundle import assemble, bundle_digest, merkle_member
from fleetledger.processors.canonical import canonical_bytes, event_hash, genesis, link
from fleetledger.processors.core import INTERCEPT_KINDS, CoreConfig, Entry, render_reason
from fleetledger.processors.evidence import attestation, evidence_files, file_stem, make_proof
from fleetledger.processors.merkle import inclusion_path, leaf_hash, merkle_root
from fleetledger.processors.signing import (
    BUNDLE_PAYLOAD_TYPE,
    INTOTO_PAYLOAD_TYPE,
    b64,
    envelope_bytes,
    keyid,
    pae,
    private_pem,
    public_pem,
    raw_public,
    sign_envelope,
    statement,
)
from fleetledger.schemas import TraceEvent

HERE = Path(__file__).resolve().parent
#: The published TEST key: never use it for anything but these vectors.
TEST_KEY = Ed25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"fleetledger conformance vectors: TEST key, never trust it").digest()
)
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"fleetledger conformance vectors: a key nobody pins").digest()
)
T0 = 1_793_491_200_000  # 2026-11-01T00:00:00.000Z in ms

WORKFLOW = {
    "name": "review",
    "revision": "3",
    "steps": [
        {"id": "plan", "name": "Plan", "kind": "llm"},
        {"id": "write", "name": "Write", "kind": "llm", "gate": "PAUSE_AFTER"},
    ],
    "edges": [{"source": "plan", "target": "write"}],
}


# --------------------------------------------------------------------------- runs


class Run:
    """Writes one run's events, validated by the contract, with fixed ids and times."""

    def __init__(self, run_id: str, tenant: str = "acme", agent: str = "planner") -> None:
        self.run_id, self.tenant, self.agent = run_id, tenant, agent
        self.events: list[dict[str, Any]] = []

    def add(self, etype: str, payload: dict[str, Any], step: str | None = None) -> None:
        seq = len(self.events)
        n = int.from_bytes(hashlib.sha256(f"{self.run_id}/{seq}".encode()).digest()[:16], "big")
        uid = f"{n:032x}"
        event_id = f"{uid[:8]}-{uid[8:12]}-4{uid[13:16]}-8{uid[17:20]}-{uid[20:]}"
        obj: dict[str, Any] = {
            "event_id": event_id,
            "run_id": self.run_id,
            "seq": seq,
            "type": etype,
            "ts": datetime.fromtimestamp((T0 + 1_007 * seq) / 1000, UTC),
            "agent_id": self.agent,
            "tenant": self.tenant,
            "producer_id": "vectors",
            "payload": payload,
        }
        if step is not None:
            obj["step_id"] = step
        self.events.append(TraceEvent.parse(obj).to_json_obj())

    def model(
        self, step: str, cost: str, currency: str = "USD", cache: str = "miss", **kw: Any
    ) -> None:
        payload = {
            "gen_ai_provider_name": kw.get("provider", "openai"),
            "gen_ai_request_model": kw.get("model", "gpt-4.1"),
            "gen_ai_usage_input_tokens": kw.get("inp", 1200),
            "gen_ai_usage_output_tokens": kw.get("out", 300),
            "gen_ai_usage_cache_read_input_tokens": kw.get("cached", 0),
            "cost": {"amount": cost, "currency": currency, "source": "local"},
            "duration_ms": kw.get("ms", 812),
            "prompt_hash": "sha256:" + hashlib.sha256(cost.encode()).hexdigest()[:16],
            "cache": cache,
            "outcome": kw.get("outcome", "success"),
        }
        if "served" in kw:
            payload["gen_ai_response_model"] = kw["served"]
        self.add("model_io", payload, step)

    def entries(self) -> list[Entry]:
        out, prev = [], genesis(self.run_id)
        for obj in self.events:
            h = event_hash(obj)
            cur = link(prev, h)
            out.append(Entry(self.run_id, obj["seq"], h.hex(), prev.hex(), cur.hex(), obj))
            prev = cur
        return out

    def bundle(self, config: CoreConfig | None = None) -> dict[str, Any]:
        return assemble(self.run_id, self.entries(), config or CoreConfig())


def run_ok() -> Run:
    """Every event type, a gate, two artifact versions, a cache hit; no intercept."""
    r = Run("run-ok")
    r.add(
        "run_started",
        {
            "project": "docs",
            "budget": {"amount": "1", "currency": "USD"},
            "workflow": WORKFLOW,
            "labels": {"env": "prod", "team": "core"},
        },
    )
    r.add("step_started", {"attempt": 1}, "plan")
    r.model("plan", "0.00456", cache="hit", cached=1000, served="gpt-4.1-2025-04-14")
    r.add(
        "tool_call",
        {"gen_ai_tool_name": "search", "duration_ms": 40, "inputs": '{"q":"x"}'},
        "plan",
    )
    r.add("step_completed", {"outcome": "success", "duration_ms": 1500}, "plan")
    r.add("step_started", {"attempt": 1}, "write")
    r.model("write", "0.0127875", provider="anthropic", model="claude-sonnet-4-5", ms=2040)
    r.add(
        "artifact_written",
        {"key": "report.md", "version": 1, "content_hash": "sha256:aa", "state": "generated"},
        "write",
    )
    r.add(
        "human_gate_requested",
        {
            "gate_id": "g1",
            "policy": "PAUSE_AFTER",
            "artifact_key": "report.md",
            "artifact_version": 1,
        },
        "write",
    )
    r.add(
        "human_gate_resolved",
        {
            "gate_id": "g1",
            "decision": "edit",
            "reviewer": "ana",
            "reason": "tone",
            "artifact_key": "report.md",
            "artifact_version": 2,
            "wait_ms": 60000,
        },
        "write",
    )
    r.add(
        "artifact_written",
        {
            "key": "report.md",
            "version": 2,
            "content_hash": "sha256:bb",
            "state": "verified",
            "schema_ref": "schemas/report",
            "validation": {"validator": "lint", "passed": True, "details": "ok"},
        },
        "write",
    )
    r.add("step_completed", {"outcome": "success", "duration_ms": 64000}, "write")
    r.add("run_completed", {"summary": "done"})
    return r


def run_intercepts() -> Run:
    """Each event-derived intercept kind but malformed_run, and a failed run."""
    r = Run("run-intercepts", tenant="globex", agent="coder")
    r.add("run_started", {"budget": {"amount": "0.01", "currency": "USD"}, "workflow": WORKFLOW})
    r.add("step_started", {"attempt": 1}, "plan")
    r.model("plan", "0.006")
    r.model("plan", "0.0045")  # 0.0105 > 0.01 x 1: budget_exceeded
    r.model("plan", "0.002", currency="EUR")  # currency_mismatch, unbilled
    for attempt, level in enumerate(("L1_RETRY", "L1_RETRY", "L2_ESCALATE", "L1_RETRY"), 1):
        r.add(
            "recovery",
            {
                "level": level,
                "failure_kind": "timeout",
                "attempt": attempt,
                "from_model": "gpt-4.1",
                "new_model": "gpt-4.1",
            },
            "plan",
        )  # the 4th: excessive_recoveries (max 3)
    r.add(
        "step_completed", {"outcome": "error", "error_type": "Timeout", "duration_ms": 900}, "plan"
    )
    for i, decision in enumerate(("reject", "approve", "edit", "reject")):
        gate = f"g{i}"
        r.add("human_gate_requested", {"gate_id": gate, "policy": "CHECKPOINT"})
        r.add(
            "human_gate_resolved",
            {"gate_id": gate, "decision": decision, "reviewer": "bo", "wait_ms": 1000 + i},
        )  # 3 of 4 rejected or edited > 0.5: high_intervention
    r.add(
        "run_failed",
        {
            "error_type": "BudgetExhausted",
            "error_message": "spent {all} of it",
            "failed_step": "plan",
        },
    )
    return r


def run_malformed() -> Run:
    """A second run_started: malformed_run.  Unicode everywhere, above U+E000 too."""
    r = Run("run-ünïcode-\U0001f680", tenant="ácme", agent="agent-\ue000")
    r.add(
        "run_started",
        {
            "workflow": {**WORKFLOW, "name": "révision €"},
            "labels": {"\U0001f680": "rocket", "z": "\ufb01", "é": "\u2028 tab\t"},
        },
    )
    r.add("run_started", {"workflow": WORKFLOW})
    r.model("plan", "12", provider="aws.bedrock", model="mistral.large", inp=0, out=0)
    r.add("run_completed", {})
    return r


def run_minimal() -> Run:
    r = Run("run-minimal")
    r.add("run_started", {"workflow": {"name": "empty", "revision": "", "steps": [], "edges": []}})
    r.add("run_completed", {"summary": ""})
    return r


# --------------------------------------------------------------------------- vectors


def _dump(value: Any) -> bytes:
    """Vector indexes are for people: sorted, indented JSON with a final newline."""
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _rechain(b: dict[str, Any]) -> dict[str, Any]:
    """Recompute hashes, chain, Merkle root and digest after an edit (a re-seal)."""
    prev = genesis(b["run"]["run_id"])
    for item in b["events"]:
        eh = event_hash(item["event"])
        prev = link(prev, eh)
        item["event_hash"], item["entry_hash"] = eh.hex(), prev.hex()
    b["chain"]["head"] = prev.hex()
    b["merkle"] = merkle_member([e["event_hash"] for e in b["events"]])
    return _redigest(b)


def _redigest(b: dict[str, Any]) -> dict[str, Any]:
    b["integrity"]["digest"] = bundle_digest(b)
    return b


def _signed(payload: bytes, ptype: str = BUNDLE_PAYLOAD_TYPE, key: Any = TEST_KEY) -> bytes:
    return envelope_bytes(sign_envelope(payload, ptype, key))


def _edited(bundle: dict[str, Any], edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    b = copy.deepcopy(bundle)
    edit(b)
    return b


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(b: dict[str, Any]) -> None:
        target = b
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value

    return edit


def build() -> dict[str, bytes]:
    """Every vector file: relative path -> bytes."""
    files: dict[str, bytes] = {}
    manifest: list[dict[str, Any]] = []
    pub = TEST_KEY.public_key()
    files["test-key.pem"] = private_pem(TEST_KEY)
    files["test-key.pub.pem"] = public_pem(pub)

    runs = {r.run_id: r for r in (run_ok(), run_intercepts(), run_malformed(), run_minimal())}
    bundles = {run_id: r.bundle() for run_id, r in runs.items()}

    # valid bundles: plain, signed, attested
    for b in bundles.values():
        for name, data in evidence_files(b, TEST_KEY):
            files[f"bundles/valid/{name}"] = data
            manifest.append({"file": f"bundles/valid/{name}", "expect": "pass"})
    ok = bundles["run-ok"]
    ok_bytes = canonical_bytes(ok)
    hostile = bundles["run-intercepts"]

    def fail(name: str, data: bytes, check: str, why: str, where: str | None = None) -> None:
        path = f"bundles/invalid/{name}"
        files[path] = data
        entry = {"file": path, "expect": "fail", "check": check, "why": why}
        if where is not None:
            entry["where"] = where
        manifest.append(entry)

    env = json.loads(_signed(ok_bytes))
    tampered = canonical_bytes(_edited(ok, _set(("totals", "cost"), "0")))
    fail(
        "payload-changed.dsse.json",
        envelope_bytes({**env, "payload": b64(tampered)}),
        "signature",
        "the payload changed after signing",
    )
    fail(
        "other-key.dsse.json",
        _signed(ok_bytes, key=OTHER_KEY),
        "signature",
        "signed by a key that is not pinned",
    )
    fail(
        "no-signatures.dsse.json",
        envelope_bytes({**env, "signatures": []}),
        "signature",
        "an envelope with zero signatures",
    )
    wrong_kid = [{**env["signatures"][0], "keyid": keyid(OTHER_KEY.public_key())}]
    fail(
        "wrong-keyid.dsse.json",
        envelope_bytes({**env, "signatures": wrong_kid}),
        "signature",
        "the signature verifies, but its keyid names another key",
    )
    fail(
        "unknown-type.dsse.json",
        _signed(ok_bytes, "application/json"),
        "payload type",
        "a payload type that is neither the bundle's nor in-toto's",
    )
    fail(
        "pretty.dsse.json",
        _signed(json.dumps(ok, indent=1).encode()),
        "canonical",
        "the same bundle, pretty-printed",
    )
    fail(
        "float.dsse.json",
        _signed(ok_bytes.replace(b'"wait_ms":60000', b'"wait_ms":6e4')),
        "canonical",
        "a number with an exponent (hashed data holds no floats)",
    )
    fail(
        "version.dsse.json",
        _signed(canonical_bytes(_redigest(_edited(ok, _set(("bundle_version",), "x/v9"))))),
        "format",
        "an unknown bundle_version",
    )
    fail(
        "extra-member.dsse.json",
        _signed(canonical_bytes(_redigest(_edited(ok, _set(("extra",), {}))))),
        "format",
        "a top-level member the bundle does not have",
    )
    empty = _edited(ok, _set(("events",), []))
    fail(
        "no-events.dsse.json",
        _signed(canonical_bytes(_redigest(empty))),
        "empty",
        "a bundle with zero events",
    )
    fail(
        "digest.dsse.json",
        _signed(canonical_bytes(_edited(ok, _set(("run", "agent_id"), "someone")))),
        "digest",
        "a member changed, integrity.digest left as it was",
    )
    for name, value, why in (
        ("amount-integer", 0, "a cost amount written as a JSON integer"),
        ("amount-trailing-zero", "0.01278750", "a cost amount with a trailing zero"),
        ("amount-exponent", "12.7875E-3", "a cost amount with an exponent"),
    ):
        b = _rechain(_edited(ok, _set(("events", 6, "event", "payload", "cost", "amount"), value)))
        fail(
            f"{name}.dsse.json",
            _signed(canonical_bytes(b)),
            "contract",
            why + ", re-hashed, re-chained and re-signed; totals unchanged",
            "seq 6 event.payload.cost.amount",
        )
    cases: tuple[tuple[str, str, str | None, str], ...] = (
        ("ts-no-millis", "ts", "2026-11-01T00:00:03Z", "a timestamp without milliseconds"),
        ("event-id-upper", "event_id", None, "an upper-case event id"),
        ("unknown-field", "color", "red", "a field the contract does not have"),
    )
    for name, field, new, why in cases:

        def edit(b: dict[str, Any], field: str = field, new: Any = new) -> None:
            ev = b["events"][3]["event"]
            ev[field] = ev["event_id"].upper() if new is None else new

        fail(
            f"{name}.dsse.json",
            _signed(canonical_bytes(_rechain(_edited(ok, edit)))),
            "contract",
            why + ", re-sealed",
            f"seq 3 event.{field}",
        )
    fail(
        "event-edited.dsse.json",
        _signed(
            canonical_bytes(
                _redigest(_edited(ok, _set(("events", 3, "event", "agent_id"), "coder")))
            )
        ),
        "chain",
        "an event changed, its hashes left as they were",
        "seq 3 event_hash",
    )
    fail(
        "genesis.dsse.json",
        _signed(canonical_bytes(_redigest(_edited(ok, _set(("chain", "genesis"), "00" * 32))))),
        "chain",
        "chain.genesis is not the run's genesis",
        "chain.genesis",
    )
    fail(
        "head.dsse.json",
        _signed(canonical_bytes(_redigest(_edited(ok, _set(("chain", "head"), "00" * 32))))),
        "chain",
        "chain.head is not the last entry hash",
        "chain.head",
    )

    def swap(b: dict[str, Any]) -> None:
        ev = b["events"]
        ev[3], ev[4] = ev[4], ev[3]

    fail(
        "reordered.dsse.json",
        _signed(canonical_bytes(_rechain(_edited(ok, swap)))),
        "seq",
        "two events swapped and re-chained",
        "events[3]",
    )
    fail(
        "merkle.dsse.json",
        _signed(canonical_bytes(_redigest(_edited(ok, _set(("merkle", "root"), "00" * 32))))),
        "merkle",
        "a wrong Merkle root",
        "merkle.root",
    )
    fail(
        "totals.dsse.json",
        _signed(
            canonical_bytes(_redigest(_edited(ok, _set(("totals", "cost"), "0.02")))),
        ),
        "totals",
        "totals.cost re-sealed with another value",
        "totals.cost",
    )
    fail(
        "costs.dsse.json",
        _signed(
            canonical_bytes(_redigest(_edited(ok, _set(("costs", "by_step", "plan"), "0.00455"))))
        ),
        "totals",
        "costs.by_step re-sealed with another value",
        "costs.by_step.plan",
    )
    reason = hostile["intercepts"][0]["reason"] + " (edited)"
    fail(
        "intercept-reason.dsse.json",
        _signed(
            canonical_bytes(_redigest(_edited(hostile, _set(("intercepts", 0, "reason"), reason))))
        ),
        "intercepts",
        "an intercept's reason edited and re-sealed",
        "intercepts[0].reason",
    )
    fail(
        "intercept-dropped.dsse.json",
        _signed(canonical_bytes(_redigest(_edited(hostile, lambda b: b["intercepts"].pop())))),
        "intercepts",
        "an intercept removed and re-sealed",
        "intercepts length",
    )
    fail(
        "rules.dsse.json",
        _signed(canonical_bytes(_redigest(_edited(hostile, _set(("rules", "max_recoveries"), 4))))),
        "intercepts",
        "a rule changed so that its intercept is no longer raised",
    )
    fail(
        "gate.dsse.json",
        _signed(canonical_bytes(_redigest(_edited(ok, _set(("gates", 0, "decision"), "approve"))))),
        "derived",
        "a gate's decision re-sealed with another value",
        "gates[0].decision",
    )
    fail(
        "status.dsse.json",
        _signed(canonical_bytes(_redigest(_edited(ok, _set(("run", "status"), "failed"))))),
        "derived",
        "run.status re-sealed with another value",
        "run.status",
    )
    # statements and unsigned bundles
    att = attestation(ok, TEST_KEY, ok_bytes)
    stmt = statement("run-ok.bundle.json", ok_bytes, ok)
    stmt["subject"][0]["digest"]["sha256"] = "00" * 32
    files["bundles/invalid/subject/run-ok.bundle.json"] = ok_bytes
    fail(
        "subject/run-ok.intoto.json",
        _signed(canonical_bytes(stmt), INTOTO_PAYLOAD_TYPE),
        "subject",
        "a statement whose subject digest is not the file's",
        "run-ok.bundle.json",
    )
    stmt = statement("run-ok.bundle.json", ok_bytes, ok)
    stmt["predicate"]["chain_head"] = "00" * 32
    fail(
        "subject/run-ok-predicate.intoto.json",
        _signed(canonical_bytes(stmt), INTOTO_PAYLOAD_TYPE),
        "statement",
        "a statement whose predicate disagrees with the bundle",
        "predicate.chain_head",
    )
    files["bundles/invalid/unsigned/run-ok.bundle.json"] = ok_bytes
    manifest.append(
        {
            "file": "bundles/invalid/unsigned/run-ok.bundle.json",
            "expect": "fail",
            "check": "signature",
            "why": "a plain bundle and no run-ok.dsse.json beside it",
        }
    )

    # proofs
    digest = ok["integrity"]["digest"]
    proof = make_proof(ok, 6, att)
    files["proofs/valid/run-ok-seq6.proof.json"] = canonical_bytes(proof)
    manifest.append(
        {"file": "proofs/valid/run-ok-seq6.proof.json", "expect": "pass", "bundle_digest": digest}
    )
    for name, data, check, why in (
        ("pretty", json.dumps(proof, indent=2).encode(), "canonical", "the receipt pretty-printed"),
        (
            "event",
            canonical_bytes(_edited(proof, _set(("event", "agent_id"), "x"))),
            "event",
            "the disclosed event changed",
        ),
        (
            "amount",
            canonical_bytes(
                _edited(proof, _set(("event", "payload", "cost", "amount"), "0.01278750"))
            ),
            "contract",
            "the disclosed event's amount not in canonical form",
        ),
        (
            "path",
            canonical_bytes(_edited(proof, _set(("audit_path", 0), "00" * 32))),
            "proof",
            "an audit path that does not lead to the root",
        ),
        (
            "unbound",
            canonical_bytes({k: v for k, v in proof.items() if k != "attestation"}),
            "binding",
            "no attestation, and no bundle given: nothing binds the root",
        ),
    ):
        path = f"proofs/invalid/{name}.proof.json"
        files[path] = data
        manifest.append(
            {"file": path, "expect": "fail", "check": check, "why": why, "bundle_digest": digest}
        )

    files["manifest.json"] = _dump(
        {
            "about": "fleetledger conformance vectors, SPEC.md section 10. Verify every file "
            "with the public key test-key.pub.pem pinned; proofs also with --bundle-digest.",
            "files": sorted(manifest, key=lambda m: m["file"]),
        }
    )
    files["hashes.json"] = _dump(_hashes(runs["run-ok"], bundles))
    return files


def _hashes(ok: Run, bundles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pub = TEST_KEY.public_key()
    chain = []
    for e in ok.entries():
        chain.append(
            {
                "seq": e.seq,
                "jcs": canonical_bytes(e.event).decode(),
                "event_hash": e.event_hash,
                "prev_hash": e.prev_hash,
                "entry_hash": e.entry_hash,
            }
        )
    merkle = []
    for n in range(1, 18):
        data = [hashlib.sha256(f"leaf {i}".encode()).digest() for i in range(n)]
        leaves = [leaf_hash(d) for d in data]
        merkle.append(
            {
                "size": n,
                "leaf_data": [d.hex() for d in data],
                "root": merkle_root(data).hex(),
                "audit_paths": [[h.hex() for h in inclusion_path(leaves, i)] for i in range(n)],
            }
        )
    pae_cases = []
    for ptype, payload in (
        (BUNDLE_PAYLOAD_TYPE, b'{"a":1}'),
        ("application/vnd.in-toto+json", '{"é":"\U0001f680"}'.encode()),
        ("text/plain", b""),
    ):
        sig = TEST_KEY.sign(pae(ptype, payload))
        pae_cases.append(
            {
                "payloadType": ptype,
                "payload": b64(payload),
                "pae": b64(pae(ptype, payload)),
                "pae_text": pae(ptype, payload).decode("utf-8"),
                "sig": b64(sig),
                "keyid": keyid(pub),
            }
        )
    examples: dict[str, dict[str, str | int]] = {
        "run_failed": {"error_type": "Timeout", "error_message": "took {too} long"},
        "budget_exceeded": {
            "cost": "0.0105",
            "currency": "USD",
            "budget": "0.01",
            "budget_ratio": "1",
        },
        "high_intervention": {"interventions": 3, "resolved": 4, "intervention_rate": "0.5"},
        "excessive_recoveries": {"recoveries": 4, "max_recoveries": 3},
        "currency_mismatch": {"currency": "EUR", "run_currency": "USD"},
        "malformed_run": {"event_type": "run_started"},
        "equivocation": {"position": "committed", "event_hash": "ab" * 32, "known_hash": "cd" * 32},
        "event_after_terminal": {"terminal_seq": 9},
        "stale_gap": {"last_missing": 7, "timeout_s": "30", "held": 2},
    }
    intercepts = []
    for kind, spec in INTERCEPT_KINDS.items():
        # a kind without an example above gets one named after its placeholders
        names = re.findall(r"\{([a-z_]+)\}", spec.template)
        params = examples.get(kind) or {n: f"<{n}>" for n in names if n != "seq"}
        intercepts.append(
            {
                "kind": kind,
                "severity": spec.severity,
                "event_derived": spec.event_derived,
                "template": spec.template,
                "seq": 5,
                "params": params,
                "reason": render_reason(kind, 5, params),
            }
        )
    return {
        "test_key": {
            "public_pem": public_pem(pub).decode(),
            "raw_public_hex": raw_public(pub).hex(),
            "keyid": keyid(pub),
        },
        "genesis": [
            {"run_id": run_id, "genesis": genesis(run_id).hex()}
            for run_id in ("run-1", "run-ok", "run-ünïcode-\U0001f680")
        ],
        "chain": {"run_id": ok.run_id, "genesis": genesis(ok.run_id).hex(), "entries": chain},
        "merkle": {"empty_root": hashlib.sha256(b"").hexdigest(), "trees": merkle},
        "dsse": pae_cases,
        "bundle_digests": [
            {
                "file": f"bundles/valid/{file_stem(run_id)}.bundle.json",
                "digest": b["integrity"]["digest"],
            }
            for run_id, b in bundles.items()
        ],
        "intercept_reasons": intercepts,
    }


def main(argv: list[str]) -> int:
    files = build()
    check = "--check" in argv
    stale = []
    for rel, data in sorted(files.items()):
        path = HERE / rel
        if path.is_file() and path.read_bytes() == data:
            continue
        stale.append(rel)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    known = {str(p.relative_to(HERE)) for p in HERE.rglob("*") if p.is_file()}
    extra = sorted(known - set(files) - {"generate.py", "README.md"})
    if check:
        for rel in stale:
            print(f"stale: {rel}")
        for rel in extra:
            print(f"not generated: {rel}")
        return 1 if stale or extra else 0
    for rel in extra:
        (HERE / rel).unlink()
    print(f"wrote {len(stale)} of {len(files)} files, removed {len(extra)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
