"""Measurement 5: intercept latency at a steady offered load, with a per-stage breakdown.

Per repetition, on a fresh prefix, with a ready worker (:mod:`bench.traced_worker`: the
real worker whose fetch, batch, pipeline and publish steps also read the clock):

* ``latency_rate x latency_s`` events of the few-busy traffic's runs, ``latency_runs`` runs
  at a time (round-robin between the active runs; a finished run's place goes to the
  next), are recorded again in real time at ``latency_rate`` events/s through the real
  SDK (``Recorder.from_url("kafka://...")``: its linger, batching and Kafka transport),
  with the payloads of the simulated events (new event ids and timestamps).  At the
  SDK's 5 ms linger a run recording fewer than ~200 events/s sends about one event per
  message, so the worker sees thousands of small messages per second;
* plain consumers read the events topic (when each message became readable), the
  intercepts topic and the ledger topic.

An intercept's latency is the time it was read minus the time the event that raised it
was recorded (the SDK call).  Figures: p50 and p99 over every intercept of the
repetition (target: p99 < 250 ms), and the mean of each stage (they add up to the mean
latency), every timestamp being ``time.time()`` on this machine:

==========  ===================================================================
sdk_linger  event recorded -> its record handed to the Kafka client (the record's
            CreateTime): the SDK's linger, encoding and the transport's pack window
broker      -> record readable by a consumer (produce request, broker)
fetch_wait  -> the worker's consumer handed it to Faust (fetch long-poll, prefetch)
batching    -> the runtime received the batch holding it (Faust's stream, take_events)
pipeline    -> the pipeline call(s) of that batch returned (decode, chain, fold...)
publish     -> the batch's outputs were acknowledged (changelog and output sends)
consumer    -> the intercept was read by the harness's consumer
==========  ===================================================================

Baseline of p50/p99: the broker round trip, i.e. the time a plain consumer takes to read
a message just sent (median of 20 probes).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from fleetledger.processors.runtimes.kafka_io import topic_specs
from fleetledger.producers import Recorder
from fleetledger.schemas import EventType
from fleetledger.schemas.codec import Codec

from .common import (
    Broker,
    Figure,
    OutputCounter,
    Sizes,
    bench_settings,
    create_topics,
    log,
    median_below,
    ready,
    running,
    start_module,
    unique_prefix,
    worker_env,
    worker_target,
)
from .traced_worker import HOOKS
from .traffic import Traffic, interleaved_events

STAGES = ("sdk_linger", "broker", "fetch_wait", "batching", "pipeline", "publish", "consumer")
TARGET_P99_MS = 250.0


def percentile(values: Sequence[float], q: float) -> float:
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


async def replay(
    recorder: Recorder, events: Sequence[Any], rate: float
) -> tuple[dict[tuple[str, int], float], float]:
    """Record ``events`` again through ``recorder`` at ``rate`` events/s; return when each
    (run, seq) was recorded (``time.time()``) and the seconds it took."""
    recorded: dict[tuple[str, int], float] = {}
    runs: dict[str, Any] = {}
    t_start = time.monotonic()
    for i, ev in enumerate(events):
        delay = t_start + i / rate - time.monotonic()
        if delay > 0.001:
            await asyncio.sleep(delay)
        elif i % 16 == 15:
            await asyncio.sleep(0)  # let the SDK's sender run when behind
        now = time.time()
        if ev.type == EventType.RUN_STARTED:
            p = ev.payload
            runs[ev.run_id] = await recorder.start_run(
                agent_id=ev.agent_id,
                workflow=p.workflow,
                tenant=ev.tenant,
                project=p.project,
                budget=p.budget,
                labels=p.labels,
                run_id=ev.run_id,
                traceparent=ev.traceparent,
            )
            recorded[(ev.run_id, 0)] = now
        else:
            run = runs.get(ev.run_id)
            if run is None:  # a run whose start fell before the replayed window
                continue
            seq = run.next_seq
            await run.emit(ev.payload, step_id=ev.step_id)
            recorded[(ev.run_id, seq)] = now
    return recorded, time.monotonic() - t_start


@dataclass
class TraceIndex:
    """The traced worker's timestamps, looked up by events-topic (partition, offset)."""

    hooks: dict[str, str] = field(default_factory=dict)
    fetches: dict[int, list[tuple[int, int, float]]] = field(default_factory=dict)
    batches: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> TraceIndex:
        idx = cls()
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            obj = json.loads(line)
            kind = obj.pop("k")
            if kind == "hooks":
                idx.hooks = obj
            elif kind == "fetch":
                idx.fetches.setdefault(obj["p"], []).append((obj["a"], obj["b"], obj["t"]))
            elif kind == "batch":
                idx.batches.append(obj)
        return idx

    def missing(self) -> list[str]:
        return [
            f"{h}: {self.hooks.get(h, 'not reported')}" for h in HOOKS if self.hooks.get(h) != "ok"
        ]

    def fetched(self, p: int, offset: int) -> float | None:
        found = [t for a, b, t in self.fetches.get(p, []) if a <= offset <= b]
        return min(found) if found else None

    def batch(self, p: int, offset: int) -> dict[str, Any] | None:
        for b in self.batches:
            for bp, a, z in b["m"]:
                if bp == p and a <= offset <= z:
                    return b
        return None


