"""The read model's contract, run against SQLite and a real PostgreSQL server.

Same input -> same rows; the input twice -> same rows; a crash injected before every
statement of every transaction (so between every pair of writes) -> no loss and no
duplicate once the consumer resumes; and the queries answer the same on both engines.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import event

from fleetledger.kernel.config import parse_read_db_url
from fleetledger.kernel.errors import StoreError
from fleetledger.processors.memory import memory_pipeline
from fleetledger.processors.pipeline import SourcePosition
from fleetledger.processors.readmodel import (
    InterceptQuery,
    OutputRecord,
    RunFilter,
    RunQuery,
    Sort,
    project,
    records_of,
)
from fleetledger.processors.readstore import ReadStore, TrackedRecord
from fleetledger.producers import MemoryTransport, Recorder
from fleetledger.producers.simulator import simulate

CONSUMER = "contract"
SORT_ORDERS: tuple[Sort, ...] = ("recent", "cost")


async def _messages(runs: int, seed: int) -> list[tuple[str, bytes]]:
    transport = MemoryTransport()
    async with Recorder(transport) as rec:
        await simulate(rec, runs=runs, seed=seed)
    return transport.messages


@cache
def output_stream(runs: int, seed: int) -> tuple[OutputRecord, ...]:
    """The processors' outputs for a simulated fleet, in publication order."""
    pipe = memory_pipeline()
    now = datetime(2027, 1, 1, tzinfo=UTC)
    out: list[OutputRecord] = []
    messages = asyncio.run(_messages(runs, seed))
    for i in range(0, len(messages), 7):
        chunk = messages[i : i + 7]
        positions = [(v, SourcePosition("events", 0, i + j)) for j, (_k, v) in enumerate(chunk)]
        out += records_of(pipe.handle_many(positions, now))
    return tuple(out)


def tracked(records: Any, start: int = 0, topic: str = "outputs") -> list[TrackedRecord]:
    return [TrackedRecord(topic, 0, start + i, r) for i, r in enumerate(records)]


@pytest.fixture(params=["sqlite", "postgresql"])
def read_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'read.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(read_url: str) -> Iterator[ReadStore]:
    s = ReadStore.open(parse_read_db_url(read_url), create=True)
    try:
        yield s
    finally:
        s.close()


def apply_in_batches(store: ReadStore, records: list[TrackedRecord], size: int) -> None:
    for i in range(0, len(records), size):
        store.apply(CONSUMER, records[i : i + size])


def reference(records: Any) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of ``records`` applied in one go to a fresh SQLite read model."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ref = ReadStore.open(parse_read_db_url(f"sqlite:///{d}/ref.db"), create=True)
        try:
            ref.apply(CONSUMER, tracked(records))
            return ref.dump()
        finally:
            ref.close()


def test_same_input_gives_the_same_rows_in_any_batching(store: ReadStore) -> None:
    records = output_stream(8, 21)
    apply_in_batches(store, tracked(records), 13)
    assert store.dump() == reference(records)
    counts = store.table_counts()
    projected = project(records)
    assert counts["rm_runs"] == len(projected.runs) == 8
    assert counts["rm_actions"] == len(projected.actions)
    assert counts["rm_bundles"] == 8
    assert counts["rm_intercepts"] == len(projected.intercepts)


def test_the_input_twice_gives_the_same_rows(store: ReadStore) -> None:
    records = output_stream(8, 21)
    first = tracked(records)
    apply_in_batches(store, first, 50)
    once, head = store.dump(), store.position()
    # the same positions again (a consumer restarted from an older offset): skipped
    result = store.apply(CONSUMER, first)
    assert result.skipped == len(first) and result.applied == 0
    assert store.position() == head
    # the same outputs at new positions (the worker re-published them after a crash)
    apply_in_batches(store, tracked(records, start=len(records)), 31)
    assert store.dump() == once
    positions = store.positions(CONSUMER)
    assert positions == {("outputs", 0): 2 * len(records)}


def test_an_older_totals_value_never_overwrites_a_newer_one(store: ReadStore) -> None:
    records = output_stream(4, 3)
    store.apply(CONSUMER, tracked(records))
    totals = [r for r in records if r.role == "totals"]
    first_of_each: dict[str, OutputRecord] = {}
    for r in totals:
        first_of_each.setdefault(r.key, r)
    store.apply(CONSUMER, tracked(first_of_each.values(), start=len(records)))
    assert store.dump() == reference(records)


