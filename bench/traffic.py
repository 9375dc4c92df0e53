"""Benchmark traffic: fleet-simulator output captured once per shape, replayed as bytes.

Two shapes (:data:`SHAPES`):

* ``few_busy`` - the simulator's ``few_busy`` preset (long, dense runs).  A busy run
  records faster than the SDK's linger, so its messages are cut by size
  (``batch_max_events``) or at the end of the run: the simulator runs with its virtual
  linger off.
* ``many_slow`` - the ``many_slow`` preset (short runs spread thin, many open at once).
  Events are far apart, so the SDK's linger cuts almost every event into its own message.

``default`` is the simulator's default fleet (what ``fleetledger demo`` records).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING, Any

import fastavro

from fleetledger.producers import MemoryTransport, Recorder
from fleetledger.producers.simulator import SHAPES as SIM_SHAPES
from fleetledger.producers.simulator import simulate
from fleetledger.schemas.codec import HEADER_LEN, Codec

if TYPE_CHECKING:
    from .common import Sizes

MAGIC = b"\xc3\x01"

#: shape -> (simulator preset, virtual linger in ms: None = cut by size/end of run only,
#: "recorder" = the recorder's linger)
SHAPES: dict[str, tuple[str, Any]] = {
    "few_busy": ("few_busy", None),
    "many_slow": ("many_slow", "recorder"),
    "default": ("default", "recorder"),
}


@dataclass
class Traffic:
    """Messages (key = run id, value = single-object EventBatch) in publish order."""

    shape: str
    runs: int
    events: int
    messages: list[tuple[str, bytes]]
    seconds: float  # simulate() wall time into memory
    _records: list[tuple[str, list[dict[str, Any]]]] | None = field(default=None, repr=False)

    @property
    def events_per_message(self) -> float:
        return self.events / len(self.messages) if self.messages else 0.0

    @property
    def bytes(self) -> int:
        return sum(len(v) for _, v in self.messages)

    def records(self, codec: Codec) -> list[tuple[str, list[dict[str, Any]]]]:
        """Each message's event records (fastavro dicts), decoded once and cached."""
        if self._records is None:
            self._records = [
                (k, codec.decode_records(m)) for k, v in self.messages for m in codec.messages_of(v)
            ]
        return self._records

    def describe(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "runs": self.runs,
            "events": self.events,
            "messages": len(self.messages),
            "events_per_message": round(self.events_per_message, 2),
            "mean_message_bytes": round(self.bytes / max(1, len(self.messages))),
        }


def packed(
    traffic: Traffic,
    codec: Codec,
    *,
    events_per_s: float,
    linger_ms: float,
    partitions: int,
    max_pack_bytes: int = 900_000,
) -> Traffic:
    """``traffic`` as the SDK's Kafka transport packs it when one process records it at
    ``events_per_s``: messages are handed over evenly spaced in publish order, and per
    partition the messages within ``linger_ms`` of a pack's first one (up to
    ``max_pack_bytes``) form one record (a window with one message sends it as it is)."""
    from fleetledger.kernel.kafka import partition_for

    out: list[tuple[str, bytes]] = []
    events_per_message = traffic.events / max(1, len(traffic.messages))
    spacing = events_per_message / events_per_s  # seconds between two handed-over messages
    window = linger_ms / 1000
    open_packs: dict[int, tuple[float, str, list[bytes], int]] = {}

    def seal(p: int) -> None:
        _t0, key, values, _size = open_packs.pop(p)
        out.append((key, values[0] if len(values) == 1 else codec.encode_pack(values)))

    for i, (key, value) in enumerate(traffic.messages):
        t = i * spacing
        for p in [p for p, (t0, *_rest) in open_packs.items() if t >= t0 + window]:
            seal(p)
        p = partition_for(key, partitions)
        if p in open_packs and open_packs[p][3] + len(value) > max_pack_bytes:
            seal(p)
        t0, first, values, size = open_packs.get(p, (t, key, [], 0))
        open_packs[p] = (t0, first, [*values, value], size + len(value))
    for p in sorted(open_packs, key=lambda p: open_packs[p][0]):
        seal(p)
    return Traffic(f"{traffic.shape}_packed", traffic.runs, traffic.events, out, traffic.seconds)


