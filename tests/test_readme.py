"""The README's commands and snippets stay true."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest

from fleetledger.cli.commands import main
from fleetledger.kernel.config import Settings

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def test_the_sdk_snippet_runs_and_its_run_is_processed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    snippet = re.search(r"```python\n(.*?)```", README, re.S)
    assert snippet is not None
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEETLEDGER_BROKER", raising=False)
    exec(compile(snippet.group(1), "README.md", "exec"), {"__name__": "readme"})
    assert main(["worker", "--once"]) == 0
    capsys.readouterr()
    assert main(["costs", "--json"]) == 0
    assert '"support-bot"' in capsys.readouterr().out


def test_fresh_machine_commands_are_make_targets() -> None:
    makefile = (Path(__file__).parents[1] / "Makefile").read_text(encoding="utf-8")
    block = README.split("## On a fresh machine", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make console", "make test"]
    for target in ("demo", "console", "test"):
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