def test_a_crash_before_any_statement_loses_and_duplicates_nothing(
    store: ReadStore, read_url: str
) -> None:
    records = tracked(output_stream(3, 8))
    expected = reference(r.record for r in records)
    batch = 40

    class Crash(Exception):
        pass

    statements = {"n": 0, "crash_at": -1}

    def before(*_args: Any) -> None:
        statements["n"] += 1
        if statements["n"] == statements["crash_at"]:
            raise Crash

    engine = store._engine
    event.listen(engine, "before_cursor_execute", before)

    def consume() -> None:
        """A consumer that restarts from offset 0 after every crash (worst redelivery)."""
        while True:
            try:
                apply_in_batches(store, records, batch)
                return
            except (Crash, StoreError) as exc:
                assert (
                    isinstance(exc, Crash)
                    or isinstance(exc.__cause__, Crash)
                    or ("Crash" in str(exc))
                )

    consume()  # count the statements of a clean run
    total = statements["n"]
    assert store.dump() == expected
    assert total > 3 * (len(records) // batch)
    for crash_at in range(1, total + 1):
        _reset(store)
        statements.update(n=0, crash_at=crash_at)
        consume()
        assert store.dump() == expected, f"crash before statement {crash_at} of {total}"
        assert store.positions(CONSUMER) == {("outputs", 0): len(records)}


def _reset(store: ReadStore) -> None:
    from sqlalchemy import delete, update

    from fleetledger.processors.readstore import schema as s

    with store._engine.begin() as conn:
        for t in s.TABLES:
            if t.name not in (s.head.name,):
                conn.execute(delete(t))
        conn.execute(update(s.head).values(position=0))


def test_both_engines_hold_the_same_rows_and_answer_the_same(
    tmp_path: Path, postgres_url: str
) -> None:
    records = tracked(output_stream(10, 4))
    stores = [
        ReadStore.open(parse_read_db_url(f"sqlite:///{tmp_path / 'a.db'}"), create=True),
        ReadStore.open(parse_read_db_url(postgres_url), create=True),
    ]
    try:
        for s in stores:
            apply_in_batches(s, records, 64)
        lite, pg = stores
        assert lite.dump() == pg.dump()
        some = lite.runs(RunQuery(limit=1)).runs[0]
        for f in (
            RunFilter(),
            RunFilter(status=("failed",)),
            RunFilter(agent=some.agent_id),
            RunFilter(tenant=some.tenant, min_cost=Decimal("0.01")),
            RunFilter(min_cost=Decimal("0.05"), since=datetime(2026, 1, 1, tzinfo=UTC)),
            RunFilter(min_cost=Decimal("0.05"), until=datetime(2030, 1, 1, tzinfo=UTC)),
            RunFilter(
                since=some.started_at,
                until=(some.started_at or datetime.now(UTC)) + timedelta(days=1),
            ),
        ):
            for sort in SORT_ORDERS:
                pages = []
                for st in stores:
                    ids: list[str] = []
                    cursor = None
                    while True:
                        page = st.runs(RunQuery(f, sort, 3, cursor))
                        ids += [r.run_id for r in page.runs]
                        cursor = page.next_cursor
                        if cursor is None:
                            break
                    pages.append(ids)
                assert pages[0] == pages[1], (f, sort)
                assert len(set(pages[0])) == len(pages[0]) == lite.count(f)
            assert lite.summary(f) == pg.summary(f)
            # serialized: the same JSON text, so the same types (no Decimal counts)
            assert orjson.dumps(lite.costs(f).to_json()) == orjson.dumps(pg.costs(f).to_json())
            assert orjson.dumps(lite.summary(f).to_json()) == orjson.dumps(pg.summary(f).to_json())
        assert lite.intercepts(InterceptQuery(limit=5)) == pg.intercepts(InterceptQuery(limit=5))
        assert [c.position for c in lite.changes(0)] == [c.position for c in pg.changes(0)]
    finally:
        for s in stores:
            s.close()


def test_queries_filter_sort_and_page(store: ReadStore) -> None:
    records = output_stream(12, 5)
    store.apply(CONSUMER, tracked(records))
    runs = list(store.runs(RunQuery(limit=1000)).runs)
    assert len(runs) == 12
    started = [r.started_at for r in runs if r.started_at is not None]
    assert len(started) == 12 and started == sorted(started, reverse=True)  # newest first
    by_cost = [r.cost for r in store.runs(RunQuery(sort="cost", limit=1000)).runs]
    assert by_cost == sorted(by_cost, reverse=True)
    threshold = sorted(r.cost for r in runs)[6]
    rich = store.runs(RunQuery(RunFilter(min_cost=threshold), limit=1000)).runs
    assert {r.run_id for r in rich} == {r.run_id for r in runs if r.cost >= threshold}
    failed = store.runs(RunQuery(RunFilter(status=("failed",)), limit=1000)).runs
    assert {r.run_id for r in failed} == {r.run_id for r in runs if r.status == "failed"}
    agent = runs[0].agent_id
    mine = store.runs(RunQuery(RunFilter(agent=agent), limit=1000)).runs
    assert {r.run_id for r in mine} == {r.run_id for r in runs if r.agent_id == agent}
    summary = store.summary(RunFilter())
    assert summary.runs == 12 and sum(summary.by_status.values()) == 12
    assert summary.cost["USD"] == sum((r.cost for r in runs), Decimal(0))
    assert summary.intercepts == sum(r.intercepts for r in runs)
    report = store.costs(RunFilter())
    assert report.total == summary.cost and report.runs == 12
    assert len({line.name for line in report.by_agent}) == len(report.by_agent)
    assert all(not line.name.endswith("-fallback") for line in report.by_model)
    run = runs[0]
    actions = store.actions(run.run_id)
    assert [a.seq for a in actions] == list(range(run.through_seq + 1))
    assert sum(1 for a in actions if a.is_action) == run.actions
    assert run.digest is not None and store.bundle(run.run_id) is not None
    page = store.intercepts(InterceptQuery(limit=2))
    rest = (
        store.intercepts(InterceptQuery(limit=1000, after=page.next_cursor)).intercepts
        if page.next_cursor
        else ()
    )
    every = [*page.intercepts, *rest]
    assert len(every) == page.total
    assert [i.ts for i in every] == sorted((i.ts for i in every), reverse=True)
    # the change feed: strictly increasing positions up to the head
    changes = store.changes(0, limit=100_000)
    assert [c.position for c in changes] == sorted({c.position for c in changes})
    assert changes[-1].position == store.position()
    assert store.changes(store.position()) == []
    assert store.agents(agent[:3]) and all(agent[:3] in a.agent_id for a in store.agents(agent[:3]))


def test_a_reader_refuses_what_is_not_a_read_model(tmp_path: Path) -> None:
    import sqlite3

    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="not a fleetledger database"):
        ReadStore.open(parse_read_db_url(f"sqlite:///{foreign}"), create=False)
    assert foreign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.db"]
    with pytest.raises(StoreError, match="no such file"):
        ReadStore.open(parse_read_db_url(f"sqlite:///{tmp_path / 'none.db'}"), create=False)
    assert not (tmp_path / "none.db").exists()


