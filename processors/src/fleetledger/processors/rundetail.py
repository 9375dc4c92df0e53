"""A run as the console's detail page shows it: pure functions over read-model rows.

From a run's row, its actions (committed events in seq order), its intercepts and, once
it finished, its bundle bytes: the frozen workflow laid out as a graph with each step's
state and gate policy, the gates with decisions and reviewers, the artifacts with their
versions and lifecycle states, the recovery chain (the bundle's own sections, computed
the same way while the run is still going), cost by step and by model, and whether the
hash chain verified -- the recorded hashes of every entry re-derived from the events,
and for a finished run the whole bundle checked as ``fleetledger verify`` checks it.

Also the action filter of the telemetry view (search text, outcome class).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import orjson

from fleetledger.kernel.errors import FleetLedgerError
from fleetledger.processors.bundle import run_sections
from fleetledger.processors.canonical import event_hash, genesis, link
from fleetledger.processors.readmodel import ActionRow, InterceptRow, RunRow

#: The outcome classes the telemetry view filters by.
OutcomeClass = Literal["success", "error", "blocked", "replayed"]
OUTCOME_CLASSES: tuple[str, ...] = ("success", "error", "blocked", "replayed")

_CLASS_OF: Mapping[str, OutcomeClass] = {
    "success": "success",
    "fallback": "success",
    "approve": "success",
    "edit": "success",
    "error": "error",
    "reject": "blocked",
    "blocked": "blocked",
    "replayed": "replayed",
}


def outcome_class(action: ActionRow) -> OutcomeClass | None:
    """success / error / blocked / replayed, or None for events without an outcome."""
    if action.outcome is None:
        return None
    return _CLASS_OF.get(action.outcome)


@dataclass(frozen=True)
class ActionFilter:
    """The telemetry view's filter: text in the name or the event, and an outcome class."""

    text: str = ""
    outcome: str | None = None

    def __post_init__(self) -> None:
        if self.outcome is not None and self.outcome not in OUTCOME_CLASSES:
            from fleetledger.kernel.errors import ConfigError

            raise ConfigError(
                f"outcome {self.outcome!r}; expected one of {', '.join(OUTCOME_CLASSES)}"
            )

    def __bool__(self) -> bool:
        return bool(self.text) or self.outcome is not None

    def matches(self, action: ActionRow) -> bool:
        if self.outcome is not None and outcome_class(action) != self.outcome:
            return False
        if not self.text:
            return True
        needle = self.text.casefold()
        if needle in action.name.casefold() or needle in action.type.casefold():
            return True
        return needle in orjson.dumps(dict(action.event)).decode().casefold()

    def apply(self, actions: Sequence[ActionRow]) -> list[ActionRow]:
        return [a for a in actions if self.matches(a)]


# --------------------------------------------------------------------------- the DAG


@dataclass(frozen=True)
class DagNode:
    id: str
    name: str
    kind: str
    gate: str | None
    layer: int
    row: int
    #: pending (no event yet), running, success, error, blocked, replayed
    state: str


@dataclass(frozen=True)
class DagEdge:
    source: str
    target: str


@dataclass(frozen=True)
class Dag:
    """The frozen workflow in layers: sources in layer 0, every edge pointing right."""

    name: str
    revision: str
    nodes: tuple[DagNode, ...]
    edges: tuple[DagEdge, ...]
    layers: int
    rows: int

    def node(self, node_id: str) -> DagNode | None:
        return next((n for n in self.nodes if n.id == node_id), None)


def _step_states(actions: Sequence[ActionRow]) -> dict[str, str]:
    states: dict[str, str] = {}
    for a in actions:
        if a.step_id is None:
            continue
        if a.type == "step_completed":
            states[a.step_id] = str(a.event.get("payload", {}).get("outcome", "success"))
        elif a.step_id not in states or states[a.step_id] == "pending":
            states[a.step_id] = "running"
    return states


