"""Two runs side by side, and one artifact's revisions side by side.

:func:`diff_runs` aligns the actions of two runs of a workflow step by step: the steps in
the order they first ran (the first run's, then steps only the second ran), and within a
step the two action sequences aligned like a text diff (:mod:`difflib` over each
action's kind and name), so one inserted call does not shift every later one.  Aligned
actions are compared by JSON path (``/payload/inputs/...``, ``/payload/outputs/...``,
``/payload/outcome``) with their cost and duration deltas; the rest are ``only_a`` /
``only_b``.  The workflow snapshots (name, revision, steps, edges) are diffed too.

:func:`artifact_history` lists the revisions of one artifact key with the gate decisions
on each (:mod:`fleetledger.processors.approvals`), and :func:`diff_artifact` compares two
versions: their writes (state, content hash, schema, validation) and, when the content
of both is available (``content`` loads it by content hash, e.g. from the blob store),
the content by JSON path.  Pure.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from fleetledger.kernel.errors import ReplayError
from fleetledger.processors.actions import Action, actions_of
from fleetledger.processors.approvals import Approval, approvals
from fleetledger.processors.jsondiff import Change, diff
from fleetledger.schemas import money_str

__all__ = [
    "ActionPair",
    "ArtifactDiff",
    "ArtifactRevision",
    "RunDiff",
    "RunSide",
    "artifact_history",
    "diff_artifact",
    "diff_runs",
]

PairStatus = Literal["same", "changed", "only_a", "only_b"]
_LIMIT = 50


@dataclass(frozen=True)
class RunSide:
    run_id: str
    workflow: str
    revision: str
    status: str
    cost: Decimal
    currency: str | None
    duration_ms: int | None
    events: int
    actions: int

    @classmethod
    def of(cls, bundle: Mapping[str, Any], n_actions: int) -> RunSide:
        totals = bundle.get("totals", {})
        return cls(
            run_id=bundle["run"]["run_id"],
            workflow=bundle["workflow"]["name"],
            revision=bundle["workflow"].get("revision", ""),
            status=bundle["run"].get("status", ""),
            cost=Decimal(totals.get("cost", "0")),
            currency=totals.get("currency"),
            duration_ms=bundle["run"].get("duration_ms"),
            events=len(bundle["events"]),
            actions=n_actions,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "revision": self.revision,
            "status": self.status,
            "cost": money_str(self.cost),
            "currency": self.currency,
            "duration_ms": self.duration_ms,
            "events": self.events,
            "actions": self.actions,
        }


@dataclass(frozen=True)
class ActionPair:
    step_id: str | None
    position: int
    status: PairStatus
    a: Action | None
    b: Action | None
    changes: tuple[Change, ...] = ()

    @property
    def label(self) -> str:
        subject = self.a or self.b
        assert subject is not None
        return subject.label

    @property
    def cost_delta(self) -> Decimal:
        return (self.b.cost if self.b else Decimal(0)) - (self.a.cost if self.a else Decimal(0))

    @property
    def duration_delta_ms(self) -> int:
        return (self.b.duration_ms if self.b else 0) - (self.a.duration_ms if self.a else 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "position": self.position,
            "action": self.label,
            "status": self.status,
            "a_seq": self.a.seq if self.a else None,
            "b_seq": self.b.seq if self.b else None,
            "cost_delta": money_str(self.cost_delta),
            "duration_delta_ms": self.duration_delta_ms,
            "diff": [c.to_json() for c in self.changes],
        }


@dataclass(frozen=True)
class RunDiff:
    a: RunSide
    b: RunSide
    workflow_changes: tuple[Change, ...]
    pairs: tuple[ActionPair, ...]

    @property
    def same_workflow(self) -> bool:
        return self.a.workflow == self.b.workflow

    @property
    def cost_delta(self) -> Decimal:
        return self.b.cost - self.a.cost

    @property
    def duration_delta_ms(self) -> int | None:
        if self.a.duration_ms is None or self.b.duration_ms is None:
            return None
        return self.b.duration_ms - self.a.duration_ms

    def counts(self) -> dict[str, int]:
        out = {"same": 0, "changed": 0, "only_a": 0, "only_b": 0}
        for p in self.pairs:
            out[p.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "diff": "fleetledger.run-diff/v1",
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "same_workflow": self.same_workflow,
            "workflow_diff": [c.to_json() for c in self.workflow_changes],
            "cost_delta": money_str(self.cost_delta),
            "duration_delta_ms": self.duration_delta_ms,
            "counts": self.counts(),
            "actions": [p.to_json() for p in self.pairs],
        }


def _compared(a: Action) -> dict[str, Any]:
    return {**a.request(), **a.result()}


def _step_order(*runs: Sequence[Action]) -> list[str | None]:
    order: list[str | None] = []
    for actions in runs:
        for a in actions:
            if a.step_id not in order:
                order.append(a.step_id)
    return order


def _align(xs: Sequence[Action], ys: Sequence[Action]) -> list[tuple[Action | None, Action | None]]:
    labels_x = [(a.kind, a.name) for a in xs]
    labels_y = [(a.kind, a.name) for a in ys]
    out: list[tuple[Action | None, Action | None]] = []
    matcher = difflib.SequenceMatcher(a=labels_x, b=labels_y, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out.extend(zip(xs[i1:i2], ys[j1:j2], strict=True))
            continue
        left, right = xs[i1:i2], ys[j1:j2]
        # a replaced block: same-named actions pair up, the rest stand alone
        used: set[int] = set()
        for x in left:
            match = next(
                (
                    j
                    for j, y in enumerate(right)
                    if j not in used and (y.kind, y.name) == (x.kind, x.name)
                ),
                None,
            )
            if match is None:
                out.append((x, None))
            else:
                used.add(match)
                out.append((x, right[match]))
        out.extend((None, y) for j, y in enumerate(right) if j not in used)
    return out


def diff_runs(a: Mapping[str, Any], b: Mapping[str, Any]) -> RunDiff:
    """Run ``b`` against run ``a`` (see the module docstring)."""
    acts_a = actions_of(a["events"])
    acts_b = actions_of(b["events"])
    pairs: list[ActionPair] = []
    for step in _step_order(acts_a, acts_b):
        xs = [x for x in acts_a if x.step_id == step]
        ys = [y for y in acts_b if y.step_id == step]
        for position, (x, y) in enumerate(_align(xs, ys)):
            if x is not None and y is not None:
                changes = tuple(
                    Change("/payload" + c.pointer, c.kind, c.before, c.after)
                    for c in diff(_compared(x), _compared(y), limit=_LIMIT)
                )
                status: PairStatus = "changed" if changes else "same"
                pairs.append(ActionPair(step, position, status, x, y, changes))
            elif x is not None:
                pairs.append(ActionPair(step, position, "only_a", x, None))
            else:
                pairs.append(ActionPair(step, position, "only_b", None, y))
    return RunDiff(
        a=RunSide.of(a, len(acts_a)),
        b=RunSide.of(b, len(acts_b)),
        workflow_changes=tuple(diff(a["workflow"], b["workflow"], limit=_LIMIT)),
        pairs=tuple(pairs),
    )


# --------------------------------------------------------------------------- artifacts


@dataclass(frozen=True)
class ArtifactRevision:
    """One version of an artifact: its writes (state transitions) and the decisions on it."""

    key: str
    version: int
    writes: tuple[dict[str, Any], ...]
    decisions: tuple[Approval, ...] = field(default=())

    @property
    def content_hash(self) -> str:
        return str(self.writes[-1]["content_hash"])

    @property
    def state(self) -> str:
        return str(self.writes[-1]["state"])

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "version": self.version,
            "content_hash": self.content_hash,
            "state": self.state,
            "writes": list(self.writes),
            "decisions": [d.to_json() for d in self.decisions],
        }


def artifact_history(bundle: Mapping[str, Any], key: str) -> list[ArtifactRevision]:
    """The revisions of ``key`` in a run, by version, with the gate decisions on each."""
    member = next((m for m in bundle.get("artifacts", []) if m["key"] == key), None)
    if member is None:
        known = sorted(m["key"] for m in bundle.get("artifacts", []))
        raise ReplayError(
            f"run {bundle['run']['run_id']!r} has no artifact {key!r}; expected one of {known}"
        )
    by_version: dict[int, list[dict[str, Any]]] = {}
    for v in member["versions"]:
        by_version.setdefault(v["version"], []).append(v)
    decided: dict[int, list[Approval]] = {}
    for ap in approvals(bundle):
        if ap.artifact_key == key and ap.artifact_version is not None:
            decided.setdefault(ap.artifact_version, []).append(ap)
    return [
        ArtifactRevision(key, version, tuple(writes), tuple(decided.get(version, ())))
        for version, writes in sorted(by_version.items())
    ]


@dataclass(frozen=True)
class ArtifactDiff:
    key: str
    a: ArtifactRevision
    b: ArtifactRevision
    same_content: bool
    metadata: tuple[Change, ...]
    content: tuple[Change, ...] | None  # None: the contents were not available

    def to_json(self) -> dict[str, Any]:
        return {
            "diff": "fleetledger.artifact-diff/v1",
            "key": self.key,
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "same_content": self.same_content,
            "metadata_diff": [c.to_json() for c in self.metadata],
            "content_diff": (
                [c.to_json() for c in self.content] if self.content is not None else None
            ),
        }


def _final(rev: ArtifactRevision) -> dict[str, Any]:
    last = rev.writes[-1]
    return {k: v for k, v in last.items() if k not in ("seq",)}


def diff_artifact(
    bundle: Mapping[str, Any],
    key: str,
    version_a: int,
    version_b: int,
    *,
    content: Callable[[str], Any] | None = None,
) -> ArtifactDiff:
    """Version ``version_b`` of ``key`` against ``version_a``."""
    history = {r.version: r for r in artifact_history(bundle, key)}
    for v in (version_a, version_b):
        if v not in history:
            raise ReplayError(
                f"artifact {key!r} of run {bundle['run']['run_id']!r} has no version {v}; "
                f"expected one of {sorted(history)}"
            )
    ra, rb = history[version_a], history[version_b]
    content_changes: tuple[Change, ...] | None = None
    if content is not None:
        ca, cb = content(ra.content_hash), content(rb.content_hash)
        if ca is not None and cb is not None:
            content_changes = tuple(diff(ca, cb, limit=_LIMIT))
    return ArtifactDiff(
        key=key,
        a=ra,
        b=rb,
        same_content=ra.content_hash == rb.content_hash,
        metadata=tuple(diff(_final(ra), _final(rb), limit=_LIMIT)),
        content=content_changes,
    )
