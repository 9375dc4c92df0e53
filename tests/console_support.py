"""What the console's server and browser tests share: a recorded fleet in an embedded
store, runs recorded step by step with the SDK, and Chromium's launch settings."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from fleetledger.kernel.config import Settings, load_settings
from fleetledger.producers import Recorder, SyncRecorder
from fleetledger.producers.simulator import simulate
from fleetledger.schemas import GatePolicy, Money, WorkflowEdge, WorkflowSnapshot, WorkflowStep

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Payloads that would run script if anything recorded reached the page unescaped.
XSS_AGENT = "<script>window.__xss='agent'</script>"
XSS_IMG = '"><img src=x onerror="window.__xss=\'img\'">'

WORKFLOW = WorkflowSnapshot(
    name="support-reply",
    revision="7",
    steps=[
        WorkflowStep(id="draft", name="Draft reply", kind="llm"),
        WorkflowStep(id="review", name="Human review", kind="gate", gate=GatePolicy.PAUSE_BEFORE),
        WorkflowStep(id="send", name="Send", kind="tool"),
    ],
    edges=[
        WorkflowEdge(source="draft", target="review"),
        WorkflowEdge(source="review", target="send"),
    ],
)


def settings_for(path: Path, **extra: Any) -> Settings:
    return load_settings(broker=f"sqlite:///{path}", **extra)


def build_fleet(path: Path, runs: int = 30, seed: int = 5) -> Settings:
    """A simulated fleet recorded into the embedded store at ``path`` and processed."""
    from fleetledger.processors.runtimes.backend import EmbeddedBackend, backend

    settings = settings_for(path)

    async def record() -> None:
        async with Recorder.from_url(settings.broker, settings=settings) as rec:
            await simulate(rec, runs=runs, seed=seed)

    # in a thread of its own: Playwright's sync API keeps an event loop on the main one
    worker = threading.Thread(target=lambda: asyncio.run(record()))
    worker.start()
    worker.join()
    found = backend(settings)
    assert isinstance(found, EmbeddedBackend)
    with found.runtime() as runtime:
        runtime.process_available()
    return settings


def process(settings: Settings) -> None:
    from fleetledger.processors.runtimes.backend import EmbeddedBackend, backend

    found = backend(settings)
    assert isinstance(found, EmbeddedBackend)
    with found.runtime() as runtime:
        runtime.process_available()


def copy_store(src: Path, dst: Path) -> Path:
    """A copy of an embedded store file (tests that write get their own)."""
    shutil.copyfile(src, dst)
    return dst


def record_hostile_run(settings: Settings) -> str:
    """A finished run whose agent id, tool output and model output are script payloads."""
    with SyncRecorder.from_url(settings.broker, settings=settings) as rec:
        run = rec.start_run(
            agent_id=XSS_AGENT + XSS_IMG,
            tenant="evil" + XSS_IMG,
            workflow=WORKFLOW,
            budget=Money(amount=Decimal("1"), currency="USD"),
        )
        with run:
            with run.step("draft"):
                run.model_io(
                    provider="openai",
                    model="gpt-4.1",
                    input_tokens=10,
                    output_tokens=5,
                    duration_ms=12,
                    inputs={"prompt": XSS_AGENT},
                    outputs={"reply": XSS_IMG, "html": "<b onmouseover=alert(1)>x</b>"},
                )
            with run.step("send"):
                run.tool_call(
                    name="send_email" + XSS_IMG,
                    inputs={"to": XSS_IMG},
                    outputs={"status": XSS_AGENT},
                    duration_ms=3,
                )
        return run.run_id


@contextmanager
def live_run(settings: Settings, agent_id: str = "live-bot") -> Iterator[Any]:
    """A run being recorded: yields the SDK's run (its events flushed as they are made)."""
    with SyncRecorder.from_url(settings.broker, settings=settings) as rec:
        run = rec.start_run(agent_id=agent_id, tenant="acme", workflow=WORKFLOW)
        rec.flush()
        yield rec, run
