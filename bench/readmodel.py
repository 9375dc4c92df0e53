"""``python -m bench.readmodel``: the run registry on 1,000,000 runs, SQLite and PostgreSQL.

Rows are generated directly (a fleet of tenants and agents, four statuses, costs with a
long tail, starts over 120 days) and written with each engine's bulk path; then every
combination of the registry's filters (status, agent, tenant, min cost, time window) in
both sort orders is queried as the console and ``fleetledger runs`` do: a first page of
50 and the page after it (keyset cursor).  Each round runs every query once; the figures
are the median over rounds of each round's p50 and p95 (with min-max), next to a
primary-key lookup measured in the same rounds as the baseline.  The summary figures and
the cost report over the same filters are timed too (no target).

The target (issue 14): p95 < 100 ms for the registry query on both engines.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fleetledger.kernel.config import parse_read_db_url  # noqa: E402
from fleetledger.processors.readmodel import RunFilter, RunQuery, Sort  # noqa: E402
from fleetledger.processors.readstore import ReadStore, schema  # noqa: E402

NOW = datetime(2026, 12, 1, tzinfo=UTC)
STATUSES = (("completed", 0.85), ("failed", 0.08), ("running", 0.06), ("open", 0.01))
SORTS: tuple[Sort, ...] = ("recent", "cost")


@dataclass(frozen=True)
class Fleet:
    runs: int
    tenants: list[str]
    agents: list[tuple[str, str]]  # (tenant, agent)
    cost_p90: Decimal
    cost_p999: Decimal


def generate(runs: int, seed: int = 14) -> tuple[Fleet, Iterator[tuple[Any, ...]]]:
    """The fleet and an iterator over run rows (python values, in column order)."""
    rng = random.Random(seed)
    tenants = [f"tenant-{i:02d}" for i in range(20)]
    agents = [
        (tenants[min(int(rng.paretovariate(1.2)) - 1, 19)], f"agent-{i:04d}") for i in range(500)
    ]
    weights = [1 / (i + 1) ** 0.8 for i in range(len(agents))]
    sample = sorted(Decimal(str(round(rng.lognormvariate(-3, 1.2), 6))) for _ in range(20_000))
    fleet = Fleet(
        runs=runs,
        tenants=tenants,
        agents=agents,
        cost_p90=sample[int(len(sample) * 0.9)],
        cost_p999=sample[int(len(sample) * 0.999)],
    )
    span_s = 120 * 86400

    def rows() -> Iterator[tuple[Any, ...]]:
        picks = rng.choices(range(len(agents)), weights=weights, k=runs)
        for i, a in enumerate(picks):
            tenant, agent = agents[a]
            r = rng.random()
            acc = 0.0
            status = "completed"
            for name, p in STATUSES:
                acc += p
                if r < acc:
                    status = name
                    break
            started = NOW - timedelta(seconds=rng.random() * span_s)
            duration = int(rng.lognormvariate(11, 1))
            ended = (
                started + timedelta(milliseconds=duration)
                if status in ("completed", "failed")
                else None
            )
            actions = rng.randint(1, 40)
            cost = Decimal(str(round(rng.lognormvariate(-3, 1.2), 6)))
            yield (
                f"run-{i:08d}-{rng.getrandbits(32):08x}",
                tenant,
                agent,
                None,
                status,
                started,
                ended,
                duration if ended else None,
                actions,
                actions - (rng.random() < 0.1),
                actions * 2 + 2,
                actions * 2 + 1,
                cost,
                "USD",
                int(status == "failed") + (rng.random() < 0.02),
                f"{rng.getrandbits(256):064x}" if ended else None,
                i + 1,
            )

    return fleet, rows()


COLUMNS = (
    "run_id, tenant, agent_id, project, status, started_at, ended_at, duration_ms, actions, "
    "actions_ok, events, through_seq, cost, currency, intercepts, digest, position"
)


def load_sqlite(path: Path, rows: Iterator[tuple[Any, ...]]) -> None:
    import sqlite3

    def fmt(ts: datetime | None) -> str | None:
        return None if ts is None else ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    marks = ", ".join("?" * 17)
    with conn:
        for chunk in _chunks(rows, 20_000):
            conn.executemany(
                f"INSERT INTO rm_runs ({COLUMNS}) VALUES ({marks})",
                [
                    (*r[:5], fmt(r[5]), fmt(r[6]), *r[7:12], int(r[12].scaleb(10)), *r[13:])
                    for r in chunk
                ],
            )
    conn.close()


def load_postgres(url: str, rows: Iterator[tuple[Any, ...]]) -> None:
    import psycopg

    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY rm_runs ({COLUMNS}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        conn.commit()


def _chunks(it: Iterator[Any], n: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(it, n)):
        yield chunk


def filters(fleet: Fleet, rng: random.Random) -> list[tuple[str, RunFilter]]:
    """Every combination of the registry's filters, with realistic values."""
    tenant = fleet.tenants[0]
    agent = next(a for t, a in fleet.agents[40:] if t == tenant)
    out = []
    for status, by_agent, by_tenant, min_cost, window in itertools.product(
        ((), ("failed",), ("running",)),
        (False, True),
        (False, True),
        (None, fleet.cost_p90, fleet.cost_p999),
        (None, 1, 7, 30),
    ):
        f = RunFilter(
            status=status,
            agent=agent if by_agent else None,
            tenant=tenant if by_tenant else None,
            min_cost=min_cost,
            since=None if window is None else NOW - timedelta(days=window),
        )
        name = ",".join(
            x
            for x in (
                f"status={status[0]}" if status else "",
                "agent" if by_agent else "",
                "tenant" if by_tenant else "",
                "min_cost=p90"
                if min_cost == fleet.cost_p90
                else "min_cost=p99.9"
                if min_cost
                else "",
                f"{window}d" if window else "",
            )
            if x
        )
        out.append((name or "no filter", f))
    return out


