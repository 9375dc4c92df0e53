"""Replay mode: the port through which a run's calls are answered from a recording.

A run started with ``replay=<Responder>`` (``Recorder.start_run(..., replay=...)``; the
``fleetledger replay`` command and :func:`fleetledger.processors.runtimes.replay.replay`
set it up) is a *replay*: every call the SDK intercepts asks the responder first -

* a model call through an instrumented OpenAI/Anthropic client, or through a function
  decorated with :func:`~fleetledger.producers.tools.model`;
* a tool call through :func:`~fleetledger.producers.tools.tool` (unless declared
  ``replay="execute"``: a local computation that is re-run and compared) or
  :func:`~fleetledger.producers.tools.tool_call`;
* a human decision through :meth:`Run.human_gate <fleetledger.producers.recorder.Run.human_gate>`;

and gets the recorded result instead of calling out.  The call is still recorded in the
replay run, with the recorded outputs, tokens and outcome; a served model call costs 0
(``cost.price_data`` = :data:`REPLAY_PRICE_DATA`, ``cache`` = ``hit``).  A call the
recording cannot answer raises :class:`~fleetledger.kernel.errors.ReplayMissError`
(naming its matching key, the nearest recorded call and a JSON-Pointer diff) into the
agent - the replay fails closed - unless the responder allows live calls: then
:meth:`Responder.answer` returns None and the call is made, recorded and priced live.

The SDK knows nothing of recordings: the responder (in the processors, which read and
verify bundles) does the matching.  Every event the replay run records is also handed to
:meth:`Responder.recorded`, so the responder sees the replay as it happens.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Protocol

from fleetledger.kernel.errors import ReplayedFailureError
from fleetledger.producers.redaction import RedactionPolicy
from fleetledger.schemas import Cost, CostSource, TraceEvent

__all__ = [
    "REPLAY_PRICE_DATA",
    "CallRequest",
    "GateRequest",
    "RecordedCall",
    "RecordedDecision",
    "Responder",
    "call_request",
    "recorded_failure",
    "served_cost",
]

#: ``cost.price_data`` of a model call answered from a recording (its amount is 0).
REPLAY_PRICE_DATA = "fleetledger-replay"


@dataclass(frozen=True)
class CallRequest:
    """A call about to be made, as it would be recorded.

    ``inputs`` is the JSON value of the inputs after the recorder's redaction policy,
    ``inputs_sha256`` the hex SHA-256 of their recorded text (recordings that hold only a
    content reference are matched by it).
    """

    kind: Literal["model_io", "tool_call"]
    name: str  # the requested model, or the tool's name
    provider: str | None
    inputs: Any
    inputs_sha256: str | None
    step_id: str | None


@dataclass(frozen=True)
class RecordedCall:
    """The recorded result that answers a call."""

    seq: int
    outputs: Any  # the JSON value (or plain text) of the recorded outputs; None if none
    outcome: str
    error_type: str | None = None
    response_model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int | None = None
    duration_ms: int = 0
    call_id: str | None = None
    currency: str = "USD"


@dataclass(frozen=True)
class GateRequest:
    gate_id: str
    policy: str
    artifact_key: str | None
    artifact_version: int | None
    step_id: str | None


@dataclass(frozen=True)
class RecordedDecision:
    """A human decision as it was recorded."""

    seq: int
    decision: str
    reviewer: str
    reason: str | None = None
    wait_ms: int = 0


class Responder(Protocol):
    """Answers a replay's calls from a recording (see the module docstring)."""

    def answer(self, request: CallRequest) -> RecordedCall | None:
        """The recorded result of ``request``; None: make the call live (only when the
        replay allows live calls).  Raises ReplayMissError otherwise."""
        ...

    def decide(self, request: GateRequest) -> RecordedDecision:
        """The recorded decision of a gate; raises ReplayMissError when there is none."""
        ...

    def recorded(self, event: TraceEvent) -> None:
        """The replay run recorded ``event`` (called for every event, in seq order)."""
        ...


def served_cost(currency: str = "USD") -> Cost:
    """The cost of a model call answered from the recording: zero, marked as a replay."""
    return Cost(
        amount=Decimal(0),
        currency=currency,
        source=CostSource.LOCAL,
        price_data=REPLAY_PRICE_DATA,
    )


def call_request(
    redaction: RedactionPolicy,
    kind: Literal["model_io", "tool_call"],
    name: str,
    provider: str | None,
    inputs: Any,
    step_id: str | None,
) -> CallRequest:
    """The request of a call whose inputs the recorder would record as given: redacted
    by ``redaction``, as JSON text, then read back as the recording's JSON value."""
    red = redaction.apply(inputs, "inputs")
    text = red.text
    value: Any = None
    if text is not None:
        try:
            value = json.loads(text, parse_constant=str)
        except ValueError:
            value = text
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None
    return CallRequest(kind, name, provider, value, digest, step_id)


def recorded_failure(
    recorded: RecordedCall, what: str, scope: Callable[..., Any] | None = None
) -> BaseException:
    """The exception to raise for a call that failed in the recording: the recorded
    ``error_type`` when ``scope`` (the called function) sees an exception class of that
    name taking a message, else :class:`ReplayedFailureError`."""
    message = f"{what} failed in the recording (seq {recorded.seq})"
    name = recorded.error_type or "Exception"
    found = getattr(scope, "__globals__", {}).get(name) if scope is not None else None
    if found is None:
        found = getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, Exception):
        try:
            return found(message)
        except TypeError:
            pass
    return ReplayedFailureError(f"{message} with {name}", error_type=name)
