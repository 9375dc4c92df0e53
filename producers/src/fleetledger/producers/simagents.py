"""The replayable part of the simulated fleet: agents that run as code.

The scripted fleet of :mod:`fleetledger.producers.simulator` writes events directly.
These agents are functions ``agent(run)`` that do their work through the SDK - model
calls through a simulated provider decorated with :func:`~fleetledger.producers.tools.model`,
tool calls through :func:`~fleetledger.producers.tools.tool`, human decisions through
:meth:`Run.human_gate` - so ``fleetledger replay RUN --agent
fleetledger.producers.simagents:<name>`` re-executes them against their recording.

Some are deterministic; the others each carry one planted kind of non-determinism,
read from a :class:`SimEnv` that stands in for what a process reads besides its inputs
(the clock, entropy, the hash seed, external state).  The environment is a function of
the run - its id and its clock - so the original (a simulated run on a virtual clock)
and its replay (another run, on the replay's clock) see different ones, as two
processes would:

=============  =====================================  ==================================
agent          planted                                a replay finds
=============  =====================================  ==================================
triage_bot     nothing                                100% match
ledger_bot     nothing (a gate, artifacts, a          100% match
               re-executed local tool)
report_bot     the current time in a re-executed      output mismatch at
               tool's output                          /payload/outputs/generated_at
order_bot      a uuid4 in a re-executed tool's output output mismatch at
                                                      /payload/outputs/order_id
tagger_bot     set iteration order in a tool's inputs input mismatch (reordered) at
                                                      /payload/inputs/tags: a miss
pricing_bot    float noise (a sum in set order)       output mismatch (precision) at
                                                      /payload/outputs/total
watch_bot      an unrecorded call to the outside      an extra model call: a miss
               deciding whether to call a model
refund_bot     a bug: the refund in tenths of cents   (the README's failed run)
=============  =====================================  ==================================

:data:`AGENTS` lists them with their workflows and tasks; :func:`simulate_agents`
records one run of each (deterministic: same seed, same bytes).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fleetledger.kernel.errors import FleetLedgerError
from fleetledger.producers.recorder import Recorder, Run
from fleetledger.producers.tools import ModelReply, model, tool
from fleetledger.schemas import (
    ArtifactState,
    GatePolicy,
    WorkflowEdge,
    WorkflowSnapshot,
    WorkflowStep,
)

__all__ = [
    "AGENTS",
    "SIM_AGENTS_EPOCH",
    "SimAgent",
    "SimEnv",
    "TickingClock",
    "agent_run_id",
    "simulate_agents",
]

#: Where the virtual clock of the simulated agent runs starts.
SIM_AGENTS_EPOCH = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


class TickingClock:
    """A virtual clock that moves ``step_ms`` forward every time it is read."""

    def __init__(self, start: datetime = SIM_AGENTS_EPOCH, step_ms: int = 137) -> None:
        self.now = start
        self.step = timedelta(milliseconds=step_ms)

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


# --------------------------------------------------------------------------- environment


class _Tag(str):
    """A string whose hash depends on a seed: a set of them iterates in an order that
    depends on the seed, as a set of ``str`` does on ``PYTHONHASHSEED``."""

    seed: str = ""

    def __hash__(self) -> int:
        digest = hashlib.sha256(f"{self.seed}/{str.__str__(self)}".encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 2

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)


class SimEnv:
    """What a process reads besides its inputs, as a function of the run (see above)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.seed = run.run_id
        self._rng = random.Random(f"env/{run.run_id}")

    def now(self) -> datetime:
        """The wall clock (the run's clock: virtual when simulated, real in a replay)."""
        return self.run.clock()

    def uuid4(self) -> uuid.UUID:
        """A random id (from the process's entropy)."""
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def tag(self, name: str) -> str:
        """``name`` as a set member hashed with this process's hash seed."""
        tag = _Tag(name)
        tag.seed = self.seed
        return tag

    def feed_status(self) -> str:
        """An external status page, read without a recorded call: it reported an incident
        from a day after the simulated runs on."""
        return "degraded" if self.now() >= SIM_AGENTS_EPOCH + timedelta(days=1) else "ok"


# --------------------------------------------------------------------------- the provider

_SNAPSHOTS = {
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
}