@dataclass
class EngineResult:
    engine: str
    runs: int
    load_s: float
    queries: int
    rounds: list[dict[str, float]] = field(default_factory=list)
    slowest: list[tuple[str, float]] = field(default_factory=list)
    summary_ms: list[float] = field(default_factory=list)
    costs_ms: list[float] = field(default_factory=list)


def _ms(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def measure(
    engine: str, store: ReadStore, fleet: Fleet, rounds: int, load_s: float
) -> EngineResult:
    rng = random.Random(1)
    combos = filters(fleet, rng)
    some = store.runs(RunQuery(limit=1)).runs[0].run_id
    result = EngineResult(engine, fleet.runs, load_s, len(combos) * len(SORTS) * 2)
    worst: dict[str, list[float]] = {}
    # warm the caches once (the first query after a load reads the indexes from disk)
    for _name, f in combos[:8]:
        store.runs(RunQuery(f, "recent", 50))
    for _ in range(rounds):
        times: list[float] = []
        for name, f in combos:
            for sort in SORTS:
                started = time.perf_counter()
                first = store.runs(RunQuery(f, sort, 50))
                t = (time.perf_counter() - started) * 1000
                times.append(t)
                worst.setdefault(f"{name} / {sort} / page 1", []).append(t)
                cursor = first.next_cursor
                if cursor is not None:
                    t = _ms(partial(store.runs, RunQuery(f, sort, 50, cursor)))
                    times.append(t)
                    worst.setdefault(f"{name} / {sort} / page 2", []).append(t)
        pk = [_ms(partial(store.run, some)) for _ in range(50)]
        result.rounds.append(
            {
                "p50": _pct(times, 0.50),
                "p95": _pct(times, 0.95),
                "max": max(times),
                "pk_lookup": statistics.median(pk),
            }
        )
    for _name, f in combos[:: max(1, len(combos) // 12)]:
        result.summary_ms.append(_ms(partial(store.summary, f)))
        result.costs_ms.append(_ms(partial(store.costs, f)))
    result.slowest = sorted(
        ((k, statistics.median(v)) for k, v in worst.items()), key=lambda kv: -kv[1]
    )[:5]
    return result


@contextmanager
def engine_store(
    engine: str, workdir: Path
) -> Iterator[tuple[ReadStore, Callable[[Iterator[tuple[Any, ...]]], None]]]:
    if engine == "sqlite":
        path = workdir / "registry.db"
        store = ReadStore.open(parse_read_db_url(f"sqlite:///{path}"), create=True)
        try:
            yield store, lambda rows: load_sqlite(path, rows)
        finally:
            store.close()
        return
    from tests.postgres_server import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        url = server.create_database("registry")
        store = ReadStore.open(parse_read_db_url(url), create=True)
        try:
            yield store, lambda rows: load_postgres(url, rows)
        finally:
            store.close()
    finally:
        server.cleanup()


def run_engine(engine: str, runs: int, rounds: int) -> EngineResult:
    with (
        tempfile.TemporaryDirectory(prefix="fleetledger-bench-") as d,
        engine_store(engine, Path(d)) as (store, load),
    ):
        fleet, rows = generate(runs)
        t = time.perf_counter()
        # the bulk path: indexes dropped, rows loaded, indexes built once
        indexes = sorted(schema.runs.indexes, key=lambda ix: str(ix.name))
        with store._engine.begin() as conn:
            for ix in indexes:
                ix.drop(conn)
        load(rows)
        with store._engine.begin() as conn:
            for ix in indexes:
                ix.create(conn)
        store.optimize()
        load_s = time.perf_counter() - t
        assert store.count(RunFilter()) == runs
        print(f"{engine}: {runs:,} runs loaded in {load_s:.1f}s", file=sys.stderr)
        return measure(engine, store, fleet, rounds, load_s)


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def report(results: list[EngineResult], command: str) -> tuple[dict[str, Any], str]:
    data: dict[str, Any] = {"command": command, "target_p95_ms": 100, "engines": {}}
    lines = [
        "# Read model: the run registry",
        "",
        f"`{command}` (generated rows; every filter combination x both sorts x pages 1-2; "
        "figures are medians over rounds, with min-max).",
        "",
        "| engine | runs | queries/round | rounds | p50 ms | p95 ms | max ms | pk lookup ms "
        "| p95 / pk | summary ms | cost report ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p50 = _summary([x["p50"] for x in r.rounds])
        p95 = _summary([x["p95"] for x in r.rounds])
        mx = _summary([x["max"] for x in r.rounds])
        pk = _summary([x["pk_lookup"] for x in r.rounds])
        ratio = _summary([x["p95"] / x["pk_lookup"] for x in r.rounds])
        data["engines"][r.engine] = {
            "runs": r.runs,
            "load_s": r.load_s,
            "queries_per_round": r.queries,
            "rounds": len(r.rounds),
            "p50_ms": p50,
            "p95_ms": p95,
            "max_ms": mx,
            "pk_lookup_ms": pk,
            "p95_over_pk": ratio,
            "summary_ms": _summary(r.summary_ms),
            "costs_ms": _summary(r.costs_ms),
            "slowest": r.slowest,
            "meets_target": p95["median"] < 100,
        }

        def f(s: dict[str, float]) -> str:
            return f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})"

        lines.append(
            f"| {r.engine} | {r.runs:,} | {r.queries} | {len(r.rounds)} | {f(p50)} | {f(p95)} | "
            f"{f(mx)} | {f(pk)} | {ratio['median']:.0f}x | "
            f"{statistics.median(r.summary_ms):.0f} | {statistics.median(r.costs_ms):.0f} |"
        )
    lines += ["", "Slowest queries (median ms):", ""]
    for r in results:
        for name, ms in r.slowest:
            lines.append(f"- {r.engine}: {name}: {ms:.1f}")
    return data, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readmodel", description=__doc__)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    command = (
        "python -m bench.readmodel"
        + (f" --runs {args.runs}" if args.runs != 1_000_000 else "")
        + (f" --rounds {args.rounds}" if args.rounds != 5 else "")
    )
    results = [run_engine(e, args.runs, args.rounds) for e in args.engines.split(",")]
    data, table = report(results, command)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "readmodel-results.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "readmodel-results.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
