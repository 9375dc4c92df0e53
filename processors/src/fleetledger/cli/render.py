"""Rendering of the read model's typed results as rich tables (people) or JSON (tools).

Everything shown comes from recorded data, so every string is escaped before rich sees
it: a recorded ``[bold]`` stays text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fleetledger.processors.readmodel import (
    ActionRow,
    CostLine,
    CostReport,
    InterceptRow,
    RunRow,
    RunSummary,
    iso,
)
from fleetledger.schemas import money_str

if TYPE_CHECKING:
    from fleetledger.processors.readstore import RunView

_STATUS_STYLE = {"failed": "red", "completed": "green", "running": "blue", "open": "yellow"}


def fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    return f"{ms / 1000:.1f}s" if ms < 120_000 else f"{ms / 60_000:.1f}m"


def fmt_money(cost: Mapping[str, Decimal]) -> str:
    """``37.26 USD`` (``1.5 EUR, 37.26 USD`` in several currencies; ``0`` in none)."""
    if not cost:
        return "0"
    return ", ".join(f"{money_str(a)} {escape(c)}" for c, a in sorted(cost.items()))


def _ts(run_ts: object) -> str:
    from datetime import datetime

    if not isinstance(run_ts, datetime):
        return "-"
    return run_ts.strftime("%Y-%m-%d %H:%M:%S")


def _styled(text: str, style: str | None) -> str:
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def _status(status: str) -> str:
    return _styled(status, _STATUS_STYLE.get(status))


def _rate(run: RunRow) -> str:
    rate = run.success_rate
    return "-" if rate is None else f"{rate * 100:.0f}%"


def runs_table(
    console: Console, runs: Sequence[RunRow], *, total: int, next_cursor: str | None
) -> None:
    table = Table(title=f"Runs ({total})", title_justify="left")
    right = {"duration", "actions", "ok", "cost", "!"}
    for col in ("run", "agent", "tenant", "status", "started", "duration", "actions", "ok",
                "cost", "!"):  # fmt: skip
        table.add_column(col, justify="right" if col in right else "left", no_wrap=True)
    for r in runs:
        table.add_row(
            escape(r.run_id),
            escape(r.agent_id),
            escape(r.tenant),
            _status(r.status),
            _ts(r.started_at),
            fmt_ms(r.duration_ms),
            str(r.actions),
            _rate(r),
            f"{money_str(r.cost)} {escape(r.currency or '')}".strip(),
            f"[red]{r.intercepts}" if r.intercepts else "",
        )
    shown = len(runs)
    if total > shown:
        more = f"{total - shown} more not shown (--limit"
        table.caption = more + (f", or --cursor {next_cursor})" if next_cursor else ")")
    console.print(table)


def summary_line(console: Console, s: RunSummary) -> None:
    statuses = ", ".join(f"{n} {escape(k)}" for k, n in sorted(s.by_status.items()))
    rate = f"{s.actions_ok * 100 / s.actions:.1f}%" if s.actions else "-"
    console.print(
        f"{s.runs} runs ({statuses or 'none'}); cost {fmt_money(s.cost)}; "
        f"{s.actions} actions, {rate} successful; {s.intercepts} intercepts"
    )


def costs_tables(console: Console, report: CostReport) -> None:
    agents = Table(title="Cost by agent", title_justify="left")
    for col in ("agent", "runs", "model calls", "unpriced", "input tokens", "output tokens",
                "cost"):  # fmt: skip
        agents.add_column(col, justify="left" if col == "agent" else "right")
    for line in report.by_agent:
        agents.add_row(
            escape(line.name),
            str(line.runs),
            str(line.calls),
            str(line.unpriced_calls),
            f"{line.input_tokens:,}",
            f"{line.output_tokens:,}",
            _cost_cell(line),
        )
    console.print(agents)
    models = Table(title="Cost by model (as requested; served as)", title_justify="left")
    for col in ("model", "served as", "runs", "calls", "unpriced", "fallbacks", "errors",
                "input tokens", "output tokens", "cost"):  # fmt: skip
        models.add_column(col, justify="left" if col in ("model", "served as") else "right")
    for line in report.by_model:
        models.add_row(
            escape(line.name),
            escape(", ".join(line.served) or "-"),
            str(line.runs),
            str(line.calls),
            str(line.unpriced_calls),
            str(line.fallbacks),
            str(line.errors),
            f"{line.input_tokens:,}",
            f"{line.output_tokens:,}",
            _cost_cell(line),
        )
    console.print(models)
    unpriced = report.unpriced_calls
    console.print(
        f"Total: {fmt_money(report.total)} over {report.runs} runs"
        + (f"; {unpriced:,} unpriced model calls (no known price) not in it" if unpriced else "")
    )


def _cost_cell(line: CostLine) -> str:
    """The line's cost; ``unpriced`` when none of its calls had a known price."""
    if not line.cost and line.unpriced_calls:
        return "unpriced"
    return fmt_money(line.cost)


