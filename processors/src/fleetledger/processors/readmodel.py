"""The read model's pure half: rows from the processors' outputs, and the reader port.

The processors publish four kinds of output record (``role``, ``key``, ``value``): ledger
entries, per-run totals, intercepts and bundles (``fleetledger.kernel.topics``).  The
projection turns a batch of them into typed rows -- runs, actions, intercepts, bundles
and per-run model use -- without any I/O; a SQL adapter
(``fleetledger.processors.readstore``) upserts the rows, with the positions of the
records they came from, in one transaction.  Every row is keyed (run, run and seq,
intercept id), so applying a record twice changes nothing.

The query side is the *reader port* (:class:`ReadModel`): typed results for the run
registry (filters, two sort orders, keyset pages), a run's actions, intercepts newest
first, cost reports, summary figures and a change feed whose positions serve as stream
(SSE) event ids.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

from fleetledger.kernel.errors import ConfigError, ProcessorError
from fleetledger.kernel.topics import MANIFEST_KIND
from fleetledger.schemas import money_str

if TYPE_CHECKING:
    from fleetledger.processors.pipeline import Outputs

#: The output roles the read model is built from (dead letters are not projected).
PROJECTED_ROLES: tuple[str, ...] = ("ledger", "totals", "intercepts", "bundles")

#: Event types that count as a run's *actions* (the calls an agent makes).
ACTION_TYPES = frozenset({"model_io", "tool_call"})
#: Outcomes of an action that returned a result.
SUCCESS_OUTCOMES = frozenset({"success", "fallback"})


RunStatus = Literal["open", "running", "completed", "failed"]
RUN_STATUSES: tuple[str, ...] = ("open", "running", "completed", "failed")
Sort = Literal["recent", "cost"]
SORTS: tuple[str, ...] = ("recent", "cost")


def parse_ts(text: str | None) -> datetime | None:
    """An aware UTC datetime from the ISO text of an event or output (``...Z``)."""
    if text is None:
        return None
    ts = datetime.fromisoformat(text)
    if ts.tzinfo is None:
        raise ProcessorError(f"timestamp {text!r} has no time zone; expected UTC (…Z)")
    return ts.astimezone(UTC)


def iso(ts: datetime | None) -> str | None:
    """``2026-01-02T03:04:05.678Z`` (milliseconds, UTC) or None."""
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: datetime) -> datetime:
    """A point in time from ``7d`` / ``24h`` / ``90m`` / ``2w`` (that long before ``now``)
    or an ISO date or datetime (UTC unless it names an offset)."""
    t = text.strip()
    if t[:-1].isdigit() and t[-1:].lower() in _UNITS:
        from datetime import timedelta

        return now - timedelta(seconds=int(t[:-1]) * _UNITS[t[-1].lower()])
    try:
        ts = datetime.fromisoformat(t.replace("Z", "+00:00") if t.endswith("Z") else t)
    except ValueError:
        raise ConfigError(
            f"time {text!r} is neither a duration nor an ISO date; expected e.g. 24h, 7d, "
            "2026-11-01 or 2026-11-01T12:00:00Z"
        ) from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class OutputRecord:
    """One processor output as published: its role (topic), key and value bytes.

    ``parsed``: the value as the runtime that made it still holds it (the JSON value that
    parsing ``value`` gives), so that projecting in the same process does not parse its
    own output again; None when the record was read from a topic.
    """

    role: str
    key: str
    value: bytes | None
    parsed: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RunRow:
    """A run as the registry shows it."""

    run_id: str
    tenant: str
    agent_id: str
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    duration_ms: int | None
    actions: int
    actions_ok: int
    events: int
    through_seq: int
    cost: Decimal
    currency: str | None
    intercepts: int = 0
    digest: str | None = None
    project: str | None = None
    position: int = 0

    @property
    def success_rate(self) -> Decimal | None:
        """Share of actions that returned a result (None without actions)."""
        if not self.actions:
            return None
        return Decimal(self.actions_ok) / Decimal(self.actions)

    def to_json(self) -> dict[str, Any]:
        rate = self.success_rate
        return {
            "run_id": self.run_id,
            "tenant": self.tenant,
            "agent_id": self.agent_id,
            "project": self.project,
            "status": self.status,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_ms": self.duration_ms,
            "actions": self.actions,
            "actions_ok": self.actions_ok,
            "success_rate": None if rate is None else money_str(rate.quantize(Decimal("0.0001"))),
            "events": self.events,
            "cost": money_str(self.cost),
            "currency": self.currency,
            "intercepts": self.intercepts,
            "digest": self.digest,
            "position": self.position,
        }


@dataclass(frozen=True)
class ActionRow:
    """One committed event of a run, as the run's telemetry shows it."""

    run_id: str
    seq: int
    type: str
    name: str
    ts: datetime
    step_id: str | None
    outcome: str | None
    cost: Decimal | None
    currency: str | None
    duration_ms: int | None
    provider: str | None
    request_model: str | None
    response_model: str | None
    input_tokens: int | None
    output_tokens: int | None
    event: Mapping[str, Any]
    position: int = 0
    #: the chain hashes the processors recorded for this entry (None in rows from before
    #: revision 0002 of the read model)
    event_hash: str | None = None
    prev_hash: str | None = None
    entry_hash: str | None = None

    @property
    def is_action(self) -> bool:
        return self.type in ACTION_TYPES

    @property
    def inputs(self) -> Any:
        """The payload's ``inputs``: parsed when it is JSON text, else as recorded."""
        return _maybe_json(self.event.get("payload", {}).get("inputs"))

    @property
    def outputs(self) -> Any:
        return _maybe_json(self.event.get("payload", {}).get("outputs"))

    @property
    def error(self) -> str | None:
        payload = self.event.get("payload", {})
        kind, message = payload.get("error_type"), payload.get("error_message")
        if kind and message:
            return f"{kind}: {message}"
        return kind or message or None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "type": self.type,
            "name": self.name,
            "ts": iso(self.ts),
            "step_id": self.step_id,
            "outcome": self.outcome,
            "cost": None if self.cost is None else money_str(self.cost),
            "currency": self.currency,
            "duration_ms": self.duration_ms,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "error": self.error,
            "event": dict(self.event),
            "event_hash": self.event_hash,
            "prev_hash": self.prev_hash,
            "entry_hash": self.entry_hash,
            "position": self.position,
        }


