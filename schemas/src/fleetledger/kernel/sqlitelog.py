"""The embedded store's append-only log: the SQLite stand-in for the Kafka events topic.

Producers append the very bytes they would publish to Kafka (one single-object encoded
batch per row, keyed by run id); the embedded runtime reads them back by offset.
Offsets are the SQLite rowid: dense, increasing, assigned at commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from fleetledger.kernel.errors import StoreError

LOG_DDL = """
CREATE TABLE IF NOT EXISTS event_log (
    offset INTEGER PRIMARY KEY AUTOINCREMENT,
    key    TEXT NOT NULL,
    value  BLOB NOT NULL
);
"""


def connect(path: Path, *, create: bool = True) -> sqlite3.Connection:
    """Open the store file with the pragmas every fleetledger connection uses."""
    if not create and not path.exists():
        raise StoreError(
            f"embedded store {str(path)!r} does not exist; run a producer or demo first"
        )
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(LOG_DDL)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot open embedded store {str(path)!r}: {exc}") from exc
    return conn


class SqliteLog:
    """Append and read the event log.  One instance per connection; not thread-safe."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> SqliteLog:
        return cls(connect(path, create=create))

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    def append(self, rows: Iterable[tuple[str, bytes]]) -> None:
        """Append (key, value) rows atomically: all or none are visible."""
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("INSERT INTO event_log(key, value) VALUES (?, ?)", rows)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot append to the embedded log: {exc}") from exc

    def read(self, after: int, limit: int) -> Sequence[tuple[int, str, bytes]]:
        """Rows with offset > ``after``, oldest first, at most ``limit``."""
        try:
            cur = self._conn.execute(
                "SELECT offset, key, value FROM event_log WHERE offset > ? ORDER BY offset LIMIT ?",
                (after, limit),
            )
            return cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the embedded log: {exc}") from exc

    def end_offset(self) -> int:
        row = self._conn.execute("SELECT COALESCE(MAX(offset), 0) FROM event_log").fetchone()
        return int(row[0])

    def close(self) -> None:
        self._conn.close()
