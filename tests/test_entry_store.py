"""The Kafka worker's in-memory entry store: blocks of a run's entries compressed, read back
exactly, in any order of arrival, and several times smaller than the entries themselves."""

from __future__ import annotations

import random
import tracemalloc
from datetime import UTC, datetime

from fleetledger.processors.core import CoreConfig
from fleetledger.processors.memory import MemoryStates
from fleetledger.processors.pipeline import Pipeline, SourcePosition
from fleetledger.processors.runtimes.entries import BLOCK, LedgerEntryStore
from fleetledger.schemas.codec import Codec

from . import eventdicts as ev
from .faultkit import encode


def _entries(runs: int, calls: int) -> dict[str, list[bytes]]:
    """Real ledger entries (the pipeline's bytes) of ``runs`` runs."""
    pipeline = Pipeline(Codec(), CoreConfig(), MemoryStates(), LedgerEntryStore())
    messages = [
        (encode(ev.simple_run(f"run-{i}", n_calls=calls)[:-1]), SourcePosition("t", 0, i))
        for i in range(runs)
    ]
    out = pipeline.handle_many(messages, datetime.now(UTC))
    found: dict[str, list[bytes]] = {}
    for e in out.entries:
        found.setdefault(e.run_id, []).append(e.data)
    return found


def test_entries_read_back_exactly_whatever_the_order_they_arrive_in() -> None:
    runs = _entries(4, 53)  # 54 entries each: 3 blocks and 6 as they are
    store = LedgerEntryStore()
    rng = random.Random(7)
    # some through the staged path, the rest loaded as a recovery would, shuffled
    items = [(r, s, v) for r, vs in runs.items() for s, v in enumerate(vs)]
    rng.shuffle(items)
    for n, (run_id, seq, value) in enumerate(items):
        if n % 3:
            assert store.load(run_id, seq, value)
        else:
            store.put(run_id, seq, value)
            assert store.get(run_id, seq) == value  # staged writes are read back first
    store.keep()
    for run_id, values in runs.items():
        assert [store.get(run_id, s) for s in range(len(values))] == values
        assert store.get(run_id, len(values)) is None
        # random access across blocks (each read may replace the decompressed block)
        for s in rng.sample(range(len(values)), 20):
            assert store.get(run_id, s) == values[s]
        assert not store.load(run_id, 0, b"other")  # entries never change
        assert store.get(run_id, 0) == values[0]
    assert store.get("run-0", -1) is None and store.get("unknown", 0) is None
    store.drop("run-0")
    assert store.get("run-0", 0) is None
    assert store.get("run-1", 2 * BLOCK) == runs["run-1"][2 * BLOCK]


def test_held_entries_take_several_times_less_memory_than_their_bytes() -> None:
    runs = _entries(40, 83)  # 84 entries each: 5 compressed blocks and 4 as they are
    raw = sum(len(v) for vs in runs.values() for v in vs)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        store = LedgerEntryStore()
        for run_id, values in runs.items():
            for seq, value in enumerate(values):
                store.put(run_id, seq, value)
            store.keep()
        held = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert held < raw / 2.5, (held, raw)
    assert all([store.get(r, s) for s in range(len(vs))] == vs for r, vs in runs.items())
