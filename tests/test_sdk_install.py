"""The SDK installs alone: what an agent needs to record runs, and nothing of the worker.

Builds the wheels of ``schemas/`` and ``producers/``, installs them into a fresh virtualenv
(their dependencies from the package index), records a run into an embedded SQLite store
with that interpreter, and checks the installed distributions.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).parents[1]

#: Distributions the worker, the evidence tools or the CLI need, and an agent does not.
NOT_FOR_AGENTS = {"faust-streaming", "cryptography", "typer", "rich", "fleetledger", "aiokafka"}

RECORD_A_RUN = """
import sys
from fleetledger.producers import SyncRecorder
from fleetledger.schemas import WorkflowSnapshot, WorkflowStep

step = WorkflowStep(id="s", name="S", kind="tool")
workflow = WorkflowSnapshot(name="w", revision="1", steps=[step])
with SyncRecorder.from_url(sys.argv[1]) as rec:
    run = rec.start_run(agent_id="lean-agent", tenant="t", workflow=workflow)
    with run:
        with run.step("s"):
            run.tool_call(name="search", duration_ms=3, inputs={"q": "x"}, outputs={"n": 1})
    print(run.run_id)
"""


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_sdk_installs_alone_and_records_a_run(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    for dist in ("schemas", "producers"):
        # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources.
        source = shutil.copytree(
            ROOT / dist,
            tmp_path / "src" / dist,
            ignore=shutil.ignore_patterns("build", "*.egg-info"),
        )
        _run(
            sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", wheels,
            source,
        )  # fmt: skip
    built = sorted(p.name for p in wheels.glob("*.whl"))
    assert [n.split("-")[0] for n in built] == ["fleetledger_schemas", "fleetledger_sdk"], built

    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", *sorted(wheels.glob("*.whl")))

    store = tmp_path / "agent.db"
    run_id = _run(python, "-c", RECORD_A_RUN, f"sqlite:///{store}", cwd=tmp_path).strip()
    with sqlite3.connect(store) as conn:
        rows = conn.execute("SELECT key FROM event_log").fetchall()
    assert rows and {key for (key,) in rows} == {run_id}

    listed = json.loads(_run(python, "-m", "pip", "list", "--format", "json"))
    installed = {d["name"].lower().replace("_", "-") for d in listed}
    print("SDK-alone install:", ", ".join(sorted(installed)))
    assert {"fleetledger-sdk", "fleetledger-schemas", "pydantic", "fastavro"} <= installed
    assert not installed & NOT_FOR_AGENTS, installed & NOT_FOR_AGENTS
