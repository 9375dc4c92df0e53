"""The Kafka runtime's reaches past faust-streaming's public API still hold.

``fleetledger.processors.runtimes.faust_private`` explains why each exists.  These tests
fail when faust-streaming changes in a way that affects them: another version (the
workarounds must be re-verified, faust-streaming/faust#596 and #606 may be fixed), the
consumer's internal commit going away or changing shape, or a table's store starting to
send changelog records itself (the runtime would then write every record twice).
"""

from __future__ import annotations

import asyncio
import inspect

import faust
from faust.transport.consumer import Consumer

from fleetledger.processors.runtimes.faust_private import (
    VERIFIED_VERSIONS,
    set_fetch_max_wait,
    table_store,
)


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
