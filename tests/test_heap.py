"""The worker gives the memory of finished runs back (runtimes.heap)."""

from __future__ import annotations

import asyncio
import gc
import sys

import pytest

from fleetledger.processors.runtimes.heap import HeapTrimmer, malloc_trim


def test_trims_once_enough_entries_were_dropped() -> None:
    calls: list[int] = []
    trimmer = HeapTrimmer(every=100, trim=lambda: calls.append(1))

    async def drop() -> None:
        for _ in range(9):
            await trimmer.dropped(30)  # 270 in all: trims after 120 and after 240

    asyncio.run(drop())
    assert len(calls) == 2 == trimmer.trims


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return int(f.read().split("VmRSS:")[1].split()[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_malloc_trim_returns_the_holes_left_by_dropped_entries() -> None:
    """~1 KB values interleaved with values that stay (as entries of finished runs are
    interleaved with those of open ones): freeing the first leaves holes glibc keeps
    resident until trimmed."""
    trim = malloc_trim()
    assert trim is not None
    kept: list[bytes] = []
    dropped: list[bytes] = []
    for i in range(120_000):
        (kept if i % 8 == 0 else dropped).append(bytes(900) + i.to_bytes(4, "big"))
    before = _rss_kib()
    dropped.clear()
    gc.collect()
    held = _rss_kib()
    trim()
    after = _rss_kib()
    # ~98 MB freed: glibc keeps nearly all of it resident, the trim returns its free pages
    assert before - held < 10_000, (before, held, after)
    assert held - after > 30_000, (before, held, after)
    assert len(kept) == 15_000


def test_trims_once_drops_stop_for_the_quiet_time_and_only_then() -> None:
    """The quiet trim: after entries were dropped (fewer than ``every``), once entries
    stopped being dropped for ``quiet_s``; each drop pushes it back; nothing dropped, none."""
    calls: list[int] = []
    trimmer = HeapTrimmer(every=100, trim=lambda: calls.append(1), quiet_s=0.25)

    async def run() -> None:
        await asyncio.sleep(0.5)
        assert calls == []
        for _ in range(4):  # drops 0.02 s apart keep pushing the quiet trim back
            await trimmer.dropped(10)
            await asyncio.sleep(0.02)
        assert calls == []
        await asyncio.sleep(0.5)
        assert len(calls) == 1
        await asyncio.sleep(0.5)
        assert len(calls) == 1  # nothing dropped since: no more trims
        await trimmer.dropped(100)  # a full ``every``: at once, and once more when quiet
        assert len(calls) == 2
        await asyncio.sleep(0.5)
        assert len(calls) == 3 == trimmer.trims
        await trimmer.dropped(10)
        await trimmer.close()  # shutdown cancels the pending quiet trim
        await asyncio.sleep(0.5)
        assert len(calls) == 3

    asyncio.run(run())