def _maybe_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


@dataclass(frozen=True)
class InterceptRow:
    intercept_id: str
    run_id: str
    kind: str
    severity: str
    seq: int
    reason: str
    ts: datetime
    tenant: str
    agent_id: str
    position: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "intercept_id": self.intercept_id,
            "run_id": self.run_id,
            "kind": self.kind,
            "severity": self.severity,
            "seq": self.seq,
            "reason": self.reason,
            "ts": iso(self.ts),
            "tenant": self.tenant,
            "agent_id": self.agent_id,
            "position": self.position,
        }


@dataclass(frozen=True)
class BundleRow:
    """A finished run's bundle: its bytes as published, or an archive manifest."""

    run_id: str
    digest: str
    value: bytes
    manifest: bool


@dataclass(frozen=True)
class ModelUse:
    """A run's calls to one requested model in one currency (summed over new actions)."""

    run_id: str
    provider: str
    model: str
    currency: str
    served: str | None = None
    calls: int = 0
    fallbacks: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.run_id, self.provider, self.model, self.currency)

    def plus(self, other: ModelUse) -> ModelUse:
        return replace(
            self,
            served=other.served or self.served,
            calls=self.calls + other.calls,
            fallbacks=self.fallbacks + other.fallbacks,
            errors=self.errors + other.errors,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost=self.cost + other.cost,
        )


# --------------------------------------------------------------------------- projection


