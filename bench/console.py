# ruff: noqa: E501  (the results table is written line by line)
"""``python -m bench.console``: the runs console's figures.

1. **Live latency**: SDK call -> the event visible on the open run page, in a real headless
   Chromium.  The page's own MutationObserver stamps the moment a new action row enters the
   DOM (``Date.now()``, the machine's clock, like the SDK side's ``time.time()`` before the
   call), so browser rendering is included.  Events are recorded one at a time, paced.
   *Embedded*: ``fleetledger console`` as a user runs it (its own process, the embedded
   worker inside it); the SDK records from the benchmark's process.  *Kafka*: the SDK publishes to the test broker; ``fleetledger
   worker`` (Faust) and ``fleetledger projector`` run as processes; the console reads the
   projector's read model.  Baseline, same run and events: the moment the action is in the
   read model (polled every 5 ms), so the ratio is what the console adds.
2. **Registry page load at N runs** (1,000,000 by default): rows generated straight into a
   SQLite read model (no simulator), the console serving it; wall time of ``GET /`` (the
   whole page: list, summary figures, intercepts lane) for several filter combinations, and
   the browser's navigation to its ``load`` event.  Baseline: the same read-model calls
   made directly (page, summary, lane), so the ratio is the HTTP + rendering overhead.

Medians and p95 over repetitions; results in ``bench/console-results.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from .common import REPO, Proc, bench_settings, broker, log, unique_prefix, worker_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OBSERVER = """() => {
  window.__seen = {};
  const note = () => {
    for (const li of document.querySelectorAll('#actions li.action')) {
      const s = li.dataset.seq;
      if (!(s in window.__seen)) window.__seen[s] = Date.now();
    }
  };
  note();
  new MutationObserver(note).observe(document.body, {childList: true, subtree: true});
}"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p95": pct(values, 0.95),
        "max": max(values),
        "min": min(values),
    }


# --------------------------------------------------------------------------- live latency


def _workflow() -> Any:
    from fleetledger.schemas import WorkflowSnapshot, WorkflowStep

    return WorkflowSnapshot(
        name="bench-live",
        revision="1",
        steps=[WorkflowStep(id="work", name="Work", kind="llm")],
        edges=[],
    )


