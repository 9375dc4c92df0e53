"""Measurement 7: one worker's memory with many unfinished runs in flight, and after.

Per repetition: a worker starts on fresh topics and is made ready (group Stable, warm-up
fleet processed); its resident set (``VmRSS``) then is the idle baseline.  Then:

1. ``memory_events`` events of ``memory_runs`` runs (cloned from simulated many-slow runs,
   new run and event ids, 10 events per message, round-robin) are published *without*
   their terminal events: every run is open.  Once every event is on the ledger, the
   worker's peak RSS (``VmHWM``) is read: the cost of that many events in flight;
2. the terminal event of every run is published; once every run's bundle is on the
   bundles topic (and 2 x ``settle_s`` more), the worker's ``VmRSS`` is read: is the
   memory back near idle once the runs are finished?

The growth above idle divided by the events in flight gives bytes per event,
extrapolated (labelled so) to 1,000,000 events in flight.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from fleetledger.processors.runtimes.kafka_io import topic_specs
from fleetledger.schemas.codec import Codec

from .common import (
    Broker,
    Figure,
    OutputCounter,
    Sizes,
    bench_producer,
    bench_settings,
    create_topics,
    log,
    median_at_most,
    prebuild,
    ready,
    running,
    send_prebuilt,
    start_worker,
    unique_prefix,
    worker_target,
)
from .traffic import Traffic, cloned_fleet

MIB = 1024 * 1024
TARGET_EVENTS = 1_000_000
#: "Back near idle": RSS after the runs finished at most this much above idle.
NEAR_IDLE_MIB = 32


async def one_rep(
    broker: Broker, base: Traffic, warm: Traffic, sizes: Sizes, archive: Path
) -> tuple[float, float, float, int]:
    """(peak MiB with the runs in flight, idle MiB, MiB after they finished, events)."""
    settings = bench_settings(broker.bootstrap, unique_prefix("memory"), archive_dir=archive)
    await create_topics(settings)
    topics = topic_specs(settings)
    codec = Codec()
    in_flight, terminals = cloned_fleet(
        base, codec, runs=sizes.memory_runs, events=sizes.memory_events
    )
    events = sum(len(codec.decode_records(v)) for chunk in in_flight for _, v in chunk)
    messages = [m for chunk in in_flight for m in chunk]
    worker = start_worker(settings, archive)
    with running(worker):
        target = worker_target(broker.bootstrap, settings, worker)
        await ready(target, warm.messages, warm.events, sizes)
        await asyncio.sleep(sizes.settle_s)
        idle = worker.rss_bytes() or 0
        producer = bench_producer(broker.bootstrap, target.compression)
        await producer.start()
        try:
            async with (
                OutputCounter(broker.bootstrap, topics.ledger.name) as ledger,
                OutputCounter(broker.bootstrap, topics.bundles.name) as bundles,
            ):
                base_ledger = await ledger.settle(0.3)
                base_bundles = bundles.count
                await send_prebuilt(
                    producer, topics.events.name, prebuild(producer, messages, target.partitions)
                )
                await ledger.reach(base_ledger + events, [worker], timeout_s=sizes.wait_s * 2)
                peak = worker.peak_rss_bytes() or 0
                await send_prebuilt(
                    producer, topics.events.name, prebuild(producer, terminals, target.partitions)
                )
                await bundles.reach(base_bundles + len(terminals), [worker], sizes.wait_s)
                await asyncio.sleep(2 * sizes.settle_s)
                after = worker.rss_bytes() or 0
        finally:
            await producer.stop()
    return peak / MIB, idle / MIB, after / MIB, events


def run(broker: Broker, base: Traffic, warm: Traffic, sizes: Sizes) -> list[Figure]:
    archive = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    flight = f"{sizes.memory_events:,} events of {sizes.memory_runs:,} unfinished runs in flight"
    peak = Figure(
        "memory.peak_rss_mib",
        f"Worker peak RSS, {flight}",
        "MiB",
        baseline_name="the same worker's RSS when idle (ready, no events)",
        target="<= 200 MiB",
        target_check=median_at_most(200),
        higher_is_better=False,
    )
    after = Figure(
        "memory.after_finish_mib",
        f"Worker RSS once those runs finished (every bundle published, +{2 * sizes.settle_s:g} s)",
        "MiB",
        baseline_name="the same worker's RSS when idle",
        target=f"<= idle + {NEAR_IDLE_MIB} MiB",
        target_check=lambda f: (
            bool(f.get("baseline")) and f["median"] <= f["baseline"]["median"] + NEAR_IDLE_MIB
        ),
        higher_is_better=False,
    )
    per_event = Figure(
        "memory.bytes_per_event",
        "Worker RSS growth per event in flight (peak - idle) / events",
        "bytes",
        higher_is_better=False,
    )
    projected = Figure(
        "memory.projected_1m_mib",
        "Projected peak RSS with 1,000,000 events in flight (idle + growth/event x 1M; "
        "extrapolated)",
        "MiB",
        target="<= 1 GiB (1,024 MiB)",
        target_check=median_at_most(1024),
        higher_is_better=False,
        notes="linear extrapolation of the measured growth, not a 1M-event run",
    )
    for rep in range(sizes.reps):
        peak_mib, idle_mib, after_mib, events = asyncio.run(
            one_rep(broker, base, warm, sizes, archive)
        )
        growth = max(0.0, peak_mib - idle_mib) * MIB / events
        peak.add(peak_mib, idle_mib)
        after.add(after_mib, idle_mib)
        per_event.add(max(growth, 1e-9))
        projected.add(idle_mib + growth * TARGET_EVENTS / MIB)
        log(
            f"memory rep {rep + 1}: {events} events in flight, peak {peak_mib:.0f} MiB, idle "
            f"{idle_mib:.0f} MiB, after finishing {after_mib:.0f} MiB, {growth:,.0f} B/event"
        )
    return [peak, after, per_event, projected]
