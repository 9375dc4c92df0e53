"""Topic layout, topic creation, the output sink and the readers against a real broker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from fleetledger.kernel.config import Settings, load_settings
from fleetledger.kernel.errors import StoreError
from fleetledger.processors.canonical import canonical_bytes
from fleetledger.processors.core import Entry, Intercept
from fleetledger.processors.pipeline import (
    Bundle,
    DeadLetter,
    Outputs,
    RunTotals,
    SourcePosition,
    TotalsDoc,
)
from fleetledger.processors.runtimes import kafka_io
from fleetledger.processors.runtimes.kafka_io import (
    HEADER_ERROR,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    KafkaSink,
    RecordBatches,
    ensure_topics,
    partition_for,
    read_all,
    read_compacted,
    topic_specs,
)

pytestmark = pytest.mark.kafka


def _settings(bootstrap: str, prefix: str, tmp_path: Path, **kw: object) -> Settings:
    values: dict[str, object] = {
        "broker": f"kafka://{bootstrap}",
        "topic_prefix": prefix,
        "partitions": 3,
        "enable_idempotence": False,
        "archive_dir": tmp_path / "archive",
        "group_id": f"{prefix}-g",
    }
    return load_settings(**{**values, **kw})


def test_layout_names_and_policies() -> None:
    s = load_settings(topic_prefix="acme", partitions=6)
    specs = topic_specs(s)
    assert [t.name for t in specs.all()] == [
        "acme.events",
        "acme.ledger",
        "acme.totals",
        "acme.intercepts",
        "acme.bundles",
        "acme.deadletter",
    ]
    assert all(t.partitions == 6 for t in specs.all())
    assert {t.role for t in specs.all() if t.compacted} == {"totals", "intercepts", "bundles"}
    assert specs.events.configs["cleanup.policy"] == "delete"
    assert specs.ledger.configs["cleanup.policy"] == "delete"
    assert specs.ledger.configs["retention.ms"] == "-1"
    assert specs.deadletter.configs["cleanup.policy"] == "delete"
    assert [t.role for t in kafka_io.TOPIC_LAYOUT] == list(kafka_io.ROLES)
    with pytest.raises(StoreError, match="expected one of"):
        specs.by_role("nope")


def test_partition_for_matches_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    for run_id in ("run-1", "r" * 40, "0190a3c4-2d1e-7f00-8000-000000000001"):
        assert partition_for(run_id, 4) == DefaultPartitioner()(run_id.encode(), [0, 1, 2, 3], [])


async def test_ensure_topics_creates_with_configs_and_is_idempotent(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    s = _settings(kafka_bootstrap, topic_prefix, tmp_path)
    specs = topic_specs(s).all()
    first = await ensure_topics(kafka_bootstrap, specs)
    assert set(first.values()) == {"created"}
    second = await ensure_topics(kafka_bootstrap, specs)
    assert set(second.values()) == {"exists"}

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([t.name for t in specs])
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t.name) for t in specs]
        )
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == {t.name: 3 for t in specs}
    found = {
        res[3]: {entry[0]: entry[1] for entry in res[4]}
        for response in responses
        for res in response.resources
    }
    for spec in specs:
        assert found[spec.name]["cleanup.policy"] == spec.configs["cleanup.policy"]
    assert found[f"{topic_prefix}.ledger"]["retention.ms"] == "-1"


async def test_ensure_topics_rejects_partition_mismatch(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    s = _settings(kafka_bootstrap, topic_prefix, tmp_path)
    await ensure_topics(kafka_bootstrap, [topic_specs(s).events])
    s6 = _settings(kafka_bootstrap, topic_prefix, tmp_path, partitions=6)
    with pytest.raises(StoreError, match="has 3 partitions, expected 6"):
        await ensure_topics(kafka_bootstrap, [topic_specs(s6).events])


async def test_unreachable_broker_is_a_bounded_store_error() -> None:
    from .kafka_broker import free_port

    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(StoreError, match="cannot reach Kafka"):
        await ensure_topics(bootstrap, [], timeout_s=3)
    with pytest.raises(StoreError, match="cannot reach Kafka"):
        await read_all(bootstrap, "x", timeout_s=3)


async def test_sink_publishes_outputs_and_readers_read_them(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    s = _settings(kafka_bootstrap, topic_prefix, tmp_path, max_message_bytes=10_000)
    specs = topic_specs(s)
    await ensure_topics(kafka_bootstrap, specs.all())
    garbage = b"\x00\xffnot avro"

    def bundle(run_id: str, **doc: Any) -> Bundle:
        document = {"run": {"run_id": run_id}, **doc, "integrity": {"digest": run_id * 4}}
        return Bundle(run_id, "acme", None, run_id * 4, document, canonical_bytes(document))

    def totals(v: int) -> RunTotals:
        return RunTotals("run-a", cast(TotalsDoc, {"run_id": "run-a", "v": v}))

    big = bundle("run-b", pad="x" * 20_000)
    out = Outputs(
        entries=[Entry("run-a", i, "e" * 64, "p" * 64, "h" * 64, {"seq": i}) for i in range(5)],
        totals=[totals(1), totals(2)],
        intercepts=[Intercept("run-a", "budget", "critical", 3, "over", "2026-11-01T00:00:00Z")],
        bundles=[bundle("run-a", small=True), big],
        deadletters=[DeadLetter(garbage, SourcePosition(specs.events.name, 2, 41), "bad magic")],
    )
    async with KafkaSink(s) as sink:
        assert (await sink.publish(out)).records == 11
        # Publishing the same outputs again leaves every compacted view unchanged.
        await sink.publish(out)

    latest = await read_compacted(kafka_bootstrap, specs.totals.name)
    assert latest == {"run-a": b'{"run_id":"run-a","v":2}'}

    ledger = await read_all(kafka_bootstrap, specs.ledger.name)
    assert {r.partition for r in ledger} == {partition_for("run-a", 3)}
    assert [r.key for r in ledger[:5]] == [f"run-a:{i:012d}".encode() for i in range(5)]

    intercepts = await read_compacted(kafka_bootstrap, specs.intercepts.name)
    assert list(intercepts) == ["run-a:budget:3"]

    bundles = await read_compacted(kafka_bootstrap, specs.bundles.name)
    assert bundles["run-a"] == out.bundles[0].data
    assert kafka_io.is_manifest(bundles["run-b"])
    manifest = json.loads(bundles["run-b"])
    assert manifest["run_id"] == "run-b"
    assert manifest["digest"] == big.digest
    assert manifest["size"] == len(big.data)
    archived = Path(manifest["path"])
    assert archived == (tmp_path / "archive" / "run-b.bundle.json").resolve()
    assert archived.read_bytes() == big.data
    for record in await read_all(kafka_bootstrap, specs.bundles.name):
        assert record.header(kafka_io.HEADER_DIGEST) == (record.key or b"").decode().encode() * 4
    assert not [p for p in archived.parent.iterdir() if p.name.endswith(".tmp")]

    dead = await read_all(kafka_bootstrap, specs.deadletter.name)
    assert len(dead) == 2
    d = dead[0]
    assert d.value == garbage
    assert d.key == f"{specs.events.name}:2:41".encode()
    assert d.header(HEADER_ERROR) == b"bad magic"
    assert d.header(HEADER_SOURCE_TOPIC) == specs.events.name.encode()
    assert d.header(HEADER_SOURCE_PARTITION) == b"2"
    assert d.header(HEADER_SOURCE_OFFSET) == b"41"


async def test_record_batches_keep_each_partitions_order_across_full_batches(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Records of a partition arrive in the order added, though they span many batches
    (1 KiB each here), one record is larger than a batch and some are tombstones."""
    from aiokafka import AIOKafkaProducer

    s = _settings(kafka_bootstrap, topic_prefix, tmp_path)
    specs = topic_specs(s)
    await ensure_topics(kafka_bootstrap, specs.all())
    topic = specs.totals.name
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_batch_size=1024)
    await producer.start()
    try:
        batches = RecordBatches(producer, kafka_bootstrap)
        sent: list[tuple[int, bytes, bytes | None]] = []
        for i in range(120):
            partition = i % 2
            value = None if i % 10 == 9 else (b"x" * (5_000 if i == 50 else 60 + i))
            await batches.add(topic, partition, b"k%d" % i, value, [("n", str(i).encode())])
            sent.append((partition, b"k%d" % i, value))
        futures = await batches.close()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert batches.records == 120
    assert len(futures) > 10  # one future per batch, not per record
    records = await read_all(kafka_bootstrap, topic)
    for partition in (0, 1):
        got = [(r.key, r.value, r.header("n")) for r in records if r.partition == partition]
        want = [(k, v, k[1:]) for p, k, v in sent if p == partition]
        assert got == want


async def test_reader_of_missing_topic_fails_clearly(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    with pytest.raises(StoreError, match="found no topic"):
        await read_compacted(kafka_bootstrap, f"{topic_prefix}.absent", timeout_s=10)
