"""The Kafka worker's in-memory store of open runs' ledger entries, compressed in blocks.

A worker holds every entry of every run still in progress (duplicate checks and the bundle
need them); their durable copy is the ledger topic.  Held as they are, entries were most of
the worker's memory: ~1,400 bytes per event in flight (the entry JSON, ~800-1,000 bytes,
plus a ``bytes`` object, a tuple key and a dict slot each).  Compressed one at a time they
shrink little (zstd: 1.6x at ~15 us each); the entries of one run share most of their
text, though, so a run's entries are kept in blocks of :data:`BLOCK` consecutive sequence
numbers, each compressed once complete with zstd (measured on the bench's traffic: 3.8x at
~2.3 us per entry to compress and ~1.8 us to read back).  The newest, incomplete block
stays as it is, so what a run is doing now is read without decompressing anything.
"""

from __future__ import annotations

import cramjam

from fleetledger.processors.pipeline import Staged

#: Consecutive entries of a run compressed together.
BLOCK = 16
#: zstd level of the blocks (level 1 compresses as well as 3 here, faster).
ZSTD_LEVEL = 1
#: Bytes of the length before each entry in a block (big-endian).
LENGTH_BYTES = 4


class RunEntries:
    """One run's entries: complete blocks compressed, the rest as they are."""

    __slots__ = ("_blocks", "_loose")

    def __init__(self) -> None:
        self._blocks: list[bytes] = []
        self._loose: dict[int, bytes] = {}

    def __contains__(self, seq: int) -> bool:
        return seq in self._loose or seq < len(self._blocks) * BLOCK

    def add(self, seq: int, value: bytes) -> bool:
        """Hold ``value`` as entry ``seq`` unless held already (entries never change)."""
        if seq < 0 or seq in self:
            return False
        loose = self._loose
        loose[seq] = value
        start = len(self._blocks) * BLOCK
        # a block can only be complete with BLOCK loose entries (most adds stop here)
        while len(loose) >= BLOCK and all(s in loose for s in range(start, start + BLOCK)):
            block = b"".join(
                len(v).to_bytes(LENGTH_BYTES, "big") + v
                for v in (loose.pop(s) for s in range(start, start + BLOCK))
            )
            self._blocks.append(bytes(cramjam.zstd.compress(block, level=ZSTD_LEVEL)))
            start += BLOCK
        return True

    def block(self, index: int) -> list[bytes]:
        """The entries of compressed block ``index``, decompressed."""
        data = bytes(cramjam.zstd.decompress(self._blocks[index]))
        out, at = [], 0
        while at < len(data):
            size = int.from_bytes(data[at : at + LENGTH_BYTES], "big")
            at += LENGTH_BYTES
            out.append(data[at : at + size])
            at += size
        return out

    def loose(self, seq: int) -> bytes | None:
        return self._loose.get(seq)

    @property
    def blocks(self) -> int:
        return len(self._blocks)


class LedgerEntryStore:
    """``EntryStore`` port: the ledger entries of open runs, held in memory.

    Their durable copy is the ledger topic itself (kept forever, keyed by ``run_id:seq`` and
    partitioned like the run's events): an entry is published once, as the worker's
    output, and a worker that takes over a partition reads its open runs' entries back
    from there (``FaustRuntime._load_entries``), starting at the offset stored with each
    run's state.  Writes are staged until the ledger acknowledged them (:meth:`keep`); a
    sealed run's entries are dropped from memory (:meth:`drop`), never from the ledger.

    Reads of a compressed block keep it decompressed until another block is read, so a
    bundle's materialization, which reads every seq in order, decompresses each block once.
    """

    def __init__(self) -> None:
        self._runs: dict[str, RunEntries] = {}
        self._cached: tuple[str, int, list[bytes]] | None = None
        self.staged: Staged[tuple[str, int]] = Staged(self._read)

    def _read(self, key: tuple[str, int]) -> bytes | None:
        run_id, seq = key
        run = self._runs.get(run_id)
        if run is None or seq < 0:
            return None
        value = run.loose(seq)
        if value is not None or seq >= run.blocks * BLOCK:
            return value
        index = seq // BLOCK
        cached = self._cached
        if cached is None or cached[0] != run_id or cached[1] != index:
            cached = self._cached = (run_id, index, run.block(index))
        return cached[2][seq % BLOCK]

    def get(self, run_id: str, seq: int) -> bytes | None:
        return self.staged.get((run_id, seq))

    def put(self, run_id: str, seq: int, value: bytes) -> None:
        self.staged.put((run_id, seq), value)

    def staged_runs(self) -> set[str]:
        return {run_id for run_id, _seq in self.staged}

    def keep(self) -> set[str]:
        """The staged entries, now acknowledged by the ledger, kept; returns their runs."""
        staged = self.staged.take()
        for (run_id, seq), value in staged.items():
            self.load(run_id, seq, value)
        return {run_id for run_id, _seq in staged}

    def load(self, run_id: str, seq: int, value: bytes) -> bool:
        """Hold an entry (one read back from the ledger, say); False if it was held."""
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = RunEntries()
        return run.add(seq, value)

    def drop(self, run_id: str) -> None:
        """Forget a sealed run's entries."""
        self._runs.pop(run_id, None)
        if self._cached is not None and self._cached[0] == run_id:
            self._cached = None
