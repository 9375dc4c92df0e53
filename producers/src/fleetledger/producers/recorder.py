"""The async recorder: what an agent calls to record its run.

::

    async with Recorder.from_url("sqlite:///ledger.db") as rec:
        async with rec.run(agent_id="planner") as run:   # no workflow: an implicit one
            print(run.run_id)
            async with run.step("plan"):
                await run.model_io(provider="openai", model="gpt-4.1", ...)

Current run and step
    ``start_run``/``async with run`` make the run current and ``async with run.step()``
    the step (context variables, see :mod:`fleetledger.producers.context`); a work event
    recorded without ``step_id`` belongs to the current step.  A ``model_io`` or
    ``tool_call`` outside any step goes to the run's *implicit step* (``implicit``, opened
    on first use with ``step_started.implicit = true``, completed before the run is).

Content
    ``inputs``/``outputs`` pass the recorder's :class:`RedactionPolicy` before anything
    is hashed or leaves the process; content larger than ``blob_threshold`` bytes goes to
    the blob store and the event keeps its :class:`ContentRef`.  An event that would still
    be larger than a message may be raises :class:`MessageTooLargeError` from that call
    alone: the run and the recorder go on.

Sequence numbers
    Each run numbers its events from 0 without gaps.  A call that fails validation
    (:class:`EventValidationError`) or does not fit the run's state
    (:class:`RunStateError`) raises before a number is taken, so the next good call
    gets it.  Any call after ``run_completed``/``run_failed`` raises ``RunStateError``.

Batching
    Events are buffered per run.  A run's buffer becomes ONE message - a single-object
    encoded ``EventBatch`` of that run, keyed by the run id - when it holds
    ``batch_max_events`` events, ``linger_ms`` after its first event, on a terminal event,
    on ``flush()``/``close()``, or when half of ``max_buffered_events`` sit in buffers.
    Messages are handed to the transport by one sender task, in the order they were cut,
    so a run's batches reach its partition in sequence order.

Backpressure
    At most ``max_buffered_events`` events are buffered, queued or being handed to the
    transport; a call that would exceed this waits.  Nothing is dropped.

Delivery failures
    A transport error is wrapped in :class:`DeliveryError`; the recorder is then failed
    and the next call (record, ``flush``, ``close``) raises it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
import socket
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from fleetledger.kernel.config import Settings, load_settings
from fleetledger.kernel.errors import (
    ConfigError,
    DeliveryError,
    EventValidationError,
    FleetLedgerError,
    MessageTooLargeError,
    ProducerError,
    RunStateError,
)
from fleetledger.producers.blobs import BlobStore, FolderBlobStore, sha256_hex
from fleetledger.producers.context import _RUN, _STEP, current_step
from fleetledger.producers.pricing import Pricer, TokenUsage, load_price_overrides
from fleetledger.producers.redaction import RedactionPolicy, merge_redactions
from fleetledger.producers.replay import GateRequest, Responder
from fleetledger.producers.transports import Transport, make_transport
from fleetledger.schemas import (
    ArtifactState,
    ArtifactWritten,
    CacheStatus,
    ContentRef,
    Cost,
    EventType,
    GateDecision,
    GatePolicy,
    HumanGateRequested,
    HumanGateResolved,
    ModelDecision,
    ModelIO,
    ModelOutcome,
    Money,
    Recovery,
    RecoveryLevel,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepOutcome,
    StepStarted,
    ToolCall,
    ToolOutcome,
    TraceEvent,
    ValidationEvidence,
    WorkflowSnapshot,
    WorkflowStep,
)
from fleetledger.schemas.codec import Codec
from fleetledger.schemas.models import validation_error

log = logging.getLogger(__name__)

__all__ = [
    "IMPLICIT_STEP",
    "Clock",
    "GateOutcome",
    "IdFactory",
    "Recorder",
    "Run",
    "Step",
    "content_hash",
    "default_producer_id",
    "implicit_workflow",
    "utc_now",
]

Clock = Callable[[], datetime]
IdFactory = Callable[[], uuid.UUID]
JsonText = str | Mapping[str, Any] | list[Any] | None

_T = TypeVar("_T")
_UNSET: Any = object()
_TERMINAL = frozenset({EventType.RUN_COMPLETED, EventType.RUN_FAILED})
_MAX_ERROR_MESSAGE = 2000
#: Id of the step that work recorded outside any step belongs to.
IMPLICIT_STEP = "implicit"
_BATCH_OVERHEAD = 64  # EventBatch framing around one event: header, run_id, array counts
_JSON_START = frozenset('{["-0123456789tfn')


def utc_now() -> datetime:
    """The default clock: the current aware UTC time."""
    return datetime.now(UTC)


def default_producer_id() -> str:
    """``<hostname>:<pid>``: names the process that wrote an event."""
    return f"{socket.gethostname()}:{os.getpid()}"


def content_hash(data: bytes | str) -> str:
    """``sha256:<hex>`` of some content (text is UTF-8 encoded)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def implicit_workflow(agent_id: str) -> WorkflowSnapshot:
    """The snapshot of a run started without a workflow: one implicit step."""
    return WorkflowSnapshot(
        name=agent_id,
        revision="",
        steps=(WorkflowStep(id=IMPLICIT_STEP, name=IMPLICIT_STEP, kind="implicit"),),
        implicit=True,
    )


def _media_type(text: str) -> str:
    head = text.lstrip()[:1]
    return "application/json" if head and head in _JSON_START else "text/plain; charset=utf-8"


