"""In-process implementations of the pipeline's ports: for tests, tools and verification.

The processors' runtimes back the ports with Faust tables or SQLite; these plain dicts
make a complete :class:`~.pipeline.Pipeline` with no I/O at all.
"""

from __future__ import annotations

from fleetledger.processors.core import CoreConfig
from fleetledger.processors.pipeline import Pipeline


class MemoryStates:
    """``StateStore`` over a dict."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    def get(self, run_id: str) -> bytes | None:
        return self.values.get(run_id)

    def put(self, run_id: str, value: bytes) -> None:
        self.values[run_id] = value


class MemoryEntries:
    """``EntryStore`` over a dict keyed by (run_id, seq)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, int], bytes] = {}

    def get(self, run_id: str, seq: int) -> bytes | None:
        return self.values.get((run_id, seq))

    def put(self, run_id: str, seq: int, value: bytes) -> None:
        self.values[(run_id, seq)] = value


def memory_pipeline(config: CoreConfig | None = None) -> Pipeline:
    """A pipeline over fresh in-memory ports with the current codec."""
    from fleetledger.schemas.codec import Codec

    return Pipeline(Codec(), config or CoreConfig(), MemoryStates(), MemoryEntries())