def layout_dag(workflow: Mapping[str, Any], actions: Sequence[ActionRow] = ()) -> Dag:
    """A layered layout of ``workflow`` (a run_started payload's ``workflow``).

    A step's layer is the longest path to it from a source; steps on a cycle or naming
    an unknown step are placed after every other (a recorded workflow is shown as it
    is, not refused).  Within a layer steps keep their declared order.
    """
    steps: list[Mapping[str, Any]] = list(workflow.get("steps", ()))
    ids = [str(s["id"]) for s in steps]
    known = set(ids)
    edges = [
        DagEdge(str(e["source"]), str(e["target"]))
        for e in workflow.get("edges", ())
        if e["source"] in known and e["target"] in known
    ]
    incoming: dict[str, list[str]] = {i: [] for i in ids}
    for e in edges:
        incoming[e.target].append(e.source)
    layer: dict[str, int] = {}
    # longest-path layering by repeated relaxation (bounded: a cycle stops growing)
    for i in ids:
        layer[i] = 0
    for _ in range(len(ids)):
        changed = False
        for e in edges:
            if layer[e.target] < layer[e.source] + 1 and layer[e.source] + 1 < len(ids):
                layer[e.target] = layer[e.source] + 1
                changed = True
        if not changed:
            break
    states = _step_states(actions)
    rows: dict[int, int] = {}
    nodes = []
    for s in steps:
        sid = str(s["id"])
        n = layer[sid]
        row = rows.get(n, 0)
        rows[n] = row + 1
        nodes.append(
            DagNode(
                id=sid,
                name=str(s.get("name", sid)),
                kind=str(s.get("kind", "")),
                gate=None if s.get("gate") is None else str(s["gate"]),
                layer=n,
                row=row,
                state=states.get(sid, "pending"),
            )
        )
    return Dag(
        name=str(workflow.get("name", "")),
        revision=str(workflow.get("revision", "")),
        nodes=tuple(nodes),
        edges=tuple(edges),
        layers=(max(layer.values()) + 1) if layer else 0,
        rows=max(rows.values(), default=0),
    )


# --------------------------------------------------------------------------- the chain


@dataclass(frozen=True)
class ChainCheck:
    """Whether the recorded hashes hold: every entry's event hash and link re-derived.

    ``verified`` is None when there is nothing to check (rows without recorded hashes);
    ``bundle`` is the result of the full bundle verification of a finished run (None
    while the run is going).
    """

    verified: bool | None
    detail: str
    checked: int
    bundle: bool | None = None
    bundle_detail: str | None = None
    merkle_root: str | None = None
    #: seq -> None when the entry checks out, else what was wrong
    problems: Mapping[int, str] = field(default_factory=dict)


def check_chain(run_id: str, actions: Sequence[ActionRow]) -> ChainCheck:
    """Re-derive every entry's hashes from its event and the previous entry (pure)."""
    prev = genesis(run_id).hex()
    problems: dict[int, str] = {}
    checked = 0
    for i, a in enumerate(actions):
        if a.event_hash is None or a.entry_hash is None:
            return ChainCheck(None, "the read model holds no recorded hashes for these rows", 0)
        if a.seq != i:
            problems[a.seq] = f"seq {a.seq} at position {i}; expected seq {i}"
            break
        h = event_hash(dict(a.event)).hex()
        if h != a.event_hash:
            problems[a.seq] = f"event hash {a.event_hash[:16]}... recorded, {h[:16]}... computed"
        elif a.prev_hash is not None and a.prev_hash != prev:
            problems[a.seq] = (
                f"previous hash {a.prev_hash[:16]}... recorded, {prev[:16]}... expected"
            )
        else:
            expected = link(bytes.fromhex(prev), bytes.fromhex(h)).hex()
            if expected != a.entry_hash:
                problems[a.seq] = (
                    f"entry hash {a.entry_hash[:16]}... recorded, {expected[:16]}... computed"
                )
        checked += 1
        prev = a.entry_hash
    if problems:
        first = min(problems)
        return ChainCheck(False, f"seq {first}: {problems[first]}", checked, problems=problems)
    return ChainCheck(True, f"{checked} entries chained from the genesis hash", checked)


def _verify_bundle(data: bytes) -> tuple[bool, str, str | None]:
    from fleetledger.processors.evidence import verify_bundle_bytes

    try:
        verified = verify_bundle_bytes(data, "bundle")
    except FleetLedgerError as exc:
        return False, str(exc), None
    return (
        True,
        f"digest, {verified.events} chain links, Merkle root, totals and intercepts hold",
        verified.merkle_root,
    )


# --------------------------------------------------------------------------- costs


@dataclass(frozen=True)
class CostShare:
    name: str
    currency: str
    cost: Decimal
    calls: int
    input_tokens: int
    output_tokens: int


