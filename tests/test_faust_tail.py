"""The Faust runtime processes messages its consumer fetched but never delivered.

After a restart or a rebalance, a fetch that races the seek at the end of table recovery
can move the consumer past messages that never reach the agent.  When they are the last
ones of a partition that then stays quiet, no later message reveals the gap; the
runtime's tick finds them by comparing its next offset with the partition's end.

Here the app is built but its consumer never started, so nothing is delivered at all:
every message on the real test broker is a tail message only the tick can find.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from fleetledger.kernel.config import load_settings
from fleetledger.processors.canonical import event_hash, genesis, link
from fleetledger.processors.runtimes import faust_app
from fleetledger.processors.runtimes.faust_app import build_app
from fleetledger.processors.runtimes.kafka_io import (
    ensure_topics,
    read_all,
    read_compacted,
    topic_specs,
)
from fleetledger.producers import Recorder
from fleetledger.producers.simulator import simulate

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

PARTITIONS = 3


def check_ledger(run_ids: list[str], values: list[bytes | None]) -> None:
    entries: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for value in values:
        assert value is not None
        entry = json.loads(value)
        assert entries[entry["run_id"]].setdefault(entry["seq"], entry) == entry
    assert set(run_ids) <= set(entries)
    for run_id in run_ids:
        seqs = sorted(entries[run_id])
        assert seqs == list(range(len(seqs))), f"run {run_id}: seqs {seqs}"
        prev = genesis(run_id)
        for seq in seqs:
            e = entries[run_id][seq]
            assert e["prev_hash"] == prev.hex()
            prev = link(prev, event_hash(e["event"]))
            assert e["entry_hash"] == prev.hex()


async def test_the_tick_reads_tail_messages_that_were_never_delivered(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(
        broker=f"kafka://{kafka_bootstrap}",
        topic_prefix=topic_prefix,
        group_id=f"{topic_prefix}-workers",
        partitions=PARTITIONS,
        enable_idempotence=False,
        archive_dir=tmp_path / "archive",
        linger_ms=0,
    )
    topics = topic_specs(settings)
    await ensure_topics(kafka_bootstrap, topics.all())
    run_ids: list[str] = []
    for seed in (21, 22):  # two fleets: at least two messages on every partition
        async with Recorder.from_url(settings.broker, settings=settings) as rec:
            run_ids += (await simulate(rec, runs=12, seed=seed)).run_ids
    events = await read_all(kafka_bootstrap, topics.events.name)
    per_partition = {p: sum(r.partition == p for r in events) for p in range(PARTITIONS)}
    assert min(per_partition.values()) >= 2, per_partition
    # One message per partition and read: what is read stays gap-free and in order.
    monkeypatch.setattr(faust_app, "TAIL_READ_MAX", 1)

    app = build_app(settings)
    runtime = app.fleetledger_runtime  # type: ignore[attr-defined]
    # What the table-recovery callback records: the events partitions assigned here.
    runtime._recovered = set(range(PARTITIONS))
    try:
        # The first ticks only note where each partition stands (next and end offsets):
        # until they have stood still for TAIL_STALL_S, the consumer may still be about
        # to deliver what lies past the next offset.
        await runtime.tick()
        await runtime.tick()
        assert runtime.messages == 0
        # From now on, a partition counts as stalled from the second tick that finds
        # it unchanged (here, the next one).
        monkeypatch.setattr(faust_app, "TAIL_STALL_S", 0.0)
        await runtime.tick()
        assert runtime.messages == runtime.gap_reads == PARTITIONS
        while runtime.messages < len(events):
            before = runtime.messages
            await runtime.tick()  # the next offset moved: noted again, not read
            await runtime.tick()
            assert runtime.messages > before, "a stalled partition was not read on"
        assert runtime.messages == runtime.gap_reads == len(events)

        bundles = await read_compacted(kafka_bootstrap, topics.bundles.name)
        assert set(run_ids) <= set(bundles)
        ledger = await read_all(kafka_bootstrap, topics.ledger.name)
        check_ledger(run_ids, [r.value for r in ledger])

        # Should the consumer deliver them after all, they change nothing.
        await runtime.process_batch(
            [(r.value or b"", r.topic, r.partition, r.offset) for r in events]
        )
        assert runtime.redelivered == len(events)
        await runtime.tick()
        await runtime.tick()
        assert runtime.messages == len(events)
        assert len(await read_all(kafka_bootstrap, topics.ledger.name)) == len(ledger)
    finally:
        await runtime.stop()