def records_of(outputs: Outputs) -> list[OutputRecord]:
    """The records a runtime publishes for ``outputs`` (what the projector would read),
    each with the value it was serialized from."""
    return [
        *(OutputRecord("ledger", e.key, e.data, e.to_json()) for e in outputs.entries),
        *(OutputRecord("totals", t.run_id, t.data, t.doc) for t in outputs.totals),
        *(OutputRecord("intercepts", i.key, i.data, i.to_json()) for i in outputs.intercepts),
        *(OutputRecord("bundles", b.run_id, b.data, b.document) for b in outputs.bundles),
    ]


@dataclass
class Projection:
    """The rows of a batch of output records (latest value per key)."""

    runs: dict[str, RunRow] = field(default_factory=dict)
    actions: dict[tuple[str, int], ActionRow] = field(default_factory=dict)
    intercepts: dict[str, InterceptRow] = field(default_factory=dict)
    bundles: dict[str, BundleRow] = field(default_factory=dict)

    def touched_runs(self) -> set[str]:
        return (
            set(self.runs)
            | {r for r, _ in self.actions}
            | {i.run_id for i in self.intercepts.values()}
            | set(self.bundles)
        )

    def __bool__(self) -> bool:
        return bool(self.runs or self.actions or self.intercepts or self.bundles)


def project(records: Iterable[OutputRecord]) -> Projection:
    """Rows from output records, in the order they were published.

    Records of other roles and tombstones are ignored; a malformed value raises
    :class:`ProcessorError` naming the record.
    """
    out = Projection()
    for rec in records:
        if rec.value is None or rec.role not in PROJECTED_ROLES:
            continue
        try:
            obj = orjson.loads(rec.value) if rec.parsed is None else rec.parsed
            if rec.role == "ledger":
                action = action_from_entry(obj)
                out.actions[(action.run_id, action.seq)] = action
            elif rec.role == "totals":
                run = run_from_totals(obj)
                known = out.runs.get(run.run_id)
                if known is None or known.through_seq <= run.through_seq:
                    out.runs[run.run_id] = run
            elif rec.role == "intercepts":
                intercept = intercept_from_json(obj)
                out.intercepts[intercept.intercept_id] = intercept
            else:
                bundle = bundle_from_value(rec.key, obj, rec.value)
                out.bundles[bundle.run_id] = bundle
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise ProcessorError(
                f"{rec.role} record {rec.key!r} cannot be projected ({type(exc).__name__}: "
                f"{exc}); expected the processors' output format"
            ) from exc
    return out


def run_from_totals(t: Mapping[str, Any]) -> RunRow:
    """A run row from a totals value (intercept count and digest are joined by the store)."""
    outcomes: Mapping[str, int] = t.get("outcomes", {})
    actions = ok = 0
    for key, n in outcomes.items():
        kind, _, outcome = key.partition(".")
        if kind in ACTION_TYPES:
            actions += n
            if outcome in SUCCESS_OUTCOMES:
                ok += n
    return RunRow(
        run_id=t["run_id"],
        tenant=t.get("tenant") or "",
        agent_id=t.get("agent_id") or "",
        status=t["status"],
        started_at=parse_ts(t.get("started_at")),
        ended_at=parse_ts(t.get("ended_at")),
        duration_ms=t.get("duration_ms"),
        actions=actions,
        actions_ok=ok,
        events=int(t["events"]),
        through_seq=int(t["through_seq"]),
        cost=Decimal(t["cost"]),
        currency=t.get("currency"),
        project=t.get("project"),
    )