def _answer(model_name: str, messages: list[dict[str, str]]) -> str:
    """A deterministic stand-in for a model's answer to ``messages``."""
    prompt = messages[-1]["content"] if messages else ""
    digest = hashlib.sha256(f"{model_name}/{json.dumps(messages)}".encode()).hexdigest()
    if "classify" in prompt:
        return ["billing", "outage", "how-to"][int(digest, 16) % 3]
    if "refund" in prompt:
        return json.dumps({"refund": "12.50", "reason": "late delivery"})
    return f"Answer {digest[:8]} to: {prompt[:60]}"


@model(provider="openai")
def chat(*, model: str, messages: list[dict[str, str]], temperature: float = 0.0) -> ModelReply:
    """The simulated OpenAI chat completion (the same answer for the same request)."""
    return _reply(model, messages)


@model(provider="anthropic")
def claude(*, model: str, messages: list[dict[str, str]], max_tokens: int = 512) -> ModelReply:
    """The simulated Anthropic message (the same answer for the same request)."""
    return _reply(model, messages)


def _reply(model: str, messages: list[dict[str, str]]) -> ModelReply:
    text = _answer(model, messages)
    prompt_tokens = sum(len(m["content"]) for m in messages) // 4 + 12
    completion_tokens = len(text) // 4 + 3
    digest = hashlib.sha256(json.dumps([model, messages]).encode()).hexdigest()
    return ModelReply(
        outputs={
            "id": f"chatcmpl-sim{digest[:20]}",
            "model": _SNAPSHOTS.get(model, model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        },
        input_tokens=prompt_tokens,
        output_tokens=completion_tokens,
        response_model=_SNAPSHOTS.get(model, model),
        duration_ms=300 + completion_tokens * 9,
    )


def _text(reply: ModelReply) -> str:
    return str(reply.outputs["choices"][0]["message"]["content"])


# --------------------------------------------------------------------------- tools

_CUSTOMERS = {
    "c-17": {"name": "Acme Corp", "tier": "gold"},
    "c-42": {"name": "Initech", "tier": "silver"},
}
_ORDERS = {"o-981": {"total": "42.00", "currency": "USD", "customer": "c-17"}}


@tool
def lookup_customer(customer_id: str) -> dict[str, Any]:
    return dict(_CUSTOMERS.get(customer_id, {"name": "unknown", "tier": "none"}))


@tool
def route_ticket(ticket: str, queue: str, idempotency_key: str) -> dict[str, Any]:
    return {"ticket": ticket, "queue": queue, "position": len(ticket) % 7 + 1}


@tool
def post_ledger_entry(account: str, amount: str, idempotency_key: str) -> dict[str, Any]:
    return {"account": account, "amount": amount, "entry": f"le-{_short_hash(idempotency_key)}"}


@tool(replay="execute")
def checksum(text: str) -> dict[str, str]:
    """A local computation: re-executed on replay, and deterministic."""
    return {"sha256": hashlib.sha256(text.encode()).hexdigest()}


@tool
def fetch_metrics(day: str) -> dict[str, Any]:
    seed = int(hashlib.sha256(day.encode()).hexdigest()[:8], 16)
    return {"day": day, "requests": 1000 + seed % 9000, "errors": seed % 37}


@tool
def search_catalog(tags: list[str]) -> dict[str, Any]:
    return {"matches": [f"sku-{_short_hash(t)}" for t in tags]}


@tool
def get_order(order_id: str) -> dict[str, Any]:
    return dict(_ORDERS.get(order_id, {}))


class PaymentError(FleetLedgerError):
    """The simulated payment API refused a refund."""


@tool
def issue_refund(order_id: str, amount_cents: int) -> dict[str, Any]:
    """The simulated payment API: refunds at most the order's total."""
    total = int(Decimal(_ORDERS[order_id]["total"]) * 100)
    if amount_cents > total:
        raise PaymentError(
            f"refund of {amount_cents} cents exceeds the order total of {total} cents"
        )
    return {"refund_id": f"rf_{_short_hash(f'{order_id}/{amount_cents}')}", "status": "succeeded"}


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- agents


async def triage_bot(run: Run) -> None:
    """Deterministic: classify a ticket, look the customer up, route it, draft a reply."""
    ticket, customer = run.labels["ticket"], run.labels["customer"]
    async with run.step("classify"):
        category = _text(
            chat(
                model="gpt-4.1-mini",
                messages=[
                    {"role": "system", "content": "You triage support tickets."},
                    {"role": "user", "content": f"classify ticket {ticket}: printer on fire"},
                ],
            )
        )
    async with run.step("route"):
        profile = lookup_customer(customer)
        route_ticket(ticket, f"{category}-{profile['tier']}", f"{run.labels['task']}/route")
    async with run.step("reply"):
        reply = _text(
            chat(
                model="gpt-4.1",
                messages=[{"role": "user", "content": f"write a reply about {category}"}],
            )
        )
        await run.artifact(key="reply.md", version=1, state=ArtifactState.GENERATED, content=reply)


def _approve(request: Any) -> dict[str, str]:
    return {"decision": "approve", "reviewer": "ana@acme.example"}


async def ledger_bot(run: Run) -> None:
    """Deterministic: draft a summary, a human approves it, post the entry."""
    account = run.labels["account"]
    async with run.step("draft"):
        summary = _text(
            claude(
                model="claude-haiku-4-5",
                messages=[{"role": "user", "content": f"summarize account {account}"}],
            )
        )
        digest = checksum(summary)["sha256"]
        await run.artifact(
            key="summary.md",
            version=1,
            state=ArtifactState.VERIFIED,
            content_hash=f"sha256:{digest}",
        )
    async with run.step("review"):
        decision = await run.human_gate(
            gate_id="review-summary",
            policy=GatePolicy.PAUSE_AFTER,
            artifact_key="summary.md",
            artifact_version=1,
            ask=_approve,
        )
        if decision.decision == "approve":
            await run.artifact(
                key="summary.md",
                version=1,
                state=ArtifactState.PINNED,
                content_hash=f"sha256:{digest}",
            )
    async with run.step("post"):
        post_ledger_entry(account, "120.00", f"{run.labels['task']}/post")


async def report_bot(run: Run) -> None:
    """Planted: the report carries the wall clock's time (read inside the tool)."""
    env = SimEnv(run)

    @tool(name="generate_report", replay="execute")
    def generate_report(metrics: dict[str, Any]) -> dict[str, Any]:
        return {"generated_at": env.now().isoformat().replace("+00:00", "Z"), **metrics}

    async with run.step("gather"):
        metrics = fetch_metrics(run.labels["day"])
    async with run.step("report"):
        report = generate_report(metrics)
        await run.artifact(
            key="report.json", version=1, state=ArtifactState.GENERATED, content=json.dumps(report)
        )


async def order_bot(run: Run) -> None:
    """Planted: the order id is a random uuid4 (made inside a re-executed tool)."""
    env = SimEnv(run)

    @tool(name="create_order", replay="execute")
    def create_order(sku: str, quantity: int, idempotency_key: str) -> dict[str, Any]:
        return {"order_id": str(env.uuid4()), "sku": sku, "quantity": quantity}

    async with run.step("order"):
        create_order(run.labels["sku"], 2, f"{run.labels['task']}/order")


async def tagger_bot(run: Run) -> None:
    """Planted: tags sent in set iteration order (which depends on the hash seed)."""
    env = SimEnv(run)
    raw = run.labels["tags"].split(",")
    async with run.step("tag"):
        tags = {env.tag(t) for t in raw}
        ordered = []
        for tag in tags:
            ordered.append(str(tag))
        search_catalog(ordered)


async def pricing_bot(run: Run) -> None:
    """Planted: a total summed in set order (float addition is not associative)."""
    env = SimEnv(run)
    prices = [float(p) for p in run.labels["prices"].split(",")]

    @tool(name="quote_total", replay="execute")
    def quote_total(items: list[float]) -> dict[str, Any]:
        total = 0.0
        for i in {env.tag(str(n)) for n in range(len(items))}:
            total += items[int(i)]
        return {"total": total, "items": len(items)}

    async with run.step("quote"):
        quote_total(prices)


async def watch_bot(run: Run) -> None:
    """Planted: an unrecorded read of a status page decides whether to call a model."""
    env = SimEnv(run)
    async with run.step("watch"):
        metrics = fetch_metrics(run.labels["day"])
        if env.feed_status() == "degraded":  # not a recorded call: the replay cannot know
            chat(
                model="gpt-4.1-mini",
                messages=[{"role": "user", "content": f"explain {metrics['errors']} errors"}],
            )


async def _refund(run: Run, cents_per_unit: int) -> None:
    order_id = run.labels["order"]
    async with run.step("lookup"):
        order = get_order(order_id)
    async with run.step("decide"):
        answer = _text(
            chat(
                model="gpt-4.1",
                messages=[
                    {
                        "role": "user",
                        "content": f"decide a refund for order {order_id} of {order['total']}",
                    }
                ],
            )
        )
        amount = Decimal(json.loads(answer)["refund"])
    async with run.step("refund"):
        issue_refund(order_id, int(amount * cents_per_unit))


async def refund_bot(run: Run) -> None:
    """The README's failing run: the refund amount is sent in tenths of cents."""
    await _refund(run, 1000)


async def refund_bot_fixed(run: Run) -> None:
    """The fix: the refund amount in cents."""
    await _refund(run, 100)


# --------------------------------------------------------------------------- the fleet


@dataclass(frozen=True)
class SimAgent:
    name: str
    run: Callable[[Run], Awaitable[None]]
    steps: tuple[tuple[str, str], ...]  # (step id, kind)
    labels: dict[str, str] = field(default_factory=dict)
    deterministic: bool = True
    tenant: str = "acme"


AGENTS: tuple[SimAgent, ...] = (
    SimAgent(
        "triage-bot",
        triage_bot,
        (("classify", "llm"), ("route", "tools"), ("reply", "llm")),
        {"ticket": "T-1042", "customer": "c-17"},
    ),
    SimAgent(
        "ledger-bot",
        ledger_bot,
        (("draft", "llm"), ("review", "gate"), ("post", "write")),
        {"account": "acc-7"},
    ),
    SimAgent(
        "report-bot",
        report_bot,
        (("gather", "tools"), ("report", "tools")),
        {"day": "2026-11-01"},
        deterministic=False,
    ),
    SimAgent("order-bot", order_bot, (("order", "write"),), {"sku": "sku-7"}, deterministic=False),
    SimAgent(
        "tagger-bot",
        tagger_bot,
        (("tag", "tools"),),
        {"tags": "red,green,blue,cyan,magenta,yellow,black,white"},
        deterministic=False,
    ),
    SimAgent(
        "pricing-bot",
        pricing_bot,
        (("quote", "tools"),),
        {"prices": "0.1,0.2,0.3,0.4,0.7,1.1"},
        deterministic=False,
    ),
    SimAgent(
        "watch-bot",
        watch_bot,
        (("watch", "llm"),),
        {"day": "2026-11-01"},
        deterministic=False,
    ),
    SimAgent(
        "refund-bot",
        refund_bot,
        (("lookup", "tools"), ("decide", "llm"), ("refund", "write")),
        {"order": "o-981"},
        tenant="globex",
    ),
)


def agent_run_id(agent: SimAgent, n: int = 1) -> str:
    """``sim-<agent>-<n>``: the run id of an agent's n-th simulated run."""
    return f"sim-{agent.name}-{n}"


def _workflow(agent: SimAgent) -> WorkflowSnapshot:
    steps = tuple(WorkflowStep(id=s, name=s.replace("-", " "), kind=k) for s, k in agent.steps)
    edges = tuple(WorkflowEdge(source=a.id, target=b.id) for a, b in itertools.pairwise(steps))
    return WorkflowSnapshot(name=agent.name, revision="1", steps=steps, edges=edges)


async def simulate_agents(
    recorder: Recorder,
    *,
    seed: int = 7,
    start: datetime = SIM_AGENTS_EPOCH,
    producer_id: str = "fleetledger-simulator",
) -> list[str]:
    """Record one run of every agent of :data:`AGENTS`; returns their run ids.

    Deterministic: each run has a virtual clock and event ids seeded from ``seed``, so
    the same seed gives the same events.  A run whose agent raises is recorded as
    failed (the refund bot's is).
    """
    ids = []
    for i, agent in enumerate(AGENTS):
        rng = random.Random(f"{seed}/{agent.name}")
        run_id = agent_run_id(agent)
        run = await recorder.start_run(
            agent_id=agent.name,
            tenant=agent.tenant,
            workflow=_workflow(agent),
            labels={**agent.labels, "task": f"task-{rng.getrandbits(32):08x}"},
            run_id=run_id,
            clock=TickingClock(start + timedelta(minutes=3 * i)),
            ids=_SeededUuids(rng.getrandbits(64)),
            producer_id=producer_id,
            linger=False,
        )
        try:
            async with run:
                await agent.run(run)
        except FleetLedgerError:
            pass  # recorded as the run's failure
        ids.append(run_id)
    return ids


class _SeededUuids:
    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def __call__(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)
