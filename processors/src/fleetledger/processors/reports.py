"""Views over processor outputs (per-run totals and intercepts) for people and billing.

Pure functions over the JSON values the runtimes publish; the CLI only renders them.
Per-run totals are idempotent upserts, so summing the latest value of every run is exact
however often Kafka redelivered the events behind them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fleetledger.processors.pipeline import InterceptDoc, TotalsDoc
from fleetledger.schemas import money_str


@dataclass
class CostLine:
    runs: int = 0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = field(default_factory=lambda: Decimal(0))


@dataclass
class CostReport:
    """Exact cost totals across runs, per currency."""

    by_agent: dict[tuple[str, str], CostLine] = field(default_factory=dict)
    by_model: dict[tuple[str, str], CostLine] = field(default_factory=dict)
    total: dict[str, Decimal] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def line(k: tuple[str, str], v: CostLine) -> dict[str, Any]:
            return {
                "name": k[0],
                "currency": k[1],
                "runs": v.runs,
                "calls": v.calls,
                "input_tokens": v.input_tokens,
                "output_tokens": v.output_tokens,
                "cost": money_str(v.cost),
            }

        return {
            "by_agent": [line(k, v) for k, v in sorted(self.by_agent.items())],
            "by_model": [line(k, v) for k, v in sorted(self.by_model.items())],
            "total": {c: money_str(a) for c, a in sorted(self.total.items())},
        }


def cost_report(totals: Iterable[TotalsDoc]) -> CostReport:
    """Sum per-run totals by agent and by model (in each run's currency)."""
    report = CostReport()
    for t in totals:
        currency = t.get("currency") or "-"
        agent = report.by_agent.setdefault((t["agent_id"], currency), CostLine())
        agent.runs += 1
        agent.cost += Decimal(t["cost"])
        agent.input_tokens += t["tokens"]["input"]
        agent.output_tokens += t["tokens"]["output"]
        report.total[currency] = report.total.get(currency, Decimal(0)) + Decimal(t["cost"])
        for model, m in t["by_model"].items():
            line = report.by_model.setdefault((model, currency), CostLine())
            line.runs += 1
            line.calls += m["calls"]
            agent.calls += m["calls"]
            line.input_tokens += m["input_tokens"]
            line.output_tokens += m["output_tokens"]
            line.cost += Decimal(m["cost"])
    return report


def intercepts_by_recency(intercepts: Iterable[InterceptDoc]) -> list[InterceptDoc]:
    """Newest first (event time, then run and seq for a stable order)."""
    return sorted(intercepts, key=lambda i: (i["ts"], i["run_id"], i["seq"]), reverse=True)
