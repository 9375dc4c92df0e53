"""The read-model benchmark's harness runs end to end on a small fleet (no speed asserted:
speed is measured by ``python -m bench.readmodel``, not by tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_bench(module: str, *args: str) -> str:
    """Stdout of ``python -m <module> <args>``, which must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_the_registry_benchmark_measures_both_engines(tmp_path: Path) -> None:
    run_bench("bench.readmodel", "--runs", "3000", "--rounds", "1", "--out", str(tmp_path))
    results = json.loads((tmp_path / "readmodel-results.json").read_text())
    assert set(results["engines"]) == {"sqlite", "postgresql"}
    for engine in results["engines"].values():
        assert engine["runs"] == 3000 and engine["queries_per_round"] >= 500
        for figure in ("p50_ms", "p95_ms", "max_ms", "pk_lookup_ms", "summary_ms", "costs_ms"):
            assert engine[figure]["median"] > 0, figure
    table = (tmp_path / "readmodel-results.md").read_text()
    assert "| sqlite | 3,000 |" in table and "| postgresql | 3,000 |" in table


def test_the_history_benchmark_applies_the_same_outputs_to_both_read_models() -> None:
    stdout = run_bench("bench.readmodel_history", "--rows", "5000", "--runs", "4", "--reps", "1")
    lines = stdout.splitlines()
    assert lines[1].startswith("empty read model:") and lines[2].startswith("5,000 actions")
    assert lines[3].startswith("ratio ")
