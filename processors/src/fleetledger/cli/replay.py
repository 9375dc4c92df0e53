"""``fleetledger replay``, ``determinism`` and ``diff``: thin commands over the replay core.

A RUN argument is a bundle file, a signed envelope (``.dsse.json``) or the id of a
finished run in the store; it is verified before it is used (``--key`` pins signers).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fleetledger.cli.common import BrokerOpt, backend_of, settings_of
from fleetledger.cli.evidence import load_trusted
from fleetledger.kernel.errors import ConfigError

if TYPE_CHECKING:
    from fleetledger.processors.determinism import DeterminismReport
    from fleetledger.processors.replay import ReplayReport
    from fleetledger.processors.rundiff import ArtifactDiff, RunDiff
    from fleetledger.processors.runtimes.replay import LoadedRecording

KeyOpt = Annotated[
    list[Path] | None, typer.Option("--key", help="pinned public key PEM (a signed recording)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
_STATUS_STYLE = {
    "match": "green",
    "not_reached": "dim",
    "reordered": "yellow",
}
_SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan"}
_BAND_STYLE = {"green": "green", "yellow": "yellow", "orange": "dark_orange", "red": "red"}


def _load(ctx: typer.Context, source: str, keys: list[Path] | None, broker: str | None) -> Any:
    from fleetledger.processors.runtimes.replay import load_recording

    trusted = load_trusted(keys, None) if keys else []
    if Path(source).is_file():
        return load_recording(source, trusted=trusted, require_signature=bool(trusted))
    with backend_of(ctx, broker=broker).reader() as reader:
        return load_recording(source, reader=reader, trusted=trusted)


def _sources(paths: list[Path] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in paths or []:
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        if not files or not all(f.is_file() for f in files):
            raise ConfigError(f"--source {p}: found no Python file there, expected a .py or folder")
        for f in files:
            out[str(f)] = f.read_text(encoding="utf-8")
    return out


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay_cmd(
        ctx: typer.Context,
        run: Annotated[str, typer.Argument(help="bundle file, .dsse.json or run id")],
        agent: Annotated[
            str, typer.Option("--agent", help="the agent function, package.module:function")
        ],
        live: Annotated[
            bool, typer.Option("--live", help="make calls without a recording live (priced)")
        ] = False,
        key: KeyOpt = None,
        run_id: Annotated[str | None, typer.Option(help="id of the replay run")] = None,
        out: Annotated[Path | None, typer.Option(help="also write the report (JSON)")] = None,
        check: Annotated[
            bool, typer.Option("--check", help="exit 1 unless the replay matched the recording")
        ] = False,
        as_json: JsonOpt = False,
        broker: BrokerOpt = None,
    ) -> None:
        """Run AGENT again against a recorded run: every model/tool call and human decision
        answered from the recording (no network), divergences reported.  The replay is
        recorded as a run linked to the recording; --check fails on any divergence."""
        from fleetledger.processors.runtimes.replay import load_agent

        recording = _load(ctx, run, key, broker)
        function = load_agent(agent)
        settings = settings_of(ctx, broker=broker)
        result = asyncio.run(_replay(recording, function, settings, live, run_id))
        report = result.report
        if out is not None:
            out.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        if as_json:
            print(json.dumps({**report.to_json(), "replay_status": result.status}, indent=2))
        else:
            _print_replay(ctx.obj.console, report, result.run_id, result.status, result.error)
        if check and not report.ok:
            raise typer.Exit(1)

    @app.command("determinism")
    def determinism_cmd(
        ctx: typer.Context,
        run: Annotated[str, typer.Argument(help="bundle file, .dsse.json or run id")],
        against: Annotated[
            str | None,
            typer.Option(help="a second recording of the same calls (a replay, a rerun)"),
        ] = None,
        source: Annotated[
            list[Path] | None,
            typer.Option("--source", help="the agent's source (.py file or folder) to scan"),
        ] = None,
        key: KeyOpt = None,
        as_json: JsonOpt = False,
        broker: BrokerOpt = None,
    ) -> None:
        """Determinism findings of a run and its 0-100 score (SPEC.md 11.8)."""
        from fleetledger.processors.determinism import analyze

        recording = _load(ctx, run, key, broker)
        other = _load(ctx, against, key, broker).bundle if against is not None else None
        report = analyze(recording.bundle, against=other, sources=_sources(source))
        if as_json:
            print(json.dumps(report.to_json(), indent=2))
        else:
            _print_determinism(ctx.obj.console, report)

    @app.command("diff")
    def diff_cmd(
        ctx: typer.Context,
        run_a: Annotated[str, typer.Argument(help="bundle file, .dsse.json or run id")],
        run_b: Annotated[str | None, typer.Argument(help="the run to compare with")] = None,
        artifact: Annotated[
            str | None, typer.Option(help="diff the versions of this artifact of RUN_A")
        ] = None,
        versions: Annotated[
            tuple[int, int] | None, typer.Option(help="the two versions (default: each pair)")
        ] = None,
        blobs: Annotated[
            Path | None, typer.Option(help="blob store folder holding artifact contents")
        ] = None,
        key: KeyOpt = None,
        as_json: JsonOpt = False,
        broker: BrokerOpt = None,
    ) -> None:
        """Two runs of a workflow side by side (actions aligned by step and position,
        JSON-path diffs, cost and duration deltas), or an artifact's versions."""
        from fleetledger.processors.rundiff import artifact_history, diff_artifact, diff_runs

        a = _load(ctx, run_a, key, broker).bundle
        if artifact is not None:
            if run_b is not None:
                raise ConfigError("--artifact compares versions within RUN_A, expected no RUN_B")
            history = artifact_history(a, artifact)
            pairs = (
                [versions]
                if versions is not None
                else [(x.version, y.version) for x, y in itertools.pairwise(history)]
            )
            content = _content_loader(blobs) if blobs is not None else None
            diffs = [diff_artifact(a, artifact, v1, v2, content=content) for v1, v2 in pairs]
            if as_json:
                print(
                    json.dumps(
                        {
                            "key": artifact,
                            "revisions": [r.to_json() for r in history],
                            "diffs": [d.to_json() for d in diffs],
                        },
                        indent=2,
                    )
                )
            else:
                _print_artifact(ctx.obj.console, artifact, history, diffs)
            return
        if run_b is None:
            raise ConfigError("diff: found only RUN_A, expected RUN_B (or --artifact KEY)")
        d = diff_runs(a, _load(ctx, run_b, key, broker).bundle)
        if as_json:
            print(json.dumps(d.to_json(), indent=2))
        else:
            _print_diff(ctx.obj.console, d)