def intercepts_table(
    console: Console,
    items: Sequence[InterceptRow],
    *,
    total: int,
    next_cursor: str | None,
    title: str = "Critical intercepts",
) -> None:
    table = Table(title=f"{title} ({total})", title_justify="left")
    for col in ("time", "run", "agent", "kind", "severity", "seq"):
        table.add_column(col, no_wrap=True)
    table.add_column("reason", overflow="fold")
    for i in items:
        color = "red" if i.severity == "critical" else "yellow"
        table.add_row(
            iso(i.ts) or "",
            escape(i.run_id),
            escape(i.agent_id),
            escape(i.kind),
            f"[{color}]{escape(i.severity)}",
            str(i.seq),
            escape(i.reason),
        )
    if total > len(items):
        more = f"{total - len(items)} more not shown (--limit"
        table.caption = more + (f", or --cursor {next_cursor})" if next_cursor else ")")
    console.print(table)


def _short(value: object, width: int = 60) -> str:
    if value is None:
        return ""
    import orjson

    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= width else text[: width - 1] + "…"


def actions_table(console: Console, actions: Sequence[ActionRow], *, limit: int) -> None:
    table = Table(title=f"Actions ({len(actions)} events)", title_justify="left")
    for col in ("seq", "time", "type", "name", "outcome", "cost", "duration"):
        table.add_column(col, justify="right" if col in ("seq", "cost", "duration") else "left",
                         no_wrap=True)  # fmt: skip
    table.add_column("inputs / outputs", overflow="fold")
    outcome_style = {"success": "green", "error": "red", "fallback": "yellow", "blocked": "yellow"}
    for a in actions[:limit]:
        io = " → ".join(x for x in (_short(a.inputs), _short(a.outputs)) if x)
        io = f"[red]{escape(a.error)}[/] {escape(io)}".strip() if a.error else escape(io)
        outcome = a.outcome or ""
        table.add_row(
            str(a.seq),
            a.ts.strftime("%H:%M:%S.%f")[:-3],
            escape(a.type),
            escape(a.name),
            _styled(outcome, outcome_style.get(outcome)),
            "" if a.cost is None else f"{money_str(a.cost)} {escape(a.currency or '')}",
            fmt_ms(a.duration_ms),
            io,
        )
    if len(actions) > limit:
        table.caption = f"{len(actions) - limit} more events not shown (--limit)"
    console.print(table)


def run_view(console: Console, view: RunView, *, limit: int) -> None:
    r = view.run
    console.print(f"[bold]Run {escape(r.run_id)}[/]  {_status(r.status)}")
    header = Table.grid(padding=(0, 2))
    header.add_column(style="dim")
    header.add_column()
    for name, value in (
        ("agent", escape(r.agent_id)),
        ("tenant", escape(r.tenant)),
        ("project", escape(r.project or "-")),
        ("started", iso(r.started_at) or "-"),
        ("ended", iso(r.ended_at) or "-"),
        ("duration", fmt_ms(r.duration_ms)),
        ("actions", f"{r.actions} ({_rate(r)} successful), {r.events} events"),
        ("cost", f"{money_str(r.cost)} {escape(r.currency or '')}".strip()),
        ("intercepts", str(r.intercepts)),
        ("bundle digest", r.digest or "(not finished)"),
    ):
        header.add_row(name, value)
    if view.archived is not None:
        header.add_row("archived", escape(str(view.archived)))
    console.print(header)
    actions_table(console, view.actions, limit=limit)
    models: dict[str, list[int | Decimal]] = {}
    for a in view.actions:
        if a.type == "model_io":
            m = models.setdefault(a.name, [0, 0, 0, Decimal(0)])
            m[0] += 1
            m[1] += a.input_tokens or 0
            m[2] += a.output_tokens or 0
            m[3] += a.cost or Decimal(0)
    if models:
        totals = Table(title="Totals by model (as served)", title_justify="left")
        for col in ("model", "calls", "input tokens", "output tokens", "cost"):
            totals.add_column(col, justify="left" if col == "model" else "right")
        for name, (calls, inp, outp, cost) in sorted(models.items()):
            totals.add_row(
                escape(name), str(calls), f"{inp:,}", f"{outp:,}", money_str(Decimal(cost))
            )
        console.print(totals)
    if view.intercepts:
        intercepts_table(
            console, view.intercepts, total=len(view.intercepts), next_cursor=None,
            title="Intercepts",
        )  # fmt: skip
