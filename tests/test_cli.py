"""The command line as a user runs it: the demo, the read commands on the read model, and
one test per defect a new user hit (each failed before its fix)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fleetledger.processors.bundle import bundle_digest

ENV_KEYS = [k for k in os.environ if k.startswith("FLEETLEDGER_")]
EXE = str(Path(sys.executable).with_name("fleetledger"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in ENV_KEYS:
        monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLEDGER_")}
    return subprocess.run(
        [EXE, *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env={**base, **(env or {})},
    )


class Cli:
    """``fleetledger`` in this process (the console script's own ``main``), output captured."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        from fleetledger.cli.commands import main

        self._capsys.readouterr()
        code = main(list(args))
        captured = self._capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


def ok(*args: str, cwd: Path | None = None) -> str:
    """A subprocess run that must succeed (module fixtures, which have no capsys)."""
    res = run_cli(*args, cwd=cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def okc(cli: Cli, *args: str) -> str:
    res = cli(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo store with 40 runs, plus a run that made no model call."""
    folder = tmp_path_factory.mktemp("demo")
    ok("demo", "--runs", "40", "--seed", "7", "--out", "bundles", cwd=folder)
    db = folder / "fleetledger.db"
    asyncio.run(_record_run_without_model_calls(db))
    ok("worker", "--once", "--broker", f"sqlite:///{db}", cwd=folder)
    return db


async def _record_run_without_model_calls(db: Path) -> None:
    from fleetledger.producers import Recorder
    from fleetledger.schemas import WorkflowSnapshot, WorkflowStep

    workflow = WorkflowSnapshot(
        name="lookup", revision="1", steps=[WorkflowStep(id="s", name="Search", kind="tool")]
    )
    async with Recorder.from_url(f"sqlite:///{db}") as rec:
        run = await rec.start_run(
            agent_id="lookup-bot", tenant="acme", workflow=workflow, run_id="run-no-model-calls"
        )
        async with run, run.step("s"):
            await run.tool_call(name="search", duration_ms=12, inputs={"q": "x"}, outputs={})


def store_args(db: Path) -> list[str]:
    return ["--broker", f"sqlite:///{db}"]


def runs_json(cli: Cli, db: Path, *args: str) -> list[dict[str, Any]]:
    page = json.loads(okc(cli, "runs", *store_args(db), "--json", "--limit", "1000", *args))
    rows: list[dict[str, Any]] = page["runs"]
    return rows


# --------------------------------------------------------------------------- the demo


def test_demo_prints_runs_costs_intercepts_and_writes_identical_bundles(
    cli: Cli, tmp_path: Path
) -> None:
    first = cli("demo", "--runs", "30", "--seed", "7", "--out", "A", "--broker", "sqlite:///a.db")
    assert first.returncode == 0, first.stderr
    for heading in ("Runs (30)", "Cost by agent", "Cost by model", "Critical intercepts"):
        assert heading in first.stdout
    second = cli("demo", "--runs", "30", "--seed", "7", "--out", "B", "--broker", "sqlite:///b.db")
    assert second.returncode == 0, second.stderr
    a = sorted(p.name for p in (tmp_path / "A").iterdir())
    assert len(a) == 30 and a == sorted(p.name for p in (tmp_path / "B").iterdir())
    for name in a:
        data = (tmp_path / "A" / name).read_bytes()
        assert data == (tmp_path / "B" / name).read_bytes()
        bundle = json.loads(data)
        assert bundle["integrity"]["digest"] == bundle_digest(bundle)
        assert name == f"{bundle['run']['run_id']}.bundle.json"


def test_demo_progress_and_summary_count_the_same_events(cli: Cli, tmp_path: Path) -> None:
    out = okc(cli, "demo", "--runs", "12", "--seed", "2", "--broker", "sqlite:///p.db")
    summary = out.strip().splitlines()[-1]
    simulated = int(summary.split(" events simulated")[0].split()[-1])
    processed = int(summary.split(" events processed")[0].split()[-1])
    assert simulated == processed
    bars = [line for line in out.splitlines() if line.startswith(("simulate", "process"))]
    assert len(bars) == 2
    for bar in bars:
        assert "(events)" in bar and f"{simulated}/{simulated}" in bar, bar


def test_rerunning_the_demo_does_not_append_another_copy(cli: Cli, tmp_path: Path) -> None:
    okc(cli, "demo", "--runs", "8", "--seed", "3", "--broker", "sqlite:///r.db")
    with sqlite3.connect(tmp_path / "r.db") as conn:
        before = conn.execute("SELECT COUNT(*) FROM event_log").fetchone()[0]
    again = okc(cli, "demo", "--runs", "8", "--seed", "3", "--broker", "sqlite:///r.db")
    with sqlite3.connect(tmp_path / "r.db") as conn:
        after = conn.execute("SELECT COUNT(*) FROM event_log").fetchone()[0]
    assert before == after > 0
    assert "nothing was simulated" in again and "Runs (8)" in again


def test_demo_offers_and_accepts_only_the_embedded_store(cli: Cli) -> None:
    helped = okc(cli, "demo", "--help")
    assert "kafka://" not in helped and "sqlite:///" in helped
    res = cli("demo", "--broker", "kafka://127.0.0.1:9")
    assert res.returncode == 2 and "embedded store" in res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr


# --------------------------------------------------------------------------- runs


def test_runs_lists_newest_first_and_the_limit_keeps_the_newest(cli: Cli, demo_store: Path) -> None:
    every = runs_json(cli, demo_store)
    assert len(every) == 41
    started = [r["started_at"] for r in every if r["started_at"]]
    assert started == sorted(started, reverse=True)
    newest = json.loads(okc(cli, "runs", *store_args(demo_store), "--json", "--limit", "5"))
    assert [r["run_id"] for r in newest["runs"]] == [r["run_id"] for r in every[:5]]
    following = json.loads(
        okc(
            cli,
            "runs",
            *store_args(demo_store),
            "--json",
            "--limit",
            "5",
            "--cursor",
            newest["next_cursor"],
        )
    )
    assert [r["run_id"] for r in following["runs"]] == [r["run_id"] for r in every[5:10]]
    table = okc(cli, "runs", *store_args(demo_store), "--limit", "3")
    assert every[0]["run_id"] in table and every[-1]["run_id"] not in table
    assert "Runs (41)" in table and "38 more not shown" in table


def test_runs_filters(cli: Cli, demo_store: Path) -> None:
    every = runs_json(cli, demo_store)
    failed = runs_json(cli, demo_store, "--status", "failed")
    assert failed and {r["run_id"] for r in failed} == {
        r["run_id"] for r in every if r["status"] == "failed"
    }
    agent = every[3]["agent_id"]
    assert {r["run_id"] for r in runs_json(cli, demo_store, "--agent", agent)} == {
        r["run_id"] for r in every if r["agent_id"] == agent
    }
    tenant = every[4]["tenant"]
    assert {r["run_id"] for r in runs_json(cli, demo_store, "--tenant", tenant)} == {
        r["run_id"] for r in every if r["tenant"] == tenant
    }
    costs = sorted(Decimal(r["cost"]) for r in every)
    threshold = costs[len(costs) // 2]
    assert {r["run_id"] for r in runs_json(cli, demo_store, "--min-cost", str(threshold))} == {
        r["run_id"] for r in every if Decimal(r["cost"]) >= threshold
    }
    middle = sorted(r["started_at"] for r in every if r["started_at"])[20]
    since = runs_json(cli, demo_store, "--since", middle)
    until = runs_json(cli, demo_store, "--until", middle)
    assert {r["run_id"] for r in since} | {r["run_id"] for r in until} == {
        r["run_id"] for r in every if r["started_at"]
    }
    assert all(r["started_at"] >= middle for r in since)
    assert all(r["started_at"] < middle for r in until)
    # relative windows count back from now: only the run recorded a moment ago is in it
    assert [r["run_id"] for r in runs_json(cli, demo_store, "--since", "1h")] == [
        "run-no-model-calls"
    ]
    by_cost = runs_json(cli, demo_store, "--sort", "cost")
    assert [Decimal(r["cost"]) for r in by_cost] == sorted(costs, reverse=True)


# --------------------------------------------------------------------------- show


def test_show_renders_a_readable_run(cli: Cli, demo_store: Path) -> None:
    failed = runs_json(cli, demo_store, "--status", "failed")[0]
    out = okc(cli, "show", failed["run_id"], *store_args(demo_store))
    assert len(out.splitlines()) < 400
    for text in (
        f"Run {failed['run_id']}",
        failed["agent_id"],
        "Actions (",
        "outcome",
        "cost",
        "duration",
        "Totals by model",
        "Intercepts (",
        "run_failed",
        failed["digest"],
    ):
        assert text in out, text
    # inputs and outputs are shown as JSON, not as double-encoded strings
    assert '\\"' not in out and '{"' in out


def test_show_json_is_the_exported_bundle_and_verifies(
    cli: Cli, demo_store: Path, tmp_path: Path
) -> None:
    run_id = runs_json(cli, demo_store, "--status", "completed")[0]["run_id"]
    shown = cli("show", run_id, "--json", *store_args(demo_store))
    assert shown.returncode == 0, shown.stderr
    okc(cli, "export", run_id, "--out", str(tmp_path / "x.bundle.json"), *store_args(demo_store))
    exported = (tmp_path / "x.bundle.json").read_bytes()
    assert shown.stdout.encode() == exported
    (tmp_path / "shown.bundle.json").write_bytes(shown.stdout.encode())
    okc(cli, "verify", str(tmp_path / "shown.bundle.json"))


def test_show_of_an_unknown_run_names_the_read_model(cli: Cli, demo_store: Path) -> None:
    res = cli("show", "nope", *store_args(demo_store))
    assert res.returncode == 2
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1 and "'nope'" in line and "read model" in line
    assert "object at 0x" not in line and "<" not in line


# --------------------------------------------------------------------------- costs, intercepts


def test_costs_list_each_agent_once_and_no_empty_currency(cli: Cli, demo_store: Path) -> None:
    report = json.loads(okc(cli, "costs", *store_args(demo_store), "--json"))
    names = [line["name"] for line in report["by_agent"]]
    assert len(names) == len(set(names)) and "lookup-bot" in names
    lookup = next(line for line in report["by_agent"] if line["name"] == "lookup-bot")
    assert lookup["runs"] == 1 and lookup["cost"] == {} and lookup["calls"] == 0
    assert report["runs"] == 41 and set(report["total"]) == {"USD"}
    table = okc(cli, "costs", *store_args(demo_store))
    total = next(line for line in table.splitlines() if line.startswith("Total:"))
    assert " -" not in total and "0 -" not in total and "USD" in total
    assert sum(1 for line in table.splitlines() if "│ lookup-bot " in line) == 1


def test_costs_group_models_by_the_model_asked_for(cli: Cli, demo_store: Path) -> None:
    report = json.loads(okc(cli, "costs", *store_args(demo_store), "--json"))
    names = [line["name"] for line in report["by_model"]]
    assert len(names) == len(set(names))
    assert not [n for n in names if n.endswith("-fallback")]
    # no dated snapshot beside its model: a served snapshot is a column of the model's row
    assert not [n for n in names if any(n != m and n.startswith(m + "-20") for m in names)]
    assert any(line["served"] for line in report["by_model"])
    assert sum(line["fallbacks"] for line in report["by_model"]) >= 1
    assert "fallbacks" in okc(cli, "costs", *store_args(demo_store))
    totals = sum((Decimal(line["cost"].get("USD", "0")) for line in report["by_model"]), Decimal(0))
    assert totals == Decimal(report["total"]["USD"])


def test_intercepts_newest_first_with_json(cli: Cli, demo_store: Path) -> None:
    page = json.loads(okc(cli, "intercepts", *store_args(demo_store), "--json", "--limit", "1000"))
    ts = [i["ts"] for i in page["intercepts"]]
    assert ts and ts == sorted(ts, reverse=True) and page["total"] == len(ts)
    one = page["intercepts"][0]["run_id"]
    mine = json.loads(okc(cli, "intercepts", *store_args(demo_store), "--json", "--run", one))
    assert {i["run_id"] for i in mine["intercepts"]} == {one}
    assert "Critical intercepts" in okc(cli, "intercepts", *store_args(demo_store))


# --------------------------------------------------------------------------- usage and errors


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["runs", "--bogus"], "No such option: --bogus"),
        (["runs", "--limit", "abc"], "--limit"),
        (["show"], "Missing argument"),
        (["runs", "--status", "exploded"], "status"),
        (["runs", "--since", "yesterday-ish"], "duration nor an ISO date"),
        (["runs", "--min-cost", "lots"], "--min-cost"),
    ],
)
def test_usage_errors_print_the_usage_and_exit_2(cli: Cli, args: list[str], needle: str) -> None:
    res = cli(*args)
    assert res.returncode == 2, res.stderr
    assert "Usage: fleetledger" in res.stderr and needle in res.stderr
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr


def test_version(cli: Cli) -> None:
    from importlib.metadata import version

    assert okc(cli, "--version").strip() == f"fleetledger {version('fleetledger')}"


def test_verbose_after_the_subcommand_adds_the_traceback(cli: Cli) -> None:
    for args in (["--verbose", "runs"], ["runs", "--verbose"], ["runs", "-v"]):
        res = cli(*args, "--broker", "sqlite:///missing.db")
        assert res.returncode == 2 and "Traceback" in res.stderr, args
        assert "No such option" not in res.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["runs", "--broker", "mysql://x"], "scheme 'mysql'"),
        (["runs", "--broker", "kafka://host:notaport"], "port"),
        (["runs", "--broker", "sqlite:///missing.db"], "does not exist"),
        (["show", "nope", "--broker", "sqlite:///missing.db"], "does not exist"),
    ],
)
def test_errors_are_one_line_and_exit_2(cli: Cli, args: list[str], needle: str) -> None:
    res = cli(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_unreachable_broker_is_one_line(cli: Cli) -> None:
    res = cli("simulate", "--runs", "1", "--broker", "kafka://127.0.0.1:9")
    assert res.returncode != 0
    assert len(res.stderr.strip().splitlines()) == 1 and "127.0.0.1:9" in res.stderr


@pytest.mark.parametrize("command", ["runs", "costs", "intercepts", "show"])
def test_read_commands_refuse_a_foreign_sqlite_file_and_change_nothing(
    cli: Cli, tmp_path: Path, command: str
) -> None:
    foreign = tmp_path / "crm.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers(name) VALUES ('ana')")
    before = foreign.read_bytes()
    args = [command, "some-run"] if command == "show" else [command]
    res = cli(*args, "--broker", f"sqlite:///{foreign}")
    assert res.returncode == 2
    assert "not a fleetledger database" in res.stderr and "customers" in res.stderr
    assert foreign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crm.db"]


def test_kafka_worker_once_is_refused_instead_of_ignored(cli: Cli) -> None:
    started = time.monotonic()
    res = cli("worker", "--once", "--broker", "kafka://127.0.0.1:9")
    assert res.returncode == 2 and "--once" in res.stderr and "SIGTERM" in res.stderr
    assert time.monotonic() - started < 30  # refused before any connection attempt


def test_kafka_read_commands_without_a_read_model_say_what_builds_it(
    cli: Cli, tmp_path: Path
) -> None:
    res = cli("runs", "--broker", "kafka://127.0.0.1:9")
    assert res.returncode == 2
    assert "`fleetledger worker` creates the topics" in res.stderr
    assert "`fleetledger projector`" in res.stderr
    assert not (tmp_path / "fleetledger-read.db").exists()


# --------------------------------------------------------------------------- the worker


def test_the_worker_reports_throughput_lag_and_intercepts(cli: Cli, tmp_path: Path) -> None:
    okc(cli, "simulate", "--runs", "6", "--seed", "4", "--broker", "sqlite:///w.db")
    res = cli("worker", "--once", "--broker", "sqlite:///w.db")
    assert res.returncode == 0, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    for text in ("worker:", "messages (", "/s)", "events (", "lag 0", "intercepts", "bundles"):
        assert text in line, line


def test_sigint_stops_the_embedded_worker_with_130_and_says_what_happened(
    cli: Cli, tmp_path: Path
) -> None:
    okc(cli, "simulate", "--runs", "4", "--seed", "4", "--broker", "sqlite:///i.db")
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLEDGER_")}
    proc = subprocess.Popen(
        [EXE, "worker", "--poll", "0.05", "--broker", "sqlite:///i.db"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**base, "FLEETLEDGER_REPORT_INTERVAL_S": "0.2"},
    )
    lines: list[str] = []
    reporting = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("worker:"):
                reporting.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert reporting.wait(180), "".join(lines)  # it is up and working
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(120)  # the pipe closes with the process: the reader sees every line
    err = "".join(lines)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "cannot rollback" not in err and "Traceback" not in err
    with sqlite3.connect(tmp_path / "i.db") as conn:
        (runs,) = conn.execute("SELECT COUNT(*) FROM rm_runs").fetchone()
    assert runs == 4


def test_an_interrupt_right_after_the_commit_keeps_the_batch_and_stays_an_interrupt(
    cli: Cli,
    tmp_path: Path,
) -> None:
    """SIGINT landing once COMMIT returned: no 'cannot rollback' error, data kept."""
    from fleetledger.processors.core import CoreConfig
    from fleetledger.processors.readmodel import RunFilter
    from fleetledger.processors.runtimes.embedded import EmbeddedRuntime
    from fleetledger.schemas.codec import Codec

    okc(cli, "simulate", "--runs", "3", "--seed", "5", "--broker", "sqlite:///k.db")

    class InterruptAfterCommit:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn

        def execute(self, sql: str, *args: Any) -> Any:
            result = self._conn.execute(sql, *args)
            if sql == "COMMIT":
                raise KeyboardInterrupt
            return result

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

    with EmbeddedRuntime(tmp_path / "k.db", Codec(), CoreConfig()) as runtime:
        runtime._conn = InterruptAfterCommit(runtime._conn)  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):
            runtime.process_batch()
        assert runtime.committed_offset() > 0
        assert runtime.read_model.count(RunFilter()) == 3


# --------------------------------------------------------------------------- retention


def test_retention_moves_archived_runs_out_and_show_still_finds_them(
    cli: Cli, tmp_path: Path
) -> None:
    okc(cli, "simulate", "--runs", "6", "--seed", "6", "--broker", "sqlite:///ret.db")
    okc(cli, "worker", "--once", "--archive", "compliance", "--broker", "sqlite:///ret.db")
    every = runs_json(cli, tmp_path / "ret.db")
    finished = [r for r in every if r["status"] in ("completed", "failed")]
    keep = finished[0]
    # one bundle missing from the archive: that run must stay in the read model
    missing = next((tmp_path / "compliance").rglob(f"{keep['run_id']}.bundle.json"))
    missing.unlink()
    ended = max(datetime.fromisoformat(r["ended_at"]) for r in finished)
    days = max(1, (datetime.now(ended.tzinfo) - ended).days - 1)
    out = okc(
        cli, "prune", "--days", str(days), "--archive", "compliance", "--broker", "sqlite:///ret.db"
    )
    assert f"moved {len(finished) - 1} runs" in out
    left = {r["run_id"] for r in runs_json(cli, tmp_path / "ret.db")}
    assert keep["run_id"] in left and len(left) == len(every) - len(finished) + 1
    gone = finished[1]
    assert gone["run_id"] not in left
    shown = okc(
        cli, "show", gone["run_id"], "--archive", "compliance", "--broker", "sqlite:///ret.db"
    )
    assert f"Run {gone['run_id']}" in shown and "archived" in shown
    data = cli(
        "show", gone["run_id"], "--json", "--archive", "compliance", "--broker", "sqlite:///ret.db"
    )
    archived = next((tmp_path / "compliance").rglob(f"{gone['run_id']}.bundle.json"))
    assert data.stdout.encode() == archived.read_bytes()
    without = cli("show", gone["run_id"], "--broker", "sqlite:///ret.db")
    assert without.returncode == 2 and "compliance archive" in without.stderr


def test_the_embedded_worker_keeps_the_read_model_in_postgresql_when_told(
    cli: Cli, tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    okc(cli, "simulate", "--runs", "5", "--seed", "8", "--broker", "sqlite:///pg.db")
    monkeypatch.setenv("FLEETLEDGER_READ_DB", postgres_url)
    okc(cli, "worker", "--once", "--broker", "sqlite:///pg.db")
    rows = runs_json(cli, tmp_path / "pg.db")
    assert len(rows) == 5 and all(r["digest"] for r in rows)
    with sqlite3.connect(tmp_path / "pg.db") as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert not [t for t in tables if t.startswith("rm_")]
    report = json.loads(okc(cli, "costs", "--json", "--broker", "sqlite:///pg.db"))
    assert report["runs"] == 5
