"""The pure core: sequence discipline, hash chain, running totals and intercept rules.

Everything here works on *canonical event objects* (``TraceEvent.to_json_obj()``: plain
JSON values, money as decimal strings, no floats), so the very same functions run in the
Faust worker, in the embedded runtime, and in an offline verifier re-folding a bundle.
No Kafka, Faust, SQLite or HTTP import, and no clock: time is passed in.

Per-run state (``RunState``) is O(1) in the number of events: a chain head, a running
fold whose size depends on the models and steps used, and a buffer holding only events
that arrived ahead of a gap.  Committed events live in the ledger entry store, which the
runtime passes in as a lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal, NotRequired, TypedDict

import orjson

from fleetledger.kernel.errors import ProcessorError
from fleetledger.processors.canonical import event_hash, genesis, link
from fleetledger.schemas import money_str

Severity = Literal["critical", "warning"]
TERMINAL_TYPES = frozenset({"run_completed", "run_failed"})


@dataclass(frozen=True)
class CoreConfig:
    """Intercept rule settings; part of every bundle so its intercepts can be re-derived."""

    budget_ratio: Decimal = Decimal("1")
    intervention_rate: Decimal = Decimal("0.5")
    intervention_min_gates: int = 4
    max_recoveries: int = 3
    gap_timeout_s: float = 30.0

    def rules_json(self) -> dict[str, Any]:
        """The event-derived rules, as they appear in a bundle (timing settings excluded)."""
        return {
            "budget_ratio": money_str(self.budget_ratio),
            "intervention_rate": money_str(self.intervention_rate),
            "intervention_min_gates": self.intervention_min_gates,
            "max_recoveries": self.max_recoveries,
        }

    @classmethod
    def from_rules_json(cls, rules: dict[str, Any]) -> CoreConfig:
        return cls(
            budget_ratio=Decimal(rules["budget_ratio"]),
            intervention_rate=Decimal(rules["intervention_rate"]),
            intervention_min_gates=int(rules["intervention_min_gates"]),
            max_recoveries=int(rules["max_recoveries"]),
        )


@dataclass(frozen=True)
class InterceptKind:
    """How one kind of intercept reads: its severity and the template of its reason.

    ``template`` names its parameters in braces, ``{name}``: the reason is the template
    with each placeholder replaced by ``params[name]`` (a string as it is, an integer in
    decimal), or by the intercept's ``seq`` for ``{seq}``; nothing else (SPEC section 6).
    """

    severity: Severity
    template: str
    #: A pure function of the run's events and rules (then part of the bundle); the
    #: other kinds depend on delivery and appear only on the intercepts output.
    event_derived: bool = True


#: Every intercept kind, in one place.  A new kind is one entry here (and the rule that
#: raises it with its parameters, via :func:`make_intercept`); SPEC.md section 6 lists them.
INTERCEPT_KINDS: dict[str, InterceptKind] = {
    "run_failed": InterceptKind("critical", "run failed: {error_type}: {error_message}"),
    "budget_exceeded": InterceptKind(
        "critical", "cost {cost} {currency} exceeds budget {budget} x {budget_ratio}"
    ),
    "high_intervention": InterceptKind(
        "warning",
        "{interventions} of {resolved} gates rejected or edited; "
        "at most {intervention_rate} of them expected",
    ),
    "excessive_recoveries": InterceptKind(
        "warning", "{recoveries} retries/escalations; at most {max_recoveries} expected"
    ),
    "currency_mismatch": InterceptKind(
        "critical", "cost in {currency}; expected the run's currency {run_currency}"
    ),
    "unpriced_model": InterceptKind(
        "warning",
        "no price for {model}: its calls are recorded with an unknown cost; "
        "a price (genai-prices or the price overrides) was expected",
    ),
    "malformed_run": InterceptKind(
        "critical", "{event_type} at seq {seq}; expected exactly one run_started, at seq 0"
    ),
    "equivocation": InterceptKind(
        "critical",
        "a different event at {position} seq {seq}: hash {event_hash}, {position} {known_hash}",
        event_derived=False,
    ),
    "event_after_terminal": InterceptKind(
        "critical", "seq {seq} after the run ended at seq {terminal_seq}", event_derived=False
    ),
    "stale_gap": InterceptKind(
        "critical",
        "seq {seq}..{last_missing} missing for over {timeout_s}s; {held} later events held",
        event_derived=False,
    ),
    "processing_error": InterceptKind(
        "critical", "message with seq {seq} not applied: {error}", event_derived=False
    ),
}

Param = str | int


def kept_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON of ``obj`` for a value that stays in memory (a stored entry or
    run state).

    orjson (3.12 and later) returns bytes that keep the whole buffer it grew while
    writing -- 4 KiB at the least, 16 KiB for a typical ledger entry -- whatever the
    length of the JSON.  A table holding 100,000 entries then holds ~1.6 GB of address
    space and ~5 KB of resident memory per entry.  A two-part join copies exactly the
    JSON (~0.3 us for an entry)."""
    return b"".join((orjson.dumps(obj), b""))


