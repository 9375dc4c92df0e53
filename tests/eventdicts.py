"""Canonical event objects for core tests, built directly in the contract's JSON form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def ts(ms: int) -> str:
    return (
        (T0 + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def event(
    run_id: str, seq: int, etype: str, payload: dict[str, Any], step: str | None = None
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event_id": f"00000000-0000-4000-8000-{seq:012d}",
        "run_id": run_id,
        "seq": seq,
        "type": etype,
        "ts": ts(seq * 1000),
        "agent_id": "planner",
        "tenant": "acme",
        "producer_id": "test",
        "schema_version": 2,
        "payload": payload,
    }
    if step is not None:
        obj["step_id"] = step
    return obj


WORKFLOW = {
    "name": "review",
    "revision": "3",
    "steps": [
        {"id": "plan", "name": "Plan", "kind": "llm"},
        {"id": "write", "name": "Write", "kind": "llm", "gate": "PAUSE_AFTER"},
    ],
    "edges": [{"source": "plan", "target": "write"}],
}


def started(run_id: str, budget: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"workflow": WORKFLOW, "labels": {"fleet": "f1"}}
    if budget is not None:
        payload["budget"] = {"amount": budget, "currency": "USD"}
    return event(run_id, 0, "run_started", payload)


def model_io(
    run_id: str,
    seq: int,
    cost: str,
    *,
    model: str = "gpt-4.1",
    step: str = "plan",
    tokens: tuple[int, int] = (1000, 200),
    currency: str = "USD",
    source: str = "local",
) -> dict[str, Any]:
    return event(
        run_id,
        seq,
        "model_io",
        {
            "gen_ai_provider_name": "openai",
            "gen_ai_request_model": model,
            "gen_ai_response_model": model,
            "gen_ai_usage_input_tokens": tokens[0],
            "gen_ai_usage_output_tokens": tokens[1],
            "gen_ai_usage_cache_read_input_tokens": 0,
            "cost": {"amount": cost, "currency": currency, "source": source},
            "duration_ms": 850,
            "prompt_hash": "ab" * 32,
            "response_hash": "cd" * 32,
            "cache": "miss",
            "outcome": "success",
        },
        step,
    )


def gate_resolved(run_id: str, seq: int, decision: str) -> dict[str, Any]:
    return event(
        run_id,
        seq,
        "human_gate_resolved",
        {
            "gate_id": f"g{seq}",
            "decision": decision,
            "reviewer": "rev@acme",
            "wait_ms": 5000,
        },
        "write",
    )


def gate_requested(run_id: str, seq: int) -> dict[str, Any]:
    return event(
        run_id,
        seq,
        "human_gate_requested",
        {"gate_id": f"g{seq + 1}", "policy": "PAUSE_AFTER"},
        "write",
    )


def recovery(run_id: str, seq: int, level: str = "L1_RETRY") -> dict[str, Any]:
    return event(
        run_id, seq, "recovery", {"level": level, "failure_kind": "timeout", "attempt": 2}, "plan"
    )


def completed(run_id: str, seq: int) -> dict[str, Any]:
    return event(run_id, seq, "run_completed", {})


def failed(run_id: str, seq: int) -> dict[str, Any]:
    return event(
        run_id, seq, "run_failed", {"error_type": "ToolError", "error_message": "search down"}
    )


def simple_run(
    run_id: str = "run-1", n_calls: int = 3, cost: str = "0.0125"
) -> list[dict[str, Any]]:
    evs = [started(run_id, budget="10")]
    for i in range(n_calls):
        evs.append(
            model_io(run_id, len(evs), cost, model="gpt-4.1" if i % 2 else "claude-sonnet-4")
        )
    evs.append(completed(run_id, len(evs)))
    return evs
