"""GenAI spans -> fleetledger runs: which spans make a run, and what each one records.

Pure: spans go in, :class:`RunPlan` values come out; the receiver records them.

* A run is an ``invoke_agent`` span with the spans under it, or, for GenAI work outside
  any agent span, the trace's root span with that work.  Run ids are
  ``otel-<trace id>-<agent span id>`` and ``otel-<trace id>``.
* Model calls (``chat``, ``text_completion``, ``generate_content``, ``embeddings``)
  become ``model_io``, tool executions (``execute_tool``) ``tool_call``, in the order the
  spans started (each event's time is its span's start).  The run ends when its root
  span does: ``run_failed`` when the root's status is ERROR, else ``run_completed``.
* A run is recorded once its root span has arrived and the trace has been quiet for
  ``settle_s`` (children end, and are exported, before their parents); a trace whose
  root never arrives is recorded after ``timeout_s`` of quiet, rooted at its topmost span.
* Every span that maps to nothing is counted with its reason, never dropped silently.

Attributes read: the OpenTelemetry GenAI semantic conventions (``gen_ai.*``), the older
names OpenLLMetry still emits (``gen_ai.system``, ``gen_ai.usage.prompt_tokens``,
``gen_ai.prompt.<i>.*``) and OpenInference's (``openinference.span.kind``,
``llm.model_name``, ``llm.token_count.*``, ``input.value``/``output.value``).
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fleetledger.producers.otlp.decode import Span
from fleetledger.producers.pricing import unpriced_cost
from fleetledger.producers.recorder import content_hash

__all__ = ["Action", "RunPlan", "TraceAssembler", "operation"]

MODEL_OPS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
TOOL_OPS = frozenset({"execute_tool"})
AGENT_OPS = frozenset({"invoke_agent"})
_OPENINFERENCE = {"LLM": "chat", "TOOL": "execute_tool", "AGENT": "invoke_agent"}
_OPENINFERENCE |= {"EMBEDDING": "embeddings"}
_LEGACY_TYPES = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}
_NS_PER_S = 1_000_000_000

# Reasons a span maps to nothing (keys of the counters the receiver reports).
NOT_GENAI = "not a GenAI span"
LATE = "arrived after its run was recorded"
INVALID = "could not be recorded"


def operation(span: Span) -> str | None:
    """The GenAI operation of a span, or None for a span that is not a GenAI span."""
    a = span.attributes
    op = a.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return op
    kind = a.get("openinference.span.kind")
    if isinstance(kind, str):
        return _OPENINFERENCE.get(kind.upper(), kind.lower())
    legacy = a.get("llm.request.type")
    if isinstance(legacy, str):
        return _LEGACY_TYPES.get(legacy, legacy)
    return None


def _op_reason(op: str) -> str:
    return f"GenAI operation {op!r} has no fleetledger event"


def _mapped(op: str | None) -> bool:
    return op in MODEL_OPS or op in TOOL_OPS or op in AGENT_OPS


@dataclass
class Action:
    """One recording call: ``method`` of the run with ``kwargs``, at ``ts``."""

    ts: datetime
    method: str
    kwargs: dict[str, Any]


@dataclass
class RunPlan:
    run_id: str
    agent_id: str
    tenant: str
    started: datetime
    ended: datetime
    traceparent: str
    labels: dict[str, str]
    actions: list[Action]
    failed: tuple[str, str] | None = None  # (error type, message)
    summary: str | None = None
    spans: int = 0  # spans this run accounts for (root included)


def _ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / _NS_PER_S, UTC)


def _ms(span: Span) -> int:
    return max(0, (span.end_ns - span.start_ns) // 1_000_000)


def _int(a: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        v = a.get(key)
        if isinstance(v, bool):
            continue
        if isinstance(v, int | float) and v >= 0:
            return int(v)
        if isinstance(v, str) and v.isdigit():
            return int(v)
    return None


def _str(a: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        v = a.get(key)
        if isinstance(v, str) and v:
            return v
    return None


def _json_value(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _indexed(a: dict[str, Any], prefix: str) -> list[dict[str, Any]] | None:
    """OpenLLMetry's flattened ``<prefix>.<i>.<field>`` attributes as a list of objects."""
    items: dict[int, dict[str, Any]] = {}
    for key, value in a.items():
        if not key.startswith(prefix + "."):
            continue
        index, _, name = key[len(prefix) + 1 :].partition(".")
        if index.isdigit() and name:
            items.setdefault(int(index), {})[name] = value
    return [items[i] for i in sorted(items)] if items else None


