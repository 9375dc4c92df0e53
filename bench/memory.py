"""Measurement 7: peak RSS of one worker through many concurrent runs.

Per repetition: a worker starts on empty topics and joins; its idle RSS is the baseline.
Then ``memory_events`` events of ``memory_runs`` runs (cloned from simulated many-slow
runs, new run and event ids, emitted round-robin so every run stays open until the last
rounds) are published, and the worker's ``VmHWM`` (peak RSS, Linux) is read once every
event is on the ledger.  The growth above idle divided by events gives bytes per event,
extrapolated (labelled so) to the target workload of 1,000,000 events / 10,000 runs.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from fleetledger.processors.runtimes.kafka_io import partition_for, topic_specs
from fleetledger.schemas.codec import Codec

from .common import (
    Figure,
    OffsetProbe,
    Sizes,
    bench_settings,
    create_topics,
    kafka_compression,
    log,
    running,
    send_batches,
    start_worker,
    unique_prefix,
)
from .scaleout import wait_group
from .traffic import Traffic, cloned_fleet

PARTITIONS = 4
MIB = 1024 * 1024
TARGET_EVENTS = 1_000_000


async def one_rep(
    bootstrap: str, base: Traffic, sizes: Sizes, archive: Path
) -> tuple[float, float, int]:
    settings = bench_settings(
        bootstrap, unique_prefix("memory"), partitions=PARTITIONS, archive_dir=archive
    )
    await create_topics(settings)
    topics = topic_specs(settings)
    chunks = list(cloned_fleet(base, Codec(), runs=sizes.memory_runs, events=sizes.memory_events))
    events = 0
    codec = Codec()
    for chunk in chunks:
        for _, value in chunk:
            events += len(codec.decode_records(value))
    worker = start_worker(settings, archive)
    with running(worker):
        await wait_group(bootstrap, settings.group_id, 1, [worker])
        await asyncio.sleep(1.0)
        idle = worker.peak_rss_bytes() or 0
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=False,
            compression_type=kafka_compression(settings),
            max_request_size=2_000_000,
            max_batch_size=1_000_000,
        )
        await producer.start()
        try:
            for chunk in chunks:
                await send_batches(producer, topics.events.name, chunk, PARTITIONS, partition_for)
        finally:
            await producer.stop()
        async with OffsetProbe(bootstrap, topics.ledger.name, PARTITIONS) as ledger:
            deadline = time.monotonic() + sizes.wait_s * 2
            while await ledger.total() < events:
                worker.check()
                if time.monotonic() > deadline:
                    raise RuntimeError("memory run: the worker did not process every event")
                await asyncio.sleep(0.2)
        peak = worker.peak_rss_bytes() or 0
    return peak / MIB, idle / MIB, events


def run(bootstrap: str, base: Traffic, sizes: Sizes) -> list[Figure]:
    archive = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    peak = Figure(
        "memory.peak_rss_mib",
        f"Worker peak RSS, {sizes.memory_events:,} events over {sizes.memory_runs:,} "
        "concurrent runs",
        "MiB",
        baseline_name="the same worker's RSS when idle (joined, no events)",
        higher_is_better=False,
    )
    per_event = Figure(
        "memory.bytes_per_event",
        "Worker RSS growth per event (peak - idle) / events",
        "bytes",
        higher_is_better=False,
    )
    projected = Figure(
        "memory.projected_1m_mib",
        "Projected peak RSS at 1,000,000 events (idle + growth/event x 1M; extrapolated)",
        "MiB",
        target="< 1 GiB (1,024 MiB)",
        target_check=lambda f: f["median"] < 1024,
        higher_is_better=False,
        notes="linear extrapolation of the measured growth, not a 1M-event run",
    )
    for rep in range(sizes.reps):
        peak_mib, idle_mib, events = asyncio.run(one_rep(bootstrap, base, sizes, archive))
        growth = max(0.0, peak_mib - idle_mib) * MIB / events
        peak.add(peak_mib, idle_mib)
        per_event.add(max(growth, 1e-9))
        projected.add(idle_mib + growth * TARGET_EVENTS / MIB)
        log(
            f"memory rep {rep + 1}: {events} events, peak {peak_mib:.0f} MiB, idle "
            f"{idle_mib:.0f} MiB, {growth:,.0f} B/event"
        )
    return [peak, per_event, projected]
