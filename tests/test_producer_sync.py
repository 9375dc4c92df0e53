"""The blocking facade: same semantics as the async recorder, no event loop needed."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fleetledger.kernel.errors import DeliveryError, RunStateError
from fleetledger.kernel.sqlitelog import SqliteLog
from fleetledger.producers import MemoryTransport, SyncRecorder
from fleetledger.schemas import Codec, EventType, StepOutcome, WorkflowSnapshot, WorkflowStep

WORKFLOW = WorkflowSnapshot(
    name="sync", revision="2", steps=(WorkflowStep(id="plan", name="Plan", kind="llm"),)
)


def test_sync_recorder_records_runs_and_steps(tmp_path: Path) -> None:
    db = tmp_path / "sync.db"
    with SyncRecorder.from_url(f"sqlite:///{db}", producer_id="sync") as rec:
        run = rec.start_run(agent_id="planner", tenant="acme", workflow=WORKFLOW)
        with run:
            with run.step("plan") as step:
                assert step.attempt == 1
                step.model_io(
                    provider="gcp.gemini",
                    model="gemini-2.5-flash",
                    input_tokens=900,
                    output_tokens=120,
                    duration_ms=640,
                    inputs={"q": "summarize"},
                )
                step.tool_call(name="search", duration_ms=30)
            with pytest.raises(ZeroDivisionError), run.step("plan"):
                _ = 1 / 0
        assert run.status == "completed"
        with pytest.raises(RunStateError):
            run.tool_call(name="late", duration_ms=1)
    log = SqliteLog.open(db, create=False)
    rows = log.read(0, 100)
    log.close()
    codec = Codec()
    events = [e for _, _, value in rows for e in codec.decode(value)]
    assert [e.seq for e in events] == list(range(len(events)))
    assert [e.type for e in events] == [
        EventType.RUN_STARTED,
        EventType.STEP_STARTED,
        EventType.MODEL_IO,
        EventType.TOOL_CALL,
        EventType.STEP_COMPLETED,
        EventType.STEP_STARTED,
        EventType.STEP_COMPLETED,
        EventType.RUN_COMPLETED,
    ]
    error = events[6].payload
    assert error.outcome == StepOutcome.ERROR  # type: ignore[union-attr]
    assert error.error_type == "ZeroDivisionError"  # type: ignore[union-attr]
    assert events[5].payload.attempt == 2  # type: ignore[union-attr]


def test_sync_run_context_fails_the_run_on_exception() -> None:
    transport = MemoryTransport()
    rec = SyncRecorder(transport, producer_id="sync", linger_ms=None)
    run = rec.start_run(agent_id="a", workflow=WORKFLOW)
    with pytest.raises(RuntimeError, match="model refused"), run:
        raise RuntimeError("model refused")
    assert run.status == "failed"
    rec.close()
    rec.close()  # idempotent
    events = [e for _, v in transport.messages for e in Codec().decode(v)]
    assert events[-1].type == EventType.RUN_FAILED
    assert events[-1].payload.error_type == "RuntimeError"  # type: ignore[union-attr]
    assert transport.closed


def test_sync_recorder_from_several_threads_keeps_each_run_gap_free() -> None:
    transport = MemoryTransport()
    with SyncRecorder(transport, producer_id="sync", batch_max_events=3) as rec:

        def agent(i: int) -> None:
            run = rec.start_run(agent_id=f"a{i}", workflow=WORKFLOW, run_id=f"r{i}")
            with run:
                for k in range(20):
                    run.tool_call(name="t", duration_ms=k, step_id="s")

        threads = [threading.Thread(target=agent, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    per_run: dict[str, list[int]] = {}
    for _, value in transport.messages:
        for e in Codec().decode(value):
            per_run.setdefault(e.run_id, []).append(e.seq)
    assert per_run == {f"r{i}": list(range(22)) for i in range(4)}


class _Failing(MemoryTransport):
    async def send(self, key: str, value: bytes) -> None:
        raise ConnectionError("no route to broker")


def test_sync_delivery_failure_surfaces_on_flush_and_close() -> None:
    rec = SyncRecorder(_Failing(), linger_ms=None)
    run = rec.start_run(agent_id="a", workflow=WORKFLOW)
    run.complete()
    with pytest.raises(DeliveryError, match="no route to broker"):
        rec.flush()
    with pytest.raises(DeliveryError, match="no route to broker"):
        rec.close()
    assert not rec._thread.thread.is_alive()


def test_sync_recorder_flushes_at_interpreter_exit_without_close(tmp_path: Path) -> None:
    db = tmp_path / "exit.db"
    script = f"""
from fleetledger.producers import SyncRecorder
from fleetledger.schemas import WorkflowSnapshot
rec = SyncRecorder.from_url("sqlite:///{db}", linger_ms=None)
run = rec.start_run(agent_id="a", workflow=WorkflowSnapshot(name="w", revision="1"))
run.tool_call(name="t", duration_ms=1, step_id="s")
# no close(): the exit hook flushes
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    log = SqliteLog.open(db, create=False)
    rows = log.read(0, 10)
    log.close()
    assert [e.seq for _, _, v in rows for e in Codec().decode(v)] == [0, 1]