def _content(a: dict[str, Any], direction: str) -> Any:
    if direction == "input":
        messages = a.get("gen_ai.input.messages")
        system = a.get("gen_ai.system_instructions")
        if messages is not None or system is not None:
            out = {"messages": _json_value(messages)} if messages is not None else {}
            if system is not None:
                out["system_instructions"] = _json_value(system)
            return out
        if "input.value" in a:
            return _json_value(a["input.value"])
        return _indexed(a, "gen_ai.prompt")
    if "gen_ai.output.messages" in a:
        return {"messages": _json_value(a["gen_ai.output.messages"])}
    if "output.value" in a:
        return _json_value(a["output.value"])
    return _indexed(a, "gen_ai.completion")


def _error_type(span: Span) -> str:
    found = _str(span.attributes, "error.type")
    if found:
        return found
    for name, _, attrs in span.events:
        if name == "exception" and isinstance(attrs.get("exception.type"), str):
            return str(attrs["exception.type"])
    return "error"


def model_io_kwargs(span: Span, op: str) -> dict[str, Any]:
    a = span.attributes
    provider = _str(a, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
    request = _str(a, "gen_ai.request.model", "llm.model_name", "gen_ai.response.model")
    response = _str(a, "gen_ai.response.model") or (
        _str(a, "llm.model_name") if "openinference.span.kind" in a else None
    )
    inp = _int(
        a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"
    )
    out = _int(
        a,
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    )
    read = _int(
        a,
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    )
    write = _int(
        a,
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
    )
    kw: dict[str, Any] = {
        "provider": (provider or "unknown").lower(),
        "model": request or "unknown",
        "response_model": response,
        "input_tokens": inp or 0,
        "output_tokens": out or 0,
        "duration_ms": _ms(span),
    }
    cached = (read or 0) + (write or 0)
    if cached > kw["input_tokens"]:  # reported apart from the input tokens (Anthropic style)
        kw["input_tokens"] += cached
    kw["cache_read_tokens"] = read or 0
    if write:
        kw["cache_write_tokens"] = write
    if inp is None and out is None:
        kw["cost"] = unpriced_cost()  # no usage on the span: no price can be applied
    inputs = _content(a, "input")
    outputs = _content(a, "output")
    if inputs is not None:
        kw["inputs"] = inputs
    else:
        kw["prompt_hash"] = content_hash(f"otel-span:{span.trace_id}:{span.span_id}")
    if outputs is not None:
        kw["outputs"] = outputs
    if span.status_code == 2:
        kw["outcome"] = "error"
        kw["error_type"] = _error_type(span)
    return kw


def tool_call_kwargs(span: Span) -> dict[str, Any]:
    a = span.attributes
    name = _str(a, "gen_ai.tool.name", "tool.name")
    if name is None:
        name = span.name.removeprefix("execute_tool").strip() or span.name or "tool"
    kw: dict[str, Any] = {"name": name, "duration_ms": _ms(span)}
    call_id = _str(a, "gen_ai.tool.call.id", "tool_call.id")
    if call_id:
        kw["call_id"] = call_id
    args = a.get("gen_ai.tool.call.arguments", a.get("input.value"))
    result = a.get("gen_ai.tool.call.result", a.get("output.value"))
    if args is not None:
        kw["inputs"] = _json_value(args)
    if result is not None:
        kw["outputs"] = _json_value(result)
    if span.status_code == 2:
        kw["outcome"] = "error"
        kw["error_type"] = _error_type(span)
    return kw


@dataclass
class _Trace:
    spans: dict[str, Span] = field(default_factory=dict)
    last_seen: int = 0
    consumed: dict[str, str] = field(default_factory=dict)  # span id -> run it went to


class TraceAssembler:
    """Buffers spans per trace until their runs can be recorded (see the module doc)."""

    def __init__(
        self,
        *,
        tenant: str = "default",
        settle_s: float = 1.0,
        timeout_s: float = 30.0,
        remember_runs: int = 100_000,
    ) -> None:
        self.tenant = tenant
        self.settle_ns = int(settle_s * _NS_PER_S)
        self.timeout_ns = int(timeout_s * _NS_PER_S)
        self.remember_runs = remember_runs
        self._traces: dict[str, _Trace] = {}
        self._done: OrderedDict[str, None] = OrderedDict()
        self.unmapped: Counter[str] = Counter()
        self.received = 0
        self.mapped = 0

    @property
    def pending_spans(self) -> int:
        return sum(len(t.spans) for t in self._traces.values())

    def add(self, spans: Iterable[Span], now_ns: int) -> Counter[str]:
        """Buffer spans; return those known already to map to nothing, by reason."""
        rejected: Counter[str] = Counter()
        for span in spans:
            self.received += 1
            op = operation(span)
            trace = self._traces.setdefault(span.trace_id, _Trace())
            trace.last_seen = now_ns
            if span.span_id in trace.consumed or span.span_id in trace.spans:
                continue  # the same span again (an exporter retry): nothing new
            if op is None and span.parent_span_id is not None:
                # only a trace's root can stand for a run without being a GenAI span;
                # keep it for the ancestry of the spans under it
                trace.spans[span.span_id] = span
                rejected[NOT_GENAI] += 1
                continue
            if op is not None and not _mapped(op):
                trace.spans[span.span_id] = span
                rejected[_op_reason(op)] += 1
                continue
            parent_run = trace.consumed.get(span.parent_span_id or "")
            if parent_run is not None and op not in AGENT_OPS:
                trace.consumed[span.span_id] = parent_run
                rejected[LATE] += 1
                continue
            trace.spans[span.span_id] = span
        self.unmapped.update(rejected)
        return rejected

    def ready(self, now_ns: int, *, flush: bool = False) -> list[RunPlan]:
        """The runs that can be recorded now (``flush``: everything buffered)."""
        plans: list[RunPlan] = []
        for trace_id in list(self._traces):
            trace = self._traces[trace_id]
            quiet = now_ns - trace.last_seen
            if not flush and quiet < self.settle_ns:
                continue
            plans += self._runs(trace_id, trace, timed_out=flush or quiet >= self.timeout_ns)
            if not trace.spans and quiet >= 2 * self.timeout_ns:
                # forgotten a timeout after its last runs: a late span still finds them
                del self._traces[trace_id]
        return plans

    # -- internals

    def _root_of(self, trace: _Trace, span: Span) -> Span | None:
        """The span a span's run is rooted at; None while an ancestor is missing."""
        node = span
        seen = 0
        while True:
            if operation(node) in AGENT_OPS:
                return node
            parent = node.parent_span_id
            if parent is None:
                return node
            nxt = trace.spans.get(parent)
            if nxt is None:
                return None
            node = nxt
            seen += 1
            if seen > 10_000:  # a cycle in malformed input
                return None

    def _runs(self, trace_id: str, trace: _Trace, *, timed_out: bool) -> list[RunPlan]:
        groups: dict[str, list[Span]] = {}
        roots: dict[str, Span] = {}
        for span in trace.spans.values():
            op = operation(span)
            if not (op in MODEL_OPS or op in TOOL_OPS):
                continue
            root = self._root_of(trace, span)
            if root is None:
                if not timed_out:
                    continue
                root = self._topmost(trace, span)
            roots[root.span_id] = root
            groups.setdefault(root.span_id, []).append(span)
        for span in trace.spans.values():  # agents without mapped work are runs too
            if operation(span) in AGENT_OPS and span.span_id not in groups:
                roots[span.span_id] = span
                groups[span.span_id] = []
        plans = []
        for root_id, members in groups.items():
            root = roots[root_id]
            has_root = operation(root) in AGENT_OPS or root.parent_span_id is None
            if not has_root and not timed_out:
                continue
            plan = self._plan(trace_id, root, members, complete=has_root)
            if plan.run_id in self._done:
                self.unmapped[LATE] += len(members)
            else:
                plans.append(plan)
                self._remember(plan.run_id)
                self.mapped += plan.spans
            for span in [root, *members]:
                trace.consumed[span.span_id] = plan.run_id
                trace.spans.pop(span.span_id, None)
        if timed_out:  # what is left maps to nothing
            for span in list(trace.spans.values()):
                op = operation(span)
                if op is None and span.parent_span_id is None:
                    self.unmapped[NOT_GENAI] += 1  # a root without GenAI work under it
                trace.consumed[span.span_id] = ""
                trace.spans.pop(span.span_id)
        return plans

    def _topmost(self, trace: _Trace, span: Span) -> Span:
        node = span
        for _ in range(10_000):
            parent = trace.spans.get(node.parent_span_id or "")
            if parent is None:
                return node
            node = parent
        return node

    def _remember(self, run_id: str) -> None:
        self._done[run_id] = None
        while len(self._done) > self.remember_runs:
            self._done.popitem(last=False)

    def _plan(self, trace_id: str, root: Span, members: list[Span], *, complete: bool) -> RunPlan:
        agent = operation(root) in AGENT_OPS
        run_id = f"otel-{trace_id}-{root.span_id}" if agent or not complete else f"otel-{trace_id}"
        a, res = root.attributes, root.resource
        agent_id = (
            _str(a, "gen_ai.agent.id", "gen_ai.agent.name")
            or _str(res, "service.name")
            or "otel-agent"
        )
        labels = {"otel.trace_id": trace_id, "otel.span_id": root.span_id}
        for key in ("service.name", "service.version", "deployment.environment"):
            if isinstance(res.get(key), str):
                labels[key] = res[key]
        for key in ("gen_ai.agent.name", "gen_ai.conversation.id"):
            if isinstance(a.get(key), str):
                labels[key] = a[key]
        tenant = _str(res, "fleetledger.tenant") or _str(a, "fleetledger.tenant") or self.tenant
        actions = []
        for span in sorted(members, key=lambda s: (s.start_ns, s.end_ns, s.span_id)):
            op = operation(span)
            if op in TOOL_OPS:
                actions.append(Action(_ts(span.start_ns), "tool_call", tool_call_kwargs(span)))
            else:
                assert op is not None
                actions.append(Action(_ts(span.start_ns), "model_io", model_io_kwargs(span, op)))
        starts = [root.start_ns, *(s.start_ns for s in members)]
        ends = [root.end_ns, *(s.end_ns for s in members)]
        failed = None
        if complete and root.status_code == 2:
            failed = (_error_type(root), root.status_message)
        summary = None
        if not complete:
            summary = (
                f"trace {trace_id}: its root span was not received; "
                f"recorded from {len(members)} spans"
            )
        return RunPlan(
            run_id=run_id,
            agent_id=agent_id,
            tenant=tenant,
            started=_ts(min(starts)),
            ended=_ts(max(ends)),
            traceparent=f"00-{trace_id}-{root.span_id}-01",
            labels=labels,
            actions=actions,
            failed=failed,
            summary=summary,
            spans=len({root.span_id, *(s.span_id for s in members)}) if complete else len(members),
        )
