"""The ``fleetledger`` command line: thin commands over the SDK, the runtimes and the read
model.  Commands parse options, call the library, and render.

Every failure fleetledger expects (a bad URL, an unreachable broker, a missing store...)
prints one line and exits 2; a usage error prints the usage message and exits 2; an
interrupt exits 130.  ``--verbose`` (anywhere on the line) adds the traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import traceback
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.exceptions
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fleetledger.cli.common import BrokerOpt, Ctx, backend_of, embedded_of, settings_of
from fleetledger.cli.evidence import register as register_evidence
from fleetledger.kernel.config import Settings
from fleetledger.kernel.errors import ConfigError, FleetLedgerError, StoreError

if TYPE_CHECKING:
    from fleetledger.processors.readmodel import RunFilter
    from fleetledger.processors.readstore import ReadStore
    from fleetledger.processors.runtimes.embedded import ProcessStats
    from fleetledger.producers.simulator import SimulationSummary

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="fleetledger: a hash-chained, append-only ledger of AI-agent runs.",
)
register_evidence(app)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--broker",
        "-b",
        help="the embedded store: sqlite:///path.db (relative; sqlite:////abs/path.db is "
        "absolute) [env FLEETLEDGER_BROKER; default sqlite:///fleetledger.db]",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
LimitOpt = Annotated[int, typer.Option(min=1, max=1000, help="most rows to show")]

#: What an interrupted command says (exit 130).
INTERRUPTED = (
    "fleetledger: interrupted; everything committed before the signal is kept "
    "(an interrupted batch is processed again on the next start)"
)

#: Flags accepted anywhere on the command line (moved before the subcommand).
GLOBAL_FLAGS = ("--verbose", "-v")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"fleetledger {version('fleetledger')}")
        raise typer.Exit()


_KAFKA = "Kafka connection (every command; FLEETLEDGER_KAFKA_* variables)"


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show tracebacks")] = False,
    _show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
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


def _read_model(ctx: typer.Context, broker: str | None) -> ReadStore:
    return backend_of(ctx, broker=broker).read_model()


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


async def _simulate(
    settings: Settings, runs: int, seed: int, progress: Progress | None
) -> SimulationSummary:
    from fleetledger.producers import Recorder
    from fleetledger.producers.simulator import simulate

    task = progress.add_task("simulate (events)", total=None) if progress else None
    async with Recorder.from_url(settings.broker, settings=settings) as rec:
        summary = await simulate(rec, runs=runs, seed=seed)
    if progress is not None and task is not None:
        progress.update(task, total=summary.events, completed=summary.events)
    return summary


def _parse_filter(
    *,
    status: list[str] | None,
    agent: str | None,
    tenant: str | None,
    min_cost: str | None,
    since: str | None,
    until: str | None,
) -> RunFilter:
    from fleetledger.processors.readmodel import RunFilter, parse_when

    cost = None
    if min_cost is not None:
        try:
            cost = Decimal(min_cost)
        except InvalidOperation:
            raise typer.BadParameter(
                f"found {min_cost!r}, expected a decimal amount such as 1.50",
                param_hint="--min-cost",
            ) from None
        if not cost.is_finite():
            raise typer.BadParameter(f"found {min_cost!r}, expected a finite amount")
    now = datetime.now(UTC)
    try:
        return RunFilter(
            status=tuple(status or ()),
            agent=agent,
            tenant=tenant,
            min_cost=cost,
            since=None if since is None else parse_when(since, now),
            until=None if until is None else parse_when(until, now),
        )
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


StatusOpt = Annotated[
    list[str] | None,
    typer.Option("--status", help="open | running | completed | failed (repeatable)"),
]
AgentOpt = Annotated[str | None, typer.Option("--agent", help="agent id")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="tenant")]
MinCostOpt = Annotated[str | None, typer.Option("--min-cost", help="runs costing at least this")]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="started at or after: 24h, 7d, or an ISO time (UTC)")
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="started before: 24h, 7d, or an ISO time (UTC)")
]


# ------------------------------------------------------------------------ commands


@app.command()
def demo(
    ctx: typer.Context,
    runs: Annotated[int, typer.Option(min=1, help="runs to simulate")] = 300,
    seed: Annotated[int, typer.Option(help="simulator seed (same seed, same bundles)")] = 7,
    out: Annotated[Path, typer.Option(help="folder for <run_id>.bundle.json")] = Path("bundles"),
    broker: StoreOpt = None,
    sign: Annotated[Path | None, typer.Option("--sign", help="Ed25519 key: signed bundles")] = None,
) -> None:
    """Simulate a fleet into the embedded store, process it, and report.

    A store that already holds events is not simulated into again: the demo processes
    and reports what it holds (`fleetledger simulate` adds traffic to a store).
    """
    from fleetledger.cli import render
    from fleetledger.cli.evidence import load_signing_key
    from fleetledger.kernel.sqlitelog import SqliteLog
    from fleetledger.processors.archive import write_evidence
    from fleetledger.processors.readmodel import InterceptQuery, RunFilter, RunQuery

    key = load_signing_key(sign) if sign is not None else None
    found = backend_of(ctx, broker=broker)
    if found.kind != "sqlite":
        raise typer.BadParameter(
            f"found {found.describe()}; the demo runs on the embedded store "
            "(sqlite:///path.db). With Kafka use `fleetledger simulate`, `fleetledger worker` "
            "and `fleetledger projector`",
            param_hint="--broker",
        )
    store = embedded_of(ctx, broker=broker)
    path = store.path
    console: Console = ctx.obj.console
    started = time.perf_counter()
    held = 0
    if path.exists():
        log = SqliteLog.open(path)
        try:
            held = log.end_offset()
        finally:
            log.close()
    with _progress(console) as progress:
        summary = None if held else asyncio.run(_simulate(store.settings, runs, seed, progress))
        with store.runtime() as runtime:
            task = progress.add_task("process (events)", total=summary.events if summary else None)

            def advance(stats: ProcessStats) -> None:
                progress.advance(task, stats.events)

            stats = runtime.process_available(progress=advance)
            progress.update(task, total=progress.tasks[task].completed)
    with store.read_model() as reads:
        written = 0
        cursor: str | None = None
        finished = RunFilter(status=("completed", "failed"))
        while True:
            page = reads.runs(RunQuery(finished, limit=1000, after=cursor))
            for run in page.runs:
                data = reads.bundle(run.run_id)
                if data is not None:
                    write_evidence(out, data, key)
                    written += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        everything = RunFilter()
        listing = reads.runs(RunQuery(everything, limit=25))
        render.runs_table(
            console, listing.runs, total=reads.count(everything), next_cursor=listing.next_cursor
        )
        render.costs_tables(console, reads.costs(everything))
        top = reads.intercepts(InterceptQuery(limit=20))
        render.intercepts_table(
            console, top.intercepts, total=top.total, next_cursor=top.next_cursor
        )
    elapsed = time.perf_counter() - started
    if summary is not None:
        what = f"{summary.runs} runs, {summary.events} events simulated"
    else:
        what = (
            f"{path} already held {held} messages, so nothing was simulated "
            "(`fleetledger simulate` adds more; another --broker starts afresh)"
        )
    console.print(
        f"{what}; {stats.events} events processed ({stats.duplicates} duplicates dropped) "
        f"from {stats.messages} messages; {written} bundles in {out}/; {elapsed:.1f}s"
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
    """Run the processors: the Faust worker on Kafka, or the embedded loop on SQLite.

    The embedded loop also keeps the read model (in the store, or FLEETLEDGER_READ_DB)
    and logs throughput, lag and intercepts every FLEETLEDGER_REPORT_INTERVAL_S.
    """
    from fleetledger.cli.evidence import archive_sink

    found = backend_of(ctx, broker=broker)
    settings = found.settings
    sink = archive_sink(archive or settings.compliance_archive, sign or settings.signing_key)
    found.run_worker(archive=sink, once=once, poll_s=poll, report=lambda r: _log_line(r.line()))


@app.command()
def projector(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    once: Annotated[
        bool, typer.Option(help="catch up with the topics' current ends, then exit")
    ] = False,
) -> None:
    """Kafka mode: project the worker's output topics into the read model (own consumer
    group FLEETLEDGER_PROJECTOR_GROUP_ID; run several to share the partitions)."""
    from fleetledger.processors.runtimes.projector import run_projector

    settings = settings_of(ctx, broker=broker)
    if settings.broker_url().kind != "kafka":
        raise typer.BadParameter(
            f"found {settings.broker!r}; the projector reads Kafka topics (kafka://host:port). "
            "The embedded worker keeps the read model itself",
            param_hint="--broker",
        )
    run_projector(settings, once=once, report=_log_line)


@app.command("console")
def console_cmd(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    host: Annotated[
        str | None,
        typer.Option(
            help="address to bind (env FLEETLEDGER_CONSOLE_HOST, default 127.0.0.1); any "
            "other than loopback needs FLEETLEDGER_CONSOLE_TOKEN"
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="port (env FLEETLEDGER_CONSOLE_PORT, default 8760)"),
    ] = None,
    process: Annotated[
        bool,
        typer.Option(
            "--process/--no-process",
            help="embedded mode: also process new events in this process (live updates)",
        ),
    ] = True,
) -> None:
    """The runs console in a browser: registry, intercepts, a run's actions, live updates,
    exports and a JSON API (read-only)."""
    from fleetledger.console.server import console

    settings = settings_of(ctx, broker=broker)
    err: Console = ctx.obj.err
    with console(settings, host=host, port=port, process=process) as server:
        bind = host or settings.console_host
        shown = f"[{bind}]" if ":" in bind else bind
        where = settings.console_port if port is None else port
        err.print(
            f"fleetledger console on http://{shown}:{where}/ reading {server.app.config.source}"
            + (" (token required)" if settings.console_token else "")
            + "; Ctrl-C stops it"
        )
        server.serve()


@app.command()
def prune(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    days: Annotated[
        int | None, typer.Option(min=1, help="age in days [env FLEETLEDGER_RETENTION_DAYS]")
    ] = None,
    archive: Annotated[Path | None, typer.Option("--archive", help="compliance archive")] = None,
) -> None:
    """Retention now: drop runs older than --days from the read model, each only once its
    bundle is in the compliance archive (`show RUN` still finds it there)."""
    from fleetledger.processors.readstore import apply_retention

    found = backend_of(ctx, broker=broker)
    settings = found.settings
    age = days or settings.retention_days
    if age is None:
        raise typer.BadParameter(
            "expected --days N or FLEETLEDGER_RETENTION_DAYS", param_hint="--days"
        )
    with found.read_model(create=True) as store:
        moved = apply_retention(
            store, archive or settings.compliance_archive, age, datetime.now(UTC)
        )
    ctx.obj.console.print(f"moved {moved} runs older than {age} days to the compliance archive")


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
    status: StatusOpt = None,
    agent: AgentOpt = None,
    tenant: TenantOpt = None,
    min_cost: MinCostOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    sort: Annotated[
        str, typer.Option(help="recent (newest first) | cost (highest first)")
    ] = "recent",
    limit: LimitOpt = 50,
    cursor: Annotated[str | None, typer.Option(help="the next page (a page's next_cursor)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The run registry, newest first: status, duration, actions, success, cost, intercepts."""
    from fleetledger.cli import render
    from fleetledger.processors.readmodel import SORTS, RunQuery

    f = _parse_filter(
        status=status, agent=agent, tenant=tenant, min_cost=min_cost, since=since, until=until
    )
    if sort not in SORTS:
        raise typer.BadParameter(
            f"found {sort!r}, expected one of {', '.join(SORTS)}", param_hint="--sort"
        )
    query = RunQuery(f, sort, limit, cursor)  # type: ignore[arg-type]
    with _read_model(ctx, broker) as store:
        page = store.runs(query)
        if as_json:
            _print_json(ctx, page.to_json())
            return
        render.runs_table(
            ctx.obj.console, page.runs, total=store.count(f), next_cursor=page.next_cursor
        )
        render.summary_line(ctx.obj.console, store.summary(f))


