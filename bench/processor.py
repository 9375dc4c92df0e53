"""Measurement 2: the real ``fleetledger worker`` against the raw ceiling and a naive agent.

For each traffic shape and repetition, on a fresh topic prefix, the shape's messages are
preloaded onto the events topic, then:

* raw ceiling: a plain aiokafka consumer ``getmany``s every message and decodes it with
  fastavro, nothing else;
* worker: ``fleetledger worker --broker kafka://...`` (a subprocess) processes the topic;
  its rate is read from the ledger topic's end offsets (one ledger record per event),
  counted from the first poll that saw 5% of the events (start-up and group join excluded);
* naive: the same events, one per message, through :mod:`bench.naive_faust` (capped at
  ``naive_events`` events: its rate does not depend on the shape).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

from aiokafka import AIOKafkaConsumer, TopicPartition

from fleetledger.processors.runtimes.kafka_io import TopicSpec, ensure_topics, topic_specs
from fleetledger.schemas.codec import Codec

from .common import (
    Figure,
    OffsetProbe,
    Proc,
    Sizes,
    bench_settings,
    create_topics,
    kafka_compression,
    log,
    measure_drain,
    produce_raw,
    running,
    start_worker,
    unique_prefix,
)
from .traffic import Decoder, Traffic, single_event_messages

PARTITIONS = 4


async def raw_ceiling(bootstrap: str, topic: str, partitions: int, events: int) -> float:
    """events/s of ``getmany`` + fastavro decode of every message of ``topic``."""
    decoder = Decoder(Codec())
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4_000_000,
        fetch_max_bytes=16_000_000,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        t0 = time.perf_counter()
        deadline = time.monotonic() + 120
        while seen < events:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                for r in records:
                    seen += decoder.batch_events(r.value)
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw consumer saw {seen} of {events} events in 120s")
        return seen / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


async def _worker_rate(
    bootstrap: str, traffic: Traffic, sizes: Sizes, archive: Path
) -> tuple[float, float]:
    prefix = unique_prefix(f"proc-{traffic.shape}")
    settings = bench_settings(bootstrap, prefix, partitions=PARTITIONS, archive_dir=archive)
    await create_topics(settings)
    topics = topic_specs(settings)
    await produce_raw(
        bootstrap,
        topics.events.name,
        traffic.messages,
        PARTITIONS,
        compression=kafka_compression(settings),
    )
    ceiling = await raw_ceiling(bootstrap, topics.events.name, PARTITIONS, traffic.events)
    with running(start_worker(settings, archive)) as (worker,):
        async with OffsetProbe(bootstrap, topics.ledger.name, PARTITIONS) as probe:
            drain = await measure_drain(probe, traffic.events, [worker], timeout_s=sizes.wait_s)
    return drain.rate, ceiling


async def naive_rate(
    bootstrap: str, traffic: Traffic, codec: Codec, limit: int, sizes: Sizes
) -> float:
    """events/s of the naive one-event-per-message Faust agent on ``traffic``'s events."""
    prefix = unique_prefix(f"naive-{traffic.shape}")
    messages = single_event_messages(traffic, codec)[:limit]
    specs = [
        TopicSpec(
            role=role,
            name=f"{prefix}.naive.{role}",
            partitions=PARTITIONS,
            replication_factor=1,
            configs=MappingProxyType({"cleanup.policy": "delete", "retention.ms": "-1"}),
        )
        for role in ("events", "ledger")
    ]
    await ensure_topics(bootstrap, specs, timeout_s=30.0)
    await produce_raw(bootstrap, specs[0].name, messages, PARTITIONS)
    env = {
        **os.environ,
        "BENCH_BOOTSTRAP": bootstrap,
        "BENCH_PREFIX": prefix,
        "BENCH_GROUP": f"{prefix}-naive",
    }
    proc = Proc([sys.executable, "-m", "bench.naive_faust"], env, "naive").start()
    with running(proc):
        async with OffsetProbe(bootstrap, specs[1].name, PARTITIONS) as probe:
            drain = await measure_drain(probe, len(messages), [proc], timeout_s=sizes.wait_s)
    return drain.rate


def run(
    bootstrap: str, shapes: dict[str, Traffic], sizes: Sizes, naive_events: int
) -> list[Figure]:
    codec = Codec()
    figures: list[Figure] = []
    archive = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    naive_rates: list[float] = []
    for name, traffic in shapes.items():
        vs_raw = Figure(
            f"processor.{name}.vs_raw",
            f"Worker, {name.replace('_', ' ')} (vs raw getmany+decode)",
            "events/s",
            baseline_name="aiokafka getmany + fastavro decode",
            target=">= 50% of the raw ceiling" if name == "few_busy" else None,
            target_check=(lambda f: f["ratio"]["median"] >= 0.5) if name == "few_busy" else None,
            notes=f"{traffic.events_per_message:.1f} events/message",
        )
        vs_naive = Figure(
            f"processor.{name}.vs_naive",
            f"Worker, {name.replace('_', ' ')} (vs naive Faust agent)",
            "events/s",
            baseline_name="one-event-per-message Faust agent, rfc8785 chain + table totals",
            target=">= 5x the naive agent" if name == "few_busy" else None,
            target_check=(lambda f: f["ratio"]["median"] >= 5.0) if name == "few_busy" else None,
            notes="the naive agent reads one event per message whatever the shape: it is "
            "measured once per repetition (on the few-busy events) and paired with both shapes",
        )
        for rep in range(sizes.reps):
            rate, ceiling = asyncio.run(_worker_rate(bootstrap, traffic, sizes, archive))
            if len(naive_rates) <= rep:
                naive_rates.append(
                    asyncio.run(naive_rate(bootstrap, traffic, codec, naive_events, sizes))
                )
            naive = naive_rates[rep]
            log(
                f"processor {name} rep {rep + 1}: worker {rate:,.0f} ev/s, raw {ceiling:,.0f}, "
                f"naive {naive:,.0f}"
            )
            vs_raw.add(rate, ceiling)
            vs_naive.add(rate, naive)
        figures += [vs_raw, vs_naive]
    return figures
