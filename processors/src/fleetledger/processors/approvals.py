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

from bisect import bisect_left
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


class _Writes:
    """The run's ``artifact_written`` events indexed by key and by (key, version), so each
    gate is judged in logarithmic time however many revisions and gates a run has."""

    def __init__(self, events: Sequence[Mapping[str, Any]]) -> None:
        self.by_key: dict[str, list[_Write]] = {}
        self.by_version: dict[tuple[str, int], list[_Write]] = {}
        for item in events:
            ev = item["event"]
            if ev.get("type") == "artifact_written":
                p = ev["payload"]
                w = _Write(item["seq"], p["key"], p["version"], p["content_hash"], p["state"])
                self.by_key.setdefault(w.key, []).append(w)
                self.by_version.setdefault((w.key, w.version), []).append(w)
        self.key_seqs = {k: [w.seq for w in ws] for k, ws in self.by_key.items()}
        self.version_seqs = {kv: [w.seq for w in ws] for kv, ws in self.by_version.items()}
        # for the writes of one key: the highest version written up to each of them
        self.top: dict[str, list[int]] = {}
        for key, ws in self.by_key.items():
            top, highest = [], ws[0].version
            for w in ws:
                highest = max(highest, w.version)
                top.append(highest)
            self.top[key] = top
        # for the writes of one version: the index of the next write with another content
        self.next_other: dict[tuple[str, int], list[int]] = {}
        for kv, ws in self.by_version.items():
            nxt = [len(ws)] * len(ws)
            for i in range(len(ws) - 2, -1, -1):
                same = ws[i + 1].content_hash == ws[i].content_hash
                nxt[i] = nxt[i + 1] if same else i + 1
            self.next_other[kv] = nxt

    def newest_version(self, key: str, seq: int) -> int | None:
        """The highest version of ``key`` written before ``seq``."""
        n = bisect_left(self.key_seqs[key], seq) if key in self.key_seqs else 0
        return self.top[key][n - 1] if n else None

    def of_version(self, key: str, version: int, seq: int) -> list[_Write]:
        """The writes of ``key`` v``version`` before ``seq``."""
        ws = self.by_version.get((key, version), [])
        return ws[: bisect_left(self.version_seqs[(key, version)], seq)] if ws else []

    def one_content(self, key: str, version: int, count: int) -> bool:
        """Whether the first ``count`` writes of that version hold one content."""
        return self.next_other[(key, version)][0] >= count

    def changed_after(self, key: str, version: int, last_index: int) -> _Write | None:
        """The first later write of that version whose content is not the one at
        ``last_index``."""
        ws = self.by_version[(key, version)]
        i = self.next_other[(key, version)][last_index]
        return ws[i] if i < len(ws) else None


def approvals(bundle: Mapping[str, Any]) -> list[Approval]:
    """Every resolved gate of a bundle with the revision it decided on, in seq order."""
    events = bundle["events"]
    writes = _Writes(events)
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
        if version is None:
            version = writes.newest_version(key, seq)
        of_version = writes.of_version(key, version, seq) if version is not None else []
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
        assert version is not None
        if not writes.one_content(key, version, len(of_version)):
            hashes = sorted({w.content_hash for w in of_version})
            problem = (
                f"{key} v{version} held {len(hashes)} contents before the decision "
                f"({', '.join(h[:19] for h in hashes)}); a new revision must take a new version"
            )
        else:
            changed = writes.changed_after(key, version, len(of_version) - 1)
            if changed is not None:
                problem = (
                    f"{key} v{version} changed after the decision: seq {changed.seq} wrote "
                    f"{changed.content_hash[:19]}..., the decision was on "
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
