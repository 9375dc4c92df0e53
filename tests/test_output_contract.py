"""One contract, every backend: what the pipeline emits, the backend's sink stores and its
reader returns, typed and unchanged, however often it is written.

The same outputs (simulated runs through the in-memory pipeline, plus a dead letter) go
through the embedded store's sink and through the Kafka sink against the suite's broker;
both backends' readers must answer with the same typed results.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fleetledger.kernel.config import load_settings
from fleetledger.processors.evidence import verify_bundle_bytes
from fleetledger.processors.memory import memory_pipeline
from fleetledger.processors.pipeline import DeadLetter, Outputs, SourcePosition
from fleetledger.processors.runtimes.backend import Backend, backend
from fleetledger.processors.runtimes.embedded import EmbeddedSink, open_store
from fleetledger.processors.runtimes.kafka_io import KafkaSink, ensure_topics, topic_specs

from .evidence_fixtures import simulated_messages

NOW = datetime(2027, 1, 1, tzinfo=UTC)
GARBAGE = b"\xc3\x01 not a message"


def pipeline_outputs() -> Outputs:
    pipe = memory_pipeline()
    messages = [
        (value, SourcePosition("events", 0, i))
        for i, (_key, value) in enumerate(simulated_messages(6, 2))
    ]
    messages.insert(3, (GARBAGE, SourcePosition("events", 0, 999)))
    out = Outputs()
    for chunk in (messages[:10], messages[10:]):  # two batches: totals emitted twice
        out.extend(pipe.handle_many(chunk, NOW))
    assert out.bundles and out.intercepts and out.deadletters and len(out.totals) > 6
    return out


def write_embedded(found: Backend, outputs: Outputs) -> None:
    conn = open_store(Path(found.settings.broker_url().path or ""))
    try:
        conn.execute("BEGIN IMMEDIATE")
        EmbeddedSink(conn).write(outputs)
        conn.execute("COMMIT")
    except sqlite3.Error:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


def write_kafka(found: Backend, outputs: Outputs) -> None:
    async def publish() -> None:
        settings = found.settings
        await ensure_topics(settings.broker_url().bootstrap, topic_specs(settings).all())
        async with KafkaSink(settings) as sink:
            await sink.publish(outputs)

    asyncio.run(publish())


Writer = Callable[[Backend, Outputs], None]


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def target(
    request: pytest.FixtureRequest, tmp_path: Path, topic_prefix: str
) -> tuple[Backend, Writer]:
    if request.param == "embedded":
        settings = load_settings(broker=f"sqlite:///{tmp_path / 'store.db'}")
        return backend(settings), write_embedded
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    settings = load_settings(
        broker=f"kafka://{bootstrap}",
        topic_prefix=topic_prefix,
        partitions=3,
        enable_idempotence=False,
        archive_dir=tmp_path / "archive",
    )
    return backend(settings), write_kafka


def expected(outputs: Outputs) -> dict[str, Any]:
    latest = {t.run_id: t.doc for t in outputs.totals}
    return {
        "totals": [latest[r] for r in sorted(latest)],
        "intercepts": sorted(
            (i.to_json() for i in outputs.intercepts), key=lambda i: i["intercept_id"]
        ),
        "bundles": sorted((b.run_id, b.digest, b.data) for b in outputs.bundles),
        "deadletters": outputs.deadletters,
    }


def test_the_sink_stores_and_the_reader_returns_the_same_typed_outputs(
    target: tuple[Backend, Writer],
) -> None:
    found, write = target
    outputs = pipeline_outputs()
    want = expected(outputs)
    write(found, outputs)
    write(found, outputs)  # a redelivered batch: idempotent upserts, nothing doubles

    with found.reader() as reader:
        assert reader.totals() == want["totals"]
        assert [dict(i) for i in reader.intercepts()] == want["intercepts"]
        stored = list(reader.bundles())
        assert sorted((b.run_id, b.digest, b.data) for b in stored) == want["bundles"]
        for b in stored:
            facts = verify_bundle_bytes(b.data)  # stored as canonical bytes: verifiable as read
            assert (facts.run_id, facts.digest) == (b.run_id, b.digest)
        one = stored[0]
        assert reader.bundle(one.run_id) == one
        assert reader.bundle("no-such-run") is None
        entries = [e for e in outputs.entries if e.run_id == one.run_id]
        assert reader.ledger(one.run_id) == [e.to_json() for e in entries]
        dead = reader.deadletters()
        assert all(isinstance(d, DeadLetter) for d in dead)
        # Kafka keeps both copies of a redelivered dead letter on its (delete-policy)
        # topic; the embedded table keeps one.  Either way each is the same dead letter.
        assert set(dead) == set(want["deadletters"])
        assert dead[0].value == GARBAGE and dead[0].position.offset == 999
