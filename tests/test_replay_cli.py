"""The replay commands' edges: one-line errors, artifact diffs, JSON output."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from fleetledger.cli.commands import main
from fleetledger.producers import Recorder
from fleetledger.producers.simagents import simulate_agents

from .replay_fixtures import record


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    async def body(rec: Recorder) -> None:
        await simulate_agents(rec, seed=7)

    return asyncio.run(record(body, tmp_path_factory.mktemp("cli-fleet")))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["replay", "{ledger}", "--agent", "nodots"], "expected package.module:function"),
        (["replay", "{ledger}", "--agent", "no.such.module:f"], "cannot import"),
        (["replay", "missing-run", "--agent", "a.b:c", "--broker", "sqlite:///x.db"], ""),
        (["diff", "{ledger}"], "expected RUN_B"),
        (["diff", "{ledger}", "--artifact", "nope"], "has no artifact 'nope'"),
    ],
)
def test_errors_are_one_line(
    fleet: dict[str, Path],
    args: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{ledger}", str(fleet["sim-ledger-bot-1"])) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "Traceback" not in "\n".join(err)
    assert needle in "\n".join(err)


def test_artifact_versions_and_their_decisions(
    fleet: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diff", str(fleet["sim-report-bot-1"]), "--artifact", "report.json"]) == 0
    assert "Artifact report.json" in capsys.readouterr().out
    assert main(["diff", str(fleet["sim-ledger-bot-1"]), "--artifact", "summary.md", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (rev,) = data["revisions"]
    assert rev["state"] == "pinned" and rev["decisions"][0]["gate_id"] == "review-summary"
    assert rev["decisions"][0]["content_hash"] == rev["content_hash"]


def test_determinism_json_and_diff_json(
    fleet: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["determinism", str(fleet["sim-order-bot-1"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["score"] == 92 and report["findings"][0]["rule_id"] == "D102"
    a, b = str(fleet["sim-order-bot-1"]), str(fleet["sim-triage-bot-1"])
    assert main(["diff", a, b, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["same_workflow"] is False
