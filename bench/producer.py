"""Measurement 1: the producer SDK publishing to Kafka, against the raw ceiling.

Per traffic shape and repetition, each on a fresh events topic:

* SDK: ``simulate`` drives a :class:`Recorder` built by ``Recorder.from_url("kafka://...")``
  with at least ``sdk_busy_events``/``sdk_slow_events`` events; timed from the first
  recorded event until ``flush`` returned (every message acknowledged); the harness
  process's CPU time over the same span (simulator + SDK + Kafka client) per event;
* raw ceiling: the very same messages' event records, pre-built; timed: fastavro
  single-object encoding of every message plus aiokafka ``create_batch``/``send_batch``
  to the run's partition, acknowledged;
* context: the same ``simulate`` call into an in-memory transport (simulator + SDK
  CPU, no Kafka), so the Kafka share of the SDK time is visible.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer

from fleetledger.processors.runtimes.kafka_io import partition_for
from fleetledger.producers import Recorder
from fleetledger.producers.simulator import simulate
from fleetledger.schemas.codec import Codec

from .common import (
    Figure,
    Sizes,
    bench_settings,
    kafka_compression,
    log,
    ratio_at_least,
    send_batches,
)
from .traffic import Encoder, Traffic, generate, runs_for, simulate_kwargs

PARTITIONS = 4
SEED = 23


async def sdk_rate(bootstrap: str, shape: str, runs: int, prefix: str) -> tuple[float, int, float]:
    """(events/s, events, CPU us/event of this process) of the SDK publishing to Kafka."""
    settings = bench_settings(bootstrap, prefix, partitions=PARTITIONS)
    recorder = Recorder.from_url(settings.broker, settings=settings, producer_id="bench")
    await recorder.start()
    try:
        t0 = time.perf_counter()
        c0 = time.process_time()
        summary = await simulate(recorder, runs=runs, seed=SEED, **simulate_kwargs(shape))
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
    finally:
        await recorder.close()
    return summary.events / seconds, summary.events, cpu / summary.events * 1e6


async def ceiling_rate(bootstrap: str, traffic: Traffic, codec: Codec, topic: str) -> float:
    from fleetledger.producers import ensure_topic

    await ensure_topic(bootstrap, topic, partitions=PARTITIONS, replication_factor=1)
    records = traffic.records(codec)
    enc = Encoder(codec)
    settings = bench_settings(bootstrap, "unused")
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
        t0 = time.perf_counter()
        messages = [(run_id, enc.encode_batch(run_id, recs)) for run_id, recs in records]
        await send_batches(producer, topic, messages, PARTITIONS, partition_for)
        seconds = time.perf_counter() - t0
    finally:
        await producer.stop()
    return traffic.events / seconds


def run(bootstrap: str, sizes: Sizes) -> list[Figure]:
    codec = Codec()
    figures: list[Figure] = []
    for shape, events in (
        ("few_busy", sizes.sdk_busy_events),
        ("many_slow", sizes.sdk_slow_events),
    ):
        runs = runs_for(shape, events, seed=SEED)
        label = shape.replace("_", " ")
        fig = Figure(
            f"producer.{shape}",
            f"Producer SDK -> Kafka, {label} (vs raw encode + send_batch)",
            "events/s",
            baseline_name="fastavro encode + aiokafka send_batch of pre-built batches",
            target=">= 50% of the raw ceiling",
            target_check=ratio_at_least(0.5),
        )
        cpu = Figure(
            f"producer.{shape}.cpu_us",
            f"Simulator + SDK -> Kafka, {label}, CPU per event of the recording process",
            "us/event",
            higher_is_better=False,
        )
        mem = Figure(
            f"producer.{shape}.memory_transport",
            f"Simulator + SDK into memory (no Kafka), {label}",
            "events/s",
        )
        for rep in range(sizes.reps):
            traffic = generate(shape, runs, seed=SEED)  # same bytes the SDK publishes
            prefix = f"bench-sdk-{shape}-{rep}-{time.time_ns() % 10**9}"
            rate, n, cpu_us = asyncio.run(sdk_rate(bootstrap, shape, runs, prefix))
            if n != traffic.events:
                raise RuntimeError(f"SDK recorded {n} events, expected {traffic.events}")
            ceiling = asyncio.run(ceiling_rate(bootstrap, traffic, codec, f"{prefix}.raw"))
            fig.add(rate, ceiling)
            cpu.add(cpu_us)
            mem.add(traffic.events / traffic.seconds)
            fig.notes = (
                f"{traffic.events:,} events in {len(traffic.messages):,} messages "
                f"({traffic.events_per_message:.1f} events/message) per repetition"
            )
            log(
                f"producer {shape} rep {rep + 1}: SDK {rate:,.0f} ev/s "
                f"({cpu_us:.0f} CPU us/event), raw {ceiling:,.0f} ev/s, memory transport "
                f"{traffic.events / traffic.seconds:,.0f} ev/s"
            )
        figures += [fig, cpu, mem]
    return figures
