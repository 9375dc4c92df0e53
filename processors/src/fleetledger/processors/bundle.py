"""Run bundle assembly and its integrity digest: a pure function of a run's chained entries.

A bundle is everything needed to review a run without fleetledger: the frozen workflow,
every event with its chain hashes, artifacts with versions, gates with decisions, the
recovery chain, the model decisions with the calls each governed, the content kept
outside the events (blobs), cost attributed per step and per model, totals, the
event-derived intercepts and the rules that derived them.  The digest is sha256 over the RFC 8785
canonical JSON of the bundle with ``integrity.digest`` removed (SPEC.md, "Run bundle").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from fleetledger.kernel.errors import ProcessorError
from fleetledger.processors.canonical import canonical_bytes, genesis
from fleetledger.processors.core import CoreConfig, Entry, fold_events
from fleetledger.processors.merkle import ALGORITHM as MERKLE_ALGORITHM
from fleetledger.processors.merkle import leaf_hash, root_of_leaf_hashes
from fleetledger.schemas import money_str

BUNDLE_VERSION = "fleetledger.bundle/v1"
DIGEST_ALGORITHM = "sha256"
CANONICALIZATION = "RFC8785"


def bundle_digest(bundle: dict[str, Any]) -> str:
    """sha256 hex of the canonical bundle without ``integrity.digest``."""
    integrity = dict(bundle.get("integrity", {}))
    integrity.pop("digest", None)
    body = {**bundle, "integrity": integrity}
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


def event_leaf_hashes(event_hashes: Sequence[str]) -> list[bytes]:
    """Merkle leaf hashes of a run: ``H(0x00 || event_hash)`` over the raw 32-byte hashes."""
    return [leaf_hash(bytes.fromhex(h)) for h in event_hashes]


def merkle_member(event_hashes: Sequence[str]) -> dict[str, Any]:
    """The bundle's ``merkle`` member: RFC 9162 tree over the events' hashes in seq order."""
    return {
        "algorithm": MERKLE_ALGORITHM,
        "leaf": "event_hash",
        "size": len(event_hashes),
        "root": root_of_leaf_hashes(event_leaf_hashes(event_hashes)).hex(),
    }


def _artifacts(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    by_key: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        if ev["type"] != "artifact_written":
            continue
        p = ev["payload"]
        version = {
            "version": p["version"],
            "state": p["state"],
            "content_hash": p["content_hash"],
            "seq": ev["seq"],
        }
        for opt in ("schema_ref", "validation"):
            if opt in p:
                version[opt] = p[opt]
        if "step_id" in ev:
            version["step_id"] = ev["step_id"]
        by_key.setdefault(p["key"], []).append(version)
    return [{"key": k, "versions": v} for k, v in sorted(by_key.items())]


def _gates(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    gates: dict[str, dict[str, Any]] = {}
    for ev in events:
        etype, p = ev["type"], ev.get("payload", {})
        if etype == "human_gate_requested":
            gate = gates.setdefault(p["gate_id"], {"gate_id": p["gate_id"]})
            gate.update({"requested_seq": ev["seq"], "policy": p["policy"]})
            if "step_id" in ev:
                gate["step_id"] = ev["step_id"]
            for opt in ("artifact_key", "artifact_version"):
                if opt in p:
                    gate[opt] = p[opt]
        elif etype == "human_gate_resolved":
            gate = gates.setdefault(p["gate_id"], {"gate_id": p["gate_id"]})
            gate.update(
                {
                    "resolved_seq": ev["seq"],
                    "decision": p["decision"],
                    "reviewer": p["reviewer"],
                    "wait_ms": p["wait_ms"],
                }
            )
            for opt in ("reason", "artifact_key", "artifact_version"):
                if opt in p:
                    gate[opt] = p[opt]
    return list(gates.values())


def _recovery(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    chain = []
    for ev in events:
        if ev["type"] == "recovery":
            item = {"seq": ev["seq"], **ev["payload"]}
            if "step_id" in ev:
                item["step_id"] = ev["step_id"]
            chain.append(item)
    return chain


_DECISION_FIELDS = (
    "provider",
    "task_class",
    "capability_class",
    "budget_mode",
    "routing_reason",
)


def _model_decisions(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Why each model was chosen, and what the calls it governed did and cost.

    Answers "why did this cost so much": the budget mode and routing reason, how many
    attempts (calls) there were, their outcomes, cache misses, cost and unpriced calls.
    """
    decisions: dict[str, dict[str, Any]] = {}
    for ev in events:
        p = ev.get("payload", {})
        if ev["type"] == "model_decision":
            item: dict[str, Any] = {
                "decision_id": p["decision_id"],
                "seq": ev["seq"],
                "decided_at": ev["ts"],
                "primary_model": p["primary_model"],
                "fallback_chain": p.get("fallback_chain", []),
            }
            for name in _DECISION_FIELDS:
                if name in p:
                    item[name] = p[name]
            if "step_id" in ev:
                item["step_id"] = ev["step_id"]
            item["calls"] = {
                "attempts": 0,
                "seqs": [],
                "models": [],
                "outcomes": {},
                "cache_misses": 0,
                "cost": Decimal(0),
                "unpriced": 0,
            }
            decisions[p["decision_id"]] = item
        elif ev["type"] == "model_io" and p.get("decision_id") in decisions:
            calls = decisions[p["decision_id"]]["calls"]
            calls["attempts"] += 1
            calls["seqs"].append(ev["seq"])
            model = p.get("gen_ai_response_model") or p["gen_ai_request_model"]
            if model not in calls["models"]:
                calls["models"].append(model)
            calls["outcomes"][p["outcome"]] = calls["outcomes"].get(p["outcome"], 0) + 1
            calls["cache_misses"] += 1 if p["cache"] == "miss" else 0
            if p["cost"]["source"] == "unpriced":
                calls["unpriced"] += 1
            else:
                calls["cost"] += Decimal(p["cost"]["amount"])
    out = []
    for item in decisions.values():
        calls = item["calls"]
        calls["outcomes"] = dict(sorted(calls["outcomes"].items()))
        calls["cost"] = money_str(calls["cost"])
        out.append(item)
    return out


