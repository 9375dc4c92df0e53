"""The async recorder: what an agent calls to record its run.

::

    async with Recorder.from_url("sqlite:///ledger.db") as rec:
        run = await rec.start_run(agent_id="planner", workflow=workflow)
        async with run:
            async with run.step("plan") as step:
                await step.model_io(provider="openai", model="gpt-4.1", ...)

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
import json
import logging
import os
import socket
import uuid
from collections import deque
from collections.abc import Callable, Mapping
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
    ProducerError,
    RunStateError,
)
from fleetledger.producers.pricing import PriceTable, load_price_table
from fleetledger.producers.transports import Transport, make_transport
from fleetledger.schemas import (
    ArtifactState,
    ArtifactWritten,
    CacheStatus,
    Cost,
    EventType,
    GateDecision,
    GatePolicy,
    HumanGateRequested,
    HumanGateResolved,
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
)
from fleetledger.schemas.codec import Codec
from fleetledger.schemas.models import validation_error

log = logging.getLogger(__name__)

__all__ = [
    "Clock",
    "IdFactory",
    "Recorder",
    "Run",
    "Step",
    "content_hash",
    "default_producer_id",
    "utc_now",
]

Clock = Callable[[], datetime]
IdFactory = Callable[[], uuid.UUID]
JsonText = str | Mapping[str, Any] | list[Any] | None

_T = TypeVar("_T")
_UNSET: Any = object()
_TERMINAL = frozenset({EventType.RUN_COMPLETED, EventType.RUN_FAILED})
_MAX_ERROR_MESSAGE = 2000


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


def _json_text(value: JsonText, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str
        )
    except (TypeError, ValueError) as exc:
        raise EventValidationError(
            f"{field}: found {type(value).__name__} that is not JSON-serializable ({exc}), "
            "expected JSON text or a JSON-serializable mapping/list"
        ) from exc


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
        prices: PriceTable | None = None,
    ) -> None:
        if batch_max_events < 1:
            raise ConfigError(f"batch_max_events: found {batch_max_events}, expected >= 1")
        if max_buffered_events < 1:
            raise ConfigError(f"max_buffered_events: found {max_buffered_events}, expected >= 1")
        if linger_ms is not None and linger_ms < 0:
            raise ConfigError(f"linger_ms: found {linger_ms}, expected >= 0 or None")
        self.transport = transport
        self.codec = codec if codec is not None else Codec()
        self.producer_id = producer_id if producer_id is not None else default_producer_id()
        self.clock: Clock = clock if clock is not None else utc_now
        self.ids: IdFactory = ids if ids is not None else uuid.uuid4
        self.batch_max_events = batch_max_events
        self.linger_ms = linger_ms
        self.max_buffered_events = max_buffered_events
        self.max_message_bytes = max_message_bytes
        self._prices = prices
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
        prices: PriceTable | None = None,
    ) -> Recorder:
        """A recorder for a broker URL (default: ``Settings().broker``).

        ``sqlite:///path.db`` appends to the embedded log; ``kafka://host:port`` publishes
        to ``<topic_prefix>.events`` (created with ``settings.partitions`` partitions if
        missing, unless ``create_topic=False``).  Batching knobs default to the settings.
        """
        if settings is None:
            settings = load_settings(broker=url)
        elif url is not None:
            settings = settings.model_copy(update={"broker": url})
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
            prices=prices,
        )

    @property
    def prices(self) -> PriceTable:
        """The price table used when ``model_io`` is given no cost (loaded on first use)."""
        if self._prices is None:
            self._prices = load_price_table()
        return self._prices

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
    async def start_run(
        self,
        *,
        agent_id: str,
        workflow: WorkflowSnapshot | Mapping[str, Any],
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
    ) -> Run:
        """Record ``run_started`` (seq 0) and return the :class:`Run`.

        ``clock``, ``ids`` and ``producer_id`` override the recorder's for this run;
        ``linger=False`` exempts the run from the time-based cut.
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
        )
        the_labels = dict(labels) if labels is not None else {}
        await run._record(
            EventType.RUN_STARTED,
            lambda: RunStarted(
                project=project, budget=budget, workflow=workflow, labels=the_labels
            ),
        )
        self._active.add(run_id)
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
        self._raise_failed()
        self._pending += 1
        if self._pending > self.max_pending_seen:
            self.max_pending_seen = self._pending

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


