"""The Kafka runtime's reaches past faust-streaming's public API still hold.

``fleetledger.processors.runtimes.faust_private`` explains why each exists.  These tests
fail when faust-streaming changes in a way that affects them: another version (the
workarounds must be re-verified, faust-streaming/faust#596 and #606 may be fixed), the
consumer's internal commit going away or changing shape, or a table's store starting to
send changelog records itself (the runtime would then write every record twice).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.transport.consumer import Consumer
from faust.types import TP, Message

from fleetledger.processors.runtimes.faust_private import (
    VERIFIED_VERSIONS,
    race_flow_per_fetch,
    set_fetch_max_wait,
    table_store,
)

#: sha256 of the source of faust-streaming 0.15's ``Consumer._drain_messages``, which
#: ``race_flow_per_fetch`` replaces with a copy that races once per fetch.
DRAIN_LOOP_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


def test_the_installed_faust_is_a_verified_version() -> None:
    major_minor = ".".join(faust.__version__.split(".")[:2])
    assert major_minor in VERIFIED_VERSIONS, (
        f"faust-streaming {faust.__version__}: re-verify faust_private's workarounds "
        "(offset commits, changelog writes) and add the version"
    )


def test_the_consumer_still_commits_given_offsets_as_a_coroutine() -> None:
    commit = Consumer._commit_offsets
    assert inspect.iscoroutinefunction(commit)
    params = list(inspect.signature(commit).parameters)
    assert params[:2] == ["self", "offsets"]


def _offline_app(name: str) -> faust.App:
    """An app that is built but never started (its broker is never contacted)."""
    return faust.App(
        name, broker="kafka://127.0.0.1:9", store="memory://", autodiscover=False, web_enabled=False
    )


def test_writing_a_tables_store_sends_no_changelog_record() -> None:
    app = _offline_app("faust-private-check")
    table = app.Table("t", default=None, key_type=bytes, value_type=bytes, partitions=1)
    sent: list[object] = []
    table.send_changelog = lambda *args, **kwargs: sent.append(args)  # type: ignore[method-assign,assignment]
    store = table_store(table)
    store[b"k"] = b"v"
    assert store[b"k"] == b"v" and dict(table.data) == {b"k": b"v"}
    store.pop(b"k")
    assert sent == [], "the runtime sends changelog records itself; Faust must not as well"


def test_the_worker_consumer_is_created_with_the_fetch_wait_set() -> None:
    """Faust's consumer thread creates its aiokafka consumer in one method, and aiokafka
    builds the fetcher from ``_fetch_max_wait_ms`` when it starts."""
    from aiokafka import AIOKafkaConsumer

    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)

    async def created() -> AIOKafkaConsumer:
        app = _offline_app("faust-private-fetch-wait")
        set_fetch_max_wait(app, 123)
        thread = app.consumer._thread  # type: ignore[attr-defined]
        return thread._create_worker_consumer(app.transport)

    consumer = asyncio.run(created())
    assert consumer._fetch_max_wait_ms == 123


def test_faust_s_drain_loop_is_the_one_the_per_fetch_race_was_copied_from() -> None:
    source = inspect.getsource(Consumer._drain_messages)
    assert hashlib.sha256(source.encode()).hexdigest() == DRAIN_LOOP_SHA256, (
        "faust-streaming's Consumer._drain_messages changed: port the change to "
        "faust_private._drain_messages (or drop it if the per-message race is gone)"
    )


def _message(offset: int) -> Message:
    return Message(
        topic="t",
        partition=0,
        offset=offset,
        timestamp=0.0,
        timestamp_type=0,
        headers=[],
        key=b"",
        value=str(offset).encode(),
        checksum=None,
    )


class _Fetcher:
    def __init__(self) -> None:
        self._stopped = asyncio.Event()


def test_a_fetch_is_raced_once_and_a_flow_stop_leaves_the_rest_of_it_undelivered() -> None:
    """Messages of a fetch reach the callback in order, in one race against a flow stop;
    a stop while one is being delivered cancels it, and the messages after it are not
    delivered (they are fetched again once the rebalance seeks back)."""
    tp = TP("t", 0)

    async def run() -> tuple[list[int], int, int | None]:
        app = _offline_app("faust-private-race")
        race_flow_per_fetch(app)
        consumer: Any = app.consumer
        fetcher = _Fetcher()
        fetches = [[0, 1, 2, 3, 4], [5, 6]]
        delivered: list[int] = []
        races = 0

        async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Message]]:
            if not fetches:
                fetcher._stopped.set()
                return
            consumer.resume_flow()
            for offset in fetches.pop(0):
                yield tp, _message(offset)

        async def callback(message: Message) -> None:
            delivered.append(message.offset)
            if message.offset == 2:
                consumer.stop_flow()  # a rebalance starts while this one is delivered
                await asyncio.sleep(5)  # blocked, as Faust's flow control blocks it

        wait_first = consumer.wait_first

        async def counting_wait_first(*coros: Any, **kwargs: Any) -> Any:
            nonlocal races
            races += 1
            return await wait_first(*coros, **kwargs)

        consumer.getmany = getmany
        consumer.callback = callback
        consumer.wait_first = counting_wait_first
        await asyncio.wait_for(consumer._drain_messages(fetcher), timeout=10)
        return delivered, races, consumer._read_offset[tp]

    delivered, races, read_offset = asyncio.run(run())
    assert delivered == [0, 1, 2, 5, 6]
    assert races == 2, "one race per fetch, not one per message"
    assert read_offset == 6
