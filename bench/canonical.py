"""Median time per event of the fast canonicalizer and of rfc8785 on simulated events.

Part of ``python -m bench`` (measurement "canonical"), or on its own:
``.venv/bin/python -m bench.canonical [--runs 40] [--seed 7] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import rfc8785

from fleetledger.processors.canonical import canonical_bytes
from fleetledger.producers import MemoryTransport, Recorder
from fleetledger.producers.simulator import simulate
from fleetledger.schemas import Codec

from .common import Figure, Sizes


async def _events(runs: int, seed: int) -> list[dict[str, Any]]:
    transport = MemoryTransport()
    async with Recorder(transport) as rec:
        await simulate(rec, runs=runs, seed=seed)
    codec = Codec()
    return [e.to_json_obj() for _k, v in transport.messages for e in codec.decode(v)]


def per_event_us(fn: Any, events: list[dict[str, Any]], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        for e in events:
            t = time.perf_counter_ns()
            fn(e)
            samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1000


def run(sizes: Sizes) -> list[Figure]:
    """Events/s of canonical_bytes against rfc8785.dumps, same events, each repetition."""
    events = asyncio.run(_events(sizes.canonical_runs, 7))
    if any(canonical_bytes(e) != rfc8785.dumps(e) for e in events):
        raise SystemExit("canonical_bytes differs from rfc8785 on a simulated event")
    fig = Figure(
        "canonical.events",
        f"RFC 8785 canonical JSON of simulated events ({len(events):,}, byte-identical)",
        "events/s",
        baseline_name="rfc8785.dumps (the reference implementation) on the same events",
        target=">= 20x rfc8785",
        target_check=lambda r: bool(r.get("ratio")) and r["ratio"]["median"] >= 20,
    )
    for _ in range(sizes.reps):
        fast = per_event_us(canonical_bytes, events, 1)
        ref = per_event_us(rfc8785.dumps, events, 1)
        fig.add(1e6 / fast, 1e6 / ref)
    return [fig]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    events = asyncio.run(_events(args.runs, args.seed))
    if any(canonical_bytes(e) != rfc8785.dumps(e) for e in events):
        raise SystemExit("canonical_bytes differs from rfc8785 on a simulated event")
    fast = per_event_us(canonical_bytes, events, args.repeat)
    ref = per_event_us(rfc8785.dumps, events, args.repeat)
    print(f"{len(events)} simulated events, byte-identical on all of them")
    print(f"canonical_bytes: {fast:.2f} us/event (median)")
    print(f"rfc8785.dumps:   {ref:.2f} us/event (median)")
    print(f"ratio: {ref / fast:.1f}x")


if __name__ == "__main__":
    main()
