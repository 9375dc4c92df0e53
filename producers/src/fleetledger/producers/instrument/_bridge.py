"""Recording into the current run from wherever a client call happened.

A recorded call may come from async code on the recorder's event loop, from a blocking
client called inside that loop, or from another thread (a :class:`SyncRecorder`, or
``asyncio.to_thread``).  Each case has one right way to reach the run without blocking
the loop or reordering events: on the loop, the recording happens in place; from another
thread it is handed to the loop as one callback (the calling thread does not wait for
it), which runs before anything that thread asks of the recorder later.  Recording
failures are logged, never raised: the call being recorded already happened and its
result belongs to the agent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from fleetledger.producers.context import current_run, current_step

if TYPE_CHECKING:
    from fleetledger.producers.recorder import Run

log = logging.getLogger("fleetledger.producers.instrument")

__all__ = ["Target", "target"]

_TIMEOUT_S = 30.0


class Target:
    """The run (and step) a call records into, fixed when the call started."""

    __slots__ = ("run", "step_id")

    def __init__(self, run: Run, step_id: str | None) -> None:
        self.run = run
        self.step_id = step_id

    def record(self, method: str, kwargs: dict[str, Any]) -> None:
        """Record from synchronous code (any thread)."""
        kwargs = {**kwargs, "step_id": self.step_id}
        run = self.run
        try:
            loop = run.recorder._loop
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not None and running is loop:
                getattr(run, f"_{method}_now")(**kwargs)
            elif loop is not None and loop.is_running():
                # another thread (a SyncRecorder's agent): hand the recording to the loop
                # as one callback and return; callbacks run in the order they are handed
                # over, before any later call of this thread, so the run's order holds
                loop.call_soon_threadsafe(self._now, method, kwargs)
            else:
                log.warning("not recorded: the recorder of run %s is not running", run.run_id)
        except Exception as exc:
            _log_failure(run, method, exc)

    def _now(self, method: str, kwargs: dict[str, Any]) -> None:
        try:
            getattr(self.run, f"_{method}_now")(**kwargs)
        except Exception as exc:
            _log_failure(self.run, method, exc)

    async def arecord(self, method: str, kwargs: dict[str, Any]) -> None:
        """Record from async code (any event loop)."""
        kwargs = {**kwargs, "step_id": self.step_id}
        run = self.run
        try:
            loop = run.recorder._loop
            if loop is asyncio.get_running_loop():
                await getattr(run, method)(**kwargs)
            elif loop is not None and loop.is_running():
                coro = getattr(run, method)(**kwargs)
                fut = asyncio.run_coroutine_threadsafe(coro, loop)
                await asyncio.wait_for(asyncio.wrap_future(fut), _TIMEOUT_S)
            else:
                log.warning("not recorded: the recorder of run %s is not running", run.run_id)
        except Exception as exc:
            _log_failure(run, method, exc)


def target() -> Target | None:
    """The current run and step, or None outside any run (calls then pass through)."""
    run = current_run()
    if run is None:
        return None
    step = current_step()
    return Target(run, step.step_id if step is not None and step.run is run else None)


def _log_failure(run: Run, method: str, exc: Exception) -> None:
    log.warning(
        "could not record a %s in run %s: %s: %s", method, run.run_id, type(exc).__name__, exc
    )
