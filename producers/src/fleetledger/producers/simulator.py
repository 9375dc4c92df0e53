"""A deterministic fleet of simulated agent runs, recorded through a :class:`Recorder`.

``simulate(recorder, runs=200, seed=7)`` writes the same events, byte for byte, for the
same arguments: every run draws from its own ``random.Random`` seeded from ``seed``,
time is virtual (``start`` plus seeded offsets, 2026-11-01T00:00:00Z by default),
event ids are seeded UUIDs, and the runs are interleaved by merging their scripts on
virtual time, then emitted in that order by a single task.  The simulated runs are
exempt from the recorder's time-based linger, so message boundaries depend only on the
events and the recorder's ``batch_max_events``/``max_buffered_events``.

The fleet is meant to look like production: planners, coders, reviewers, researchers,
support and data agents of several tenants, each following a workflow DAG with human
gates; model calls across providers priced from the versioned price table (some costs
reported by the provider); prompt-cache hits; tool calls; gates approved, edited and
rejected; artifacts moving declared -> generated -> schema_valid -> verified -> pinned;
step errors with L1 retries and L2 escalations to a stronger model; runs with a small
budget that they overrun; and about 5-10% failed runs.

Shape knobs: ``scale`` multiplies the work inside each step (events per run, ~25-60
at 1.0); ``pace`` stretches the idle time between actions and between run arrivals;
``arrival_s`` is the mean virtual gap between run starts.  :data:`SHAPES` holds
presets (``few_busy``: long dense runs; ``many_slow``: short runs spread thin).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import uuid
from collections import Counter
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypedDict

from fleetledger.kernel.errors import ConfigError
from fleetledger.producers.pricing import ModelPrice, PriceTable, load_price_table
from fleetledger.producers.recorder import Recorder, Run, content_hash
from fleetledger.schemas import (
    ArtifactState,
    Cost,
    CostSource,
    EventType,
    GateDecision,
    GatePolicy,
    ModelIO,
    ModelOutcome,
    Money,
    RecoveryLevel,
    StepOutcome,
    ToolOutcome,
    TraceEvent,
    ValidationEvidence,
    WorkflowEdge,
    WorkflowSnapshot,
    WorkflowStep,
)

__all__ = ["SHAPES", "SIM_EPOCH", "SimulationSummary", "VirtualClock", "simulate"]

#: Where virtual time starts unless told otherwise.
SIM_EPOCH = datetime(2026, 11, 1, tzinfo=UTC)


class Shape(TypedDict):
    """The traffic-shape keywords of :func:`simulate`."""

    scale: float
    pace: float
    arrival_s: float


#: Presets for ``simulate(recorder, runs=..., seed=..., **SHAPES[name])``.
SHAPES: dict[str, Shape] = {
    "default": {"scale": 1.0, "pace": 1.0, "arrival_s": 20.0},
    # few runs, each doing a lot of work close together (hundreds of events per run)
    "few_busy": {"scale": 25.0, "pace": 0.05, "arrival_s": 1.0},
    # many small runs, long idle gaps: lots of runs open at once, few events each
    "many_slow": {"scale": 0.5, "pace": 30.0, "arrival_s": 2.0},
}

_CURRENCY = "USD"
_FROM_RECORDER: Any = object()
_PROVIDER_COST_SCALE = Decimal("0.000001")


@dataclass(frozen=True)
class SimulationSummary:
    """What :func:`simulate` recorded."""

    seed: int
    runs: int
    events: int
    run_ids: tuple[str, ...]
    completed: int
    failed: int
    events_by_type: Mapping[str, int]
    total_cost: Decimal
    currency: str
    price_table: str
    budget_exceeded_run_ids: tuple[str, ...]
    first_ts: datetime | None
    last_ts: datetime | None

    @property
    def failure_rate(self) -> float:
        return self.failed / self.runs if self.runs else 0.0


class VirtualClock:
    """A clock whose time is set by the simulator before every action."""

    def __init__(self, now: datetime = SIM_EPOCH) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class _SeededIds:
    """Version-4 UUIDs from a seeded generator."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def __call__(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)


# ------------------------------------------------------------------------- the fleet


@dataclass(frozen=True)
class _StepSpec:
    id: str
    name: str
    kind: str  # llm | tools | agentic | artifact
    gate: GatePolicy | None = None
    tools: tuple[str, ...] = ()
    artifact: str | None = None
    schema_ref: str | None = None
    tier: str = "small"
    calls: float = 1.0  # mean model calls (or tool calls for "tools") at scale 1


@dataclass(frozen=True)
class _AgentSpec:
    agent_id: str
    workflow: str
    revision: str
    providers: tuple[str, ...]
    steps: tuple[_StepSpec, ...]
    prompt_tokens: int  # median prompt size
    weight: float

    def snapshot(self) -> WorkflowSnapshot:
        return WorkflowSnapshot(
            name=self.workflow,
            revision=self.revision,
            steps=tuple(
                WorkflowStep(id=s.id, name=s.name, kind=s.kind, gate=s.gate) for s in self.steps
            ),
            edges=tuple(
                WorkflowEdge(source=a.id, target=b.id) for a, b in itertools.pairwise(self.steps)
            ),
        )