def test_known_actions_are_found_by_primary_key_lookups(store: ReadStore) -> None:
    """The stored-action check of every batch reads the wanted keys by primary key (on
    SQLite a row-value IN list scanned the whole actions table, so a batch cost time in
    proportion to every action ever projected) and finds exactly the stored ones."""
    from fleetledger.processors.readstore.store import known_actions_sql

    records = output_stream(8, 21)
    store.apply(CONSUMER, tracked(records))
    stored = sorted(project(records).actions)
    wanted = [*stored[::3], (stored[0][0], 10_000), ("no-such-run", 0)]
    params = tuple(value for key in wanted for value in key)
    with store._engine.connect() as conn:
        sql = known_actions_sql(len(wanted), conn.dialect.paramstyle)
        found = {(run_id, seq) for run_id, seq in conn.exec_driver_sql(sql, params)}
        assert found == set(stored[::3])
        if store._engine.dialect.name == "sqlite":
            explain = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = " | ".join(row[-1] for row in explain)
            table = r"(a|rm_actions)\b"
            assert re.search(f"SEARCH {table}", plan) and not re.search(f"SCAN {table}", plan), plan


def test_an_amount_a_column_cannot_hold_is_stored_as_the_nearest_one_and_projection_goes_on(
    store: ReadStore,
) -> None:
    """More fractional digits than the columns keep, or more than the engine's range:
    the row is stored with the nearest amount the column holds (the projection never
    stops on one amount), while the action's recorded event keeps the exact one."""
    from sqlalchemy import select as sql_select

    from fleetledger.processors.readstore import schema

    from . import eventdicts as ev

    tiny, huge = "0.000000000015", "2" + "0" * 30
    pipe = memory_pipeline()
    events = [
        ev.started("run-odd"),
        ev.model_io("run-odd", 1, tiny),
        ev.model_io("run-odd", 2, huge),
        ev.completed("run-odd", 3),
    ]
    out = pipe._apply_all(events, datetime(2027, 1, 1, tzinfo=UTC))
    store.apply(CONSUMER, tracked(records_of(out)))
    pg = store._engine.dialect.name == "postgresql"
    limit = Decimal(f"{10**28 - 1}.9999999999") if pg else Decimal("922337203.6854775807")
    a, r = schema.actions, schema.runs
    with store._engine.connect() as conn:
        rows = conn.execute(
            sql_select(a.c.seq, a.c.cost, a.c.event)
            .where(a.c.run_id == "run-odd")
            .order_by(a.c.seq)
        ).all()
        run_cost = conn.execute(sql_select(r.c.cost).where(r.c.run_id == "run-odd")).scalar_one()
    costs = {row.seq: row.cost for row in rows}
    assert costs[1] == 0 and costs[2] == limit
    assert run_cost == limit
    recorded = {row.seq: orjson.loads(row.event) for row in rows}
    assert recorded[1]["payload"]["cost"]["amount"] == tiny
    assert recorded[2]["payload"]["cost"]["amount"] == huge


