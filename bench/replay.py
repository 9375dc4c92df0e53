"""Measurement: replay.

One recorded run of ``replay_calls`` model calls (through a ``@model`` function whose
provider answers in-process, at no latency) and as many tool calls (``@tool``) is
replayed against its bundle: the recording verified, every call matched by key and
answered from it, the replay run recorded (to memory) and compared into the report.
The baseline, measured in the same repetition, records the same agent live - the same
SDK path with the provider and tools actually called - so the ratio is what replaying
costs over recording, without any network time (which replay saves in practice).
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

from fleetledger.processors.runtimes.replay import load_recording, replay
from fleetledger.producers import MemoryTransport, ModelReply, Recorder, Run, model, tool

from .common import Figure, Sizes, log


@model(provider="openai")
def _ask(*, model: str, prompt: str) -> ModelReply:
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    return ModelReply(outputs={"text": digest}, input_tokens=40, output_tokens=12)


@tool
def _lookup(key: str) -> dict[str, Any]:
    return {"key": key, "value": len(key)}


def _agent(calls: int) -> Any:
    async def agent(run: Run) -> None:
        async with run.step("work"):
            for i in range(calls):
                reply = _ask(model="gpt-4.1-mini", prompt=f"question {i}")
                _lookup(reply.outputs["text"][:12])

    return agent


async def _record(calls: int) -> float:
    agent = _agent(calls)
    started = time.perf_counter()
    async with Recorder(MemoryTransport(), linger_ms=None) as rec, rec.run(agent_id="b") as run:
        await agent(run)
    return time.perf_counter() - started


async def _bundle(calls: int, folder: Path) -> Path:
    from datetime import UTC, datetime

    from fleetledger.processors.memory import memory_pipeline
    from fleetledger.processors.pipeline import SourcePosition

    transport = MemoryTransport()
    async with (
        Recorder(transport, linger_ms=None) as rec,
        rec.run(agent_id="b", run_id="bench-replay") as run,
    ):
        await _agent(calls)(run)
    pipe = memory_pipeline()
    out = pipe.handle_many(
        ((v, SourcePosition("bench", 0, i)) for i, (_k, v) in enumerate(transport.messages)),
        datetime.now(UTC),
    )
    path = folder / "bench-replay.bundle.json"
    path.write_bytes(out.bundles[0].data)
    return path


async def _replay(path: Path, calls: int) -> float:
    started = time.perf_counter()
    recording = load_recording(path)
    async with Recorder(MemoryTransport(), linger_ms=None) as rec:
        result = await replay(recording, _agent(calls), recorder=rec)
    took = time.perf_counter() - started
    assert result.report.ok and result.report.served == 2 * calls, result.report.divergences
    return took


def run(sizes: Sizes) -> list[Figure]:
    calls = sizes.replay_calls
    log(f"replay: a run of {calls:,} model calls and {calls:,} tool calls")
    figure = Figure(
        "replay.calls",
        f"calls replayed per second (one run of {2 * calls:,} calls: verify, match, serve, "
        "record, compare)",
        "calls/s",
        baseline_name="recording the same run live (provider and tools in-process)",
    )
    per_call = Figure(
        "replay.overhead_us_per_call",
        "replay time per call minus live recording time per call",
        "us/call",
        higher_is_better=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = asyncio.run(_bundle(calls, Path(tmp)))
        for _ in range(sizes.reps):
            live = asyncio.run(_record(calls))
            replayed = asyncio.run(_replay(path, calls))
            figure.add(2 * calls / replayed, 2 * calls / live)
            per_call.add(max(0.0, (replayed - live) / (2 * calls) * 1e6))
    return [figure, per_call]