_AGENTS: tuple[_AgentSpec, ...] = (
    _AgentSpec(
        "planner",
        "plan-and-execute",
        "12",
        ("openai", "anthropic"),
        (
            _StepSpec("gather", "Gather context", "tools", tools=("web_search", "read_file")),
            _StepSpec(
                "plan",
                "Plan",
                "artifact",
                GatePolicy.CHECKPOINT,
                artifact="plan.md",
                schema_ref="fleetledger://schemas/plan/v2",
                tier="medium",
            ),
            _StepSpec(
                "execute",
                "Execute plan",
                "agentic",
                tools=("http_get", "sql_query", "write_file"),
                calls=2.0,
            ),
            _StepSpec("summarize", "Summarize", "llm"),
        ),
        4_000,
        1.0,
    ),
    _AgentSpec(
        "coder",
        "code-change",
        "31",
        ("anthropic", "openai", "mistral_ai"),
        (
            _StepSpec(
                "understand",
                "Understand the issue",
                "agentic",
                tools=("code_search", "read_file"),
                calls=1.5,
            ),
            _StepSpec(
                "implement",
                "Implement",
                "artifact",
                GatePolicy.PAUSE_AFTER,
                artifact="patch.diff",
                schema_ref="fleetledger://schemas/unified-diff/v1",
                tier="medium",
                calls=1.5,
            ),
            _StepSpec("test", "Run tests", "tools", tools=("run_tests",)),
            _StepSpec(
                "open_pr",
                "Open pull request",
                "tools",
                GatePolicy.PAUSE_BEFORE,
                tools=("github_create_pr",),
            ),
        ),
        9_000,
        1.3,
    ),
    _AgentSpec(
        "reviewer",
        "code-review",
        "8",
        ("anthropic", "openai"),
        (
            _StepSpec("fetch", "Fetch diff", "tools", tools=("github_get_diff",)),
            _StepSpec(
                "analyze",
                "Analyze",
                "agentic",
                tools=("code_search", "read_file"),
                tier="medium",
                calls=1.5,
            ),
            _StepSpec(
                "comment",
                "Write review",
                "artifact",
                GatePolicy.PAUSE_AFTER,
                artifact="review.json",
                schema_ref="fleetledger://schemas/review/v3",
            ),
            _StepSpec("post", "Post review", "tools", tools=("github_post_review",)),
        ),
        12_000,
        1.0,
    ),
    _AgentSpec(
        "researcher",
        "deep-research",
        "5",
        ("gcp.gemini", "openai", "anthropic"),
        (
            _StepSpec("search", "Search", "tools", tools=("web_search", "http_get"), calls=3.0),
            _StepSpec("read", "Read sources", "llm", calls=3.0),
            _StepSpec(
                "synthesize",
                "Synthesize report",
                "artifact",
                GatePolicy.CHECKPOINT,
                artifact="report.md",
                schema_ref="fleetledger://schemas/report/v1",
                tier="large",
            ),
            _StepSpec("fact_check", "Fact check", "agentic", tools=("web_search",)),
            _StepSpec(
                "publish", "Publish", "tools", GatePolicy.PAUSE_BEFORE, tools=("cms_publish",)
            ),
        ),
        20_000,
        0.8,
    ),
    _AgentSpec(
        "support-triage",
        "ticket-triage",
        "44",
        ("openai", "mistral_ai", "gcp.gemini"),
        (
            _StepSpec("classify", "Classify ticket", "llm"),
            _StepSpec("lookup", "Look up customer", "tools", tools=("crm_lookup", "sql_query")),
            _StepSpec(
                "draft",
                "Draft reply",
                "artifact",
                GatePolicy.PAUSE_BEFORE,
                artifact="reply.md",
                schema_ref="fleetledger://schemas/reply/v1",
            ),
            _StepSpec("send", "Send reply", "tools", tools=("send_email",)),
        ),
        2_500,
        1.5,
    ),
    _AgentSpec(
        "data-analyst",
        "weekly-report",
        "3",
        ("openai", "gcp.gemini"),
        (
            _StepSpec("query", "Query warehouse", "tools", tools=("sql_query",), calls=2.0),
            _StepSpec("analyze", "Analyze", "llm", tier="medium", calls=1.5),
            _StepSpec("chart", "Render charts", "tools", tools=("render_chart",)),
            _StepSpec(
                "write",
                "Write report",
                "artifact",
                GatePolicy.CHECKPOINT,
                artifact="weekly-report.md",
                schema_ref="fleetledger://schemas/report/v1",
                tier="medium",
            ),
        ),
        6_000,
        0.9,
    ),
)