_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def render_reason(kind: str, seq: int, params: dict[str, Param]) -> str:
    """The reason text of an intercept: its kind's template filled from ``params``."""
    template = INTERCEPT_KINDS[kind].template

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        value = seq if name == "seq" else params[name]
        return value if isinstance(value, str) else str(int(value))

    return _PLACEHOLDER.sub(fill, template)


@dataclass(frozen=True)
class Intercept:
    """A critical intercept.  ``key`` makes re-raising it an idempotent upsert.

    Build it with :func:`make_intercept`, which takes the severity and the reason from
    :data:`INTERCEPT_KINDS`, so the reason is a pure function of ``kind``, ``seq`` and
    ``params``.
    """

    run_id: str
    kind: str
    severity: Severity
    seq: int
    reason: str
    ts: str
    tenant: str = ""
    agent_id: str = ""
    params: dict[str, Param] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.run_id}:{self.kind}:{self.seq}"

    def to_json(self) -> dict[str, Any]:
        return {"intercept_id": self.key, **asdict(self)}

    @cached_property
    def data(self) -> bytes:
        """The published JSON value (compact UTF-8)."""
        return orjson.dumps(self.to_json())


def make_intercept(
    kind: str, *, run_id: str, seq: int, ts: str, tenant: str, agent_id: str, **params: Param
) -> Intercept:
    """An intercept of a kind of :data:`INTERCEPT_KINDS`, its reason rendered from ``params``."""
    spec = INTERCEPT_KINDS[kind]
    return Intercept(
        run_id=run_id,
        kind=kind,
        severity=spec.severity,
        seq=seq,
        reason=render_reason(kind, seq, params),
        ts=ts,
        tenant=tenant,
        agent_id=agent_id,
        params=params,
    )


# --------------------------------------------------------------------------- fold


def _new_model_totals() -> dict[str, Any]:
    return {
        "calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_hits": 0,
        "cost": Decimal(0),
        "duration_ms": 0,
    }


def _new_step_totals() -> dict[str, Any]:
    return {
        "cost": Decimal(0),
        "model_calls": 0,
        "tool_calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "duration_ms": 0,
        "attempts": 0,
    }


def model_key(payload: dict[str, Any]) -> str:
    """Cost attribution key of a model call: provider/served model (request model if unknown)."""
    model = payload.get("gen_ai_response_model") or payload["gen_ai_request_model"]
    return f"{payload['gen_ai_provider_name']}/{model}"


