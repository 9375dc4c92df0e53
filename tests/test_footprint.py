"""What the processors keep in memory costs what it holds.

orjson (3.12 and later) returns bytes that keep the buffer it grew while writing (4 KiB
at the least, 16 KiB for a ledger entry).  Stored entries and run states are kept for as
long as their run is open, so they are copied to their exact length (``kept_json``).
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime

from fleetledger.processors.core import CoreConfig, kept_json
from fleetledger.processors.memory import MemoryEntries, MemoryStates
from fleetledger.processors.pipeline import Pipeline, SourcePosition
from fleetledger.producers import MemoryTransport, Recorder
from fleetledger.producers.simulator import simulate
from fleetledger.schemas.codec import Codec


def _allocated(make: Callable[[], bytes]) -> tuple[int, int]:
    """(bytes traced for 200 results of ``make()``, their total length)."""
    gc.collect()
    tracemalloc.start()
    try:
        kept = [make() for _ in range(200)]
        traced = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return traced, sum(len(k) for k in kept)


def test_kept_json_allocates_what_it_holds() -> None:
    value = {f"field_{i}": "x" * 24 for i in range(30)}  # ~1 KB of JSON
    traced, length = _allocated(lambda: kept_json(value))
    assert traced < 1.2 * length + 200 * 64, (traced, length)


def _fleet() -> list[bytes]:
    async def record() -> list[bytes]:
        transport = MemoryTransport()
        async with Recorder(transport, linger_ms=None) as rec:
            await simulate(rec, runs=40, seed=7)
        return [v for _k, v in transport.messages]

    return asyncio.run(record())


def test_stored_entries_and_states_cost_about_their_length() -> None:
    """Every entry and state of a processed fleet stays in the in-memory ports; the heap
    grows by about their length (with orjson's buffers it grew ~15x)."""
    messages = _fleet()
    states, entries = MemoryStates(), MemoryEntries()
    pipe = Pipeline(Codec(), CoreConfig(), states, entries)
    pipe.handle_many(
        ((m, SourcePosition("t", 0, i)) for i, m in enumerate(messages[:1])), datetime.now(UTC)
    )  # codec and rule caches warmed before measuring
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        pipe.handle_many(
            ((m, SourcePosition("t", 0, i)) for i, m in enumerate(messages[1:], 1)),
            datetime.now(UTC),
        )
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stored = sum(len(v) for v in entries.values.values()) + sum(
        len(v) for v in states.values.values()
    )
    assert len(entries.values) > 1_000
    assert grown < 2 * stored, (grown, stored, len(entries.values))
