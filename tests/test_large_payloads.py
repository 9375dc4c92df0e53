"""A 5 MB tool input on Kafka (the test broker) and on SQLite: offloaded to the blob store;
without a blob store, only that call fails and later runs on the same recorder succeed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from fleetledger.kernel.config import Settings, load_settings
from fleetledger.kernel.errors import MessageTooLargeError
from fleetledger.kernel.sqlitelog import SqliteLog
from fleetledger.producers import FolderBlobStore, Recorder, events_topic
from fleetledger.schemas import Codec, EventType, ToolCall, TraceEvent

from .test_producer_kafka import read_all

FIVE_MB = {"document": "lorem ipsum " * (5 * 1024 * 1024 // 12)}


async def scenario(settings: Settings) -> tuple[list[str], str | None]:
    """Run 1 reads a 5 MB document; runs 2 and 3 come after it on the same recorder."""
    offloaded: str | None = None
    async with Recorder.from_url(settings=settings, producer_id="big") as rec:
        async with rec.run(agent_id="reader") as first:
            if settings.blob_dir is None:
                with pytest.raises(MessageTooLargeError, match="tool_call event"):
                    await first.tool_call(name="read", duration_ms=5, inputs=FIVE_MB)
                await first.tool_call(name="read", duration_ms=5, inputs={"document": "short"})
            else:
                event = await first.tool_call(name="read", duration_ms=5, inputs=FIVE_MB)
                assert isinstance(event.payload, ToolCall) and event.payload.inputs_ref
                offloaded = event.payload.inputs_ref.sha256
        ids = [first.run_id]
        for name in ("second", "third"):
            async with rec.run(agent_id=name) as run:
                await run.tool_call(name="read", duration_ms=1, inputs={"n": name})
            ids.append(run.run_id)
    return ids, offloaded


def check(events: list[TraceEvent], ids: list[str], offloaded: str | None, blobs: Path) -> None:
    by_run: dict[str, list[TraceEvent]] = {}
    for e in events:
        by_run.setdefault(e.run_id, []).append(e)
    assert sorted(by_run) == sorted(ids)
    for run_id in ids:
        evs = by_run[run_id]
        assert [e.seq for e in evs] == list(range(len(evs)))
        assert evs[-1].type is EventType.RUN_COMPLETED
    if offloaded is not None:
        text = json.dumps(FIVE_MB, separators=(",", ":"), sort_keys=True).encode()
        assert offloaded == hashlib.sha256(text).hexdigest()
        assert FolderBlobStore(blobs).get(offloaded) == text


@pytest.mark.parametrize("with_blobs", [True, False], ids=["offloaded", "no-blob-store"])
async def test_five_megabytes_on_sqlite(tmp_path: Path, with_blobs: bool) -> None:
    db = tmp_path / "ledger.db"
    blobs = tmp_path / "blobs"
    settings = load_settings(
        broker=f"sqlite:///{db}", blob_dir=str(blobs) if with_blobs else "none"
    )
    ids, offloaded = await scenario(settings)
    log = SqliteLog.open(db, create=False)
    try:
        rows = log.read(0, 1000)
    finally:
        log.close()
    assert all(len(value) <= settings.max_message_bytes for _, _, value in rows)
    codec = Codec()
    check([e for _, _, v in rows for e in codec.decode(v)], ids, offloaded, blobs)
    assert blobs.exists() is with_blobs


@pytest.mark.kafka
@pytest.mark.parametrize("with_blobs", [True, False], ids=["offloaded", "no-blob-store"])
async def test_five_megabytes_on_kafka(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, with_blobs: bool
) -> None:
    blobs = tmp_path / "blobs"
    settings = load_settings(
        broker=f"kafka://{kafka_bootstrap}",
        topic_prefix=topic_prefix,
        partitions=1,
        enable_idempotence=False,
        blob_dir=str(blobs) if with_blobs else "none",
    )
    ids, offloaded = await scenario(settings)
    records: dict[int, list[Any]] = await read_all(kafka_bootstrap, events_topic(settings), 1, 3)
    values = [r.value for r in records[0]]
    assert values and all(len(v) <= settings.max_message_bytes for v in values)
    codec = Codec()
    check(
        [e for v in values for m in codec.messages_of(v) for e in codec.decode(m)],
        ids,
        offloaded,
        blobs,
    )
