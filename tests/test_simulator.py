"""The fleet simulator: deterministic bytes, well-formed runs, realistic content."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fleetledger.kernel.errors import ConfigError
from fleetledger.kernel.sqlitelog import SqliteLog
from fleetledger.producers import MemoryTransport, Recorder, load_price_table
from fleetledger.producers.simulator import SHAPES, SIM_EPOCH, SimulationSummary, simulate
from fleetledger.schemas import Codec, EventType, TraceEvent


async def run_sim(
    *, runs: int, seed: int, recorder_kwargs: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[SimulationSummary, MemoryTransport]:
    transport = MemoryTransport()
    async with Recorder(transport, **(recorder_kwargs or {})) as rec:
        summary = await simulate(rec, runs=runs, seed=seed, **kwargs)
    return summary, transport


def events_of(transport: MemoryTransport) -> list[TraceEvent]:
    codec = Codec()
    return [e for _, value in transport.messages for e in codec.decode(value)]


def by_run(events: list[TraceEvent]) -> dict[str, list[TraceEvent]]:
    out: dict[str, list[TraceEvent]] = {}
    for e in events:
        out.setdefault(e.run_id, []).append(e)
    return out


@pytest.fixture(scope="module")
def fleet() -> tuple[SimulationSummary, list[TraceEvent]]:
    """A 400-run fleet, simulated once for the realism checks."""
    import asyncio

    summary, transport = asyncio.run(run_sim(runs=400, seed=7))
    return summary, events_of(transport)


# ------------------------------------------------------------------------ determinism


async def test_same_seed_gives_byte_identical_messages() -> None:
    one, t1 = await run_sim(runs=60, seed=42)
    # a different real clock, id factory and producer id on the recorder change nothing
    two, t2 = await run_sim(runs=60, seed=42, recorder_kwargs={"producer_id": "elsewhere"})
    assert t1.messages == t2.messages
    assert one == two
    assert len(t1.messages) > 60  # batches are cut by virtual linger, not one per run


async def test_different_seed_gives_a_different_stream() -> None:
    _, t1 = await run_sim(runs=30, seed=1)
    _, t2 = await run_sim(runs=30, seed=2)
    assert t1.messages != t2.messages
    ids1 = {e.event_id for e in events_of(t1)}
    ids2 = {e.event_id for e in events_of(t2)}
    assert not ids1 & ids2


async def test_sqlite_gets_the_same_bytes_as_memory(tmp_path: Path) -> None:
    _, memory = await run_sim(runs=25, seed=9, recorder_kwargs={"batch_max_events": 7})
    db = tmp_path / "sim.db"
    async with Recorder.from_url(f"sqlite:///{db}", batch_max_events=7) as rec:
        await simulate(rec, runs=25, seed=9)
    log = SqliteLog.open(db, create=False)
    rows = log.read(0, 1_000_000)
    log.close()
    assert [(k, v) for _, k, v in rows] == memory.messages


async def test_message_boundaries_follow_the_virtual_linger() -> None:
    _, whole = await run_sim(runs=20, seed=3, linger_ms=None)
    _, default = await run_sim(runs=20, seed=3)
    _, minute = await run_sim(runs=20, seed=3, linger_ms=60_000)
    assert len(whole.messages) == 20  # one message per run (each under batch_max_events)
    assert len(whole.messages) < len(minute.messages) < len(default.messages)
    assert events_of(whole) != []
    key = lambda e: (e.run_id, e.seq)  # noqa: E731
    assert sorted(events_of(whole), key=key) == sorted(events_of(default), key=key)


# --------------------------------------------------------------------- well-formedness


def test_summary_matches_the_stream(fleet: tuple[SimulationSummary, list[TraceEvent]]) -> None:
    summary, events = fleet
    runs = by_run(events)
    assert summary.runs == 400 == len(summary.run_ids) == len(set(summary.run_ids))
    assert set(runs) == set(summary.run_ids)
    assert summary.events == len(events)
    assert summary.completed + summary.failed == 400
    assert summary.events_by_type == dict(sorted(Counter(e.type.value for e in events).items()))
    assert summary.first_ts == SIM_EPOCH
    assert summary.price_table == "2026-11" and summary.currency == "USD"
    model_cost = sum(
        (e.payload.cost.amount for e in events if e.type == EventType.MODEL_IO),  # type: ignore[union-attr]
        Decimal(0),
    )
    assert summary.total_cost == model_cost > 0


def test_every_run_is_well_formed(fleet: tuple[SimulationSummary, list[TraceEvent]]) -> None:
    _, events = fleet
    for run_id, evs in by_run(events).items():
        assert [e.seq for e in evs] == list(range(len(evs))), run_id
        assert evs[0].type == EventType.RUN_STARTED
        assert evs[-1].type in (EventType.RUN_COMPLETED, EventType.RUN_FAILED)
        assert sum(e.type in (EventType.RUN_COMPLETED, EventType.RUN_FAILED) for e in evs) == 1
        assert all(a.ts <= b.ts for a, b in itertools.pairwise(evs)), run_id
        assert len({(e.agent_id, e.tenant) for e in evs}) == 1
        assert {e.producer_id for e in evs} == {"fleetledger-simulator"}
        open_steps: set[str] = set()
        open_gates: set[str] = set()
        for e in evs:
            if e.type == EventType.STEP_STARTED:
                assert e.step_id not in open_steps
                open_steps.add(e.step_id)  # type: ignore[arg-type]
            elif e.type == EventType.STEP_COMPLETED:
                open_steps.remove(e.step_id)  # type: ignore[arg-type]
            elif e.type == EventType.HUMAN_GATE_REQUESTED:
                open_gates.add(e.payload.gate_id)  # type: ignore[union-attr]
            elif e.type == EventType.HUMAN_GATE_RESOLVED:
                open_gates.remove(e.payload.gate_id)  # type: ignore[union-attr]
        assert not open_gates
        if evs[-1].type == EventType.RUN_COMPLETED:
            assert not open_steps
        workflow_steps = {s.id for s in evs[0].payload.workflow.steps}  # type: ignore[union-attr]
        assert {e.step_id for e in evs if e.step_id} <= workflow_steps


def test_local_costs_come_from_the_price_table(
    fleet: tuple[SimulationSummary, list[TraceEvent]],
) -> None:
    _, events = fleet
    table = load_price_table("2026-11")
    checked = 0
    for e in events:
        if e.type != EventType.MODEL_IO:
            continue
        p = e.payload
        expected = table.cost_amount(
            p.gen_ai_provider_name,  # type: ignore[union-attr]
            p.gen_ai_request_model,  # type: ignore[union-attr]
            input_tokens=p.gen_ai_usage_input_tokens,  # type: ignore[union-attr]
            output_tokens=p.gen_ai_usage_output_tokens,  # type: ignore[union-attr]
            cache_read_tokens=p.gen_ai_usage_cache_read_input_tokens,  # type: ignore[union-attr]
        )
        if p.cost.source == "local":  # type: ignore[union-attr]
            assert p.cost.amount == expected  # type: ignore[union-attr]
            checked += 1
        else:  # providers report to the micro-dollar
            assert abs(p.cost.amount - expected) <= Decimal("0.0000005")  # type: ignore[union-attr]
    assert checked > 100


# ---------------------------------------------------------------------------- realism


def test_the_fleet_looks_like_production(
    fleet: tuple[SimulationSummary, list[TraceEvent]],
) -> None:
    summary, events = fleet
    runs = by_run(events)
    per_run = [len(v) for v in runs.values()]
    assert 25 <= statistics.mean(per_run) <= 60
    assert 0.05 <= summary.failure_rate <= 0.12
    starts = [e for e in events if e.type == EventType.RUN_STARTED]
    assert len({e.agent_id for e in starts}) >= 5
    assert len({e.tenant for e in starts}) >= 4
    model_calls = [e.payload for e in events if e.type == EventType.MODEL_IO]
    assert len({p.gen_ai_provider_name for p in model_calls}) >= 4  # type: ignore[union-attr]
    assert len({p.gen_ai_request_model for p in model_calls}) >= 8  # type: ignore[union-attr]
    assert Counter(p.cache for p in model_calls)["hit"] > 0.2 * len(model_calls)  # type: ignore[union-attr]
    sources = Counter(p.cost.source for p in model_calls)  # type: ignore[union-attr]
    assert sources["provider"] > 0 and sources["local"] > sources["provider"]
    assert Counter(p.outcome for p in model_calls)["error"] > 0  # type: ignore[union-attr]
    assert sum(e.type == EventType.TOOL_CALL for e in events) > 0
    assert any(e.traceparent for e in events) and any(not e.traceparent for e in events)
    # interleaved: runs overlap in virtual time
    spans = sorted((v[0].ts, v[-1].ts) for v in runs.values())
    overlaps = sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    assert overlaps > len(spans) // 2


def test_the_fleet_has_failures_gates_escalations_and_overruns(
    fleet: tuple[SimulationSummary, list[TraceEvent]],
) -> None:
    summary, events = fleet
    failures = [e.payload for e in events if e.type == EventType.RUN_FAILED]
    assert len(failures) == summary.failed > 0
    assert len({p.error_type for p in failures}) >= 3  # type: ignore[union-attr]
    decisions = Counter(
        e.payload.decision  # type: ignore[union-attr]
        for e in events
        if e.type == EventType.HUMAN_GATE_RESOLVED
    )
    assert decisions["approve"] > decisions["edit"] > 0
    assert decisions["reject"] > 0
    policies = {
        e.payload.policy  # type: ignore[union-attr]
        for e in events
        if e.type == EventType.HUMAN_GATE_REQUESTED
    }
    assert policies == {"PAUSE_BEFORE", "PAUSE_AFTER", "CHECKPOINT"}
    recoveries = [e.payload for e in events if e.type == EventType.RECOVERY]
    assert any(p.level == "L1_RETRY" for p in recoveries)  # type: ignore[union-attr]
    escalations = [p for p in recoveries if p.level == "L2_ESCALATE"]  # type: ignore[union-attr]
    assert escalations
    assert all(p.new_model and p.new_model != p.from_model for p in escalations)  # type: ignore[union-attr]
    outcomes = Counter(
        e.payload.outcome  # type: ignore[union-attr]
        for e in events
        if e.type == EventType.STEP_COMPLETED
    )
    assert {"success", "error", "blocked", "replayed"} <= set(outcomes)
    # runs whose model costs exceed their budget
    assert summary.budget_exceeded_run_ids
    runs = by_run(events)
    for run_id in summary.budget_exceeded_run_ids:
        evs = runs[run_id]
        budget = evs[0].payload.budget.amount  # type: ignore[union-attr]
        spent = sum(
            (e.payload.cost.amount for e in evs if e.type == EventType.MODEL_IO),  # type: ignore[union-attr]
            Decimal(0),
        )
        assert spent > budget
    assert any(p.error_type == "BudgetExceededError" for p in failures)  # type: ignore[union-attr]


def test_artifacts_move_through_their_states(
    fleet: tuple[SimulationSummary, list[TraceEvent]],
) -> None:
    _, events = fleet
    order = ["declared", "generated", "schema_valid", "verified", "pinned"]
    pinned = 0
    for evs in by_run(events).values():
        history: dict[str, list[tuple[int, str]]] = {}
        for e in evs:
            if e.type == EventType.ARTIFACT_WRITTEN:
                p = e.payload
                history.setdefault(p.key, []).append((p.version, p.state.value))  # type: ignore[union-attr]
                assert p.content_hash.startswith("sha256:")  # type: ignore[union-attr]
        for states in history.values():
            assert states[0] == (0, "declared")
            versions = [v for v, _ in states]
            assert versions == sorted(versions)
            if states[-1][1] == "pinned":
                pinned += 1
                last = states[-1][0]
                final = [s for v, s in states if v == last]
                # the pinned version went generated -> schema_valid -> verified -> pinned
                ranks = [order.index(s) for s in final]
                assert ranks == sorted(set(ranks)), final
                assert {"generated", "schema_valid", "verified", "pinned"} <= set(final)
    assert pinned > 50
    evidence = [
        e.payload.validation  # type: ignore[union-attr]
        for e in events
        if e.type == EventType.ARTIFACT_WRITTEN and e.payload.validation is not None  # type: ignore[union-attr]
    ]
    assert any(not v.passed for v in evidence) and any(v.passed for v in evidence)


# ------------------------------------------------------------------------------ shapes


async def test_shapes_few_busy_and_many_slow() -> None:
    busy, busy_t = await run_sim(runs=3, seed=5, **SHAPES["few_busy"])
    slow, slow_t = await run_sim(runs=60, seed=5, **SHAPES["many_slow"])
    busy_per_run = busy.events / busy.runs
    slow_per_run = slow.events / slow.runs
    assert busy_per_run > 200
    assert slow_per_run < 40
    assert busy_per_run > 5 * slow_per_run
    busy_span = (busy.last_ts - busy.first_ts).total_seconds()  # type: ignore[operator]
    slow_span = (slow.last_ts - slow.first_ts).total_seconds()  # type: ignore[operator]
    assert busy.events / busy_span > 10 * slow.events / slow_span  # events per virtual second
    for transport in (busy_t, slow_t):
        for evs in by_run(events_of(transport)).values():
            assert [e.seq for e in evs] == list(range(len(evs)))


async def test_zero_runs_and_bad_knobs() -> None:
    summary, transport = await run_sim(runs=0, seed=1)
    assert summary.events == 0 and transport.messages == []
    async with Recorder(MemoryTransport()) as rec:
        with pytest.raises(ConfigError, match="scale"):
            await simulate(rec, runs=1, seed=1, scale=0)
        with pytest.raises(ConfigError, match="runs"):
            await simulate(rec, runs=-1, seed=1)
