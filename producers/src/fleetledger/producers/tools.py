"""Recording tool calls and model calls of your own code: decorators and a context manager.

::

    @tool                      # or @tool(name="web_search"), @tool(replay="execute")
    async def search(query: str) -> list[str]: ...

    with tool_call("lookup", inputs={"id": 7}) as call:     # or async with
        if not call.served:
            call.outputs = db.get(7)

    @model(provider="acme")    # a model client the instrumentation does not know
    def complete(*, model: str, messages: list[dict]) -> ModelReply: ...

Each invocation inside a run records a ``tool_call`` (or, for :func:`model`, a
``model_io``) in the current run and step (the implicit step outside any): the bound
arguments as ``inputs``, the return value as ``outputs`` (the context manager records
``inputs``/``outputs`` as given, like :meth:`Run.tool_call`) (both through the recorder's
redaction policy and blob store), the duration on the run's clock, and the outcome -
``error`` with the exception's type, the exception propagating unchanged.  Outside any
run the function simply runs.  Recording never raises into the caller.

In a replay (:mod:`fleetledger.producers.replay`) a decorated call is answered from the
recording instead of running: the function is not called and returns the recorded value
(a JSON value; a pydantic model when the function's return annotation is one), or raises
again when it failed in the recording.  ``@tool(replay="execute")`` declares a local
computation that is re-run in a replay, so the replay compares what it returns with the
recording (non-determinism shows as an output mismatch).  The context manager asks the
recording on entry: ``call.served`` is then True and ``call.outputs`` holds the recorded
outputs.
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from pydantic import BaseModel

from fleetledger.kernel.errors import ReplayMissError
from fleetledger.producers.instrument._bridge import Target, target
from fleetledger.producers.replay import (
    RecordedCall,
    call_request,
    recorded_failure,
    served_cost,
)
from fleetledger.schemas import CacheStatus, Cost

__all__ = ["ModelReply", "ToolCallRecording", "model", "tool", "tool_call"]

F = TypeVar("F", bound=Callable[..., Any])
ReplayMode = Literal["serve", "execute"]


def _ms_since(tgt: Target, started: datetime) -> int:
    return max(0, int((tgt.run.clock() - started).total_seconds() * 1000))


class ToolCallRecording:
    """One tool invocation being timed; set :attr:`outputs` (and :attr:`call_id`).

    In a replay, :attr:`served` is True when the recording answered the call on entry
    (:attr:`outputs` then holds the recorded outputs, :attr:`recorded` the whole result).
    """

    def __init__(
        self, name: str, inputs: Any = None, call_id: str | None = None, *, serve: bool = True
    ) -> None:
        self.name = name
        self.inputs = inputs
        self.outputs: Any = None
        self.call_id = call_id
        self.served = False
        self.recorded: RecordedCall | None = None
        self._serve = serve
        self._target: Target | None = None
        self._started: datetime | None = None

    def _begin(self) -> ToolCallRecording:
        tgt = target()
        self._target = tgt
        if tgt is None:
            return self
        self._started = tgt.run.clock()
        responder = tgt.run.replay
        if responder is not None and self._serve:
            request = call_request(
                tgt.run.recorder.redaction, "tool_call", self.name, None, self.inputs, tgt.step_id
            )
            try:
                recorded = responder.answer(request)
            except ReplayMissError as exc:  # fail closed, the attempt recorded as failed
                tgt.record("tool_call", self._kwargs(exc))
                raise
            if recorded is not None:
                self.served = True
                self.recorded = recorded
                self.outputs = recorded.outputs
                self.call_id = self.call_id or recorded.call_id
        return self

    def _kwargs(self, exc: BaseException | None) -> dict[str, Any]:
        assert self._target is not None and self._started is not None
        kw: dict[str, Any] = {
            "name": self.name,
            "duration_ms": _ms_since(self._target, self._started),
            "inputs": self.inputs,
            "outputs": self.outputs if exc is None else None,
            "call_id": self.call_id,
        }
        rec = self.recorded
        if exc is not None:
            kw["outcome"] = "error"
            kw["error_type"] = type(exc).__name__
        if rec is not None and rec.outcome == "error":  # replaying a failure
            kw["outcome"] = "error"
            kw["error_type"] = rec.error_type
            kw["outputs"] = rec.outputs
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


def _inputs_of(signature: inspect.Signature) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    def inputs_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return {"args": list(args), "kwargs": kwargs}
        return dict(bound.arguments)

    return inputs_of


def _decoder(func: Callable[..., Any]) -> Callable[[Any], Any]:
    """Recorded JSON -> the function's return type, when that is a pydantic model."""
    try:
        returns = typing.get_type_hints(func).get("return")
    except Exception:  # unresolvable annotations: return the JSON value
        returns = None
    if isinstance(returns, type) and issubclass(returns, BaseModel):
        model_cls = returns
        return lambda value: model_cls.model_validate(value)
    return lambda value: value