@app.command()
def show(
    ctx: typer.Context,
    run_id: str,
    broker: BrokerOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="the bundle exactly as `export` writes it (a run still going: its rows)",
        ),
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="most events to list")] = 500,
    archive: Annotated[Path | None, typer.Option("--archive", help="compliance archive")] = None,
) -> None:
    """A run: header, its actions (outcome, cost, duration), totals and intercepts."""
    from fleetledger.cli import render
    from fleetledger.processors.readstore import run_view

    settings = settings_of(ctx, broker=broker)
    with _read_model(ctx, broker) as store:
        view = run_view(store, run_id, archive=archive or settings.compliance_archive)
        label = store.label
    if view is None:
        raise StoreError(
            f"found no run {run_id!r} in the read model at {label} or the compliance archive; "
            "see `fleetledger runs`"
        )
    if as_json:
        if view.bundle is not None:
            from fleetledger.processors.export import export_bundle

            sys.stdout.buffer.write(export_bundle(view.bundle, "json", None).data)
            sys.stdout.buffer.flush()
        else:
            _print_json(
                ctx,
                {
                    "run": view.run.to_json(),
                    "actions": [a.to_json() for a in view.actions],
                    "intercepts": [i.to_json() for i in view.intercepts],
                },
            )
        return
    render.run_view(ctx.obj.console, view, limit=limit)


