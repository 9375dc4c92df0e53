"""Every simulated agent replayed against its recording: 100% for the deterministic ones,
exactly the planted divergences and findings for the others (asserted one by one)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fleetledger.processors.determinism import analyze
from fleetledger.processors.runtimes.replay import (
    ReplayResult,
    assert_replays,
    load_recording,
    replay,
)
from fleetledger.producers import MemoryTransport, Recorder, simagents
from fleetledger.producers.simagents import AGENTS, agent_run_id, simulate_agents

from .replay_fixtures import bundles_of, record

BY_NAME = {a.name: a for a in AGENTS}
SOURCE = Path(simagents.__file__)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fleet")

    async def body(rec: Recorder) -> None:
        await simulate_agents(rec, seed=7)

    return asyncio.run(record(body, folder))


async def _replay(path: Path, name: str, **kwargs: Any) -> ReplayResult:
    async with Recorder(MemoryTransport(), linger_ms=None) as rec:
        return await replay(
            load_recording(path), BY_NAME[name].run, recorder=rec, run_id=f"rp-{name}", **kwargs
        )


def _divergences(result: ReplayResult) -> list[tuple[str, str, list[tuple[str, str]]]]:
    out: list[tuple[str, str, list[tuple[str, str]]]] = []
    for d in result.report.divergences:
        subject = d.replay or d.original
        assert subject is not None
        out.append((d.kind, subject.label, [(c.pointer, c.kind) for c in d.changes]))
    return out


def _findings(path: Path, result: ReplayResult) -> list[tuple[str, str | None, str]]:
    report = analyze(json.loads(path.read_bytes()), replay=result.report)
    return [(f.rule_id, f.pointer, f.source) for f in report.findings]


def test_the_fleet_records_deterministically(tmp_path: Path) -> None:
    async def twice() -> tuple[dict[str, bytes], dict[str, bytes]]:
        out = []
        for _ in range(2):
            transport = MemoryTransport()
            async with Recorder(transport, linger_ms=None) as rec:
                await simulate_agents(rec, seed=7)
            out.append(bundles_of(transport))
        return out[0], out[1]

    a, b = asyncio.run(twice())
    assert a == b and sorted(a) == sorted(agent_run_id(x) for x in AGENTS)
    refund = json.loads(a["sim-refund-bot-1"])
    assert refund["run"]["status"] == "failed"  # the README's failed run


@pytest.mark.parametrize("name", ["triage-bot", "ledger-bot", "refund-bot"])
async def test_deterministic_agents_replay_at_100_percent(
    fleet: dict[str, Path], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = simagents._answer

    def counted(model: str, messages: list[dict[str, str]]) -> str:
        calls.append(model)
        return real(model, messages)

    monkeypatch.setattr(simagents, "_answer", counted)
    path = fleet[agent_run_id(BY_NAME[name])]
    result = await _replay(path, name)
    report = result.report
    assert report.match_rate == Decimal(100) and report.divergences == ()
    assert report.ok and report.same_outcome
    assert calls == []  # every model call answered from the recording
    assert report.replay_cost == 0 and report.savings == report.original_cost > 0
    findings = _findings(path, result)
    if name == "refund-bot":  # deterministic, but its refund carries no idempotency key
        assert findings == [("D401", "/payload/inputs", "calls")]
        assert (report.original_status, report.replay_status) == ("failed", "failed")
        assert report.original_error == report.replay_error == "PaymentError"
    else:
        assert findings == []


async def test_timestamp_planted(fleet: dict[str, Path]) -> None:
    path = fleet["sim-report-bot-1"]
    result = await _replay(path, "report-bot")
    assert _divergences(result) == [
        (
            "output_mismatch",
            "tool_call `generate_report`",
            [("/payload/outputs/generated_at", "changed")],
        ),
        (
            "output_mismatch",
            "artifact report.json v1",
            [("/payload/outputs/content_hash", "changed")],
        ),
    ]
    assert result.report.match_rate == Decimal("33.3")
    assert _findings(path, result) == [
        ("D101", "/payload/outputs/generated_at", "outputs"),
        ("D204", "/payload/outputs/generated_at", "replay"),
        ("D201", "/payload/outputs/content_hash", "replay"),
    ]


async def test_uuid_planted(fleet: dict[str, Path]) -> None:
    path = fleet["sim-order-bot-1"]
    result = await _replay(path, "order-bot")
    assert _divergences(result) == [
        ("output_mismatch", "tool_call `create_order`", [("/payload/outputs/order_id", "changed")])
    ]
    assert _findings(path, result) == [
        ("D102", "/payload/outputs/order_id", "outputs"),
        ("D205", "/payload/outputs/order_id", "replay"),
    ]


async def test_set_ordering_planted(fleet: dict[str, Path]) -> None:
    path = fleet["sim-tagger-bot-1"]
    result = await _replay(path, "tagger-bot")
    assert result.status == "failed" and result.report.stopped is not None
    assert result.error is not None and result.error.startswith("ReplayMissError: no recording")
    assert _divergences(result) == [
        ("input_mismatch", "tool_call `search_catalog`", [("/payload/inputs/tags", "reordered")])
    ]
    assert _findings(path, result) == [("D202", "/payload/inputs/tags", "replay")]
    scan = analyze(json.loads(path.read_bytes()), sources={"simagents.py": SOURCE.read_text()})
    loops = [f.line for f in scan.findings if f.rule_id == "D305" and f.line is not None]
    lines = SOURCE.read_text().splitlines()
    assert [lines[n - 1].strip() for n in loops] == [
        "for tag in tags:",
        "for i in {env.tag(str(n)) for n in range(len(items))}:",
    ]


async def test_float_noise_planted(fleet: dict[str, Path]) -> None:
    path = fleet["sim-pricing-bot-1"]
    result = await _replay(path, "pricing-bot")
    assert _divergences(result) == [
        ("output_mismatch", "tool_call `quote_total`", [("/payload/outputs/total", "precision")])
    ]
    assert _findings(path, result) == [("D203", "/payload/outputs/total", "replay")]


async def test_unrecorded_live_call_planted(fleet: dict[str, Path]) -> None:
    path = fleet["sim-watch-bot-1"]
    closed = await _replay(path, "watch-bot")
    assert closed.status == "failed" and "no recording of model_io openai/gpt-4.1-mini" in str(
        closed.error
    )
    assert _divergences(closed) == [("extra", "model_io openai/gpt-4.1-mini", [])]
    assert closed.report.replay_cost == 0
    assert _findings(path, closed) == [("D402", "/payload/inputs", "replay")]
    live = await _replay(path, "watch-bot", allow_live=True)
    assert live.status == "completed" and live.report.live == 1
    assert _divergences(live) == [("extra", "model_io openai/gpt-4.1-mini", [])]
    assert live.report.replay_cost > 0  # made and priced live
    assert _findings(path, live) == [("D402", "/payload/inputs", "replay")]


def test_determinism_scores_of_the_fleet(fleet: dict[str, Path]) -> None:
    async def scores() -> dict[str, int]:
        out = {}
        for agent in AGENTS:
            path = fleet[agent_run_id(agent)]
            result = await _replay(path, agent.name)
            out[agent.name] = analyze(json.loads(path.read_bytes()), replay=result.report).score
        return out

    assert asyncio.run(scores()) == {
        "triage-bot": 100,
        "ledger-bot": 100,
        "report-bot": 56,
        "order-bot": 83,
        "tagger-bot": 91,
        "pricing-bot": 97,
        "watch-bot": 60,
        "refund-bot": 81,
    }


def test_a_folder_of_recordings_as_a_regression_suite(
    fleet: dict[str, Path], tmp_path: Path
) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    for name in ("triage-bot", "ledger-bot"):
        src = fleet[agent_run_id(BY_NAME[name])]
        (suite / src.name).write_bytes(src.read_bytes())

    async def either(run: Any) -> None:
        await BY_NAME[run.agent_id].run(run)

    results = assert_replays(suite, either)
    assert [r.report.match_rate for _, r in results] == [Decimal(100), Decimal(100)]
    (suite / "sim-order-bot-1.bundle.json").write_bytes(fleet["sim-order-bot-1"].read_bytes())
    with pytest.raises(AssertionError, match=r"1 of 3 recordings diverged on replay") as info:
        assert_replays(suite, either)
    assert "output_mismatch: tool_call `create_order`" in str(info.value)


def test_a_signed_recording_is_checked_against_pinned_keys(
    fleet: dict[str, Path], tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fleetledger.kernel.errors import RecordingRefusedError
    from fleetledger.processors.evidence import evidence_files

    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    bundle = json.loads(fleet["sim-ledger-bot-1"].read_bytes())
    for name, data in evidence_files(bundle, key):
        (tmp_path / name).write_bytes(data)
    envelope = tmp_path / "sim-ledger-bot-1.dsse.json"
    loaded = load_recording(envelope, trusted=[key.public_key()])
    assert loaded.verified.signed_by is not None and loaded.run_id == "sim-ledger-bot-1"
    # a plain bundle with pinned keys: its signed sibling must verify too
    plain = load_recording(tmp_path / "sim-ledger-bot-1.bundle.json", trusted=[key.public_key()])
    assert plain.verified.signed_by == loaded.verified.signed_by
    with pytest.raises(RecordingRefusedError, match="refused: signature"):
        load_recording(envelope, trusted=[other.public_key()])
