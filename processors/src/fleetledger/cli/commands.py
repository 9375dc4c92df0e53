"""The ``fleetledger`` command line: thin commands over the SDK, the runtimes and the reports.

Every failure fleetledger expects (a bad URL, an unreachable broker, a missing store...)
prints one line and exits non-zero; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fleetledger.cli.common import BrokerOpt, Ctx, backend_of, embedded_of, settings_of
from fleetledger.cli.evidence import register as register_evidence
from fleetledger.kernel.config import Settings
from fleetledger.kernel.errors import FleetLedgerError, StoreError

if TYPE_CHECKING:
    from fleetledger.processors.pipeline import InterceptDoc, OutputReader, TotalsDoc
    from fleetledger.processors.runtimes.backend import EmbeddedBackend
    from fleetledger.processors.runtimes.embedded import ProcessStats

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="fleetledger: a hash-chained, append-only ledger of AI-agent runs.",
)
register_evidence(app)


_KAFKA = "Kafka connection (every command; FLEETLEDGER_KAFKA_* variables)"


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show tracebacks")] = False,
    kafka_security_protocol: Annotated[
        str | None,
        typer.Option(help="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", rich_help_panel=_KAFKA),
    ] = None,
    kafka_ssl_cafile: Annotated[
        Path | None,
        typer.Option(help="PEM bundle of the CAs that signed the brokers'", rich_help_panel=_KAFKA),
    ] = None,
    kafka_ssl_certfile: Annotated[
        Path | None, typer.Option(help="client certificate (PEM)", rich_help_panel=_KAFKA)
    ] = None,
    kafka_ssl_keyfile: Annotated[
        Path | None, typer.Option(help="client certificate's key (PEM)", rich_help_panel=_KAFKA)
    ] = None,
    kafka_ssl_key_password_file: Annotated[
        Path | None,
        typer.Option(help="file holding the client key's password", rich_help_panel=_KAFKA),
    ] = None,
    kafka_ssl_check_hostname: Annotated[
        bool | None,
        typer.Option(
            "--kafka-ssl-check-hostname/--no-kafka-ssl-check-hostname",
            help="check the broker certificate's host name [default: check]",
            rich_help_panel=_KAFKA,
        ),
    ] = None,
    kafka_sasl_mechanism: Annotated[
        str | None,
        typer.Option(
            help="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER", rich_help_panel=_KAFKA
        ),
    ] = None,
    kafka_sasl_username: Annotated[
        str | None, typer.Option(help="SASL user", rich_help_panel=_KAFKA)
    ] = None,
    kafka_sasl_password_file: Annotated[
        Path | None,
        typer.Option(
            help="file holding the SASL password (no flag takes the password itself)",
            rich_help_panel=_KAFKA,
        ),
    ] = None,
    kafka_sasl_oauth_token_provider: Annotated[
        str | None,
        typer.Option(
            help="OAUTHBEARER token provider, package.module:factory", rich_help_panel=_KAFKA
        ),
    ] = None,
) -> None:
    ctx.obj = Ctx(
        verbose,
        {
            "kafka_security_protocol": kafka_security_protocol,
            "kafka_ssl_cafile": kafka_ssl_cafile,
            "kafka_ssl_certfile": kafka_ssl_certfile,
            "kafka_ssl_keyfile": kafka_ssl_keyfile,
            "kafka_ssl_key_password_file": kafka_ssl_key_password_file,
            "kafka_ssl_check_hostname": kafka_ssl_check_hostname,
            "kafka_sasl_mechanism": kafka_sasl_mechanism,
            "kafka_sasl_username": kafka_sasl_username,
            "kafka_sasl_password_file": kafka_sasl_password_file,
            "kafka_sasl_oauth_token_provider": kafka_sasl_oauth_token_provider,
        },
    )


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


async def _simulate(settings: Settings, runs: int, seed: int, progress: Progress | None) -> Any:
    from fleetledger.producers import Recorder
    from fleetledger.producers.simulator import simulate

    task = progress.add_task("simulate", total=None) if progress else None
    async with Recorder.from_url(settings.broker, settings=settings) as rec:
        summary = await simulate(rec, runs=runs, seed=seed)
    if progress is not None and task is not None:
        progress.update(task, total=summary.events, completed=summary.events)
    return summary


def _process_embedded(store: EmbeddedBackend, progress: Progress | None) -> Any:
    with store.runtime() as runtime:
        task = progress.add_task("process", total=runtime.lag()) if progress else None

        def advance(stats: Any) -> None:
            if progress is not None and task is not None:
                progress.advance(task, stats.messages)

        return runtime.process_available(progress=advance)


# ------------------------------------------------------------------------ commands


@app.command()
def demo(
    ctx: typer.Context,
    runs: Annotated[int, typer.Option(min=1, help="runs to simulate")] = 300,
    seed: Annotated[int, typer.Option(help="simulator seed (same seed, same bundles)")] = 7,
    out: Annotated[Path, typer.Option(help="folder for <run_id>.bundle.json")] = Path("bundles"),
    broker: BrokerOpt = None,
    sign: Annotated[Path | None, typer.Option("--sign", help="Ed25519 key: signed bundles")] = None,
) -> None:
    """Simulate a fleet into the embedded store, process it, and report."""
    from fleetledger.cli.evidence import load_signing_key
    from fleetledger.processors.archive import write_evidence

    key = load_signing_key(sign) if sign is not None else None
    store = embedded_of(ctx, broker=broker)
    console: Console = ctx.obj.console
    started = time.perf_counter()
    with _progress(console) as progress:
        summary = asyncio.run(_simulate(store.settings, runs, seed, progress))
        stats = _process_embedded(store, progress)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(summary.run_ids)
    with store.reader() as reader:
        written = 0
        for bundle in reader.bundles():
            if bundle.run_id in wanted:
                write_evidence(out, bundle.data, key)
                written += 1
        totals = [t for t in reader.totals() if t["run_id"] in wanted]
        intercepts = [i for i in reader.intercepts() if i["run_id"] in wanted]
    _print_runs(console, totals, limit=25)
    _print_costs(console, totals)
    _print_intercepts(console, intercepts, limit=20)
    elapsed = time.perf_counter() - started
    console.print(
        f"{summary.runs} runs, {summary.events} events simulated; {stats.events} processed "
        f"({stats.duplicates} duplicates dropped); {written} bundles in {out}/; "
        f"{elapsed:.1f}s"
    )


@app.command("simulate")
def simulate_cmd(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    runs: Annotated[int, typer.Option(min=1)] = 300,
    seed: Annotated[int, typer.Option()] = 7,
) -> None:
    """Publish simulated fleet traffic to the broker (Kafka or the embedded log)."""
    settings = settings_of(ctx, broker=broker)
    settings.broker_url()
    with _progress(ctx.obj.console) as progress:
        summary = asyncio.run(_simulate(settings, runs, seed, progress))
    ctx.obj.console.print(
        f"published {summary.events} events of {summary.runs} runs to {settings.broker}"
    )


@app.command()
def worker(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    once: Annotated[bool, typer.Option(help="embedded: drain the log and exit")] = False,
    poll: Annotated[float, typer.Option(help="embedded: seconds between polls")] = 0.5,
    archive: Annotated[Path | None, typer.Option("--archive", help="compliance archive")] = None,
    sign: Annotated[Path | None, typer.Option("--sign", help="Ed25519 key for the archive")] = None,
) -> None:
    """Run the processors: the Faust worker on Kafka, or the embedded loop on SQLite."""
    from fleetledger.cli.evidence import archive_sink

    found = backend_of(ctx, broker=broker)
    settings = found.settings
    sink = archive_sink(archive or settings.compliance_archive, sign or settings.signing_key)

    def report(stats: ProcessStats) -> None:
        ctx.obj.err.print(
            f"processed {stats.messages} messages, {stats.events} events, "
            f"{stats.bundles} bundles, {stats.deadletters} dead letters"
        )

    try:
        found.run_worker(archive=sink, once=once, poll_s=poll, report=report)
    except KeyboardInterrupt:
        return


def _reader(ctx: typer.Context, broker: str | None) -> OutputReader:
    return backend_of(ctx, broker=broker).reader()


@app.command("config")
def config_cmd(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Print the settings in effect (flags, FLEETLEDGER_* variables, defaults); secrets masked."""
    settings = settings_of(ctx, broker=broker)
    values = settings.model_dump(mode="json")  # a SecretStr dumps as '**********'
    if as_json:
        print(json.dumps({f"FLEETLEDGER_{k.upper()}": v for k, v in values.items()}, indent=2))
        return
    table = Table(box=None, show_header=True, header_style="bold")
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    for name, value in values.items():
        shown = "" if value is None else str(value).lower() if isinstance(value, bool) else value
        table.add_row(f"FLEETLEDGER_{name.upper()}", escape(str(shown)))
    ctx.obj.console.print(table)


