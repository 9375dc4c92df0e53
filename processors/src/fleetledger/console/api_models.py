"""The JSON API's answers, as the OpenAPI description documents them.

These models describe the read model's ``to_json()`` shapes for the published OpenAPI
document; handlers return those dicts directly.  The server tests hold every documented
route to them (each answer is validated against the schema the server publishes).
Amounts are decimal strings, times ISO 8601 UTC (``...Z``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Amount = str


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunOut(_Out):
    run_id: str
    tenant: str
    agent_id: str
    project: str | None
    status: str = Field(description="open | running | completed | failed")
    started_at: str | None
    ended_at: str | None
    duration_ms: int | None
    actions: int = Field(description="model and tool calls")
    actions_ok: int
    success_rate: Amount | None = Field(description="actions_ok / actions, 4 decimals")
    events: int
    cost: Amount
    currency: str | None
    intercepts: int
    digest: str | None = Field(description="the bundle's sha256 once the run finished")
    position: int = Field(description="read-model position of the row's last change")


class RunPageOut(_Out):
    runs: list[RunOut]
    next_cursor: str | None = Field(description="pass as `after` for the next page")


class SummaryOut(_Out):
    runs: int
    by_status: dict[str, int]
    cost: dict[str, Amount] = Field(description="spend per currency")
    actions: int
    actions_ok: int
    intercepts: int


class RunsAnswer(_Out):
    filter: dict[str, Any]
    sort: str
    runs: list[RunOut]
    next_cursor: str | None
    summary: SummaryOut


class ActionOut(_Out):
    run_id: str
    seq: int
    type: str
    name: str
    ts: str
    step_id: str | None
    outcome: str | None
    cost: Amount | None
    currency: str | None
    duration_ms: int | None
    inputs: Any = Field(description="the recorded inputs (parsed when they are JSON text)")
    outputs: Any
    error: str | None
    event: dict[str, Any] = Field(description="the canonical event as recorded")
    event_hash: str | None
    prev_hash: str | None
    entry_hash: str | None
    position: int


class ActionsAnswer(_Out):
    run_id: str
    actions: list[ActionOut]
    next_after_seq: int | None = Field(description="pass as `after_seq` for more")


class InterceptOut(_Out):
    intercept_id: str
    run_id: str
    kind: str
    severity: str
    seq: int
    reason: str
    ts: str
    tenant: str
    agent_id: str
    position: int


class InterceptPageOut(_Out):
    intercepts: list[InterceptOut]
    next_cursor: str | None
    total: int


class CostLineOut(_Out):
    name: str
    runs: int
    calls: int
    unpriced_calls: int = Field(description="calls without a known price (no amount in cost)")
    fallbacks: int
    errors: int
    served: list[str]
    input_tokens: int
    output_tokens: int
    cost: dict[str, Amount]


class CostReportOut(_Out):
    runs: int
    by_agent: list[CostLineOut]
    by_model: list[CostLineOut]
    total: dict[str, Amount]
    unpriced_calls: int = Field(description="model calls without a known price, in no total")


class AgentOut(_Out):
    tenant: str
    agent_id: str
    runs: int


class AgentsAnswer(_Out):
    agents: list[AgentOut]


class ChainOut(_Out):
    verified: bool | None = Field(description="every recorded entry hash re-derived")
    detail: str
    checked: int
    bundle_verified: bool | None = Field(description="the bundle checked as `verify` does")
    bundle_detail: str | None
    merkle_root: str | None


class RunAnswer(_Out):
    run: RunOut
    intercepts: list[InterceptOut]
    chain: ChainOut
    bundle_url: str | None
    signature_url: str | None


class ErrorOut(_Out):
    detail: str


__all__ = [
    "ActionOut",
    "ActionsAnswer",
    "AgentsAnswer",
    "CostReportOut",
    "ErrorOut",
    "InterceptPageOut",
    "RunAnswer",
    "RunPageOut",
    "RunsAnswer",
    "SummaryOut",
]