def _blobs(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Content referenced by hash: offloaded to a blob store, or withheld by redaction."""
    out = []
    for ev in events:
        p = ev.get("payload", {})
        withheld = set(p.get("redactions", ()))
        for name in ("inputs", "outputs"):
            ref = p.get(f"{name}_ref")
            if ref is None:
                continue
            out.append(
                {
                    "seq": ev["seq"],
                    "field": name,
                    "sha256": ref["sha256"],
                    "size": ref["size"],
                    "media_type": ref["media_type"],
                    "stored": name not in withheld,
                }
            )
    return out


def run_sections(events: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The bundle's ``artifacts``, ``gates`` and ``recovery`` members for a run's canonical
    events so far (a run still going shows them as its bundle will)."""
    return {
        "artifacts": _artifacts(events),
        "gates": _gates(events),
        "recovery": _recovery(events),
    }


def sealed(bundle: dict[str, Any]) -> bytes:
    """Set ``integrity.digest`` of a bundle that has none and return its canonical bytes.

    Equal to ``bundle_digest`` then ``canonical_bytes`` of the result, with every member
    but ``integrity`` canonicalized once: RFC 8785 writes an object as its members sorted
    by key, each ``key:value`` canonical on its own, so the digested body and the final
    document differ only in the ``integrity`` member.  (The members' keys are the
    bundle's own ASCII names, which sort the same by UTF-16 code units as by ``sorted``.)
    """
    integrity = bundle["integrity"]
    members = {
        key: canonical_bytes(key) + b":" + canonical_bytes(value)
        for key, value in bundle.items()
        if key != "integrity"
    }

    def document(integrity_member: dict[str, Any]) -> bytes:
        members["integrity"] = b'"integrity":' + canonical_bytes(integrity_member)
        return b"{" + b",".join(members[key] for key in sorted(members)) + b"}"

    digest = hashlib.sha256(document(integrity)).hexdigest()
    integrity["digest"] = digest
    return document(integrity)


def assemble(run_id: str, entries: Sequence[Entry], config: CoreConfig) -> dict[str, Any]:
    """Build the bundle of a finished run from its entries (seq 0..n-1, in order)."""
    return assemble_encoded(run_id, entries, config)[0]


def assemble_encoded(
    run_id: str, entries: Sequence[Entry], config: CoreConfig
) -> tuple[dict[str, Any], bytes]:
    """:func:`assemble`, and the bundle's canonical bytes (computed on the way)."""
    if not entries:
        raise ProcessorError(f"run {run_id!r}: no entries to bundle; expected at least one")
    prev = genesis(run_id).hex()
    for i, e in enumerate(entries):
        if e.seq != i or e.prev_hash != prev:
            raise ProcessorError(
                f"run {run_id!r}: entry at position {i} has seq {e.seq} and prev_hash "
                f"{e.prev_hash[:16]}...; expected seq {i} chained to {prev[:16]}..."
            )
        prev = e.entry_hash
    bundle: dict[str, Any] = {
        "bundle_version": BUNDLE_VERSION,
        **derived_members(run_id, [e.event for e in entries], config),
        "chain": {
            "algorithm": DIGEST_ALGORITHM,
            "genesis": genesis(run_id).hex(),
            "head": entries[-1].entry_hash,
            "length": len(entries),
        },
        "merkle": merkle_member([e.event_hash for e in entries]),
        "events": [
            {"seq": e.seq, "event_hash": e.event_hash, "entry_hash": e.entry_hash, "event": e.event}
            for e in entries
        ],
        "integrity": {"digest_algorithm": DIGEST_ALGORITHM, "canonicalization": CANONICALIZATION},
    }
    return bundle, sealed(bundle)


#: Derived members present only when the run has what they list (v3 events); a bundle
#: of a run without them is what it was before they existed.
OPTIONAL_DERIVED = ("model_decisions", "blobs")


def _optional_members(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    found = {"model_decisions": _model_decisions(events), "blobs": _blobs(events)}
    return {name: value for name, value in found.items() if value}


#: The members of a bundle that are derived from its events and rules (SPEC section 7),
#: besides the :data:`OPTIONAL_DERIVED` ones.
DERIVED = (
    "run",
    "workflow",
    "artifacts",
    "gates",
    "recovery",
    "costs",
    "totals",
    "intercepts",
    "rules",
)


def derived_members(
    run_id: str, events: Sequence[dict[str, Any]], config: CoreConfig
) -> dict[str, Any]:
    """The members of :data:`DERIVED`: a pure function of a run's canonical event objects
    (seq 0..n-1, in order) and the rules.  Bundles are built with it and verification
    re-derives with it, so the two cannot disagree."""
    first = events[0]
    # A run whose seq 0 is not run_started still gets a bundle: its workflow is null and
    # its labels empty, and the fold raises the malformed_run intercept that says why
    # (SPEC section 7).  Refusing to bundle it would leave the evidence of a finished run
    # nowhere.
    started: dict[str, Any] = first["payload"] if first["type"] == "run_started" else {}
    fold, intercepts = fold_events(run_id, events, config)
    run: dict[str, Any] = {
        "run_id": run_id,
        "tenant": fold.tenant,
        "agent_id": fold.agent_id,
        "status": fold.status,
        "started_at": fold.started_at,
        "ended_at": fold.ended_at,
        "duration_ms": fold.duration_ms(),
        "labels": started.get("labels", {}),
    }
    if fold.project is not None:
        run["project"] = fold.project
    if fold.budget is not None:
        run["budget"] = fold.budget
    totals: dict[str, Any] = dict(fold.totals_json())
    costs: dict[str, Any] = {
        "currency": totals["currency"],
        "total": totals["cost"],
        "by_model": {k: v["cost"] for k, v in totals["by_model"].items()},
        "by_step": {k: v["cost"] for k, v in totals["by_step"].items()},
    }
    if totals["currency"] is None:
        del costs["currency"]
        del totals["currency"]
    return {
        "run": {k: v for k, v in run.items() if v is not None},
        "workflow": started.get("workflow"),
        "artifacts": _artifacts(events),
        "gates": _gates(events),
        "recovery": _recovery(events),
        "costs": costs,
        "totals": totals,
        "intercepts": [i.to_json() for i in intercepts],
        "rules": config.rules_json(),
        **_optional_members(events),
    }
