"""``python -m bench.readmodel_history``: read-model projection cost against history size.

The embedded runtime and the projector write each batch's outputs with
``ReadStore.apply`` into a read model that keeps every action ever projected.  This
measures the cost per projected event of applying the same simulated outputs (default
fleet, the embedded runtime's batches) to a SQLite read model that already holds 0, then
``--rows`` actions of other runs (synthetic rows, bulk-inserted), alternating the two,
``--reps`` times: the ratio says whether a batch's cost grows with the history.

Before the stored-action check became primary-key lookups (``known_actions_query``), the
check of every batch scanned the whole actions table.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fleetledger.kernel.config import parse_read_db_url  # noqa: E402
from fleetledger.processors.readmodel import OutputRecord  # noqa: E402
from fleetledger.processors.readstore import ReadStore, TrackedRecord  # noqa: E402
from tests.test_readmodel_contract import output_stream  # noqa: E402

BATCH = 500


def _fill(path: Path, rows: int) -> None:
    """``rows`` synthetic actions of 1,000-action runs, straight into the table."""
    con = sqlite3.connect(path)
    try:
        con.executemany(
            "INSERT INTO rm_actions (run_id, seq, type, name, ts, event, position) "
            "VALUES (?, ?, 'tool_call', 'fetch', '2026-01-01 00:00:00.000000', '{}', ?)",
            ((f"history-{n // 1000:07d}", n % 1000, -1 - n) for n in range(rows)),
        )
        con.commit()
    finally:
        con.close()


def apply_us_per_event(history: int, records: tuple[OutputRecord, ...], events: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "read.db"
        ReadStore.open(parse_read_db_url(f"sqlite:///{path}"), create=True).close()
        if history:
            _fill(path, history)
        store = ReadStore.open(parse_read_db_url(f"sqlite:///{path}"), create=True)
        try:
            tracked = [TrackedRecord("outputs", 0, i, r) for i, r in enumerate(records)]
            t0 = time.perf_counter()
            for i in range(0, len(tracked), BATCH):
                store.apply("bench", tracked[i : i + BATCH])
            return (time.perf_counter() - t0) / events * 1e6
        finally:
            store.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="actions already stored")
    ap.add_argument("--runs", type=int, default=300, help="simulated runs projected")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    records = output_stream(args.runs, 7)
    events = sum(1 for r in records if r.role == "ledger")
    fresh: list[float] = []
    full: list[float] = []
    for _ in range(args.reps):
        fresh.append(apply_us_per_event(0, records, events))
        full.append(apply_us_per_event(args.rows, records, events))
    f, h = statistics.median(fresh), statistics.median(full)
    print(f"{events:,} events in {len(records):,} output records, batches of {BATCH}")
    print(f"empty read model:      {f:7.1f} us/event (min-max {min(fresh):.1f}-{max(fresh):.1f})")
    print(
        f"{args.rows:,} actions stored: {h:7.1f} us/event (min-max {min(full):.1f}-{max(full):.1f})"
    )
    print(f"ratio {h / f:.2f} (median of {args.reps}, alternating)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
