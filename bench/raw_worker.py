"""The same-work raw baseline: a plain aiokafka loop, no framework.

It does the subset of the worker's job that every ledger processor must do, with
fleetledger's own parts, and nothing else:

* ``getmany`` from the events topic (consumer group, offsets committed after the outputs
  of a step are acknowledged: at-least-once);
* decode with fleetledger's codec (``Codec.decode_objs``, the worker's decoder);
* duplicate drop by seq (a run's next expected seq, kept in memory);
* the same sha256 chain (``fleetledger.processors.canonical``: ``event_hash`` over the
  RFC 8785 canonical JSON, ``link``, ``genesis``);
* exact ``Decimal`` cost and token totals per run;
* one output record per event: the ledger entry (the worker's JSON, key ``run:seq``) to
  the run's partition of the ledger topic, in batches (``create_batch``/``send_batch``).

No totals/intercepts/bundles records, no gap handling, no durable state: it is the floor
of the work, measured by the same method as the worker (see :mod:`bench.common`).

Run by the harness as ``python -m bench.raw_worker`` with ``BENCH_BOOTSTRAP``,
``BENCH_EVENTS_TOPIC``, ``BENCH_LEDGER_TOPIC``, ``BENCH_GROUP``, ``BENCH_PARTITIONS``,
``BENCH_COMPRESSION`` and ``BENCH_SESSION_TIMEOUT_S`` in the environment; stopped by
SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from fleetledger.kernel.errors import FleetLedgerError
from fleetledger.processors.canonical import event_hash, genesis, link
from fleetledger.processors.runtimes.kafka_io import partition_for
from fleetledger.schemas.codec import Codec


@dataclass
class RunTotals:
    """What the raw loop keeps per run."""

    head: bytes
    next_seq: int = 0
    cost: Decimal = field(default_factory=lambda: Decimal(0))
    input_tokens: int = 0
    output_tokens: int = 0
    events: int = 0


class RawLoop:
    def __init__(self, codec: Codec, ledger_topic: str, partitions: int) -> None:
        self.codec = codec
        self.ledger_topic = ledger_topic
        self.partitions = partitions
        self.runs: dict[str, RunTotals] = {}
        self.duplicates = 0
        self.undecodable = 0

    def handle(self, value: bytes, out: dict[int, list[tuple[bytes, bytes]]]) -> None:
        """One record (a pack: each of its messages): decode, drop duplicates, chain,
        total, queue one record per event."""
        objs = []
        try:
            messages = self.codec.messages_of(value)
        except FleetLedgerError:
            messages = []
            self.undecodable += 1
        for message in messages:
            try:
                objs += self.codec.decode_objs(message)
            except FleetLedgerError:
                self.undecodable += 1
        for obj in objs:
            run_id: str = obj["run_id"]
            state = self.runs.get(run_id)
            if state is None:
                state = self.runs[run_id] = RunTotals(head=genesis(run_id))
            seq: int = obj["seq"]
            if seq < state.next_seq:
                self.duplicates += 1
                continue
            h = event_hash(obj)
            entry_hash = link(state.head, h)
            if obj["type"] == "model_io":
                p = obj["payload"]
                state.cost += Decimal(p["cost"]["amount"])
                state.input_tokens += p["gen_ai_usage_input_tokens"]
                state.output_tokens += p["gen_ai_usage_output_tokens"]
            value_out = orjson.dumps(
                {
                    "run_id": run_id,
                    "seq": seq,
                    "event_hash": h.hex(),
                    "prev_hash": state.head.hex(),
                    "entry_hash": entry_hash.hex(),
                    "event": obj,
                }
            )
            state.head = entry_hash
            state.next_seq = seq + 1
            state.events += 1
            key = f"{run_id}:{seq:012d}".encode()
            out.setdefault(partition_for(run_id, self.partitions), []).append((key, value_out))


async def send_all(
    producer: AIOKafkaProducer, topic: str, out: dict[int, list[tuple[bytes, bytes]]]
) -> None:
    futures: list[asyncio.Future[Any]] = []
    for p, records in out.items():
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=p))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=p))
    if futures:
        await asyncio.gather(*futures)


async def main_async() -> None:
    env = os.environ
    bootstrap = env["BENCH_BOOTSTRAP"]
    events_topic = env["BENCH_EVENTS_TOPIC"]
    ledger_topic = env["BENCH_LEDGER_TOPIC"]
    partitions = int(env.get("BENCH_PARTITIONS", "4"))
    compression = env.get("BENCH_COMPRESSION") or None
    session_ms = int(float(env.get("BENCH_SESSION_TIMEOUT_S", "6")) * 1000)
    consumer = AIOKafkaConsumer(
        events_topic,
        bootstrap_servers=bootstrap,
        group_id=env["BENCH_GROUP"],
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=session_ms,
        heartbeat_interval_ms=max(300, session_ms // 10),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        compression_type=compression,
        max_request_size=2_000_000,
        max_batch_size=1_000_000,
        linger_ms=0,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await producer.start()
    await consumer.start()
    raw = RawLoop(Codec(), ledger_topic, partitions)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            if not batches:
                continue
            out: dict[int, list[tuple[bytes, bytes]]] = {}
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            for tp, records in batches.items():
                for r in records:
                    raw.handle(r.value, out)
                offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
            await send_all(producer, ledger_topic, out)
            await consumer.commit(offsets)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await producer.stop()


def main() -> None:
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
