"""The worker of two source trees, alternately on one broker: ``python -m bench.ab``.

``python -m bench.ab --old REV [--shape many_slow] [--reps 3] [--events N]`` checks
``REV`` out into a temporary git worktree and measures, on one test broker, a ready
``fleetledger worker`` of this checkout ("new") and one of ``REV`` ("old") over the same
window of the shape's traffic (as measurement 2 does: fresh topics per worker, warm-up,
then the window), alternating which goes first in each repetition.  The old worker runs
with ``PYTHONPATH`` pointing at the worktree's sources, so only the worker's code differs:
the harness, the traffic and the broker are this checkout's.

Prints each window (CPU microseconds per event of the worker process, events/s) and the
medians per tree.  On a shared machine whose speed drifts over minutes, alternating in
one run is what makes two trees comparable; compare the medians, not one window.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from .common import FULL, Broker, Sizes, Window, broker, log, measure_window, ready, running
from .processor import worker_target_started
from .traffic import WORKER_SHAPES, Traffic, shape_traffic, warmup_fleet

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("processors/src", "schemas/src", "producers/src")


async def window(
    b: Broker, traffic: Traffic, warm: Traffic, sizes: Sizes, pythonpath: str | None
) -> Window:
    """One ready worker (of the tree ``pythonpath`` names, or this one) over the window."""
    archive = Path(tempfile.mkdtemp(prefix="bench-ab-archive-"))
    saved = os.environ.pop("PYTHONPATH", None)
    if pythonpath is not None:
        os.environ["PYTHONPATH"] = pythonpath  # the worker's environment is os.environ's
    try:
        target = await worker_target_started(b, archive, "ab")
        with running(target.proc):
            await ready(target, warm.messages, warm.events, sizes)
            return await measure_window(
                target, traffic.messages, traffic.events, sizes, b, count_records=False
            )
    finally:
        os.environ.pop("PYTHONPATH", None)
        if saved is not None:
            os.environ["PYTHONPATH"] = saved
        shutil.rmtree(archive, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    ap.add_argument("--old", required=True, help="the git revision to compare with")
    ap.add_argument("--shape", default="many_slow", choices=WORKER_SHAPES)
    ap.add_argument("--reps", type=int, default=3, help="windows per tree")
    ap.add_argument("--events", type=int, help="events of the window (default: the bench's)")
    args = ap.parse_args(argv)
    sizes = FULL
    os.environ.setdefault("BENCH_SESSION_TIMEOUT_S", str(sizes.session_timeout_s))
    traffic = shape_traffic(args.shape, sizes, args.events)
    warm = warmup_fleet(sizes.warmup_runs)
    tree = Path(tempfile.mkdtemp(prefix="bench-ab-tree-")) / "old"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(tree), args.old], check=True)
    old_path = os.pathsep.join(str(tree / s) for s in SOURCES)
    results: dict[str, list[Window]] = {"new": [], "old": []}
    try:
        with broker() as b:
            for rep in range(args.reps):
                order = ("new", "old") if rep % 2 == 0 else ("old", "new")
                for name in order:
                    w = asyncio.run(
                        window(b, traffic, warm, sizes, old_path if name == "old" else None)
                    )
                    results[name].append(w)
                    log(f"{args.shape} rep {rep + 1} {name}: {w.describe()}")
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(tree.parent, ignore_errors=True)
    for name, windows in results.items():
        cpu = [w.cpu_us for w in windows]
        rate = [w.rate for w in windows]
        print(
            f"{name} ({'this checkout' if name == 'new' else args.old}): CPU "
            f"{statistics.median(cpu):.1f} us/event ({min(cpu):.1f}-{max(cpu):.1f}), "
            f"{statistics.median(rate):,.0f} events/s ({min(rate):,.0f}-{max(rate):,.0f}), "
            f"{len(windows)} windows of {traffic.events:,} events"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
