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


@tool
def fetch(n: int) -> dict[str, int]:
    return {"n": n, "square": n * n}


async def test_a_reordered_call_gets_its_own_answer_and_is_reported(tmp_path: Path) -> None:
    async def forward(run: Run) -> None:
        async with run.step("s"):
            fetch(1)
            fetch(2)

    async def body(rec: Recorder) -> None:
        async with rec.run(agent_id="o", run_id="o-1") as run:
            await forward(run)

    paths = await record(body, tmp_path)
    got: list[dict[str, int]] = []

    async def backward(run: Run) -> None:
        async with run.step("s"):
            got.append(fetch(2))
            got.append(fetch(1))

    transport = MemoryTransport()
    async with Recorder(transport, linger_ms=None) as rec:
        result = await replay(load_recording(paths["o-1"]), backward, recorder=rec, run_id="o-r")
    assert got == [{"n": 2, "square": 4}, {"n": 1, "square": 1}]  # not first-in-first-out
    (d,) = result.report.divergences
    assert d.kind == "reordered" and d.replay is not None and d.replay.inputs == {"n": 2}
    assert "at step s position 0 was recorded at step s position 1 (seq 3)" in d.message
    # the replay run's own bundle is evidence like any other
    from fleetledger.processors.evidence import verify_bundle_bytes

    from .replay_fixtures import bundles_of

    facts = verify_bundle_bytes(bundles_of(transport)["o-r"])
    assert facts.run_id == "o-r"