_TENANTS: tuple[tuple[str, float, tuple[str, ...], float], ...] = (
    # tenant, weight, projects, strictness (share of gates edited or rejected)
    ("acme", 3.0, ("billing", "platform", "mobile"), 0.20),
    ("globex", 2.0, ("research", "support"), 0.30),
    ("initech", 1.5, ("tps-reports", "infra"), 0.45),
    ("umbrella", 1.0, ("biolab", "compliance"), 0.65),
    ("hooli", 1.0, ("search", "nucleus"), 0.25),
)
_REVIEWERS = ("alice", "bob", "chen", "dana", "emeka", "farah", "goran")
_REGIONS = ("eu-west-1", "us-east-1", "us-west-2", "ap-southeast-1")
_MODEL_ERRORS = (
    ("RateLimitError", "rate_limit"),
    ("APITimeoutError", "timeout"),
    ("InternalServerError", "provider_error"),
    ("OverloadedError", "provider_error"),
)
_TOOL_ERRORS = ("TimeoutError", "HTTPError", "PermissionError", "ConnectionResetError")
_STEP_ERRORS = (
    ("ToolExecutionError", "tool returned exit code 2"),
    ("ContextWindowExceededError", "prompt of 131072 tokens exceeds the 128000 window"),
    ("OutputParserError", "could not parse the model output as JSON"),
    ("DependencyError", "upstream service answered 503 Service Unavailable"),
)
_TIER_ORDER = {"small": 0, "medium": 1, "large": 2}
_WORK = 1.6  # repetitions per unit of a step's ``calls`` at scale 1


def _lognormal(rng: random.Random, median: float, sigma: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, median * math.exp(rng.gauss(0.0, sigma))))


def _weighted(rng: random.Random, items: list[tuple[Any, float]]) -> Any:
    total = sum(w for _, w in items)
    x = rng.random() * total
    for item, w in items:
        x -= w
        if x < 0:
            return item
    return items[-1][0]


@dataclass
class _Ctx:
    """Everything one run's script needs, plus its running cost."""

    index: int
    rng: random.Random
    run_id: str
    agent: _AgentSpec
    tenant: str
    strictness: float
    provider: str
    table: PriceTable
    scale: float
    pace: float
    t: int  # virtual ms since the simulation start
    budget: Decimal | None
    tight_budget: bool
    doom: str | None  # how this run is going to fail, if it is
    doom_step: int
    n: int = 0
    cost: Decimal = Decimal(0)
    recoveries: int = 0
    escalated: dict[str, str] = field(default_factory=dict)  # step -> provider/model
    models: dict[str, ModelPrice] = field(default_factory=dict)  # step -> chosen model
    calls: int = 0


_Action = tuple[int, int, int, str, dict[str, Any]]


