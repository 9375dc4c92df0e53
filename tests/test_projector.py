"""The Kafka projector against the test broker, into SQLite and a real PostgreSQL: it builds
the same rows as projecting the outputs directly, resumes from the positions stored in the
read model when restarted mid-topic, and shrugs off outputs published twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleetledger.kernel.config import Settings, load_settings, parse_read_db_url
from fleetledger.kernel.errors import StoreError
from fleetledger.processors.memory import memory_pipeline
from fleetledger.processors.pipeline import Outputs, SourcePosition
from fleetledger.processors.readmodel import RunFilter, records_of
from fleetledger.processors.readstore import ReadStore, TrackedRecord
from fleetledger.processors.runtimes.kafka_io import KafkaSink, ensure_topics, topic_specs
from fleetledger.processors.runtimes.projector import Projector

from .test_readmodel_contract import _messages

pytestmark = pytest.mark.kafka


def _outputs(runs: int, seed: int) -> list[Outputs]:
    pipe = memory_pipeline()
    now = datetime(2027, 1, 1, tzinfo=UTC)
    messages = asyncio.run(_messages(runs, seed))
    return [
        pipe.handle_many([(v, SourcePosition("events", 0, i))], now)
        for i, (_k, v) in enumerate(messages)
    ]


@pytest.fixture(scope="module")
def outputs() -> list[Outputs]:
    return _outputs(9, 17)


@pytest.fixture(params=["sqlite", "postgresql"])
def read_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'read.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str, read_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        broker=f"kafka://{kafka_bootstrap}",
        topic_prefix=topic_prefix,
        partitions=3,
        enable_idempotence=False,
        archive_dir=tmp_path / "archive",
        read_db=read_url,
        projector_group_id=f"{topic_prefix}-projector",
        session_timeout_s=6,
        report_interval_s=0.5,
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[ReadStore]:
    s = ReadStore.open(settings.read_db_url(), create=True)
    try:
        yield s
    finally:
        s.close()


def reference(outputs: list[Outputs], tmp_path: Path) -> dict[str, list[tuple[object, ...]]]:
    ref = ReadStore.open(parse_read_db_url(f"sqlite:///{tmp_path / 'ref.db'}"), create=True)
    try:
        records = [r for out in outputs for r in records_of(out)]
        ref.apply("ref", [TrackedRecord("x", 0, i, r) for i, r in enumerate(records)])
        return ref.dump()
    finally:
        ref.close()


async def publish(settings: Settings, outputs: list[Outputs]) -> int:
    sent = 0
    async with KafkaSink(settings) as sink:
        for out in outputs:
            sent += (await sink.publish(out)).records
    return sent


async def test_the_projector_resumes_mid_topic_from_the_stored_positions(
    settings: Settings, store: ReadStore, outputs: list[Outputs], tmp_path: Path
) -> None:
    await ensure_topics(settings.broker_url().bootstrap, topic_specs(settings).all())
    half = len(outputs) // 2
    first = await publish(settings, outputs[:half])
    lines: list[str] = []

    caught_up = await Projector(settings, store, report=lines.append).run(once=True)
    assert caught_up.records == first and caught_up.skipped == 0
    stored = store.positions(settings.projector_group_id)
    assert sum(stored.values()) == first
    runs_after_first = store.count(RunFilter())
    assert 0 < runs_after_first <= 9

    second = await publish(settings, outputs[half:])
    # Restarted in its consumer group: it seeks to the stored positions on assignment.
    stop = asyncio.Event()
    restarted = Projector(settings, store, report=lines.append)
    task = asyncio.create_task(restarted.run(stop=stop))
    deadline = asyncio.get_running_loop().time() + 60
    while sum(store.positions(settings.projector_group_id).values()) < first + second:
        assert not task.done(), task.exception() if task.done() else None
        assert asyncio.get_running_loop().time() < deadline, "projector did not catch up"
        await asyncio.sleep(0.2)
    stop.set()
    stats = await asyncio.wait_for(task, 30)
    assert stats.records == second, "it re-read records it had stored, or missed some"
    assert stats.skipped == 0
    assert store.dump() == reference(outputs, tmp_path)
    assert store.count(RunFilter()) == 9
    assert any(line.startswith("projector:") and "lag" in line for line in lines)

    # The worker re-publishing outputs after a crash: new offsets, same rows.
    again = await publish(settings, outputs[:half])
    replay = await Projector(settings, store).run(once=True)
    assert replay.records == again
    assert store.dump() == reference(outputs, tmp_path)


async def test_missing_topics_say_the_worker_creates_them(
    settings: Settings, store: ReadStore
) -> None:
    with pytest.raises(StoreError, match="`fleetledger worker` creates the topics"):
        await Projector(settings, store).run(once=True)


async def test_the_projectors_consumer_fetches_with_the_settings_wait(
    settings: Settings, store: ReadStore
) -> None:
    quick = settings.model_copy(update={"fetch_max_wait_ms": 37})
    for group in (True, False):
        consumer = Projector(quick, store)._consumer(group=group)
        assert consumer._fetch_max_wait_ms == 37  # what start() builds the fetcher with
