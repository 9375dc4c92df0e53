"""The console's replay views: links, reports recomputed from bundles, settings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from fleetledger.kernel.errors import ConfigError, ReplayError
from fleetledger.processors import replayview
from fleetledger.processors.runtimes.replay import load_recording, replay
from fleetledger.producers import MemoryTransport, Recorder
from fleetledger.producers import replay as sdk_replay
from fleetledger.producers.simagents import AGENTS, simulate_agents

from .replay_fixtures import bundles_of, record

BY_NAME = {a.name: a for a in AGENTS}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    async def body(rec: Recorder) -> None:
        await simulate_agents(rec, seed=7)

    return asyncio.run(record(body, tmp_path_factory.mktemp("fleet")))


@pytest.mark.parametrize("name", ["ledger-bot", "report-bot", "tagger-bot", "watch-bot"])
async def test_the_report_recomputed_from_bundles_is_the_live_report(
    fleet: dict[str, Path], name: str
) -> None:
    path = fleet[f"sim-{name}-1"]
    transport = MemoryTransport()
    async with Recorder(transport, linger_ms=None) as rec:
        live = await replay(load_recording(path), BY_NAME[name].run, recorder=rec, run_id="rp")
    replayed = json.loads(bundles_of(transport)["rp"])
    link = replayview.replay_link(replayed)
    assert link is not None and link.original_run_id == f"sim-{name}-1"
    again = replayview.report_from_bundles(json.loads(path.read_bytes()), replayed)
    assert [(d.kind, d.message) for d in again.divergences] == [
        (d.kind, d.message) for d in live.report.divergences
    ]
    assert (again.match_rate, again.ok, again.replay_cost) == (
        live.report.match_rate,
        live.report.ok,
        live.report.replay_cost,
    )
    assert [r.status for r in again.rows] == [r.status for r in live.report.rows]


def test_a_replay_of_another_recording_is_refused(fleet: dict[str, Path]) -> None:
    a = json.loads(fleet["sim-triage-bot-1"].read_bytes())
    assert replayview.replay_link(a) is None
    with pytest.raises(ReplayError, match="is no replay"):
        replayview.report_from_bundles(a, a)
    fake = {
        **a,
        "run": {**a["run"], "labels": {replayview.LABEL_OF: "x", replayview.LABEL_HEAD: "y"}},
    }
    with pytest.raises(ReplayError, match="replayed x at chain head y"):
        replayview.report_from_bundles(a, fake)


def test_replay_agents_setting() -> None:
    assert replayview.replay_agents(" a=pkg.m:f , b=pkg.n:g.h ") == {
        "a": "pkg.m:f",
        "b": "pkg.n:g.h",
    }
    assert replayview.replay_agents(None) == {}
    with pytest.raises(ConfigError, match=r"expected agent_id=package\.module:function"):
        replayview.replay_agents("a=pkg.m")


def test_one_replay_price_marker() -> None:
    assert replayview.REPLAY_PRICE_DATA == sdk_replay.REPLAY_PRICE_DATA


def test_score_bar() -> None:
    bar = replayview.score_bar(56)
    assert (bar.band, bar.colour, bar.width) == ("low determinism", "orange", "56%")