def breakdown(
    intercepts: Sequence[tuple[float, Any]],
    events_read: Sequence[tuple[float, Any]],
    recorded: dict[tuple[str, int], float],
    trace: TraceIndex,
    codec: Codec,
) -> tuple[list[float], dict[str, list[float]]]:
    """Latencies (s) of the intercepts raised by recorded events, and their stages (s)."""
    wanted: dict[tuple[str, int], float] = {}
    for t_read, rec in intercepts:
        obj = orjson.loads(rec.value)
        key = (obj.get("run_id"), obj.get("seq"))
        if key in recorded and key not in wanted:
            wanted[key] = t_read
    runs = {run_id for run_id, _ in wanted}
    where: dict[tuple[str, int], tuple[int, int, float, float]] = {}
    for t_read, rec in events_read:
        for message in codec.messages_of(rec.value):
            for r in codec.decode_records(message):
                if r["run_id"] in runs:
                    where.setdefault(
                        (r["run_id"], r["seq"]),
                        (rec.partition, rec.offset, rec.timestamp / 1000, t_read),
                    )
    latencies: list[float] = []
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    for key, t_read in wanted.items():
        t_rec = recorded[key]
        latencies.append(t_read - t_rec)
        loc = where.get(key)
        if loc is None:
            continue
        p, offset, t_handed, t_readable = loc
        t_fetch = trace.fetched(p, offset)
        b = trace.batch(p, offset)
        points = [
            t_rec,
            t_handed,
            t_readable,
            t_fetch,
            None if b is None else b.get("enter"),
            None if b is None else b.get("pipe"),
            None if b is None else b.get("pub1"),
            t_read,
        ]
        if any(x is None for x in points):
            continue
        for name, a, z in zip(STAGES, points, points[1:], strict=False):
            assert a is not None and z is not None
            stages[name].append(z - a)
    return latencies, stages


@dataclass
class RepResult:
    latencies: list[float]
    stages: dict[str, list[float]]
    floor: float
    events: int
    offered_rate: float
    missing_hooks: list[str]
    records: int  # events-topic records the SDK sent
    messages: int  # the messages they hold (an EventPack record holds several)


async def one_rep(
    broker: Broker, traffic: Traffic, warm: Traffic, sizes: Sizes, archive: Path
) -> RepResult:
    settings = bench_settings(broker.bootstrap, unique_prefix("latency"), archive_dir=archive)
    await create_topics(settings)
    topics = topic_specs(settings)
    codec = Codec()
    events = interleaved_events(
        traffic, codec, int(sizes.latency_rate * sizes.latency_s), sizes.latency_runs
    )
    trace_path = Path(tempfile.mkstemp(prefix="bench-trace-", suffix=".jsonl")[1])
    env = {**worker_env(settings, archive), "BENCH_TRACE_FILE": str(trace_path)}
    worker = start_module("bench.traced_worker", env, "traced-worker")
    try:
        with running(worker):
            target = worker_target(broker.bootstrap, settings, worker)
            await ready(target, warm.messages, warm.events, sizes)
            async with (
                OutputCounter(broker.bootstrap, topics.events.name, keep=True) as tap,
                OutputCounter(broker.bootstrap, topics.intercepts.name, keep=True) as icpt,
                OutputCounter(broker.bootstrap, topics.ledger.name) as ledger,
            ):
                base_ledger = await ledger.settle(0.3)
                recorder = Recorder.from_url(
                    settings.broker, settings=settings, producer_id="bench-latency"
                )
                await recorder.start()
                try:
                    recorded, took = await replay(recorder, events, sizes.latency_rate)
                    await recorder.flush()
                    await ledger.reach(base_ledger + len(recorded), [worker], sizes.wait_s)
                    await icpt.settle(0.5)
                finally:
                    await recorder.close()
                intercepts = list(icpt.records)
                events_read = list(tap.records)
            floor = await round_trip(broker.bootstrap, topics.deadletter.name)
        trace = TraceIndex.load(trace_path)
    finally:
        trace_path.unlink(missing_ok=True)
    latencies, stages = breakdown(intercepts, events_read, recorded, trace, codec)
    return RepResult(
        latencies,
        stages,
        floor,
        len(recorded),
        len(recorded) / took,
        trace.missing(),
        len(events_read),
        sum(len(codec.messages_of(r.value)) for _, r in events_read),
    )


