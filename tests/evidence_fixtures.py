"""Bundles of simulated runs, built with the pure pipeline over in-memory stores."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

from fleetledger.processors.memory import memory_pipeline
from fleetledger.processors.pipeline import SourcePosition
from fleetledger.producers import MemoryTransport, Recorder
from fleetledger.producers.simulator import simulate


async def _messages(runs: int, seed: int) -> list[tuple[str, bytes]]:
    transport = MemoryTransport()
    async with Recorder(transport) as rec:
        await simulate(rec, runs=runs, seed=seed)
    return transport.messages


@cache
def simulated_messages(runs: int = 12, seed: int = 5) -> tuple[tuple[str, bytes], ...]:
    return tuple(asyncio.run(_messages(runs, seed)))


@cache
def _bundles(runs: int, seed: int) -> tuple[bytes, ...]:
    pipe = memory_pipeline()
    now = datetime(2027, 1, 1, tzinfo=UTC)
    out = []
    for i, (_key, value) in enumerate(simulated_messages(runs, seed)):
        out += [b.data for b in pipe.handle(value, SourcePosition("events", 0, i), now).bundles]
    return tuple(out)


def simulated_bundles(runs: int = 12, seed: int = 5) -> list[dict[str, Any]]:
    """Fresh copies (tests mutate them)."""
    return [json.loads(b) for b in _bundles(runs, seed)]