def _measure_live(
    url: str, settings: Any, reads: Any, events: int, pace_s: float
) -> dict[str, Any]:
    """Record ``events`` model calls into a live run while its page is open."""
    from playwright.sync_api import sync_playwright

    from fleetledger.producers import SyncRecorder

    page_ms: list[float] = []
    model_ms: list[float] = []
    with SyncRecorder.from_url(settings.broker, settings=settings) as rec:
        run = rec.start_run(agent_id="bench-live", tenant="bench", workflow=_workflow())
        rec.flush()
        deadline = time.monotonic() + 60
        while reads.run(run.run_id) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the live run never reached the read model")
            time.sleep(0.05)
        done: dict[str, Any] = {}

        def browse() -> None:
            with sync_playwright() as p:
                b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = b.new_page()
                page.goto(f"{url}/runs/{run.run_id}")
                page.wait_for_selector("#live.on", timeout=20_000)
                page.evaluate(OBSERVER)
                done["ready"] = True
                while not done.get("stop"):
                    page.wait_for_timeout(100)
                done["seen"] = page.evaluate("() => window.__seen")
                b.close()

        t = threading.Thread(target=browse)
        t.start()
        while not done.get("ready"):
            if not t.is_alive():
                raise RuntimeError("the browser did not open the run page")
            time.sleep(0.05)
        sent: dict[int, float] = {}
        step = run.step("work")
        step.__enter__()
        for i in range(events):
            seq = run.next_seq
            sent[seq] = time.time() * 1000
            run.model_io(
                provider="openai", model="gpt-4.1", input_tokens=10, output_tokens=5,
                duration_ms=9, inputs={"i": i}, outputs={"reply": f"answer {i}"},
            )  # fmt: skip
            rec.flush()
            while not reads.actions(run.run_id, after_seq=seq - 1, limit=1):
                time.sleep(0.005)
            model_ms.append(time.time() * 1000 - sent[seq])
            time.sleep(pace_s * (0.5 + random.random()))
        time.sleep(1.5)
        step.__exit__(None, None, None)
        run.complete()
        rec.flush()
        done["stop"] = True
        t.join(60)
    seen = {int(k): float(v) for k, v in done.get("seen", {}).items()}
    missing = [s for s in sent if s not in seen]
    if missing:
        raise RuntimeError(f"events never shown on the page: seqs {missing}")
    page_ms = [seen[s] - sent[s] for s in sorted(sent)]
    return {"page_ms": stats(page_ms), "read_model_ms": stats(model_ms)}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _console_proc(env: dict[str, str], broker_url: str) -> tuple[Proc, str]:
    """``fleetledger console`` as a process of its own (as a user runs it)."""
    from .common import console_script

    port = _free_port()
    proc = Proc(
        [console_script(), "console", "--broker", broker_url, "--port", str(port)], env, "console"
    ).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        proc.check()
        try:
            if httpx.get(url + "/api/summary", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the console did not answer: {proc.log_tail()}")
        time.sleep(0.2)


def live_embedded(events: int, pace_s: float) -> dict[str, Any]:
    from fleetledger.kernel.config import load_settings
    from fleetledger.processors.readstore import ReadStore

    with tempfile.TemporaryDirectory() as d:
        broker_url = f"sqlite:///{Path(d) / 'live.db'}"
        settings = load_settings(broker=broker_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLEDGER_")}
        proc, url = _console_proc(env, broker_url)
        try:
            reads = ReadStore.open(settings.read_db_url(), create=False)
            try:
                return _measure_live(url, settings, reads, events, pace_s)
            finally:
                reads.close()
        finally:
            proc.cleanup()


def live_kafka(events: int, pace_s: float) -> dict[str, Any]:
    from fleetledger.kernel.config import load_settings
    from fleetledger.processors.readstore import ReadStore

    from .common import console_script, create_topics

    with broker() as b, tempfile.TemporaryDirectory() as d:
        prefix = unique_prefix("console")
        read_db = f"sqlite:///{Path(d) / 'read.db'}"
        settings = bench_settings(b.bootstrap, prefix, partitions=2, read_db=read_db, linger_ms=2)
        asyncio.run(create_topics(settings))
        env = {
            **worker_env(settings, Path(d) / "archive"),
            "FLEETLEDGER_READ_DB": read_db,
            "FLEETLEDGER_PROJECTOR_GROUP_ID": f"{prefix}-projector",
        }
        worker = Proc([console_script(), "worker"], env, "worker").start()
        projector = Proc([console_script(), "projector"], env, "projector").start()
        console: Proc | None = None
        try:
            deadline = time.monotonic() + 60
            while not Path(d, "read.db").exists():
                projector.check()
                worker.check()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"projector made no read model: {projector.log_tail()}")
                time.sleep(0.2)
            time.sleep(1.0)
            console, url = _console_proc(env, settings.broker)
            reads = ReadStore.open(load_settings(read_db=read_db).read_db_url(), create=False)
            try:
                return _measure_live(url, settings, reads, events, pace_s)
            finally:
                reads.close()
        finally:
            for p in (console, worker, projector):
                if p is not None:
                    p.cleanup()


# --------------------------------------------------------------------------- page load


def generate_runs(path: Path, n: int) -> None:
    """``n`` registry rows straight into a SQLite read model at ``path``, generated as the
    read-model benchmark generates them (``bench.readmodel``), plus the agents, 2,000
    intercepts and the head position."""
    import sqlite3

    from fleetledger.kernel.config import parse_read_db_url
    from fleetledger.processors.readstore import ReadStore

    from .readmodel import generate, load_sqlite

    ReadStore.open(parse_read_db_url(f"sqlite:///{path}"), create=True).close()
    fleet, rows = generate(n)
    counts: dict[tuple[str, str], int] = {}

    def counted() -> Iterator[tuple[Any, ...]]:
        for r in rows:
            counts[(r[1], r[2])] = counts.get((r[1], r[2]), 0) + 1
            yield r

    load_sqlite(path, counted())
    rnd = random.Random(3)
    now = datetime.now(UTC)
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO rm_agents (tenant, agent_id, runs) VALUES (?, ?, ?)",
            [(t, a, c) for (t, a), c in counts.items()],
        )
        conn.executemany(
            "INSERT INTO rm_intercepts (intercept_id, run_id, kind, severity, seq, reason, ts, "
            "tenant, agent_id, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    f"ic-{i}",
                    f"run-{i:08d}",
                    "run_failed",
                    "critical",
                    3,
                    "run failed: bench",
                    (now - timedelta(seconds=i * 37)).strftime("%Y-%m-%d %H:%M:%S.%f"),
                    *rnd.choice(fleet.agents),
                    n + i + 1,
                )
                for i in range(2000)
            ],
        )
        conn.execute("UPDATE rm_head SET position = ?", (n + 2001,))
    conn.execute("ANALYZE")
    conn.close()