def run(broker: Broker, traffic: Traffic, warm: Traffic, sizes: Sizes) -> list[Figure]:
    archive = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    label = (
        f"{sizes.latency_rate:,} events/s offered for {sizes.latency_s:g} s via the SDK, "
        f"{sizes.latency_runs} runs at a time"
    )
    p50 = Figure(
        "latency.p50_ms",
        f"Intercept latency p50, recorded -> intercept read ({label})",
        "ms",
        baseline_name="broker round trip (send -> readable), median",
        higher_is_better=False,
    )
    p99 = Figure(
        "latency.p99_ms",
        f"Intercept latency p99, recorded -> intercept read ({label})",
        "ms",
        baseline_name="broker round trip (send -> readable), median",
        target=f"p99 < {TARGET_P99_MS:g} ms",
        target_check=median_below(TARGET_P99_MS),
        higher_is_better=False,
    )
    stage_figs = {
        s: Figure(
            f"latency.stage.{s}_ms",
            f"Intercept latency stage {s} (mean per repetition)",
            "ms",
            higher_is_better=False,
        )
        for s in STAGES
    }
    samples = 0
    offered: list[float] = []
    per_record: list[float] = []
    per_pack: list[float] = []
    tails: dict[str, list[float]] = {s: [] for s in STAGES}
    stage_p99: dict[str, list[float]] = {s: [] for s in STAGES}
    for rep in range(sizes.reps):
        r = asyncio.run(one_rep(broker, traffic, warm, sizes, archive))
        if not r.latencies:
            raise RuntimeError(f"latency run: no intercept raised by {r.events} events")
        if r.missing_hooks:
            raise RuntimeError(
                "latency run: bench/traced_worker.py could not hook the worker ("
                + "; ".join(r.missing_hooks)
                + "); update its hooks to the runtime"
            )
        samples += len(r.latencies)
        offered.append(r.offered_rate)
        per_record.append(r.events / max(1, r.records))
        per_pack.append(r.messages / max(1, r.records))
        lat_ms = [x * 1000 for x in r.latencies]
        p50.add(percentile(lat_ms, 0.5), r.floor * 1000)
        p99.add(percentile(lat_ms, 0.99), r.floor * 1000)
        n_staged = len(r.stages[STAGES[0]])
        if n_staged:
            totals = [sum(r.stages[s][i] for s in STAGES) for i in range(n_staged)]
            cut = percentile(totals, 0.9)
            tail = [i for i in range(n_staged) if totals[i] >= cut]
            for s in STAGES:
                vals = [x * 1000 for x in r.stages[s]]
                stage_figs[s].add(max(statistics.fmean(vals), 1e-9))
                stage_p99[s].append(percentile(vals, 0.99))
                tails[s].append(statistics.fmean(vals[i] for i in tail))
        log(
            f"latency rep {rep + 1}: {len(r.latencies)} intercepts over {r.events} events "
            f"({r.offered_rate:,.0f} ev/s offered, {r.messages:,} messages in "
            f"{r.records:,} records), "
            f"p50 {percentile(lat_ms, 0.5):.0f} ms, p99 {percentile(lat_ms, 0.99):.0f} ms, "
            f"broker round trip {r.floor * 1000:.1f} ms; "
            "mean stages "
            + ", ".join(
                f"{s} {statistics.fmean(r.stages[s]) * 1000:.1f}" for s in STAGES if r.stages[s]
            )
        )
    offered_note = (
        f"{samples} intercepts over all repetitions; offered rate achieved "
        f"{statistics.median(offered):,.0f} events/s (median); the SDK sent "
        f"{statistics.median(per_record):.2f} events per record, "
        f"{statistics.median(per_pack):.2f} messages per record (medians)"
    )
    p50.notes = p99.notes = offered_note
    for s, fig in stage_figs.items():
        if stage_p99[s]:
            fig.notes = (
                f"p99 of the stage {statistics.median(stage_p99[s]):.1f} ms; mean over the "
                f"slowest 10% of intercepts {statistics.median(tails[s]):.1f} ms"
            )
    return [p50, p99, *(f for f in stage_figs.values() if f.values)]
