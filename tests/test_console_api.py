"""The console's server side over real HTTP: the JSON API against the OpenAPI description
it publishes, the event stream's ids and resume, the export's columns and rows, and the
guard (token, host, read-only, headers)."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator

from fleetledger.console.app import ConsoleApp, ConsoleConfig
from fleetledger.console.security import CSP, check_bind
from fleetledger.console.server import ConsoleServer, console
from fleetledger.kernel.errors import ConfigError
from fleetledger.processors.evidence import verify_bundle_bytes
from fleetledger.processors.export import export_bundle
from fleetledger.processors.livefeed import EVENT_NAMES
from fleetledger.processors.readstore import ReadStore
from fleetledger.processors.runexport import ACTION_COLUMNS, RUN_COLUMNS

from .console_support import copy_store, live_run, settings_for

TOKEN = "s3cret-console-token-0123"


@pytest.fixture(scope="module")
def fleet(console_fleet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_store(console_fleet, tmp_path_factory.mktemp("api") / "fleet.db")


@pytest.fixture(scope="module")
def server(fleet: Path) -> Iterator[ConsoleServer]:
    with console(settings_for(fleet), port=0, process=False) as srv:
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture(scope="module")
def client(server: ConsoleServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def _finished_run(client: httpx.Client) -> dict[str, Any]:
    runs = client.get("/api/runs", params={"status": "completed", "limit": 1}).json()["runs"]
    assert runs, "the fleet has a completed run"
    return dict(runs[0])


def _validator(spec: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": spec["components"]})


def _read_sse(
    url: str, *, headers: dict[str, str] | None = None, until_id: int, timeout: float = 20
) -> list[tuple[int, str, dict[str, Any]]]:
    """Events of the stream until one with an id >= ``until_id`` (or an id line) arrives."""
    out: list[tuple[int, str, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    with (
        httpx.Client(timeout=httpx.Timeout(5, read=timeout)) as c,
        c.stream("GET", url, headers=headers or {}) as r,
    ):
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        ev: dict[str, str] = {}
        for line in r.iter_lines():
            if time.monotonic() > deadline:
                raise AssertionError(f"stream did not reach id {until_id}; got {out[-3:]}")
            if line == "":
                if "data" in ev:
                    out.append((int(ev["id"]), ev["event"], orjson.loads(ev["data"])))
                if "id" in ev and int(ev["id"]) >= until_id:
                    return out
                ev = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            ev[name] = value[1:] if value.startswith(" ") else value
    return out


# --------------------------------------------------------------------------- OpenAPI


def test_every_documented_route_answers_as_described(
    client: httpx.Client, server: ConsoleServer
) -> None:
    spec = client.get("/api/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    documented = {p for p in paths}
    routes = {
        getattr(r, "path", "")
        for r in server.app.api.routes
        if getattr(r, "path", "").startswith("/api/") and r.path != "/api/openapi.json"  # type: ignore[attr-defined]
    }
    assert routes == documented, "every API route is documented, and only those"
    run = _finished_run(client)
    checked = 0
    for path, item in sorted(paths.items()):
        assert set(item) == {"get"}, f"{path}: the API is read-only"
        op = item["get"]
        url = path.replace("{run_id}", run["run_id"])
        for param in op.get("parameters", []):
            assert param["in"] in ("query", "path", "header"), param
            assert param.get("description") or param["in"] != "query", f"{path} {param['name']}"
        ok = op["responses"]["200"]
        content = ok["content"]
        if "text/event-stream" in content:
            events = _read_sse(server.url + url + "?from=0", until_id=1)
            assert events and events[0][0] == 1 and events[0][1] in EVENT_NAMES
            checked += 1
            continue
        if path.endswith("/signature"):
            # the fleet is not signed: the documented 404 answers, with its schema
            r = client.get(url)
            assert r.status_code == 404
            _validator(
                spec, op["responses"]["404"]["content"]["application/json"]["schema"]
            ).validate(r.json())
            checked += 1
            continue
        r = client.get(url)
        assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:300]}"
        media = r.headers["content-type"].split(";")[0]
        assert media in content, f"{url}: {media} is not among {sorted(content)}"
        if media == "application/json":
            _validator(spec, content[media]["schema"]).validate(r.json())
        checked += 1
        for code in ("400", "404"):
            if code not in op["responses"]:
                continue
            bad = (
                url.replace(run["run_id"], "no-such-run")
                if code == "404"
                else url + ("&" if "?" in url else "?") + "min_cost=abc&window=bogus&severity=x"
            )
            if code == "400" and "{run_id}" in path:
                bad = url + "?outcome=bogus"
            r = client.get(bad)
            assert r.status_code == int(code), f"{bad}: {r.status_code}"
            schema = op["responses"][code]["content"]["application/json"]["schema"]
            _validator(spec, schema).validate(r.json())
    assert checked == len(paths)


def test_the_bundle_route_serves_the_exported_bundle_and_it_verifies(
    client: httpx.Client, fleet: Path
) -> None:
    run = _finished_run(client)
    r = client.get(f"/api/runs/{run['run_id']}/bundle")
    assert r.status_code == 200
    with ReadStore.open(settings_for(fleet).read_db_url(), create=False) as store:
        stored = store.bundle(run["run_id"])
    assert stored is not None
    assert r.content == export_bundle(stored, "json").data
    verified = verify_bundle_bytes(r.content)
    assert verified.digest == run["digest"]
    detail = client.get(f"/api/runs/{run['run_id']}").json()
    assert detail["chain"]["verified"] is True and detail["chain"]["bundle_verified"] is True


def test_registry_pages_cover_the_filter_exactly_once(client: httpx.Client) -> None:
    everything = client.get("/api/runs", params={"limit": 1000}).json()
    completed = [r for r in everything["runs"] if r["status"] == "completed"]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"status": "completed", "limit": 7}
        if cursor:
            params["after"] = cursor
        page = client.get("/api/runs", params=params).json()
        assert page["summary"]["runs"] == len(completed)
        seen += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r["run_id"] for r in completed]
    by_cost = client.get("/api/runs", params={"sort": "cost", "limit": 1000}).json()["runs"]
    costs = [float(r["cost"]) for r in by_cost]
    assert costs == sorted(costs, reverse=True)
    expensive = client.get("/api/runs", params={"min_cost": "0.05", "limit": 1000}).json()
    assert all(float(r["cost"]) >= 0.05 for r in expensive["runs"])
    assert expensive["summary"]["runs"] == len(expensive["runs"]) < len(everything["runs"])


# --------------------------------------------------------------------------- export


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_holds_the_filtered_runs_with_their_digests(client: httpx.Client) -> None:
    filt = {"status": "failed"}
    expected = client.get("/api/runs", params={**filt, "limit": 1000}).json()["runs"]
    assert expected, "the fleet has failed runs"
    r = client.get("/api/export", params={**filt, "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    header = r.text.splitlines()[0].split(",")
    assert tuple(header) == RUN_COLUMNS
    rows = _csv(r.text)
    assert [row["run_id"] for row in rows] == [run["run_id"] for run in expected]
    for row, run in zip(rows, expected, strict=True):
        assert row["bundle_digest"] == run["digest"]
        assert row["status"] == "failed"
        assert row["cost"] == run["cost"]
        assert row["filter"] == "status=failed&sort=recent"

    r = client.get("/api/export", params={**filt, "format": "csv", "include": "actions"})
    assert tuple(r.text.splitlines()[0].split(",")) == ACTION_COLUMNS
    rows = _csv(r.text)
    assert len(rows) == sum(run["events"] for run in expected)
    assert {row["run_id"] for row in rows} == {run["run_id"] for run in expected}
    model = next(row for row in rows if row["type"] == "model_io")
    assert model["provider"] and model["input_tokens"].isdigit()
    orjson.loads(model["payload"])  # documents are JSON text, everything else is flat

    r = client.get("/api/export", params={**filt, "format": "jsonl", "include": "actions"})
    lines = [orjson.loads(line) for line in r.text.splitlines()]
    assert lines[0]["kind"] == "export" and lines[0]["filter"]["status"] == ["failed"]
    assert [x["run_id"] for x in lines if x["kind"] == "run"] == [x["run_id"] for x in expected]
    assert lines[-1] == {"kind": "end", "count": len(expected)}
    assert all(x["bundle_digest"] for x in lines if x["kind"] == "run")

    doc = client.get("/api/export", params={**filt, "format": "json"}).json()
    assert doc["export"]["filter"]["status"] == ["failed"]
    assert doc["count"] == len(expected) == len(doc["runs"])
    assert client.get("/api/export", params={"format": "xml"}).status_code == 400


# --------------------------------------------------------------------------- events


def test_stream_ids_are_positions_and_a_resume_misses_nothing(
    console_fleet: Path, tmp_path: Path
) -> None:
    path = copy_store(console_fleet, tmp_path / "live.db")
    settings = settings_for(path)
    with console(settings, port=0, poll_s=0.05) as srv:
        srv.start()
        reads = srv.app.reads
        head = reads.position()
        # the whole feed from the start: ids strictly increasing, ending at the head
        everything = _read_sse(
            srv.url + "/api/events", headers={"Last-Event-ID": "0"}, until_id=head
        )
        ids = [i for i, _, _ in everything]
        assert ids == sorted(set(ids)) and ids[-1] <= head
        names = {n for _, n, _ in everything}
        assert {
            "run_created",
            "action_created",
            "run_updated",
            "run_completed",
            "run_failed",
        } <= names
        # resuming after any id gives exactly the rest
        middle = ids[len(ids) // 2]
        rest = _read_sse(
            srv.url + "/api/events", headers={"Last-Event-ID": str(middle)}, until_id=head
        )
        assert rest == [e for e in everything if e[0] > middle]
        # a run recorded while subscribed, with the connection dropped half-way
        with live_run(settings) as (rec, run):
            rec.flush()
            first = _wait_run(reads, run.run_id)
            with run.step("draft"):
                run.model_io(
                    provider="openai", model="gpt-4.1", input_tokens=3, output_tokens=2,
                    duration_ms=5, inputs={"q": "one"}, outputs={"reply": "one"},
                )  # fmt: skip
            rec.flush()
            _wait_events(reads, run.run_id, 4)
            url = srv.url + f"/api/events?run={run.run_id}"
            part1 = _read_sse(
                url, headers={"Last-Event-ID": str(first - 1)}, until_id=reads.position()
            )
            last = part1[-1][0]
            # disconnected: more is recorded and processed
            run.tool_call(name="lookup", duration_ms=1, outputs={"n": 1})
            run.complete()
            rec.flush()
            _wait_status(reads, run.run_id, "completed")
            part2 = _read_sse(url, headers={"Last-Event-ID": str(last)}, until_id=reads.position())
        seqs = [
            d["action"]["seq"]
            for _, n, d in part1 + part2
            if n in ("action_created", "run_created", "run_completed") and d.get("action")
        ]
        assert seqs == list(range(len(reads.actions(run.run_id))))
        assert [n for _, n, _ in part1 + part2].count("run_created") == 1
        assert [n for _, n, _ in part1 + part2].count("run_completed") == 1
        assert all(d["run_id"] == run.run_id for _, _, d in part1 + part2)
        srv.stop()


def _wait(cond: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_run(reads: Any, run_id: str) -> int:
    actions = _wait(lambda: reads.actions(run_id), f"run {run_id}")
    return int(actions[0].position)


def _wait_events(reads: Any, run_id: str, n: int) -> None:
    _wait(lambda: len(reads.actions(run_id)) >= n, f"{n} events of {run_id}")


def _wait_status(reads: Any, run_id: str, status: str) -> None:
    _wait(lambda: (r := reads.run(run_id)) is not None and r.status == status, status)


# --------------------------------------------------------------------------- the guard


def test_a_non_loopback_bind_needs_a_token(fleet: Path) -> None:
    with pytest.raises(ConfigError, match="FLEETLEDGER_CONSOLE_TOKEN"):
        check_bind("0.0.0.0", None)
    with (
        pytest.raises(ConfigError, match="not loopback"),
        console(settings_for(fleet), host="0.0.0.0"),
    ):
        pass
    check_bind("0.0.0.0", TOKEN)
    check_bind("127.0.0.1", None)
    check_bind("::1", None)


@pytest.fixture(scope="module")
def guarded(fleet: Path) -> Iterator[ConsoleServer]:
    """A console configured as a non-loopback bind with a token (served on 127.0.0.1)."""
    reads = ReadStore.open(settings_for(fleet).read_db_url(), create=False)
    app = ConsoleApp(reads, ConsoleConfig(token=TOKEN, loopback=False))
    srv = ConsoleServer(app, "127.0.0.1", 0).start()
    try:
        yield srv
    finally:
        srv.stop()
        reads.close()


def _all_urls(client: httpx.Client, spec: dict[str, Any], run_id: str) -> list[str]:
    urls = [p.replace("{run_id}", run_id) for p in spec["paths"]]
    return [
        *urls,
        "/api/openapi.json",
        "/",
        f"/runs/{run_id}",
        f"/ui/runs/{run_id}/card",
        f"/ui/runs/{run_id}/actions/0",
        "/static/console.js",
        "/static/htmx.min.js",
        "/nope",
    ]


def test_without_the_token_every_route_is_refused(
    guarded: ConsoleServer, client: httpx.Client
) -> None:
    spec = client.get("/api/openapi.json").json()
    run_id = _finished_run(client)["run_id"]
    urls = _all_urls(client, spec, run_id)
    with httpx.Client(base_url=guarded.url, timeout=10) as anon:
        for url in urls:
            r = anon.get(url)
            assert r.status_code == 401, url
            assert r.headers["content-security-policy"] == CSP
            assert run_id not in r.text
            r = anon.get(url, headers={"Authorization": "Bearer not-the-token-000000"})
            assert r.status_code == 401, url
        stream = _read_sse_status(guarded.url + "/api/events")
        assert stream == 401
    with httpx.Client(
        base_url=guarded.url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as tool:
        for url in urls[:-1]:
            if url.endswith("/events"):
                continue
            r = tool.get(url)
            assert r.status_code in (200, 404), url  # 404: no signature for this fleet
        assert tool.get("/nope").status_code == 404
    # a browser's first visit with ?token=: a cookie, and the token leaves the address
    with httpx.Client(base_url=guarded.url, timeout=10) as browser:
        r = browser.get("/", params={"token": TOKEN, "status": "failed"})
        assert r.status_code == 303
        assert r.headers["location"] == "/?status=failed"
        assert (
            "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
        )
        assert browser.get("/?status=failed").status_code == 200
        assert browser.get(f"/api/runs/{run_id}").status_code == 200


def _read_sse_status(url: str) -> int:
    with httpx.Client(timeout=5) as c, c.stream("GET", url) as r:
        return r.status_code


def test_the_console_is_read_only_and_answers_loopback_names_only(client: httpx.Client) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = client.request(method, "/api/runs")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    r = client.get("/api/runs", headers={"Host": "rebound.example:8760"})
    assert r.status_code == 421
    r = client.get("/", headers={"Host": "localhost:8760"})
    assert r.status_code == 200
    for header in ("content-security-policy", "x-content-type-options", "referrer-policy"):
        assert header in r.headers
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "unsafe-inline" not in r.headers["content-security-policy"]


def test_the_console_command_refuses_a_public_bind_without_a_token(
    fleet: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleetledger.cli.commands import main

    monkeypatch.delenv("FLEETLEDGER_CONSOLE_TOKEN", raising=False)
    assert main(["console", "--broker", f"sqlite:///{fleet}", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "not loopback" in err and "FLEETLEDGER_CONSOLE_TOKEN" in err
    monkeypatch.setenv("FLEETLEDGER_CONSOLE_TOKEN", "short")
    assert main(["console", "--broker", f"sqlite:///{fleet}"]) == 2
    assert "console_token" in capsys.readouterr().err.lower()
