"""The console's Simulation and Determinism tabs and the compare view: over HTTP, and in
a real headless Chromium (`s`, `r`, `d`)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fleetledger.console.server import ConsoleServer, console
from fleetledger.producers import Recorder
from fleetledger.producers.simagents import simulate_agents

from .console_support import process, settings_for

AGENTS = {
    "refund-bot": "fleetledger.producers.simagents:refund_bot",
    "report-bot": "fleetledger.producers.simagents:report_bot",
    "ledger-bot": "fleetledger.producers.simagents:ledger_bot",
    "watch-bot": "fleetledger.producers.simagents:watch_bot",
}
TIMEOUT_MS = 15_000
REPLAY = {"X-Fleetledger-Action": "replay"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    path = tmp_path_factory.mktemp("replay-console") / "fleet.db"
    settings = settings_for(path)

    async def record() -> None:
        async with Recorder.from_url(settings.broker, settings=settings) as rec:
            await simulate_agents(rec, seed=7)

    # in a thread of its own: a browser test's event loop may hold the main thread
    worker = threading.Thread(target=lambda: asyncio.run(record()))
    worker.start()
    worker.join()
    process(settings)
    with console(settings, port=0, poll_s=0.05, replay_agents=AGENTS) as srv:
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


def _wait(cond: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- HTTP


def test_a_replay_is_started_only_by_a_same_origin_request_with_the_header(
    served: ConsoleServer,
) -> None:
    url = served.url + "/api/runs/sim-report-bot-1/replay"
    assert httpx.post(url, timeout=30).status_code == 405  # a plain form post
    cross = {**REPLAY, "Sec-Fetch-Site": "cross-site"}
    assert httpx.post(url, headers=cross, timeout=30).status_code == 405
    assert httpx.post(served.url + "/api/runs", headers=REPLAY, timeout=30).status_code == 405
    r = httpx.post(url, headers=REPLAY, timeout=60)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["original"]["run_id"] == "sim-report-bot-1"
    assert [d["kind"] for d in report["divergences"]] == ["output_mismatch", "output_mismatch"]
    assert report["replay_cost"] == "0"
    # the replay run shows up in the read model, linked, with the same report
    replay_id = report["replay_run_id"]

    def listed() -> Any:
        data = httpx.get(served.url + "/api/runs/sim-report-bot-1/replays", timeout=10).json()
        return [x for x in data["replays"] if x["run_id"] == replay_id]

    (found,) = _wait(listed, "the replay run in the read model")
    assert found["report"]["divergence_count"] == 2
    assert found["report"]["match_rate"] == report["match_rate"]
    own = httpx.get(served.url + f"/api/runs/{replay_id}/replays", timeout=10).json()
    assert own["replay_of"] == "sim-report-bot-1" and own["report"]["divergence_count"] == 2
    # the determinism tab counts the replay's differences
    det = httpx.get(served.url + "/api/runs/sim-report-bot-1/determinism", timeout=10).json()
    assert det["replay"] == replay_id
    assert [f["rule_id"] for f in det["findings"]] == ["D101", "D204", "D201"]
    assert det["score"] == 56 and det["colour"] == "orange"


def test_an_agent_without_a_replay_function_is_refused(served: ConsoleServer) -> None:
    r = httpx.post(served.url + "/api/runs/sim-tagger-bot-1/replay", headers=REPLAY, timeout=30)
    assert r.status_code == 409 and "no replay agent for agent 'tagger-bot'" in r.text


def test_compare_api(served: ConsoleServer) -> None:
    r = httpx.get(
        served.url + "/api/compare", params={"a": "sim-triage-bot-1", "b": "sim-triage-bot-1"}
    )
    data = r.json()
    assert data["counts"]["same"] == data["a"]["actions"] > 0
    bad = httpx.get(served.url + "/api/compare", params={"a": "sim-triage-bot-1", "b": "nope"})
    assert bad.status_code == 400 and "found no bundle of 'nope'" in bad.text


# --------------------------------------------------------------------------- browser


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    try:
        yield pg
    finally:
        context.close()


def test_s_opens_the_simulation_tab_and_r_replays_at_zero_cost(
    served: ConsoleServer, page: Any
) -> None:
    page.goto(served.url + "/runs/sim-refund-bot-1")
    page.keyboard.press("s")
    page.wait_for_selector("#simulate-replay")
    assert page.is_visible("#panel-simulation") and not page.is_visible("#panel-telemetry")
    page.keyboard.press("r")
    page.wait_for_selector("#replay-done")
    metrics = {
        el.get_attribute("data-metric"): el.inner_text()
        for el in page.query_selector_all("#replay-done [data-metric]")
    }
    assert metrics["match_rate"] == "100.0%" and metrics["divergences"] == "0"
    assert metrics["replay_cost"].startswith("$0") or metrics["replay_cost"].startswith("0")
    statuses = [
        el.inner_text()
        for el in page.query_selector_all("#replay-done .comparison tr td:last-child")
    ]
    assert statuses and all("Match" in s for s in statuses)
    assert page.errors == []


def test_d_shows_the_score_bar_findings_and_recommendations(
    served: ConsoleServer, page: Any
) -> None:
    page.goto(served.url + "/runs/sim-refund-bot-1")
    page.keyboard.press("d")
    page.wait_for_selector("#score")
    score = page.query_selector("#score")
    assert score is not None
    assert (score.get_attribute("data-score"), score.get_attribute("data-band")) == ("81", "yellow")
    finding = page.query_selector('#findings .finding[data-rule="D401"]')
    assert finding is not None
    text = finding.inner_text()
    assert "issue_refund" in text and "idempotency_key" in text  # the after snippet
    assert page.errors == []


def test_gates_name_the_revision_they_decided_on_and_compare_renders(
    served: ConsoleServer, page: Any
) -> None:
    page.goto(served.url + "/runs/sim-ledger-bot-1")
    cell = page.wait_for_selector("#gates td.approval code")
    assert cell is not None
    assert (cell.get_attribute("title") or "").startswith("sha256:")
    page.goto(served.url + "/compare?a=sim-refund-bot-1&b=sim-refund-bot-1")
    assert page.query_selector_all("#pairs tbody tr")
    assert page.errors == []


def test_the_simulation_tab_of_a_replay_links_its_original(
    served: ConsoleServer, page: Any
) -> None:
    r = httpx.post(
        served.url + "/api/runs/sim-watch-bot-1/replay", headers=REPLAY, timeout=60
    ).json()
    replay_id = r["replay_run_id"]
    assert r["stopped"] and "no recording of model_io" in r["stopped"]

    def finished() -> bool:
        r = httpx.get(served.url + f"/api/runs/{replay_id}", timeout=10)
        return r.status_code == 200 and r.json()["run"]["status"] == "failed"

    _wait(finished, "the replay run to be processed")
    page.goto(served.url + f"/runs/{replay_id}")
    page.keyboard.press("s")
    link = page.wait_for_selector("#replay-of a")
    assert link is not None and link.inner_text() == "sim-watch-bot-1"
    assert "extra" in page.inner_text("#replay-of")
    assert page.errors == []