def _action_name(etype: str, event: Mapping[str, Any], p: Mapping[str, Any]) -> str:
    if etype == "model_io":
        model = p.get("gen_ai_response_model") or p["gen_ai_request_model"]
        return f"{p['gen_ai_provider_name']}/{model}"
    if etype == "tool_call":
        return str(p["gen_ai_tool_name"])
    if etype in ("human_gate_requested", "human_gate_resolved"):
        return str(p["gate_id"])
    if etype == "artifact_written":
        return f"{p['key']} v{p['version']}"
    if etype == "recovery":
        return f"{p['level']} {p['failure_kind']}"
    if etype == "run_started":
        return str(p.get("workflow", {}).get("name", ""))
    if etype == "run_failed":
        return str(p["error_type"])
    return str(event.get("step_id") or "")


def _outcome(etype: str, p: Mapping[str, Any]) -> str | None:
    if "outcome" in p:
        return str(p["outcome"])
    if etype == "human_gate_resolved":
        return str(p["decision"])
    if etype == "run_failed":
        return "error"
    if etype == "run_completed":
        return "success"
    return None


def action_from_event(
    run_id: str,
    seq: int,
    event: Mapping[str, Any],
    hashes: tuple[str | None, str | None, str | None] = (None, None, None),
) -> ActionRow:
    """An action row from one canonical event object (a ledger entry's or a bundle's);
    ``hashes``: its recorded (event hash, previous entry hash, entry hash)."""
    etype: str = event["type"]
    p: Mapping[str, Any] = event.get("payload", {})
    cost = p.get("cost") if etype == "model_io" else None
    if cost is not None and cost.get("source") == "unpriced":
        cost = None  # an unknown cost: no amount, no currency (totals count such calls apart)
    duration = p.get("duration_ms", p.get("wait_ms"))
    ts = parse_ts(event["ts"])
    assert ts is not None
    return ActionRow(
        run_id=run_id,
        seq=seq,
        type=etype,
        name=_action_name(etype, event, p),
        ts=ts,
        step_id=event.get("step_id"),
        outcome=_outcome(etype, p),
        cost=None if cost is None else Decimal(cost["amount"]),
        currency=None if cost is None else cost["currency"],
        duration_ms=None if duration is None else int(duration),
        provider=p.get("gen_ai_provider_name") if etype == "model_io" else None,
        request_model=p.get("gen_ai_request_model") if etype == "model_io" else None,
        response_model=p.get("gen_ai_response_model") if etype == "model_io" else None,
        input_tokens=p.get("gen_ai_usage_input_tokens") if etype == "model_io" else None,
        output_tokens=p.get("gen_ai_usage_output_tokens") if etype == "model_io" else None,
        event=event,
        event_hash=hashes[0],
        prev_hash=hashes[1],
        entry_hash=hashes[2],
    )


def action_from_entry(entry: Mapping[str, Any]) -> ActionRow:
    return action_from_event(
        entry["run_id"],
        int(entry["seq"]),
        entry["event"],
        (entry.get("event_hash"), entry.get("prev_hash"), entry.get("entry_hash")),
    )


def actions_from_bundle(bundle: Mapping[str, Any]) -> list[ActionRow]:
    """A finished run's actions from its bundle (archived runs, offline tools)."""
    run_id = bundle["run"]["run_id"]
    prev: str | None = bundle.get("chain", {}).get("genesis")
    out = []
    for e in bundle["events"]:
        hashes = (e.get("event_hash"), prev, e.get("entry_hash"))
        out.append(action_from_event(run_id, e["seq"], e["event"], hashes))
        prev = e.get("entry_hash")
    return out


def run_from_bundle(bundle: Mapping[str, Any], digest: str | None = None) -> RunRow:
    """A run row from a bundle (an archived run no longer in the read model)."""
    run, totals = bundle["run"], bundle["totals"]
    row = run_from_totals(
        {
            **totals,
            "run_id": run["run_id"],
            "tenant": run.get("tenant"),
            "agent_id": run.get("agent_id"),
            "project": run.get("project"),
            "status": run["status"],
            "started_at": run.get("started_at"),
            "ended_at": run.get("ended_at"),
            "duration_ms": run.get("duration_ms"),
            "through_seq": len(bundle["events"]) - 1,
        }
    )
    return replace(
        row,
        intercepts=len(bundle.get("intercepts", [])),
        digest=digest or bundle["integrity"]["digest"],
    )


