"""The only places the Kafka runtime reaches past faust-streaming's public API.

faust-streaming is the runtime (the project's choice); two things it does not offer
publicly are needed for at-least-once processing with crash-safe ordering, and two more
for latency and CPU; all four live here, checked against the versions in
:data:`VERIFIED_VERSIONS` by ``tests/test_faust_private.py`` (which fails on any other
version, or when the drain loop copied below changed, so an upgrade is re-verified
instead of silently changing behaviour):

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
* **One race against a flow stop per fetch, not per message.**  Faust's drain loop hands
  each fetched message to the topic's callback inside ``Service.wait_first(callback,
  suspend_flow.wait())``: four tasks, an ``asyncio.wait`` and three cancellations per
  message, 63-89 us each on the bench machine: most of what Faust costs per message
  (py-spy: ~9% of the worker's CPU on traffic of one event per message).
  :func:`race_flow_per_fetch` makes the consumer deliver each fetch's messages in one
  coroutine raced once the same way: a flow stop (a rebalance) or the
  consumer stopping cancels the delivery where it is, and the messages after it are not
  delivered, as Faust's loop does (its ``getmany`` stops yielding once the flow stops).
  Per message, the same checks run as in Faust's loop: flow active and consumer
  generation unchanged (``getmany``'s), read offset and gap bookkeeping, and a yield to
  the event loop every 100 messages.  Faust's count-based commit (``broker_commit_every``)
  is checked once per fetch instead of once per message.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Mapping, MutableMapping
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
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


#: Faust's drain loop yields to the event loop after this many messages; so does ours.
YIELD_EVERY = 100


def race_flow_per_fetch(app: faust.App) -> None:
    """Make ``app``'s consumer deliver each fetch's messages in one coroutine raced against
    a flow stop, instead of racing every message (call before the app starts)."""
    consumer = app.consumer
    consumer._drain_messages = types.MethodType(_drain_messages, consumer)  # type: ignore[attr-defined]


async def _drain_messages(self: Any, fetcher: Any) -> None:
    # Faust's Consumer._drain_messages (faust-streaming 0.15), with the per-message
    # wait_first hoisted to the fetch; exercised by every Kafka test of the worker.
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    app = self.app
    sleep = asyncio.sleep

    async def deliver(fetched: list[tuple[TP, Any]], generation: int) -> None:
        since_yield = 0
        for tp, message in fetched:
            if not self.flow_active or app.consumer_generation_id != generation:
                return  # what getmany checks before yielding each message
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await sleep(0)
                since_yield = 0
            offset = message.offset
            r_offset = get_read_offset(tp)
            if r_offset is None or offset >= r_offset:
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                await callback(message)
                set_read_offset(tp, offset)

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = getmany(timeout=1.0)
            # Sleeping because sometimes getmany is called in a loop never releasing to
            # the event loop (as Faust's loop does)
            await self.sleep(0)
            if not self.should_stop:
                # getmany yields a fetch's messages without awaiting in between
                fetched = [pair async for pair in ait]
                if fetched:
                    generation = app.consumer_generation_id
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await self.wait_first(deliver(fetched, generation), self.suspend_flow.wait())
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


def table_store(table: Any) -> MutableMapping[bytes, bytes]:
    """A table's local store, written without sending changelog records."""
    return cast(MutableMapping[bytes, bytes], table.data)


__all__ = [
    "VERIFIED_VERSIONS",
    "commit_offsets",
    "race_flow_per_fetch",
    "set_fetch_max_wait",
    "table_store",
]
