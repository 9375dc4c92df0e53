"""The OTLP/HTTP receiver fed by the real opentelemetry-sdk and its OTLP/HTTP exporter.

Spans carry GenAI attributes as the semantic conventions say; the receiver records them
into the embedded store, the embedded runtime processes them, and the bundles are checked
field by field.  The same spans sent as OTLP/JSON give the same events, byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from fleetledger.kernel.errors import ConfigError
from fleetledger.processors.core import CoreConfig
from fleetledger.processors.evidence import verify_bundle_bytes
from fleetledger.processors.runtimes.embedded import EmbeddedReader, EmbeddedRuntime
from fleetledger.producers import MemoryTransport, Recorder
from fleetledger.producers.otlp.decode import Span
from fleetledger.producers.otlp.mapping import LATE, NOT_GENAI, TraceAssembler
from fleetledger.producers.otlp.receiver import OtlpReceiver
from fleetledger.producers.pricing import TokenUsage, library_version
from fleetledger.schemas import Codec

from .test_pricing import library_total

INPUT = [{"role": "user", "parts": [{"type": "text", "content": "Where is order 7?"}]}]
OUTPUT = [{"role": "assistant", "parts": [{"type": "text", "content": "It shipped."}]}]


def make_spans(provider: TracerProvider) -> None:
    """A support agent (one invoke_agent span with a chat, a tool, a failing chat and an
    HTTP span under it), a bare chat under an HTTP server span, and a trace with no GenAI."""
    tracer = provider.get_tracer("support-app")
    with tracer.start_as_current_span(
        "invoke_agent support",
        kind=SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.id": "support-agent",
            "gen_ai.agent.name": "Support",
            "gen_ai.conversation.id": "conv-42",
        },
    ):
        with tracer.start_as_current_span(
            "chat gpt-4o",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 85,
                "gen_ai.usage.cache_read.input_tokens": 400,
                "gen_ai.input.messages": json.dumps(INPUT),
                "gen_ai.output.messages": json.dumps(OUTPUT),
            },
        ):
            time.sleep(0.002)
        with (
            tracer.start_as_current_span(
                "execute_tool lookup_order",
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "lookup_order",
                    "gen_ai.tool.call.id": "call_7",
                    "gen_ai.tool.call.arguments": '{"order_id": 7}',
                    "gen_ai.tool.call.result": '{"status": "shipped"}',
                },
            ),
            tracer.start_as_current_span("GET /orders/7", kind=SpanKind.CLIENT),
        ):
            pass
        with tracer.start_as_current_span(
            "chat claude-haiku-4-5",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": "claude-haiku-4-5",
                "error.type": "OverloadedError",
            },
        ) as failing:
            failing.set_status(Status(StatusCode.ERROR, "overloaded"))
    house: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "vllm",  # the older attribute name
        "gen_ai.request.model": "house-llm",
        "gen_ai.usage.prompt_tokens": 50,
        "gen_ai.usage.completion_tokens": 5,
    }
    with (
        tracer.start_as_current_span("POST /ask", kind=SpanKind.SERVER),  # no agent span
        tracer.start_as_current_span("chat house-llm", attributes=house),
    ):
        pass
    with tracer.start_as_current_span("healthcheck"):  # nothing GenAI in this trace
        pass


def provider_with(exporter: Any) -> TracerProvider:
    provider = TracerProvider(resource=Resource({"service.name": "support-app"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def wait_for(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def decoded_events(transport: MemoryTransport) -> list[Any]:
    codec = Codec()
    return [e for _, v in transport.messages for e in codec.decode(v)]


async def test_real_otlp_exporter_to_bundles(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    rec = Recorder.from_url(f"sqlite:///{db}")
    receiver = OtlpReceiver(rec, port=0, settle_s=0.2, timeout_s=2.0)
    await receiver.start()
    try:
        provider = provider_with(OTLPSpanExporter(endpoint=receiver.url, timeout=10))
        await asyncio.to_thread(make_spans, provider)
        await asyncio.to_thread(provider.shutdown)
        await wait_for(lambda: receiver.runs_recorded >= 2)
        stats = receiver.stats()
    finally:
        await receiver.stop()
        await rec.close()
    # the HTTP client span under the tool is no GenAI span; the healthcheck trace's root
    # is counted once its trace times out (at stop here)
    assert receiver.stats()["spans_unmapped"] == {NOT_GENAI: 2}
    assert stats["runs_recorded"] == 2 and stats["spans_mapped"] == 6

    with EmbeddedRuntime(db, Codec(), CoreConfig()) as runtime:
        runtime.process_available()
    with EmbeddedReader(db) as reader:
        stored = list(reader.bundles())
    bundles = {b.run_id: json.loads(b.data) for b in stored}
    for b in stored:
        assert verify_bundle_bytes(b.data).run_id == b.run_id
    assert len(bundles) == 2
    agent = next(b for b in bundles.values() if b["run"]["agent_id"] == "support-agent")
    bare = next(b for b in bundles.values() if b is not agent)

    run = agent["run"]
    trace_id, span_id = run["labels"]["otel.trace_id"], run["labels"]["otel.span_id"]
    assert run["run_id"] == f"otel-{trace_id}-{span_id}"
    assert run["tenant"] == "default" and run["status"] == "completed"
    assert run["labels"]["service.name"] == "support-app"
    assert run["labels"]["gen_ai.conversation.id"] == "conv-42"
    assert agent["workflow"]["implicit"] is True
    events = [e["event"] for e in agent["events"]]
    assert [(e["type"], e.get("step_id")) for e in events] == [
        ("run_started", None),
        ("step_started", "implicit"),
        ("model_io", "implicit"),
        ("tool_call", "implicit"),
        ("model_io", "implicit"),
        ("step_completed", "implicit"),
        ("run_completed", None),
    ]
    assert {e["producer_id"] for e in events} == {"fleetledger-otlp"}
    assert all(e["traceparent"] == f"00-{trace_id}-{span_id}-01" for e in events)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    chat = events[2]["payload"]
    assert (chat["gen_ai_provider_name"], chat["gen_ai_request_model"]) == ("openai", "gpt-4o")
    assert chat["gen_ai_response_model"] == "gpt-4o-2024-08-06"
    assert (chat["gen_ai_usage_input_tokens"], chat["gen_ai_usage_output_tokens"]) == (1200, 85)
    assert chat["gen_ai_usage_cache_read_input_tokens"] == 400 and chat["cache"] == "hit"
    assert json.loads(chat["inputs"]) == {"messages": INPUT}
    assert json.loads(chat["outputs"]) == {"messages": OUTPUT}
    assert chat["outcome"] == "success" and chat["duration_ms"] >= 2
    ts = datetime.fromisoformat(events[2]["ts"])
    expected = library_total("openai", "gpt-4o-2024-08-06", TokenUsage(1200, 85, 400), ts)
    assert chat["cost"] == {
        "amount": str(expected.normalize()),
        "currency": "USD",
        "source": "local",
        "price_data": library_version(),
        "priced_model": "gpt-4o",
    }
    tool = events[3]["payload"]
    assert (tool["gen_ai_tool_name"], tool["gen_ai_tool_call_id"]) == ("lookup_order", "call_7")
    assert json.loads(tool["inputs"]) == {"order_id": 7}
    assert json.loads(tool["outputs"]) == {"status": "shipped"}
    failed = events[4]["payload"]
    assert (failed["outcome"], failed["error_type"]) == ("error", "OverloadedError")
    assert failed["cost"]["source"] == "unpriced"  # no usage on the span
    assert failed["prompt_hash"].startswith("sha256:")
    assert agent["totals"]["outcomes"] == {
        "model_io.error": 1,
        "model_io.success": 1,
        "step.success": 1,
        "tool_call.success": 1,
    }

    assert bare["run"]["run_id"] == f"otel-{bare['run']['labels']['otel.trace_id']}"
    assert bare["run"]["agent_id"] == "support-app"  # no agent span: the service
    [house] = [e["event"]["payload"] for e in bare["events"] if e["event"]["type"] == "model_io"]
    assert (house["gen_ai_provider_name"], house["gen_ai_usage_input_tokens"]) == ("vllm", 50)
    assert house["cost"]["source"] == "unpriced"
    assert bare["totals"]["unpriced"] == {"calls": 1, "by_model": {"vllm/house-llm": 1}}
    assert [i["kind"] for i in bare["intercepts"]] == ["unpriced_model"]


def otlp_json(spans: list[ReadableSpan]) -> bytes:
    """The OTLP/JSON encoding: the protobuf JSON mapping with hex trace and span ids."""
    data = MessageToDict(encode_spans(spans))

    def hexify(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {
                k: base64.b64decode(v).hex()
                if k in ("traceId", "spanId", "parentSpanId")
                else hexify(v)
                for k, v in obj.items()
            }
        if isinstance(obj, list):
            return [hexify(x) for x in obj]
        return obj

    return json.dumps(hexify(data)).encode()


async def test_json_and_protobuf_give_the_same_events_and_tokens_are_checked() -> None:
    memory = InMemorySpanExporter()
    await asyncio.to_thread(make_spans, provider_with(memory))
    spans = list(memory.get_finished_spans())
    results = {}
    for mime, body in (
        ("application/x-protobuf", encode_spans(spans).SerializeToString()),
        ("application/json", otlp_json(spans)),
    ):
        transport = MemoryTransport()
        rec = Recorder(transport)
        receiver = OtlpReceiver(rec, port=0, settle_s=0.0, token="s3cret")
        await receiver.start()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    receiver.url, data=body, headers={"Content-Type": mime}
                ) as unauthorized:
                    assert unauthorized.status == 401
                headers = {"Content-Type": mime, "Authorization": "Bearer s3cret"}
                async with http.post(receiver.url, data=body, headers=headers) as reply:
                    assert reply.status == 200
                    answer = await reply.read()
                async with http.post(receiver.url, data=b"\x00junk", headers=headers) as bad:
                    assert bad.status == 400
                async with http.get(receiver.url.replace("traces", "stats"), headers=headers) as s:
                    assert (await s.json())["runs_recorded"] == 2
        finally:
            await receiver.stop()
            await rec.close()
        if mime == "application/json":
            partial = json.loads(answer)["partialSuccess"]
            assert partial["rejectedSpans"] == "1" and NOT_GENAI in partial["errorMessage"]
        results[mime] = [v for _, v in transport.messages]
    assert results["application/json"] == results["application/x-protobuf"]


def test_a_receiver_off_loopback_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="token"):
        OtlpReceiver(Recorder(MemoryTransport()), host="0.0.0.0")
    OtlpReceiver(Recorder(MemoryTransport()), host="0.0.0.0", token="t")  # not started


# ------------------------------------------------------------------ the assembler alone


def span(sid: str, parent: str | None, start: int, end: int, **attrs: Any) -> Span:
    return Span("ab" * 16, sid * 8, parent * 8 if parent else None, sid, 1, start, end, attrs)


def test_rootless_traces_late_spans_and_retries_are_accounted_for() -> None:
    assembler = TraceAssembler(settle_s=1, timeout_s=10)
    s = 1_000_000_000
    chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    # a chat whose parent (in another service) never arrives
    assembler.add([span("02", "01", 1 * s, 2 * s, **chat)], now_ns=3 * s)
    assert assembler.ready(3 * s) == [] and assembler.ready(5 * s) == []
    [plan] = assembler.ready(14 * s)  # timed out: rooted at its topmost known span
    assert plan.run_id == f"otel-{'ab' * 16}-{'02' * 8}"
    assert plan.summary is not None and "not received" in plan.summary
    # the same span again (an exporter retry), and a child arriving after the run
    rejected = assembler.add(
        [span("02", "01", 1 * s, 2 * s, **chat), span("03", "02", 1 * s, 2 * s, **chat)],
        now_ns=15 * s,
    )
    assert rejected == {LATE: 1}
    assert assembler.ready(30 * s) == []
    # an unknown operation is reported with its name
    rejected = assembler.add(
        [span("09", None, s, s, **{"gen_ai.operation.name": "create_agent"})], now_ns=31 * s
    )
    assert list(rejected) == ["GenAI operation 'create_agent' has no fleetledger event"]
    assert assembler.received == 4