@dataclass
class RunFold:
    """Running totals and event-derived intercept rules over a run's committed events.

    ``fold`` must be called with events in seq order.  The same fold rebuilds a bundle's
    totals and intercepts from its events, so live outputs and bundles cannot disagree.
    """

    run_id: str
    tenant: str = ""
    agent_id: str = ""
    project: str | None = None
    status: str = "open"
    started_at: str | None = None
    ended_at: str | None = None
    budget: dict[str, str] | None = None
    currency: str | None = None
    events: int = 0
    last_seq: int = -1
    cost: Decimal = field(default_factory=lambda: Decimal(0))
    unbilled: dict[str, Decimal] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(
        default_factory=lambda: {"input": 0, "output": 0, "cache_read_input": 0}
    )
    durations_ms: dict[str, int] = field(
        default_factory=lambda: {"model": 0, "tool": 0, "step": 0, "gate_wait": 0}
    )
    gates: dict[str, int] = field(
        default_factory=lambda: {"requested": 0, "approve": 0, "reject": 0, "edit": 0}
    )
    recoveries: dict[str, int] = field(default_factory=lambda: {"L1_RETRY": 0, "L2_ESCALATE": 0})
    by_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_step: dict[str, dict[str, Any]] = field(default_factory=dict)
    raised: list[str] = field(default_factory=list)
    #: model_io calls without a known price (cost source ``unpriced``), per model key
    unpriced: dict[str, int] = field(default_factory=dict)

    # -- folding

    def fold(self, obj: dict[str, Any], config: CoreConfig) -> list[Intercept]:
        """Fold one committed event; return the intercepts it raises."""
        etype: str = obj["type"]
        seq: int = obj["seq"]
        payload: dict[str, Any] = obj.get("payload", {})
        step_id: str | None = obj.get("step_id")
        self.events += 1
        self.last_seq = seq
        self.counts[etype] = self.counts.get(etype, 0) + 1
        found: list[Intercept] = []

        if etype == "run_started":
            if seq != 0 or self.status != "open":
                found.append(self._raise(obj, "malformed_run", event_type=etype))
            self.tenant = obj["tenant"]
            self.agent_id = obj["agent_id"]
            self.project = payload.get("project")
            self.started_at = obj["ts"]
            self.status = "running"
            budget = payload.get("budget")
            if budget is not None:
                self.budget = {"amount": budget["amount"], "currency": budget["currency"]}
                self.currency = budget["currency"]
        else:
            if seq == 0:
                # Flagged, then folded like any event of its type: a run without
                # run_started still counts its costs and still ends (SPEC section 6).
                found.append(self._raise(obj, "malformed_run", event_type=etype))
                self.tenant, self.agent_id = obj["tenant"], obj["agent_id"]
            found += self._fold_event(obj, etype, payload, step_id, config)
        return found

    def _fold_event(
        self,
        obj: dict[str, Any],
        etype: str,
        payload: dict[str, Any],
        step_id: str | None,
        config: CoreConfig,
    ) -> list[Intercept]:
        found: list[Intercept] = []
        if etype == "model_io":
            found += self._fold_model_io(obj, payload, step_id, config)
        elif etype == "tool_call":
            self._outcome("tool_call", payload["outcome"])
            self.durations_ms["tool"] += payload["duration_ms"]
            if step_id is not None:
                self._step(step_id)["tool_calls"] += 1
        elif etype == "step_started":
            if step_id is not None:
                self._step(step_id)["attempts"] += 1
        elif etype == "step_completed":
            self._outcome("step", payload["outcome"])
            self.durations_ms["step"] += payload["duration_ms"]
            if step_id is not None:
                self._step(step_id)["duration_ms"] += payload["duration_ms"]
        elif etype == "human_gate_requested":
            self.gates["requested"] += 1
        elif etype == "human_gate_resolved":
            found += self._fold_gate(obj, payload, config)
        elif etype == "recovery":
            level = payload["level"]
            self.recoveries[level] = self.recoveries.get(level, 0) + 1
            total = sum(self.recoveries.values())
            if total > config.max_recoveries and "excessive_recoveries" not in self.raised:
                found.append(
                    self._raise(
                        obj,
                        "excessive_recoveries",
                        recoveries=total,
                        max_recoveries=config.max_recoveries,
                    )
                )
        elif etype in TERMINAL_TYPES:
            self.status = "completed" if etype == "run_completed" else "failed"
            self.ended_at = obj["ts"]
            if etype == "run_failed":
                found.append(
                    self._raise(
                        obj,
                        "run_failed",
                        error_type=payload["error_type"],
                        error_message=payload["error_message"],
                    )
                )
        return found

    def _fold_model_io(
        self, obj: dict[str, Any], p: dict[str, Any], step_id: str | None, config: CoreConfig
    ) -> list[Intercept]:
        found: list[Intercept] = []
        self._outcome("model_io", p["outcome"])
        key = model_key(p)
        m = self.by_model.get(key)
        if m is None:
            m = self.by_model[key] = _new_model_totals()
        inp = p["gen_ai_usage_input_tokens"]
        out = p["gen_ai_usage_output_tokens"]
        cached = p.get("gen_ai_usage_cache_read_input_tokens", 0)
        m["calls"] += 1
        m["input_tokens"] += inp
        m["output_tokens"] += out
        m["cache_read_input_tokens"] += cached
        m["cache_hits"] += 1 if p["cache"] == "hit" else 0
        m["duration_ms"] += p["duration_ms"]
        self.tokens["input"] += inp
        self.tokens["output"] += out
        self.tokens["cache_read_input"] += cached
        self.durations_ms["model"] += p["duration_ms"]
        cost = p["cost"]
        if cost["source"] == "unpriced":  # tokens counted above; the cost is unknown
            m["unpriced_calls"] = m.get("unpriced_calls", 0) + 1
            if step_id is not None:
                s = self._step(step_id)
                s["model_calls"] += 1
                s["input_tokens"] += inp
                s["output_tokens"] += out
            first = key not in self.unpriced
            self.unpriced[key] = self.unpriced.get(key, 0) + 1
            if first:
                found.append(self._raise(obj, "unpriced_model", model=key))
            return found
        amount = Decimal(cost["amount"])
        if self.currency is None:
            self.currency = cost["currency"]
        if cost["currency"] != self.currency:
            self.unbilled[cost["currency"]] = (
                self.unbilled.get(cost["currency"], Decimal(0)) + amount
            )
            if "currency_mismatch" not in self.raised:
                found.append(
                    self._raise(
                        obj,
                        "currency_mismatch",
                        currency=cost["currency"],
                        run_currency=self.currency,
                    )
                )
            return found
        self.cost += amount
        m["cost"] += amount
        if step_id is not None:
            s = self._step(step_id)
            s["cost"] += amount
            s["model_calls"] += 1
            s["input_tokens"] += inp
            s["output_tokens"] += out
        if (
            self.budget is not None
            and "budget_exceeded" not in self.raised
            and self.cost > Decimal(self.budget["amount"]) * config.budget_ratio
        ):
            found.append(
                self._raise(
                    obj,
                    "budget_exceeded",
                    cost=money_str(self.cost),
                    currency=self.currency,
                    budget=self.budget["amount"],
                    budget_ratio=money_str(config.budget_ratio),
                )
            )
        return found

    def _fold_gate(
        self, obj: dict[str, Any], p: dict[str, Any], config: CoreConfig
    ) -> list[Intercept]:
        decision = p["decision"]
        self.gates[decision] = self.gates.get(decision, 0) + 1
        self.durations_ms["gate_wait"] += p["wait_ms"]
        resolved = self.gates["approve"] + self.gates["reject"] + self.gates["edit"]
        interventions = self.gates["reject"] + self.gates["edit"]
        if (
            resolved >= config.intervention_min_gates
            and "high_intervention" not in self.raised
            and Decimal(interventions) > config.intervention_rate * resolved
        ):
            return [
                self._raise(
                    obj,
                    "high_intervention",
                    interventions=interventions,
                    resolved=resolved,
                    intervention_rate=money_str(config.intervention_rate),
                )
            ]
        return []

    def _outcome(self, prefix: str, outcome: str) -> None:
        key = f"{prefix}.{outcome}"
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def _step(self, step_id: str) -> dict[str, Any]:
        s = self.by_step.get(step_id)
        if s is None:
            s = self.by_step[step_id] = _new_step_totals()
        return s

    def _raise(self, obj: dict[str, Any], kind: str, **params: Param) -> Intercept:
        if kind not in self.raised:
            self.raised.append(kind)
        return make_intercept(
            kind,
            run_id=self.run_id,
            seq=obj["seq"],
            ts=obj["ts"],
            tenant=obj.get("tenant", self.tenant),
            agent_id=obj.get("agent_id", self.agent_id),
            **params,
        )

    # -- views and persistence

    def duration_ms(self) -> int | None:
        if self.started_at is None or self.ended_at is None:
            return None
        start = datetime.fromisoformat(self.started_at)
        end = datetime.fromisoformat(self.ended_at)
        return (end - start) // timedelta(milliseconds=1)

    def totals_json(self) -> TotalsJson:
        """The totals as JSON (money as decimal strings), the same in outputs and bundles.

        ``unpriced`` (calls whose cost is unknown, per model) appears only when there are
        some, so totals of runs without such calls are what they always were.
        """
        out: TotalsJson = {
            "currency": self.currency,
            "cost": money_str(self.cost),
            "unbilled": {k: money_str(v) for k, v in sorted(self.unbilled.items())},
            "events": self.events,
            "counts": dict(sorted(self.counts.items())),
            "outcomes": dict(sorted(self.outcomes.items())),
            "tokens": dict(self.tokens),
            "durations_ms": dict(self.durations_ms),
            "gates": dict(self.gates),
            "recoveries": dict(self.recoveries),
            "by_model": {k: _money_fields(v) for k, v in sorted(self.by_model.items())},
            "by_step": {k: _money_fields(v) for k, v in sorted(self.by_step.items())},
        }
        if self.unpriced:
            out["unpriced"] = {
                "calls": sum(self.unpriced.values()),
                "by_model": dict(sorted(self.unpriced.items())),
            }
        return out

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        d["cost"] = str(self.cost)
        d["unbilled"] = {k: str(v) for k, v in self.unbilled.items()}
        d["by_model"] = {k: _str_money(v) for k, v in self.by_model.items()}
        d["by_step"] = {k: _str_money(v) for k, v in self.by_step.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunFold:
        d = dict(d)
        d["cost"] = Decimal(d["cost"])
        d["unbilled"] = {k: Decimal(v) for k, v in d["unbilled"].items()}
        d["by_model"] = {k: _dec_money(v) for k, v in d["by_model"].items()}
        d["by_step"] = {k: _dec_money(v) for k, v in d["by_step"].items()}
        return cls(**d)


class TotalsJson(TypedDict):
    """The members of :meth:`RunFold.totals_json` (SPEC.md, "Totals")."""

    currency: str | None
    cost: str
    unbilled: dict[str, str]
    events: int
    counts: dict[str, int]
    outcomes: dict[str, int]
    tokens: dict[str, int]
    durations_ms: dict[str, int]
    gates: dict[str, int]
    recoveries: dict[str, int]
    by_model: dict[str, dict[str, Any]]
    by_step: dict[str, dict[str, Any]]
    unpriced: NotRequired[dict[str, Any]]


def _money_fields(d: dict[str, Any]) -> dict[str, Any]:
    return {k: money_str(v) if isinstance(v, Decimal) else v for k, v in d.items()}


def _str_money(d: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in d.items()}


def _dec_money(d: dict[str, Any]) -> dict[str, Any]:
    return {k: Decimal(v) if k == "cost" else v for k, v in d.items()}


def fold_events(
    run_id: str, objs: Iterable[dict[str, Any]], config: CoreConfig
) -> tuple[RunFold, list[Intercept]]:
    """Fold a whole run from scratch (bundles, verification)."""
    fold = RunFold(run_id=run_id)
    found: list[Intercept] = []
    for obj in objs:
        found += fold.fold(obj, config)
    return fold, found


# --------------------------------------------------------------------------- chain


@dataclass(frozen=True)
class Entry:
    """A chained ledger entry: the event with its hash, the previous entry hash and its own."""

    run_id: str
    seq: int
    event_hash: str
    prev_hash: str
    entry_hash: str
    event: dict[str, Any]

    @property
    def key(self) -> str:
        return entry_key(self.run_id, self.seq)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "event_hash": self.event_hash,
            "prev_hash": self.prev_hash,
            "entry_hash": self.entry_hash,
            "event": self.event,
        }

    @cached_property
    def data(self) -> bytes:
        """The stored and published JSON value (compact UTF-8), serialized once."""
        return kept_json(self.to_json())

    def to_bytes(self) -> bytes:
        return self.data

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry:
        return cls(**orjson.loads(data))