def intercept_from_json(i: Mapping[str, Any]) -> InterceptRow:
    ts = parse_ts(i["ts"])
    assert ts is not None
    return InterceptRow(
        intercept_id=i["intercept_id"],
        run_id=i["run_id"],
        kind=i["kind"],
        severity=i["severity"],
        seq=int(i["seq"]),
        reason=i["reason"],
        ts=ts,
        tenant=i.get("tenant") or "",
        agent_id=i.get("agent_id") or "",
    )


def bundle_from_value(key: str, obj: Mapping[str, Any], value: bytes) -> BundleRow:
    if obj.get("kind") == MANIFEST_KIND:
        return BundleRow(run_id=obj["run_id"], digest=obj["digest"], value=value, manifest=True)
    run_id = obj["run"]["run_id"]
    if run_id != key:
        raise ValueError(f"bundle of run {run_id!r} under key {key!r}")
    return BundleRow(run_id=run_id, digest=obj["integrity"]["digest"], value=value, manifest=False)


def model_uses(actions: Iterable[ActionRow]) -> dict[tuple[str, str, str, str], ModelUse]:
    """Model calls of new actions summed per (run, provider, requested model, currency).

    Calls are grouped by the model the agent asked for, so a dated snapshot, an error
    without a response model and a fallback count as one model; ``served`` is the
    response model of its last regular answer and fallbacks are counted apart.
    """
    out: dict[tuple[str, str, str, str], ModelUse] = {}
    for a in actions:
        if a.type != "model_io" or a.provider is None or a.request_model is None:
            continue
        use = ModelUse(
            run_id=a.run_id,
            provider=a.provider,
            model=a.request_model,
            currency=a.currency or "",
            served=a.response_model if a.outcome == "success" else None,
            calls=1,
            fallbacks=1 if a.outcome == "fallback" else 0,
            errors=1 if a.outcome == "error" else 0,
            input_tokens=a.input_tokens or 0,
            output_tokens=a.output_tokens or 0,
            cost=a.cost or Decimal(0),
        )
        known = out.get(use.key)
        out[use.key] = use if known is None else known.plus(use)
    return out


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class RunFilter:
    """Registry filters; every one given must hold (an empty filter matches every run)."""

    status: tuple[str, ...] = ()
    agent: str | None = None
    tenant: str | None = None
    min_cost: Decimal | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for s in self.status:
            if s not in RUN_STATUSES:
                raise ConfigError(
                    f"status {s!r} is not a run status; expected one of {', '.join(RUN_STATUSES)}"
                )
        for name in ("since", "until"):
            ts = getattr(self, name)
            if ts is not None and ts.tzinfo is None:
                raise ConfigError(f"{name} {ts.isoformat()!r} has no time zone; expected UTC")
        if self.since and self.until and self.since > self.until:
            raise ConfigError(
                f"since {iso(self.since)} is after until {iso(self.until)}; expected a window"
            )

    def matches(self, run: RunRow) -> bool:
        """Whether ``run`` is one the filter selects (the store's query, in Python)."""
        started = run.started_at
        return (
            (not self.status or run.status in self.status)
            and (self.agent is None or run.agent_id == self.agent)
            and (self.tenant is None or run.tenant == self.tenant)
            and (self.min_cost is None or run.cost >= self.min_cost)
            and (self.since is None or (started is not None and started >= self.since))
            and (self.until is None or started is None or started < self.until)
        )

    def to_json(self) -> dict[str, Any]:
        """The filter as JSON (exports and API answers record what was asked)."""
        return {
            "status": list(self.status),
            "agent": self.agent,
            "tenant": self.tenant,
            "min_cost": None if self.min_cost is None else money_str(self.min_cost),
            "since": iso(self.since),
            "until": iso(self.until),
        }


