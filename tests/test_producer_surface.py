"""The friendlier SDK surface: implicit workflow and step, current run/step, decisions,
redaction before anything leaves the process, blobs for large content, per-call size
failures that leave the run and the recorder going."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from pathlib import Path

import pytest

from fleetledger.kernel.errors import MessageTooLargeError
from fleetledger.producers import (
    FolderBlobStore,
    MemoryTransport,
    Recorder,
    RedactionPolicy,
    SyncRecorder,
    current_run,
    current_step,
)
from fleetledger.producers.redaction import EMAIL
from fleetledger.schemas import Codec, EventType, ModelIO, ToolCall, TraceEvent

from .test_producer import TickClock, counter_ids, decoded


def make(transport: MemoryTransport | None = None, **kwargs: object) -> Recorder:
    kwargs.setdefault("clock", TickClock())
    kwargs.setdefault("ids", counter_ids())
    kwargs.setdefault("producer_id", "surface")
    return Recorder(transport or MemoryTransport(), **kwargs)  # type: ignore[arg-type]


async def call(run: object, **kwargs: object) -> TraceEvent:
    kwargs.setdefault("provider", "openai")
    kwargs.setdefault("model", "gpt-4.1-mini")
    kwargs.setdefault("input_tokens", 100)
    kwargs.setdefault("output_tokens", 10)
    kwargs.setdefault("duration_ms", 5)
    kwargs.setdefault("inputs", {"q": 1})
    return await run.model_io(**kwargs)  # type: ignore[attr-defined,no-any-return]


# ------------------------------------------------------------------ implicit workflow/step


async def test_a_run_needs_no_workflow_and_work_outside_steps_gets_an_implicit_step() -> None:
    transport = MemoryTransport()
    async with make(transport) as rec:
        async with rec.run(agent_id="first-try") as run:
            assert str(run) == run.run_id and current_run() is run
            first = await call(run)
            await run.tool_call(name="search", duration_ms=3)
        assert run.status == "completed" and current_run() is None
    events = decoded(transport)
    assert [(e.type.value, e.step_id) for e in events] == [
        ("run_started", None),
        ("step_started", "implicit"),
        ("model_io", "implicit"),
        ("tool_call", "implicit"),
        ("step_completed", "implicit"),
        ("run_completed", None),
    ]
    workflow = events[0].payload.workflow  # type: ignore[union-attr]
    assert workflow.implicit is True and workflow.name == "first-try"
    assert [(s.id, s.kind) for s in workflow.steps] == [("implicit", "implicit")]
    assert events[1].payload.implicit is True  # type: ignore[union-attr]
    assert first.step_id == "implicit"


async def test_the_current_step_attributes_calls_made_through_the_run() -> None:
    transport = MemoryTransport()
    async with make(transport) as rec:
        run = await rec.start_run(agent_id="a")
        assert current_run() is run  # start_run alone makes it current
        async with run.step("draft") as step:
            assert current_step() is step
            in_step = await call(run)
            gate = await run.gate_requested(gate_id="g", policy="CHECKPOINT")
            await run.gate_resolved(gate_id="g", decision="approve", reviewer="r", wait_ms=1)
        assert current_step() is None
        explicit = await call(run, step_id="other")
        await run.complete()
    assert in_step.step_id == gate.step_id == "draft"
    assert explicit.step_id == "other"
    assert "implicit" not in {e.step_id for e in decoded(transport)}


async def test_concurrent_and_nested_agents_each_record_into_their_own_run() -> None:
    transport = MemoryTransport()
    async with make(transport) as rec:

        async def agent(name: str) -> str:
            async with rec.run(agent_id=name) as run:
                await asyncio.sleep(0)
                assert current_run() is run
                await call(run, inputs={"agent": name})
                async with rec.run(agent_id=f"{name}-sub") as sub:
                    assert current_run() is sub
                    await call(sub)
                assert current_run() is run  # the outer run is current again
                await run.tool_call(name=f"{name}-tool", duration_ms=1)
                return run.run_id

        ids = await asyncio.gather(agent("a"), agent("b"), agent("c"))
    events = decoded(transport)
    for run_id in ids:
        mine = [e for e in events if e.run_id == run_id]
        assert [e.seq for e in mine] == list(range(len(mine)))
        tools = [e.payload for e in mine if e.type is EventType.TOOL_CALL]
        agent_id = mine[0].agent_id
        assert [t.gen_ai_tool_name for t in tools] == [f"{agent_id}-tool"]  # type: ignore[union-attr]
    assert len({e.run_id for e in events}) == 6


def test_sync_recorder_run_scope_and_current_step_in_the_calling_thread(tmp_path: Path) -> None:
    transport = MemoryTransport()
    seen: list[object] = []
    with SyncRecorder(transport, ids=counter_ids()) as rec:
        with rec.run(agent_id="sync-agent") as run:
            seen.append(current_run() is run.run)
            with run.step("plan"):
                seen.append(current_step() is not None)
                event = run.model_io(
                    provider="openai",
                    model="gpt-4.1",
                    input_tokens=5,
                    output_tokens=1,
                    duration_ms=1,
                    inputs="{}",
                )
            outside = run.tool_call(name="t", duration_ms=1)
            # another thread has its own context: no current run there
            other: list[object] = []
            t = threading.Thread(target=lambda: other.append(current_run()))
            t.start()
            t.join()
        assert run.status == "completed"
    assert seen == [True, True] and other == [None]
    assert event.step_id == "plan" and outside.step_id == "implicit"


# ------------------------------------------------------------------------- decisions


async def test_model_decisions_govern_the_calls_after_them() -> None:
    transport = MemoryTransport()
    async with make(transport) as rec, rec.run(agent_id="router") as run:
        async with run.step("plan"):
            decision = await run.model_decision(
                "claude-sonnet-4-5",
                provider="anthropic",
                capability_class="StrongGeneral",
                fallback_chain=["gpt-4.1", "gpt-4.1-mini"],
                budget_mode="constrained",
                routing_reason="budget_downgrade",
            )
            primary = await call(run, provider="anthropic", model="claude-sonnet-4-5")
            backup = await call(run, model="gpt-4.1")
            failed = await call(run, model="gpt-4.1-mini", outcome="error", error_type="X")
        later = await call(run, step_id="write")  # another step: no decision there
    payload = decision.payload
    assert decision.type is EventType.MODEL_DECISION and decision.step_id == "plan"
    assert payload.decision_id.startswith("md-")  # type: ignore[union-attr]
    assert payload.fallback_chain == ("gpt-4.1", "gpt-4.1-mini")  # type: ignore[union-attr]
    for event, outcome in ((primary, "success"), (backup, "fallback"), (failed, "error")):
        assert isinstance(event.payload, ModelIO)
        assert event.payload.decision_id == payload.decision_id  # type: ignore[union-attr]
        assert event.payload.outcome == outcome
    assert later.payload.decision_id is None  # type: ignore[union-attr]
    assert later.payload.outcome == "success"  # type: ignore[union-attr]


# ------------------------------------------------------------------------- redaction


async def test_secrets_are_redacted_by_default_and_marked() -> None:
    transport = MemoryTransport()
    async with make(transport) as rec, rec.run(agent_id="a") as run:
        event = await call(
            run,
            inputs={
                "headers": {"Authorization": "Bearer sk-live-123", "X-Api-Key": "k"},
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 50,
            },
            outputs='{"access_token": "tok-9", "text": "ok"}',
        )
    p = event.payload
    assert isinstance(p, ModelIO)
    assert "sk-live-123" not in (p.inputs or "") and "tok-9" not in (p.outputs or "")
    assert json.loads(p.inputs or "")["headers"]["Authorization"] == "[redacted]"
    assert json.loads(p.inputs or "")["max_tokens"] == 50  # usage-like keys are not secrets
    assert p.redactions == (
        "inputs/headers/Authorization",
        "inputs/headers/X-Api-Key",
        "outputs/access_token",
    )
    # the hashes are of what was recorded
    assert p.prompt_hash == "sha256:" + hashlib.sha256((p.inputs or "").encode()).hexdigest()
    raw = b"".join(v for _, v in transport.messages)
    assert b"sk-live-123" not in raw and b"tok-9" not in raw


async def test_value_patterns_and_hash_only_content() -> None:
    transport = MemoryTransport()
    emails = RedactionPolicy(values=(EMAIL,))
    async with make(transport, redaction=emails) as rec, rec.run(agent_id="a") as run:
        mail = await run.tool_call(name="crm", duration_ms=1, inputs={"to": "ana@acme.io", "n": 1})
    assert mail.payload.inputs == '{"n":1,"to":"[redacted]"}'  # type: ignore[union-attr]
    assert mail.payload.redactions == ("inputs/to",)  # type: ignore[union-attr]

    hashed = RedactionPolicy(content="hash")
    transport = MemoryTransport()
    async with make(transport, redaction=hashed) as rec, rec.run(agent_id="a") as run:
        tool = await run.tool_call(
            name="t", duration_ms=1, inputs={"secret_plan": "x"}, outputs="done"
        )
        model = await call(run, inputs={"q": "private"}, outputs={"a": "private"})
    t = tool.payload
    assert isinstance(t, ToolCall)
    assert t.inputs is None and t.outputs is None
    assert t.redactions == ("inputs", "outputs")
    assert t.inputs_ref is not None and t.inputs_ref.media_type == "application/json"
    assert t.inputs_ref.sha256 == hashlib.sha256(b'{"secret_plan":"x"}').hexdigest()
    assert t.outputs_ref is not None and t.outputs_ref.size == 4
    assert t.outputs_ref.media_type.startswith("text/plain")
    m = model.payload
    assert isinstance(m, ModelIO)
    assert m.inputs is None and m.prompt_hash == "sha256:" + m.inputs_ref.sha256  # type: ignore[union-attr]
    assert b"private" not in b"".join(v for _, v in transport.messages)


# ----------------------------------------------------------------------- large payloads


async def test_large_content_goes_to_the_blob_store(tmp_path: Path) -> None:
    store = FolderBlobStore(tmp_path / "blobs")
    transport = MemoryTransport()
    big = {"document": "x" * 300_000}
    rec = make(transport, blobs=store, blob_threshold=1000)
    async with rec, rec.run(agent_id="a") as run:
        event = await run.tool_call(name="read", duration_ms=1, inputs=big, outputs="small")
        again = await run.tool_call(name="read", duration_ms=1, inputs=big)
    p = event.payload
    assert isinstance(p, ToolCall)
    assert p.inputs is None and p.outputs == "small" and p.redactions is None
    assert p.inputs_ref is not None
    text = json.dumps(big, separators=(",", ":"), sort_keys=True).encode()
    assert (p.inputs_ref.sha256, p.inputs_ref.size) == (hashlib.sha256(text).hexdigest(), len(text))
    assert store.get(p.inputs_ref.sha256) == text  # written before the event was sent
    assert again.payload.inputs_ref == p.inputs_ref  # type: ignore[union-attr]
    assert len(list((tmp_path / "blobs").rglob("*"))) == 3  # sha256/, sha256/<2>/, one blob
    assert max(len(v) for _, v in transport.messages) < 10_000


async def test_a_message_still_too_large_fails_that_call_only() -> None:
    transport = MemoryTransport()
    async with make(transport, max_message_bytes=50_000, blobs=None) as rec:
        run = await rec.start_run(agent_id="a")
        before = run.next_seq
        with pytest.raises(MessageTooLargeError, match=r"tool_call event .* expected at most"):
            await run.tool_call(name="read", duration_ms=1, inputs={"doc": "y" * 80_000})
        assert run.next_seq == before + 1  # only the implicit step was opened
        await run.tool_call(name="read", duration_ms=1, inputs={"doc": "small"})
        await run.complete()
        other = await rec.start_run(agent_id="b")
        await other.complete()
    events = decoded(transport)
    assert [e.seq for e in events if e.run_id == run.run_id] == [0, 1, 2, 3, 4]
    assert {e.run_id for e in events} == {run.run_id, other.run_id}
    assert all(len(v) <= 50_000 for _, v in transport.messages)
    assert Codec().decode(transport.messages[-1][1])[-1].type is EventType.RUN_COMPLETED