def entry_key(run_id: str, seq: int) -> str:
    return f"{run_id}:{seq:012d}"


@dataclass
class RunState:
    """Everything a processor keeps per run between events (O(1) in committed events)."""

    run_id: str
    next_seq: int = 0
    head: str = ""
    terminal_seq: int | None = None
    pending: dict[int, dict[str, Any]] = field(default_factory=dict)
    gap_since: str | None = None
    gap_flagged_at: int | None = None
    fold: RunFold = field(default_factory=lambda: RunFold(run_id=""))
    #: After the bundle is materialized a runtime may drop the run's entries; the event
    #: hashes (hex, 64 characters per seq) stay here to judge late redeliveries.
    sealed: str | None = None

    def seal(self, event_hashes: list[str]) -> None:
        """Keep only the event hashes of a finished run (its entries may then be dropped)."""
        self.sealed = "".join(event_hashes)

    def sealed_hash(self, seq: int) -> str | None:
        if self.sealed is None or not 0 <= seq < len(self.sealed) // 64:
            return None
        return self.sealed[seq * 64 : (seq + 1) * 64]

    @classmethod
    def new(cls, run_id: str) -> RunState:
        return cls(run_id=run_id, head=genesis(run_id).hex(), fold=RunFold(run_id=run_id))

    def to_bytes(self) -> bytes:
        d = {
            "run_id": self.run_id,
            "next_seq": self.next_seq,
            "head": self.head,
            "terminal_seq": self.terminal_seq,
            "pending": {str(k): v for k, v in self.pending.items()},
            "gap_since": self.gap_since,
            "gap_flagged_at": self.gap_flagged_at,
            "fold": self.fold.to_json(),
        }
        if self.sealed is not None:
            d["sealed"] = self.sealed
        return kept_json(d)

    @classmethod
    def from_bytes(cls, data: bytes) -> RunState:
        d = orjson.loads(data)
        return cls(
            run_id=d["run_id"],
            next_seq=d["next_seq"],
            head=d["head"],
            terminal_seq=d["terminal_seq"],
            pending={int(k): v for k, v in d["pending"].items()},
            gap_since=d["gap_since"],
            gap_flagged_at=d["gap_flagged_at"],
            fold=RunFold.from_json(d["fold"]),
            sealed=d.get("sealed"),
        )


