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

SHAPES = ("few_busy", "many_slow")
STAGES = ("sdk_linger", "broker", "fetch_wait", "batching", "pipeline", "publish", "consumer")

EXPECTED = {
    "embedded.end_to_end",
    "embedded.process",
    "embedded.process.vs_codec",
    "embedded.process.vs_simulator",
    "embedded.simulate_to_sqlite",
    *(f"producer.{s}{k}" for s in SHAPES for k in ("", ".cpu_us", ".memory_transport")),
    *(
        f"processor.{s}.{k}"
        for s in SHAPES
        for k in (
            "vs_raw",
            "cpu_us",
            "records_per_event",
            "broker_cpu_us",
            "vs_naive",
            "vs_faust_floor",
            "faust_floor_cpu_us",
            "pipeline_cpu_us",
        )
    ),
    "scaleout.two_workers",
    "scaleout.join_s",
    "latency.p50_ms",
    "latency.p99_ms",
    *(f"latency.stage.{s}_ms" for s in STAGES),
    "memory.peak_rss_mib",
    "memory.after_finish_mib",
    "memory.bytes_per_event",
    "memory.projected_1m_mib",
    "verify.bundle_events",
    "verify.bundle_events_one_process",
    "verify.signed_bundles",
    "verify.folder_files",
    "canonical.events",
    "replay.calls",
    "replay.overhead_us_per_call",
    "instrument.openai_sync",
    "instrument.openai_sync.overhead",
    "instrument.openai_async_stream",
    "instrument.anthropic_async",
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
        if key.endswith(".overhead"):  # a difference of two timings: noise may make it <= 0
            assert fig["median"] == fig["median"], key  # a number, not NaN
            continue
        # CPU time is read from /proc in clock ticks (10 ms): at smoke sizes the Faust
        # floor (~5 us per few-busy event) can spend less than one tick, so 0 is a reading
        floor = key.endswith("floor_cpu_us")
        for stat in ("median", "min", "max"):
            assert fig[stat] > 0 or (floor and fig[stat] == 0), (key, stat, fig[stat])
        if "baseline" in fig:
            assert fig["baseline"]["median"] > 0, key
            ratio = fig["ratio"]["median"]
            assert ratio > 0 or (floor and ratio == 0), key
    table = (tmp_path / "results.md").read_text()
    for fig in measured.values():
        assert fig["title"] in table
