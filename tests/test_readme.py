"""The README's commands and snippets stay true."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from fleetledger.cli.commands import main
from fleetledger.kernel.config import Settings
from fleetledger.processors.runtimes.embedded import EmbeddedReader

from .llm_stub import OPENAI_USAGE, LLMStub

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith(("FLEETLEDGER_", "OTEL_", "OPENAI_"))]:
        monkeypatch.delenv(key)
    return tmp_path


def test_the_first_example_is_the_instrumented_client_and_records_a_real_call(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = python_blocks()[0]
    assert "instrument(OpenAI())" in first
    stub = LLMStub()
    try:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)  # the real client, the local stub
        monkeypatch.setenv("OPENAI_API_KEY", "sk-readme")
        exec(compile(first, "README.md", "exec"), {"__name__": "readme"})
    finally:
        stub.close()
    printed = capsys.readouterr().out
    match = re.search(r"recorded run (\S+) - (.*)", printed)
    assert match is not None and match.group(2) == "The answer is 42."
    run_id = match.group(1)
    assert main(["worker", "--once"]) == 0
    with EmbeddedReader(workdir / "fleetledger.db") as reader:
        stored = reader.bundle(run_id)
    assert stored is not None
    bundle = json.loads(stored.data)
    [call] = [e["event"]["payload"] for e in bundle["events"] if e["event"]["type"] == "model_io"]
    assert call["gen_ai_response_model"] == "gpt-4o-mini-2024-07-18"
    assert call["gen_ai_usage_input_tokens"] == OPENAI_USAGE["prompt"]
    assert call["cost"]["source"] == "local" and bundle["run"]["agent_id"] == "support-bot"
    assert "sk-readme" not in stored.data.decode()


def test_the_manual_api_snippet_runs_and_its_run_is_processed(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manual = python_blocks()[1]
    exec(compile(manual, "README.md", "exec"), {"__name__": "readme"})
    assert "recording run" in capsys.readouterr().out
    assert main(["worker", "--once"]) == 0
    capsys.readouterr()
    assert main(["costs", "--json"]) == 0
    assert '"support-bot"' in capsys.readouterr().out
    with EmbeddedReader(workdir / "fleetledger.db") as reader:
        [stored] = list(reader.bundles())
    [decision] = json.loads(stored.data)["model_decisions"]
    assert decision["primary_model"] == "gpt-4.1" and decision["calls"]["attempts"] == 1


def test_the_otlp_receiver_command_records_spans_from_a_real_exporter(workdir: Path) -> None:
    block = README.split("OpenInference...) need no code change", 1)[1]
    command = block.split("```sh", 1)[1].split("```", 1)[0].split("#")[0].split()
    assert command == ["fleetledger", "otlp"]
    endpoint = re.search(r"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=(\S+)`", block)
    assert endpoint is not None and endpoint.group(1) == "http://127.0.0.1:4318/v1/traces"
    with socket.socket() as probe:  # the documented port may be taken on a shared machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "FLEETLEDGER_BROKER": f"sqlite:///{workdir / 'otlp.db'}"}
    exe = Path(sys.executable).with_name("fleetledger")
    proc = subprocess.Popen(
        [str(exe), *command[1:], "--port", str(port), "--settle", "0.2", "--duration", "60"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "receiving OTLP traces" in proc.stderr.readline()
        url = endpoint.group(1).replace("4318", str(port))
        provider = TracerProvider(resource=Resource({"service.name": "readme-agent"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url)))
        tracer = provider.get_tracer("readme")
        with (
            tracer.start_as_current_span(
                "invoke_agent readme", attributes={"gen_ai.operation.name": "invoke_agent"}
            ),
            tracer.start_as_current_span(
                "chat gpt-4o",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 10,
                    "gen_ai.usage.output_tokens": 2,
                },
            ),
        ):
            pass
        provider.shutdown()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url.replace("traces", "stats"), timeout=5) as reply:
                if json.loads(reply.read())["runs_recorded"] == 1:
                    break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # stops cleanly: what is buffered is recorded
        assert proc.wait(timeout=30) == 0
        assert "recorded 1 runs from 2 spans" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert main(["worker", "--once", "--broker", env["FLEETLEDGER_BROKER"]]) == 0
    with EmbeddedReader(workdir / "otlp.db") as reader:
        [stored] = list(reader.bundles())
    assert stored.run_id.startswith("otel-")
    assert json.loads(stored.data)["run"]["agent_id"] == "readme-agent"


def test_fresh_machine_commands_are_make_targets() -> None:
    makefile = (Path(__file__).parents[1] / "Makefile").read_text(encoding="utf-8")
    block = README.split("## On a fresh machine", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    for target in ("demo", "test"):
        assert re.search(rf"^{target}: ", makefile, re.M)
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci and ci.index("make lint") < ci.index("make test")
    # the read-model tests need a PostgreSQL server: CI installs it on a clean machine
    assert "apt-get install" in ci and "postgresql" in ci
    assert ci.index("postgresql") < ci.index("make test")


def test_every_setting_is_documented_with_its_default() -> None:
    for name, info in Settings.model_fields.items():
        row = re.search(rf"^\| `FLEETLEDGER_{name.upper()}` \| `([^`]*)` \|", README, re.M)
        assert row is not None, f"FLEETLEDGER_{name.upper()} missing from the README table"
        shown, expected = row.group(1).lower(), str(info.default).lower()
        try:
            assert Decimal(shown) == Decimal(expected), name
        except InvalidOperation:
            assert shown == expected, name