class _Script:
    """Generates one run's actions as (virtual ms, run index, n, method, kwargs)."""

    def __init__(self, ctx: _Ctx, start_kwargs: dict[str, Any]) -> None:
        self.c = ctx
        self.start_kwargs = start_kwargs

    # -- time and actions
    def act(self, method: str, **kwargs: Any) -> _Action:
        c = self.c
        c.n += 1
        return (c.t, c.index, c.n, method, kwargs)

    def work(self, ms: float) -> int:
        """Busy time (a call, a tool); not stretched by pace."""
        d = max(1, int(ms))
        self.c.t += d
        return d

    def idle(self, ms: float) -> None:
        """Think or wait time; stretched by pace."""
        self.c.t += max(1, int(ms * self.c.pace))

    def count(self, mean: float) -> int:
        """A number of repetitions around ``mean * scale`` (at least 1)."""
        x = mean * _WORK * self.c.scale
        base = int(x)
        extra = 1 if self.c.rng.random() < x - base else 0
        jitter = self.c.rng.choice((-1, 0, 0, 1)) if x >= 3 else 0
        return max(1, base + extra + jitter)

    # -- models
    def model_for(self, step: _StepSpec) -> ModelPrice:
        c = self.c
        if step.id in c.escalated:
            return c.table.price(*c.escalated[step.id].split("/", 1))
        chosen = c.models.get(step.id)
        if chosen is not None:
            return chosen
        want = "large" if c.tight_budget else step.tier
        options = sorted(
            (p for p in c.table if p.provider == c.provider),
            key=lambda p: (abs(_TIER_ORDER[p.tier] - _TIER_ORDER[want]), p.model),
        )
        best = [p for p in options if p.tier == options[0].tier]
        chosen = best[c.rng.randrange(len(best))]
        c.models[step.id] = chosen
        return chosen

    def stronger(self, price: ModelPrice) -> ModelPrice:
        c = self.c
        same = [
            p
            for p in c.table
            if p.provider == price.provider and _TIER_ORDER[p.tier] > _TIER_ORDER[price.tier]
        ]
        if same:
            same.sort(key=lambda p: (_TIER_ORDER[p.tier], p.model))
            return same[0]
        top = c.table.price("anthropic", "claude-opus-4-1")
        return top if top != price else price

    def model_call(self, step: _StepSpec, turn: int, *, error: str | None = None) -> _Action:
        c = self.c
        rng = c.rng
        price = self.model_for(step)
        c.calls += 1
        prompt = int(_lognormal(rng, c.agent.prompt_tokens * (1 + 0.35 * turn), 0.5, 200, 180_000))
        cached = 0
        if turn > 0 and rng.random() < 0.7:
            cached = int(prompt * rng.uniform(0.45, 0.92))
        elif rng.random() < 0.12:  # shared system prompt hit
            cached = min(prompt, rng.choice((1024, 2048, 4096)))
        outcome = ModelOutcome.SUCCESS
        response_model: str | None = price.snapshot or price.model
        if error is not None:
            outcome = ModelOutcome.ERROR
            output = 0
            ms = _lognormal(rng, 2_500 if error == "APITimeoutError" else 300, 0.6, 50, 60_000)
            prompt = cached = 0  # nothing billed for a refused or timed-out call
            response_model = None
        else:
            output = int(_lognormal(rng, 450, 0.8, 8, 16_000))
            tps = rng.uniform(35, 160)
            ms = _lognormal(rng, 600, 0.5, 120, 8_000) + output / tps * 1000
            if rng.random() < 0.015:
                outcome = ModelOutcome.FALLBACK
                response_model = f"{price.model}-fallback"
        duration = self.work(ms)
        amount = c.table.cost_amount(
            price.provider,
            price.model,
            input_tokens=prompt,
            output_tokens=output,
            cache_read_tokens=cached,
        )
        source = CostSource.LOCAL
        if rng.random() < 0.2:
            source = CostSource.PROVIDER
            amount = amount.quantize(_PROVIDER_COST_SCALE, rounding=ROUND_HALF_UP)
        c.cost += amount
        salt = rng.getrandbits(64)
        # JSON text with sorted keys, as the SDK would serialize a mapping
        inputs = f'{{"messages":{2 + 2 * turn},"step":"{step.id}","turn":{turn}}}'
        outputs = (
            None
            if error is not None
            else f'{{"chars":{output * 4},"finish_reason":'
            f'"{"tool_calls" if step.tools else "stop"}"}}'
        )
        return self.act(
            "model_io",
            step_id=step.id,
            provider=price.provider,
            model=price.model,
            input_tokens=prompt,
            output_tokens=output,
            cache_read_tokens=cached,
            cost=Cost(amount=amount, currency=c.table.currency, source=source),
            duration_ms=duration,
            prompt_hash=content_hash(f"{c.run_id}/{step.id}/{turn}/{salt:x}"),
            response_hash=(
                None if error is not None else content_hash(f"{c.run_id}/{salt:x}/response")
            ),
            response_model=response_model,
            outcome=outcome,
            error_type=error,
            inputs=inputs,
            outputs=outputs,
        )

    def tool_call(self, step: _StepSpec, name: str, *, error: str | None = None) -> _Action:
        c = self.c
        rng = c.rng
        medians = {
            "run_tests": 45_000,
            "sql_query": 2_500,
            "web_search": 900,
            "http_get": 600,
            "render_chart": 1_500,
        }
        ms = _lognormal(rng, medians.get(name, 350), 0.7, 5, 600_000)
        if error == "TimeoutError":
            ms = max(ms, 30_000)
        duration = self.work(ms)
        call_id = f"call_{rng.getrandbits(96):024x}"
        return self.act(
            "tool_call",
            step_id=step.id,
            name=name,
            call_id=call_id,
            duration_ms=duration,
            inputs=f'{{"arg":{rng.getrandbits(32)},"tool":"{name}"}}',
            outputs=None if error else f'{{"items":{rng.randrange(0, 50)},"ok":true}}',
            outcome=ToolOutcome.ERROR if error else ToolOutcome.SUCCESS,
            error_type=error,
        )

    # -- script
    def __iter__(self) -> Iterator[_Action]:
        c = self.c
        yield self.act("start", **self.start_kwargs)
        outcome: tuple[str, str, str | None] | None = None  # (error_type, message, step)
        for index, step in enumerate(c.agent.steps):
            outcome = yield from self.run_step(index, step)
            if outcome is not None:
                break
            over = c.tight_budget and c.budget is not None and c.cost > c.budget
            if over and c.rng.random() < 0.5:
                assert c.budget is not None
                outcome = (
                    "BudgetExceededError",
                    f"spent {c.cost.normalize():f} {_CURRENCY} of a "
                    f"{c.budget.normalize():f} {_CURRENCY} budget",
                    step.id,
                )
                break
            self.idle(_lognormal(c.rng, 250, 0.8, 5, 30_000))
        self.idle(20)
        if outcome is None:
            summary = (
                f"{c.agent.workflow} finished: {len(c.agent.steps)} steps, {c.calls} model calls"
            )
            yield self.act("complete", summary=summary)
        else:
            error_type, message, failed_step = outcome
            yield self.act(
                "fail", error_type=error_type, error_message=message, failed_step=failed_step
            )

    def run_step(
        self, index: int, step: _StepSpec
    ) -> Generator[_Action, None, tuple[str, str, str | None] | None]:  # the run failure
        c = self.c
        rng = c.rng
        doomed_here = c.doom is not None and c.doom_step == index
        attempt = 0
        version = 0
        while True:
            attempt += 1
            start = c.t
            yield self.act("step_started", step_id=step.id, attempt=attempt)
            if step.gate == GatePolicy.PAUSE_BEFORE:
                decision = yield from self.gate(step, None, None, doomed_here and attempt <= 2)
                if decision == GateDecision.REJECT:
                    yield self.done(step, start, StepOutcome.BLOCKED, None, "rejected at the gate")
                    if attempt >= 2:
                        return (
                            "GateRejectedError",
                            f"reviewer rejected {step.id!r} twice",
                            step.id,
                        )
                    yield self.recovery(step, RecoveryLevel.L1_RETRY, "gate_rejected", attempt + 1)
                    continue
            if doomed_here and c.doom == "crash":
                self.work(_lognormal(rng, 4_000, 1.0, 100, 600_000))
                return ("WorkerLostError", "the worker stopped sending heartbeats", step.id)
            if rng.random() < 0.03 and attempt == 1 and step.kind != "artifact":
                # served from an earlier run's cached result
                self.work(rng.uniform(5, 60))
                yield self.done(step, start, StepOutcome.REPLAYED, None, "replayed from cache")
                return None
            failure = yield from self.step_work(step)
            fail_now = failure is not None or (
                doomed_here and c.doom == "step_error" and attempt <= 2
            )
            if fail_now:
                etype, emsg = failure or _STEP_ERRORS[rng.randrange(len(_STEP_ERRORS))]
                yield self.done(step, start, StepOutcome.ERROR, etype, emsg)
                if attempt >= 2:
                    return (etype, emsg, step.id)
                yield self.recovery(step, RecoveryLevel.L1_RETRY, "step_error", attempt + 1)
                continue
            if step.artifact is not None:
                result = yield from self.artifact_flow(
                    step, attempt, version, doomed_here and c.doom == "gate_reject"
                )
                version = result[1]
                if result[0] == "rejected":
                    yield self.done(step, start, StepOutcome.BLOCKED, None, "output rejected")
                    if attempt >= 2:
                        return (
                            "GateRejectedError",
                            f"reviewer rejected {step.artifact!r}",
                            step.id,
                        )
                    yield self.recovery(step, RecoveryLevel.L1_RETRY, "gate_rejected", attempt + 1)
                    continue
            elif step.gate == GatePolicy.PAUSE_AFTER or step.gate == GatePolicy.CHECKPOINT:
                yield from self.gate(step, None, None, False)
            yield self.done(step, start, StepOutcome.SUCCESS, None, None)
            return None

    def done(
        self,
        step: _StepSpec,
        start: int,
        outcome: StepOutcome,
        error_type: str | None,
        message: str | None,
    ) -> _Action:
        self.work(self.c.rng.uniform(1, 15))
        return self.act(
            "step_completed",
            step_id=step.id,
            outcome=outcome,
            duration_ms=self.c.t - start,
            error_type=error_type,
            error_message=message,
        )

    def recovery(
        self,
        step: _StepSpec,
        level: RecoveryLevel,
        kind: str,
        attempt: int,
        from_model: str | None = None,
        new_model: str | None = None,
        reason: str | None = None,
    ) -> _Action:
        self.c.recoveries += 1
        self.idle(self.c.rng.uniform(200, 5_000) if level == RecoveryLevel.L1_RETRY else 50)
        return self.act(
            "recovery",
            step_id=step.id,
            level=level,
            failure_kind=kind,
            attempt=attempt,
            from_model=from_model,
            new_model=new_model,
            reason=reason,
        )

    def resilient_model_call(self, step: _StepSpec, turn: int) -> Generator[_Action, None, None]:
        """A model call that may fail, be retried (L1) and escalate (L2) after two errors."""
        c = self.c
        rng = c.rng
        errors = 0
        while True:
            if rng.random() < 0.05 and errors < 3:
                etype, kind = _MODEL_ERRORS[rng.randrange(len(_MODEL_ERRORS))]
                yield self.model_call(step, turn, error=etype)
                errors += 1
                current = self.model_for(step)
                better = self.stronger(current)
                if errors >= 2 and step.id not in c.escalated and better != current:
                    c.escalated[step.id] = f"{better.provider}/{better.model}"
                    yield self.recovery(
                        step,
                        RecoveryLevel.L2_ESCALATE,
                        "repeated_error",
                        errors + 1,
                        current.model,
                        better.model,
                        f"{errors} consecutive {kind} errors",
                    )
                else:
                    yield self.recovery(step, RecoveryLevel.L1_RETRY, kind, errors + 1)
                continue
            yield self.model_call(step, turn)
            return

    def resilient_tool_call(self, step: _StepSpec, name: str) -> Generator[_Action, None, None]:
        c = self.c
        for attempt in range(1, 4):
            if c.rng.random() < 0.06 and attempt < 3:
                err = _TOOL_ERRORS[c.rng.randrange(len(_TOOL_ERRORS))]
                yield self.tool_call(step, name, error=err)
                yield self.recovery(step, RecoveryLevel.L1_RETRY, "tool_error", attempt + 1)
                continue
            yield self.tool_call(step, name)
            return

    def step_work(self, step: _StepSpec) -> Generator[_Action, None, tuple[str, str] | None]:
        """The body of a step; returns (error_type, message) when the step errs by itself."""
        c = self.c
        rng = c.rng
        if step.kind == "tools":
            for _ in range(self.count(step.calls)):
                yield from self.resilient_tool_call(step, rng.choice(step.tools))
                self.idle(rng.uniform(5, 80))
        elif step.kind == "llm":
            for turn in range(self.count(step.calls)):
                yield from self.resilient_model_call(step, turn)
                self.idle(rng.uniform(5, 80))
        elif step.kind == "agentic":
            turns = self.count(step.calls)
            for turn in range(turns):
                yield from self.resilient_model_call(step, turn)
                for _ in range(rng.choice((1, 1, 1, 2, 3))):
                    yield from self.resilient_tool_call(step, rng.choice(step.tools))
                self.idle(rng.uniform(5, 80))
            yield from self.resilient_model_call(step, turns)
        elif step.kind == "artifact":
            for turn in range(self.count(step.calls)):
                yield from self.resilient_model_call(step, turn)
                self.idle(rng.uniform(5, 80))
        if rng.random() < 0.015:
            return _STEP_ERRORS[rng.randrange(len(_STEP_ERRORS))]
        return None

    def artifact_event(
        self,
        step: _StepSpec,
        version: int,
        state: ArtifactState,
        digest: str,
        validation: ValidationEvidence | None = None,
    ) -> _Action:
        self.work(self.c.rng.uniform(2, 40))
        return self.act(
            "artifact",
            step_id=step.id,
            key=step.artifact,
            version=version,
            state=state,
            content_hash=digest,
            schema_ref=step.schema_ref,
            validation=validation,
        )

    def artifact_flow(
        self, step: _StepSpec, attempt: int, version: int, doomed: bool
    ) -> Generator[_Action, None, tuple[str, int]]:
        """Declared -> generated -> schema_valid -> verified -> (gate) -> pinned."""
        c = self.c
        rng = c.rng
        assert step.artifact is not None
        if version == 0:
            yield self.artifact_event(
                step, 0, ArtifactState.DECLARED, content_hash(f"{step.schema_ref}")
            )
        version += 1
        digest = content_hash(f"{c.run_id}/{step.artifact}/{version}/{rng.getrandbits(64):x}")
        yield self.artifact_event(step, version, ArtifactState.GENERATED, digest)
        validator = "jsonschema" if step.artifact.endswith(".json") else "structure-lint"
        if rng.random() < 0.12:
            # invalid output: escalate to a stronger model and regenerate
            yield self.artifact_event(
                step,
                version,
                ArtifactState.GENERATED,
                digest,
                ValidationEvidence(
                    validator=validator, passed=False, details="missing required section"
                ),
            )
            current = self.model_for(step)
            better = self.stronger(current)
            c.escalated[step.id] = f"{better.provider}/{better.model}"
            yield self.recovery(
                step,
                RecoveryLevel.L2_ESCALATE if better != current else RecoveryLevel.L1_RETRY,
                "schema_invalid",
                attempt + 1,
                current.model,
                better.model,
                f"{step.artifact} failed {validator}",
            )
            yield from self.resilient_model_call(step, 0)
            version += 1
            digest = content_hash(f"{c.run_id}/{step.artifact}/{version}/{rng.getrandbits(64):x}")
            yield self.artifact_event(step, version, ArtifactState.GENERATED, digest)
        yield self.artifact_event(
            step,
            version,
            ArtifactState.SCHEMA_VALID,
            digest,
            ValidationEvidence(validator=validator, passed=True),
        )
        verifier = "unit-tests" if step.artifact.endswith(".diff") else "reviewer-agent"
        yield self.artifact_event(
            step,
            version,
            ArtifactState.VERIFIED,
            digest,
            ValidationEvidence(validator=verifier, passed=True, details=None),
        )
        if step.gate in (GatePolicy.PAUSE_AFTER, GatePolicy.CHECKPOINT):
            decision = yield from self.gate(step, step.artifact, version, doomed)
            if decision == GateDecision.REJECT:
                return ("rejected", version)
            if decision == GateDecision.EDIT:
                version += 1
                digest = content_hash(f"{c.run_id}/{step.artifact}/{version}/edited")
                yield self.artifact_event(step, version, ArtifactState.GENERATED, digest)
                yield self.artifact_event(
                    step,
                    version,
                    ArtifactState.SCHEMA_VALID,
                    digest,
                    ValidationEvidence(validator=validator, passed=True),
                )
                yield self.artifact_event(
                    step,
                    version,
                    ArtifactState.VERIFIED,
                    digest,
                    ValidationEvidence(validator="human-review", passed=True),
                )
        yield self.artifact_event(step, version, ArtifactState.PINNED, digest)
        return ("pinned", version)

    def gate(
        self, step: _StepSpec, artifact: str | None, version: int | None, force_reject: bool
    ) -> Generator[_Action, None, GateDecision]:
        c = self.c
        rng = c.rng
        policy = step.gate or GatePolicy.CHECKPOINT
        gate_id = f"gate-{step.id}-{c.n + 1}"
        prompt = (
            f"Review {artifact} v{version} before it is pinned"
            if artifact
            else f"Approve step {step.name!r}"
        )
        yield self.act(
            "gate_requested",
            step_id=step.id,
            gate_id=gate_id,
            policy=policy,
            artifact_key=artifact,
            artifact_version=version,
            prompt=prompt,
        )
        before = c.t
        if policy == GatePolicy.CHECKPOINT:
            self.idle(_lognormal(rng, 90_000, 1.0, 2_000, 4 * 3_600_000))
        else:
            self.idle(_lognormal(rng, 600_000, 1.2, 5_000, 12 * 3_600_000))
        x = rng.random()
        if force_reject or x < c.strictness * 0.2:
            decision = GateDecision.REJECT
        elif x < c.strictness:
            decision = GateDecision.EDIT if artifact else GateDecision.APPROVE
        else:
            decision = GateDecision.APPROVE
        reviewer = f"{_REVIEWERS[rng.randrange(len(_REVIEWERS))]}@{c.tenant}.example"
        reason = {
            GateDecision.APPROVE: None,
            GateDecision.EDIT: "tightened wording and fixed an off-by-one",
            GateDecision.REJECT: "does not address the request",
        }[decision]
        yield self.act(
            "gate_resolved",
            step_id=step.id,
            gate_id=gate_id,
            decision=decision,
            reviewer=reviewer,
            reason=reason,
            artifact_key=artifact,
            artifact_version=version,
            wait_ms=c.t - before,
        )
        return decision