@overload
def tool(fn: F) -> F: ...


@overload
def tool(*, name: str | None = None, replay: ReplayMode = "serve") -> Callable[[F], F]: ...


def tool(fn: F | None = None, *, name: str | None = None, replay: ReplayMode = "serve") -> Any:
    """Record every call of a function (sync or async) as a ``tool_call``.

    ``replay="serve"`` (default): in a replay the recorded result is returned and the
    function is not called.  ``replay="execute"``: the function runs in a replay too
    (a local computation whose result the replay checks against the recording).
    """
    if replay not in ("serve", "execute"):
        raise ValueError(f"tool replay: found {replay!r}, expected 'serve' or 'execute'")

    def decorate(func: F) -> F:
        tool_name = name or func.__name__
        inputs_of = _inputs_of(inspect.signature(func))
        decode = _decoder(func)
        serve = replay == "serve"

        def served(call: ToolCallRecording) -> Any:
            assert call.recorded is not None
            if call.recorded.outcome == "error":
                raise recorded_failure(call.recorded, f"tool {tool_name!r}", func)
            return decode(call.recorded.outputs)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def arun(*args: Any, **kwargs: Any) -> Any:
                if target() is None:
                    return await func(*args, **kwargs)
                async with ToolCallRecording(
                    tool_name, inputs_of(args, kwargs), serve=serve
                ) as call:
                    if call.served:
                        return served(call)
                    result = await func(*args, **kwargs)
                    call.outputs = _as_json(result)
                    return result

            return arun  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            if target() is None:
                return func(*args, **kwargs)
            with ToolCallRecording(tool_name, inputs_of(args, kwargs), serve=serve) as call:
                if call.served:
                    return served(call)
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


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelReply:
    """What a :func:`model`-decorated function returns: the response and its usage.

    ``input_tokens`` include cache reads and writes; without ``cost`` the call is priced
    by the recorder's pricer; ``duration_ms`` defaults to the time on the run's clock.
    """

    outputs: Any
    input_tokens: int = 0
    output_tokens: int = 0
    response_model: str | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int | None = None
    duration_ms: int | None = None
    cost: Cost | None = None