PAGES: tuple[tuple[str, dict[str, str]], ...] = (
    ("all runs", {}),
    ("status=failed", {"status": "failed"}),
    ("window=7d, min_cost=1.5", {"window": "7d", "min_cost": "1.5"}),
    ("agent, sort=cost", {"agent": "agent-0007", "sort": "cost"}),
    ("tenant, status=running, window=24h", {"tenant": "tenant-02", "status": "running", "window": "24h"}),
)  # fmt: skip


def page_load(n: int, reps: int) -> dict[str, Any]:
    from fleetledger.console.app import ConsoleApp, ConsoleConfig, registry_params
    from fleetledger.console.server import ConsoleServer
    from fleetledger.kernel.config import parse_read_db_url
    from fleetledger.processors.readmodel import InterceptQuery, RunQuery
    from fleetledger.processors.readstore import ReadStore

    out: dict[str, Any] = {"runs": n, "pages": {}}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "registry.db"
        url = f"sqlite:///{path}"
        log(f"generating {n:,} runs into {url}")
        t0 = time.perf_counter()
        generate_runs(path, n)
        out["generate_s"] = time.perf_counter() - t0
        reads = ReadStore.open(parse_read_db_url(url), create=False)
        app = ConsoleApp(reads, ConsoleConfig())
        srv = ConsoleServer(app, "127.0.0.1", 0).start()
        try:
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                for name, params in PAGES:
                    c.get("/", params=params).raise_for_status()  # warm the cache
                    c.get("/ui/summary", params=params).raise_for_status()
                    http_ms, direct_ms, sum_ms, sum_direct_ms = [], [], [], []
                    for _ in range(reps):
                        t = time.perf_counter()
                        r = c.get("/", params=params)
                        http_ms.append((time.perf_counter() - t) * 1000)
                        r.raise_for_status()
                        t = time.perf_counter()
                        c.get("/ui/summary", params=params).raise_for_status()
                        sum_ms.append((time.perf_counter() - t) * 1000)
                        reg = registry_params(
                            app.config, [params["status"]] if "status" in params else [],
                            params.get("agent"), params.get("tenant"), params.get("min_cost"),
                            params.get("window"), None, None, params.get("sort", "recent"), None, 50,
                        )  # fmt: skip
                        t = time.perf_counter()
                        reads.runs(RunQuery(reg.filter, reg.sort, 50))  # type: ignore[arg-type]
                        reads.intercepts(
                            InterceptQuery(
                                tenant=reg.filter.tenant, agent=reg.filter.agent, limit=8
                            )
                        )
                        direct_ms.append((time.perf_counter() - t) * 1000)
                        t = time.perf_counter()
                        reads.summary(reg.filter)
                        sum_direct_ms.append((time.perf_counter() - t) * 1000)
                    out["pages"][name] = {
                        "http_ms": stats(http_ms),
                        "read_model_ms": stats(direct_ms),
                        "summary_http_ms": stats(sum_ms),
                        "summary_read_model_ms": stats(sum_direct_ms),
                    }
                    log(
                        f"  {name}: GET / median {statistics.median(http_ms):.0f} ms, p95 "
                        f"{pct(http_ms, 0.95):.0f} ms (read model {statistics.median(direct_ms):.0f} "
                        f"ms); summary median {statistics.median(sum_ms):.0f} ms, p95 "
                        f"{pct(sum_ms, 0.95):.0f} ms"
                    )
            # the browser: navigation to the load event of the unfiltered page
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = b.new_page()
                page.goto(srv.url + "/")
                nav = []
                full = []
                for _ in range(reps):
                    t = time.perf_counter()
                    page.goto(srv.url + "/", wait_until="load")
                    nav.append((time.perf_counter() - t) * 1000)
                    page.wait_for_selector("#sum-runs", timeout=60_000)
                    full.append((time.perf_counter() - t) * 1000)
                b.close()
            out["browser_load_ms"] = stats(nav)
            out["browser_summary_ms"] = stats(full)
        finally:
            srv.stop()
            reads.close()
    return out


