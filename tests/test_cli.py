"""The command line: the demo, determinism of bundles, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetledger.cli.commands import main
from fleetledger.processors.bundle import bundle_digest

ENV_KEYS = [k for k in os.environ if k.startswith("FLEETLEDGER_")]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in ENV_KEYS:
        monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).with_name("fleetledger")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def test_demo_prints_runs_costs_intercepts_and_writes_identical_bundles(tmp_path: Path) -> None:
    first = run_cli(
        "demo", "--runs", "40", "--seed", "7", "--out", "A", "--broker", "sqlite:///a.db"
    )
    assert first.returncode == 0, first.stderr
    for heading in ("Runs (40)", "Cost by agent", "Cost by model", "Critical intercepts"):
        assert heading in first.stdout
    second = run_cli(
        "demo", "--runs", "40", "--seed", "7", "--out", "B", "--broker", "sqlite:///b.db"
    )
    assert second.returncode == 0, second.stderr
    a = sorted(p.name for p in (tmp_path / "A").iterdir())
    assert len(a) == 40 and a == sorted(p.name for p in (tmp_path / "B").iterdir())
    for name in a:
        data = (tmp_path / "A" / name).read_bytes()
        assert data == (tmp_path / "B" / name).read_bytes()
        bundle = json.loads(data)
        assert bundle["integrity"]["digest"] == bundle_digest(bundle)
        assert name == f"{bundle['run']['run_id']}.bundle.json"
    other = run_cli(
        "demo", "--runs", "40", "--seed", "8", "--out", "C", "--broker", "sqlite:///c.db"
    )
    assert other.returncode == 0
    assert sorted(p.name for p in (tmp_path / "C").iterdir()) != a


def test_read_commands_on_the_demo_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--runs", "15", "--seed", "3", "--out", "out"]) == 0
    capsys.readouterr()
    assert main(["costs", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sum(line["runs"] for line in report["by_agent"]) == 15
    assert main(["runs"]) == 0
    listing = capsys.readouterr().out
    run_id = next(p.name.split(".bundle.json")[0] for p in (tmp_path / "out").iterdir())
    assert run_id[:20] in listing
    assert main(["show", run_id]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["run_id"] == run_id
    assert main(["intercepts"]) == 0
    assert "Critical intercepts" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["runs", "--broker", "mysql://x"], "scheme 'mysql'"),
        (["runs", "--broker", "kafka://host:notaport"], "port"),
        (["runs", "--broker", "sqlite:///missing.db"], "does not exist"),
        (["show", "nope", "--broker", "sqlite:///missing.db"], "does not exist"),
    ],
)
def test_errors_are_one_line_and_non_zero(args: list[str], needle: str) -> None:
    res = run_cli(*args)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_verbose_adds_the_traceback() -> None:
    res = run_cli("--verbose", "runs", "--broker", "sqlite:///missing.db")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_unreachable_broker_is_one_line() -> None:
    res = run_cli("simulate", "--runs", "1", "--broker", "kafka://127.0.0.1:9")
    assert res.returncode != 0
    assert len(res.stderr.strip().splitlines()) == 1 and "127.0.0.1:9" in res.stderr