#: In :meth:`RunState.to_bytes` (compact orjson, fixed member order) a run without an
#: open sequence gap always contains these bytes; a runtime finds the runs whose stored
#: state has an open gap by their absence, without parsing every state.
CLOSED_GAP_MARK = b'"gap_since":null'


def has_open_gap(raw: bytes) -> bool:
    """Whether a stored run state (``RunState.to_bytes``) has an open sequence gap."""
    return CLOSED_GAP_MARK not in raw


def is_sealed(raw: bytes) -> bool:
    """Whether a stored run state (``RunState.to_bytes``) is sealed, without parsing it.

    ``sealed`` (a string) is its last member when present; otherwise the last member is
    ``fold`` (an object), so the bytes end in ``}}``, never in ``"}``.
    """
    return raw.endswith(b'"}')


@dataclass
class ApplyResult:
    """What applying one delivered event produced."""

    entries: list[Entry] = field(default_factory=list)
    intercepts: list[Intercept] = field(default_factory=list)
    duplicate: bool = False
    materialize: bool = False


EntryLookup = Callable[[str, int], "Entry | None"]


def _integrity(
    state: RunState, obj: dict[str, Any], kind: str, seq: int, **params: Param
) -> Intercept:
    return make_intercept(
        kind,
        run_id=state.run_id,
        seq=seq,
        ts=obj["ts"],
        tenant=obj.get("tenant", ""),
        agent_id=obj.get("agent_id", ""),
        **params,
    )


