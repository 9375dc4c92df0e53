"""The embedded runtime: the pure pipeline over the SQLite log, the default without a broker.

Messages are read from ``event_log`` in offset order and processed in batches; each batch
(run state, ledger entries, totals, intercepts, bundles, dead letters, the consumer
offset, and the read model's rows with their tracking record) commits in one SQLite
transaction, so a crash mid-batch neither loses nor duplicates anything: the batch is
simply processed again.  With the read model in PostgreSQL (``read_model=``), its rows
and tracking record commit in a PostgreSQL transaction just before the SQLite one; a
crash in between replays the batch, whose rows the tracking record then skips.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from fleetledger.kernel.errors import StoreError
from fleetledger.kernel.sqlitelog import SqliteLog, connect
from fleetledger.processors.archive import ArchiveSink
from fleetledger.processors.core import CLOSED_GAP_MARK, CoreConfig
from fleetledger.processors.pipeline import (
    DeadLetter,
    EntryDoc,
    InterceptDoc,
    Outputs,
    Pipeline,
    SourcePosition,
    Staged,
    StoredBundle,
    TotalsDoc,
)
from fleetledger.processors.readmodel import records_of
from fleetledger.processors.readstore import ReadStore, tracked
from fleetledger.schemas.codec import Codec

LOG_TOPIC = "event_log"
#: WAL pages between automatic checkpoints of the runtime's connection (64 MiB of 4 KiB pages).
WAL_CHECKPOINT_PAGES = 16_384
#: Most log messages per transaction (``batch_bytes`` bounds their size).  A batch pays
#: per run it touches (state, totals and read-model rows written once, whatever the
#: number of its events) and per commit: on a backlog of the default fleet, 2,000
#: processed ~20% more events per second than 500 and wrote 16% fewer bytes.
BATCH_MESSAGES = 2000
#: The read-model position of gap checks made while the log is idle (no input offset).
GAP_CHECKS = "gap_checks"

#: The output tables.  ``ledger`` is a rowid table: entries are appended in processing
#: order, its (run, seq) key is a separate index (a store made before this keeps its
#: WITHOUT ROWID table keyed by (run, seq); the statements are the same for both).
OUTPUT_DDL = """
CREATE TABLE IF NOT EXISTS run_state (run_id TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS totals (run_id TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS intercepts (
    key TEXT PRIMARY KEY, run_id TEXT NOT NULL, value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS bundles (
    run_id TEXT PRIMARY KEY, digest TEXT NOT NULL, value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS deadletter (
    key TEXT PRIMARY KEY, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL, error TEXT NOT NULL, value BLOB NOT NULL,
    item INTEGER  -- the message's index in an EventPack record, NULL for a plain record
);
CREATE TABLE IF NOT EXISTS consumer_offsets (consumer TEXT PRIMARY KEY, "offset" INTEGER NOT NULL);
"""


def open_store(path: Path, *, create: bool = True) -> sqlite3.Connection:
    conn = connect(path, create=create)
    try:
        conn.executescript(OUTPUT_DDL)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(deadletter)")}
        if "item" not in columns:  # a store written before EventPack records
            conn.execute("ALTER TABLE deadletter ADD COLUMN item INTEGER")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot prepare embedded store {str(path)!r}: {exc}") from exc
    return conn


class _SqliteStates:
    """``StateStore`` over the ``run_state`` table; writes flushed once per batch."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.staged: Staged[str] = Staged(self._read)

    def _read(self, run_id: str) -> bytes | None:
        row = self._conn.execute(
            "SELECT value FROM run_state WHERE run_id = ?", (run_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def get(self, run_id: str) -> bytes | None:
        return self.staged.get(run_id)

    def put(self, run_id: str, value: bytes) -> None:
        self.staged.put(run_id, value)

    def flush(self) -> None:
        """Write the staged states inside the batch's transaction."""
        self._conn.executemany(
            "INSERT INTO run_state(run_id, value) VALUES (?, ?) "
            "ON CONFLICT(run_id) DO UPDATE SET value = excluded.value",
            self.staged.take().items(),
        )


class _SqliteEntries:
    """``EntryStore`` over the ``ledger`` table (which :class:`EmbeddedSink` writes).

    A read of seq 0 is how a bundle's materialization starts (it then reads every seq in
    order): the run's stored entries are then read in one query and kept for the rest of
    the batch (stored entries never change; :meth:`forget` drops them after the batch).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.staged: Staged[tuple[str, int]] = Staged(self._read)
        self._runs: dict[str, dict[int, bytes]] = {}

    def _read(self, key: tuple[str, int]) -> bytes | None:
        run_id, seq = key
        run = self._runs.get(run_id)
        if run is None and seq == 0:
            run = self._runs[run_id] = {
                s: bytes(v)
                for s, v in self._conn.execute(
                    "SELECT seq, value FROM ledger WHERE run_id = ?", (run_id,)
                )
            }
        if run is not None and seq in run:
            return run[seq]
        row = self._conn.execute(
            "SELECT value FROM ledger WHERE run_id = ? AND seq = ?", key
        ).fetchone()
        return None if row is None else bytes(row[0])

    def forget(self) -> None:
        """After the batch: drop the staged writes and the entries read for bundles."""
        self.staged.discard()
        self._runs.clear()

    def get(self, run_id: str, seq: int) -> bytes | None:
        return self.staged.get((run_id, seq))

    def put(self, run_id: str, seq: int, value: bytes) -> None:
        self.staged.put((run_id, seq), value)


@dataclass
class ProcessStats:
    messages: int = 0
    events: int = 0
    duplicates: int = 0
    bundles: int = 0
    intercepts: int = 0
    deadletters: int = 0

    def add(self, other: ProcessStats) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class WorkerReport:
    """What a worker did over one reporting interval, its lag, and its total since start."""

    interval_s: float
    window: ProcessStats
    lag: int
    total: ProcessStats

    def line(self) -> str:
        w, per_s = self.window, max(self.interval_s, 1e-9)
        return (
            f"worker: {w.messages:,} messages ({w.messages / per_s:,.0f}/s), "
            f"{w.events:,} events ({w.events / per_s:,.0f}/s), lag {self.lag:,}, "
            f"{w.intercepts:,} intercepts, {w.bundles:,} bundles, {w.deadletters:,} dead "
            f"letters in {self.interval_s:.1f}s; {self.total.messages:,} messages since start"
        )


def _within(
    rows: Sequence[tuple[int, str, bytes]], budget: int
) -> Sequence[tuple[int, str, bytes]]:
    """The first rows whose values fit ``budget`` bytes (at least one): a batch of huge
    messages stays short, so a crash redoes little and commits come often."""
    total = 0
    for i, (_offset, _key, value) in enumerate(rows):
        total += len(value)
        if total > budget and i > 0:
            return rows[:i]
    return rows


@contextlib.contextmanager
def _sigint_between_batches() -> Iterator[list[int]]:
    """SIGINT stops the loop between batches (a batch in flight commits first); a second
    SIGINT interrupts at once.  The loop then raises KeyboardInterrupt, as the CLI expects.
    Only the main thread can take signals; elsewhere this changes nothing."""
    interrupted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_sigint(signum: int, _frame: Any) -> None:
        interrupted.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


class EmbeddedRuntime:
    """Process the embedded log with the shared pipeline, batch by batch, transactionally."""

    def __init__(
        self,
        path: Path,
        codec: Codec,
        config: CoreConfig,
        *,
        consumer: str = "processor",
        batch_size: int = BATCH_MESSAGES,
        batch_bytes: int = 4 * 1024 * 1024,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        archive: ArchiveSink | None = None,
        read_model: ReadStore | None = None,
    ) -> None:
        """``read_model``: where the batches' rows are projected (default: this file, in
        the batch transaction)."""
        self._conn = open_store(path)
        # A batch writes thousands of pages (entries, bundles, read-model rows): with
        # SQLite's default (a checkpoint whenever the WAL passes 1,000 pages) nearly
        # every commit copied the WAL back into the file, a third of the processing
        # time.  Checkpoint every 64 MiB of WAL instead, and truncate it to that size
        # afterwards.  Each batch still commits atomically; only checkpoints are rarer.
        self._conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        self._conn.execute(f"PRAGMA journal_size_limit={WAL_CHECKPOINT_PAGES * 4096}")
        self._log = SqliteLog(self._conn)
        self._consumer = consumer
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._clock = clock
        self._states = _SqliteStates(self._conn)
        self._entries = _SqliteEntries(self._conn)
        self._pipeline = Pipeline(codec, config, self._states, self._entries)
        self._sink = EmbeddedSink(self._conn, archive)
        self._own_read_model = read_model is None
        try:
            self._read_model = read_model or ReadStore.borrow(self._conn, f"sqlite:///{path}")
        except BaseException:
            self._conn.close()
            raise
        # Open gaps are part of the stored run state: a restarted runtime finds them
        # there and keeps timing them (the stale-gap check uses the stored gap start).
        self._pipeline.watch_gaps(self.open_gap_runs())

    @property
    def read_model(self) -> ReadStore:
        return self._read_model

    def close(self) -> None:
        if self._own_read_model:
            self._read_model.close()
        self._conn.close()

    def __enter__(self) -> EmbeddedRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def committed_offset(self) -> int:
        row = self._conn.execute(
            'SELECT "offset" FROM consumer_offsets WHERE consumer = ?', (self._consumer,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def open_gap_runs(self) -> list[str]:
        """Runs whose stored state has an open sequence gap."""
        rows = self._conn.execute(
            "SELECT run_id FROM run_state WHERE instr(value, ?) = 0", (CLOSED_GAP_MARK,)
        )
        return [run_id for (run_id,) in rows]

    def lag(self) -> int:
        return self._log.end_offset() - self.committed_offset()

    def process_batch(self) -> ProcessStats | None:
        """Process up to ``batch_size`` messages in one transaction; None when caught up."""
        stats = ProcessStats()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                after = self.committed_offset()
                rows = _within(self._log.read(after, self._batch_size), self._batch_bytes)
                if not rows:
                    self._conn.execute("ROLLBACK")
                    return None
                now = self._clock()
                out = self._pipeline.handle_many(
                    ((bytes(v), SourcePosition(LOG_TOPIC, 0, off)) for off, _k, v in rows), now
                )
                self._write(out, stats)
                stats.messages += len(rows)
                ticked = self._pipeline.tick(now)
                self._write(ticked, stats)
                self._project(rows[-1][0], (out, ticked))
                self._states.flush()
                # The sink wrote the ledger entries; the staged copies only served reads.
                self._entries.forget()
                self._conn.execute(
                    'INSERT INTO consumer_offsets(consumer, "offset") VALUES (?, ?) '
                    'ON CONFLICT(consumer) DO UPDATE SET "offset" = excluded."offset"',
                    (self._consumer, rows[-1][0]),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._states.staged.discard()
                self._entries.forget()
                # A signal may land after COMMIT returned: then there is nothing to undo.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"embedded processing failed and was rolled back: {exc}") from exc
        return stats

    def tick(self) -> ProcessStats:
        """Stale-gap checks without new input (an idle log): one transaction when a run
        has an open gap, nothing otherwise."""
        stats = ProcessStats()
        if not self._pipeline.gapped:
            return stats
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                ticked = self._pipeline.tick(self._clock())
                self._write(ticked, stats)
                self._project_gap_checks(ticked)
                self._states.flush()
                self._conn.execute("COMMIT")
            except BaseException:
                self._states.staged.discard()
                self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"embedded gap check failed and was rolled back: {exc}") from exc
        return stats

    def process_available(
        self, progress: Callable[[ProcessStats], None] | None = None
    ) -> ProcessStats:
        """Process until the log is drained, then check open gaps once more (so a gap
        times out even while nothing arrives); ``progress`` is called after every batch."""
        total = ProcessStats()
        while (stats := self.process_batch()) is not None:
            total.add(stats)
            if progress is not None:
                progress(stats)
        total.add(self.tick())
        return total

    def run(
        self,
        *,
        once: bool = False,
        poll_s: float = 0.5,
        report: Callable[[WorkerReport], None] | None = None,
        report_s: float = 10.0,
        housekeeping: Callable[[], None] | None = None,
        housekeeping_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        should_stop: Callable[[], bool] | None = None,
    ) -> ProcessStats:
        """Process the log as it grows: batches as they arrive, a poll every ``poll_s``
        seconds when idle.

        ``report`` gets throughput, lag and intercepts every ``report_s`` seconds (and at
        the end with ``once``); ``housekeeping`` (retention) runs every ``housekeeping_s``.
        With ``once``, drain and return; with ``should_stop``, return once it says so
        (checked between batches; the console stops its in-process worker this way).
        Returns the sum when it returns.
        """
        total = ProcessStats()
        window = ProcessStats()
        last_report = clock()
        last_housekeeping = last_report - housekeeping_s

        def emit(now: float) -> None:
            nonlocal window, last_report
            if report is not None:
                report(WorkerReport(now - last_report, window, self.lag(), total))
            window = ProcessStats()
            last_report = now

        with _sigint_between_batches() as interrupted:
            while True:
                if interrupted:
                    raise KeyboardInterrupt
                if should_stop is not None and should_stop():
                    emit(clock())
                    return total
                stats = self.process_batch()
                # Caught up: check open gaps, so a gap times out while nothing arrives.
                checked = self.tick() if stats is None else stats
                total.add(checked)
                window.add(checked)
                now = clock()
                if housekeeping is not None and now - last_housekeeping >= housekeeping_s:
                    housekeeping()
                    last_housekeeping = now
                if stats is None and once:
                    emit(now)
                    return total
                if now - last_report >= report_s:
                    emit(now)
                if stats is None:
                    sleep(poll_s)

    def _project(self, offset: int, outputs: tuple[Outputs, ...]) -> None:
        """The batch's outputs into the read model, tracked at the batch's last offset."""
        records = [r for out in outputs for r in records_of(out)]
        if records:
            self._read_model.apply(self._consumer, tracked(LOG_TOPIC, 0, offset, records))

    def _project_gap_checks(self, outputs: Outputs) -> None:
        """Idle gap checks' outputs into the read model.  They come from no input offset,
        so they are tracked on their own position (``GAP_CHECKS``, one per check that
        produced anything); their rows are upserts, so a check repeated after a crash
        changes nothing."""
        records = records_of(outputs)
        if records:
            at = self._read_model.positions(self._consumer).get((GAP_CHECKS, 0), 0)
            self._read_model.apply(self._consumer, tracked(GAP_CHECKS, 0, at, records))

    def _write(self, out: Outputs, stats: ProcessStats) -> None:
        self._sink.write(out)
        stats.events += out.events
        stats.duplicates += out.duplicates
        stats.bundles += len(out.bundles)
        stats.intercepts += len(out.intercepts)
        stats.deadletters += len(out.deadletters)


class EmbeddedSink:
    """``OutputSink`` over the embedded store's output tables, inside the caller's transaction.

    The ledger table is also the pipeline's entry store (read through it).  Bundles are
    archived (write-once, idempotent) before the transaction commits, so a crash
    re-archives the same bytes.
    """

    def __init__(self, conn: sqlite3.Connection, archive: ArchiveSink | None = None) -> None:
        self._conn = conn
        self._archive = archive

    def write(self, outputs: Outputs) -> None:
        c = self._conn
        c.executemany(
            "INSERT INTO ledger(run_id, seq, value) VALUES (?, ?, ?) "
            "ON CONFLICT(run_id, seq) DO UPDATE SET value = excluded.value",
            [(e.run_id, e.seq, e.data) for e in outputs.entries],
        )
        c.executemany(
            "INSERT INTO totals(run_id, value) VALUES (?, ?) "
            "ON CONFLICT(run_id) DO UPDATE SET value = excluded.value",
            [(t.run_id, t.data) for t in outputs.totals],
        )
        c.executemany(
            "INSERT INTO intercepts(key, run_id, value) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(i.key, i.run_id, i.data) for i in outputs.intercepts],
        )
        for b in outputs.bundles:
            if self._archive is not None:
                self._archive.write(b)
        c.executemany(
            "INSERT INTO bundles(run_id, digest, value) VALUES (?, ?, ?) "
            "ON CONFLICT(run_id) DO UPDATE SET "
            "digest = excluded.digest, value = excluded.value",
            [(b.run_id, b.digest, b.data) for b in outputs.bundles],
        )
        c.executemany(
            'INSERT INTO deadletter(key, topic, partition, "offset", item, error, value) '
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING",
            [
                (d.key, p.topic, p.partition, p.offset, p.index, d.error, d.value)
                for d in outputs.deadletters
                for p in (d.position,)
            ],
        )


class EmbeddedReader:
    """Read the embedded store's outputs (for the CLI and tests)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn = open_store(path, create=False)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EmbeddedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _values(self, sql: str, *args: Any) -> Iterator[Any]:
        for (value,) in self._conn.execute(sql, args):
            yield orjson.loads(value)

    def committed_offset(self, consumer: str = "processor") -> int:
        """The last log offset the runtime ``consumer`` has committed (0: none yet)."""
        row = self._conn.execute(
            'SELECT "offset" FROM consumer_offsets WHERE consumer = ?', (consumer,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def totals(self) -> list[TotalsDoc]:
        return list(self._values("SELECT value FROM totals ORDER BY run_id"))

    def intercepts(self) -> list[InterceptDoc]:
        return list(self._values("SELECT value FROM intercepts ORDER BY key"))

    def bundle(self, run_id: str) -> StoredBundle | None:
        row = self._conn.execute(
            "SELECT digest, value FROM bundles WHERE run_id = ?", (run_id,)
        ).fetchone()
        return None if row is None else StoredBundle(run_id, row[0], bytes(row[1]))

    def bundles(self) -> Iterator[StoredBundle]:
        for run_id, digest, value in self._conn.execute(
            "SELECT run_id, digest, value FROM bundles ORDER BY run_id"
        ):
            yield StoredBundle(run_id, digest, bytes(value))

    def ledger(self, run_id: str) -> list[EntryDoc]:
        return list(self._values("SELECT value FROM ledger WHERE run_id = ? ORDER BY seq", run_id))

    def deadletters(self) -> list[DeadLetter]:
        rows = self._conn.execute(
            'SELECT topic, partition, "offset", item, error, value FROM deadletter ORDER BY key'
        )
        return [DeadLetter(bytes(v), SourcePosition(t, p, o, i), e) for t, p, o, i, e, v in rows]

    def __repr__(self) -> str:
        return f"the embedded store {str(self._path)!r}"