class Run:
    """One agent run: records its events in order.  Made by :meth:`Recorder.start_run`.

    ``async with run:`` completes the run on normal exit and fails it (re-raising) on an
    exception; a run already ended inside the block is left as it is.
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
    ) -> None:
        self.recorder = recorder
        self.run_id = run_id
        self.agent_id = agent_id
        self.tenant = tenant
        self.project = project
        self.traceparent = traceparent
        self.clock = clock
        self.ids = ids
        self.producer_id = producer_id
        self.linger = linger
        self._next_seq = 0
        self._status: Literal["running", "completed", "failed"] = "running"
        self._open_steps: dict[str, tuple[int, datetime]] = {}
        self._attempts: dict[str, int] = {}
        self._open_gates: dict[str, datetime] = {}
        self._failed_step: str | None = None

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

    async def _record(
        self,
        etype: EventType,
        payload: Callable[[], BaseModel],
        *,
        step_id: str | None = None,
        check: Callable[[], None] | None = None,
    ) -> TraceEvent:
        rec = self.recorder
        rec._check_usable()
        self._check_running()
        if check is not None:
            check()
        body = _build(f"{etype.value} payload", payload)
        await rec._reserve()
        try:
            rec._check_usable()
            self._check_running()
            if check is not None:
                check()
            event = _build(
                f"{etype.value} event",
                lambda: TraceEvent(
                    event_id=self.ids(),
                    run_id=self.run_id,
                    seq=self._next_seq,
                    type=etype,
                    ts=self.clock(),
                    agent_id=self.agent_id,
                    tenant=self.tenant,
                    step_id=step_id,
                    producer_id=self.producer_id,
                    schema_version=rec.codec.current_version,
                    traceparent=self.traceparent,
                    payload=body,
                ),
            )
        except BaseException:
            rec._release()
            raise
        self._next_seq += 1
        if etype is EventType.RUN_COMPLETED:
            self._status = "completed"
        elif etype is EventType.RUN_FAILED:
            self._status = "failed"
        rec._append(self, event)
        return event

    # ------------------------------------------------------------------ generic
    async def emit(self, payload: BaseModel, *, step_id: str | None = None) -> TraceEvent:
        """Record any payload model except ``RunStarted`` (low level; no state tracking)."""
        etype = getattr(type(payload), "TYPE", None)
        if not isinstance(etype, EventType) or etype is EventType.RUN_STARTED:
            raise EventValidationError(
                f"payload: found {type(payload).__name__}, expected a payload model other "
                "than RunStarted"
            )
        return await self._record(etype, lambda: payload, step_id=step_id)

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
        cost: Cost | Mapping[str, Any] | None = None,
        prompt_hash: str | None = None,
        response_hash: str | None = None,
        response_model: str | None = None,
        cache: CacheStatus | str | None = None,
        outcome: ModelOutcome | str = ModelOutcome.SUCCESS,
        error_type: str | None = None,
        inputs: JsonText = None,
        outputs: JsonText = None,
        step_id: str | None = None,
    ) -> TraceEvent:
        """Record one model call (OpenTelemetry GenAI names in the payload).

        Without ``cost`` the call is priced from the recorder's price table (source
        ``local``).  ``prompt_hash`` defaults to the hash of ``inputs``; ``cache`` to
        ``hit`` when cache-read tokens were reported.
        """
        in_text = _json_text(inputs, "inputs")
        out_text = _json_text(outputs, "outputs")
        if prompt_hash is None:
            if in_text is None:
                raise EventValidationError(
                    "model_io prompt_hash: found neither prompt_hash nor inputs, "
                    "expected one of them"
                )
            prompt_hash = content_hash(in_text)
        if response_hash is None and out_text is not None:
            response_hash = content_hash(out_text)
        the_cache = (
            cache
            if cache is not None
            else (CacheStatus.HIT if cache_read_tokens > 0 else CacheStatus.MISS)
        )

        def payload() -> ModelIO:
            the_cost = cost
            if the_cost is None:
                the_cost = self.recorder.prices.cost(
                    provider,
                    model,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cache_read_tokens=cache_read_tokens,
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
                outcome=outcome,
                error_type=error_type,
                inputs=in_text,
                outputs=out_text,
            )

        return await self._record(EventType.MODEL_IO, payload, step_id=step_id)

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
        """Record one tool invocation."""
        in_text = _json_text(inputs, "inputs")
        out_text = _json_text(outputs, "outputs")
        return await self._record(
            EventType.TOOL_CALL,
            lambda: ToolCall(
                gen_ai_tool_name=name,
                gen_ai_tool_call_id=call_id,
                inputs=in_text,
                outputs=out_text,
                duration_ms=duration_ms,
                outcome=outcome,
                error_type=error_type,
            ),
            step_id=step_id,
        )

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
            step_id=step_id,
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
            EventType.HUMAN_GATE_RESOLVED, payload, step_id=step_id, check=check
        )
        del self._open_gates[gate_id]
        return event

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
            step_id=step_id,
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
            step_id=step_id,
        )

    # ------------------------------------------------------------------ terminal
    async def complete(self, summary: str | None = None) -> TraceEvent:
        """Record ``run_completed``; every step must be completed first."""

        def check() -> None:
            if self._open_steps:
                raise RunStateError(
                    f"run {self.run_id!r}: found open steps {sorted(self._open_steps)}, "
                    "expected every step completed before run_completed"
                )

        return await self._record(
            EventType.RUN_COMPLETED, lambda: RunCompleted(summary=summary), check=check
        )

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
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._exit(exc)

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


def _hash_content(content: bytes | str) -> str:
    return content_hash(content)


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
        return self

    async def _exit(self, exc: BaseException | None) -> None:
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