def sdk_packed(traffic: Traffic, events_per_s: float) -> Traffic:
    """``traffic`` as the SDK's Kafka transport sends it when one process records the
    fleet at ``events_per_s`` (its linger: the default setting; the bench's partitions)."""
    from fleetledger.kernel.config import Settings

    from .common import PARTITIONS

    return packed(
        traffic,
        Codec(),
        events_per_s=events_per_s,
        linger_ms=Settings().linger_ms,
        partitions=PARTITIONS,
    )


def simulate_kwargs(shape: str) -> dict[str, Any]:
    preset, linger = SHAPES[shape]
    kw: dict[str, Any] = dict(SIM_SHAPES[preset])
    if linger != "recorder":
        kw["linger_ms"] = linger
    return kw


async def _generate(shape: str, runs: int, seed: int) -> Traffic:
    transport = MemoryTransport()
    recorder = Recorder(transport, producer_id="fleetledger-bench")
    t0 = time.perf_counter()
    async with recorder:
        summary = await simulate(recorder, runs=runs, seed=seed, **simulate_kwargs(shape))
    seconds = time.perf_counter() - t0
    return Traffic(shape, runs, summary.events, list(transport.messages), seconds)


def generate(shape: str, runs: int, seed: int = 11) -> Traffic:
    """Simulate ``runs`` runs of ``shape`` into memory (deterministic for the seed)."""
    return asyncio.run(_generate(shape, runs, seed))


def runs_for(shape: str, events: int, seed: int = 11, pilot_runs: int = 0) -> int:
    """Runs of ``shape`` that make about ``events`` events (estimated from a small pilot)."""
    pilot_runs = pilot_runs or {"few_busy": 4, "many_slow": 60}.get(shape, 30)
    pilot = generate(shape, pilot_runs, seed=seed + 1000)
    per_run = max(1.0, pilot.events / max(1, pilot.runs))
    return max(1, math.ceil(events / per_run * 1.05))


def generate_events(shape: str, events: int, seed: int = 11) -> Traffic:
    """At least ``events`` events of ``shape`` (whole runs; deterministic for the seed)."""
    runs = runs_for(shape, events, seed)
    while True:
        traffic = generate(shape, runs, seed)
        if traffic.events >= events:
            return traffic
        runs = math.ceil(runs * events / max(1, traffic.events) * 1.05)


def warmup_fleet(runs: int) -> Traffic:
    """A small default-shape fleet (own run ids) that every processor handles before a
    measured window starts."""
    return generate("default", runs, seed=90_001)


# --------------------------------------------------------------------------- re-encoding


class Encoder:
    """Plain fastavro single-object encoding with the current writer schemas."""

    def __init__(self, codec: Codec) -> None:
        self.batch = codec.schema("batch")
        self.event = codec.schema("event")

    def encode_batch(self, run_id: str, records: list[dict[str, Any]]) -> bytes:
        buf = BytesIO()
        buf.write(MAGIC)
        buf.write(self.batch.fingerprint)
        fastavro.schemaless_writer(buf, self.batch.schema, {"run_id": run_id, "events": records})
        return buf.getvalue()

    def encode_event(self, record: dict[str, Any]) -> bytes:
        buf = BytesIO()
        buf.write(MAGIC)
        buf.write(self.event.fingerprint)
        fastavro.schemaless_writer(buf, self.event.schema, record)
        return buf.getvalue()


class Decoder:
    """Plain fastavro decoding of single-object messages (the current writer schemas)."""

    def __init__(self, codec: Codec) -> None:
        self.batch = codec.schema("batch").schema
        self.event = codec.schema("event").schema

    def batch_events(self, value: bytes) -> int:
        buf = BytesIO(value)
        buf.seek(HEADER_LEN)
        rec = fastavro.schemaless_reader(buf, self.batch, None, return_record_name=False)
        return len(rec["events"])  # type: ignore[call-overload,index]

    def event_record(self, value: bytes) -> dict[str, Any]:
        buf = BytesIO(value)
        buf.seek(HEADER_LEN)
        rec: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment]
            buf, self.event, None, return_record_name=False
        )
        return rec


def single_event_messages(traffic: Traffic, codec: Codec) -> list[tuple[str, bytes]]:
    """The same events, one single-object TraceEvent per message, in the same order."""
    enc = Encoder(codec)
    return [(k, enc.encode_event(r)) for k, recs in traffic.records(codec) for r in recs]