def apply(
    state: RunState,
    obj: dict[str, Any],
    lookup: EntryLookup,
    config: CoreConfig,
    now: datetime,
    ev_hash: bytes | None = None,
) -> ApplyResult:
    """Apply one delivered event (any order, any number of redeliveries) to a run's state.

    * seq already committed: identical -> duplicate (dropped); different -> equivocation.
    * seq ahead of the next expected one: held until the gap fills.
    * seq == next expected: committed, then any held successors are committed in order.
    """
    if obj["run_id"] != state.run_id:
        raise ProcessorError(f"event of run {obj['run_id']!r} applied to run {state.run_id!r}")
    seq: int = obj["seq"]
    h = (ev_hash if ev_hash is not None else event_hash(obj)).hex()
    result = ApplyResult()

    if seq < state.next_seq:
        stored = lookup(state.run_id, seq)
        known = stored.event_hash if stored is not None else state.sealed_hash(seq)
        if known is None:
            raise ProcessorError(
                f"run {state.run_id!r}: no stored entry for committed seq {seq}; "
                "the entry store and the run state disagree"
            )
        _compare(state, obj, h, known, "committed", result)
        return result

    if state.terminal_seq is not None:
        result.intercepts.append(
            _integrity(state, obj, "event_after_terminal", seq, terminal_seq=state.terminal_seq)
        )
        return result

    held = state.pending.get(seq)
    if held is not None:
        _compare(state, obj, h, held["hash"], "held", result)
        return result

    if seq > state.next_seq:
        state.pending[seq] = {"hash": h, "event": obj}
        if state.gap_since is None:
            state.gap_since = now.isoformat()
        return result

    _commit(state, obj, h, config, result)
    while state.terminal_seq is None and state.next_seq in state.pending:
        nxt = state.pending.pop(state.next_seq)
        _commit(state, nxt["event"], nxt["hash"], config, result)
    state.gap_since = now.isoformat() if state.pending else None
    state.gap_flagged_at = None
    if state.terminal_seq is not None and state.pending:
        for late_seq in sorted(state.pending):
            late = state.pending[late_seq]["event"]
            result.intercepts.append(
                _integrity(
                    state, late, "event_after_terminal", late_seq, terminal_seq=state.terminal_seq
                )
            )
        state.pending.clear()
        state.gap_since = None
    return result


