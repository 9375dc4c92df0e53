"""The console in a real headless Chromium (Debian's, driven by Playwright).

One browser for the session; each test gets a fresh context.  The consoles here run
the embedded worker in their own process, as `fleetledger console` does, so what the
SDK records shows up live.  The README's screenshots are taken here (docs/img/).
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError

from fleetledger.console.app import ConsoleApp, ConsoleConfig
from fleetledger.console.server import ConsoleServer, EmbeddedWorker, console, prepare
from fleetledger.kernel.config import Settings
from fleetledger.processors.readmodel import RunQuery
from fleetledger.processors.readstore import ReadStore

from .console_support import (
    XSS_AGENT,
    XSS_IMG,
    copy_store,
    live_run,
    process,
    record_hostile_run,
    settings_for,
)

DOCS_IMG = Path(__file__).parents[1] / "docs" / "img"
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def fleet(console_fleet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_store(console_fleet, tmp_path_factory.mktemp("browser") / "fleet.db")


@pytest.fixture(scope="module")
def served(fleet: Path) -> Iterator[tuple[ConsoleServer, Settings]]:
    """A console with the embedded worker beside it, as `fleetledger console` runs."""
    settings = settings_for(fleet)
    with console(settings, port=0, poll_s=0.05) as srv:
        srv.start()
        try:
            yield srv, settings
        finally:
            srv.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on(
        "console",
        lambda m: pg.errors.append(m.text) if m.type == "error" else None,
    )
    try:
        yield pg
    finally:
        context.close()


def _api(srv: ConsoleServer, path: str, **params: Any) -> Any:
    return httpx.get(srv.url + path, params=params, timeout=10).json()


def _wait(cond: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _until(page: Any, predicate: str, arg: Any = None) -> Any:
    """Wait until ``predicate`` (a JS expression or function of ``arg``) holds in the page.

    Polled from here with one ``page.evaluate`` per check rather than with
    ``page.wait_for_function``: under the console's CSP (``script-src 'self'``, no
    ``unsafe-eval``), Playwright's in-page polling can hit its own eval and log a CSP
    violation, which the error check below would then blame on the console.
    """

    def check() -> Any:
        try:
            return page.evaluate(predicate, arg)
        except PlaywrightError as exc:  # a navigation replaced the page meanwhile: retry
            if "Execution context was destroyed" in str(exc):
                return None
            raise

    return _wait(check, predicate, TIMEOUT_MS / 1000)


# --------------------------------------------------------------------------- registry


def test_filters_drive_the_url_the_list_and_the_summary(
    page: Any, served: tuple[ConsoleServer, Settings]
) -> None:
    srv, _ = served
    page.goto(srv.url + "/")
    page.wait_for_selector("#live.on")
    page.wait_for_selector("#sum-runs")
    all_runs = _api(srv, "/api/runs", limit=1000)
    assert page.inner_text("#sum-runs") == str(all_runs["summary"]["runs"])
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_IMG / "console-registry.png"))

    page.select_option("#f-status", "failed")
    page.wait_for_url(re.compile(r"status=failed"))
    failed = _api(srv, "/api/runs", status="failed", limit=1000)
    _until(
        page,
        "n => document.querySelector('#sum-runs')?.textContent === String(n)",
        arg=failed["summary"]["runs"],
    )
    cards = page.locator("#runs li.card")
    assert cards.count() == len(failed["runs"]) > 0
    assert page.locator("#runs li.card.status-failed").count() == cards.count()
    page.wait_for_selector("#sum-failed")
    assert page.inner_text("#sum-failed") == str(len(failed["runs"]))
    shown = page.eval_on_selector_all("#runs li.card", "els => els.map(e => e.dataset.runId)")
    assert shown == [r["run_id"] for r in failed["runs"]]

    page.select_option("#f-status", "")
    page.wait_for_url(re.compile(r"^((?!status=failed).)*$"))
    page.fill("#f-min-cost", "0.05")
    page.wait_for_url(re.compile(r"min_cost=0.05"))
    expensive = _api(srv, "/api/runs", min_cost="0.05", limit=1000)
    _until(
        page,
        "n => document.querySelector('#sum-runs')?.textContent === String(n)",
        arg=expensive["summary"]["runs"],
    )
    assert page.locator("#runs li.card").count() == len(expensive["runs"])

    page.select_option("#f-sort", "cost")
    page.wait_for_url(re.compile(r"sort=cost"))
    _until(
        page,
        "id => document.querySelector('#runs li.card')?.dataset.runId === id",
        arg=_api(srv, "/api/runs", min_cost="0.05", sort="cost")["runs"][0]["run_id"],
    )

    # the back button restores the previous filters
    page.go_back()
    page.wait_for_url(re.compile(r"min_cost=0.05(?!.*sort=cost)"))
    # the URL changes on popstate; the restored form follows once the page is swapped back
    _until(page, "document.querySelector('#f-sort')?.value === 'recent'")
    assert page.input_value("#f-sort") == "recent"
    assert page.input_value("#f-min-cost") == "0.05"

    # agent: type to search, then the list follows
    agent = all_runs["runs"][0]["agent_id"]
    page.goto(srv.url + "/")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "f-agent"
    page.keyboard.type(agent[:3])
    _until(
        page,
        "a => [...document.querySelectorAll('#agents option')].some(o => o.value === a)",
        arg=agent,
    )
    assert "agent=" not in page.url  # typing suggests; the list follows a chosen agent
    page.fill("#f-agent", agent)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"agent=" + re.escape(agent)))
    mine = _api(srv, "/api/runs", agent=agent, limit=1000)
    _until(
        page,
        "n => document.querySelector('#sum-runs')?.textContent === String(n)",
        arg=mine["summary"]["runs"],
    )
    agents = page.eval_on_selector_all("#runs li.card .agent", "els => els.map(e => e.textContent)")
    assert set(agents) == {agent}
    assert page.errors == []


def test_keyset_paging_loads_the_next_page(
    page: Any, served: tuple[ConsoleServer, Settings]
) -> None:
    srv, _ = served
    page.goto(srv.url + "/?limit=10")
    assert page.locator("#runs li.card").count() == 10
    page.click("#more a")
    _until(page, "() => document.querySelectorAll('#runs li.card').length === 20")
    ids = page.eval_on_selector_all("#runs li.card", "els => els.map(e => e.dataset.runId)")
    expected = [r["run_id"] for r in _api(srv, "/api/runs", limit=20)["runs"]]
    assert ids == expected


def test_export_with_a_filter_holds_exactly_the_filtered_runs(
    page: Any, served: tuple[ConsoleServer, Settings]
) -> None:
    srv, _ = served
    page.goto(srv.url + "/?status=completed&min_cost=0.02")
    with page.expect_download() as info:
        page.click("#export-csv")
    text = Path(info.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    expected = _api(srv, "/api/runs", status="completed", min_cost="0.02", limit=1000)["runs"]
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in expected]
    assert all(r["status"] == "completed" and float(r["cost"]) >= 0.02 for r in rows)
    assert [r["bundle_digest"] for r in rows] == [r["digest"] for r in expected]
    shown = page.eval_on_selector_all("#runs li.card", "els => els.map(e => e.dataset.runId)")
    assert shown == [r["run_id"] for r in rows]
    with page.expect_download() as info:
        page.click("#export-jsonl")
    lines = Path(info.value.path()).read_text(encoding="utf-8").splitlines()
    assert '"status":["completed"]' in lines[0] and '"min_cost":"0.02"' in lines[0]


# --------------------------------------------------------------------------- a run


def test_open_a_run_expand_an_action_and_inspect_it(
    page: Any, served: tuple[ConsoleServer, Settings]
) -> None:
    srv, _ = served
    run = _api(srv, "/api/runs", status="completed", min_cost="0.02", limit=1)["runs"][0]
    actions = _api(srv, f"/api/runs/{run['run_id']}/actions")["actions"]
    model = next(a for a in actions if a["type"] == "model_io")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=srv.url)
    page.goto(srv.url + "/")
    page.click(f'#runs li.card[data-run-id="{run["run_id"]}"] a.open')
    page.wait_for_url(re.compile("/runs/" + re.escape(run["run_id"])))
    page.wait_for_selector("#live.on")
    assert page.locator("#actions li.action").count() == len(actions)

    row = page.locator(f'#actions li[data-seq="{model["seq"]}"]')
    row.locator("summary").click()
    assert row.locator("details").get_attribute("open") is not None
    assert row.locator("pre.json .j-key").count() > 0
    page.wait_for_selector(f'#inspect[data-seq="{model["seq"]}"]')
    assert page.inner_text("#insp-event-id") == model["event"]["event_id"]
    assert page.inner_text("#insp-entry-hash") == model["entry_hash"]
    assert page.inner_text("#insp-prev-hash") == model["prev_hash"]
    assert page.inner_text("#insp-leaf").startswith(f"{model['seq']} of {len(actions)}")
    assert "verified" in page.inner_text("#insp-chain")
    assert page.locator("#insp-json .j-key").count() > 5
    assert page.locator("#bundle-digest").inner_text() == run["digest"]
    assert page.locator("#dag-graph g.node").count() > 0
    page.screenshot(path=str(DOCS_IMG / "console-run.png"))

    # copy JSON
    row.locator("button.copy").first.click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert '"' in copied and copied.strip().startswith("{")

    # expand all / search / outcome filter
    page.click("#expand-all")
    assert page.locator("#actions details[open]").count() == len(actions)
    page.keyboard.press("Escape")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("model_io")
    _until(
        page,
        "n => document.querySelectorAll('#actions li.action').length === n",
        arg=sum(1 for a in actions if a["type"] == "model_io"),
    )
    page.fill("#q", "")
    page.select_option("#outcome", "success")
    ok = [a for a in actions if a["outcome"] in ("success", "fallback", "approve", "edit")]
    _until(page, "n => document.querySelectorAll('#actions li.action').length === n", arg=len(ok))
    # t: the telemetry tab
    page.keyboard.press("Escape")
    page.keyboard.press("t")
    assert page.locator("#panel-telemetry").is_visible()
    assert page.errors == []


def test_a_running_runs_actions_appear_live(
    page: Any, served: tuple[ConsoleServer, Settings], browser: Any
) -> None:
    srv, settings = served
    reads = srv.app.reads
    registry = browser.new_page(viewport={"width": 1400, "height": 900})
    registry.goto(srv.url + "/")
    registry.wait_for_selector("#live.on")
    # inspecting the list (pointer over it): new runs wait behind a notice
    registry.hover("#runs li.card >> nth=2")
    with live_run(settings, agent_id="live-bot") as (rec, run):
        _wait(lambda: reads.run(run.run_id), "the run in the read model")
        registry.wait_for_selector("#new-runs:not([hidden])")
        assert registry.inner_text("#new-runs") == "1 new run"
        assert registry.locator(f'#runs li[data-run-id="{run.run_id}"]').count() == 0
        page.goto(srv.url + f"/runs/{run.run_id}")
        page.wait_for_selector("#live.on")
        with run.step("draft"):
            for i in range(3):
                run.model_io(
                    provider="openai", model="gpt-4.1", input_tokens=10 + i, output_tokens=4,
                    duration_ms=20, inputs={"turn": i}, outputs={"reply": f"answer {i}"},
                )  # fmt: skip
                rec.flush()
                seq = run.next_seq - 1
                page.wait_for_selector(f'#actions li[data-seq="{seq}"]')
        run.tool_call(name="send_email", duration_ms=3, outputs={"sent": True}, step_id="send")
        run.complete()
        rec.flush()
    page.wait_for_selector('#run-status:has-text("completed")')
    page.wait_for_selector("#bundle-digest")
    seqs = page.eval_on_selector_all("#actions li.action", "els => els.map(e => +e.dataset.seq)")
    assert seqs == list(range(len(reads.actions(run.run_id))))
    registry.click("#new-runs")
    registry.wait_for_selector(f'#runs li[data-run-id="{run.run_id}"]')
    registry.close()
    assert page.errors == []


def test_a_dropped_connection_reconnects_without_missing_an_event(
    page: Any, fleet: Path, tmp_path: Path
) -> None:
    path = copy_store(fleet, tmp_path / "reconnect.db")
    settings = settings_for(path)
    prepare(settings)
    worker = EmbeddedWorker(settings, poll_s=0.05).start()
    reads = ReadStore.open(settings.read_db_url(), create=False)
    srv = ConsoleServer(ConsoleApp(reads, ConsoleConfig(poll_s=0.05)), "127.0.0.1", 0).start()
    port = srv.port
    try:
        with live_run(settings, agent_id="flaky-link") as (rec, run):
            _wait(lambda: reads.run(run.run_id), "the run")
            page.goto(srv.url + f"/runs/{run.run_id}")
            page.wait_for_selector("#live.on")
            run.step_started("draft")
            rec.flush()
            page.wait_for_selector('#actions li[data-seq="1"]')
            srv.stop()  # the connection drops; the page keeps trying
            page.wait_for_selector("#live:not(.on)")
            for i in range(4):
                run.tool_call(name=f"tool-{i}", duration_ms=1, outputs={"i": i}, step_id="draft")
            run.step_completed("draft", outcome="success", duration_ms=5)
            run.complete()
            rec.flush()
            _wait(lambda: (r := reads.run(run.run_id)) and r.status == "completed", "completed")
            srv = ConsoleServer(
                ConsoleApp(reads, ConsoleConfig(poll_s=0.05)), "127.0.0.1", port
            ).start()
            page.wait_for_selector("#live.on", timeout=15_000)
            page.wait_for_selector('#run-status:has-text("completed")')
        total = len(reads.actions(run.run_id))
        page.wait_for_selector(f'#actions li[data-seq="{total - 1}"]')
        seqs = page.eval_on_selector_all(
            "#actions li.action", "els => els.map(e => +e.dataset.seq)"
        )
        assert seqs == list(range(total))
    finally:
        srv.stop()
        worker.stop()
        reads.close()


# --------------------------------------------------------------------------- safety


def test_recorded_script_payloads_execute_nothing(page: Any, fleet: Path, tmp_path: Path) -> None:
    path = copy_store(fleet, tmp_path / "hostile.db")
    settings = settings_for(path)
    run_id = record_hostile_run(settings)
    process(settings)
    violations: list[str] = []

    def dialog(d: Any) -> None:
        violations.append(f"dialog {d.message}")
        d.dismiss()

    page.on("dialog", dialog)
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    with console(settings, port=0, process=False) as srv:
        srv.start()
        try:
            page.goto(srv.url + "/")
            card = page.locator(f'#runs li[data-run-id="{run_id}"]')
            assert card.locator(".agent").inner_text() == XSS_AGENT + XSS_IMG
            page.hover(f'#runs li[data-run-id="{run_id}"] .agent')
            page.goto(srv.url + "/?" + str(httpx.QueryParams({"agent": XSS_AGENT + XSS_IMG})))
            assert page.locator("#runs li.card").count() == 1
            page.goto(srv.url + f"/runs/{run_id}")
            page.click("#expand-all")
            for summary in page.locator("#actions summary").all():
                summary.click()
                page.wait_for_selector("#inspect")
            page.mouse.move(400, 400)
            assert XSS_IMG in page.inner_text("#actions")
            assert XSS_AGENT in page.inner_text("#run-agent")
            page.wait_for_timeout(300)
            assert page.evaluate("typeof window.__xss") == "undefined"
            assert page.locator("img").count() == 0
            assert page.locator("#actions script, #inspector script, #runs script").count() == 0
            assert page.locator("b[onmouseover]").count() == 0
        finally:
            srv.stop()
    assert violations == []


def test_a_non_loopback_console_refuses_every_route_without_its_token(
    page: Any, fleet: Path
) -> None:
    token = "browser-token-0123456789"
    reads = ReadStore.open(settings_for(fleet).read_db_url(), create=False)
    srv = ConsoleServer(
        ConsoleApp(reads, ConsoleConfig(token=token, loopback=False)), "127.0.0.1", 0
    )
    srv.start()
    try:
        run_id = reads.runs(RunQuery(limit=1)).runs[0].run_id
        spec_paths = [
            "/api/runs", "/api/summary", f"/api/runs/{run_id}", f"/api/runs/{run_id}/actions",
            f"/api/runs/{run_id}/bundle", f"/api/runs/{run_id}/signature", "/api/intercepts",
            "/api/costs", "/api/agents", "/api/export", "/api/events", "/api/openapi.json",
            "/", f"/runs/{run_id}", "/static/console.js", "/static/htmx.min.js", "/ui/runs",
        ]  # fmt: skip
        for path in spec_paths:
            response = page.goto(srv.url + path)
            assert response is not None and response.status == 401, path
            assert run_id not in page.content()
        status = page.evaluate("fetch('/api/events').then(r => r.status)")
        assert status == 401
        page.goto(srv.url + f"/?token={token}")
        assert "token=" not in page.url
        page.wait_for_selector("#runs li.card")
        page.wait_for_selector("#live.on")
        page.goto(srv.url + f"/runs/{run_id}")
        page.wait_for_selector("#live.on")
    finally:
        srv.stop()
        reads.close()