def _make_script(
    index: int,
    master: random.Random,
    used_ids: set[str],
    *,
    seed: int,
    table: PriceTable,
    scale: float,
    pace: float,
    t: int,
) -> _Script:
    run_seed = master.getrandbits(64)
    id_seed = master.getrandbits(64)
    rng = random.Random(run_seed)
    run_id = f"run-{master.getrandbits(64):016x}"
    while run_id in used_ids:
        run_id = f"run-{master.getrandbits(64):016x}"
    used_ids.add(run_id)
    agent = _weighted(rng, [(a, a.weight) for a in _AGENTS])
    tenant, _, projects, strictness = _weighted(rng, [(t_, t_[1]) for t_ in _TENANTS])
    provider = agent.providers[0] if rng.random() < 0.6 else rng.choice(agent.providers)
    budget: Decimal | None = None
    tight = False
    x = rng.random()
    if x < 0.05:
        tight = True
        budget = Decimal(rng.choice(("0.02", "0.03", "0.05", "0.08")))
    elif x < 0.35:
        budget = Decimal(rng.choice(("2", "5", "10", "25")))
    y = rng.random()
    doom: str | None = None
    if y < 0.035:
        doom = _weighted(rng, [("step_error", 3.0), ("gate_reject", 1.5), ("crash", 1.0)])
    doom_step = rng.randrange(len(agent.steps))
    if doom == "gate_reject":
        gated = [i for i, s in enumerate(agent.steps) if s.gate is not None]
        doom_step = gated[rng.randrange(len(gated))] if gated else doom_step
    labels = {
        "env": "prod" if rng.random() < 0.8 else "staging",
        "region": _REGIONS[rng.randrange(len(_REGIONS))],
        "agent.version": f"1.{rng.randrange(3, 9)}.{rng.randrange(0, 12)}",
        "sim.seed": str(seed),
    }
    traceparent = None
    if rng.random() < 0.3:
        traceparent = f"00-{rng.getrandbits(128) | 1:032x}-{rng.getrandbits(64) | 1:016x}-01"
    ctx = _Ctx(
        index=index,
        rng=rng,
        run_id=run_id,
        agent=agent,
        tenant=tenant,
        strictness=strictness,
        provider=provider,
        table=table,
        scale=scale,
        pace=pace,
        t=t,
        budget=budget,
        tight_budget=tight,
        doom=doom,
        doom_step=doom_step,
    )
    start_kwargs: dict[str, Any] = {
        "run_id": run_id,
        "agent_id": agent.agent_id,
        "tenant": tenant,
        "project": f"{tenant}/{projects[rng.randrange(len(projects))]}",
        "workflow": agent.snapshot(),
        "budget": Money(amount=budget, currency=_CURRENCY) if budget is not None else None,
        "labels": labels,
        "traceparent": traceparent,
        "ids": _SeededIds(id_seed),
    }
    return _Script(ctx, start_kwargs)


