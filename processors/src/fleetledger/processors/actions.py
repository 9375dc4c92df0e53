"""A run's actions - the calls a replay answers or re-executes - and their matching key.

An **action** is one model call (``model_io``), tool call (``tool_call``), human gate
decision (``human_gate_resolved``, with what its ``human_gate_requested`` asked) or
artifact write (``artifact_written``) of a run, read from its canonical event objects
(a bundle's ``events``).  Each action knows its place: the event's ``seq`` and
``entry_hash``, its step and its *position* in that step (0 for the step's first action,
counted over all attempts of the step), and its index among all actions of the run.

The **matching key** (SPEC.md, "Replay") identifies a call by what was asked, never by
when or by which process::

    key = "sha256:" + hex(SHA-256(JCS({
        "key": "fleetledger.replay-key/v1",
        "kind": "model_io" | "tool_call" | "gate" | "artifact",
        "provider": <gen_ai.provider.name> | null,
        "name": <requested model> | <tool name> | <gate id> | <artifact key>,
        "inputs": normalise(<inputs>)
    })))

``inputs`` is the JSON value of the recorded ``inputs`` text (plain text stays a string).
:func:`normalise` removes what does not change the answer: object members that are null,
the top-level members named in :data:`VOLATILE_MEMBERS` (request ids, idempotency keys,
trace context, transport options such as ``stream``), and a top-level ``model`` equal to
the key's ``name``; numbers with an integral value become integers.  A call whose inputs
were recorded only as a content reference (redacted to a hash, or offloaded to the blob
store) is keyed by ``{"sha256": <hex of the inputs text>}`` instead.  Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import rfc8785

from fleetledger.processors.canonical import canonical_bytes
from fleetledger.processors.jsondiff import content_value, short

__all__ = [
    "KEY_VERSION",
    "VOLATILE_MEMBERS",
    "Action",
    "ActionKind",
    "actions_of",
    "hash_key",
    "match_key",
    "normalise",
]

ActionKind = Literal["model_io", "tool_call", "gate", "artifact"]
KEY_VERSION = "fleetledger.replay-key/v1"
#: Top-level members of a call's inputs that never take part in its key.
VOLATILE_MEMBERS = frozenset(
    {
        "request_id",
        "requestId",
        "x-request-id",
        "idempotency_key",
        "idempotencyKey",
        "Idempotency-Key",
        "traceparent",
        "tracestate",
        "stream",
        "stream_options",
        "timeout",
        "extra_headers",
        "extra_query",
        "extra_body",
    }
)
#: Artifact keys of this prefix are written by fleetledger itself (a replay's report).
RESERVED_ARTIFACT_PREFIX = "fleetledger."


def _norm(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def normalise(inputs: Any, name: str | None = None) -> Any:
    """The inputs as they take part in the key (see the module docstring)."""
    value = _norm(inputs)
    if isinstance(value, dict):
        value = {
            k: v
            for k, v in value.items()
            if k not in VOLATILE_MEMBERS and not (k == "model" and v == name)
        }
    return value


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def _digest(obj: Any) -> str:
    # JCS either way: the orjson path is byte-identical to it for values without floats
    data = rfc8785.dumps(obj) if _has_float(obj) else canonical_bytes(obj)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def match_key(kind: str, provider: str | None, name: str, inputs: Any) -> str:
    """The matching key of a call with these inputs (a JSON value or plain text)."""
    return _digest(
        {
            "key": KEY_VERSION,
            "kind": kind,
            "provider": provider,
            "name": name,
            "inputs": normalise(inputs, name),
        }
    )


def hash_key(kind: str, provider: str | None, name: str, inputs_sha256: str) -> str:
    """The key of a call whose inputs are known only by the SHA-256 of their text."""
    return _digest(
        {
            "key": KEY_VERSION,
            "kind": kind,
            "provider": provider,
            "name": name,
            "inputs": {"sha256": inputs_sha256.removeprefix("sha256:")},
        }
    )


@dataclass(frozen=True)
class Action:
    """One action of a run (see the module docstring)."""

    index: int
    seq: int | None  # None for a call that was attempted but never recorded (a replay miss)
    entry_hash: str | None
    ts: str | None
    kind: ActionKind
    name: str
    provider: str | None
    step_id: str | None
    position: int
    attempt: int
    inputs: Any
    outputs: Any
    inputs_sha256: str | None = None  # the inputs are known by this hash only
    outputs_sha256: str | None = None
    outcome: str | None = None
    error_type: str | None = None
    cost: Decimal = Decimal(0)
    currency: str | None = None
    cost_source: str | None = None
    duration_ms: int = 0
    payload: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    key: str = ""

    @property
    def label(self) -> str:
        """``tool_call `search``` / ``model_io openai/gpt-4.1`` / ``gate g1``."""
        if self.kind == "model_io":
            return f"model_io {self.provider}/{self.name}"
        if self.kind == "tool_call":
            return f"tool_call `{self.name}`"
        if self.kind == "artifact":
            return f"artifact {self.name} v{self.inputs.get('version')}"
        return f"gate {self.name}"

    @property
    def where(self) -> str:
        """``step draft position 2`` (or ``outside any step``)."""
        step = f"step {self.step_id}" if self.step_id is not None else "outside any step"
        return f"{step} position {self.position}"

    def result(self) -> dict[str, Any]:
        """What the action produced, for comparisons: outcome, error type and outputs."""
        out: dict[str, Any] = {}
        if self.outcome is not None:
            out["outcome"] = self.outcome
        if self.error_type is not None:
            out["error_type"] = self.error_type
        if self.outputs_sha256 is not None and self.outputs is None:
            out["outputs"] = {"sha256": self.outputs_sha256}
        elif self.outputs is not None:
            out["outputs"] = self.outputs
        return out

    def request(self) -> dict[str, Any]:
        """What the action asked, for comparisons (inputs, or the hash they are known by)."""
        if self.inputs_sha256 is not None and self.inputs is None:
            return {"inputs": {"sha256": self.inputs_sha256}}
        return {"inputs": self.inputs}

    def summary(self, part: Literal["inputs", "outputs"], width: int = 60) -> str:
        """``input: {...}`` / ``output: {...}`` for a comparison table."""
        if part == "inputs":
            value = self.request()["inputs"]
            return f"input: {short(value, width)}"
        res = self.result()
        if "outputs" not in res and "error_type" in res:
            return f"error: {res['error_type']}"
        return f"output: {short(res.get('outputs'), width)}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "kind": self.kind,
            "name": self.name,
            "label": self.label,
            "step_id": self.step_id,
            "position": self.position,
            "key": self.key,
        }
        if self.seq is not None:
            out["seq"] = self.seq
            out["entry_hash"] = self.entry_hash
        if self.provider is not None:
            out["provider"] = self.provider
        return out


def _ref_hash(payload: Mapping[str, Any], name: str) -> str | None:
    ref = payload.get(f"{name}_ref")
    if isinstance(ref, dict) and isinstance(ref.get("sha256"), str):
        return str(ref["sha256"])
    return None


class _Builder:
    def __init__(self) -> None:
        self.out: list[Action] = []
        self.positions: dict[str | None, int] = {}
        self.attempts: dict[str, int] = {}
        self.requested: dict[str, dict[str, Any]] = {}

    def add(
        self,
        *,
        item: Mapping[str, Any],
        kind: ActionKind,
        name: str,
        provider: str | None,
        inputs: Any,
        outputs: Any,
        **extra: Any,
    ) -> None:
        ev = item["event"]
        step = ev.get("step_id")
        position = self.positions.get(step, 0)
        self.positions[step] = position + 1
        in_hash = extra.pop("inputs_sha256", None)
        key = (
            hash_key(kind, provider, name, in_hash)
            if in_hash is not None and inputs is None
            else match_key(kind, provider, name, inputs)
        )
        self.out.append(
            Action(
                index=len(self.out),
                seq=item["seq"],
                entry_hash=item.get("entry_hash"),
                ts=ev.get("ts"),
                kind=kind,
                name=name,
                provider=provider,
                step_id=step,
                position=position,
                attempt=self.attempts.get(step, 1) if step is not None else 1,
                inputs=inputs,
                outputs=outputs,
                inputs_sha256=in_hash,
                payload=ev.get("payload", {}),
                key=key,
                **extra,
            )
        )

    def event(self, item: Mapping[str, Any]) -> None:
        ev = item["event"]
        etype = ev["type"]
        p = ev.get("payload", {})
        if etype == "step_started":
            self.attempts[ev["step_id"]] = int(p.get("attempt", 1))
        elif etype == "model_io":
            cost = p.get("cost", {})
            self.add(
                item=item,
                kind="model_io",
                name=p["gen_ai_request_model"],
                provider=p["gen_ai_provider_name"],
                inputs=content_value(p.get("inputs")),
                outputs=content_value(p.get("outputs")),
                inputs_sha256=_ref_hash(p, "inputs") if "inputs" not in p else None,
                outputs_sha256=_ref_hash(p, "outputs"),
                outcome=p.get("outcome"),
                error_type=p.get("error_type"),
                cost=(
                    Decimal(cost.get("amount", "0"))
                    if cost.get("source") != "unpriced"
                    else Decimal(0)
                ),
                currency=cost.get("currency"),
                cost_source=cost.get("source"),
                duration_ms=int(p.get("duration_ms", 0)),
            )
        elif etype == "tool_call":
            self.add(
                item=item,
                kind="tool_call",
                name=p["gen_ai_tool_name"],
                provider=None,
                inputs=content_value(p.get("inputs")),
                outputs=content_value(p.get("outputs")),
                inputs_sha256=_ref_hash(p, "inputs") if "inputs" not in p else None,
                outputs_sha256=_ref_hash(p, "outputs"),
                outcome=p.get("outcome"),
                error_type=p.get("error_type"),
                duration_ms=int(p.get("duration_ms", 0)),
            )
        elif etype == "human_gate_requested":
            self.requested[p["gate_id"]] = p
        elif etype == "human_gate_resolved":
            asked = self.requested.pop(p["gate_id"], {})
            inputs = {
                k: v
                for k, v in {
                    "policy": asked.get("policy"),
                    "artifact_key": p.get("artifact_key", asked.get("artifact_key")),
                    "artifact_version": p.get("artifact_version", asked.get("artifact_version")),
                }.items()
                if v is not None
            }
            outputs = {k: p[k] for k in ("decision", "reviewer", "reason") if p.get(k) is not None}
            self.add(
                item=item,
                kind="gate",
                name=p["gate_id"],
                provider=None,
                inputs=inputs,
                outputs=outputs,
                outcome=p["decision"],
                duration_ms=int(p.get("wait_ms", 0)),
            )
        elif etype == "artifact_written":
            if str(p["key"]).startswith(RESERVED_ARTIFACT_PREFIX):
                return
            inputs = {"version": p["version"], "state": p["state"]}
            if "schema_ref" in p:
                inputs["schema_ref"] = p["schema_ref"]
            written: dict[str, Any] = {"content_hash": p["content_hash"]}
            if "validation" in p:
                written["validation"] = p["validation"]
            self.add(
                item=item,
                kind="artifact",
                name=p["key"],
                provider=None,
                inputs=inputs,
                outputs=written,
            )


def actions_of(items: Iterable[Mapping[str, Any]]) -> list[Action]:
    """The actions of a run from its bundle's ``events`` items (``{seq, entry_hash,
    event}``), in seq order."""
    builder = _Builder()
    for item in items:
        builder.event(item)
    return builder.out


def event_items(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Bundle-style items for bare canonical event objects (no chain hashes)."""
    return [{"seq": ev["seq"], "entry_hash": None, "event": ev} for ev in events]
