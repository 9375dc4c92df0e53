"""Measurement 3: the embedded pipeline (simulate -> SQLite -> process -> bundles).

Per repetition, in a fresh SQLite file, with at least ``embedded_events`` events of the
simulator's default fleet:

* ``simulate`` records the fleet through the SDK's SQLite transport;
* ``EmbeddedRuntime.process_available`` processes the log (ledger, totals, intercepts,
  bundles in the same file); timed from its first read to its last commit;
* baselines, on the same log: reading it back and fastavro-decoding every message
  (the floor of any reader); and reading it back with fleetledger's own decoder
  (``Codec.decode_objs``, what processing must do at least).

End to end = events / (simulate + process seconds).  ``fleetledger demo`` simulates, then
processes: it is limited by the simulator, not by processing, when processing is at least
as fast as simulating (``embedded.process.vs_simulator`` >= 1).  The ``fleetledger demo``
check runs the real command once with about ``demo_events`` events.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from fleetledger.kernel.sqlitelog import SqliteLog
from fleetledger.processors.core import CoreConfig
from fleetledger.processors.runtimes.embedded import EmbeddedRuntime
from fleetledger.producers import Recorder, SqliteTransport
from fleetledger.producers.simulator import simulate
from fleetledger.schemas.codec import Codec

from .common import (
    Figure,
    Sizes,
    console_script,
    log,
    median_at_least,
    ratio_at_least,
)
from .traffic import Decoder, runs_for, simulate_kwargs


async def _record(path: Path, runs: int, seed: int) -> tuple[int, float]:
    recorder = Recorder(SqliteTransport(path), producer_id="fleetledger-bench")
    t0 = time.perf_counter()
    async with recorder:
        summary = await simulate(recorder, runs=runs, seed=seed, **simulate_kwargs("default"))
    return summary.events, time.perf_counter() - t0


def _raw_read(path: Path, events: int, *, codec_decode: bool = False) -> float:
    decoder = Decoder(Codec())
    codec = Codec()
    log_ = SqliteLog.open(path)
    t0 = time.perf_counter()
    seen = 0
    after = 0
    while True:
        rows = log_.read(after, 500)
        if not rows:
            break
        for offset, _key, value in rows:
            if codec_decode:
                seen += len(codec.decode_objs(bytes(value)))
            else:
                seen += decoder.batch_events(bytes(value))
            after = offset
    seconds = time.perf_counter() - t0
    if seen != events:
        raise RuntimeError(f"raw read found {seen} events, expected {events}")
    return seen / seconds


def run(sizes: Sizes) -> list[Figure]:
    runs = runs_for("default", sizes.embedded_events)
    e2e = Figure(
        "embedded.end_to_end",
        "Embedded pipeline end to end (simulate -> SQLite -> process -> bundles)",
        "events/s",
        target=">= 50,000 events/s",
        target_check=median_at_least(50_000),
    )
    proc = Figure(
        "embedded.process",
        "Embedded processing only (vs raw SQLite read + fastavro decode)",
        "events/s",
        baseline_name="SQLite log read + fastavro decode",
        target="ratio >= 0.5",
        target_check=ratio_at_least(0.5),
    )
    proc_codec = Figure(
        "embedded.process.vs_codec",
        "Embedded processing only (vs SQLite read + fleetledger's decoder)",
        "events/s",
        baseline_name="SQLite log read + Codec.decode_objs",
    )
    proc_sim = Figure(
        "embedded.process.vs_simulator",
        "Embedded processing only (vs the simulator + SDK writing the log)",
        "events/s",
        baseline_name="simulate -> SQLite log (the demo's first half)",
        target="ratio >= 1 (demo limited by the simulator)",
        target_check=ratio_at_least(1.0),
    )
    sdk = Figure(
        "embedded.simulate_to_sqlite",
        "Simulator + SDK into the SQLite log",
        "events/s",
    )
    for rep in range(sizes.reps):
        tmp = Path(tempfile.mkdtemp(prefix="bench-embedded-"))
        try:
            path = tmp / "ledger.db"
            events, sim_s = asyncio.run(_record(path, runs, seed=100 + rep))
            raw = _raw_read(path, events)
            raw_codec = _raw_read(path, events, codec_decode=True)
            t0 = time.perf_counter()
            with EmbeddedRuntime(path, Codec(), CoreConfig()) as runtime:
                stats = runtime.process_available()
            proc_s = time.perf_counter() - t0
            if stats.events != events or stats.bundles == 0:
                raise RuntimeError(f"embedded runtime processed {stats}, expected {events} events")
            rate = events / proc_s
            sdk.add(events / sim_s)
            proc.add(rate, raw)
            proc_codec.add(rate, raw_codec)
            proc_sim.add(rate, events / sim_s)
            e2e.add(events / (sim_s + proc_s))
            log(
                f"embedded rep {rep + 1}: {events} events, simulate {events / sim_s:,.0f} ev/s, "
                f"process {rate:,.0f} ev/s (read+fastavro {raw:,.0f}, read+codec "
                f"{raw_codec:,.0f}), end to end {events / (sim_s + proc_s):,.0f} ev/s"
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for f in (e2e, proc, proc_codec, proc_sim, sdk):
        f.notes = f"{events:,} events of {runs:,} default-shape runs per repetition"
    figures = [e2e, proc, proc_codec, proc_sim, sdk]
    if sizes.demo_events:
        figures.append(demo_check(sizes.demo_events, events_per_run=e2e_events_per_run(sizes)))
    return figures


def e2e_events_per_run(sizes: Sizes) -> float:
    return 38.0  # the default fleet's mean, measured below when the demo runs


def demo_check(target_events: int, events_per_run: float) -> Figure:
    """``fleetledger demo`` with about ``target_events`` events: does it finish, how fast."""
    runs = max(1, round(target_events / events_per_run))
    fig = Figure(
        "embedded.demo_1m",
        f"`fleetledger demo --runs {runs}` (~{target_events:,} events) wall time",
        "s",
        target="finishes",
        target_check=lambda f: f["n"] >= 1,
        higher_is_better=False,
        notes="run once (N=1): a completion check, not a repeated figure",
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    try:
        t0 = time.perf_counter()
        done = subprocess.run(
            [
                console_script(),
                "demo",
                "--runs",
                str(runs),
                "--broker",
                f"sqlite:///{tmp / 'demo.db'}",
                "--out",
                str(tmp / "bundles"),
            ],
            cwd=tmp,
            env={**os.environ, "COLUMNS": "160"},
            capture_output=True,
            text=True,
            timeout=1800,
        )
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"fleetledger demo failed: {done.stderr[-2000:]}")
        last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        fig.notes += f"; demo said: {last}"
        fig.add(seconds)
        log(f"demo {runs} runs: {seconds:.1f}s ({last})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return fig