def cost_shares(actions: Sequence[ActionRow], by: Literal["step", "model"]) -> list[CostShare]:
    """Model-call cost summed by step (``-`` without one) or by requested model."""
    acc: dict[tuple[str, str], list[Any]] = {}
    for a in actions:
        if a.type != "model_io" or a.cost is None:
            continue
        name = (a.step_id or "-") if by == "step" else f"{a.provider}/{a.request_model}"
        line = acc.setdefault((name, a.currency or ""), [Decimal(0), 0, 0, 0])
        line[0] += a.cost
        line[1] += 1
        line[2] += a.input_tokens or 0
        line[3] += a.output_tokens or 0
    return sorted(
        (CostShare(n, c, v[0], v[1], v[2], v[3]) for (n, c), v in acc.items()),
        key=lambda s: (-s.cost, s.name),
    )


# --------------------------------------------------------------------------- the detail


@dataclass(frozen=True)
class RunDetail:
    run: RunRow
    actions: tuple[ActionRow, ...]
    intercepts: tuple[InterceptRow, ...]
    workflow: Mapping[str, Any] | None
    dag: Dag | None
    gates: tuple[Mapping[str, Any], ...]
    artifacts: tuple[Mapping[str, Any], ...]
    recovery: tuple[Mapping[str, Any], ...]
    cost_by_step: tuple[CostShare, ...]
    cost_by_model: tuple[CostShare, ...]
    chain: ChainCheck
    #: the bundle's digest once the run finished (None while it is going)
    digest: str | None
    #: events in the run's Merkle tree (the bundle's ``merkle.size``), once finished
    merkle_size: int | None
    #: seq -> intercepts raised at that event
    intercepts_at: Mapping[int, tuple[InterceptRow, ...]]

    @property
    def finished(self) -> bool:
        return self.run.status in ("completed", "failed")

    @property
    def progress(self) -> tuple[int, int]:
        """(steps finished, steps in the workflow)."""
        if self.dag is None:
            return (0, 0)
        done = sum(1 for n in self.dag.nodes if n.state not in ("pending", "running"))
        return (done, len(self.dag.nodes))


def run_detail(
    run: RunRow,
    actions: Sequence[ActionRow],
    intercepts: Sequence[InterceptRow],
    bundle: bytes | None,
) -> RunDetail:
    """Everything the run page shows, from the read model's rows (and the bundle)."""
    workflow: Mapping[str, Any] | None = None
    if actions and actions[0].type == "run_started":
        workflow = actions[0].event.get("payload", {}).get("workflow")
    sections = run_sections([dict(a.event) for a in actions])
    chain = check_chain(run.run_id, actions)
    digest = None
    merkle_size = None
    if bundle is not None:
        doc = orjson.loads(bundle)
        digest = doc["integrity"]["digest"]
        merkle_size = int(doc.get("merkle", {}).get("size", len(doc.get("events", ()))))
        ok, detail, root = _verify_bundle(bundle)
        chain = ChainCheck(
            chain.verified if chain.verified is not None else ok,
            chain.detail,
            chain.checked,
            bundle=ok,
            bundle_detail=detail,
            merkle_root=root,
            problems=chain.problems,
        )
    at: dict[int, list[InterceptRow]] = {}
    for i in intercepts:
        at.setdefault(i.seq, []).append(i)
    return RunDetail(
        run=run,
        actions=tuple(actions),
        intercepts=tuple(intercepts),
        workflow=workflow,
        dag=None if workflow is None else layout_dag(workflow, actions),
        gates=tuple(sections["gates"]),
        artifacts=tuple(sections["artifacts"]),
        recovery=tuple(sections["recovery"]),
        cost_by_step=tuple(cost_shares(actions, "step")),
        cost_by_model=tuple(cost_shares(actions, "model")),
        chain=chain,
        digest=digest,
        merkle_size=merkle_size,
        intercepts_at={k: tuple(v) for k, v in at.items()},
    )


__all__ = [
    "OUTCOME_CLASSES",
    "ActionFilter",
    "ChainCheck",
    "CostShare",
    "Dag",
    "DagEdge",
    "DagNode",
    "RunDetail",
    "check_chain",
    "cost_shares",
    "layout_dag",
    "outcome_class",
    "run_detail",
]
