"""Transports: the embedded SQLite log, broker URLs, unreachable brokers, price tables."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from fleetledger.kernel.config import load_settings
from fleetledger.kernel.errors import ConfigError, DeliveryError, StoreError
from fleetledger.kernel.sqlitelog import SqliteLog
from fleetledger.producers import (
    KafkaTransport,
    MemoryTransport,
    Recorder,
    SqliteTransport,
    events_topic,
    make_transport,
)
from fleetledger.schemas import Codec, EventType, WorkflowSnapshot, WorkflowStep

WORKFLOW = WorkflowSnapshot(
    name="etl", revision="1", steps=(WorkflowStep(id="load", name="Load", kind="tool"),)
)


async def test_sqlite_transport_writes_rows_readable_with_sqlitelog(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "ledger.db"
    async with Recorder.from_url(f"sqlite:///{db}", producer_id="p", batch_max_events=5) as rec:
        assert isinstance(rec.transport, SqliteTransport)
        runs = [await rec.start_run(agent_id="etl", workflow=WORKFLOW) for _ in range(3)]
        for i in range(12):
            for run in runs:
                await run.tool_call(name="copy", duration_ms=i, step_id="copy")
        for run in runs:
            await run.complete()
    log = SqliteLog.open(db, create=False)
    try:
        rows = log.read(0, 10_000)
        assert log.end_offset() == len(rows) > 3
    finally:
        log.close()
    codec = Codec()
    per_run: dict[str, list[int]] = {}
    for offset, key, value in rows:
        events = codec.decode(value)
        assert {e.run_id for e in events} == {key}
        assert len(events) <= 5
        per_run.setdefault(key, []).extend(e.seq for e in events)
        assert offset > 0
    assert sorted(per_run) == sorted(r.run_id for r in runs)
    assert all(seqs == list(range(14)) for seqs in per_run.values())


async def test_sqlite_transport_groups_messages_and_is_durable_after_flush(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    transport = SqliteTransport(db, max_queued_messages=3)
    await transport.start()
    try:
        await transport.send("a", b"1")
        await transport.send("b", b"2")
        reader = SqliteLog.open(db)
        assert reader.end_offset() == 0  # still queued
        await transport.send("c", b"3")  # third message: one transaction of three
        assert reader.read(0, 10) == [(1, "a", b"1"), (2, "b", b"2"), (3, "c", b"3")]
        await transport.send("a", b"4")
        await transport.flush()
        assert reader.read(3, 10) == [(4, "a", b"4")]
        reader.close()
    finally:
        await transport.close()
    with pytest.raises(DeliveryError, match="closed"):
        await transport.send("a", b"5")


async def test_sqlite_transport_writes_a_quiet_producer_after_its_linger(
    tmp_path: Path,
) -> None:
    db = tmp_path / "quiet.db"
    transport = SqliteTransport(db, linger_ms=10)
    await transport.start()
    reader = SqliteLog.open(db)
    try:
        await transport.send("run-q", b"only one")
        for _ in range(200):
            await asyncio.sleep(0.005)
            if reader.end_offset():
                break
        assert reader.read(0, 10) == [(1, "run-q", b"only one")]
    finally:
        reader.close()
        await transport.close()


async def test_sqlite_transport_failure_is_a_delivery_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rec = Recorder.from_url(f"sqlite:///{blocker}/ledger.db")
    with pytest.raises(StoreError, match="cannot open embedded store"):
        await rec.start()


def test_make_transport_follows_the_broker_url(tmp_path: Path) -> None:
    sqlite = make_transport(load_settings(broker=f"sqlite:///{tmp_path}/x.db"))
    assert isinstance(sqlite, SqliteTransport)
    assert sqlite.path == tmp_path / "x.db"
    kafka = make_transport(
        load_settings(
            broker="kafka://h1:9092,h2:9093", topic_prefix="acme", enable_idempotence=False
        )
    )
    assert isinstance(kafka, KafkaTransport)
    assert kafka.bootstrap_servers == "h1:9092,h2:9093"
    assert kafka.topic == "acme.events"
    assert kafka.enable_idempotence is False
    assert kafka.compression_type == "zstd"
    with pytest.raises(ConfigError, match="scheme"):
        make_transport(load_settings(broker="redis://x:1"))


def test_from_url_takes_batching_knobs_from_settings(tmp_path: Path) -> None:
    settings = load_settings(batch_max_events=7, linger_ms=0, max_buffered_events=99)
    rec = Recorder.from_url(f"sqlite:///{tmp_path}/x.db", settings=settings, producer_id="p")
    assert (rec.batch_max_events, rec.linger_ms, rec.max_buffered_events) == (7, 0, 99)
    assert rec.producer_id == "p"
    rec2 = Recorder.from_url(f"sqlite:///{tmp_path}/x.db", linger_ms=None)
    assert rec2.linger_ms is None


def test_events_topic_configs_match_the_worker_layout() -> None:
    from fleetledger.processors.runtimes.kafka_io import topic_specs
    from fleetledger.producers.transports import EVENTS_TOPIC_CONFIGS

    settings = load_settings(broker="kafka://localhost:9092", topic_prefix="acme", partitions=6)
    events = topic_specs(settings).events
    assert events.name == events_topic(settings) == "acme.events"
    assert dict(events.configs) == EVENTS_TOPIC_CONFIGS
    transport = KafkaTransport.from_settings(settings)
    assert transport.partitions == events.partitions == 6


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_kafka_is_one_clear_delivery_error() -> None:
    port = _closed_port()
    rec = Recorder.from_url(f"kafka://127.0.0.1:{port}")
    with pytest.raises(DeliveryError) as info:
        await asyncio.wait_for(rec.start(), timeout=60)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "\n" not in message
    transport = KafkaTransport(f"127.0.0.1:{port}", "x.events", create_topic=False)
    with pytest.raises(DeliveryError, match=f"cannot reach Kafka at 127.0.0.1:{port}"):
        await asyncio.wait_for(transport.start(), timeout=60)


async def test_memory_transport_keeps_messages_in_order() -> None:
    transport = MemoryTransport()
    async with Recorder(transport, linger_ms=None) as rec:
        run = await rec.start_run(agent_id="a", workflow=WORKFLOW, run_id="m")
        await run.complete()
    assert transport.started and transport.closed
    assert [k for k, _ in transport.messages] == ["m"]
    types = [e.type for e in Codec().decode(transport.messages[0][1])]
    assert types == [EventType.RUN_STARTED, EventType.RUN_COMPLETED]