async def _replay(
    recording: LoadedRecording, agent: Any, settings: Any, live: bool, run_id: str | None
) -> Any:
    from fleetledger.processors.runtimes.replay import replay
    from fleetledger.producers import FolderBlobStore, Recorder

    blob_store = FolderBlobStore(settings.blob_dir) if settings.blob_dir is not None else None
    async with Recorder.from_url(settings=settings) as rec:
        return await replay(
            recording,
            agent,
            recorder=rec,
            allow_live=live,
            run_id=run_id,
            blobs=blob_store.get if blob_store is not None else None,
        )


def _content_loader(folder: Path) -> Any:
    from fleetledger.processors.jsondiff import content_value
    from fleetledger.producers import FolderBlobStore

    store = FolderBlobStore(folder)

    def load(content_hash: str) -> Any:
        data = store.get(content_hash.removeprefix("sha256:"))
        return None if data is None else content_value(data.decode("utf-8", "replace"))

    return load


# --------------------------------------------------------------------------- rendering


def _print_replay(
    console: Console, report: ReplayReport, run_id: str, status: str, error: str | None
) -> None:
    cur = report.currency or ""
    metrics = Table(title=f"Replay of {escape(report.original_run_id)}", title_justify="left")
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    metrics.add_row("Original cost", f"{report.original_cost} {cur}")
    metrics.add_row("Replay cost", f"{report.replay_cost} {cur}")
    metrics.add_row("Savings", f"{report.savings} {cur}")
    metrics.add_row("Divergences", str(len(report.divergences)))
    metrics.add_row("Match rate", f"{report.match_rate}%")
    metrics.add_row("Served / live", f"{report.served} / {report.live}")
    metrics.add_row(
        "Outcome",
        f"{report.original_status} -> {report.replay_status}"
        + ("" if report.same_outcome else " (differs)"),
    )
    console.print(metrics)
    table = Table(title="Comparison", title_justify="left")
    for col in ("action", "step", "original", "replay", "status"):
        table.add_column(col, overflow="fold")
    for row in report.rows:
        style = _STATUS_STYLE.get(row.status, "red")
        mark = "ok" if row.status == "match" else row.status
        table.add_row(
            escape(row.action),
            escape(f"{row.step_id or '-'}#{row.position}"),
            escape(row.original),
            escape(row.replay),
            f"[{style}]{escape(mark)}[/]",
        )
    console.print(table)
    for d in report.divergences:
        console.print(f"[red]{d.kind}[/]: {escape(d.message)}", soft_wrap=True)
        for c in d.changes[3:10]:  # the message shows the first three
            console.print(f"    {escape(c.describe())}", soft_wrap=True)
    console.print(
        f"replay run {escape(run_id)} {status}"
        + (f" ({escape(error)})" if error else "")
        + f", linked to {escape(report.original_run_id)} at {report.original_head[:16]}...",
        soft_wrap=True,
    )


