"""The async recorder: sequence numbers, run/step lifecycles, batching, backpressure."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from fleetledger.kernel.errors import DeliveryError, EventValidationError, RunStateError
from fleetledger.producers import MemoryTransport, Recorder, Run
from fleetledger.schemas import (
    Codec,
    Cost,
    EventType,
    GateDecision,
    GatePolicy,
    Money,
    RunStarted,
    StepOutcome,
    ToolCall,
    TraceEvent,
    WorkflowEdge,
    WorkflowSnapshot,
    WorkflowStep,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
WORKFLOW = WorkflowSnapshot(
    name="triage",
    revision="7",
    steps=(
        WorkflowStep(id="plan", name="Plan", kind="llm"),
        WorkflowStep(id="act", name="Act", kind="tool", gate=GatePolicy.PAUSE_AFTER),
    ),
    edges=(WorkflowEdge(source="plan", target="act"),),
)


class TickClock:
    """A deterministic clock advancing ``step_ms`` per call."""

    def __init__(self, step_ms: int = 1) -> None:
        self.now = T0
        self.step = timedelta(milliseconds=step_ms)

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


def counter_ids() -> Callable[[], uuid.UUID]:
    counter = itertools.count(1)
    return lambda: uuid.UUID(int=next(counter), version=4)


def make_recorder(transport: object | None = None, **kwargs: object) -> Recorder:
    kwargs.setdefault("producer_id", "test-producer")
    kwargs.setdefault("clock", TickClock())
    kwargs.setdefault("ids", counter_ids())
    return Recorder(transport or MemoryTransport(), **kwargs)  # type: ignore[arg-type]


def decoded(transport: MemoryTransport) -> list[TraceEvent]:
    codec = Codec()
    return [e for _, value in transport.messages for e in codec.decode(value)]


def by_run(events: list[TraceEvent]) -> dict[str, list[TraceEvent]]:
    out: dict[str, list[TraceEvent]] = {}
    for e in events:
        out.setdefault(e.run_id, []).append(e)
    return out


async def model_call(run: Run, step_id: str | None = None, tokens: int = 1200) -> TraceEvent:
    return await run.model_io(
        provider="openai",
        model="gpt-4.1-mini",
        input_tokens=tokens,
        output_tokens=300,
        cache_read_tokens=200,
        duration_ms=850,
        inputs={"messages": 3},
        step_id=step_id,
    )


# ----------------------------------------------------------------------------- seqs


async def test_seq_is_gap_free_and_ordered_per_run_across_concurrent_runs() -> None:
    transport = MemoryTransport()
    rec = make_recorder(transport, batch_max_events=3, linger_ms=0)

    async def agent(i: int) -> str:
        run = await rec.start_run(agent_id=f"agent-{i}", tenant="acme", workflow=WORKFLOW)
        async with run:
            for k in range(7):
                async with run.step("plan"):
                    await model_call(run, "plan")
                    await asyncio.sleep(0)  # let the other agents interleave
                    await run.tool_call(name="web_search", duration_ms=k + 1, step_id="plan")
        return run.run_id

    async with rec:
        run_ids = await asyncio.gather(*(agent(i) for i in range(6)))

    events = decoded(transport)
    runs = by_run(events)
    assert sorted(runs) == sorted(run_ids)
    for run_id, evs in runs.items():
        assert [e.seq for e in evs] == list(range(len(evs))), run_id
        assert evs[0].type == EventType.RUN_STARTED
        assert evs[-1].type == EventType.RUN_COMPLETED
        assert len(evs) == 1 + 7 * 4 + 1
    # messages are keyed by run id and hold only that run's events
    codec = Codec()
    for key, value in transport.messages:
        assert {e.run_id for e in codec.decode(value)} == {key}
    assert len({e.event_id for e in events}) == len(events)
    assert {e.producer_id for e in events} == {"test-producer"}
    assert {e.schema_version for e in events} == {codec.current_version}


async def test_event_fields_come_from_clock_ids_and_run() -> None:
    transport = MemoryTransport()
    clock = TickClock(step_ms=10)
    async with make_recorder(transport, clock=clock) as rec:
        run = await rec.start_run(
            agent_id="planner",
            tenant="acme",
            project="billing",
            workflow=WORKFLOW,
            budget=Money(amount=Decimal("2.50"), currency="USD"),
            labels={"env": "prod"},
            run_id="run-1",
            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        assert run.run_id == "run-1"
        await run.complete("done")
    first, last = decoded(transport)
    assert first.event_id == uuid.UUID(int=1, version=4)
    assert first.ts == T0 + timedelta(milliseconds=10)
    assert last.ts == T0 + timedelta(milliseconds=20)
    assert isinstance(first.payload, RunStarted)
    assert first.payload.project == "billing"
    assert first.payload.budget == Money(amount=Decimal("2.5"), currency="USD")
    assert first.payload.labels == {"env": "prod"}
    assert first.tenant == "acme" and first.agent_id == "planner"
    assert last.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert last.to_json_obj()["payload"] == {"summary": "done"}


async def test_default_run_id_comes_from_the_id_factory() -> None:
    async with make_recorder() as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        assert run.run_id == str(uuid.UUID(int=1, version=4))
        await run.complete()


async def test_validation_error_does_not_consume_a_seq() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        with pytest.raises(EventValidationError, match="input_tokens"):
            await run.model_io(
                provider="openai",
                model="gpt-4.1",
                input_tokens=-5,
                output_tokens=1,
                duration_ms=1,
                prompt_hash="sha256:00",
                cost=Cost(amount=Decimal("0.01"), currency="USD", source="provider"),
            )
        with pytest.raises(EventValidationError, match="duration_ms"):
            await run.tool_call(name="grep", duration_ms=-1)
        with pytest.raises(EventValidationError, match="gpt-unknown"):
            await run.model_io(
                provider="openai",
                model="gpt-unknown",
                input_tokens=1,
                output_tokens=1,
                duration_ms=1,
                prompt_hash="sha256:00",
            )
        with pytest.raises(EventValidationError, match="prompt_hash"):
            await run.model_io(
                provider="openai", model="gpt-4.1", input_tokens=1, output_tokens=1, duration_ms=1
            )
        with pytest.raises(EventValidationError, match="float"):
            await run.model_io(
                provider="openai",
                model="gpt-4.1",
                input_tokens=1,
                output_tokens=1,
                duration_ms=1,
                prompt_hash="sha256:00",
                cost={"amount": 0.1, "currency": "USD", "source": "local"},
            )
        with pytest.raises(RunStateError, match="not started"):
            await run.step_completed("plan")
        with pytest.raises(RunStateError, match="not open"):
            await run.gate_resolved(gate_id="g1", decision="approve", reviewer="bob")
        assert run.next_seq == 1
        event = await run.tool_call(name="grep", duration_ms=3)
        assert event.seq == 1
        await run.complete()
    assert [e.seq for e in decoded(transport)] == [0, 1, 2]


async def test_invalid_run_start_does_not_start_a_run() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport) as rec:
        with pytest.raises(EventValidationError, match="labels"):
            await rec.start_run(
                agent_id="a",
                workflow=WORKFLOW,
                run_id="r",
                labels={"attempt": 3},  # type: ignore[dict-item]
            )
        with pytest.raises(EventValidationError, match=r"workflow\.name"):
            await rec.start_run(agent_id="a", workflow={"revision": "1"}, run_id="r")
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW, run_id="r")
        await run.complete()
    assert [(e.run_id, e.seq) for e in decoded(transport)] == [("r", 0), ("r", 1)]


async def test_calls_after_a_terminal_event_raise_run_state_error() -> None:
    async with make_recorder() as rec:
        done = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        await done.complete()
        failed = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        await failed.fail("Boom", "it broke")
        for run in (done, failed):
            with pytest.raises(RunStateError, match="expected a running run"):
                await run.tool_call(name="x", duration_ms=1)
            with pytest.raises(RunStateError):
                await run.complete()
            with pytest.raises(RunStateError):
                await run.fail("E", "again")
            with pytest.raises(RunStateError):
                await run.step_started("plan")
        assert done.status == "completed" and failed.status == "failed"
        assert done.next_seq == 2 and failed.next_seq == 2


async def test_duplicate_running_run_id_is_refused() -> None:
    async with make_recorder() as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW, run_id="same")
        with pytest.raises(RunStateError, match="already running"):
            await rec.start_run(agent_id="a", workflow=WORKFLOW, run_id="same")
        await run.complete()


async def test_complete_with_an_open_step_is_refused_but_fail_is_allowed() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        await run.step_started("plan")
        with pytest.raises(RunStateError, match="open steps"):
            await run.complete()
        with pytest.raises(RunStateError, match="already started"):
            await run.step_started("plan")
        await run.fail("Crash", "worker died", failed_step="plan")
    assert [e.type for e in decoded(transport)] == [
        EventType.RUN_STARTED,
        EventType.STEP_STARTED,
        EventType.RUN_FAILED,
    ]


# ----------------------------------------------------------------------- lifecycles


async def test_step_context_manager_success_and_attempts() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport, clock=TickClock(step_ms=100)) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        async with run.step("plan") as step:
            assert step.attempt == 1
            await step.model_io(
                provider="anthropic",
                model="claude-haiku-4-5",
                input_tokens=10,
                output_tokens=5,
                duration_ms=7,
                prompt_hash="sha256:ab",
            )
        async with run.step("plan") as again:
            assert again.attempt == 2
        await run.complete()
    events = decoded(transport)
    types = [e.type for e in events]
    assert types == [
        EventType.RUN_STARTED,
        EventType.STEP_STARTED,
        EventType.MODEL_IO,
        EventType.STEP_COMPLETED,
        EventType.STEP_STARTED,
        EventType.STEP_COMPLETED,
        EventType.RUN_COMPLETED,
    ]
    assert [e.step_id for e in events[1:6]] == ["plan"] * 5
    completed = events[3].payload
    assert completed.outcome == StepOutcome.SUCCESS  # type: ignore[union-attr]
    # clock ticks 100 ms per call: start(200), model(300), completed reads the clock
    assert completed.duration_ms >= 100  # type: ignore[union-attr]
    assert events[4].payload.attempt == 2  # type: ignore[union-attr]


async def test_step_context_manager_error_path_records_and_reraises() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        with pytest.raises(KeyError, match="missing-doc"):
            async with run.step("plan"):
                await model_call(run, "plan")
                raise KeyError("missing-doc")
        assert run.status == "running"
        assert run.open_steps == []
        await run.complete()
    completed = decoded(transport)[3]
    assert completed.type == EventType.STEP_COMPLETED
    assert completed.payload.outcome == StepOutcome.ERROR  # type: ignore[union-attr]
    assert completed.payload.error_type == "KeyError"  # type: ignore[union-attr]
    assert "missing-doc" in (completed.payload.error_message or "")  # type: ignore[union-attr]


async def test_step_can_be_marked_blocked_or_replayed() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        async with run.step("plan") as step:
            step.mark_replayed()
        async with run.step("act") as step:
            step.mark_blocked("gate rejected the patch")
        await run.complete()
    outcomes = [
        (e.step_id, e.payload.outcome, e.payload.error_message)  # type: ignore[union-attr]
        for e in decoded(transport)
        if e.type == EventType.STEP_COMPLETED
    ]
    assert outcomes == [
        ("plan", StepOutcome.REPLAYED, None),
        ("act", StepOutcome.BLOCKED, "gate rejected the patch"),
    ]


async def test_run_context_manager_completes_on_normal_exit() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        async with run:
            await run.tool_call(name="ls", duration_ms=1)
        assert run.status == "completed"
    assert decoded(transport)[-1].type == EventType.RUN_COMPLETED


async def test_run_context_manager_fails_on_exception_and_reraises() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        with pytest.raises(TimeoutError, match="tool hung"):
            async with run, run.step("act"):
                raise TimeoutError("tool hung")
        assert run.status == "failed"
    last = decoded(transport)[-1]
    assert last.type == EventType.RUN_FAILED
    assert last.to_json_obj()["payload"] == {
        "error_type": "TimeoutError",
        "error_message": "tool hung",
        "failed_step": "act",
    }


async def test_run_context_manager_leaves_an_already_ended_run_alone() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        async with run:
            await run.fail("Cancelled", "user stopped it")
        with pytest.raises(ValueError):
            async with run:
                raise ValueError("after the end")
    assert [e.type for e in decoded(transport)] == [EventType.RUN_STARTED, EventType.RUN_FAILED]


async def test_gates_artifacts_recoveries_and_emit() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport, clock=TickClock(step_ms=1000)) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        async with run.step("act") as step:
            await step.artifact(key="patch.diff", version=1, state="generated", content=b"diff")
            await step.gate_requested(
                gate_id="g1", policy=GatePolicy.PAUSE_AFTER, artifact_key="patch.diff"
            )
            with pytest.raises(RunStateError, match="already open"):
                await step.gate_requested(gate_id="g1", policy=GatePolicy.PAUSE_AFTER)
            resolved = await step.gate_resolved(
                gate_id="g1", decision=GateDecision.EDIT, reviewer="alice", reason="rename var"
            )
            await step.recovery(
                level="L2_ESCALATE",
                failure_kind="schema_invalid",
                attempt=2,
                from_model="gpt-4.1-mini",
                new_model="gpt-4.1",
            )
            await run.emit(ToolCall(gen_ai_tool_name="lint", duration_ms=4), step_id="act")
        with pytest.raises(EventValidationError, match="RunStarted"):
            await run.emit(RunStarted(workflow=WORKFLOW))
        await run.complete()
    assert resolved.payload.wait_ms == 1000  # type: ignore[union-attr]
    events = decoded(transport)
    artifact = events[2].to_json_obj()["payload"]
    assert artifact["content_hash"].startswith("sha256:") and artifact["state"] == "generated"
    assert [e.type for e in events[2:7]] == [
        EventType.ARTIFACT_WRITTEN,
        EventType.HUMAN_GATE_REQUESTED,
        EventType.HUMAN_GATE_RESOLVED,
        EventType.RECOVERY,
        EventType.TOOL_CALL,
    ]
    assert all(e.step_id == "act" for e in events[1:8])


async def test_model_io_is_priced_from_the_table_unless_a_cost_is_given() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        local = await run.model_io(
            provider="openai",
            model="gpt-4.1",
            input_tokens=1_000_000,
            output_tokens=500_000,
            cache_read_tokens=400_000,
            duration_ms=10,
            prompt_hash="sha256:1",
        )
        given = await run.model_io(
            provider="acme-llm",
            model="house-model",
            input_tokens=10,
            output_tokens=10,
            duration_ms=10,
            prompt_hash="sha256:2",
            cost=Cost(amount=Decimal("0.0042"), currency="EUR", source="provider"),
        )
        await run.complete()
    # 600k uncached * $2 + 400k cached * $0.5 + 500k out * $8 per million
    assert local.payload.cost.amount == Decimal("5.4")  # type: ignore[union-attr]
    assert local.payload.cost.source == "local"  # type: ignore[union-attr]
    assert local.payload.cache == "hit"  # type: ignore[union-attr]
    assert given.payload.cost.currency == "EUR"  # type: ignore[union-attr]
    assert given.payload.cache == "miss"  # type: ignore[union-attr]


# -------------------------------------------------------------------------- batching


async def test_a_run_batch_is_one_message_keyed_by_run_id_and_decodes_in_order() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport, batch_max_events=4, linger_ms=None) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW, run_id="run-b")
        for i in range(8):
            await run.tool_call(name=f"t{i}", duration_ms=i)
        await run.complete()  # 10 events: 4 + 4 + 2 (the terminal event cuts the batch)
        await rec.flush()
        assert [len(Codec().decode(v)) for _, v in transport.messages] == [4, 4, 2]
    assert {k for k, _ in transport.messages} == {"run-b"}
    events = decoded(transport)
    assert [e.seq for e in events] == list(range(10))
    assert [e.payload.gen_ai_tool_name for e in events[1:9]] == [  # type: ignore[union-attr]
        f"t{i}" for i in range(8)
    ]


async def test_linger_sends_a_partial_batch_without_flush() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport, batch_max_events=100, linger_ms=10) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        await run.tool_call(name="x", duration_ms=1)
        assert transport.messages == []
        for _ in range(200):
            await asyncio.sleep(0.005)
            if transport.messages:
                break
        assert len(transport.messages) == 1
        assert [e.seq for e in Codec().decode(transport.messages[0][1])] == [0, 1]
        await run.complete()


async def test_without_linger_buffers_wait_for_flush() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport, batch_max_events=100, linger_ms=None) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        await run.tool_call(name="x", duration_ms=1)
        await asyncio.sleep(0.05)
        assert transport.messages == []
        await rec.flush()
        assert len(transport.messages) == 1
        assert transport.flushes == 1
        await run.complete()


async def test_oversized_batches_are_split_into_several_messages() -> None:
    transport = MemoryTransport()
    rec = make_recorder(transport, batch_max_events=50, linger_ms=None)
    rec.max_message_bytes = 2_000
    async with rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW, run_id="big")
        for _ in range(20):
            await run.tool_call(name="read", duration_ms=1, outputs="x" * 300)
        await run.complete()
    assert len(transport.messages) > 1
    assert all(len(v) <= 2_000 for _, v in transport.messages)
    assert [e.seq for e in decoded(transport)] == list(range(22))


async def test_close_flushes_open_runs() -> None:
    transport = MemoryTransport()
    rec = make_recorder(transport, linger_ms=None)
    run = await rec.start_run(agent_id="a", workflow=WORKFLOW)  # starts the recorder
    await run.tool_call(name="x", duration_ms=1)
    await rec.close()
    assert transport.closed
    assert [e.seq for e in decoded(transport)] == [0, 1]
    with pytest.raises(RunStateError, match="closed"):
        await run.tool_call(name="y", duration_ms=1)
    with pytest.raises(RunStateError, match="closed"):
        await rec.start_run(agent_id="a", workflow=WORKFLOW)
    await rec.close()  # idempotent


# ---------------------------------------------------------------------- backpressure


class SlowTransport(MemoryTransport):
    """Takes its time over every message and records how much it held at once."""

    def __init__(self, recorder_ref: list[Recorder], delay_s: float = 0.002) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.recorder_ref = recorder_ref
        self.seen_pending: list[int] = []

    async def send(self, key: str, value: bytes) -> None:
        self.seen_pending.append(self.recorder_ref[0].buffered_events)
        await asyncio.sleep(self.delay_s)
        await super().send(key, value)


async def test_backpressure_waits_and_never_exceeds_the_bound() -> None:
    ref: list[Recorder] = []
    transport = SlowTransport(ref)
    rec = make_recorder(transport, batch_max_events=3, linger_ms=None, max_buffered_events=10)
    ref.append(rec)
    observed: list[int] = []

    async def agent(i: int) -> None:
        run = await rec.start_run(agent_id=f"a{i}", workflow=WORKFLOW)
        for k in range(40):
            await run.tool_call(name="t", duration_ms=k)
            observed.append(rec.buffered_events)
        await run.complete()

    async with rec:
        await asyncio.wait_for(asyncio.gather(*(agent(i) for i in range(5))), timeout=30)
    assert max(observed) <= 10
    assert max(transport.seen_pending) <= 10
    assert rec.max_pending_seen <= 10
    assert rec.max_pending_seen == 10  # it really was full, and waited
    runs = by_run(decoded(transport))
    assert len(runs) == 5
    for evs in runs.values():
        assert [e.seq for e in evs] == list(range(42))


async def test_a_bound_of_one_still_makes_progress() -> None:
    transport = MemoryTransport()
    async with make_recorder(transport, max_buffered_events=1, linger_ms=None) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        for _ in range(5):
            await run.tool_call(name="t", duration_ms=1)
        await run.complete()
    assert len(transport.messages) == 7


# ------------------------------------------------------------------ delivery failures


class BrokenTransport(MemoryTransport):
    def __init__(self, *, fail_send_after: int | None = None, fail_flush: bool = False) -> None:
        super().__init__()
        self.fail_send_after = fail_send_after
        self.fail_flush = fail_flush

    async def send(self, key: str, value: bytes) -> None:
        if self.fail_send_after is not None and len(self.messages) >= self.fail_send_after:
            raise ConnectionResetError("broker went away")
        await super().send(key, value)

    async def flush(self) -> None:
        if self.fail_flush:
            raise OSError("disk full")
        await super().flush()


async def test_send_failure_surfaces_on_the_next_call_flush_and_close() -> None:
    transport = BrokenTransport(fail_send_after=0)
    rec = make_recorder(transport, linger_ms=None)
    run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
    await run.tool_call(name="t", duration_ms=1)
    with pytest.raises(DeliveryError, match="broker went away") as info:
        await rec.flush()
    assert isinstance(info.value.__cause__, ConnectionResetError)
    with pytest.raises(DeliveryError, match="broker went away"):
        await run.tool_call(name="t", duration_ms=1)
    with pytest.raises(DeliveryError):
        await rec.start_run(agent_id="a", workflow=WORKFLOW)
    assert run.next_seq == 2
    with pytest.raises(DeliveryError, match="broker went away"):
        await rec.close()
    assert transport.closed


async def test_send_failure_reaches_a_caller_waiting_on_backpressure() -> None:
    transport = BrokenTransport(fail_send_after=1)
    rec = make_recorder(transport, linger_ms=None, max_buffered_events=4, batch_max_events=2)
    run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
    with pytest.raises(DeliveryError, match="broker went away"):
        for _ in range(100):
            await run.tool_call(name="t", duration_ms=1)
    assert rec.failed is not None
    assert rec.buffered_events <= 4
    with pytest.raises(DeliveryError):
        await run.complete()
    with pytest.raises(DeliveryError):
        await rec.close()


async def test_flush_failure_of_the_transport_is_a_delivery_error() -> None:
    transport = BrokenTransport(fail_flush=True)
    rec = make_recorder(transport)
    run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
    await run.complete()
    with pytest.raises(DeliveryError, match="disk full"):
        await rec.flush()
    with pytest.raises(DeliveryError, match="disk full"):
        await rec.close()


async def test_failed_recorder_raises_when_leaving_its_context() -> None:
    transport = BrokenTransport(fail_send_after=0)
    with pytest.raises(DeliveryError, match="broker went away"):
        async with make_recorder(transport) as rec:
            run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
            await run.complete()


async def test_a_sender_that_stops_early_fails_the_recorder_instead_of_hanging() -> None:
    rec = make_recorder(linger_ms=None)
    run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
    assert rec._sender is not None
    rec._sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rec._sender
    with pytest.raises(DeliveryError, match="cancelled"):
        await asyncio.wait_for(rec.flush(), timeout=5)
    with pytest.raises(DeliveryError):
        await run.complete()
    with pytest.raises(DeliveryError):
        await rec.close()
