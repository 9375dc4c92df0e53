"""What the console's pages, stream and export are computed from: the read model's
additions (recorded chain hashes, the change feed bounded by its head) on SQLite and a
real PostgreSQL, and the pure modules rundetail, livefeed and runexport."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleetledger.kernel.config import parse_read_db_url
from fleetledger.kernel.errors import ConfigError
from fleetledger.processors.livefeed import Subscription, events, runs_wanted
from fleetledger.processors.readmodel import InterceptQuery, RunFilter, RunQuery
from fleetledger.processors.readstore import ReadStore
from fleetledger.processors.rundetail import ActionFilter, check_chain, layout_dag, run_detail
from fleetledger.processors.runexport import ACTION_COLUMNS, RUN_COLUMNS, export_chunks

from .test_readmodel_contract import CONSUMER, output_stream, tracked


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReadStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'read.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = ReadStore.open(parse_read_db_url(url), create=True)
    try:
        s.apply(CONSUMER, tracked(output_stream(8, 21)))
        yield s
    finally:
        s.close()


def _finished(store: ReadStore) -> Any:
    return store.runs(RunQuery(RunFilter(status=("completed",)), limit=1)).runs[0]


def test_actions_keep_their_recorded_chain_hashes(store: ReadStore) -> None:
    run = _finished(store)
    actions = store.actions(run.run_id)
    bundle = orjson.loads(store.bundle(run.run_id) or b"{}")
    assert [a.entry_hash for a in actions] == [e["entry_hash"] for e in bundle["events"]]
    assert [a.event_hash for a in actions] == [e["event_hash"] for e in bundle["events"]]
    assert actions[0].prev_hash == bundle["chain"]["genesis"]
    assert [a.prev_hash for a in actions[1:]] == [a.entry_hash for a in actions[:-1]]
    check = check_chain(run.run_id, actions)
    assert check.verified is True and check.checked == len(actions)


def test_the_change_feed_reads_up_to_its_head_in_position_order(store: ReadStore) -> None:
    head = store.position()
    feed = store.changes(0, limit=100_000)
    positions = [c.position for c in feed]
    assert positions == sorted(set(positions)) and positions[-1] <= head
    # paging by the last position returned sees every change once
    paged, after = [], 0
    while chunk := store.changes(after, limit=17):
        paged += chunk
        after = chunk[-1].position
    assert [c.position for c in paged] == positions
    assert store.changes(head) == []
    assert {c.kind for c in feed} == {"run", "action", "intercept"}


def test_run_filter_matches_like_the_query(store: ReadStore) -> None:
    everything = store.runs(RunQuery(limit=1000)).runs
    cut = sorted(r.started_at for r in everything if r.started_at)[3]
    for f in (
        RunFilter(status=("failed",)),
        RunFilter(min_cost=Decimal("0.01")),
        RunFilter(since=cut),
        RunFilter(until=cut),
        RunFilter(agent=everything[0].agent_id, tenant=everything[0].tenant),
    ):
        by_sql = {r.run_id for r in store.runs(RunQuery(f, limit=1000)).runs}
        assert by_sql == {r.run_id for r in everything if f.matches(r)}, f


def test_live_events_name_each_change_once(store: ReadStore) -> None:
    feed = store.changes(0, limit=100_000)
    runs = {r: row for r in runs_wanted(feed) if (row := store.run(r)) is not None}
    out = events(feed, Subscription(), runs)
    names = [e.name for e in out]
    finished = store.runs(RunQuery(RunFilter(status=("completed", "failed")), limit=1000)).runs
    assert names.count("run_created") == len(runs) == 8
    assert names.count("run_completed") + names.count("run_failed") == len(finished)
    assert [e.id for e in out] == sorted({e.id for e in out})
    one = finished[0].run_id
    mine = events(feed, Subscription(run_id=one), runs)
    assert {e.run_id for e in mine} == {one}
    seqs = [e.action.seq for e in mine if e.action is not None]
    assert seqs == list(range(len(store.actions(one))))
    quiet = events(feed, Subscription(actions=False), runs)
    assert "action_created" not in {e.name for e in quiet}
    other = events(feed, Subscription(filter=RunFilter(tenant="nobody")), runs)
    assert other == []


def test_run_detail_from_the_rows_and_the_bundle(store: ReadStore) -> None:
    run = _finished(store)
    actions = store.actions(run.run_id)
    intercepts = store.intercepts(InterceptQuery(run_id=run.run_id)).intercepts
    bundle = store.bundle(run.run_id)
    d = run_detail(run, actions, intercepts, bundle)
    doc = orjson.loads(bundle or b"{}")
    assert d.digest == doc["integrity"]["digest"] and d.merkle_size == len(actions)
    assert d.chain.bundle is True and d.chain.merkle_root == doc["merkle"]["root"]
    assert [dict(g) for g in d.gates] == doc["gates"]
    assert [dict(a) for a in d.artifacts] == doc["artifacts"]
    assert [dict(r) for r in d.recovery] == doc["recovery"]
    by_step = {c.name: c.cost for c in d.cost_by_step if c.cost}
    assert by_step == {k: Decimal(v) for k, v in doc["costs"]["by_step"].items() if Decimal(v)}
    by_model = sum((c.cost for c in d.cost_by_model), Decimal(0))
    assert by_model == Decimal(doc["costs"]["total"])
    assert d.dag is not None and {n.id for n in d.dag.nodes} == {
        s["id"] for s in doc["workflow"]["steps"]
    }
    # a tampered event breaks the chain at its seq, and the page says where
    bad = list(actions)
    event = dict(bad[2].event)
    event["ts"] = "2030-01-01T00:00:00.000Z"
    bad[2] = replace(bad[2], event=event)
    check = check_chain(run.run_id, bad)
    assert check.verified is False and set(check.problems) == {2}
    assert "seq 2" in check.detail


def test_layout_puts_every_edge_forward_and_survives_cycles() -> None:
    wf = {
        "name": "w",
        "revision": "1",
        "steps": [{"id": i, "name": i.upper(), "kind": "llm"} for i in "abcd"],
        "edges": [
            {"source": "a", "target": "b"},
            {"source": "a", "target": "c"},
            {"source": "b", "target": "d"},
            {"source": "c", "target": "d"},
            {"source": "d", "target": "zz"},
        ],
    }
    dag = layout_dag(wf)
    layer = {n.id: n.layer for n in dag.nodes}
    assert layer == {"a": 0, "b": 1, "c": 1, "d": 2}
    assert all(layer[e.target] > layer[e.source] for e in dag.edges)
    assert len(dag.edges) == 4 and dag.layers == 3 and dag.rows == 2
    cyclic = {**wf, "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}]}
    assert len(layout_dag(cyclic).nodes) == 4


def test_action_filter_by_text_and_outcome(store: ReadStore) -> None:
    run = _finished(store)
    actions = store.actions(run.run_id)
    assert ActionFilter().apply(actions) == actions
    models = ActionFilter("MODEL_IO").apply(actions)
    assert models and all(a.type == "model_io" for a in models)
    some = actions[3]
    assert some in ActionFilter(str(some.event["event_id"])).apply(actions)
    errors = ActionFilter(outcome="error").apply(actions)
    assert all(a.outcome == "error" for a in errors)
    with pytest.raises(ConfigError):
        ActionFilter(outcome="meh")


def test_export_formats_and_columns(store: ReadStore) -> None:
    f = RunFilter(status=("completed",))
    runs = store.runs(RunQuery(f, limit=1000)).runs
    now = datetime(2027, 1, 1, tzinfo=UTC)
    rows = [(r, store.actions(r.run_id)) for r in runs]
    text = b"".join(export_chunks("csv", "runs", f, "recent", rows, now)).decode()
    table = list(csv.DictReader(io.StringIO(text)))
    assert tuple(text.splitlines()[0].split(",")) == RUN_COLUMNS
    assert [t["run_id"] for t in table] == [r.run_id for r in runs]
    assert [t["bundle_digest"] for t in table] == [r.digest for r in runs]
    text = b"".join(export_chunks("csv", "actions", f, "recent", rows, now)).decode()
    assert tuple(text.splitlines()[0].split(",")) == ACTION_COLUMNS
    assert len(list(csv.DictReader(io.StringIO(text)))) == sum(len(a) for _, a in rows)
    doc = orjson.loads(b"".join(export_chunks("json", "actions", f, "recent", rows, now)))
    assert doc["count"] == len(runs) and doc["export"]["filter"]["status"] == ["completed"]
    assert len(doc["runs"][0]["actions"]) == len(rows[0][1])
    empty = orjson.loads(b"".join(export_chunks("json", "runs", f, "recent", [], now)))
    assert empty["runs"] == [] and empty["count"] == 0
    with pytest.raises(ConfigError):
        list(export_chunks("xml", "runs", f, "recent", [], now))
