"""The real ``openai`` and ``anthropic`` clients, instrumented, against a local stub server.

No mocks of the clients: each call goes through the client's real HTTP path to the stub
(tests/llm_stub.py) on 127.0.0.1, which answers with API-shaped JSON and SSE streams.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from fleetledger.producers import (
    MemoryTransport,
    Recorder,
    RedactionPolicy,
    SyncRecorder,
    instrument,
    tool,
    tool_call,
    uninstrument,
)
from fleetledger.producers.pricing import library_version
from fleetledger.producers.redaction import EMAIL
from fleetledger.schemas import Codec, EventType, ModelIO, ToolCall, TraceEvent

from .llm_stub import ANTHROPIC_USAGE, OPENAI_USAGE, TEXT, LLMStub
from .test_pricing import library_total
from .test_producer import counter_ids

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the answer?"}]
CLAUDE_MESSAGES: list[MessageParam] = [{"role": "user", "content": "What is the answer?"}]
ANSWER = "".join(TEXT)


@pytest.fixture(scope="module")
def stub() -> Iterator[LLMStub]:
    server = LLMStub()
    yield server
    server.close()


def oai(stub: LLMStub) -> openai.OpenAI:
    return instrument(openai.OpenAI(base_url=stub.base_url, api_key="sk-secret", max_retries=0))


def aoai(stub: LLMStub) -> openai.AsyncOpenAI:
    return instrument(
        openai.AsyncOpenAI(base_url=stub.base_url, api_key="sk-secret", max_retries=0)
    )


def claude(stub: LLMStub) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=stub.anthropic_url, api_key="sk-ant", max_retries=0)
    return instrument(client)


def aclaude(stub: LLMStub) -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(base_url=stub.anthropic_url, api_key="sk-ant", max_retries=0)
    return instrument(client)


def recorder(transport: MemoryTransport, **kwargs: Any) -> Recorder:
    return Recorder(transport, ids=counter_ids(), producer_id="instr", **kwargs)


def model_events(transport: MemoryTransport) -> list[TraceEvent]:
    codec = Codec()
    events = [e for _, v in transport.messages for e in codec.decode(v)]
    return [e for e in events if e.type is EventType.MODEL_IO]


def check_openai(event: TraceEvent, model: str, served: str, *, usage: bool = True) -> ModelIO:
    p = event.payload
    assert isinstance(p, ModelIO)
    assert (p.gen_ai_provider_name, p.gen_ai_request_model) == ("openai", model)
    assert p.gen_ai_response_model == served
    assert p.outcome == "success" and p.error_type is None
    assert p.inputs is not None and json.loads(p.inputs)["model"] == model
    assert p.prompt_hash == "sha256:" + hashlib.sha256(p.inputs.encode()).hexdigest()
    assert p.outputs is not None and ANSWER in p.outputs
    assert p.response_hash == "sha256:" + hashlib.sha256(p.outputs.encode()).hexdigest()
    if usage:
        assert p.gen_ai_usage_input_tokens == OPENAI_USAGE["prompt"]
        assert p.gen_ai_usage_output_tokens == OPENAI_USAGE["completion"]
        assert p.gen_ai_usage_cache_read_input_tokens == OPENAI_USAGE["cached"]
        assert p.cache == "hit"
        from fleetledger.producers.pricing import TokenUsage

        tokens = TokenUsage(
            OPENAI_USAGE["prompt"], OPENAI_USAGE["completion"], OPENAI_USAGE["cached"]
        )
        assert p.cost.amount == library_total("openai", served, tokens, event.ts) > 0
        assert (p.cost.source, p.cost.price_data) == ("local", library_version())
    return p


def check_anthropic(event: TraceEvent, model: str, served: str) -> ModelIO:
    p = event.payload
    assert isinstance(p, ModelIO)
    assert (p.gen_ai_provider_name, p.gen_ai_request_model) == ("anthropic", model)
    assert p.gen_ai_response_model == served and p.outcome == "success"
    total_input = ANTHROPIC_USAGE["input"] + ANTHROPIC_USAGE["cache_read"]
    total_input += ANTHROPIC_USAGE["cache_write"]
    assert p.gen_ai_usage_input_tokens == total_input  # OpenTelemetry counts them all
    assert p.gen_ai_usage_output_tokens == ANTHROPIC_USAGE["output"]
    assert p.gen_ai_usage_cache_read_input_tokens == ANTHROPIC_USAGE["cache_read"]
    assert p.gen_ai_usage_cache_creation_input_tokens == ANTHROPIC_USAGE["cache_write"]
    assert p.outputs is not None and ANSWER in p.outputs
    from fleetledger.producers.pricing import TokenUsage

    tokens = TokenUsage(
        total_input,
        ANTHROPIC_USAGE["output"],
        ANTHROPIC_USAGE["cache_read"],
        ANTHROPIC_USAGE["cache_write"],
    )
    assert p.cost.amount == library_total("anthropic", served, tokens, event.ts) > 0
    return p


# --------------------------------------------------------------------------- openai


async def test_openai_sync_client_chat_responses_streams_and_errors(stub: LLMStub) -> None:
    client = oai(stub)
    transport = MemoryTransport()
    async with recorder(transport) as rec, rec.run(agent_id="oai") as run:
        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert reply.choices[0].message.content == ANSWER
        chunks = client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
        plain = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        assert len(list(plain)) == len(TEXT) + 1
        resp = client.responses.create(model="gpt-4o", input="What is the answer?")
        assert resp.output_text == ANSWER
        with client.responses.stream(model="gpt-4o", input="What is the answer?") as stream:
            for _ in stream:
                pass
            assert stream.get_final_response().output_text == ANSWER
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
        assert raw.parse().choices[0].message.content == ANSWER
        with pytest.raises(openai.RateLimitError) as info:
            client.with_options(timeout=5).chat.completions.create(
                model="error-429", messages=MESSAGES
            )
        assert info.value.status_code == 429  # the client's own exception, unchanged
        embedding = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        assert len(embedding.data) == 2
        client.models  # a resource that is not a model call  # noqa: B018
    events = model_events(transport)
    assert len(events) == 8
    assert {e.run_id for e in events} == {run.run_id}
    assert {e.step_id for e in events} == {"implicit"}
    check_openai(events[0], "gpt-4o", "gpt-4o-2024-08-06")
    check_openai(events[1], "gpt-4o", "gpt-4o-2024-08-06")  # streamed, usage included
    unknown = check_openai(events[2], "gpt-4o-mini", "gpt-4o-mini-2024-07-18", usage=False)
    assert unknown.gen_ai_usage_input_tokens == 0 and unknown.cost.source == "unpriced"
    check_openai(events[3], "gpt-4o", "gpt-4o-2024-08-06")  # responses
    check_openai(events[4], "gpt-4o", "gpt-4o-2024-08-06")  # responses stream helper
    check_openai(events[5], "gpt-4o", "gpt-4o-2024-08-06")  # with_raw_response
    error = events[6].payload
    assert isinstance(error, ModelIO)
    assert (error.outcome, error.error_type) == ("error", "RateLimitError")
    assert error.gen_ai_usage_input_tokens == 0 and error.outputs is None
    emb = events[7].payload
    assert isinstance(emb, ModelIO)
    assert (emb.gen_ai_usage_input_tokens, emb.gen_ai_usage_output_tokens) == (12, 0)
    assert json.loads(emb.outputs or "{}")["embeddings"] == 2  # not the vectors
    raw_bytes = b"".join(v for _, v in transport.messages)
    assert b"sk-secret" not in raw_bytes


async def test_openai_async_client(stub: LLMStub) -> None:
    client = aoai(stub)
    transport = MemoryTransport()
    async with recorder(transport) as rec, rec.run(agent_id="aoai"):
        reply = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert reply.choices[0].message.content == ANSWER
        stream: openai.AsyncStream[Any] = await client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == (
            ANSWER
        )
        async with client.responses.stream(model="gpt-4o", input="q") as response_events:
            async for _ in response_events:
                pass
        with pytest.raises(openai.InternalServerError):
            await client.responses.create(model="error-500", input="q")
    events = model_events(transport)
    assert len(events) == 4
    for event in events[:3]:
        check_openai(event, "gpt-4o", "gpt-4o-2024-08-06")
    assert events[3].payload.error_type == "InternalServerError"  # type: ignore[union-attr]


# ------------------------------------------------------------------------ anthropic


async def test_anthropic_sync_and_async_clients(stub: LLMStub) -> None:
    sync_client, async_client = claude(stub), aclaude(stub)
    transport = MemoryTransport()
    kw: dict[str, Any] = {"max_tokens": 100, "messages": CLAUDE_MESSAGES}
    async with recorder(transport) as rec, rec.run(agent_id="claude"):
        message = sync_client.messages.create(model="claude-sonnet-4-5", **kw)
        assert message.content[0].text == ANSWER
        events = sync_client.messages.create(model="claude-sonnet-4-5", stream=True, **kw)
        assert len(list(events)) == 5 + len(TEXT)
        with sync_client.messages.stream(model="claude-sonnet-4-5", **kw) as helper:
            assert "".join(helper.text_stream) == ANSWER
        message = await async_client.messages.create(model="claude-haiku-4-5", **kw)
        assert message.content[0].text == ANSWER
        async with async_client.messages.stream(model="claude-haiku-4-5", **kw) as ahelper:
            assert "".join([t async for t in ahelper.text_stream]) == ANSWER
        with pytest.raises(anthropic.RateLimitError):
            sync_client.messages.create(model="error-429", **kw)
    recorded = model_events(transport)
    assert len(recorded) == 6
    for event in recorded[:3]:
        check_anthropic(event, "claude-sonnet-4-5", "claude-sonnet-4-5-20250929")
    for event in recorded[3:5]:
        check_anthropic(event, "claude-haiku-4-5", "claude-haiku-4-5-20251001")
    error = recorded[5].payload
    assert (error.outcome, error.error_type) == ("error", "RateLimitError")  # type: ignore[union-attr]


# ------------------------------------------------------------------ attribution etc.


async def test_outside_a_run_calls_pass_through_unrecorded(stub: LLMStub) -> None:
    client = oai(stub)
    before = len(stub.requests)
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices
    transport = MemoryTransport()
    async with recorder(transport):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # no run
    assert len(stub.requests) == before + 2 and model_events(transport) == []
    uninstrument(client)
    transport = MemoryTransport()
    async with recorder(transport) as rec, rec.run(agent_id="x"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert model_events(transport) == []


async def test_concurrent_agents_steps_and_event_order(stub: LLMStub) -> None:
    client, blocking = aoai(stub), oai(stub)
    transport = MemoryTransport()
    async with recorder(transport) as rec:

        async def agent(name: str) -> str:
            async with rec.run(agent_id=name) as run:
                async with run.step("think"):
                    await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
                    await asyncio.sleep(0)
                # a blocking client inside async code: recorded before what follows it
                blocking.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                await run.tool_call(name=f"after-{name}", duration_ms=1)
                return run.run_id

        ids = await asyncio.gather(*(agent(f"agent-{i}") for i in range(4)))
    codec = Codec()
    events = [e for _, v in transport.messages for e in codec.decode(v)]
    for run_id in ids:
        mine = [e for e in events if e.run_id == run_id]
        kinds = [(e.type.value, e.step_id) for e in mine]
        assert kinds == [
            ("run_started", None),
            ("step_started", "think"),
            ("model_io", "think"),
            ("step_completed", "think"),
            ("step_started", "implicit"),
            ("model_io", "implicit"),
            ("tool_call", "implicit"),
            ("step_completed", "implicit"),
            ("run_completed", None),
        ]
        assert mine[6].payload.gen_ai_tool_name == f"after-{mine[0].agent_id}"  # type: ignore[union-attr]


def test_sync_recorder_and_a_sync_client_in_the_agents_thread(stub: LLMStub) -> None:
    client = oai(stub)
    transport = MemoryTransport()
    with SyncRecorder(transport) as rec, rec.run(agent_id="sync") as run, run.step("s"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        for _ in stream:
            pass
    events = model_events(transport)
    assert [e.step_id for e in events] == ["s", "s"]
    for event in events:
        check_openai(event, "gpt-4o", "gpt-4o-2024-08-06")


async def test_a_stream_closed_early_is_recorded_once(stub: LLMStub) -> None:
    client = oai(stub)
    transport = MemoryTransport()
    async with recorder(transport) as rec, rec.run(agent_id="early"):
        stream: openai.Stream[Any] = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        )
        first = next(iter(stream))
        assert first.choices[0].delta.content == TEXT[0]
        stream.close()
        stream.close()
        abandoned: openai.Stream[Any] = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        )
        next(iter(abandoned))
        del abandoned
        gc.collect()
    events = model_events(transport)
    assert len(events) == 2
    outputs = json.loads(events[0].payload.outputs or "{}")  # type: ignore[union-attr]
    assert outputs["choices"][0]["message"]["content"] == TEXT[0]


async def test_redaction_applies_to_instrumented_calls(stub: LLMStub) -> None:
    client = oai(stub)
    transport = MemoryTransport()
    policy = RedactionPolicy(values=(EMAIL,))
    async with recorder(transport, redaction=policy) as rec, rec.run(agent_id="pii"):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "mail ana@acme.io"}]
        )
    [event] = model_events(transport)
    p = event.payload
    assert isinstance(p, ModelIO)
    assert "ana@acme.io" not in (p.inputs or "")
    assert p.redactions == ("inputs/messages/0/content",)
    # the provider got the real request
    assert stub.requests[-1][1]["messages"][0]["content"] == "mail ana@acme.io"


# ------------------------------------------------------------------------------ tools


@tool
def lookup(order_id: int, *, verbose: bool = False) -> dict[str, Any]:
    return {"order": order_id, "status": "shipped"}


@tool(name="web_search")
async def search(query: str) -> list[str]:
    await asyncio.sleep(0)
    if query == "boom":
        raise TimeoutError("search timed out")
    return [f"result for {query}"]


async def test_tool_decorator_and_context_manager() -> None:
    assert lookup(7) == {"order": 7, "status": "shipped"}  # outside a run: just runs
    transport = MemoryTransport()
    async with recorder(transport) as rec, rec.run(agent_id="tools") as run, run.step("act"):
        assert lookup(7, verbose=True)["status"] == "shipped"
        assert await search("fleet") == ["result for fleet"]
        with pytest.raises(TimeoutError, match="timed out"):
            await search("boom")
        with tool_call("db", inputs={"sql": "select 1"}, call_id="call-9") as call:
            call.outputs = {"rows": 1}
        async with tool_call("cache") as acall:
            acall.outputs = "hit"
    codec = Codec()
    tools = [
        e.payload
        for _, v in transport.messages
        for e in codec.decode(v)
        if e.type is EventType.TOOL_CALL
    ]
    assert all(isinstance(t, ToolCall) for t in tools)
    names = [t.gen_ai_tool_name for t in tools]  # type: ignore[union-attr]
    assert names == ["lookup", "web_search", "web_search", "db", "cache"]
    first, ok, failed, db, cache = tools
    assert json.loads(first.inputs) == {"order_id": 7, "verbose": True}  # type: ignore[union-attr,arg-type]
    assert json.loads(first.outputs) == {"order": 7, "status": "shipped"}  # type: ignore[union-attr,arg-type]
    assert json.loads(ok.outputs) == ["result for fleet"]  # type: ignore[union-attr,arg-type]
    assert (failed.outcome, failed.error_type, failed.outputs) == ("error", "TimeoutError", None)  # type: ignore[union-attr]
    assert db.gen_ai_tool_call_id == "call-9" and db.outputs == '{"rows":1}'  # type: ignore[union-attr]
    assert cache.outputs == "hit"  # type: ignore[union-attr]
    assert run.status == "completed"