# --------------------------------------------------------------------------- main


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "console-results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Console benchmark",
        "",
        f"{results['when']}, {results['machine']}; `{results['command']}`",
        "",
        "| Measurement | Median | p95 | Max | N | Baseline (same run) | Baseline median | Ratio (median) | Target | Met |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for mode, live in results.get("live", {}).items():
        p, m = live["page_ms"], live["read_model_ms"]
        lines.append(
            f"| SDK call -> visible on the open run page, {mode} [ms] | {p['median']:.0f} | {p['p95']:.0f} | "
            f"{p['max']:.0f} | {p['n']} | SDK call -> row in the read model | {m['median']:.0f} | "
            f"{p['median'] / max(m['median'], 1e-9):.2f} | p95 < 1000 ms | {'yes' if p['p95'] < 1000 else '**no**'} |"
        )
    reg = results.get("registry")
    if reg:
        for name, v in reg["pages"].items():
            h, r = v["http_ms"], v["read_model_ms"]
            lines.append(
                f"| Registry page `GET /` (list + intercepts lane) at {reg['runs']:,} runs, {name} [ms] | {h['median']:.0f} | {h['p95']:.0f} | "
                f"{h['max']:.0f} | {h['n']} | the page's read-model calls (runs page, lane) | {r['median']:.0f} | "
                f"{h['median'] / max(r['median'], 1e-9):.2f} | - | - |"
            )
            h, r = v["summary_http_ms"], v["summary_read_model_ms"]
            lines.append(
                f"| Summary figures `GET /ui/summary` (loaded after the list) at {reg['runs']:,} runs, {name} [ms] | {h['median']:.0f} | {h['p95']:.0f} | "
                f"{h['max']:.0f} | {h['n']} | ReadModel.summary | {r['median']:.0f} | "
                f"{h['median'] / max(r['median'], 1e-9):.2f} | - | - |"
            )
        for key, what in (
            ("browser_load_ms", "navigation to `load`"),
            ("browser_summary_ms", "navigation to the summary figures shown"),
        ):
            b = reg[key]
            lines.append(
                f"| Registry in Chromium, {what} at {reg['runs']:,} runs, all runs [ms] | {b['median']:.0f} | "
                f"{b['p95']:.0f} | {b['max']:.0f} | {b['n']} | - | - | - | - | - |"
            )
    (out / "console-results.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__)
    parser.add_argument("--runs", type=int, default=1_000_000, help="registry rows")
    parser.add_argument("--reps", type=int, default=15, help="page loads per filter")
    parser.add_argument("--events", type=int, default=40, help="live events per mode")
    parser.add_argument("--pace", type=float, default=0.25, help="seconds between live events")
    parser.add_argument("--only", nargs="*", choices=("embedded", "kafka", "registry"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    wanted = set(args.only or ("embedded", "kafka", "registry"))
    import platform

    results: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, CPython {platform.python_version()}",
        "command": "python -m bench.console "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "live": {},
    }
    os.chdir(REPO)
    previous = args.out / "console-results.json"
    if args.only and previous.exists():
        # a partial run keeps the other figures of the last full one (and says so)
        old = json.loads(previous.read_text())
        results["live"] = old.get("live", {})
        if "registry" in old:
            results["registry"] = old["registry"]
        results["command"] += f" (other rows: {old.get('when')}, `{old.get('command')}`)"
    if "embedded" in wanted:
        log("live latency, embedded")
        results["live"]["embedded"] = live_embedded(args.events, args.pace)
        log(f"  {results['live']['embedded']}")
    if "kafka" in wanted:
        log("live latency, Kafka (worker + projector)")
        results["live"]["kafka"] = live_kafka(args.events, args.pace)
        log(f"  {results['live']['kafka']}")
    if "registry" in wanted:
        results["registry"] = page_load(args.runs, args.reps)
    write(results, args.out)
    print((args.out / "console-results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