@app.command()
def intercepts(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    run: Annotated[str | None, typer.Option("--run", help="one run's intercepts")] = None,
    agent: AgentOpt = None,
    tenant: TenantOpt = None,
    severity: Annotated[str | None, typer.Option(help="critical | warning")] = None,
    limit: LimitOpt = 50,
    cursor: Annotated[str | None, typer.Option(help="the next page (a page's next_cursor)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Critical intercepts, newest first."""
    from fleetledger.cli import render
    from fleetledger.processors.readmodel import InterceptQuery

    if severity not in (None, "critical", "warning"):
        raise typer.BadParameter(
            f"found {severity!r}, expected critical or warning", param_hint="--severity"
        )
    query = InterceptQuery(run, tenant, agent, severity, limit, cursor)
    with _read_model(ctx, broker) as store:
        page = store.intercepts(query)
    if as_json:
        _print_json(ctx, page.to_json())
        return
    render.intercepts_table(
        ctx.obj.console, page.intercepts, total=page.total, next_cursor=page.next_cursor
    )


@app.command()
def costs(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    status: StatusOpt = None,
    agent: AgentOpt = None,
    tenant: TenantOpt = None,
    min_cost: MinCostOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Exact cost totals by agent and by model (the runs' filters apply)."""
    from fleetledger.cli import render

    f = _parse_filter(
        status=status, agent=agent, tenant=tenant, min_cost=min_cost, since=since, until=until
    )
    with _read_model(ctx, broker) as store:
        report = store.costs(f)
    if as_json:
        _print_json(ctx, report.to_json())
    else:
        render.costs_tables(ctx.obj.console, report)


def _log_line(line: str) -> None:
    """A progress line on stderr, unwrapped (log collectors read one line per report)."""
    print(line, file=sys.stderr, flush=True)


def _print_json(ctx: typer.Context, data: Any) -> None:
    import orjson

    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.buffer.flush()


def hoist_global_flags(args: list[str]) -> list[str]:
    """``--verbose`` / ``-v`` anywhere (before a ``--``) moved before the subcommand."""
    if "--" in args:
        cut = args.index("--")
        head, rest = args[:cut], args[cut:]
    else:
        head, rest = args, []
    flags = [a for a in head if a in GLOBAL_FLAGS]
    return [*dict.fromkeys(flags), *(a for a in head if a not in GLOBAL_FLAGS), *rest]


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: one line and a non-zero exit on failure."""
    args = hoist_global_flags(sys.argv[1:] if argv is None else list(argv))
    verbose = any(a in GLOBAL_FLAGS for a in args)
    if not verbose:
        # Client libraries log connection failures themselves; the CLI reports them once.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        # Without standalone mode typer returns an Exit's code instead of raising it.
        result = app(args=args, standalone_mode=False, prog_name="fleetledger")
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        # click turns an interrupt into Abort; the commands ask no questions, so an Abort
        # here is an interrupt (Ctrl-C, SIGINT).
        if verbose:
            traceback.print_exc()
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except typer.exceptions.TyperException as exc:
        # Usage errors (unknown option, bad value, missing argument): the usage and exit 2.
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"Error: {exc.format_message()}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2) or 2)
    except FleetLedgerError as exc:
        if verbose:
            traceback.print_exc()
        print(f"fleetledger: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an unexpected failure still gets one line, not a traceback
        if verbose:
            traceback.print_exc()
        print(
            f"fleetledger: internal error: {type(exc).__name__}: {exc} (rerun with --verbose)",
            file=sys.stderr,
        )
        return 1
    if result == 130:
        # typer turns an interrupt inside a command into a returned 130 (no command of
        # fleetledger returns a code of its own)
        print(INTERRUPTED, file=sys.stderr)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
