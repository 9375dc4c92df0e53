"""One contract, every transport: what the SDK publishes is what a processor reads.

The same seeded traffic goes through the embedded SQLite log and through Kafka (the real
protocol broker the suite starts); both must carry byte-identical events, keyed by run
id, every run's events in one ordered stream, nothing lost and nothing invented.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from fleetledger.kernel.config import load_settings
from fleetledger.kernel.sqlitelog import SqliteLog
from fleetledger.producers import MemoryTransport, Recorder, events_topic
from fleetledger.producers.simulator import simulate
from fleetledger.schemas import Codec

Messages = list[tuple[str, bytes, int]]  # key, value, partition
RUNS, SEED = 25, 11


async def _record(url: str, **overrides: object) -> None:
    settings = load_settings(broker=url, **overrides)
    async with Recorder.from_url(settings=settings) as rec:
        await simulate(rec, runs=RUNS, seed=SEED)


async def via_sqlite(tmp_path: Path, _prefix: str) -> Messages:
    db = tmp_path / "log.db"
    await _record(f"sqlite:///{db}")
    log = SqliteLog.open(db, create=False)
    rows = log.read(0, 1_000_000)
    log.close()
    return [(key, bytes(value), 0) for _, key, value in rows]


def split(key: str, value: bytes, partition: int) -> Messages:
    """A Kafka record's messages: a pack (SPEC 1.1) is keyed by its first message's run and
    holds messages of that partition only; each comes out under its own run id."""
    codec = Codec()
    if not codec.is_pack(value):
        return [(key, value, partition)]
    messages = codec.unpack(value)
    run_ids = [codec.decode(m)[0].run_id for m in messages]
    assert run_ids[0] == key
    return [(run_id, m, partition) for run_id, m in zip(run_ids, messages, strict=True)]


async def via_kafka(bootstrap: str, prefix: str) -> Messages:
    await _record(
        f"kafka://{bootstrap}", topic_prefix=prefix, enable_idempotence=False, partitions=3
    )
    topic = events_topic(load_settings(topic_prefix=prefix))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
        ]
        assert len(parts) == 3
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        out: Messages = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in parts])

        async def drain() -> None:
            while await behind():
                batch = await consumer.getmany(*parts, timeout_ms=500)
                for tp, records in batch.items():
                    for r in records:
                        out.extend(split(r.key.decode(), r.value, tp.partition))

        await asyncio.wait_for(drain(), timeout=30)
        return out
    finally:
        await consumer.stop()


async def reference() -> list[tuple[str, bytes]]:
    transport = MemoryTransport()
    async with Recorder(transport, linger_ms=None) as rec:
        await simulate(rec, runs=RUNS, seed=SEED)
    return list(transport.messages)


@pytest.fixture(params=["sqlite", pytest.param("kafka", marks=pytest.mark.kafka)])
def transport_reader(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[str], Awaitable[Messages]]:
    if request.param == "sqlite":
        return lambda prefix: via_sqlite(tmp_path, prefix)
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    return lambda prefix: via_kafka(bootstrap, prefix)


async def test_every_transport_carries_the_same_ordered_keyed_messages(
    transport_reader: Callable[[str], Awaitable[Messages]], topic_prefix: str
) -> None:
    got = await transport_reader(topic_prefix)
    expected = await reference()
    codec = Codec()

    # identical events, per key in the same order (partitions may interleave keys;
    # message boundaries depend on the transport's batching settings)
    def per_key(msgs: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
        d: dict[str, list[bytes]] = defaultdict(list)
        for k, v in msgs:
            d[k] += [codec.encode_event(e) for e in codec.decode(v)]
        return d

    assert per_key([(k, v) for k, v, _ in got]) == per_key(expected)
    # a run lives in one partition, its seq gap-free from 0, and keyed by its id
    partitions: dict[str, set[int]] = defaultdict(set)
    seqs: dict[str, list[int]] = defaultdict(list)
    for key, value, partition in got:
        partitions[key].add(partition)
        for event in codec.decode(value):
            assert event.run_id == key
            seqs[key].append(event.seq)
    assert all(len(p) == 1 for p in partitions.values())
    assert all(s == list(range(len(s))) for s in seqs.values())
    assert len(seqs) == RUNS
