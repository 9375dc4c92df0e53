"""The Kafka transport against the session's Kafka-protocol test broker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from fleetledger.kernel.config import load_settings
from fleetledger.kernel.errors import DeliveryError
from fleetledger.processors.runtimes.kafka_io import partition_for
from fleetledger.producers import KafkaTransport, Recorder, ensure_topic, events_topic
from fleetledger.schemas import (
    Codec,
    EventType,
    ToolCall,
    TraceEvent,
    WorkflowSnapshot,
    WorkflowStep,
)

from .kafka_broker import TansuBroker

pytestmark = pytest.mark.kafka

WORKFLOW = WorkflowSnapshot(
    name="kafka-smoke", revision="1", steps=(WorkflowStep(id="s", name="S", kind="llm"),)
)


async def read_all(
    bootstrap: str, topic: str, partitions: int, expected: int
) -> dict[int, list[Any]]:
    """Every record of ``topic`` per partition, oldest first, with a plain consumer."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: dict[int, list[Any]] = {p: [] for p in range(partitions)}
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        for _ in range(60):
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for tp, records in batch.items():
                out[tp.partition].extend(records)
            if sum(len(v) for v in out.values()) >= expected:
                break
    finally:
        await consumer.stop()
    return out


async def read_all_messages(
    bootstrap: str, topic: str, partitions: int, expected: int, codec: Codec
) -> dict[int, list[tuple[str, bytes]]]:
    """Every message of ``topic`` per partition in log order, packs split: (record key,
    message bytes); reads until ``expected`` messages are in."""
    out: dict[int, list[tuple[str, bytes]]] = {p: [] for p in range(partitions)}
    for _ in range(20):
        out = {p: [] for p in range(partitions)}
        for partition, recs in (await read_all(bootstrap, topic, partitions, 1)).items():
            for record in recs:
                key = record.key.decode()
                values = codec.messages_of(record.value)
                out[partition] += [(key, v) for v in values]
        if sum(len(v) for v in out.values()) >= expected:
            break
        await asyncio.sleep(0.25)
    return out


