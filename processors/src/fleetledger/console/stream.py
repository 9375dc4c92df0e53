"""Server-sent events over the read model's change feed.

One :class:`ChangeHub` per app watches the read model's head position (one cheap query
every ``poll_s``) and wakes the streams when it moves; each stream then reads the
changes after its own position and sends them as events whose ``id`` is the change's
position (:mod:`fleetledger.processors.livefeed`).  A reconnecting browser sends the
last id back as ``Last-Event-ID`` (EventSource does so by itself), so it resumes exactly
where it stopped.  Changes a subscription filters out still advance the stream's id
(an ``id:`` line without data), so a resume never re-reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson

from fleetledger.processors.livefeed import LiveEvent, Subscription, events, runs_wanted
from fleetledger.processors.readmodel import ReadModel, RunRow

#: How long a browser waits before reconnecting (the ``retry:`` field), milliseconds.
RETRY_MS = 1000
#: Most changes read per query.
BATCH = 500


def format_event(ev: LiveEvent) -> bytes:
    data = orjson.dumps(ev.to_json())
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (ev.id, ev.name.encode(), data)


def parse_last_event_id(value: str | None) -> int | None:
    """A ``Last-Event-ID`` (or ``after``) value as a position; None when absent or not one."""
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit():
        return None
    return int(value)


class ChangeHub:
    """Wakes every waiting stream when the read model's head moves."""

    def __init__(self, reads: ReadModel, *, poll_s: float = 0.1) -> None:
        self._reads = reads
        self._poll_s = poll_s
        self._head = 0
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def head(self) -> int:
        return self._head

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def start(self) -> None:
        self._head = self._reads.position()
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._watch())

    def close_soon(self) -> None:
        """Close from any thread (a signal handler, a test): every stream ends."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._closed.set)

    async def _watch(self) -> None:
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self._poll_s)
            try:
                head = self._reads.position()
            except Exception:  # a failing read model is reported by the requests themselves
                continue
            if head != self._head:
                self._head = head
                changed, self._changed = self._changed, asyncio.Event()
                changed.set()

    async def wait(self, after: int, timeout: float) -> None:
        """Until the head is beyond ``after``, the hub closes, or ``timeout`` passes."""
        if self._head > after or self._closed.is_set():
            return
        changed = self._changed
        closed = asyncio.ensure_future(self._closed.wait())
        moved = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({closed, moved}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            closed.cancel()
            moved.cancel()

    async def close(self) -> None:
        self._closed.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def event_stream(
    reads: ReadModel,
    hub: ChangeHub,
    sub: Subscription,
    after: int | None,
    *,
    heartbeat_s: float = 15.0,
) -> AsyncIterator[bytes]:
    """The stream's bytes: events after ``after`` (from now when None), until the hub
    closes or the client goes away."""
    position = reads.position() if after is None else after
    yield b"retry: %d\nid: %d\n\n" % (RETRY_MS, position)
    while not hub.closed:
        # The head first: when the changes after ``position`` come back fewer than asked,
        # every row up to this head was among them (positions without rows -- retention --
        # are skipped over too).
        head = reads.position()
        changes = reads.changes(position, limit=BATCH)
        if changes:
            runs: dict[str, RunRow] = {}
            for run_id in runs_wanted(changes):
                row = reads.run(run_id)
                if row is not None:
                    runs[run_id] = row
            sent = events(changes, sub, runs)
            chunk = b"".join(format_event(ev) for ev in sent)
            position = changes[-1].position
            if len(changes) < BATCH:
                position = max(position, head)
            if not sent or sent[-1].id != position:
                chunk += b"id: %d\n\n" % position
            yield chunk
            continue
        if head != position:
            # ahead: positions without rows; behind: a read model rebuilt since the
            # client's last id (its positions start again), so follow the new one
            position = head
            yield b"id: %d\n\n" % position
            continue
        await hub.wait(position, heartbeat_s)
        if hub.head <= position:
            yield b": keep-alive\n\n"


__all__ = ["ChangeHub", "event_stream", "format_event", "parse_last_event_id"]