async def simulate(
    recorder: Recorder,
    *,
    runs: int,
    seed: int,
    scale: float = 1.0,
    pace: float = 1.0,
    arrival_s: float = 20.0,
    start: datetime = SIM_EPOCH,
    prices: PriceTable | str | None = None,
    producer_id: str = "fleetledger-simulator",
    linger_ms: int | None = _FROM_RECORDER,
    flush: bool = True,
) -> SimulationSummary:
    """Record ``runs`` simulated runs through ``recorder``; same arguments, same bytes.

    ``scale`` multiplies the work per step, ``pace`` the idle gaps, ``arrival_s`` is the
    mean virtual gap between run starts (exponential arrivals).  ``prices`` is a price
    table or a shipped version (default: the current table).  Every event carries
    ``producer_id``.  With ``flush`` the recorder is flushed before returning.

    Message boundaries are deterministic too: the simulated runs ignore the wall-clock
    linger; a run's buffer is cut once its oldest event is ``linger_ms`` *virtual* ms
    old (default: the recorder's ``linger_ms``; ``None``: only by size or at the end of
    the run), besides the recorder's own size and pressure rules.
    """
    if runs < 0:
        raise ConfigError(f"runs: found {runs}, expected a non-negative count")
    if scale <= 0 or pace <= 0 or arrival_s < 0:
        raise ConfigError(
            f"scale/pace/arrival_s: found {scale}/{pace}/{arrival_s}, expected "
            "scale > 0, pace > 0 and arrival_s >= 0"
        )
    if start.tzinfo is None or start.utcoffset() is None:
        raise ConfigError(f"start: found naive {start.isoformat()}, expected an aware datetime")
    table = prices if isinstance(prices, PriceTable) else load_price_table(prices or "2026-11")
    master = random.Random(seed)
    used: set[str] = set()
    scripts: list[_Script] = []
    t = 0
    for i in range(runs):
        script = _make_script(i, master, used, seed=seed, table=table, scale=scale, pace=pace, t=t)
        scripts.append(script)
        t += int(master.expovariate(1.0) * arrival_s * 1000 * pace)

    clock = VirtualClock(start)
    open_runs: dict[int, Run] = {}
    counts: Counter[str] = Counter()
    total = Decimal(0)
    completed = failed = 0
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    over_budget: list[str] = []
    run_cost: dict[int, Decimal] = {}
    run_budget: dict[int, Decimal] = {}

    # Batches are cut by virtual time: a run's buffer becomes a message once its oldest
    # event is ``linger`` virtual ms old (or by size / terminal event, as usual).
    linger = recorder.linger_ms if linger_ms is _FROM_RECORDER else linger_ms
    since: dict[int, int] = {}
    due: list[tuple[int, int]] = []
    for i, (ms, index, _n, method, kwargs) in enumerate(heapq.merge(*scripts)):
        if linger is not None:
            while due and due[0][0] + linger <= ms:
                first, idx = heapq.heappop(due)
                if since.get(idx) == first:
                    del since[idx]
                    if idx in open_runs:
                        open_runs[idx].send_now()
        if i % 256 == 255:
            await asyncio.sleep(0)  # let the sender drain
        clock.now = start + timedelta(milliseconds=ms)
        event: TraceEvent
        if method == "start":
            run = await recorder.start_run(
                clock=clock, producer_id=producer_id, linger=False, **kwargs
            )
            open_runs[index] = run
            run_cost[index] = Decimal(0)
            if kwargs["budget"] is not None:
                run_budget[index] = kwargs["budget"].amount
            counts[EventType.RUN_STARTED.value] += 1
            ts = clock.now
        else:
            run = open_runs[index]
            event = await getattr(run, method)(**kwargs)
            counts[event.type.value] += 1
            ts = event.ts
            if isinstance(event.payload, ModelIO):
                amount = event.payload.cost.amount
                total += amount
                run_cost[index] += amount
            if event.type == EventType.RUN_COMPLETED:
                completed += 1
            elif event.type == EventType.RUN_FAILED:
                failed += 1
            if event.type in (EventType.RUN_COMPLETED, EventType.RUN_FAILED):
                del open_runs[index]
                since.pop(index, None)
                budget = run_budget.pop(index, None)
                if budget is not None and run_cost[index] > budget:
                    over_budget.append(run.run_id)
                del run_cost[index]
        if linger is not None and index in open_runs and index not in since:
            since[index] = ms
            heapq.heappush(due, (ms, index))
        if first_ts is None:
            first_ts = ts
        last_ts = ts
    if flush:
        await recorder.flush()
    return SimulationSummary(
        seed=seed,
        runs=runs,
        events=sum(counts.values()),
        run_ids=tuple(s.c.run_id for s in scripts),
        completed=completed,
        failed=failed,
        events_by_type=dict(sorted(counts.items())),
        total_cost=total,
        currency=table.currency,
        price_table=table.version,
        budget_exceeded_run_ids=tuple(over_budget),
        first_ts=first_ts,
        last_ts=last_ts,
    )