@app.command()
def runs(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    limit: Annotated[int, typer.Option(help="most runs to list")] = 50,
) -> None:
    """List runs with status, duration, events and cost."""
    with _reader(ctx, broker) as reader:
        _print_runs(ctx.obj.console, reader.totals(), limit=limit)


@app.command()
def show(ctx: typer.Context, run_id: str, broker: BrokerOpt = None) -> None:
    """Print a run's bundle (or its running totals if it has not finished)."""
    with _reader(ctx, broker) as reader:
        found = reader.bundle(run_id)
        if found is None:
            totals = [t for t in reader.totals() if t["run_id"] == run_id]
            if not totals:
                raise StoreError(f"no run {run_id!r} in {reader!r}; see `fleetledger runs`")
            ctx.obj.console.print_json(data=totals[0])
            return
        ctx.obj.console.print_json(found.data.decode())


@app.command()
def intercepts(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    limit: Annotated[int, typer.Option()] = 50,
) -> None:
    """Critical intercepts, newest first."""
    with _reader(ctx, broker) as reader:
        _print_intercepts(ctx.obj.console, reader.intercepts(), limit=limit)


@app.command()
def costs(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Exact cost totals by agent and by model."""
    from fleetledger.processors.reports import cost_report

    with _reader(ctx, broker) as reader:
        totals = reader.totals()
    if as_json:
        ctx.obj.console.print_json(data=cost_report(totals).to_json())
    else:
        _print_costs(ctx.obj.console, totals)


# ------------------------------------------------------------------------ rendering


def _fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms / 1000:.1f}s" if ms < 120_000 else f"{ms / 60_000:.1f}m"


def _print_runs(console: Console, totals: list[TotalsDoc], *, limit: int) -> None:
    table = Table(title=f"Runs ({len(totals)})", title_justify="left")
    for col in ("run", "agent", "status", "duration", "events", "cost", "cur"):
        table.add_column(
            col, justify="right" if col in ("events", "cost", "duration") else "left", no_wrap=True
        )
    style = {"failed": "red", "completed": "green", "running": "yellow"}
    for t in sorted(totals, key=lambda t: (t.get("started_at") or "", t["run_id"]))[:limit]:
        table.add_row(
            t["run_id"],
            t["agent_id"],
            f"[{style.get(t['status'], '')}]{t['status']}",
            _fmt_ms(t.get("duration_ms")),
            str(t["events"]),
            t["cost"],
            t.get("currency") or "",
        )
    if len(totals) > limit:
        table.caption = f"{len(totals) - limit} more not shown (--limit)"
    console.print(table)


def _print_costs(console: Console, totals: list[TotalsDoc]) -> None:
    from fleetledger.processors.reports import cost_report

    report = cost_report(totals).to_json()
    for title, rows in (
        ("Cost by agent", report["by_agent"]),
        ("Cost by model", report["by_model"]),
    ):
        table = Table(title=title, title_justify="left")
        for col in ("name", "runs", "calls", "input tokens", "output tokens", "cost"):
            table.add_column(col, justify="left" if col == "name" else "right")
        for r in rows:
            table.add_row(
                r["name"],
                str(r["runs"]),
                str(r["calls"]),
                f"{r['input_tokens']:,}",
                f"{r['output_tokens']:,}",
                f"{r['cost']} {r['currency']}",
            )
        console.print(table)
    console.print("Total: " + ", ".join(f"{a} {c}" for c, a in report["total"].items()))


def _print_intercepts(console: Console, items: list[InterceptDoc], *, limit: int) -> None:
    from fleetledger.processors.reports import intercepts_by_recency

    ordered = intercepts_by_recency(items)
    table = Table(title=f"Critical intercepts ({len(ordered)})", title_justify="left")
    for col in ("time", "run", "kind", "severity", "seq"):
        table.add_column(col, no_wrap=True)
    table.add_column("reason", overflow="fold")
    for i in ordered[:limit]:
        color = "red" if i["severity"] == "critical" else "yellow"
        table.add_row(
            i["ts"], i["run_id"], i["kind"], f"[{color}]{i['severity']}", str(i["seq"]), i["reason"]
        )
    if len(ordered) > limit:
        table.caption = f"{len(ordered) - limit} more not shown"
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: one line and a non-zero exit on failure."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in args or "-v" in args
    if not verbose:
        # Client libraries log connection failures themselves; the CLI reports them once.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        # Without standalone mode click returns a typer.Exit's code instead of raising it.
        result = app(args=args, standalone_mode=False, prog_name="fleetledger")
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except FleetLedgerError as exc:
        if verbose:
            traceback.print_exc()
        print(f"fleetledger: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # an unexpected failure still gets one line, not a traceback
        if verbose:
            traceback.print_exc()
        print(
            f"fleetledger: internal error: {type(exc).__name__}: {exc} (rerun with --verbose)",
            file=sys.stderr,
        )
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
