"""The run and step the current code belongs to, as context variables.

``start_run`` and ``async with run`` make a run current; ``async with run.step(...)``
makes a step current.  Context variables follow asyncio tasks (a task starts with a copy
of its creator's context), so concurrent agents each see their own run, and a run
started inside another is current until it ends, then the outer one is again.  The
instrumentation of model clients and :func:`~fleetledger.producers.tools.tool` record
into whatever is current; outside any run they record nothing.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetledger.producers.recorder import Run, Step

__all__ = ["current_run", "current_step"]

_RUN: ContextVar[Run | None] = ContextVar("fleetledger_run", default=None)
_STEP: ContextVar[Step | None] = ContextVar("fleetledger_step", default=None)


def current_run() -> Run | None:
    """The running run of this context, if any (an ended run is not current)."""
    run = _RUN.get()
    if run is not None and run.ended:
        return None
    return run


def current_step() -> Step | None:
    """The open step of the current run in this context, if any."""
    step = _STEP.get()
    if step is None or step.run.ended or step.step_id not in step.run._open_steps:
        return None
    return step
