"""Replay with the REAL openai and anthropic clients: answered from the recording, never
from the network (the clients point at a server that fails the test if called)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from fleetledger.kernel.errors import RecordingRefusedError, ReplayMissError
from fleetledger.processors.runtimes.replay import (
    LABEL_HEAD,
    LABEL_OF,
    REPORT_ARTIFACT,
    load_recording,
    replay,
)
from fleetledger.producers import MemoryTransport, Recorder, Run, instrument, tool
from fleetledger.producers.replay import REPLAY_PRICE_DATA

from .llm_stub import LLMStub
from .replay_fixtures import Tripwire, bundles_of, record

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the answer?"}]
CLAUDE: list[MessageParam] = [{"role": "user", "content": "What is the answer?"}]


@pytest.fixture(scope="module")
def stub() -> Iterator[LLMStub]:
    server = LLMStub()
    yield server
    server.close()


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    server = Tripwire()
    yield server
    server.close()


class Clients:
    def __init__(self, openai_url: str, anthropic_url: str) -> None:
        kw: dict[str, Any] = {"api_key": "sk-test", "max_retries": 0}
        self.oai = instrument(openai.OpenAI(base_url=openai_url, **kw))
        self.aoai = instrument(openai.AsyncOpenAI(base_url=openai_url, **kw))
        self.claude = instrument(anthropic.Anthropic(base_url=anthropic_url, **kw))
        self.aclaude = instrument(anthropic.AsyncAnthropic(base_url=anthropic_url, **kw))


@tool
def lookup(order_id: int) -> dict[str, Any]:
    return {"order_id": order_id, "status": "shipped"}


def make_agent(c: Clients, answers: list[Any]) -> Any:
    """One agent, every client flavour: sync, async, streamed, raw, failing, tools."""

    async def agent(run: Run) -> None:
        async with run.step("openai"):
            r = c.oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            answers.append(r.choices[0].message.content)
            chunks = c.oai.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            parts = [ch for ch in chunks]
            answers.append("".join(ch.choices[0].delta.content or "" for ch in parts if ch.choices))
            answers.append(parts[-1].usage.total_tokens if parts[-1].usage else None)
            resp = c.oai.responses.create(model="gpt-4o", input="What is the answer?")
            answers.append(resp.output_text)
            with c.oai.responses.stream(model="gpt-4o", input="And again?") as stream:
                for _ in stream:
                    pass
                answers.append(stream.get_final_response().output_text)
            raw = c.oai.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MESSAGES
            )
            answers.append(raw.parse().choices[0].message.content)
            try:
                c.oai.chat.completions.create(model="error-429", messages=MESSAGES)
            except openai.RateLimitError as exc:
                answers.append(f"rate limited {exc.status_code}")
            a = await c.aoai.chat.completions.create(model="gpt-4o", messages=MESSAGES, n=1)
            answers.append(a.choices[0].message.content)
        async with run.step("anthropic"):
            kw: dict[str, Any] = {"max_tokens": 100, "messages": CLAUDE}
            m = c.claude.messages.create(model="claude-sonnet-4-5", **kw)
            answers.append(m.content[0].text)
            answers.append(m.usage.cache_read_input_tokens)
            with c.claude.messages.stream(model="claude-sonnet-4-5", **kw) as s:
                answers.append("".join(s.text_stream))
            am = await c.aclaude.messages.create(model="claude-haiku-4-5", **kw)
            answers.append(am.content[0].text)
            answers.append(lookup(4711))

    return agent


async def _recorded(stub: LLMStub, folder: Path) -> tuple[Path, list[Any]]:
    answers: list[Any] = []
    agent = make_agent(Clients(stub.base_url, stub.anthropic_url), answers)

    async def body(rec: Recorder) -> None:
        async with rec.run(agent_id="support-bot", run_id="rec-1", labels={"ticket": "7"}) as r:
            await agent(r)

    paths = await record(body, folder)
    return paths["rec-1"], answers


async def test_a_replay_answers_every_client_call_from_the_recording(
    stub: LLMStub, tripwire: Tripwire, tmp_path: Path
) -> None:
    path, original = await _recorded(stub, tmp_path)
    calls_before = len(stub.requests)
    answers: list[Any] = []
    agent = make_agent(Clients(tripwire.base_url, tripwire.base_url.removesuffix("/v1")), answers)
    transport = MemoryTransport()
    async with Recorder(transport, linger_ms=None) as rec:
        result = await replay(load_recording(path), agent, recorder=rec, run_id="rp-1")
    assert tripwire.hits == [] and len(stub.requests) == calls_before  # no network at all
    assert answers == original  # the same values, of the same client types
    report = result.report
    assert report.ok and report.match_rate == Decimal(100), report.divergences
    assert report.served == 11 and report.live == 0  # 10 model calls, 1 tool call
    assert report.original_cost > 0 and report.replay_cost == 0
    assert report.savings == report.original_cost
    # the replay is itself a run, linked to the recording's chain head
    bundle = json.loads(bundles_of(transport)["rp-1"])
    original_bundle = json.loads(path.read_bytes())
    assert bundle["run"]["labels"][LABEL_OF] == "rec-1"
    assert bundle["run"]["labels"][LABEL_HEAD] == original_bundle["chain"]["head"]
    assert bundle["run"]["labels"]["ticket"] == "7"
    model_calls = [
        e["event"]["payload"] for e in bundle["events"] if e["event"]["type"] == "model_io"
    ]
    assert {p["cost"]["amount"] for p in model_calls} == {"0"}
    assert {p["cost"]["price_data"] for p in model_calls} == {REPLAY_PRICE_DATA}
    assert {p["cache"] for p in model_calls} == {"hit"}
    recorded_calls = [
        e["event"]["payload"] for e in original_bundle["events"] if e["event"]["type"] == "model_io"
    ]
    assert [p["gen_ai_usage_input_tokens"] for p in model_calls] == [
        p["gen_ai_usage_input_tokens"] for p in recorded_calls
    ]
    (artifact,) = bundle["artifacts"]
    assert artifact["key"] == REPORT_ARTIFACT
    assert artifact["versions"][0]["state"] == "verified"
    assert artifact["versions"][0]["validation"]["passed"] is True


async def test_a_changed_request_fails_closed_naming_key_nearest_and_diff(
    stub: LLMStub, tripwire: Tripwire, tmp_path: Path
) -> None:
    path, _ = await _recorded(stub, tmp_path)
    client = instrument(openai.OpenAI(base_url=tripwire.base_url, api_key="k", max_retries=0))
    seen: list[BaseException] = []

    async def changed(run: Run) -> None:
        async with run.step("openai"):
            try:
                client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "What is the question?"}]
                )
            except ReplayMissError as exc:
                seen.append(exc)
                raise

    async with Recorder(MemoryTransport(), linger_ms=None) as rec:
        result = await replay(load_recording(path), changed, recorder=rec)
    assert tripwire.hits == []
    (err,) = seen
    assert isinstance(err, ReplayMissError)
    assert err.key.startswith("sha256:") and err.nearest is not None
    assert err.nearest["seq"] == 2 and err.nearest["label"] == "model_io openai/gpt-4o"
    assert err.diff == [
        {
            "pointer": "/payload/inputs/messages/0/content",
            "kind": "changed",
            "before": "What is the answer?",
            "after": "What is the question?",
        }
    ]
    assert result.status == "failed" and result.report.stopped == str(err)
    assert [d.kind for d in result.report.divergences] == ["input_mismatch"]


async def test_live_calls_for_misses_are_recorded_and_priced(stub: LLMStub, tmp_path: Path) -> None:
    path, _ = await _recorded(stub, tmp_path)
    client = instrument(openai.OpenAI(base_url=stub.base_url, api_key="k", max_retries=0))

    async def one_more(run: Run) -> None:
        async with run.step("openai"):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # served
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "new question"}]
            )  # live

    before = len(stub.requests)
    async with Recorder(MemoryTransport(), linger_ms=None) as rec:
        result = await replay(load_recording(path), one_more, recorder=rec, allow_live=True)
    assert len(stub.requests) == before + 1
    report = result.report
    assert report.live == 1 and report.served == 1
    assert report.replay_cost > 0  # the live call, priced as live
    assert "input_mismatch" in report.counts()


async def test_a_tampered_recording_is_refused(stub: LLMStub, tmp_path: Path) -> None:
    path, _ = await _recorded(stub, tmp_path)
    data = json.loads(path.read_bytes())
    data["events"][2]["event"]["payload"]["outputs"] = '{"choices":[]}'
    tampered = tmp_path / "tampered.bundle.json"
    from fleetledger.processors.canonical import canonical_bytes

    tampered.write_bytes(canonical_bytes(data))
    with pytest.raises(RecordingRefusedError, match=r"refused: digest"):
        load_recording(tampered)
    with pytest.raises(RecordingRefusedError, match="refused: signature"):
        load_recording(path, require_signature=True)
