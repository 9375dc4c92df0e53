"""Blocking facade over :class:`Recorder` for agents that are not async.

The recorder lives on an event loop in a background thread; every call here submits
a coroutine to it and waits for the result, so the semantics (sequence numbers,
batching, backpressure, delivery errors) are exactly those of the async API::

    with SyncRecorder.from_url("sqlite:///ledger.db") as rec:
        with rec.run(agent_id="planner") as run:
            with run.step("plan"):
                run.model_io(provider="openai", model="gpt-4.1", ...)

The run and step are current in the calling thread (context variables), so the model
client instrumentation and :func:`~fleetledger.producers.tools.tool` record into them.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from fleetledger.kernel.errors import RunStateError
from fleetledger.producers.context import _RUN, _STEP
from fleetledger.producers.recorder import GateOutcome, Recorder, Run, Step, _live, _reset
from fleetledger.producers.transports import Transport
from fleetledger.schemas import TraceEvent

__all__ = ["SyncRecorder", "SyncRun", "SyncStep"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class _LoopThread:
    """One event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="fleetledger-recorder", daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RunStateError(
                "sync recorder: found a blocking call on its own event loop thread, "
                "expected it from another thread (use the async Recorder there)"
            )
        if self.loop.is_closed() or not self.loop.is_running():
            coro.close()
            raise RunStateError("sync recorder: found its event loop stopped, expected it open")
        fut: Future[_T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join()


def _close_at_exit(ref: weakref.ReferenceType[SyncRecorder]) -> None:
    rec = ref()
    if rec is not None and not rec._closed:
        try:
            rec.close()
        except Exception as exc:  # at exit there is nobody left to raise to
            log.error("recording at exit failed: %s", exc)


class SyncRecorder:
    """The blocking twin of :class:`Recorder` (same arguments, no ``await``)."""

    def __init__(self, transport: Transport, **kwargs: Any) -> None:
        """Like ``Recorder(transport, **kwargs)``."""
        self._setup(lambda: Recorder(transport, **kwargs))

    def _setup(self, factory: Callable[[], Recorder]) -> None:
        self._closed = False
        self._thread = _LoopThread()
        # flush what was recorded if the program exits without close()
        self._atexit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._atexit)

        async def build() -> Recorder:
            return factory()

        try:
            self.recorder: Recorder = self._thread.call(build())
        except BaseException:
            self._thread.stop()
            raise

    @classmethod
    def from_url(cls, url: str | None = None, **kwargs: Any) -> SyncRecorder:
        """Like :meth:`Recorder.from_url` (same keyword arguments)."""
        obj = cls.__new__(cls)
        obj._setup(lambda: Recorder.from_url(url, **kwargs))
        return obj

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self._thread.call(coro)

    @property
    def buffered_events(self) -> int:
        return self.recorder.buffered_events

    def start(self) -> None:
        self._call(self.recorder.start())

    def flush(self) -> None:
        self._call(self.recorder.flush())

    def close(self) -> None:
        """Flush, close the transport and stop the background loop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._atexit)
        try:
            self._call(self.recorder.close())
        finally:
            self._thread.stop()

    def __enter__(self) -> SyncRecorder:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start_run(self, **kwargs: Any) -> SyncRun:
        """Like :meth:`Recorder.start_run` (the run becomes current in this thread)."""
        run = self._call(self.recorder.start_run(**kwargs))
        sync_run = SyncRun(self, run)
        sync_run._outer = _live(_RUN.get())  # this thread's; the loop's context has its own
        _RUN.set(run)
        return sync_run

    def run(self, **kwargs: Any) -> _SyncRunScope:
        """``with rec.run(agent_id=...) as run:`` like :meth:`Recorder.run`."""
        return _SyncRunScope(self, kwargs)


class _SyncRunScope:
    def __init__(self, owner: SyncRecorder, kwargs: dict[str, Any]) -> None:
        self._owner = owner
        self._kwargs = kwargs
        self.run: SyncRun | None = None

    def __enter__(self) -> SyncRun:
        self.run = self._owner.start_run(**self._kwargs)
        return self.run.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.run is not None
        self.run.__exit__(exc_type, exc, tb)


class SyncRun:
    """The blocking twin of :class:`Run`; ``with run:`` completes or fails it."""

    def __init__(self, owner: SyncRecorder, run: Run) -> None:
        self._owner = owner
        self.run = run
        self._tokens: list[Any] = []
        self._outer: Run | None = None

    def __str__(self) -> str:
        return self.run.run_id

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self._owner._call(coro)

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def status(self) -> str:
        return self.run.status

    @property
    def next_seq(self) -> int:
        return self.run.next_seq

    @property
    def labels(self) -> dict[str, str]:
        return self.run.labels

    def step(self, step_id: str, *, attempt: int | None = None) -> SyncStep:
        return SyncStep(self, self.run.step(step_id, attempt=attempt))

    def human_gate(self, *, ask: Callable[[Any], Any], **kwargs: Any) -> GateOutcome:
        """:meth:`Run.human_gate`; ``ask`` runs in a worker thread, not on the loop."""

        async def asked(request: Any) -> Any:
            return await asyncio.to_thread(ask, request)

        return self._call(self.run.human_gate(ask=asked, **kwargs))

    def step_started(self, step_id: str, **kwargs: Any) -> TraceEvent:
        return self._call(self.run.step_started(step_id, **kwargs))

    def step_completed(self, step_id: str, **kwargs: Any) -> TraceEvent:
        return self._call(self.run.step_completed(step_id, **kwargs))

    def model_io(self, **kwargs: Any) -> TraceEvent:
        return self._call(self.run.model_io(**kwargs))

    def tool_call(self, **kwargs: Any) -> TraceEvent:
        return self._call(self.run.tool_call(**kwargs))

    def gate_requested(self, **kwargs: Any) -> TraceEvent:
        return self._call(self.run.gate_requested(**kwargs))

    def gate_resolved(self, **kwargs: Any) -> TraceEvent:
        return self._call(self.run.gate_resolved(**kwargs))

    def artifact(self, **kwargs: Any) -> TraceEvent:
        return self._call(self.run.artifact(**kwargs))

    def recovery(self, **kwargs: Any) -> TraceEvent:
        return self._call(self.run.recovery(**kwargs))

    def model_decision(self, primary_model: str, **kwargs: Any) -> TraceEvent:
        return self._call(self.run.model_decision(primary_model, **kwargs))

    def emit(self, payload: Any, *, step_id: str | None = None) -> TraceEvent:
        return self._call(self.run.emit(payload, step_id=step_id))

    def complete(self, summary: str | None = None) -> TraceEvent:
        return self._call(self.run.complete(summary))

    def fail(
        self, error_type: str, error_message: str, failed_step: str | None = None
    ) -> TraceEvent:
        return self._call(self.run.fail(error_type, error_message, failed_step))

    def __enter__(self) -> SyncRun:
        self._tokens.append(_RUN.set(self.run) if _RUN.get() is not self.run else None)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._call(self.run._exit(exc))
        finally:
            token = self._tokens.pop() if self._tokens else None
            if token is not None:
                _reset(_RUN, token)
            if _RUN.get() is self.run:
                _RUN.set(_live(self._outer))
            self._outer = None


class SyncStep:
    """The blocking twin of :class:`Step`."""

    def __init__(self, owner: SyncRun, step: Step) -> None:
        self._owner = owner
        self.step = step
        self._token: Any = None

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self._owner._call(coro)

    @property
    def step_id(self) -> str:
        return self.step.step_id

    @property
    def attempt(self) -> int | None:
        return self.step.attempt

    def mark_blocked(self, reason: str | None = None) -> None:
        self.step.mark_blocked(reason)

    def mark_replayed(self, reason: str | None = None) -> None:
        self.step.mark_replayed(reason)

    def __enter__(self) -> SyncStep:
        self._call(self.step._enter())
        self._token = _STEP.set(self.step)  # current in the calling thread
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _reset(_STEP, self._token)
            self._token = None
        self._call(self.step._exit(exc))

    def model_io(self, **kwargs: Any) -> TraceEvent:
        return self._call(self.step.model_io(**kwargs))

    def tool_call(self, **kwargs: Any) -> TraceEvent:
        return self._call(self.step.tool_call(**kwargs))

    def gate_requested(self, **kwargs: Any) -> TraceEvent:
        return self._call(self.step.gate_requested(**kwargs))

    def gate_resolved(self, **kwargs: Any) -> TraceEvent:
        return self._call(self.step.gate_resolved(**kwargs))

    def artifact(self, **kwargs: Any) -> TraceEvent:
        return self._call(self.step.artifact(**kwargs))

    def recovery(self, **kwargs: Any) -> TraceEvent:
        return self._call(self.step.recovery(**kwargs))