def _text_size(value: Any) -> int:
    """Characters of the strings inside a payload: a cheap bound on its encoded size."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, BaseModel):
        return sum(_text_size(v) for v in value.__dict__.values())
    if isinstance(value, tuple | list):
        return sum(_text_size(v) for v in value) + len(value)
    if isinstance(value, dict):
        return sum(_text_size(k) + _text_size(v) for k, v in value.items())
    return 0


def _payload_size(payload: BaseModel) -> int:
    """:func:`_text_size` of a payload; for the frequent payloads only their free-size
    fields are walked (the nested cost and content references are small and bounded)."""
    if isinstance(payload, RunStarted):
        return _text_size(payload)
    n = 0
    for v in payload.__dict__.values():
        if type(v) is str:
            n += len(v)
        elif type(v) is tuple:
            n += _text_size(v)
    return n + 1024


class _Content:
    """One inputs/outputs field after redaction: inline text, or a reference (+ blob)."""

    __slots__ = ("blob", "digest", "redactions", "ref", "text")

    def __init__(
        self,
        text: str | None,
        ref: ContentRef | None,
        redactions: tuple[str, ...],
        blob: bytes | None,
        digest: str | None,
    ) -> None:
        self.text = text
        self.ref = ref
        self.redactions = redactions
        self.blob = blob  # bytes the blob store must hold before the event is sent
        self.digest = digest  # "sha256:<hex>" of the (redacted) content


def _build(what: str, factory: Callable[[], _T]) -> _T:
    """Run a model constructor; every validation failure becomes EventValidationError."""
    try:
        return factory()
    except EventValidationError:
        raise
    except ValidationError as exc:
        raise validation_error(exc, what, limit=3) from exc
    except FleetLedgerError as exc:
        raise EventValidationError(f"{what}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise EventValidationError(f"{what}: {exc}") from exc


class _Buffer:
    __slots__ = ("events", "run_id", "timer")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.events: list[TraceEvent] = []
        self.timer: asyncio.TimerHandle | None = None


class Recorder:
    """Records runs and delivers their events through a :class:`Transport`.

    ``clock`` must return aware datetimes (UTC by default); ``ids`` makes event ids (and
    default run ids).  Both can be overridden per run, so a simulator can drive a run
    by a virtual clock and seeded ids.  ``linger_ms=None`` disables the time-based
    cut, which makes message boundaries depend only on what was recorded.

    A recorder belongs to one event loop and is not thread-safe; agents in threads
    share a :class:`~fleetledger.producers.sync.SyncRecorder` instead.

    ``redaction`` applies to every inputs/outputs value (default: secrets redacted, the
    rest kept); ``blobs`` receives content over ``blob_threshold`` bytes (``None``: no
    offloading, so such content stays inline and may make the call fail as too large).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        codec: Codec | None = None,
        producer_id: str | None = None,
        clock: Clock | None = None,
        ids: IdFactory | None = None,
        batch_max_events: int = 500,
        linger_ms: int | None = 5,
        max_buffered_events: int = 100_000,
        max_message_bytes: int | None = 900_000,
        pricer: Pricer | None = None,
        redaction: RedactionPolicy | None = None,
        blobs: BlobStore | None = None,
        blob_threshold: int = 65_536,
    ) -> None:
        if batch_max_events < 1:
            raise ConfigError(f"batch_max_events: found {batch_max_events}, expected >= 1")
        if max_buffered_events < 1:
            raise ConfigError(f"max_buffered_events: found {max_buffered_events}, expected >= 1")
        if linger_ms is not None and linger_ms < 0:
            raise ConfigError(f"linger_ms: found {linger_ms}, expected >= 0 or None")
        if blob_threshold < 0:
            raise ConfigError(f"blob_threshold: found {blob_threshold}, expected >= 0")
        self.transport = transport
        self.codec = codec if codec is not None else Codec()
        self.producer_id = producer_id if producer_id is not None else default_producer_id()
        self.clock: Clock = clock if clock is not None else utc_now
        self.ids: IdFactory = ids if ids is not None else uuid.uuid4
        self.batch_max_events = batch_max_events
        self.linger_ms = linger_ms
        self.max_buffered_events = max_buffered_events
        self.max_message_bytes = max_message_bytes
        self.pricer = pricer if pricer is not None else Pricer()
        self.redaction = redaction if redaction is not None else RedactionPolicy()
        self.blobs = blobs
        self.blob_threshold = blob_threshold
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cut_threshold = max(1, max_buffered_events // 2)

        self._buffers: dict[str, _Buffer] = {}
        self._uncut = 0
        self._ready: deque[tuple[str, list[TraceEvent]]] = deque()
        self._pending = 0
        self._space = asyncio.Event()
        self._space.set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._stopping = False
        self._state: Literal["new", "started", "closed"] = "new"
        self._error: DeliveryError | None = None
        self._active: set[str] = set()
        self._start_lock: asyncio.Lock | None = None
        self.events_recorded = 0
        self.events_sent = 0
        self.messages_sent = 0
        self.max_pending_seen = 0

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        producer_id: str | None = None,
        clock: Clock | None = None,
        ids: IdFactory | None = None,
        codec: Codec | None = None,
        batch_max_events: int | None = None,
        linger_ms: int | None = _UNSET,
        max_buffered_events: int | None = None,
        create_topic: bool = True,
        pricer: Pricer | None = None,
        redaction: RedactionPolicy | None = None,
        blobs: BlobStore | None = _UNSET,
    ) -> Recorder:
        """A recorder for a broker URL (default: ``Settings().broker``).

        ``sqlite:///path.db`` appends to the embedded log; ``kafka://host:port`` publishes
        to ``<topic_prefix>.events`` (created with ``settings.partitions`` partitions if
        missing, unless ``create_topic=False``).  Batching knobs default to the settings;
        the pricer uses ``settings.price_overrides`` (a price file) when it is set, the
        blob store the folder ``settings.blob_dir`` (``none``: no offloading).
        """
        if settings is None:
            settings = load_settings(broker=url)
        elif url is not None:
            settings = settings.model_copy(update={"broker": url})
        if pricer is None:
            overrides = settings.price_overrides
            pricer = Pricer(load_price_overrides(overrides) if overrides is not None else None)
        transport = make_transport(settings, create_topic=create_topic)
        return cls(
            transport,
            codec=codec,
            producer_id=producer_id,
            clock=clock,
            ids=ids,
            batch_max_events=(
                batch_max_events if batch_max_events is not None else settings.batch_max_events
            ),
            linger_ms=settings.linger_ms if linger_ms is _UNSET else linger_ms,
            max_buffered_events=(
                max_buffered_events
                if max_buffered_events is not None
                else settings.max_buffered_events
            ),
            max_message_bytes=settings.max_message_bytes,
            pricer=pricer,
            redaction=redaction,
            blobs=(
                (FolderBlobStore(settings.blob_dir) if settings.blob_dir is not None else None)
                if blobs is _UNSET
                else blobs
            ),
            blob_threshold=settings.blob_threshold_bytes,
        )

    @property
    def buffered_events(self) -> int:
        """Events buffered, queued or being handed to the transport right now."""
        return self._pending

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    @property
    def failed(self) -> DeliveryError | None:
        """The delivery error that failed this recorder, if any."""
        return self._error

    # ------------------------------------------------------------------ lifecycle
    def _started(self) -> bool:
        return self._state == "started"

    async def start(self) -> None:
        """Connect the transport and start the sender (idempotent)."""
        if self._state == "started":
            return
        if self._state == "closed":
            raise RunStateError("recorder: found it closed, expected a new or started recorder")
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started():  # another task started it while this one waited
                return
            try:
                await self.transport.start()
            except FleetLedgerError:
                raise
            except Exception as exc:
                raise DeliveryError(
                    f"cannot start transport {type(self.transport).__name__}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self._loop = asyncio.get_running_loop()
            self._sender = asyncio.create_task(self._send_loop(), name="fleetledger-sender")
            self._sender.add_done_callback(self._sender_done)
            self._state = "started"

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        """A sender that stops before close() (cancelled, crashed) fails the recorder."""
        if self._stopping and not task.cancelled() and task.exception() is None:
            return
        if task.cancelled():
            self._fail(RuntimeError("the sender task was cancelled"), "delivery")
        elif task.exception() is not None:
            self._fail(task.exception(), "delivery")  # type: ignore[arg-type]
        elif self._error is None:
            self._fail(RuntimeError("the sender task stopped"), "delivery")

    async def flush(self) -> None:
        """Send every buffered event and wait until the transport has them durably."""
        self._raise_failed()
        if self._state != "started":
            return
        self._cut_all()
        await self._idle.wait()
        self._raise_failed()
        try:
            await self.transport.flush()
        except Exception as exc:
            self._fail(exc, "flush")
        self._raise_failed()

    async def close(self) -> None:
        """Flush everything, stop the sender and close the transport (idempotent).

        Raises :class:`DeliveryError` if anything recorded was not delivered.
        """
        if self._state == "closed":
            self._raise_failed()
            return
        was_started = self._state == "started"
        self._state = "closed"
        if self._active:
            log.warning(
                "closing the recorder with %d runs not completed or failed", len(self._active)
            )
        try:
            if was_started:
                self._cut_all()
                self._stopping = True
                self._wake.set()
                if self._sender is not None:
                    # asyncio.wait: the sender's own failure is in self._error already
                    await asyncio.wait([self._sender])
                if self._error is None:
                    try:
                        await self.transport.flush()
                    except Exception as exc:
                        self._fail(exc, "flush")
        finally:
            if was_started:
                try:
                    await self.transport.close()
                except Exception as exc:
                    if self._error is None:
                        self._fail(exc, "close")
        self._raise_failed()

    async def __aenter__(self) -> Recorder:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ runs
    def run(self, *, agent_id: str, **kwargs: Any) -> _RunScope:
        """``async with rec.run(agent_id=...) as run:`` starts a run and ends it on exit.

        Same arguments as :meth:`start_run`; the run completes when the block ends and
        fails (the exception propagating) when it raises.
        """
        return _RunScope(self, {"agent_id": agent_id, **kwargs})

    async def start_run(
        self,
        *,
        agent_id: str,
        workflow: WorkflowSnapshot | Mapping[str, Any] | None = None,
        tenant: str = "default",
        project: str | None = None,
        budget: Money | None = None,
        labels: Mapping[str, str] | None = None,
        run_id: str | None = None,
        traceparent: str | None = None,
        clock: Clock | None = None,
        ids: IdFactory | None = None,
        producer_id: str | None = None,
        linger: bool = True,
        replay: Responder | None = None,
    ) -> Run:
        """Record ``run_started`` (seq 0) and return the :class:`Run`, now the current run.

        Without ``workflow`` the run gets an implicit one-step snapshot (marked
        ``implicit``).  ``clock``, ``ids`` and ``producer_id`` override the recorder's for
        this run; ``linger=False`` exempts the run from the time-based cut.  ``replay``
        makes the run a replay: its intercepted calls are answered by the responder
        (:mod:`fleetledger.producers.replay`).
        """
        self._check_usable()
        await self.start()
        run_ids = ids if ids is not None else self.ids
        if run_id is None:
            run_id = str(run_ids())
        if not isinstance(run_id, str) or not run_id:
            raise EventValidationError(f"run_id: found {run_id!r}, expected a non-empty string")
        if run_id in self._active:
            raise RunStateError(
                f"run {run_id!r}: found it already running in this recorder, expected a new id"
            )
        run = Run(
            self,
            run_id=run_id,
            agent_id=agent_id,
            tenant=tenant,
            project=project,
            traceparent=traceparent,
            clock=clock if clock is not None else self.clock,
            ids=run_ids,
            producer_id=producer_id if producer_id is not None else self.producer_id,
            linger=linger,
            labels=dict(labels) if labels is not None else {},
            replay=replay,
        )
        the_labels = run.labels
        the_workflow = workflow if workflow is not None else implicit_workflow(agent_id)
        await run._record(
            EventType.RUN_STARTED,
            lambda: RunStarted(
                project=project, budget=budget, workflow=the_workflow, labels=the_labels
            ),
        )
        self._active.add(run_id)
        run._outer = _live(_RUN.get())
        _RUN.set(run)
        return run

    # ------------------------------------------------------------------ internals
    def _check_usable(self) -> None:
        self._raise_failed()
        if self._state == "closed":
            raise RunStateError("recorder: found it closed, expected an open recorder")

    def _raise_failed(self) -> None:
        if self._error is not None:
            raise DeliveryError(str(self._error)) from self._error.__cause__

    def _fail(self, exc: BaseException, what: str) -> None:
        if self._error is not None:
            return
        if isinstance(exc, DeliveryError):
            err = DeliveryError(str(exc))
            err.__cause__ = exc.__cause__ or exc
        else:
            err = DeliveryError(
                f"{what} failed on {type(self.transport).__name__}: {type(exc).__name__}: {exc}"
            )
            err.__cause__ = exc
        self._error = err
        # wake everyone waiting so they see the error
        self._space.set()
        self._idle.set()
        for buf in self._buffers.values():
            if buf.timer is not None:
                buf.timer.cancel()

    async def _reserve(self) -> None:
        while self._pending >= self.max_buffered_events:
            self._raise_failed()
            self._space.clear()
            await self._space.wait()
        self._reserve_now()

    def _reserve_now(self) -> None:
        """Take a buffer slot without waiting (the synchronous recording path)."""
        self._raise_failed()
        self._pending += 1
        if self._pending > self.max_pending_seen:
            self.max_pending_seen = self._pending

    def _check_size(self, event: TraceEvent) -> None:
        """Refuse an event that cannot fit in one message (before it takes a seq)."""
        limit = self.max_message_bytes
        if limit is None or 4 * _payload_size(event.payload) + 4096 < limit:
            return  # far below the limit whatever the encoding
        size = len(self.codec.encode_event(event)) + _BATCH_OVERHEAD + len(event.run_id)
        if size <= limit:
            return
        offload = (
            f"content over {self.blob_threshold} bytes goes to {self.blobs!r}, so a field "
            "that is not inputs/outputs is too large"
            if self.blobs is not None
            else "no blob store is set (FLEETLEDGER_BLOB_DIR=none), so large inputs/outputs "
            "stay inline"
        )
        raise MessageTooLargeError(
            f"{event.type.value} event of run {event.run_id!r}: found {size:,} bytes "
            f"encoded, expected at most {limit:,} (FLEETLEDGER_MAX_MESSAGE_BYTES); {offload}. "
            "Nothing was recorded; the run goes on"
        )

    def _content(self, value: JsonText, field: str) -> _Content:
        """Redact one inputs/outputs value and decide where it goes (inline or a blob)."""
        red = self.redaction.apply(value, field)
        text = red.text
        if text is None:
            return _Content(None, None, red.redactions, None, None)
        if not red.withheld and (self.blobs is None or len(text) * 4 <= self.blob_threshold):
            return _Content(text, None, red.redactions, None, None)
        raw = text.encode("utf-8")
        hexdigest = sha256_hex(raw)
        ref = ContentRef(sha256=hexdigest, size=len(raw), media_type=_media_type(text))
        if red.withheld:  # only the hash leaves the process
            return _Content(None, ref, red.redactions, None, "sha256:" + hexdigest)
        if self.blobs is None or len(raw) <= self.blob_threshold:
            return _Content(text, None, red.redactions, None, "sha256:" + hexdigest)
        return _Content(None, ref, red.redactions, raw, "sha256:" + hexdigest)

    async def _store(self, *contents: _Content) -> None:
        for c in contents:
            if c.blob is not None and c.ref is not None and self.blobs is not None:
                await asyncio.to_thread(self.blobs.put, c.ref.sha256, c.blob)

    def _store_now(self, *contents: _Content) -> None:
        for c in contents:
            if c.blob is not None and c.ref is not None and self.blobs is not None:
                self.blobs.put(c.ref.sha256, c.blob)

    def _release(self, n: int = 1) -> None:
        self._pending -= n
        if self._pending < self.max_buffered_events:
            self._space.set()

    def _append(self, run: Run, event: TraceEvent) -> None:
        buf = self._buffers.get(run.run_id)
        if buf is None:
            buf = _Buffer(run.run_id)
            self._buffers[run.run_id] = buf
            if run.linger and self.linger_ms is not None:
                loop = asyncio.get_running_loop()
                buf.timer = loop.call_later(self.linger_ms / 1000, self._linger_expired, buf)
        buf.events.append(event)
        self._uncut += 1
        self.events_recorded += 1
        if event.type in _TERMINAL:
            self._active.discard(run.run_id)
            self._cut(buf)
        elif len(buf.events) >= self.batch_max_events:
            self._cut(buf)
        if self._uncut >= self._cut_threshold:
            self._cut_all()

    def _linger_expired(self, buf: _Buffer) -> None:
        buf.timer = None
        if self._buffers.get(buf.run_id) is buf and self._error is None:
            self._cut(buf)

    def _cut(self, buf: _Buffer) -> None:
        del self._buffers[buf.run_id]
        if buf.timer is not None:
            buf.timer.cancel()
            buf.timer = None
        if not buf.events:
            return
        self._uncut -= len(buf.events)
        self._ready.append((buf.run_id, buf.events))
        self._idle.clear()
        self._wake.set()

    def _cut_run(self, run_id: str) -> int:
        buf = self._buffers.get(run_id)
        if buf is None:
            return 0
        n = len(buf.events)
        self._cut(buf)
        return n

    def _cut_all(self) -> None:
        for buf in list(self._buffers.values()):
            self._cut(buf)

    async def _send_loop(self) -> None:
        while True:
            if not self._ready:
                self._idle.set()
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            run_id, events = self._ready.popleft()
            try:
                await self._deliver(run_id, events)
            except Exception as exc:
                self._fail(exc, f"delivery of {len(events)} events of run {run_id!r}")
                return
            self.events_sent += len(events)
            self._release(len(events))

    async def _deliver(self, run_id: str, events: list[TraceEvent]) -> None:
        value = self.codec.encode_batch(events)
        limit = self.max_message_bytes
        if limit is not None and len(value) > limit and len(events) > 1:
            mid = len(events) // 2
            await self._deliver(run_id, events[:mid])
            await self._deliver(run_id, events[mid:])
            return
        await self.transport.send(run_id, value)
        self.messages_sent += 1


class _RunScope:
    """What :meth:`Recorder.run` returns: starts the run on enter, ends it on exit."""

    def __init__(self, recorder: Recorder, kwargs: dict[str, Any]) -> None:
        self._recorder = recorder
        self._kwargs = kwargs
        self.run: Run | None = None

    async def __aenter__(self) -> Run:
        self.run = await self._recorder.start_run(**self._kwargs)
        return await self.run.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.run is not None
        await self.run.__aexit__(exc_type, exc, tb)


class Run:
    """One agent run: records its events in order.  Made by :meth:`Recorder.start_run`.

    ``async with run:`` completes the run on normal exit and fails it (re-raising) on an
    exception; a run already ended inside the block is left as it is.  ``run.run_id`` is
    the id to look the run up by (``fleetledger show RUN_ID``).
    """

    def __init__(
        self,
        recorder: Recorder,
        *,
        run_id: str,
        agent_id: str,
        tenant: str,
        project: str | None,
        traceparent: str | None,
        clock: Clock,
        ids: IdFactory,
        producer_id: str,
        linger: bool,
        labels: dict[str, str] | None = None,
        replay: Responder | None = None,
    ) -> None:
        self.recorder = recorder
        self.run_id = run_id
        #: the run's labels (as recorded in ``run_started``)
        self.labels: dict[str, str] = labels if labels is not None else {}
        #: the responder answering this run's calls when it is a replay, else None
        self.replay = replay
        self.agent_id = agent_id
        self.tenant = tenant
        self.project = project
        self.traceparent = traceparent
        self.clock = clock
        self.ids = ids
        self.producer_id = producer_id
        self.linger = linger
        self._next_seq = 0
        #: the event built last: its envelope (run, agent, tenant, producer, schema
        #: version, traceparent; validated with the run's first event) is the next one's
        self._prev: TraceEvent | None = None
        self._status: Literal["running", "completed", "failed"] = "running"
        self._open_steps: dict[str, tuple[int, datetime]] = {}
        self._attempts: dict[str, int] = {}
        self._open_gates: dict[str, datetime] = {}
        self._failed_step: str | None = None
        self._implicit_open = False
        #: the model decision in force, per step (None: the whole run)
        self._decisions: dict[str | None, ModelDecision] = {}
        self._outer: Run | None = None  # the run that was current when this one started
        self._tokens: list[Any] = []

    def __str__(self) -> str:
        return self.run_id

    def __repr__(self) -> str:
        return f"Run(run_id={self.run_id!r}, status={self._status}, next_seq={self._next_seq})"

    # ------------------------------------------------------------------ state
    @property
    def next_seq(self) -> int:
        """The seq the next recorded event will get."""
        return self._next_seq

    @property
    def status(self) -> str:
        """``running``, ``completed`` or ``failed``."""
        return self._status

    @property
    def ended(self) -> bool:
        return self._status != "running"

    @property
    def open_steps(self) -> list[str]:
        return list(self._open_steps)

    def send_now(self) -> int:
        """Make this run's buffered events one message now; return how many (no waiting).

        For callers that decide batch boundaries themselves (the simulator cuts by
        virtual time); ``Recorder.flush()`` also waits for delivery.
        """
        return self.recorder._cut_run(self.run_id)

    def _check_running(self) -> None:
        if self._status != "running":
            raise RunStateError(
                f"run {self.run_id!r}: found it {self._status} (seq {self._next_seq - 1} was "
                "its last event), expected a running run"
            )

    def _prepare(
        self, etype: EventType, payload: Callable[[], BaseModel], check: Callable[[], None] | None
    ) -> BaseModel:
        self.recorder._check_usable()
        self._check_running()
        if check is not None:
            check()
        return _build(f"{etype.value} payload", payload)

    def _commit(
        self,
        etype: EventType,
        body: BaseModel,
        step_id: str | None,
        check: Callable[[], None] | None,
    ) -> TraceEvent:
        """Number and buffer an event (a buffer slot is reserved; released on failure)."""
        rec = self.recorder
        try:
            rec._check_usable()
            self._check_running()
            if check is not None:
                check()
            event = _build(f"{etype.value} event", lambda: self._event(etype, body, step_id))
            rec._check_size(event)
        except BaseException:
            rec._release()
            raise
        self._next_seq += 1
        if etype is EventType.RUN_COMPLETED:
            self._status = "completed"
        elif etype is EventType.RUN_FAILED:
            self._status = "failed"
        if self._status != "running":
            if _RUN.get() is self:
                _RUN.set(_live(self._outer))
            self._outer = None  # ended runs hold no chain of earlier runs
            self._prev = None
        rec._append(self, event)
        if self.replay is not None:
            self.replay.recorded(event)
        return event

    def _event(self, etype: EventType, body: BaseModel, step_id: str | None) -> TraceEvent:
        """The next event; after the first, on the envelope of the one before."""
        prev = self._prev
        if prev is not None:
            event = prev.successor(
                event_id=self.ids(),
                seq=self._next_seq,
                type=etype,
                ts=self.clock(),
                step_id=step_id,
                payload=body,
            )
        else:
            event = TraceEvent(
                event_id=self.ids(),
                run_id=self.run_id,
                seq=self._next_seq,
                type=etype,
                ts=self.clock(),
                agent_id=self.agent_id,
                tenant=self.tenant,
                step_id=step_id,
                producer_id=self.producer_id,
                schema_version=self.recorder.codec.current_version,
                traceparent=self.traceparent,
                payload=body,
            )
        self._prev = event
        return event

    async def _record(
        self,
        etype: EventType,
        payload: Callable[[], BaseModel],
        *,
        step_id: str | None = None,
        check: Callable[[], None] | None = None,
    ) -> TraceEvent:
        body = self._prepare(etype, payload, check)
        await self.recorder._reserve()
        return self._commit(etype, body, step_id, check)

    def _record_now(
        self,
        etype: EventType,
        payload: Callable[[], BaseModel],
        *,
        step_id: str | None = None,
        check: Callable[[], None] | None = None,
    ) -> TraceEvent:
        """:meth:`_record` without waiting for buffer space (for synchronous callers on the
        recorder's event loop; the buffer may go past ``max_buffered_events``)."""
        body = self._prepare(etype, payload, check)
        self.recorder._reserve_now()
        return self._commit(etype, body, step_id, check)

    # ------------------------------------------------------------------ attribution
    def _step_of(self, step_id: str | None) -> str | None:
        """``step_id``, else the current step of this run (context variable), else None."""
        if step_id is not None:
            return step_id
        step = current_step()
        if step is not None and step.run is self:
            return step.step_id
        return None

    def _open_implicit(self) -> None:
        """Record ``step_started`` of the implicit step (a buffer slot is reserved)."""
        attempt = self._attempts.get(IMPLICIT_STEP, 0) + 1
        try:
            body = self._prepare(
                EventType.STEP_STARTED, lambda: StepStarted(attempt=attempt, implicit=True), None
            )
        except BaseException:
            self.recorder._release()
            raise
        event = self._commit(EventType.STEP_STARTED, body, IMPLICIT_STEP, None)
        self._open_steps[IMPLICIT_STEP] = (attempt, event.ts)
        self._attempts[IMPLICIT_STEP] = attempt
        self._implicit_open = True

    def _close_implicit(self) -> None:
        """Record ``step_completed`` of the implicit step (a buffer slot is reserved)."""
        started_at = self._open_steps[IMPLICIT_STEP][1]
        try:
            body = self._prepare(
                EventType.STEP_COMPLETED,
                lambda: StepCompleted(
                    outcome=StepOutcome.SUCCESS,
                    duration_ms=max(0, int((self.clock() - started_at).total_seconds() * 1000)),
                ),
                None,
            )
        except BaseException:
            self.recorder._release()
            raise
        self._commit(EventType.STEP_COMPLETED, body, IMPLICIT_STEP, None)
        del self._open_steps[IMPLICIT_STEP]
        self._implicit_open = False

    # ------------------------------------------------------------------ generic
    async def emit(self, payload: BaseModel, *, step_id: str | None = None) -> TraceEvent:
        """Record any payload model except ``RunStarted`` (low level; no state tracking)."""
        etype = getattr(type(payload), "TYPE", None)
        if not isinstance(etype, EventType) or etype is EventType.RUN_STARTED:
            raise EventValidationError(
                f"payload: found {type(payload).__name__}, expected a payload model other "
                "than RunStarted"
            )
        return await self._record(etype, lambda: payload, step_id=self._step_of(step_id))

    # ------------------------------------------------------------------ steps
    def step(self, step_id: str, *, attempt: int | None = None) -> Step:
        """``async with run.step("plan") as step:`` brackets a step (see :class:`Step`)."""
        return Step(self, step_id, attempt=attempt)

    async def step_started(self, step_id: str, *, attempt: int | None = None) -> TraceEvent:
        """Record ``step_started``; ``attempt`` defaults to 1 + the step's earlier attempts."""
        the_attempt = attempt if attempt is not None else self._attempts.get(step_id, 0) + 1

        def check() -> None:
            if step_id in self._open_steps:
                raise RunStateError(
                    f"step {step_id!r} of run {self.run_id!r}: found it already started "
                    f"(attempt {self._open_steps[step_id][0]}), expected it completed first"
                )

        event = await self._record(
            EventType.STEP_STARTED,
            lambda: StepStarted(attempt=the_attempt),
            step_id=step_id,
            check=check,
        )
        self._open_steps[step_id] = (the_attempt, event.ts)
        self._attempts[step_id] = max(self._attempts.get(step_id, 0), the_attempt)
        return event

    async def step_completed(
        self,
        step_id: str,
        *,
        outcome: StepOutcome | str = StepOutcome.SUCCESS,
        duration_ms: int | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
    ) -> TraceEvent:
        """Record ``step_completed`` for a started step; duration defaults to the clock's."""

        def check() -> None:
            if step_id not in self._open_steps:
                raise RunStateError(
                    f"step {step_id!r} of run {self.run_id!r}: found it not started, "
                    f"expected one of the open steps {sorted(self._open_steps)}"
                )

        check()
        started_at = self._open_steps[step_id][1]

        def payload() -> StepCompleted:
            ms = duration_ms
            if ms is None:
                ms = max(0, int((self.clock() - started_at).total_seconds() * 1000))
            return StepCompleted(
                outcome=outcome,
                error_type=error_type,
                error_message=error_message,
                duration_ms=ms,
            )

        event = await self._record(EventType.STEP_COMPLETED, payload, step_id=step_id, check=check)
        del self._open_steps[step_id]
        if event.payload.outcome == StepOutcome.ERROR:  # type: ignore[union-attr]
            self._failed_step = step_id
        elif self._failed_step == step_id:
            self._failed_step = None
        return event

    # ------------------------------------------------------------------ work events
    async def model_io(
        self,
        *,
        provider: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        duration_ms: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int | None = None,
        cost: Cost | Mapping[str, Any] | None = None,
        prompt_hash: str | None = None,
        response_hash: str | None = None,
        response_model: str | None = None,
        cache: CacheStatus | str | None = None,
        outcome: ModelOutcome | str | None = None,
        error_type: str | None = None,
        inputs: JsonText = None,
        outputs: JsonText = None,
        decision_id: str | None = None,
        step_id: str | None = None,
    ) -> TraceEvent:
        """Record one model call (OpenTelemetry GenAI names in the payload).

        Without ``cost`` the call is priced by the recorder's :class:`Pricer` (the served
        ``response_model`` first; source ``local`` with its price data, or ``unpriced``
        when no price is known - an unknown model never raises).  ``input_tokens``
        include the cache-read and cache-write tokens.  ``prompt_hash`` defaults to the
        hash of the (redacted) ``inputs``; ``cache`` to ``hit`` when cache-read tokens
        were reported.  The call refers to the model decision in force for its step
        (``decision_id``); ``outcome`` defaults to ``fallback`` when that decision names
        ``model`` in its fallback chain, else ``success``.  Without ``step_id`` the call
        belongs to the current step, else to the run's implicit step.
        """
        body, step, contents = self._model_io_body(
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            duration_ms=duration_ms,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            cost=cost,
            prompt_hash=prompt_hash,
            response_hash=response_hash,
            response_model=response_model,
            cache=cache,
            outcome=outcome,
            error_type=error_type,
            inputs=inputs,
            outputs=outputs,
            decision_id=decision_id,
            step_id=step_id,
        )
        await self.recorder._store(*contents)
        return await self._work(EventType.MODEL_IO, body, step)

    def _model_io_now(self, **kwargs: Any) -> TraceEvent:
        """:meth:`model_io` for synchronous callers on the recorder's loop."""
        body, step, contents = self._model_io_body(**kwargs)
        self.recorder._store_now(*contents)
        return self._work_now(EventType.MODEL_IO, body, step)

    def _model_io_body(
        self,
        *,
        provider: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        duration_ms: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int | None = None,
        cost: Cost | Mapping[str, Any] | None = None,
        prompt_hash: str | None = None,
        response_hash: str | None = None,
        response_model: str | None = None,
        cache: CacheStatus | str | None = None,
        outcome: ModelOutcome | str | None = None,
        error_type: str | None = None,
        inputs: JsonText = None,
        outputs: JsonText = None,
        decision_id: str | None = None,
        step_id: str | None = None,
    ) -> tuple[BaseModel, str | None, tuple[_Content, _Content]]:
        rec = self.recorder
        rec._check_usable()
        self._check_running()
        step = self._step_of(step_id)
        in_c = rec._content(inputs, "inputs")
        out_c = rec._content(outputs, "outputs")
        if prompt_hash is None:
            if in_c.digest is not None:
                prompt_hash = in_c.digest
            elif in_c.text is not None:
                prompt_hash = content_hash(in_c.text)
            else:
                raise EventValidationError(
                    "model_io prompt_hash: found neither prompt_hash nor inputs, "
                    "expected one of them"
                )
        if response_hash is None:
            if out_c.digest is not None:
                response_hash = out_c.digest
            elif out_c.text is not None:
                response_hash = content_hash(out_c.text)
        the_cache = (
            cache
            if cache is not None
            else (
                CacheStatus.HIT
                if isinstance(cache_read_tokens, int) and cache_read_tokens > 0
                else CacheStatus.MISS
            )
        )
        decision = self._decisions.get(step if step is not None else IMPLICIT_STEP)
        if decision is None:
            decision = self._decisions.get(None)
        the_decision = (
            decision_id
            if decision_id is not None
            else (decision.decision_id if decision is not None else None)
        )
        the_outcome = outcome
        if the_outcome is None:
            fallback = (
                decision is not None
                and model != decision.primary_model
                and model in decision.fallback_chain
            )
            the_outcome = ModelOutcome.FALLBACK if fallback else ModelOutcome.SUCCESS

        def payload() -> ModelIO:
            the_cost = cost
            if the_cost is None:
                the_cost = rec.pricer.cost(
                    provider,
                    model,
                    TokenUsage(
                        input_tokens, output_tokens, cache_read_tokens, cache_write_tokens or 0
                    ),
                    at=self.clock(),
                    response_model=response_model,
                )
            return ModelIO(
                gen_ai_provider_name=provider,
                gen_ai_request_model=model,
                gen_ai_response_model=response_model,
                gen_ai_usage_input_tokens=input_tokens,
                gen_ai_usage_output_tokens=output_tokens,
                gen_ai_usage_cache_read_input_tokens=cache_read_tokens,
                cost=the_cost,
                duration_ms=duration_ms,
                prompt_hash=prompt_hash,
                response_hash=response_hash,
                cache=the_cache,
                outcome=the_outcome,
                error_type=error_type,
                inputs=in_c.text,
                outputs=out_c.text,
                gen_ai_usage_cache_creation_input_tokens=cache_write_tokens,
                inputs_ref=in_c.ref,
                outputs_ref=out_c.ref,
                redactions=merge_redactions(in_c.redactions, out_c.redactions),
                decision_id=the_decision,
            )

        return self._prepare(EventType.MODEL_IO, payload, None), step, (in_c, out_c)

    async def _work(self, etype: EventType, body: BaseModel, step: str | None) -> TraceEvent:
        """Commit a model or tool call; outside any step, in the implicit step."""
        rec = self.recorder
        if step is None and not self._implicit_open:
            await rec._reserve()
            if self._implicit_open:  # another task opened it meanwhile
                rec._release()
            else:
                self._open_implicit()
        await rec._reserve()
        return self._commit(etype, body, step if step is not None else IMPLICIT_STEP, None)

    def _work_now(self, etype: EventType, body: BaseModel, step: str | None) -> TraceEvent:
        rec = self.recorder
        if step is None and not self._implicit_open:
            rec._reserve_now()
            self._open_implicit()
        rec._reserve_now()
        return self._commit(etype, body, step if step is not None else IMPLICIT_STEP, None)

    async def tool_call(
        self,
        *,
        name: str,
        duration_ms: int,
        call_id: str | None = None,
        inputs: JsonText = None,
        outputs: JsonText = None,
        outcome: ToolOutcome | str = ToolOutcome.SUCCESS,
        error_type: str | None = None,
        step_id: str | None = None,
    ) -> TraceEvent:
        """Record one tool invocation (in the current step, else the implicit one)."""
        body, step, contents = self._tool_call_body(
            name=name,
            duration_ms=duration_ms,
            call_id=call_id,
            inputs=inputs,
            outputs=outputs,
            outcome=outcome,
            error_type=error_type,
            step_id=step_id,
        )
        await self.recorder._store(*contents)
        return await self._work(EventType.TOOL_CALL, body, step)

    def _tool_call_now(self, **kwargs: Any) -> TraceEvent:
        """:meth:`tool_call` for synchronous callers on the recorder's loop."""
        body, step, contents = self._tool_call_body(**kwargs)
        self.recorder._store_now(*contents)
        return self._work_now(EventType.TOOL_CALL, body, step)

    def _tool_call_body(
        self,
        *,
        name: str,
        duration_ms: int,
        call_id: str | None = None,
        inputs: JsonText = None,
        outputs: JsonText = None,
        outcome: ToolOutcome | str = ToolOutcome.SUCCESS,
        error_type: str | None = None,
        step_id: str | None = None,
    ) -> tuple[BaseModel, str | None, tuple[_Content, _Content]]:
        rec = self.recorder
        rec._check_usable()
        self._check_running()
        in_c = rec._content(inputs, "inputs")
        out_c = rec._content(outputs, "outputs")
        body = self._prepare(
            EventType.TOOL_CALL,
            lambda: ToolCall(
                gen_ai_tool_name=name,
                gen_ai_tool_call_id=call_id,
                inputs=in_c.text,
                outputs=out_c.text,
                duration_ms=duration_ms,
                outcome=outcome,
                error_type=error_type,
                inputs_ref=in_c.ref,
                outputs_ref=out_c.ref,
                redactions=merge_redactions(in_c.redactions, out_c.redactions),
            ),
            None,
        )
        return body, self._step_of(step_id), (in_c, out_c)

    async def model_decision(
        self,
        primary_model: str,
        *,
        provider: str | None = None,
        task_class: str | None = None,
        capability_class: str | None = None,
        fallback_chain: tuple[str, ...] | list[str] = (),
        budget_mode: str | None = None,
        routing_reason: str | None = None,
        decision_id: str | None = None,
        step_id: str | None = None,
    ) -> TraceEvent:
        """Record why a model was chosen, before the model calls it governs.

        Later ``model_io`` calls of the same step (or of the whole run, for a decision
        outside steps) refer to it; a call to a model of ``fallback_chain`` is recorded
        with outcome ``fallback``.  ``decision_id`` defaults to a new id.
        """
        step = self._step_of(step_id)
        the_id = decision_id if decision_id is not None else f"md-{self.ids().hex[:16]}"
        event = await self._record(
            EventType.MODEL_DECISION,
            lambda: ModelDecision(
                decision_id=the_id,
                primary_model=primary_model,
                provider=provider,
                task_class=task_class,
                capability_class=capability_class,
                fallback_chain=tuple(fallback_chain),
                budget_mode=budget_mode,
                routing_reason=routing_reason,
            ),
            step_id=step,
        )
        self._decisions[step] = event.payload  # type: ignore[assignment]
        return event

    async def gate_requested(
        self,
        *,
        gate_id: str,
        policy: GatePolicy | str,
        artifact_key: str | None = None,
        artifact_version: int | None = None,
        prompt: str | None = None,
        step_id: str | None = None,
    ) -> TraceEvent:
        """Record that a human was asked to review (the gate stays open until resolved)."""

        def check() -> None:
            if gate_id in self._open_gates:
                raise RunStateError(
                    f"gate {gate_id!r} of run {self.run_id!r}: found it already open, "
                    "expected it resolved before it is requested again"
                )

        event = await self._record(
            EventType.HUMAN_GATE_REQUESTED,
            lambda: HumanGateRequested(
                gate_id=gate_id,
                policy=policy,
                artifact_key=artifact_key,
                artifact_version=artifact_version,
                prompt=prompt,
            ),
            step_id=self._step_of(step_id),
            check=check,
        )
        self._open_gates[gate_id] = event.ts
        return event

    async def gate_resolved(
        self,
        *,
        gate_id: str,
        decision: GateDecision | str,
        reviewer: str,
        reason: str | None = None,
        artifact_key: str | None = None,
        artifact_version: int | None = None,
        wait_ms: int | None = None,
        step_id: str | None = None,
    ) -> TraceEvent:
        """Record the human decision on an open gate; ``wait_ms`` defaults to the clock's."""

        def check() -> None:
            if gate_id not in self._open_gates:
                raise RunStateError(
                    f"gate {gate_id!r} of run {self.run_id!r}: found it not open, "
                    f"expected one of the open gates {sorted(self._open_gates)}"
                )

        check()
        requested_at = self._open_gates[gate_id]

        def payload() -> HumanGateResolved:
            ms = wait_ms
            if ms is None:
                ms = max(0, int((self.clock() - requested_at).total_seconds() * 1000))
            return HumanGateResolved(
                gate_id=gate_id,
                decision=decision,
                reviewer=reviewer,
                reason=reason,
                artifact_key=artifact_key,
                artifact_version=artifact_version,
                wait_ms=ms,
            )

        event = await self._record(
            EventType.HUMAN_GATE_RESOLVED, payload, step_id=self._step_of(step_id), check=check
        )
        del self._open_gates[gate_id]
        return event

    async def human_gate(
        self,
        *,
        gate_id: str,
        policy: GatePolicy | str,
        ask: Callable[[GateRequest], Any],
        artifact_key: str | None = None,
        artifact_version: int | None = None,
        prompt: str | None = None,
        step_id: str | None = None,
    ) -> GateOutcome:
        """Ask a human, recording both sides of the gate.

        Records ``human_gate_requested``, calls ``ask(request)`` (sync or async) for the
        decision - a mapping or an object with ``decision``, ``reviewer`` and optionally
        ``reason`` - and records ``human_gate_resolved`` with it and the time waited.  In
        a replay the recorded decision is used and ``ask`` is not called.
        """
        step = self._step_of(step_id)
        request = GateRequest(
            gate_id=gate_id,
            policy=str(getattr(policy, "value", policy)),
            artifact_key=artifact_key,
            artifact_version=artifact_version,
            step_id=step,
        )
        await self.gate_requested(
            gate_id=gate_id,
            policy=policy,
            artifact_key=artifact_key,
            artifact_version=artifact_version,
            prompt=prompt,
            step_id=step,
        )
        if self.replay is not None:
            recorded = self.replay.decide(request)
            decision, reviewer, reason = recorded.decision, recorded.reviewer, recorded.reason
            wait_ms: int | None = recorded.wait_ms
        else:
            answer = ask(request)
            if inspect.isawaitable(answer):
                answer = await answer
            decision, reviewer, reason = _decision_of(answer)
            wait_ms = None
        await self.gate_resolved(
            gate_id=gate_id,
            decision=decision,
            reviewer=reviewer,
            reason=reason,
            artifact_key=artifact_key,
            artifact_version=artifact_version,
            wait_ms=wait_ms,
            step_id=step,
        )
        return GateOutcome(decision, reviewer, reason, replayed=self.replay is not None)

    async def artifact(
        self,
        *,
        key: str,
        version: int,
        state: ArtifactState | str,
        content_hash: str | None = None,
        content: bytes | str | None = None,
        schema_ref: str | None = None,
        validation: ValidationEvidence | None = None,
        step_id: str | None = None,
    ) -> TraceEvent:
        """Record an artifact version reaching a state; give ``content_hash`` or ``content``."""
        the_hash = content_hash
        if the_hash is None:
            if content is None:
                raise EventValidationError(
                    f"artifact {key!r} content_hash: found neither content_hash nor content, "
                    "expected one of them"
                )
            the_hash = _hash_content(content)
        return await self._record(
            EventType.ARTIFACT_WRITTEN,
            lambda: ArtifactWritten(
                key=key,
                schema_ref=schema_ref,
                version=version,
                content_hash=the_hash,
                state=state,
                validation=validation,
            ),
            step_id=self._step_of(step_id),
        )

    async def recovery(
        self,
        *,
        level: RecoveryLevel | str,
        failure_kind: str,
        attempt: int,
        from_model: str | None = None,
        new_model: str | None = None,
        reason: str | None = None,
        step_id: str | None = None,
    ) -> TraceEvent:
        """Record a retry (``L1_RETRY``) or an escalation to another model (``L2_ESCALATE``)."""
        return await self._record(
            EventType.RECOVERY,
            lambda: Recovery(
                level=level,
                failure_kind=failure_kind,
                attempt=attempt,
                from_model=from_model,
                new_model=new_model,
                reason=reason,
            ),
            step_id=self._step_of(step_id),
        )

    # ------------------------------------------------------------------ terminal
    async def complete(self, summary: str | None = None) -> TraceEvent:
        """Record ``run_completed``; every step must be completed first (the implicit step
        is completed here)."""

        def check() -> None:
            if self._open_steps and list(self._open_steps) != [IMPLICIT_STEP]:
                raise RunStateError(
                    f"run {self.run_id!r}: found open steps {sorted(self._open_steps)}, "
                    "expected every step completed before run_completed"
                )

        body = self._prepare(EventType.RUN_COMPLETED, lambda: RunCompleted(summary=summary), check)
        if self._implicit_open:
            await self.recorder._reserve()
            if self._implicit_open:
                self._close_implicit()
            else:
                self.recorder._release()
        await self.recorder._reserve()
        return self._commit(EventType.RUN_COMPLETED, body, None, check)

    async def fail(
        self, error_type: str, error_message: str, failed_step: str | None = None
    ) -> TraceEvent:
        """Record ``run_failed`` (allowed with steps still open)."""
        return await self._record(
            EventType.RUN_FAILED,
            lambda: RunFailed(
                error_type=error_type,
                error_message=error_message,
                failed_step=failed_step,
            ),
        )

    async def __aenter__(self) -> Run:
        self._tokens.append(_RUN.set(self) if _RUN.get() is not self else None)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._exit(exc)
        finally:
            token = self._tokens.pop() if self._tokens else None
            if token is not None:
                _reset(_RUN, token)
            if _RUN.get() is self:
                _RUN.set(_live(self._outer))

    async def _exit(self, exc: BaseException | None) -> None:
        if self._status != "running":
            return
        if exc is None:
            await self.complete()
            return
        # the original exception matters more than a failure to record it
        with contextlib.suppress(ProducerError):
            await self.fail(
                type(exc).__name__,
                _error_message(exc),
                failed_step=self._failed_step,
            )


@dataclass(frozen=True)
class GateOutcome:
    """What :meth:`Run.human_gate` decided (``replayed``: taken from the recording)."""

    decision: str
    reviewer: str
    reason: str | None = None
    replayed: bool = False


def _decision_of(answer: Any) -> tuple[str, str, str | None]:
    def get(name: str) -> Any:
        return answer.get(name) if isinstance(answer, Mapping) else getattr(answer, name, None)

    decision, reviewer, reason = get("decision"), get("reviewer"), get("reason")
    if decision is None or not reviewer:
        raise EventValidationError(
            f"human_gate ask: found {answer!r}, expected a decision and a reviewer "
            "(a mapping or object with 'decision', 'reviewer' and optionally 'reason')"
        )
    return str(getattr(decision, "value", decision)), str(reviewer), reason


def _hash_content(content: bytes | str) -> str:
    return content_hash(content)


def _live(run: Run | None) -> Run | None:
    """``run``, or the nearest run it was started in that has not ended."""
    while run is not None and run.ended:
        run = run._outer
    return run


def _reset(var: Any, token: Any) -> None:
    with contextlib.suppress(ValueError):  # exited in another context than entered: leave it
        var.reset(token)


def _error_message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if len(text) > _MAX_ERROR_MESSAGE:
        text = text[: _MAX_ERROR_MESSAGE - 3] + "..."
    return text


class Step:
    """Brackets a step with ``step_started``/``step_completed``.

    On normal exit the outcome is ``success`` unless :meth:`mark_blocked` or
    :meth:`mark_replayed` was called; an exception records ``error`` with the exception
    class name and message, then propagates.  The work methods record with this step's id.
    """

    def __init__(self, run: Run, step_id: str, *, attempt: int | None = None) -> None:
        self.run = run
        self.step_id = step_id
        self.attempt = attempt
        self.outcome: StepOutcome = StepOutcome.SUCCESS
        self.reason: str | None = None
        self.started: TraceEvent | None = None
        self.completed: TraceEvent | None = None
        self._token: Any = None

    def mark_blocked(self, reason: str | None = None) -> None:
        """Complete with outcome ``blocked`` (e.g. a gate rejected the step's output)."""
        self.outcome = StepOutcome.BLOCKED
        self.reason = reason

    def mark_replayed(self, reason: str | None = None) -> None:
        """Complete with outcome ``replayed`` (the result came from an earlier run)."""
        self.outcome = StepOutcome.REPLAYED
        self.reason = reason

    async def _enter(self) -> Step:
        self.started = await self.run.step_started(self.step_id, attempt=self.attempt)
        self.attempt = self.started.payload.attempt  # type: ignore[union-attr]
        self._token = _STEP.set(self)
        return self

    async def _exit(self, exc: BaseException | None) -> None:
        if self._token is not None:
            _reset(_STEP, self._token)
            self._token = None
        run = self.run
        if run.ended or self.step_id not in run._open_steps:
            return
        if exc is None:
            self.completed = await run.step_completed(
                self.step_id, outcome=self.outcome, error_message=self.reason
            )
            return
        with contextlib.suppress(ProducerError):
            self.completed = await run.step_completed(
                self.step_id,
                outcome=StepOutcome.ERROR,
                error_type=type(exc).__name__,
                error_message=_error_message(exc),
            )

    async def __aenter__(self) -> Step:
        return await self._enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._exit(exc)

    async def model_io(self, **kwargs: Any) -> TraceEvent:
        """:meth:`Run.model_io` with this step's id."""
        return await self.run.model_io(step_id=self.step_id, **kwargs)

    async def tool_call(self, **kwargs: Any) -> TraceEvent:
        """:meth:`Run.tool_call` with this step's id."""
        return await self.run.tool_call(step_id=self.step_id, **kwargs)

    async def gate_requested(self, **kwargs: Any) -> TraceEvent:
        """:meth:`Run.gate_requested` with this step's id."""
        return await self.run.gate_requested(step_id=self.step_id, **kwargs)

    async def gate_resolved(self, **kwargs: Any) -> TraceEvent:
        """:meth:`Run.gate_resolved` with this step's id."""
        return await self.run.gate_resolved(step_id=self.step_id, **kwargs)

    async def artifact(self, **kwargs: Any) -> TraceEvent:
        """:meth:`Run.artifact` with this step's id."""
        return await self.run.artifact(step_id=self.step_id, **kwargs)

    async def recovery(self, **kwargs: Any) -> TraceEvent:
        """:meth:`Run.recovery` with this step's id."""
        return await self.run.recovery(step_id=self.step_id, **kwargs)

    async def human_gate(self, **kwargs: Any) -> GateOutcome:
        """:meth:`Run.human_gate` with this step's id."""
        return await self.run.human_gate(step_id=self.step_id, **kwargs)
