"""The indexed ``approvals`` agrees with SPEC 11.6 read literally (a quadratic reference
written here), on random runs of artifact writes and gates."""

from __future__ import annotations

import random
from typing import Any

from fleetledger.processors.approvals import approvals


def _reference(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(gate, version, content hash, problem kind) per resolved gate, straight from 11.6."""
    asked: dict[str, dict[str, Any]] = {}
    out: list[tuple[Any, ...]] = []
    for item in events:
        ev, seq = item["event"], item["seq"]
        p = ev["payload"]
        if ev["type"] == "human_gate_requested":
            asked[p["gate_id"]] = p
        if ev["type"] != "human_gate_resolved":
            continue
        req = asked.pop(p["gate_id"], {})
        key = p.get("artifact_key", req.get("artifact_key"))
        version = p.get("artifact_version", req.get("artifact_version"))
        edit = p["decision"] == "edit" and req.get("artifact_version") is not None
        if edit and key == req.get("artifact_key"):
            version = req["artifact_version"]
        if key is None:
            out.append((p["gate_id"], None, None, None))
            continue
        written = [
            (e["seq"], e["event"]["payload"])
            for e in events
            if e["event"]["type"] == "artifact_written" and e["event"]["payload"]["key"] == key
        ]
        if version is None and any(s < seq for s, _ in written):
            version = max(w["version"] for s, w in written if s < seq)
        mine = [(s, w) for s, w in written if w["version"] == version]
        before = [w["content_hash"] for s, w in mine if s < seq]
        if not before:
            out.append((p["gate_id"], version, None, "none"))
        elif len(set(before)) > 1:
            out.append((p["gate_id"], version, before[-1], "two"))
        elif any(w["content_hash"] != before[-1] for s, w in mine if s > seq):
            out.append((p["gate_id"], version, before[-1], "changed"))
        else:
            out.append((p["gate_id"], version, before[-1], None))
    return out


def _kind(problem: str | None) -> str | None:
    if problem is None:
        return None
    return "none" if "wrote no" in problem else "two" if "contents" in problem else "changed"


def _random_run(rng: random.Random) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for seq in range(rng.randint(1, 40)):
        t = rng.random()
        p: dict[str, Any]
        if t < 0.4:
            etype = "artifact_written"
            p = {
                "key": rng.choice("ab"),
                "version": rng.randint(1, 3),
                "content_hash": rng.choice(["sha256:1", "sha256:2", "sha256:3"]),
                "state": "generated",
            }
        elif t < 0.85:
            resolved = t >= 0.6
            etype = "human_gate_resolved" if resolved else "human_gate_requested"
            p = {"gate_id": f"g{rng.randint(0, 4)}"}
            if resolved:
                p |= {"decision": rng.choice(["approve", "edit", "reject"]), "reviewer": "r"}
            if rng.random() < 0.6:
                p["artifact_key"] = rng.choice("ab")
            if rng.random() < 0.5:
                p["artifact_version"] = rng.randint(1, 3)
        else:
            etype, p = "step_started", {}
        events.append({"seq": seq, "event": {"type": etype, "payload": p}})
    return events


def test_approvals_agree_with_the_spec_read_literally() -> None:
    rng = random.Random(11)
    problems = set()
    for _ in range(2000):
        events = _random_run(rng)
        found = [
            (a.gate_id, a.artifact_version, a.content_hash, _kind(a.problem))
            for a in approvals({"events": events})
        ]
        assert found == _reference(events), events
        problems |= {f[3] for f in found}
    assert problems == {None, "none", "two", "changed"}  # every outcome was exercised
