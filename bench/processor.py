"""Measurement 2: ``fleetledger worker`` against the same-work raw baseline and a naive agent.

Per repetition and traffic shape (few busy runs: ~150-300 events per message; many slow
runs: ~1.1 events per message), each processor on a fresh topic prefix of its own:

* worker: ``fleetledger worker --broker kafka://...`` (a subprocess, the real command);
* raw: :mod:`bench.raw_worker` (a subprocess): aiokafka ``getmany`` + fleetledger's codec
  + the same chain + Decimal totals + duplicate drop + one ledger record per event with
  batched sends; no framework, no state store;
* Faust floor: :mod:`bench.faust_floor`, a Faust app configured like the worker that
  reads in the worker's batches and copies every message to one output record (batched
  sends), nothing else: what faust-streaming itself costs per message;
* naive (once per repetition, paired with both shapes): :mod:`bench.naive_faust`, a
  one-event-per-message Faust agent, on the same events re-encoded one per message.

All of a repetition's processors are started together and made ready (group Stable,
warm-up fleet processed), then measured one at a time while the others idle (their CPU
over each window is logged; the order worker/raw alternates between repetitions) by
:func:`bench.common.measure_window`: the clock runs from the start of publishing the
prepared batches to the last ledger record readable, and the process's CPU time is read
at both ends.  Figures: events/s (ratio worker/raw per repetition), CPU microseconds per
event (worker and raw), records written per input event (every topic the processor
writes, changelogs included) and the broker's CPU per event while it served each.

Context, without Kafka: the pipeline alone (``Pipeline.handle_many`` over in-memory
ports, the worker's batching of 100 messages) on the same messages, in CPU microseconds
per event, against decode + hash only.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from fleetledger.processors.runtimes.kafka_io import TopicSpec, ensure_topics, topic_specs
from fleetledger.schemas.codec import Codec

from .common import (
    PARTITIONS,
    Broker,
    Figure,
    Sizes,
    Target,
    Window,
    bench_settings,
    create_topics,
    kafka_compression,
    log,
    measure_window,
    median_at_most,
    partition_of,
    ratio_at_least,
    ready,
    running,
    session_timeout,
    start_module,
    start_worker,
    stop_all,
    unique_prefix,
    worker_target,
)
from .traffic import Traffic, single_event_messages

#: Targets of issue 12, per shape: (worker/raw throughput ratio, worker CPU us/event).
TARGETS = {"few_busy": (0.9, 30.0), "many_slow": (0.6, 60.0), "many_slow_packed": (0.6, 60.0)}


async def raw_target(broker: Broker, archive: Path) -> Target:
    settings = bench_settings(broker.bootstrap, unique_prefix("raw"), archive_dir=archive)
    await create_topics(settings)
    topics = topic_specs(settings)
    group = f"{settings.topic_prefix}-raw"
    proc = start_module(
        "bench.raw_worker",
        {
            "BENCH_BOOTSTRAP": broker.bootstrap,
            "BENCH_EVENTS_TOPIC": topics.events.name,
            "BENCH_LEDGER_TOPIC": topics.ledger.name,
            "BENCH_GROUP": group,
            "BENCH_PARTITIONS": str(PARTITIONS),
            "BENCH_COMPRESSION": kafka_compression(settings) or "",
            "BENCH_SESSION_TIMEOUT_S": str(session_timeout()),
        },
        "raw",
    )
    target = Target(
        proc=proc,
        bootstrap=broker.bootstrap,
        events_topic=topics.events.name,
        output_topic=topics.ledger.name,
        group=group,
        written_topics=(topics.ledger.name,),
        compression=kafka_compression(settings),
    )
    return target


async def worker_target_started(broker: Broker, archive: Path, name: str) -> Target:
    settings = bench_settings(broker.bootstrap, unique_prefix(name), archive_dir=archive)
    await create_topics(settings)
    return worker_target(broker.bootstrap, settings, start_worker(settings, archive))


async def floor_target(broker: Broker, archive: Path) -> Target:
    settings = bench_settings(broker.bootstrap, unique_prefix("floor"), archive_dir=archive)
    await create_topics(settings)
    topics = topic_specs(settings)
    group = f"{settings.topic_prefix}-floor"
    proc = start_module(
        "bench.faust_floor",
        {
            "BENCH_BOOTSTRAP": broker.bootstrap,
            "BENCH_EVENTS_TOPIC": topics.events.name,
            "BENCH_OUTPUT_TOPIC": topics.ledger.name,
            "BENCH_GROUP": group,
            "BENCH_SESSION_TIMEOUT_S": str(session_timeout()),
            "BENCH_COMPRESSION": kafka_compression(settings) or "",
        },
        "faust-floor",
    )
    return Target(
        proc=proc,
        bootstrap=broker.bootstrap,
        events_topic=topics.events.name,
        output_topic=topics.ledger.name,
        group=group,
        written_topics=(topics.ledger.name,),
        compression=kafka_compression(settings),
    )


async def naive_target(broker: Broker) -> Target:
    prefix = unique_prefix("naive")
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
    await ensure_topics(broker.bootstrap, specs, timeout_s=30.0)
    group = f"{prefix}-naive"
    proc = start_module(
        "bench.naive_faust",
        {"BENCH_BOOTSTRAP": broker.bootstrap, "BENCH_PREFIX": prefix, "BENCH_GROUP": group},
        "naive",
    )
    return Target(
        proc=proc,
        bootstrap=broker.bootstrap,
        events_topic=specs[0].name,
        output_topic=specs[1].name,
        group=group,
        written_topics=(specs[1].name,),
    )


@dataclass
class RepWindows:
    """One repetition: per shape (worker, raw, Faust floor windows), and the naive window."""

    shapes: dict[str, tuple[Window, Window, Window]]
    naive: Window


async def _rep(
    broker: Broker,
    shapes: dict[str, Traffic],
    warm: Traffic,
    sizes: Sizes,
    archive: Path,
    *,
    worker_first: bool,
    naive_messages: Sequence[tuple[str, bytes]],
    naive_warm: Sequence[tuple[str, bytes]],
) -> RepWindows:
    """Start every processor of the repetition (each on its own prefix), make them all
    ready, then measure them one at a time (the others idle)."""
    targets: dict[str, tuple[Target, Target, Target]] = {}
    for name in shapes:
        worker = await worker_target_started(broker, archive, f"proc-{name}")
        targets[name] = (
            worker,
            await raw_target(broker, archive),
            await floor_target(broker, archive),
        )
    naive = await naive_target(broker)
    everyone = [t for group in targets.values() for t in group] + [naive]
    floors = {id(group[2]) for group in targets.values()}

    def warm_outputs(t: Target) -> int:  # the floor writes one record per message
        return len(warm.messages) if id(t) in floors else warm.events

    with running(*(t.proc for t in everyone)):
        await asyncio.gather(
            *(
                ready(
                    t, warm.messages, len(warm.messages) if id(t) in floors else warm.events, sizes
                )
                for t in everyone
                if t is not naive
            ),
            ready(naive, naive_warm, len(naive_warm), sizes),
        )
        out: dict[str, tuple[Window, Window, Window]] = {}
        for name, traffic in shapes.items():
            worker, raw, floor = targets[name]
            windows: dict[int, Window] = {}
            for t in [worker, raw] if worker_first else [raw, worker]:
                others = [o.proc for o in everyone if o is not t]
                windows[id(t)] = await measure_window(
                    t, traffic.messages, traffic.events, sizes, broker, others=others
                )
            windows[id(floor)] = await measure_window(
                floor,
                traffic.messages,
                traffic.events,
                sizes,
                broker,
                others=[o.proc for o in everyone if o is not floor],
                outputs=len(traffic.messages),
                count_records=False,
            )
            out[name] = (windows[id(worker)], windows[id(raw)], windows[id(floor)])
            stop_all([worker.proc, raw.proc, floor.proc])  # measured: stop idling beside the rest
            everyone = [o for o in everyone if o not in (worker, raw, floor)]
        others = [o.proc for o in everyone if o is not naive]
        naive_w = await measure_window(
            naive,
            naive_messages,
            len(naive_messages),
            sizes,
            broker,
            count_records=False,
            others=others,
        )
    return RepWindows(out, naive_w)


def pipeline_cpu(traffic: Traffic, batch: int = 100) -> tuple[float, float]:
    """CPU us/event of ``Pipeline.handle_many`` over in-memory ports (the worker's
    batching: per partition, up to ``batch`` messages per call), and of decode + hash."""
    from fleetledger.processors.canonical import event_hash
    from fleetledger.processors.core import CoreConfig
    from fleetledger.processors.memory import MemoryEntries, MemoryStates
    from fleetledger.processors.pipeline import Pipeline, SourcePosition

    codec = Codec()
    try:
        pipe = Pipeline(codec, CoreConfig(), MemoryStates(), MemoryEntries(), seal_finished=True)
    except TypeError:  # a pipeline without the option
        pipe = Pipeline(codec, CoreConfig(), MemoryStates(), MemoryEntries())
    by_partition: dict[int, list[tuple[bytes, SourcePosition]]] = {}
    for i, (key, value) in enumerate(traffic.messages):
        p = partition_of(key, PARTITIONS)
        by_partition.setdefault(p, []).append((value, SourcePosition("bench", p, i)))
    now = datetime.now(UTC)
    t0 = time.process_time()
    for msgs in by_partition.values():
        for start in range(0, len(msgs), batch):
            pipe.handle_many(msgs[start : start + batch], now)
    full = time.process_time() - t0
    t0 = time.process_time()
    for _key, value in traffic.messages:
        for message in codec.messages_of(value):
            for obj in codec.decode_objs(message):
                event_hash(obj)
    floor = time.process_time() - t0
    return full / traffic.events * 1e6, floor / traffic.events * 1e6


def run(broker: Broker, shapes: dict[str, Traffic], warm: Traffic, sizes: Sizes) -> list[Figure]:
    codec = Codec()
    archive = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    naive_source = shapes["few_busy"]
    naive_messages = single_event_messages(naive_source, codec)[: sizes.naive_events]
    naive_warm = single_event_messages(warm, codec)
    figs: dict[str, dict[str, Figure]] = {}
    for name, traffic in shapes.items():
        label = name.replace("_", " ")
        ratio_target, cpu_target = TARGETS[name]
        epm = f"{traffic.events:,} events in {len(traffic.messages):,} messages"
        epm += f" ({traffic.events_per_message:.2f} events/message) per repetition"
        figs[name] = {
            "vs_raw": Figure(
                f"processor.{name}.vs_raw",
                f"Worker, {label}, {traffic.events:,} events (vs same-work raw aiokafka loop)",
                "events/s",
                baseline_name="raw loop: getmany + codec + chain + Decimal totals + dedupe + "
                "1 ledger record/event, batched sends",
                target=f"ratio >= {ratio_target}",
                target_check=ratio_at_least(ratio_target),
                notes=f"{epm}; window: start of publishing -> last ledger record readable",
            ),
            "cpu_us": Figure(
                f"processor.{name}.cpu_us",
                f"Worker CPU per event, {label} (vs the raw loop)",
                "us/event",
                baseline_name="raw loop, same window method",
                target=f"<= {cpu_target:g} us/event",
                target_check=median_at_most(cpu_target),
                higher_is_better=False,
                notes="utime+stime of the process over the window / events",
            ),
            "records": Figure(
                f"processor.{name}.records_per_event",
                f"Records written per input event, {label} (every topic, changelogs included)",
                "records/event",
                baseline_name="raw loop (ledger only)",
                higher_is_better=False,
                notes="end offsets of every topic the processor writes, after the window "
                "+ 1.5 s, minus before",
            ),
            "broker": Figure(
                f"processor.{name}.broker_cpu_us",
                f"Broker CPU per event while serving the worker, {label} (vs the raw loop)",
                "us/event",
                baseline_name="broker CPU while serving the raw loop",
                higher_is_better=False,
                notes="the test broker's utime+stime over the window / events",
            ),
            "vs_naive": Figure(
                f"processor.{name}.vs_naive",
                f"Worker, {label} (vs naive one-event-per-message Faust agent)",
                "events/s",
                baseline_name="naive Faust agent: rfc8785 chain + table totals, "
                f"{len(naive_messages):,} single-event messages",
                target=">= 5x the naive agent" if name == "few_busy" else None,
                target_check=ratio_at_least(5.0) if name == "few_busy" else None,
                notes="the naive agent reads one event per message whatever the shape: "
                "measured once per repetition (few-busy events) and paired with both shapes",
            ),
            "floor": Figure(
                f"processor.{name}.vs_faust_floor",
                f"Worker, {label} (vs the Faust floor: take_events + copy each message)",
                "events/s",
                baseline_name="Faust app like the worker copying every message to one output, "
                "batched sends, nothing else",
                notes="the floor's events/s counts the events in the messages it copied",
            ),
            "floor_cpu": Figure(
                f"processor.{name}.faust_floor_cpu_us",
                f"Faust floor CPU per event, {label} (vs the worker)",
                "us/event",
                baseline_name="the worker, same window method",
                higher_is_better=False,
                notes="what faust-streaming costs before any of the worker's own work; "
                "ratio = floor / worker",
            ),
            "pipeline": Figure(
                f"processor.{name}.pipeline_cpu_us",
                f"Pipeline alone (in-memory ports, no Kafka), {label}, CPU per event "
                "(vs decode + hash)",
                "us/event",
                baseline_name="Codec.decode_objs + event_hash of every event",
                higher_is_better=False,
                notes="in the harness process; the worker's CPU minus this is what Kafka, "
                "Faust, tables and sends cost",
            ),
        }
    for rep in range(sizes.reps):
        r = asyncio.run(
            _rep(
                broker,
                shapes,
                warm,
                sizes,
                archive,
                worker_first=rep % 2 == 0,
                naive_messages=naive_messages,
                naive_warm=naive_warm,
            )
        )
        log(f"processor rep {rep + 1}: naive {r.naive.describe()}")
        for name, (w, raw, floor) in r.shapes.items():
            f = figs[name]
            f["floor"].add(w.rate, floor.rate)
            f["floor_cpu"].add(floor.cpu_us, w.cpu_us)
            f["vs_raw"].add(w.rate, raw.rate)
            f["cpu_us"].add(w.cpu_us, raw.cpu_us)
            f["records"].add(w.records_per_event, raw.records_per_event)
            f["broker"].add(max(w.broker_cpu_us, 1e-9), max(raw.broker_cpu_us, 1e-9))
            f["vs_naive"].add(w.rate, r.naive.rate)
            pipe_us, floor_us = pipeline_cpu(shapes[name])
            f["pipeline"].add(pipe_us, floor_us)
            log(
                f"processor {name} rep {rep + 1}: worker {w.describe()}; raw {raw.describe()}; "
                f"Faust floor {floor.describe()}; "
                f"pipeline alone {pipe_us:.1f} us/event (decode+hash {floor_us:.1f})"
            )
    return [fig for per_shape in figs.values() for fig in per_shape.values()]
