"""Recording tool calls: a decorator and a context manager.

::

    @tool                      # or @tool(name="web_search")
    async def search(query: str) -> list[str]: ...

    with tool_call("lookup", inputs={"id": 7}) as call:     # or async with
        call.outputs = db.get(7)

Each invocation inside a run records a ``tool_call`` in the current run and step (the
implicit step outside any): the bound arguments as ``inputs``, the return value as
``outputs`` (the context manager records ``inputs``/``outputs`` as given, like
:meth:`Run.tool_call`) (both through the recorder's redaction policy and blob store), the duration,
and the outcome - ``error`` with the exception's type, the exception propagating
unchanged.  Outside any run the function simply runs.  Recording never raises into the
caller.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar, overload

from fleetledger.producers.instrument._bridge import Target, target

__all__ = ["ToolCallRecording", "tool", "tool_call"]

F = TypeVar("F", bound=Callable[..., Any])


class ToolCallRecording:
    """One tool invocation being timed; set :attr:`outputs` (and :attr:`call_id`)."""

    def __init__(self, name: str, inputs: Any = None, call_id: str | None = None) -> None:
        self.name = name
        self.inputs = inputs
        self.outputs: Any = None
        self.call_id = call_id
        self._target: Target | None = None
        self._started = 0.0

    def _begin(self) -> ToolCallRecording:
        self._target = target()
        self._started = time.perf_counter()
        return self

    def _kwargs(self, exc: BaseException | None) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "name": self.name,
            "duration_ms": max(0, int((time.perf_counter() - self._started) * 1000)),
            "inputs": self.inputs,
            "outputs": self.outputs if exc is None else None,
            "call_id": self.call_id,
        }
        if exc is not None:
            kw["outcome"] = "error"
            kw["error_type"] = type(exc).__name__
        return kw

    def __enter__(self) -> ToolCallRecording:
        return self._begin()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._target is not None:
            self._target.record("tool_call", self._kwargs(exc))

    async def __aenter__(self) -> ToolCallRecording:
        return self._begin()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._target is not None:
            await self._target.arecord("tool_call", self._kwargs(exc))


def tool_call(name: str, *, inputs: Any = None, call_id: str | None = None) -> ToolCallRecording:
    """``with tool_call("name", inputs=...) as call: ...; call.outputs = ...``"""
    return ToolCallRecording(name, inputs, call_id)


@overload
def tool(fn: F) -> F: ...


@overload
def tool(*, name: str | None = None) -> Callable[[F], F]: ...


def tool(fn: F | None = None, *, name: str | None = None) -> Any:
    """Record every call of a function (sync or async) as a ``tool_call``."""

    def decorate(func: F) -> F:
        tool_name = name or func.__name__
        signature = inspect.signature(func)

        def inputs_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return {"args": list(args), "kwargs": kwargs}
            return dict(bound.arguments)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def arun(*args: Any, **kwargs: Any) -> Any:
                if target() is None:
                    return await func(*args, **kwargs)
                async with ToolCallRecording(tool_name, inputs_of(args, kwargs)) as call:
                    result = await func(*args, **kwargs)
                    call.outputs = _as_json(result)
                    return result

            return arun  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            if target() is None:
                return func(*args, **kwargs)
            with ToolCallRecording(tool_name, inputs_of(args, kwargs)) as call:
                result = func(*args, **kwargs)
                call.outputs = _as_json(result)
                return result

        return run  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


def _as_json(value: Any) -> Any:
    """A return value as something ``tool_call`` records: a mapping or list as it is,
    anything else as JSON text (pydantic models dumped, other objects by their repr)."""
    if isinstance(value, dict | list):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json")
        except Exception:
            pass
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return json.dumps(repr(value))
