"""Bundles of small hand-written runs, built from the contract's models (for replay,
determinism and diff tests)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fleetledger.processors.bundle import assemble
from fleetledger.processors.canonical import event_hash, genesis, link
from fleetledger.processors.core import CoreConfig, Entry
from fleetledger.schemas import (
    ArtifactWritten,
    Cost,
    HumanGateRequested,
    HumanGateResolved,
    ModelIO,
    RunCompleted,
    RunStarted,
    StepCompleted,
    StepStarted,
    ToolCall,
    TraceEvent,
    WorkflowSnapshot,
    WorkflowStep,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def entries(events: list[dict[str, Any]]) -> list[Entry]:
    """Chain canonical event objects of one run into ledger entries."""
    run_id = events[0]["run_id"]
    prev = genesis(run_id)
    out = []
    for ev in events:
        h = event_hash(ev)
        entry = link(prev, h)
        out.append(Entry(run_id, ev["seq"], h.hex(), prev.hex(), entry.hex(), ev))
        prev = entry
    return out


class RunBuilder:
    """``RunBuilder("r1").step("plan").model(...).tool(...).bundle()``."""

    def __init__(
        self,
        run_id: str,
        *,
        steps: tuple[str, ...] = ("plan", "act"),
        workflow: str = "wf",
        revision: str = "1",
        t0: datetime = T0,
        agent_id: str = "agent",
        labels: dict[str, str] | None = None,
    ) -> None:
        self.run_id = run_id
        self.t = t0
        self.agent_id = agent_id
        self.events: list[dict[str, Any]] = []
        self.step_id: str | None = None
        self._emit(
            None,
            RunStarted(
                workflow=WorkflowSnapshot(
                    name=workflow,
                    revision=revision,
                    steps=tuple(WorkflowStep(id=s, name=s, kind="llm") for s in steps),
                ),
                labels=labels or {},
            ),
        )

    def _emit(self, step: str | None, payload: Any, ms: int = 100) -> dict[str, Any]:
        self.t += timedelta(milliseconds=ms)
        ev = TraceEvent(
            event_id=uuid.UUID(int=len(self.events) + 1, version=4),
            run_id=self.run_id,
            seq=len(self.events),
            type=payload.TYPE,
            ts=self.t,
            agent_id=self.agent_id,
            tenant="acme",
            step_id=step,
            producer_id="test",
            payload=payload,
        ).to_json_obj()
        self.events.append(ev)
        return ev

    def step(self, step_id: str, attempt: int = 1) -> RunBuilder:
        if self.step_id is not None:
            self.end_step()
        self.step_id = step_id
        self._emit(step_id, StepStarted(attempt=attempt))
        return self

    def end_step(self, outcome: str = "success") -> RunBuilder:
        assert self.step_id is not None
        self._emit(self.step_id, StepCompleted(outcome=outcome, duration_ms=100))
        self.step_id = None
        return self

    def model(
        self,
        inputs: Any,
        outputs: Any,
        *,
        model: str = "gpt-4.1",
        provider: str = "openai",
        cost: str = "0.01",
        tokens: tuple[int, int] = (100, 20),
        duration_ms: int = 500,
    ) -> RunBuilder:
        self._emit(
            self.step_id,
            ModelIO(
                gen_ai_provider_name=provider,
                gen_ai_request_model=model,
                gen_ai_response_model=model,
                gen_ai_usage_input_tokens=tokens[0],
                gen_ai_usage_output_tokens=tokens[1],
                cost=Cost(amount=Decimal(cost), currency="USD", source="local"),
                duration_ms=duration_ms,
                prompt_hash="sha256:" + "a" * 64,
                inputs=text(inputs),
                outputs=text(outputs),
            ),
        )
        return self

    def tool(
        self,
        name: str,
        inputs: Any,
        outputs: Any,
        *,
        outcome: str = "success",
        error_type: str | None = None,
        ms: int = 100,
    ) -> RunBuilder:
        self._emit(
            self.step_id,
            ToolCall(
                gen_ai_tool_name=name,
                inputs=text(inputs),
                outputs=text(outputs),
                duration_ms=50,
                outcome=outcome,
                error_type=error_type,
            ),
            ms,
        )
        return self

    def gate(
        self,
        gate_id: str,
        decision: str = "approve",
        *,
        artifact_key: str | None = None,
        artifact_version: int | None = None,
        reviewer: str = "ana@acme",
        resolved_version: int | None = None,
    ) -> RunBuilder:
        self._emit(
            self.step_id,
            HumanGateRequested(
                gate_id=gate_id,
                policy="PAUSE_AFTER",
                artifact_key=artifact_key,
                artifact_version=artifact_version,
            ),
        )
        self._emit(
            self.step_id,
            HumanGateResolved(
                gate_id=gate_id,
                decision=decision,
                reviewer=reviewer,
                artifact_key=artifact_key,
                artifact_version=(
                    artifact_version if resolved_version is None else resolved_version
                ),
                wait_ms=1000,
            ),
        )
        return self

    def artifact(
        self, key: str, version: int, content: str, state: str = "generated"
    ) -> RunBuilder:
        import hashlib

        self._emit(
            self.step_id,
            ArtifactWritten(
                key=key,
                version=version,
                content_hash="sha256:" + hashlib.sha256(content.encode()).hexdigest(),
                state=state,
            ),
        )
        return self

    def bundle(self) -> dict[str, Any]:
        if self.step_id is not None:
            self.end_step()
        self._emit(None, RunCompleted())
        return assemble(self.run_id, entries(self.events), CoreConfig())
