"""The README's "debug a failed run" walkthrough: every command runs, and says what the
README says it says."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from fleetledger.cli.commands import main

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def walkthrough() -> list[list[str]]:
    section = README.split("## Debug a failed run", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.strip().splitlines():
        args = shlex.split(line.split("  #", 1)[0])
        assert args[0] == "fleetledger", line
        commands.append([str(ROOT / a) if a.startswith("producers/") else a for a in args[1:]])
    return commands


def test_the_walkthrough_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEETLEDGER_BROKER", raising=False)
    outputs = {}
    for args in walkthrough():
        assert main(args) == 0, args
        outputs[" ".join(args[:2])] = capsys.readouterr().out
    assert "sim-refund-bot-1" in outputs["intercepts"] and "PaymentError" in outputs["intercepts"]
    assert "12500" in outputs["show sim-refund-bot-1"]  # the refund's inputs, in cents x 10
    replays = [k for k in outputs if k.startswith("replay")]
    assert len(replays) == 1  # both replays share the key; the last one is kept
    fixed = outputs["replay sim-refund-bot-1"]
    assert "input_mismatch" in fixed and "12500 -> 1250" in fixed
    assert "replay run refund-fix-1 completed" in fixed
    diff = outputs["diff sim-refund-bot-1"]
    assert "changed" in diff and "refund-fix-1" in diff
    assert "D401" in outputs["determinism sim-refund-bot-1"]
    assert "D305" in outputs["determinism sim-tagger-bot-1"]
    # the regression-suite snippet, against the demo's bundles
    snippet = README.split("## Debug a failed run", 1)[1].split("```python\n", 1)[1]
    scope: dict[str, object] = {"__name__": "readme"}
    exec(compile(snippet.split("```", 1)[0], "README.md", "exec"), scope)
    test = scope["test_recorded_runs_still_replay"]
    assert callable(test)
    test()


def test_the_first_replay_reproduces_the_failure_at_zero_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEETLEDGER_BROKER", raising=False)
    demo, _, _, first, *_ = walkthrough()
    assert main(demo) == 0
    capsys.readouterr()
    assert main([*first, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["match_rate"], report["replay_cost"], report["ok"]) == ("100.0", "0", True)
    assert report["outcome"] == {
        "original": "failed",
        "original_error": "PaymentError",
        "replay": "failed",
        "replay_error": "PaymentError",
        "same": True,
    }