def test_sqlite_writes_through_driver_plans_store_what_sqlalchemy_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the batch writes go to the driver as tuples (``_DriverPlan``); the stored
    values, byte for byte, are those of SQLAlchemy's own executemany."""
    import sqlite3

    from fleetledger.processors.readstore import store as store_module
    from fleetledger.processors.readstore.schema import TABLES

    records = tracked(output_stream(30, 1))  # with intercepts

    def written(path: Path) -> dict[str, list[tuple[Any, ...]]]:
        s = ReadStore.open(parse_read_db_url(f"sqlite:///{path}"), create=True)
        try:
            apply_in_batches(s, records, 64)
            apply_in_batches(s, tracked([r.record for r in records], start=len(records)), 50)
            planned = {name for (name, _keys), plan in s._plans.items() if plan is not None}
        finally:
            s.close()
        conn = sqlite3.connect(path)
        try:
            rows = {
                t.name: sorted(conn.execute(f"SELECT * FROM {t.name}"), key=repr) for t in TABLES
            }
        finally:
            conn.close()
        rows["planned"] = sorted((n,) for n in planned)
        return rows

    with_plans = written(tmp_path / "plans.db")
    every_write = ["actions", "agents", "bundles", "intercepts", "run_models", "run_positions"]
    assert [n for (n,) in with_plans["planned"]] == sorted([*every_write, "runs", "tracking"])
    monkeypatch.setattr(store_module._DriverPlan, "of", classmethod(lambda *_a: None))
    without = written(tmp_path / "sqlalchemy.db")
    assert without.pop("planned") == []
    with_plans.pop("planned")
    assert with_plans == without
    assert len(with_plans["rm_actions"]) > 100


def test_projecting_the_values_a_runtime_holds_gives_the_rows_of_the_published_bytes() -> None:
    """The embedded runtime projects its outputs with the values they were serialized
    from (``OutputRecord.parsed``); the projector parses what it reads.  Same rows."""
    records = output_stream(30, 1)  # with intercepts and bundles
    assert all(r.parsed is not None for r in records)
    read_back = [OutputRecord(r.role, r.key, r.value) for r in records]
    held, parsed = project(records), project(read_back)
    assert held == parsed
    assert held.intercepts and held.bundles and len(held.actions) > 100
    assert {a.type for a in held.actions.values()} >= {"model_io", "tool_call"}
