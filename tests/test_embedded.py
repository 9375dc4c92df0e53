"""The pipeline over the embedded SQLite runtime: bundles, dead letters, redelivery, crashes."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from fleetledger.kernel.sqlitelog import SqliteLog
from fleetledger.processors.bundle import assemble, bundle_digest
from fleetledger.processors.core import CoreConfig, Entry
from fleetledger.processors.memory import memory_pipeline
from fleetledger.processors.pipeline import Pipeline, TotalsDoc
from fleetledger.processors.runtimes.embedded import EmbeddedReader, EmbeddedRuntime
from fleetledger.schemas import Codec, TraceEvent

from . import eventdicts as ev

CODEC = Codec()
NOW = datetime(2026, 11, 2, tzinfo=UTC)


def messages(objs: list[dict[str, Any]], batch: int = 2) -> list[tuple[str, bytes]]:
    models = [TraceEvent.model_validate(o) for o in objs]
    return [
        (models[0].run_id, CODEC.encode_batch(models[i : i + batch]))
        for i in range(0, len(models), batch)
    ]


def fleet() -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    runs = [ev.simple_run(f"run-{i}", n_calls=i + 1) for i in range(4)]
    runs.append(
        [ev.started("run-f", budget="0.01"), ev.model_io("run-f", 1, "0.5"), ev.failed("run-f", 2)]
    )
    per_run = [messages(r) for r in runs]
    # interleave runs message by message, as a partition would
    for i in range(max(len(m) for m in per_run)):
        out += [m[i] for m in per_run if i < len(m)]
    return out


def process(path: Path, rows: list[tuple[str, bytes]], **kw: Any) -> EmbeddedRuntime:
    log = SqliteLog.open(path)
    log.append(rows)
    log.close()
    rt = EmbeddedRuntime(path, CODEC, CoreConfig(), clock=lambda: NOW, **kw)
    rt.process_available()
    return rt


def snapshot(path: Path) -> tuple[dict[str, str], list[TotalsDoc], list[str]]:
    with EmbeddedReader(path) as r:
        digests = {b.run_id: b.digest for b in r.bundles()}
        return digests, r.totals(), [i["intercept_id"] for i in r.intercepts()]


def test_bundles_totals_and_intercepts(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    process(db, fleet()).close()
    digests, totals, intercepts = snapshot(db)
    assert sorted(digests) == ["run-0", "run-1", "run-2", "run-3", "run-f"]
    assert "run-f:budget_exceeded:1" in intercepts and "run-f:run_failed:2" in intercepts
    by_run = {t["run_id"]: t for t in totals}
    assert by_run["run-3"]["cost"] == "0.05" and by_run["run-3"]["status"] == "completed"
    with EmbeddedReader(db) as r:
        stored = r.bundle("run-f")
        ledger = r.ledger("run-f")
    assert stored is not None
    raw = stored.data
    assert raw == rfc8785.dumps(json.loads(raw)), "bundles are stored as canonical bytes"
    bundle = json.loads(raw)
    assert bundle["integrity"]["digest"] == bundle_digest(bundle) == digests["run-f"]
    assert [i["kind"] for i in bundle["intercepts"]] == ["budget_exceeded", "run_failed"]
    assert bundle["chain"]["head"] == ledger[-1]["entry_hash"]
    # the digest is sha256 over JCS of the bundle without integrity.digest
    body = json.loads(raw)
    del body["integrity"]["digest"]
    assert hashlib.sha256(rfc8785.dumps(body)).hexdigest() == digests["run-f"]


def test_feeding_the_log_twice_leaves_totals_and_bundles_unchanged(tmp_path: Path) -> None:
    once, twice = tmp_path / "once.db", tmp_path / "twice.db"
    process(once, fleet()).close()
    rt = process(twice, fleet())
    log = SqliteLog(rt._conn)  # same partition delivered again, e.g. a replay from offset 0
    log.append(fleet())
    stats = rt.process_available()
    rt.close()
    assert stats.duplicates == sum(len(CODEC.decode(v)) for _, v in fleet())
    assert stats.bundles == 0
    assert snapshot(once) == snapshot(twice)


def test_corrupt_messages_go_to_dead_letter_and_processing_continues(tmp_path: Path) -> None:
    rows = fleet()
    good = rows[3][1]
    bad = [("x", b"not avro at all"), ("x", good[: len(good) // 2])]
    db = tmp_path / "l.db"
    process(db, rows[:3] + bad + rows[3:]).close()
    with EmbeddedReader(db) as r:
        dead = r.deadletters()
    assert [d.value for d in dead] == [bad[0][1], bad[1][1]]
    assert [d.position.offset for d in dead] == [4, 5]
    assert "magic" in dead[0].error.lower() or "header" in dead[0].error.lower()
    assert snapshot(db) == reference(tmp_path)


def packed(rows: list[tuple[str, bytes]], size: int) -> list[tuple[str, bytes]]:
    """``rows`` as EventPack records of ``size`` messages each (the last may hold fewer)."""
    return [
        (rows[i][0], CODEC.encode_pack([v for _, v in rows[i : i + size]]))
        for i in range(0, len(rows), size)
    ]


def test_a_pack_gives_what_its_messages_give_one_by_one(tmp_path: Path) -> None:
    rows = fleet()
    db = tmp_path / "packed.db"
    process(db, packed(rows, 3), batch_size=2).close()
    with EmbeddedReader(db) as r:
        assert r.deadletters() == []
        ledger = r.ledger("run-3")
    assert snapshot(db) == reference(tmp_path)
    with EmbeddedReader(tmp_path / "reference.db") as r:
        assert r.ledger("run-3") == ledger


def test_a_bad_message_in_a_pack_is_dead_lettered_alone_with_its_index(tmp_path: Path) -> None:
    """Nothing else of the pack is lost; the dead letter holds the message's own bytes
    and is keyed by the pack's position and the message's index in it."""
    rows = fleet()
    good = rows[3][1]
    bad = [b"not avro at all", good[: len(good) // 2], CODEC.encode_pack([good])]
    pack = CODEC.encode_pack(
        [rows[0][1], bad[0], rows[1][1], bad[1], bad[2], rows[2][1]], check=False
    )
    unreadable = CODEC.encode_pack([good])[:-3]  # cut short: the pack itself is unreadable
    db = tmp_path / "l.db"
    process(db, [("k", pack), ("u", unreadable), *rows[3:]]).close()
    with EmbeddedReader(db) as r:
        dead = r.deadletters()
    assert [(d.position.offset, d.position.index, d.value) for d in dead] == [
        (1, 1, bad[0]),
        (1, 3, bad[1]),
        (1, 4, bad[2]),
        (2, None, unreadable),
    ]
    assert [d.key for d in dead] == [
        "event_log:0:1:1",
        "event_log:0:1:3",
        "event_log:0:1:4",
        "event_log:0:2",
    ]
    assert "packs do not nest" in dead[2].error
    assert "EventPack" in dead[3].error
    assert snapshot(db) == reference(tmp_path)


def test_an_older_store_gains_the_dead_letter_index_column(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE deadletter (key TEXT PRIMARY KEY, topic TEXT NOT NULL, partition INTEGER "
        'NOT NULL, "offset" INTEGER NOT NULL, error TEXT NOT NULL, value BLOB NOT NULL)'
    )
    conn.execute("INSERT INTO deadletter VALUES ('event_log:0:7', 'event_log', 0, 7, 'bad', x'00')")
    conn.commit()
    conn.close()
    rows = fleet()
    pack = CODEC.encode_pack([rows[0][1], b"bad"], check=False)
    process(db, [("k", pack)]).close()
    with EmbeddedReader(db) as r:
        dead = r.deadletters()
    assert [(d.key, d.position.index) for d in dead] == [
        ("event_log:0:1:1", 1),
        ("event_log:0:7", None),
    ]


def test_a_store_with_the_earlier_ledger_layout_keeps_working(tmp_path: Path) -> None:
    """Stores made before the ledger became a rowid table keep their WITHOUT ROWID table
    keyed by (run, seq): the runtime writes and reads it with the same statements."""
    import sqlite3

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE ledger (run_id TEXT NOT NULL, seq INTEGER NOT NULL, value BLOB NOT NULL, "
        "PRIMARY KEY (run_id, seq)) WITHOUT ROWID"
    )
    conn.close()
    rows = fleet()
    process(db, rows[:7]).close()
    process(db, rows[7:]).close()
    assert snapshot(db) == reference(tmp_path)
    with EmbeddedReader(db) as r:
        assert [e["seq"] for e in r.ledger("run-3")] == list(range(len(ev.simple_run("run-3", 4))))
    conn = sqlite3.connect(db)
    (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'ledger'").fetchone()
    conn.close()
    assert "WITHOUT ROWID" in ddl
    (new_ddl,) = (
        sqlite3.connect(tmp_path / "reference.db")
        .execute("SELECT sql FROM sqlite_master WHERE name = 'ledger'")
        .fetchone()
    )
    assert "WITHOUT ROWID" not in new_ddl


def reference(tmp_path: Path) -> tuple[dict[str, str], list[TotalsDoc], list[str]]:
    ref = tmp_path / "reference.db"
    process(ref, fleet()).close()
    return snapshot(ref)


def test_a_crash_mid_batch_neither_loses_nor_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "l.db"
    log = SqliteLog.open(db)
    log.append(fleet())
    log.close()
    rt = EmbeddedRuntime(db, CODEC, CoreConfig(), clock=lambda: NOW, batch_size=4)
    original = Pipeline.handle_many
    calls = {"n": 0}

    def crashing(self: Pipeline, messages: Any, now: datetime) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch: its writes are in flight when the power goes
            original(self, messages, now)
            raise RuntimeError("power cut")
        return original(self, messages, now)

    monkeypatch.setattr(Pipeline, "handle_many", crashing)
    with pytest.raises(RuntimeError):
        rt.process_available()
    assert rt.committed_offset() == 4  # the first batch committed, the second rolled back
    rt.close()
    monkeypatch.setattr(Pipeline, "handle_many", original)
    rt = EmbeddedRuntime(db, CODEC, CoreConfig(), clock=lambda: NOW, batch_size=4)
    stats = rt.process_available()
    rt.close()
    assert stats.duplicates == 0
    assert snapshot(db) == reference(tmp_path)


def test_a_100k_event_run_materializes_in_linear_work() -> None:
    r = "run-long"
    objs = [ev.started(r)]
    objs += [ev.model_io(r, s, "0.000001", step=f"s{s % 7}") for s in range(1, 100_000)]
    objs.append(ev.completed(r, len(objs)))
    pipe = memory_pipeline()
    out = pipe._apply_all(objs, NOW)
    assert len(out.entries) == 100_001 and len(out.bundles) == 1
    bundle = json.loads(out.bundles[0].data)
    assert bundle["chain"]["length"] == 100_001
    assert bundle["totals"]["cost"] == "0.099999"


def test_assemble_refuses_a_broken_chain() -> None:
    pipe = memory_pipeline()
    out = pipe._apply_all(ev.simple_run(), NOW)
    pipe_entries = list(out.entries)
    broken = [*pipe_entries[:2], *pipe_entries[3:]]
    with pytest.raises(Exception, match="expected seq 2"):
        assemble("run-1", broken, CoreConfig())


def test_sealing_reports_finished_runs_and_keeps_their_hashes() -> None:
    from fleetledger.processors.core import RunState
    from fleetledger.processors.memory import MemoryEntries, MemoryStates

    states, entries = MemoryStates(), MemoryEntries()
    pipe = Pipeline(CODEC, CoreConfig(), states, entries, seal_finished=True)
    out = pipe._apply_all(ev.simple_run(), NOW)
    assert out.sealed == [("run-1", 5)]
    state = RunState.from_bytes(states.values["run-1"])
    assert state.sealed_hash(4) == Entry.from_bytes(entries.values[("run-1", 4)]).event_hash
    entries.values.clear()
    again = pipe._apply_all(ev.simple_run(), NOW)
    assert again.duplicates == 5 and again.intercepts == [] and again.bundles == []