@dataclass(frozen=True)
class RunQuery:
    filter: RunFilter = RunFilter()
    sort: Sort = "recent"
    limit: int = 50
    after: str | None = None

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise ConfigError(f"sort {self.sort!r}; expected one of {', '.join(SORTS)}")
        if not 1 <= self.limit <= 1000:
            raise ConfigError(f"limit {self.limit}; expected 1 to 1000")


@dataclass(frozen=True)
class RunPage:
    runs: tuple[RunRow, ...]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"runs": [r.to_json() for r in self.runs], "next_cursor": self.next_cursor}


@dataclass(frozen=True)
class InterceptQuery:
    run_id: str | None = None
    tenant: str | None = None
    agent: str | None = None
    severity: str | None = None
    limit: int = 50
    after: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= 1000:
            raise ConfigError(f"limit {self.limit}; expected 1 to 1000")


@dataclass(frozen=True)
class InterceptPage:
    intercepts: tuple[InterceptRow, ...]
    next_cursor: str | None
    total: int

    def to_json(self) -> dict[str, Any]:
        return {
            "intercepts": [i.to_json() for i in self.intercepts],
            "next_cursor": self.next_cursor,
            "total": self.total,
        }


def _money_map(m: Mapping[str, Decimal]) -> dict[str, str]:
    return {c: money_str(a) for c, a in sorted(m.items())}


@dataclass(frozen=True)
class RunSummary:
    """Figures over the runs a filter selects."""

    runs: int
    by_status: Mapping[str, int]
    cost: Mapping[str, Decimal]
    actions: int
    actions_ok: int
    intercepts: int

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "by_status": dict(sorted(self.by_status.items())),
            "cost": _money_map(self.cost),
            "actions": self.actions,
            "actions_ok": self.actions_ok,
            "intercepts": self.intercepts,
        }


@dataclass(frozen=True)
class CostLine:
    """One agent's or one model's use, with its cost per currency."""

    name: str
    runs: int
    calls: int
    input_tokens: int
    output_tokens: int
    cost: Mapping[str, Decimal]
    fallbacks: int = 0
    errors: int = 0
    served: tuple[str, ...] = ()
    #: calls recorded ``unpriced`` (no price known): counted in ``calls``, tokens kept,
    #: no amount in ``cost``
    unpriced_calls: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runs": self.runs,
            "calls": self.calls,
            "unpriced_calls": self.unpriced_calls,
            "fallbacks": self.fallbacks,
            "errors": self.errors,
            "served": list(self.served),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": _money_map(self.cost),
        }


@dataclass(frozen=True)
class CostReport:
    """Exact cost totals over the runs a filter selects: by agent, by model, in total.

    Per-run totals are idempotent upserts, so the sums are exact however often Kafka
    redelivered the events behind them.  Runs that made no priced call count as runs
    of their agent but add no currency.
    """

    runs: int
    by_agent: tuple[CostLine, ...]
    by_model: tuple[CostLine, ...]
    total: Mapping[str, Decimal]

    @property
    def unpriced_calls(self) -> int:
        """Model calls without a known price: in no currency of ``total``."""
        return sum(line.unpriced_calls for line in self.by_model)

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "by_agent": [line.to_json() for line in self.by_agent],
            "by_model": [line.to_json() for line in self.by_model],
            "total": _money_map(self.total),
            "unpriced_calls": self.unpriced_calls,
        }


@dataclass(frozen=True)
class AgentRow:
    tenant: str
    agent_id: str
    runs: int


ChangeKind = Literal["run", "action", "intercept"]


@dataclass(frozen=True)
class Change:
    """One row changed at ``position`` (strictly increasing in commit order)."""

    position: int
    kind: ChangeKind
    run_id: str
    row: RunRow | ActionRow | InterceptRow


# --------------------------------------------------------------------------- cursors


