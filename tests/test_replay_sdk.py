"""The SDK side of replay: human gates, the tool_call context manager, @model, sync runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetledger.kernel.errors import EventValidationError, ReplayMissError
from fleetledger.processors.runtimes.replay import load_recording, replay
from fleetledger.producers import (
    MemoryTransport,
    ModelReply,
    Recorder,
    Run,
    SyncRecorder,
    model,
    tool,
    tool_call,
)
from fleetledger.producers.replay import GateRequest
from fleetledger.schemas import Codec, EventType

from .replay_fixtures import record

asked: list[GateRequest] = []


def reviewer(request: GateRequest) -> dict[str, str]:
    asked.append(request)
    return {"decision": "edit", "reviewer": "bo@acme", "reason": "tone"}


@model(provider="acme")
def complete(prompt: str, *, model: str = "acme-1") -> ModelReply:
    return ModelReply(outputs={"text": prompt.upper()}, input_tokens=3, output_tokens=2)


@tool(replay="execute")
def slugify(text: str) -> str:
    return text.lower().replace(" ", "-")


async def agent(run: Run) -> None:
    async with run.step("draft"):
        reply = complete("hello world")
        await run.artifact(
            key="post.md", version=1, state="generated", content=reply.outputs["text"]
        )
        with tool_call("lookup", inputs={"id": 7}) as call:
            if not call.served:
                call.outputs = {"name": "ada"}
        slugify("Hello World")
    async with run.step("review"):
        outcome = await run.human_gate(
            gate_id="g1",
            policy="PAUSE_AFTER",
            artifact_key="post.md",
            artifact_version=1,
            ask=reviewer,
        )
        assert outcome.decision == "edit" and outcome.reason == "tone"


async def test_gates_tools_and_models_recorded_then_served(tmp_path: Path) -> None:
    asked.clear()

    async def body(rec: Recorder) -> None:
        async with rec.run(agent_id="writer", run_id="w-1") as run:
            await agent(run)

    paths = await record(body, tmp_path)
    assert [r.gate_id for r in asked] == ["g1"] and asked[0].artifact_version == 1
    asked.clear()
    async with Recorder(MemoryTransport(), linger_ms=None) as rec:
        result = await replay(load_recording(paths["w-1"]), agent, recorder=rec)
    assert asked == []  # the recorded decision, not the reviewer
    assert result.report.ok and result.report.served == 3  # model, lookup, gate
    statuses = {r.action: (r.status, r.served) for r in result.report.rows}
    assert statuses["tool_call `slugify`"] == ("match", False)  # re-executed and compared
    assert statuses["gate g1"] == ("match", True)


def test_model_and_tool_outside_a_run_just_run() -> None:
    assert complete("x").outputs == {"text": "X"}
    assert slugify("A B") == "a-b"


async def test_a_gate_answer_without_a_decision_is_refused() -> None:
    async with Recorder(MemoryTransport()) as rec, rec.run(agent_id="a") as run:
        with pytest.raises(EventValidationError, match="expected a decision and a reviewer"):
            await run.human_gate(gate_id="g", policy="CHECKPOINT", ask=lambda r: {"decision": "ok"})


async def test_a_gate_the_recording_does_not_have_fails_closed(tmp_path: Path) -> None:
    async def body(rec: Recorder) -> None:
        async with rec.run(agent_id="writer", run_id="w-2") as run:
            await agent(run)

    paths = await record(body, tmp_path)

    async def other_gate(run: Run) -> None:
        await run.human_gate(gate_id="g2", policy="PAUSE_AFTER", ask=reviewer)

    async with Recorder(MemoryTransport(), linger_ms=None) as rec:
        result = await replay(load_recording(paths["w-2"]), other_gate, recorder=rec)
    assert result.error is not None and result.error.startswith("ReplayMissError")
    assert "nearest recorded call: gate g1" in result.error


def test_sync_runs_ask_humans_off_the_loop() -> None:
    transport = MemoryTransport()
    with SyncRecorder(transport) as rec, rec.run(agent_id="s", labels={"k": "v"}) as run:
        assert run.labels == {"k": "v"}
        outcome = run.human_gate(gate_id="g", policy="CHECKPOINT", ask=reviewer)
    assert outcome.decision == "edit" and not outcome.replayed
    events = [e for _, v in transport.messages for e in Codec().decode(v)]
    types = [e.type for e in events]
    assert EventType.HUMAN_GATE_REQUESTED in types and EventType.HUMAN_GATE_RESOLVED in types


def test_miss_errors_are_fleetledger_errors() -> None:
    err: Any = ReplayMissError("m", key="sha256:x")
    assert err.nearest is None and err.diff == [] and isinstance(err, Exception)
