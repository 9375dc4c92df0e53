"""Measurement 5: intercept latency at a steady offered load.

Per repetition, on a fresh prefix with a running (joined) worker: the few-busy traffic is
published at ``latency_rate`` events/s (paced every 10 ms, plain aiokafka producer) for
``latency_s`` seconds.  Each message's send time is kept per (run, seq).  A plain consumer
reads the intercepts topic; an intercept's latency is the time it was read minus the send
time of the message holding the event that raised it (run_id, seq).  Figures: p50 and p99
over every intercept of the repetition.  Baseline: the broker round trip, i.e. the time a
plain consumer takes to read a message just sent (median of 20 probes).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

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
    start_worker,
    unique_prefix,
)
from .scaleout import wait_group
from .traffic import Traffic

PARTITIONS = 4


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


async def round_trip(bootstrap: str, topic: str, probes: int = 20) -> float:
    """Median seconds from send to a consumer reading the message (the broker floor)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    await producer.start()
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        samples = []
        for i in range(probes):
            t0 = time.perf_counter()
            await producer.send(topic, f"probe-{i}".encode(), partition=0)
            while not await consumer.getmany(tp, timeout_ms=100):
                pass
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples)
    finally:
        await consumer.stop()
        await producer.stop()


async def one_rep(
    bootstrap: str, traffic: Traffic, sizes: Sizes, archive: Path
) -> tuple[list[float], float, int]:
    settings = bench_settings(
        bootstrap, unique_prefix("latency"), partitions=PARTITIONS, archive_dir=archive
    )
    await create_topics(settings)
    topics = topic_specs(settings)
    codec = Codec()
    budget = int(sizes.latency_rate * sizes.latency_s)
    plan: list[tuple[str, bytes, list[int]]] = []
    for (key, value), (_, recs) in zip(traffic.messages, traffic.records(codec), strict=True):
        plan.append((key, value, [r["seq"] for r in recs]))
        budget -= len(recs)
        if budget <= 0:
            break
    events = sum(len(s) for _, _, s in plan)
    sent_at: dict[tuple[str, int], float] = {}
    latencies: list[float] = []
    worker = start_worker(settings, archive)
    with running(worker):
        await wait_group(bootstrap, settings.group_id, 1, [worker])
        await asyncio.sleep(1.0)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=False,
            linger_ms=5,
            compression_type=kafka_compression(settings),
            max_request_size=2_000_000,
        )
        await producer.start()
        async with OffsetProbe(bootstrap, topics.intercepts.name, PARTITIONS) as intercepts:

            async def read(until: float) -> None:
                while time.monotonic() < until:
                    for r in await intercepts.poll(timeout_ms=20):
                        now = time.monotonic()
                        obj = json.loads(r.value)
                        t_sent = sent_at.get((obj.get("run_id"), obj.get("seq")))
                        if t_sent is not None:
                            latencies.append(now - t_sent)

            async def send() -> None:
                tick = 0.01
                per_tick = sizes.latency_rate * tick
                credit = 0.0
                i = 0
                next_t = time.monotonic()
                while i < len(plan):
                    credit += per_tick
                    while i < len(plan) and credit > 0:
                        key, value, seqs = plan[i]
                        now = time.monotonic()
                        for s in seqs:
                            sent_at[(key, s)] = now
                        await producer.send(
                            topics.events.name,
                            value,
                            key=key.encode(),
                            partition=partition_for(key, PARTITIONS),
                        )
                        credit -= len(seqs)
                        i += 1
                    next_t += tick
                    await asyncio.sleep(max(0.0, next_t - time.monotonic()))
                await producer.flush()

            reader = asyncio.create_task(read(time.monotonic() + sizes.latency_s + sizes.wait_s))
            try:
                await send()
                async with OffsetProbe(bootstrap, topics.ledger.name, PARTITIONS) as ledger:
                    deadline = time.monotonic() + sizes.wait_s
                    while await ledger.total() < events:
                        worker.check()
                        if time.monotonic() > deadline:
                            raise RuntimeError("latency run: the worker did not catch up")
                        await asyncio.sleep(0.2)
                await asyncio.sleep(0.5)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                await producer.stop()
        floor = await round_trip(bootstrap, topics.deadletter.name)
    return latencies, floor, events


def run(bootstrap: str, traffic: Traffic, sizes: Sizes) -> list[Figure]:
    archive = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    label = f"{sizes.latency_rate:,} events/s offered for {sizes.latency_s:g} s, few busy"
    p50 = Figure(
        "latency.p50_ms",
        f"Intercept latency p50 ({label})",
        "ms",
        baseline_name="broker round trip (send -> readable), median",
        higher_is_better=False,
    )
    p99 = Figure(
        "latency.p99_ms",
        f"Intercept latency p99 ({label})",
        "ms",
        baseline_name="broker round trip (send -> readable), median",
        target="p99 < 500 ms",
        target_check=lambda f: f["median"] < 500,
        higher_is_better=False,
    )
    samples = 0
    for rep in range(sizes.reps):
        lat, floor, events = asyncio.run(one_rep(bootstrap, traffic, sizes, archive))
        if not lat:
            raise RuntimeError(f"latency run: no intercept raised by {events} events")
        samples += len(lat)
        p50.add(percentile(lat, 0.5) * 1000, floor * 1000)
        p99.add(percentile(lat, 0.99) * 1000, floor * 1000)
        log(
            f"latency rep {rep + 1}: {len(lat)} intercepts over {events} events, "
            f"p50 {percentile(lat, 0.5) * 1000:.0f} ms, p99 {percentile(lat, 0.99) * 1000:.0f} ms, "
            f"broker round trip {floor * 1000:.1f} ms"
        )
    p99.notes = p50.notes = f"{samples} intercepts over all repetitions"
    return [p50, p99]
