"""The benchmark harness runs end to end at smoke sizes and writes a complete results file.

Speed is never asserted: only that every measurement produced positive figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parent.parent

EXPECTED = {
    "embedded.end_to_end",
    "embedded.process",
    "embedded.simulate_to_sqlite",
    "producer.few_busy",
    "producer.few_busy.memory_transport",
    "producer.many_slow",
    "producer.many_slow.memory_transport",
    "processor.few_busy.vs_raw",
    "processor.few_busy.vs_naive",
    "processor.many_slow.vs_raw",
    "processor.many_slow.vs_naive",
    "scaleout.two_workers",
    "scaleout.join_s",
    "latency.p50_ms",
    "latency.p99_ms",
    "memory.peak_rss_mib",
    "memory.bytes_per_event",
    "memory.projected_1m_mib",
    "verify.bundle_events",
    "verify.bundle_events_one_process",
    "verify.signed_bundles",
    "verify.folder_files",
    "canonical.events",
}


def test_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mode"] == "smoke"
    assert results["machine"]["cpu_count"] > 0
    measured = results["measurements"]
    assert set(measured) >= EXPECTED, sorted(EXPECTED - set(measured))
    for key, fig in measured.items():
        assert fig["n"] >= 1, key
        for stat in ("median", "min", "max"):
            assert fig[stat] > 0, (key, stat, fig[stat])
        if "baseline" in fig:
            assert fig["baseline"]["median"] > 0, key
            assert fig["ratio"]["median"] > 0, key
    table = (tmp_path / "results.md").read_text()
    for fig in measured.values():
        assert fig["title"] in table