def _compare(
    state: RunState, obj: dict[str, Any], h: str, known: str, where: str, result: ApplyResult
) -> None:
    """A redelivery of a known seq: identical -> duplicate; different -> equivocation."""
    if known == h:
        result.duplicate = True
        return
    seq = obj["seq"]
    result.intercepts.append(
        _integrity(state, obj, "equivocation", seq, position=where, event_hash=h, known_hash=known)
    )


def _commit(
    state: RunState, obj: dict[str, Any], h: str, config: CoreConfig, result: ApplyResult
) -> None:
    entry_hash = link(bytes.fromhex(state.head), bytes.fromhex(h)).hex()
    result.entries.append(
        Entry(
            run_id=state.run_id,
            seq=obj["seq"],
            event_hash=h,
            prev_hash=state.head,
            entry_hash=entry_hash,
            event=obj,
        )
    )
    state.head = entry_hash
    state.next_seq = obj["seq"] + 1
    result.intercepts += state.fold.fold(obj, config)
    if obj["type"] in TERMINAL_TYPES:
        state.terminal_seq = obj["seq"]
        result.materialize = True


def check_gap(state: RunState, config: CoreConfig, now: datetime) -> Intercept | None:
    """A stale-gap intercept if the run has waited longer than the timeout for a missing seq."""
    if state.gap_since is None or state.gap_flagged_at == state.next_seq:
        return None
    since = datetime.fromisoformat(state.gap_since)
    if (now - since).total_seconds() < config.gap_timeout_s:
        return None
    state.gap_flagged_at = state.next_seq
    first_held = min(state.pending)
    return make_intercept(
        "stale_gap",
        run_id=state.run_id,
        seq=state.next_seq,
        ts=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        tenant=state.fold.tenant,
        agent_id=state.fold.agent_id,
        last_missing=first_held - 1,
        timeout_s=f"{config.gap_timeout_s:g}",
        held=len(state.pending),
    )
