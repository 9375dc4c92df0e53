"""A run using everything v3 adds, end to end: recorded by the SDK into the embedded
store, processed, exported, verified offline, its blobs checked against the store."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from fleetledger.cli.commands import main
from fleetledger.kernel.config import load_settings
from fleetledger.producers import Recorder

ENV_KEYS = [k for k in os.environ if k.startswith("FLEETLEDGER_")]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in ENV_KEYS:
        monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


async def record(url: str, blobs: Path) -> str:
    settings = load_settings(broker=url, blob_dir=str(blobs), blob_threshold_bytes=2048)
    async with Recorder.from_url(settings=settings) as rec:
        async with rec.run(agent_id="researcher", tenant="acme") as run:
            async with run.step("plan"):
                await run.model_decision(
                    "claude-sonnet-4-5",
                    provider="anthropic",
                    fallback_chain=["gpt-4.1"],
                    budget_mode="constrained",
                    routing_reason="budget_downgrade",
                )
                await run.model_io(
                    provider="anthropic",
                    model="claude-sonnet-4-5",
                    response_model="claude-sonnet-4-5-20250929",
                    input_tokens=3000,
                    output_tokens=0,
                    duration_ms=900,
                    inputs={"q": "plan"},
                    outcome="error",
                    error_type="OverloadedError",
                )
                await run.model_io(
                    provider="openai",
                    model="gpt-4.1",
                    response_model="gpt-4.1-2025-04-14",
                    input_tokens=3000,
                    output_tokens=400,
                    cache_read_tokens=1000,
                    duration_ms=1200,
                    inputs={"q": "plan"},
                    outputs={"plan": "..."},
                )
            # outside any step: the implicit step; an unknown model: unpriced
            await run.model_io(
                provider="acme",
                model="house-llm-7b",
                input_tokens=500,
                output_tokens=50,
                duration_ms=100,
                inputs={"api_key": "sk-1", "q": "x"},
            )
            await run.tool_call(name="fetch", duration_ms=30, outputs={"page": "p" * 10_000})
        return run.run_id


async def test_v3_run_bundle_verify_and_blobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    blobs = tmp_path / "blobs"
    run_id = await record(url, blobs)
    assert main(["worker", "--once", "--broker", url]) == 0
    capsys.readouterr()
    assert main(["costs", "--json", "--broker", url]) == 0
    lines = {m["name"]: m for m in json.loads(capsys.readouterr().out)["by_model"]}
    # the unpriced call is counted, with its tokens, and adds no amount in any currency
    assert lines["acme/house-llm-7b"]["calls"] == 1 and lines["acme/house-llm-7b"]["cost"] == {}
    assert lines["acme/house-llm-7b"]["input_tokens"] == 500
    assert lines["acme/house-llm-7b"]["unpriced_calls"] == 1
    assert all(m["unpriced_calls"] == 0 for n, m in lines.items() if n != "acme/house-llm-7b")
    capsys.readouterr()
    assert main(["costs", "--json", "--broker", url]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["unpriced_calls"] == 1
    assert sum(a["unpriced_calls"] for a in report["by_agent"]) == 1
    capsys.readouterr()
    assert main(["costs", "--broker", url]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the console may wrap the line
    assert "1 unpriced model calls (no known price) not in it" in text
    assert main(["export", run_id, "--out", "run.json", "--broker", url]) == 0
    bundle: dict[str, Any] = json.loads(Path("run.json").read_bytes())

    [decision] = bundle["model_decisions"]
    assert decision["primary_model"] == "claude-sonnet-4-5"
    assert (decision["budget_mode"], decision["routing_reason"]) == (
        "constrained",
        "budget_downgrade",
    )
    assert decision["step_id"] == "plan" and decision["fallback_chain"] == ["gpt-4.1"]
    calls = decision["calls"]
    assert calls["attempts"] == 2 and calls["outcomes"] == {"error": 1, "fallback": 1}
    assert calls["models"] == ["claude-sonnet-4-5-20250929", "gpt-4.1-2025-04-14"]
    assert calls["cache_misses"] == 1 and calls["unpriced"] == 0
    assert calls["cost"] == bundle["totals"]["by_step"]["plan"]["cost"]

    totals = bundle["totals"]
    assert totals["unpriced"] == {"calls": 1, "by_model": {"acme/house-llm-7b": 1}}
    assert totals["by_model"]["acme/house-llm-7b"]["input_tokens"] == 500
    assert set(totals["by_step"]) == {"plan", "implicit"}
    assert [i["kind"] for i in bundle["intercepts"]] == ["unpriced_model"]
    assert "acme/house-llm-7b" in bundle["intercepts"][0]["reason"]
    assert bundle["workflow"]["implicit"] is True

    [blob] = bundle["blobs"]
    assert (blob["field"], blob["stored"], blob["media_type"]) == (
        "outputs",
        True,
        "application/json",
    )
    events = {e["seq"]: e["event"] for e in bundle["events"]}
    assert "outputs" not in events[blob["seq"]]["payload"]
    unpriced = next(
        e for e in events.values() if e["payload"].get("gen_ai_request_model") == "house-llm-7b"
    )
    assert unpriced["payload"]["redactions"] == ["inputs/api_key"]
    assert "sk-1" not in Path("run.json").read_text()

    capsys.readouterr()
    assert main(["verify", "run.json", "--blobs", str(blobs)]) == 0
    assert "blobs 1 checked" in capsys.readouterr().out
    blob_file = blobs / "sha256" / blob["sha256"][:2] / blob["sha256"]
    good = blob_file.read_bytes()
    blob_file.write_bytes(good.replace(b"p", b"q", 1))
    assert main(["verify", "run.json", "--blobs", str(blobs)]) == 2
    assert f"blob (seq {blob['seq']} outputs)" in capsys.readouterr().out
    blob_file.unlink()
    assert main(["verify", "run.json", "--blobs", str(blobs)]) == 0
    assert "1 missing" in capsys.readouterr().out
    assert main(["verify", "run.json", "--blobs", str(blobs), "--require-blobs"]) == 2
    assert "missing" in capsys.readouterr().out
    # the sections are re-derived: an edited decision fails verification
    bundle["model_decisions"][0]["calls"]["attempts"] = 1
    from fleetledger.processors.bundle import bundle_digest
    from fleetledger.processors.canonical import canonical_bytes

    bundle["integrity"]["digest"] = bundle_digest(bundle)
    Path("edited.json").write_bytes(canonical_bytes(bundle))
    assert main(["verify", "edited.json"]) == 2
    assert "model_decisions" in capsys.readouterr().out