async def test_kafka_transport_keys_runs_to_one_partition_in_order(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = load_settings(
        broker=f"kafka://{kafka_bootstrap}",
        topic_prefix=topic_prefix,
        partitions=3,
        enable_idempotence=False,
    )
    topic = events_topic(settings)
    rec = Recorder.from_url(settings=settings, producer_id="kafka-test", batch_max_events=4)
    assert isinstance(rec.transport, KafkaTransport)
    async with rec:
        runs = [await rec.start_run(agent_id=f"a{i}", workflow=WORKFLOW) for i in range(8)]
        for k in range(9):
            for run in runs:
                await run.tool_call(name="fetch", duration_ms=k, step_id="fetch")
        for run in runs:
            await run.complete()
    sent = rec.messages_sent
    assert sent >= 8 * 3

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert topic in await admin.list_topics()
    finally:
        await admin.close()
    # the topic exists now: ensure_topic leaves it alone
    assert await ensure_topic(kafka_bootstrap, topic, partitions=3) is False

    codec = Codec()
    records = await read_all_messages(kafka_bootstrap, topic, 3, sent, codec)
    assert sum(len(v) for v in records.values()) == sent
    partition_of: dict[str, set[int]] = {}
    seqs: dict[str, list[int]] = {}
    for partition, messages in records.items():
        for key, value in messages:
            events = codec.decode(value)
            run_id = events[0].run_id
            assert {e.run_id for e in events} == {run_id}
            assert partition == partition_for(key, 3) == partition_for(run_id, 3)
            partition_of.setdefault(run_id, set()).add(partition)
            seqs.setdefault(run_id, []).extend(e.seq for e in events)
    assert sorted(partition_of) == sorted(r.run_id for r in runs)
    assert all(len(parts) == 1 for parts in partition_of.values())  # same key, same partition
    assert all(s == list(range(11)) for s in seqs.values())  # ordered, gap-free
    assert len({p for parts in partition_of.values() for p in parts}) > 1


async def test_ensure_topic_creates_the_events_topic_once(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.events"
    assert await ensure_topic(kafka_bootstrap, topic, partitions=2) is True
    assert await ensure_topic(kafka_bootstrap, topic, partitions=2) is False
    transport = KafkaTransport(kafka_bootstrap, topic, enable_idempotence=False, compression="none")
    await transport.start()
    try:
        async with Recorder(transport, linger_ms=None) as rec:
            run = await rec.start_run(agent_id="a", workflow=WORKFLOW, run_id="one")
            await run.complete()
    finally:
        await transport.close()
    records = await read_all(kafka_bootstrap, topic, 2, 1)
    values = [r for recs in records.values() for r in recs]
    assert len(values) == 1 and values[0].key == b"one"
    assert [e.type for e in Codec().decode(values[0].value)] == [
        EventType.RUN_STARTED,
        EventType.RUN_COMPLETED,
    ]


async def test_a_broker_that_goes_away_surfaces_as_delivery_error() -> None:
    """A private broker (this test stops it), not the session's shared one."""
    broker = TansuBroker(max_lifetime_s=300)
    broker.start()
    try:
        await ensure_topic(broker.bootstrap, "gone.events", partitions=1)
        transport = KafkaTransport(
            broker.bootstrap, "gone.events", enable_idempotence=False, request_timeout_ms=2_000
        )
        rec = Recorder(transport, linger_ms=None)
        await rec.start()
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW)
        await rec.flush()  # delivered while the broker is up
        broker.stop()
        await run.tool_call(name="fetch", duration_ms=1)
        with pytest.raises(DeliveryError, match=r"Kafka did not acknowledge.*gone\.events"):
            await asyncio.wait_for(rec.flush(), timeout=60)
        with pytest.raises(DeliveryError):
            await run.complete()
        with pytest.raises(DeliveryError):
            await asyncio.wait_for(rec.close(), timeout=60)
    finally:
        broker.cleanup()


async def test_messages_go_in_batches_to_the_default_partitioners_partition_in_order(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Messages sent within a linger share one batch per partition, each lands in the
    partition any Kafka client's default partitioner picks for its key (the worker's
    ``partition_for``), and every key's messages are read back in the order sent."""
    from aiokafka.partitioner import DefaultPartitioner

    topic = f"{topic_prefix}.events"
    await ensure_topic(kafka_bootstrap, topic, partitions=3)
    transport = KafkaTransport(
        kafka_bootstrap, topic, enable_idempotence=False, linger_ms=50, pack=False
    )
    await transport.start()
    keys = [f"run-{i:04x}" for i in range(12)]
    sent = [(keys[n % len(keys)], f"{n}".encode()) for n in range(600)]
    try:
        for key, value in sent:
            await transport.send(key, value)
        await transport.flush()
        assert transport.batches_sent < len(sent) / 10  # many messages per batch
        with pytest.raises(DeliveryError, match=r"Kafka refused a message.*run-big"):
            await transport.send("run-big", b"x" * (transport.max_request_size + 1))
    finally:
        await transport.close()

    records = await read_all(kafka_bootstrap, topic, 3, len(sent))
    default = DefaultPartitioner()
    order: dict[str, list[bytes]] = {}
    for partition, recs in records.items():
        for record in recs:
            key = record.key.decode()
            assert partition == partition_for(key, 3)
            assert partition == default(record.key, [0, 1, 2], [0, 1, 2])
            order.setdefault(key, []).append(record.value)
    assert order == {k: [v for key, v in sent if key == k] for k in keys}
    assert len({partition_for(k, 3) for k in keys}) == 3


async def test_send_waits_while_max_outstanding_messages_are_undelivered(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The transport's queue is bounded in messages: a send past ``max_outstanding``
    waits for a delivery, so no batch ever holds more than the bound."""
    topic = f"{topic_prefix}.events"
    await ensure_topic(kafka_bootstrap, topic, partitions=1)
    transport = KafkaTransport(
        kafka_bootstrap,
        topic,
        enable_idempotence=False,
        linger_ms=200,
        max_outstanding=5,
        pack=False,
    )
    await transport.start()
    try:
        for n in range(20):
            await transport.send("one-run", f"{n}".encode())
        await transport.flush()
        assert transport.batches_sent >= 4  # unbounded, one 200 ms linger holds all 20
    finally:
        await transport.close()
    records = await read_all(kafka_bootstrap, topic, 1, 20)
    assert [r.value for r in records[0]] == [f"{n}".encode() for n in range(20)]


async def test_a_send_without_topic_metadata_waits_for_it_and_lands_in_the_right_partition(
    kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the client holds no metadata for the topic at a send (it was fetched at
    start; the cluster can drop it), the transport waits for it instead of guessing."""
    topic = f"{topic_prefix}.events"
    await ensure_topic(kafka_bootstrap, topic, partitions=3)
    transport = KafkaTransport(
        kafka_bootstrap, topic, enable_idempotence=False, partitions=8, pack=False
    )
    await transport.start()
    try:
        cluster = transport._producer.client.cluster
        real = cluster.partitions_for_topic
        answers = iter([None])
        monkeypatch.setattr(
            cluster, "partitions_for_topic", lambda t: next(answers, None) or real(t)
        )
        await transport.send("run-0007", b"v")
        await transport.flush()
    finally:
        await transport.close()
    records = await read_all(kafka_bootstrap, topic, 3, 1)
    assert [p for p, recs in records.items() for _ in recs] == [partition_for("run-0007", 3)]


async def send_all(transport: KafkaTransport, sent: list[tuple[str, bytes]]) -> None:
    """Start ``transport``, send every (key, value), flush and close it."""
    await transport.start()
    try:
        for key, value in sent:
            await transport.send(key, value)
        await transport.flush()
    finally:
        await transport.close()


def _messages(codec: Codec, runs: int, per_run: int) -> list[tuple[str, bytes]]:
    """``per_run`` one-event messages of each of ``runs`` runs, interleaved."""
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    out = []
    for seq in range(per_run):
        for r in range(runs):
            event = TraceEvent(
                event_id=UUID(int=r << 32 | seq, version=4),
                run_id=f"run-{r:04x}",
                seq=seq,
                type=EventType.TOOL_CALL,
                ts=t0 + timedelta(milliseconds=seq),
                agent_id="a",
                tenant="t",
                producer_id="test",
                payload=ToolCall(gen_ai_tool_name="fetch", duration_ms=seq),
            )
            out.append((event.run_id, codec.encode_batch([event])))
    return out


async def test_a_partitions_messages_within_a_linger_go_as_one_pack_in_order(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """With packing (the default), the messages of one partition sent within a linger
    window share one record: an EventPack whose key is its first message's run id, in
    that run's partition; split again, every run's messages come back in the order sent."""
    codec = Codec()
    topic = f"{topic_prefix}.events"
    await ensure_topic(kafka_bootstrap, topic, partitions=3)
    transport = KafkaTransport(kafka_bootstrap, topic, enable_idempotence=False, linger_ms=50)
    sent = _messages(codec, runs=12, per_run=50)
    await transport.start()
    try:
        for key, value in sent:
            await transport.send(key, value)
        await transport.flush()
        assert transport.packs_sent > 0
        assert transport.records_sent < len(sent) / 10  # many messages per record
        with pytest.raises(DeliveryError, match=r"cannot pack a message.*run-raw"):
            await transport.send("run-raw", b"not a message")
    finally:
        await transport.close()

    records = await read_all(kafka_bootstrap, topic, 3, transport.records_sent)
    assert sum(len(v) for v in records.values()) == transport.records_sent
    order: dict[str, list[bytes]] = {}
    packs = 0
    for partition, recs in records.items():
        for record in recs:
            assert partition == partition_for(record.key.decode(), 3)
            values = [record.value]
            if codec.is_pack(record.value):
                packs += 1
                values = codec.unpack(record.value)
                first = codec.decode(values[0])[0].run_id
                assert record.key.decode() == first  # keyed by its first message's run
            for value in values:
                run_id = codec.decode(value)[0].run_id
                assert partition == partition_for(run_id, 3)
                order.setdefault(run_id, []).append(value)
    assert packs == transport.packs_sent
    assert order == {k: [v for key, v in sent if key == k] for k in order}
    assert sorted(order) == sorted({k for k, _ in sent})


async def test_a_pack_is_sealed_before_it_outgrows_max_pack_bytes(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    codec = Codec()
    topic = f"{topic_prefix}.events"
    await ensure_topic(kafka_bootstrap, topic, partitions=1)
    sent = _messages(codec, runs=1, per_run=40)
    limit = sum(len(v) for _, v in sent[:5])  # about five messages per pack
    transport = KafkaTransport(
        kafka_bootstrap, topic, enable_idempotence=False, linger_ms=500, max_pack_bytes=limit
    )
    await send_all(transport, sent)
    assert transport.records_sent >= 8  # one 500 ms window would otherwise hold all 40
    records = (await read_all(kafka_bootstrap, topic, 1, transport.records_sent))[0]
    messages: list[bytes] = []
    for record in records:
        values = codec.messages_of(record.value)
        assert sum(len(v) for v in values) <= limit
        messages += values
    assert messages == [v for _, v in sent]


async def test_packing_keeps_max_outstanding(kafka_bootstrap: str, topic_prefix: str) -> None:
    """Messages waiting in packs count against ``max_outstanding``: a send past it seals
    the packs and waits for a delivery."""
    codec = Codec()
    topic = f"{topic_prefix}.events"
    await ensure_topic(kafka_bootstrap, topic, partitions=1)
    sent = _messages(codec, runs=1, per_run=20)
    transport = KafkaTransport(
        kafka_bootstrap, topic, enable_idempotence=False, linger_ms=500, max_outstanding=5
    )
    await send_all(transport, sent)
    assert transport.records_sent >= 4  # unbounded, one 500 ms window holds all 20
    messages = await read_all_messages(kafka_bootstrap, topic, 1, 20, codec)
    assert [v for _, v in messages[0]] == [v for _, v in sent]
