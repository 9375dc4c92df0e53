"""Which artifact revision crossed each approval boundary, and the ``approvals`` check.

A human gate that names an artifact (``artifact_key``, and usually ``artifact_version``,
on its request or its resolution) decided on one revision of it.  :func:`approvals` says,
for every resolved gate, which one - by content hash - from the run's own events:

* the gate's artifact is the resolution's ``artifact_key``/``artifact_version``, else
  the request's; an ``edit`` decides on the request's version (the one the reviewer was
  shown) and the version its resolution names is the revision the edit produces;
* without a version, the gate decided on the newest version of that key written before
  the gate was resolved;
* the revision's content hash is that of the last ``artifact_written`` of that key and
  version before the resolution.

:func:`check_approvals` is the ``approvals`` check of ``fleetledger verify`` (SPEC.md 8):
every gate naming an artifact must name a revision the run wrote *before* the decision,
that revision must not have held two contents before it, and no later write may change
the content under the approved version (a new revision must take a new version).  Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleetledger.kernel.errors import VerificationError

__all__ = ["Approval", "approvals", "check_approvals"]


@dataclass(frozen=True)
class Approval:
    """One gate decision and the artifact revision it was about (if any)."""

    gate_id: str
    decision: str
    reviewer: str
    resolved_seq: int
    step_id: str | None
    artifact_key: str | None = None
    artifact_version: int | None = None
    content_hash: str | None = None
    artifact_seq: int | None = None  # the write whose content was decided on
    state: str | None = None  # the revision's state at the decision
    problem: str | None = None  # why the approval does not hold (see check_approvals)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class _Write:
    seq: int
    key: str
    version: int
    content_hash: str
    state: str


def _writes(events: Sequence[Mapping[str, Any]]) -> list[_Write]:
    out = []
    for item in events:
        ev = item["event"]
        if ev.get("type") == "artifact_written":
            p = ev["payload"]
            out.append(_Write(item["seq"], p["key"], p["version"], p["content_hash"], p["state"]))
    return out


def approvals(bundle: Mapping[str, Any]) -> list[Approval]:
    """Every resolved gate of a bundle with the revision it decided on, in seq order."""
    events = bundle["events"]
    writes = _writes(events)
    requested: dict[str, Mapping[str, Any]] = {}
    out: list[Approval] = []
    for item in events:
        ev = item["event"]
        etype = ev.get("type")
        if etype == "human_gate_requested":
            requested[ev["payload"]["gate_id"]] = ev["payload"]
            continue
        if etype != "human_gate_resolved":
            continue
        p = ev["payload"]
        asked = requested.pop(p["gate_id"], {})
        key = p.get("artifact_key", asked.get("artifact_key"))
        version = p.get("artifact_version", asked.get("artifact_version"))
        if (
            p["decision"] == "edit"
            and asked.get("artifact_version") is not None
            and p.get("artifact_key", asked.get("artifact_key")) == asked.get("artifact_key")
        ):
            # an edit decides on the revision the reviewer was shown; the version the
            # resolution names is the one the edit produces (written after it)
            version = asked["artifact_version"]
        base = {
            "gate_id": p["gate_id"],
            "decision": p["decision"],
            "reviewer": p["reviewer"],
            "resolved_seq": item["seq"],
            "step_id": ev.get("step_id"),
        }
        if key is None:
            out.append(Approval(**base))
            continue
        seq = item["seq"]
        before = [w for w in writes if w.key == key and w.seq < seq]
        if version is None and before:
            version = max(w.version for w in before)
        of_version = [w for w in before if w.version == version]
        if not of_version:
            what = f"{key} v{version}" if version is not None else key
            out.append(
                Approval(
                    **base,
                    artifact_key=key,
                    artifact_version=version,
                    problem=f"the run wrote no {what} before the decision (seq {seq})",
                )
            )
            continue
        last = of_version[-1]
        problem = None
        hashes = sorted({w.content_hash for w in of_version})
        if len(hashes) > 1:
            problem = (
                f"{key} v{version} held {len(hashes)} contents before the decision "
                f"({', '.join(h[:19] for h in hashes)}); a new revision must take a new version"
            )
        else:
            changed = [
                w
                for w in writes
                if w.key == key
                and w.version == version
                and w.seq > seq
                and w.content_hash != last.content_hash
            ]
            if changed:
                problem = (
                    f"{key} v{version} changed after the decision: seq {changed[0].seq} wrote "
                    f"{changed[0].content_hash[:19]}..., the decision was on "
                    f"{last.content_hash[:19]}..."
                )
        out.append(
            Approval(
                **base,
                artifact_key=key,
                artifact_version=version,
                content_hash=last.content_hash,
                artifact_seq=last.seq,
                state=last.state,
                problem=problem,
            )
        )
    return out


def check_approvals(bundle: Mapping[str, Any]) -> int:
    """The ``approvals`` check: raise VerificationError on the first gate whose decision
    is not tied to one revision (see the module docstring); return how many are."""
    found = approvals(bundle)
    for a in found:
        if a.problem is not None:
            raise VerificationError(
                "approvals",
                f"gate {a.gate_id!r} ({a.decision}) is not tied to one revision: {a.problem}; "
                "expected the decision on a revision written before it, unchanged after it",
                where=f"seq {a.resolved_seq}",
            )
    return sum(1 for a in found if a.content_hash is not None)