def _bar(score: int, width: int = 40) -> str:
    filled = round(score * width / 100)
    return "#" * filled + "." * (width - filled)


def _print_determinism(console: Console, report: DeterminismReport) -> None:
    style = _BAND_STYLE.get(report.colour, "")
    console.print(
        f"Determinism of {escape(report.run_id)}: [{style}]{report.score}/100 "
        f"{escape('[' + _bar(report.score) + ']')} {report.band}[/]"
    )
    counts = ", ".join(f"{n} {s}" for s, n in report.counts().items() if n)
    console.print(f"{len(report.findings)} findings" + (f" ({counts})" if counts else ""))
    for f in report.findings:
        sev = _SEVERITY_STYLE.get(f.severity, "")
        where = (
            f"{f.path}:{f.line}"
            if f.path is not None
            else f"{f.action or '-'} seq {f.seq} {f.pointer or ''}".strip()
        )
        console.print(
            f"\n[{sev}]{f.severity.upper()}[/] {f.rule_id} {escape(f.rule.name)} "
            f"({f.rule.type}, confidence {f.confidence:.2f}) at {escape(where)}",
            soft_wrap=True,
        )
        console.print(f"  {escape(f.description)}", soft_wrap=True)
        console.print(f"  Recommendation: {escape(f.rule.recommendation)}", soft_wrap=True)
        console.print("  before: " + escape(f.rule.before).replace("\n", "\n          "))
        console.print("  after:  " + escape(f.rule.after).replace("\n", "\n          "))


def _print_diff(console: Console, d: RunDiff) -> None:
    head = Table(title="Runs", title_justify="left")
    for col in ("", "run", "workflow", "revision", "status", "cost", "duration", "actions"):
        head.add_column(col)
    for name, side in (("A", d.a), ("B", d.b)):
        head.add_row(
            name,
            escape(side.run_id),
            escape(side.workflow),
            escape(side.revision),
            side.status,
            f"{side.cost} {side.currency or ''}",
            f"{side.duration_ms} ms" if side.duration_ms is not None else "-",
            str(side.actions),
        )
    console.print(head)
    if not d.same_workflow:
        console.print("[yellow]the runs are of different workflows[/]")
    for c in d.workflow_changes:
        console.print(f"workflow {escape(c.describe())}", soft_wrap=True)
    delta = d.duration_delta_ms
    console.print(
        f"cost delta {d.cost_delta}, duration delta "
        f"{f'{delta:+d} ms' if delta is not None else '-'}; "
        + ", ".join(f"{n} {k}" for k, n in d.counts().items())
    )
    table = Table(title="Actions", title_justify="left")
    for col in ("step", "action", "status", "cost delta", "ms delta", "diff"):
        table.add_column(col, overflow="fold")
    for p in d.pairs:
        style = {"same": "green", "changed": "yellow"}.get(p.status, "red")
        diff = "; ".join(c.describe() for c in p.changes[:4])
        if len(p.changes) > 4:
            diff += f" (+{len(p.changes) - 4} more)"
        table.add_row(
            escape(f"{p.step_id or '-'}#{p.position}"),
            escape(p.label),
            f"[{style}]{p.status}[/]",
            str(p.cost_delta),
            f"{p.duration_delta_ms:+d}",
            escape(diff),
        )
    console.print(table)


def _print_artifact(console: Console, key: str, history: Any, diffs: list[ArtifactDiff]) -> None:
    table = Table(title=f"Artifact {escape(key)}", title_justify="left")
    for col in ("version", "state", "content hash", "decisions"):
        table.add_column(col, overflow="fold")
    for r in history:
        decided = ", ".join(
            f"{a.gate_id} {a.decision} by {a.reviewer} (seq {a.resolved_seq})" for a in r.decisions
        )
        table.add_row(str(r.version), r.state, escape(r.content_hash), escape(decided or "-"))
    console.print(table)
    for d in diffs:
        same = "same content" if d.same_content else "different content"
        console.print(f"v{d.a.version} -> v{d.b.version}: {same}")
        for c in d.metadata:
            console.print(f"  {escape(c.describe())}", soft_wrap=True)
        if d.content is not None:
            for c in d.content[:20]:
                console.print(f"  content {escape(c.describe())}", soft_wrap=True)