class _ModelCall:
    """One call of a :func:`model`-decorated function, in a run."""

    def __init__(self, tgt: Target, provider: str, model_name: str, inputs: Any) -> None:
        self.tgt = tgt
        self.provider = provider
        self.model = model_name
        self.inputs = inputs
        self.started = tgt.run.clock()
        self.recorded: RecordedCall | None = None
        responder = tgt.run.replay
        if responder is not None:
            request = call_request(
                tgt.run.recorder.redaction, "model_io", model_name, provider, inputs, tgt.step_id
            )
            try:
                self.recorded = responder.answer(request)
            except ReplayMissError as exc:  # fail closed, the attempt recorded as failed
                tgt.record("model_io", self.kwargs(None, exc))
                raise

    def served_reply(self) -> ModelReply:
        r = self.recorded
        assert r is not None
        return ModelReply(
            outputs=r.outputs,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            response_model=r.response_model,
            cache_read_tokens=r.cache_read_tokens,
            cache_write_tokens=r.cache_write_tokens,
            duration_ms=r.duration_ms,
        )

    def kwargs(self, reply: ModelReply | None, exc: BaseException | None) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "inputs": self.inputs,
            "input_tokens": 0,
            "output_tokens": 0,
            "duration_ms": _ms_since(self.tgt, self.started),
        }
        r = self.recorded
        if r is not None:  # served: the recorded result at no cost
            kw.update(
                input_tokens=r.input_tokens,
                output_tokens=r.output_tokens,
                cache_read_tokens=r.cache_read_tokens,
                cache_write_tokens=r.cache_write_tokens,
                response_model=r.response_model,
                outputs=r.outputs,
                cost=served_cost(r.currency),
                cache=CacheStatus.HIT,
            )
            if r.outcome != "success":
                kw["outcome"] = r.outcome
                kw["error_type"] = r.error_type
            return kw
        if exc is not None:
            kw.update(outcome="error", error_type=type(exc).__name__)
            return kw
        assert reply is not None
        kw.update(
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cache_read_tokens=reply.cache_read_tokens,
            cache_write_tokens=reply.cache_write_tokens,
            response_model=reply.response_model,
            outputs=reply.outputs,
        )
        if reply.duration_ms is not None:
            kw["duration_ms"] = reply.duration_ms
        if reply.cost is not None:
            kw["cost"] = reply.cost
        return kw


@overload
def model(fn: F, *, provider: str, name: str | None = None) -> F: ...


@overload
def model(*, provider: str, name: str | None = None) -> Callable[[F], F]: ...


def model(fn: F | None = None, *, provider: str, name: str | None = None) -> Any:
    """Record every call of a function that calls a model as a ``model_io``.

    The function returns a :class:`ModelReply`.  The model recorded is the call's
    ``model`` argument when the function has one, else ``name`` (default: the function's
    name).  In a replay the recorded reply is returned (at no cost) and the function is
    not called; a call without a recording raises the replay's miss error.
    """

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        inputs_of = _inputs_of(signature)
        default = name or func.__name__

        def begin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _ModelCall | None:
            tgt = target()
            if tgt is None:
                return None
            inputs = inputs_of(args, kwargs)
            chosen = inputs.get("model") if isinstance(inputs, dict) else None
            return _ModelCall(tgt, provider, chosen if isinstance(chosen, str) else default, inputs)

        def served(call: _ModelCall) -> ModelReply:
            assert call.recorded is not None
            if call.recorded.outcome == "error":
                raise recorded_failure(call.recorded, f"model call {call.model!r}", func)
            return call.served_reply()

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def arun(*args: Any, **kwargs: Any) -> Any:
                call = begin(args, kwargs)
                if call is None:
                    return await func(*args, **kwargs)
                if call.recorded is not None:
                    await call.tgt.arecord("model_io", call.kwargs(None, None))
                    return served(call)
                try:
                    reply = await func(*args, **kwargs)
                except Exception as exc:
                    await call.tgt.arecord("model_io", call.kwargs(None, exc))
                    raise
                await call.tgt.arecord("model_io", call.kwargs(_reply(reply), None))
                return reply

            return arun  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            call = begin(args, kwargs)
            if call is None:
                return func(*args, **kwargs)
            if call.recorded is not None:
                call.tgt.record("model_io", call.kwargs(None, None))
                return served(call)
            try:
                reply = func(*args, **kwargs)
            except Exception as exc:
                call.tgt.record("model_io", call.kwargs(None, exc))
                raise
            call.tgt.record("model_io", call.kwargs(_reply(reply), None))
            return reply

        return run  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


def _reply(value: Any) -> ModelReply:
    if isinstance(value, ModelReply):
        return value
    return ModelReply(outputs=_as_json(value))