def encode_cursor(kind: str, *values: Any) -> str:
    raw = orjson.dumps([kind, *values])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, arity: int) -> list[Any]:
    """The key values of a cursor made by :func:`encode_cursor` for ``kind``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(
            f"cursor {cursor!r} is not a page cursor; expected one a page gave"
        ) from exc
    if not isinstance(values, list) or len(values) != arity + 1 or values[0] != kind:
        raise ConfigError(f"cursor {cursor!r} belongs to another listing; expected a {kind} cursor")
    return values[1:]


def run_cursor(sort: Sort, run: RunRow) -> str:
    if sort == "cost":
        return encode_cursor("cost", money_str(run.cost), run.run_id)
    return encode_cursor("recent", iso(run.started_at), run.run_id)


# --------------------------------------------------------------------------- reports


def merge_cost_lines(
    rows: Iterable[tuple[str, str | None, int, int, int, int, Decimal]],
) -> tuple[CostLine, ...]:
    """Agent lines from ``(name, currency, runs, calls, input, output, cost)`` groups.

    Groups of one agent in several currencies become one line with a cost per currency;
    a group without a currency (runs without a priced call) adds runs but no currency.
    """
    merged: dict[str, dict[str, Any]] = {}
    for name, currency, runs, calls, inp, outp, cost in rows:
        m = merged.setdefault(name, {"runs": 0, "calls": 0, "input": 0, "output": 0, "cost": {}})
        m["runs"] += runs
        m["calls"] += calls
        m["input"] += inp
        m["output"] += outp
        if currency:
            m["cost"][currency] = m["cost"].get(currency, Decimal(0)) + cost
    return tuple(
        CostLine(
            name=name,
            runs=m["runs"],
            calls=m["calls"],
            input_tokens=m["input"],
            output_tokens=m["output"],
            cost=m["cost"],
        )
        for name, m in sorted(merged.items())
    )


def total_cost(lines: Sequence[CostLine]) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {}
    for line in lines:
        for currency, amount in line.cost.items():
            total[currency] = total.get(currency, Decimal(0)) + amount
    return total


# --------------------------------------------------------------------------- the port


class ReadModel(Protocol):
    """The reader port: what the read commands and the console ask of the read model."""

    def runs(self, query: RunQuery) -> RunPage: ...

    def run(self, run_id: str) -> RunRow | None: ...

    def actions(
        self, run_id: str, *, after_seq: int = -1, limit: int | None = None
    ) -> list[ActionRow]: ...

    def intercepts(self, query: InterceptQuery) -> InterceptPage: ...

    def summary(self, filter: RunFilter) -> RunSummary: ...

    def costs(self, filter: RunFilter) -> CostReport: ...

    def bundle(self, run_id: str) -> bytes | None: ...

    def agents(
        self, search: str = "", *, tenant: str | None = None, limit: int = 20
    ) -> list[AgentRow]: ...

    def position(self) -> int: ...

    def changes(self, after: int, *, limit: int = 500) -> list[Change]: ...


__all__ = [
    "ACTION_TYPES",
    "MANIFEST_KIND",
    "PROJECTED_ROLES",
    "RUN_STATUSES",
    "SORTS",
    "ActionRow",
    "AgentRow",
    "BundleRow",
    "Change",
    "CostLine",
    "CostReport",
    "InterceptPage",
    "InterceptQuery",
    "InterceptRow",
    "ModelUse",
    "OutputRecord",
    "Projection",
    "ReadModel",
    "RunFilter",
    "RunPage",
    "RunQuery",
    "RunRow",
    "RunSummary",
    "action_from_entry",
    "action_from_event",
    "actions_from_bundle",
    "decode_cursor",
    "encode_cursor",
    "iso",
    "merge_cost_lines",
    "model_uses",
    "parse_ts",
    "parse_when",
    "project",
    "records_of",
    "run_cursor",
    "run_from_bundle",
    "run_from_totals",
    "total_cost",
]
