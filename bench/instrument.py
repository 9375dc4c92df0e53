"""Measurement: the SDK's overhead per recorded model call.

The real ``openai`` and ``anthropic`` clients call the local stub server
(``tests/llm_stub.py``, 127.0.0.1) - the same server, in the same process, in the same
repetition, for both sides:

* **bare**: a client that is not instrumented;
* **instrumented**: a client of the same class after ``instrument(client)``, each call
  made inside a run of a recorder writing to the embedded SQLite log (the default
  transport), with the default redaction policy and pricing.

Per repetition the two sides are called in turn, call by call (after a warm-up of both),
and each side's figure is the median of its per-call times, which a busy shared machine
disturbs least.  The figure is the
instrumented per-call time with the bare one as its baseline (ratio = instrumented /
bare), and the difference per call (the overhead itself).  Variants: OpenAI chat
completions with the sync client and a ``SyncRecorder``; OpenAI chat streamed (usage
included) with the async client and a ``Recorder``; Anthropic messages with the async
client and a ``Recorder``.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anthropic
import openai

from fleetledger.producers import Recorder, SyncRecorder, instrument

from .common import Figure, Sizes, log

from tests.llm_stub import LLMStub  # isort: skip  (bench.common puts the repo on sys.path)

_MESSAGES: list[Any] = [{"role": "user", "content": "Where is my order 4711?"}]


def _alternate(
    n: int, bare: Callable[[], None], recorded: Callable[[], None]
) -> tuple[float, float]:
    """Median per-call seconds of each side, the two sides called in turn ``n`` times."""
    times: dict[str, list[float]] = {"bare": [], "recorded": []}
    for i in range(2 * n):
        name, fn = ("bare", bare) if i % 2 == 0 else ("recorded", recorded)
        t0 = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - t0)
    return statistics.median(times["bare"]), statistics.median(times["recorded"])


async def _aalternate(
    n: int, bare: Callable[[], Awaitable[None]], recorded: Callable[[], Awaitable[None]]
) -> tuple[float, float]:
    times: dict[str, list[float]] = {"bare": [], "recorded": []}
    for i in range(2 * n):
        name, fn = ("bare", bare) if i % 2 == 0 else ("recorded", recorded)
        t0 = time.perf_counter()
        await fn()
        times[name].append(time.perf_counter() - t0)
    return statistics.median(times["bare"]), statistics.median(times["recorded"])


def sync_openai(stub: LLMStub, folder: Path, n: int) -> tuple[float, float]:
    def client() -> openai.OpenAI:
        return openai.OpenAI(base_url=stub.base_url, api_key="sk-bench", max_retries=0)

    bare_client, recorded_client = client(), instrument(client())

    def bare() -> None:
        bare_client.chat.completions.create(model="gpt-4o-mini", messages=_MESSAGES)

    def recorded() -> None:
        recorded_client.chat.completions.create(model="gpt-4o-mini", messages=_MESSAGES)

    with (
        SyncRecorder.from_url(f"sqlite:///{folder / 'sync.db'}", producer_id="bench") as rec,
        rec.run(agent_id="bench-sync"),
    ):
        for _ in range(20):  # warm-up: connections, imports, the price database
            bare()
            recorded()
        return _alternate(n, bare, recorded)


async def async_openai_stream(stub: LLMStub, folder: Path, n: int) -> tuple[float, float]:
    def client() -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=stub.base_url, api_key="sk-bench", max_retries=0)

    bare_client, recorded_client = client(), instrument(client())

    async def call(c: openai.AsyncOpenAI) -> None:
        stream = await c.chat.completions.create(
            model="gpt-4o-mini",
            messages=_MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for _ in stream:
            pass

    async def bare() -> None:
        await call(bare_client)

    async def recorded() -> None:
        await call(recorded_client)

    rec = Recorder.from_url(f"sqlite:///{folder / 'stream.db'}", producer_id="bench")
    async with rec, rec.run(agent_id="bench-stream"):
        for _ in range(20):
            await bare()
            await recorded()
        return await _aalternate(n, bare, recorded)


async def async_anthropic(stub: LLMStub, folder: Path, n: int) -> tuple[float, float]:
    def client() -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            base_url=stub.anthropic_url, api_key="sk-bench", max_retries=0
        )

    bare_client, recorded_client = client(), instrument(client())

    async def bare() -> None:
        await bare_client.messages.create(
            model="claude-haiku-4-5", max_tokens=100, messages=_MESSAGES
        )

    async def recorded() -> None:
        await recorded_client.messages.create(
            model="claude-haiku-4-5", max_tokens=100, messages=_MESSAGES
        )

    rec = Recorder.from_url(f"sqlite:///{folder / 'anthropic.db'}", producer_id="bench")
    async with rec, rec.run(agent_id="bench-anthropic"):
        for _ in range(20):
            await bare()
            await recorded()
        return await _aalternate(n, bare, recorded)


VARIANTS = (
    ("openai_sync", "OpenAI chat completion, sync client + SyncRecorder"),
    ("openai_async_stream", "OpenAI chat completion streamed, async client + Recorder"),
    ("anthropic_async", "Anthropic message, async client + Recorder"),
)


def run(sizes: Sizes) -> list[Figure]:
    figures: dict[str, tuple[Figure, Figure]] = {}
    for key, title in VARIANTS:
        per_call = Figure(
            key=f"instrument.{key}",
            title=f"Recorded model call against the local stub: {title}",
            unit="µs/call",
            baseline_name="the same call through a client that is not instrumented",
            higher_is_better=False,
        )
        overhead = Figure(
            key=f"instrument.{key}.overhead",
            title=f"SDK overhead per recorded call: {title} (recorded - bare)",
            unit="µs/call",
            higher_is_better=False,
        )
        figures[key] = (per_call, overhead)
    stub = LLMStub()
    try:
        for rep in range(sizes.reps):
            with tempfile.TemporaryDirectory(prefix="fleetledger-bench-instr-") as tmp:
                folder = Path(tmp)
                results = {
                    "openai_sync": sync_openai(stub, folder, sizes.sdk_calls),
                    "openai_async_stream": asyncio.run(
                        async_openai_stream(stub, folder, sizes.sdk_calls)
                    ),
                    "anthropic_async": asyncio.run(async_anthropic(stub, folder, sizes.sdk_calls)),
                }
            for key, (bare, recorded) in results.items():
                per_call, overhead = figures[key]
                per_call.add(recorded * 1e6, bare * 1e6)
                overhead.add((recorded - bare) * 1e6)
                log(
                    f"  instrument {key} rep {rep + 1}: bare {bare * 1e6:.0f} µs, "
                    f"recorded {recorded * 1e6:.0f} µs per call"
                )
    finally:
        stub.close()
    return [f for pair in figures.values() for f in pair]