def cloned_fleet(
    base: Traffic, codec: Codec, *, runs: int, events: int, events_per_message: int = 10
) -> tuple[list[list[tuple[str, bytes]]], list[tuple[str, bytes]]]:
    """``runs`` concurrent runs cloned from ``base``'s runs (new run and event ids), about
    ``events`` events in all *before* their terminal events.

    Returns ``(in_flight, terminals)``: ``in_flight`` are rounds of messages of
    ``events_per_message`` events each, emitted round-robin so that every run is open
    (started, not finished) until the very end; ``terminals`` is one message per run
    with its terminal event, which finishes it."""
    import uuid

    by_run: dict[str, list[dict[str, Any]]] = {}
    for run_id, recs in base.records(codec):
        by_run.setdefault(run_id, []).extend(recs)
    templates = [recs for recs in by_run.values() if len(recs) >= 3]
    per_run = max(2, events // runs)  # events before the terminal one
    enc = Encoder(codec)
    scripts: list[list[dict[str, Any]]] = []
    for i in range(runs):
        tpl = templates[i % len(templates)]
        # repeat the middle of the template to reach per_run events, keep start and end
        body = tpl[1:-1] or tpl[:1]
        seq_events = [tpl[0]]
        while len(seq_events) < per_run:
            seq_events.extend(body[: per_run - len(seq_events)])
        seq_events.append(tpl[-1])
        scripts.append(seq_events)
    run_ids = [f"clone-{i:06d}-{uuid.uuid4().hex[:8]}" for i in range(runs)]

    def records(i: int, start: int, end: int) -> list[dict[str, Any]]:
        out = []
        for seq in range(start, end):
            r = dict(scripts[i][seq])
            r["run_id"] = run_ids[i]
            r["seq"] = seq
            r["event_id"] = uuid.UUID(int=(i << 32) | seq, version=4)
            out.append(r)
        return out

    in_flight: list[list[tuple[str, bytes]]] = []
    pos = [0] * runs
    while any(pos[i] < per_run for i in range(runs)):
        chunk: list[tuple[str, bytes]] = []
        for i in range(runs):
            if pos[i] >= per_run:
                continue
            end = min(per_run, pos[i] + events_per_message)
            chunk.append((run_ids[i], enc.encode_batch(run_ids[i], records(i, pos[i], end))))
            pos[i] = end
        in_flight.append(chunk)
    terminals = [
        (run_ids[i], enc.encode_batch(run_ids[i], records(i, per_run, per_run + 1)))
        for i in range(runs)
    ]
    return in_flight, terminals


def interleaved_events(traffic: Traffic, codec: Codec, limit: int, concurrent: int) -> list[Any]:
    """The first ``limit`` events (TraceEvent models) of ``traffic``'s runs as a fleet of
    ``concurrent`` runs at a time would record them: runs start in their order, each
    active run records its next event in turn (round-robin), and a finished run's slot
    goes to the next run."""
    by_run: dict[str, list[Any]] = {}
    for _, v in traffic.messages:
        for e in codec.decode(v):
            by_run.setdefault(e.run_id, []).append(e)
    pending = [sorted(evs, key=lambda e: e.seq) for evs in by_run.values()]
    pending.reverse()  # pop() takes the next run in order
    active: list[list[Any]] = []
    out: list[Any] = []
    while len(out) < limit and (active or pending):
        while len(active) < concurrent and pending:
            active.append(pending.pop())
        still = []
        for run in active:
            out.append(run.pop(0))
            if run:
                still.append(run)
        active = still
    return out[:limit]


#: The worker's traffic shapes of the tools that take one (``--shape``): the two
#: simulated shapes, and each as the SDK packs it.
WORKER_SHAPES = ("few_busy", "many_slow", "few_busy_packed", "many_slow_packed")


def shape_traffic(shape: str, sizes: Sizes, events: int | None = None) -> Traffic:
    """The traffic of one of :data:`WORKER_SHAPES`: ``events`` events (by default the
    shape's number in ``sizes``), a ``_packed`` shape packed as the SDK packs it at the
    latency measurement's rate."""
    base = shape.removesuffix("_packed")
    default = {"few_busy": sizes.busy_events, "many_slow": sizes.slow_events}[base]
    traffic = generate_events(base, events or default)
    return traffic if shape == base else sdk_packed(traffic, sizes.latency_rate)
