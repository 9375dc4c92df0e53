"""The only places the Kafka runtime reaches past faust-streaming's public API.

faust-streaming is the runtime (the project's choice); two things it does not offer
publicly are needed for at-least-once processing with crash-safe ordering, and a third
for latency; all three live here, checked against the versions in :data:`VERIFIED_VERSIONS` by
``tests/test_faust_private.py`` (which fails on any other version, so an upgrade is
re-verified instead of silently changing behaviour):

* **Committing the events topic's offsets by hand.**  Faust's own offset bookkeeping
  treats an offset it did not deliver (a fetch racing the seek at the end of table
  recovery) as a gap to skip, and commits past it: after a restart, messages are skipped
  (faust-streaming/faust#596, #606, open for 0.15).  The runtime tracks processed offsets
  itself and commits them through the consumer's internal ``_commit_offsets``, as a group
  member, so partitions no longer assigned are left out.
* **Writing a table's store without Faust's changelog producer.**  ``table[key] = value``
  sends one changelog record per write through Faust's producer buffer, acknowledged
  later and out of the runtime's control.  The runtime writes the store
  (``table.data``) and sends the changelog records itself, batched, through its output
  producer, awaiting them before the run state that refers to them and before the offsets
  that cover them.  Recovery reads those records like any changelog record.
* **The worker consumer's fetch wait.**  Faust creates its aiokafka consumer with
  ``fetch_max_wait_ms=1500``, fixed.  A broker that answers a fetch as soon as a record is
  there (Apache Kafka, ``fetch.min.bytes=1``) makes that a cap on idle polls only, but one
  that holds every fetch for the whole wait (the Tansu test broker: a record sent to an
  idle consumer arrived after a median 405 ms with 1500, 138 ms with 500, 6.6 ms with
  20) delays every record by up to that.  The runtime sets the wait
  (``FLEETLEDGER_FETCH_MAX_WAIT_MS``) on the consumer Faust creates, before it starts.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, cast

import faust
from faust.types import TP

#: faust-streaming versions the workarounds were verified against (major.minor).
VERIFIED_VERSIONS = ("0.15",)


async def commit_offsets(app: faust.App, offsets: Mapping[TP, int]) -> None:
    """Commit ``offsets`` (next offset to read, per partition) for the app's group."""
    await app.consumer._commit_offsets(offsets)  # type: ignore[attr-defined]


def set_fetch_max_wait(app: faust.App, ms: int) -> None:
    """Make the aiokafka consumer that ``app``'s consumer thread creates wait at most
    ``ms`` per fetch at the broker (call before the app starts)."""
    thread = app.consumer._thread  # type: ignore[attr-defined]
    create = thread._create_worker_consumer

    def create_with_wait(transport: Any) -> Any:
        consumer = create(transport)
        consumer._fetch_max_wait_ms = ms  # read when start() builds the fetcher
        return consumer

    thread._create_worker_consumer = create_with_wait


def table_store(table: Any) -> MutableMapping[bytes, bytes]:
    """A table's local store, written without sending changelog records."""
    return cast(MutableMapping[bytes, bytes], table.data)


__all__ = ["VERIFIED_VERSIONS", "commit_offsets", "set_fetch_max_wait", "table_store"]
