"""Nothing blocks (issue: a valid message, a failing rule or an idle worker must never stop
processing or lose an intercept), on the pipeline and the embedded runtime.

* a run whose seq 0 is not ``run_started`` (SPEC 1.1's own test vector at seq 0) is
  processed, bundled with ``workflow: null`` and flagged ``malformed_run``;
* a message whose processing fails for any reason is rolled back whole, dead-lettered once
  and flagged ``processing_error``; the messages after it go on;
* property: any sequence of valid events (any types, orders, seqs) never raises out of the
  pipeline (both configurations the runtimes use) nor out of the embedded runtime, and
  every published event is accounted for as processed or dead-lettered;
* bundles are stored as their RFC 8785 bytes and verify as read;
* open gaps survive a restart and time out while the runtime is idle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleetledger.kernel.errors import VerificationError
from fleetledger.kernel.sqlitelog import SqliteLog
from fleetledger.processors.approvals import approvals
from fleetledger.processors.core import CoreConfig
from fleetledger.processors.evidence import verify_bundle_bytes
from fleetledger.processors.memory import MemoryEntries, MemoryStates, memory_pipeline
from fleetledger.processors.pipeline import Pipeline, SourcePosition
from fleetledger.processors.runtimes.embedded import EmbeddedReader, EmbeddedRuntime
from fleetledger.schemas import Codec, EventType, RunCompleted, TraceEvent

from . import eventdicts as ev
from .test_schemas_props import PAYLOADS, ident, timestamps

CODEC = Codec()
NOW = datetime(2026, 11, 2, tzinfo=UTC)


def spec_vector_at_seq0() -> bytes:
    """SPEC 1.1's test vector (a v2 run_completed of run-1), at seq 0, as a TraceEvent."""
    event = TraceEvent(
        event_id="0190f3a2-7c1e-7b3a-9d4e-2f6a8b1c0d9f",
        run_id="run-1",
        seq=0,
        type=EventType.RUN_COMPLETED,
        ts=datetime.fromtimestamp(1773480414, UTC),
        agent_id="planner",
        tenant="acme",
        producer_id="sdk-py",
        payload=RunCompleted(summary="ok"),
    )
    return CODEC.encode_event(event)


def append(path: Path, rows: list[tuple[str, bytes]]) -> None:
    log = SqliteLog.open(path)
    log.append(rows)
    log.close()


def encode(objs: list[dict[str, Any]]) -> bytes:
    return CODEC.encode_batch([TraceEvent.model_validate(o) for o in objs])


# --------------------------------------------------------------------------- malformed runs


def test_a_run_without_run_started_is_bundled_and_flagged(tmp_path: Path) -> None:
    value = spec_vector_at_seq0()
    assert len(value) < 110
    db = tmp_path / "l.db"
    after = encode(ev.simple_run("run-2"))
    append(db, [("run-1", value), ("run-2", after)])
    with EmbeddedRuntime(db, CODEC, CoreConfig(), clock=lambda: NOW) as rt:
        stats = rt.process_available()
    assert (stats.messages, stats.events, stats.deadletters, stats.bundles) == (2, 6, 0, 2)
    with EmbeddedReader(db) as r:
        stored = r.bundle("run-1")
        intercepts = {i["intercept_id"]: i for i in r.intercepts()}
        totals = {t["run_id"]: t for t in r.totals()}
    assert stored is not None
    raw = stored.data
    verified = verify_bundle_bytes(raw)  # canonical bytes, verifiable as stored
    assert verified.events == 1
    bundle = json.loads(raw)
    assert bundle["workflow"] is None and bundle["run"]["labels"] == {}
    assert "started_at" not in bundle["run"] and bundle["run"]["status"] == "completed"
    assert [i["kind"] for i in bundle["intercepts"]] == ["malformed_run"]
    assert intercepts["run-1:malformed_run:0"]["severity"] == "critical"
    assert totals["run-1"]["status"] == "completed" and totals["run-2"]["events"] == 5


def test_a_bundle_without_run_started_is_archived_undated(tmp_path: Path) -> None:
    from fleetledger.processors.archive import ArchiveSink

    db = tmp_path / "l.db"
    append(db, [("run-1", spec_vector_at_seq0())])
    sink = ArchiveSink(tmp_path / "archive")
    with EmbeddedRuntime(db, CODEC, CoreConfig(), clock=lambda: NOW, archive=sink) as rt:
        rt.process_available()
    files = sorted(p.relative_to(tmp_path / "archive") for p in sink.root.rglob("*.json"))
    assert files == [Path("acme/undated/run-1.bundle.json")]


# --------------------------------------------------------------------------- failures


def test_a_failing_message_is_rolled_back_dead_lettered_and_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleetledger.processors.bundle import assemble_encoded as real

    def assemble_encoded(run_id: str, entries: Any, config: CoreConfig) -> Any:
        if run_id == "run-bad":
            raise KeyError("workflow")
        return real(run_id, entries, config)

    monkeypatch.setattr("fleetledger.processors.pipeline.assemble_encoded", assemble_encoded)
    bad = ev.simple_run("run-bad", n_calls=1)
    rows = [
        ("run-bad", encode(bad[:2])),
        ("run-bad", encode(bad[2:])),  # the terminal event: its bundle fails
        ("run-ok", encode(ev.simple_run("run-ok"))),
    ]
    db = tmp_path / "l.db"
    append(db, rows)
    with EmbeddedRuntime(db, CODEC, CoreConfig(), clock=lambda: NOW) as rt:
        stats = rt.process_available()
        assert rt.committed_offset() == 3
    assert stats.deadletters == 1
    with EmbeddedReader(db) as r:
        dead = r.deadletters()
        intercepts = {i["intercept_id"]: i for i in r.intercepts()}
        ledger = r.ledger("run-bad")
        totals = {t["run_id"]: t for t in r.totals()}
        digests = {b.run_id: b.digest for b in r.bundles()}
    assert [(d.position.offset, d.value) for d in dead] == [(2, rows[1][1])]
    assert dead[0].error.startswith("processing failed: KeyError")
    flagged = intercepts["run-bad:processing_error:2"]
    assert flagged["severity"] == "critical" and "KeyError" in flagged["reason"]
    # nothing of the failed message was kept: the run stands at its first two events
    assert [e["seq"] for e in ledger] == [0, 1]
    assert totals["run-bad"]["through_seq"] == 1 and totals["run-bad"]["status"] == "running"
    assert sorted(digests) == ["run-ok"]


# --------------------------------------------------------------------------- property


@st.composite
def fleets(draw: st.DrawFn) -> list[list[TraceEvent]]:
    """Messages of valid events of a few runs: any types, orders, seqs, repeats."""
    runs = draw(st.lists(ident, min_size=1, max_size=3, unique=True))
    messages = []
    for _ in range(draw(st.integers(1, 12))):
        run_id = draw(st.sampled_from(runs))
        batch = []
        for _ in range(draw(st.integers(1, 4))):
            etype = draw(st.sampled_from(EventType))
            batch.append(
                TraceEvent(
                    event_id=draw(st.sampled_from([uuid.UUID(int=1), uuid.UUID(int=2)])),
                    run_id=run_id,
                    seq=draw(st.integers(0, 6) | st.integers(0, 2**53 - 1)),
                    type=etype,
                    ts=draw(timestamps),
                    agent_id="a",
                    tenant="t",
                    producer_id="p",
                    payload=draw(PAYLOADS[etype]),
                )
            )
        messages.append(batch)
    return messages


def _encoded(messages: list[list[TraceEvent]]) -> list[tuple[str, bytes, int]]:
    """(run_id, bytes, events) per message; the same bytes twice now and then."""
    out = []
    for batch in messages:
        value = CODEC.encode_batch(batch)
        out.append((batch[0].run_id, value, len(batch)))
    return out


PROPS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


SEQ0_COMPLETED = [[TraceEvent.model_validate(ev.completed("run-1", 0))]]


@PROPS
@given(messages=fleets(), seal=st.booleans())
@example(messages=SEQ0_COMPLETED, seal=True)  # SPEC 1.1's vector at seq 0, as in the issue
def test_property_the_pipeline_never_raises_and_accounts_for_every_event(
    messages: list[list[TraceEvent]], seal: bool
) -> None:
    # seal_finished=True is the Kafka runtime's configuration, False the embedded one's
    pipeline = Pipeline(CODEC, CoreConfig(), MemoryStates(), MemoryEntries(), seal_finished=seal)
    rows = _encoded(messages)
    processed = deadlettered = 0
    for i, (_run, value, n) in enumerate(rows + rows[:2]):
        out = pipeline.handle(value, SourcePosition("events", 0, i), NOW)
        assert len(out.deadletters) <= 1
        if out.deadletters:
            deadlettered += n
        else:
            assert out.events == n
            processed += n
        for record in out.bundles:
            _verifies(record.data)
    assert processed + deadlettered == sum(n for _r, _v, n in rows + rows[:2])
    pipeline.tick(NOW + timedelta(hours=1))


@PROPS
@given(messages=fleets(), seal=st.booleans(), data=st.data())
def test_property_a_message_failing_midway_leaves_what_its_absence_leaves(
    messages: list[list[TraceEvent]],
    seal: bool,
    data: st.DataObject,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One batch; message k fails at its j-th event, after its first events were applied
    to the runs' states in place.  Rolled back, the batch leaves exactly what the same
    batch without message k leaves: states, entries, outputs (but the dead letter and its
    ``processing_error`` intercept), and the gaps it watches."""
    from fleetledger.processors import core
    from fleetledger.processors import pipeline as module

    k = data.draw(st.integers(0, len(messages) - 1))
    marked = [e.model_copy(update={"agent_id": "fails"}) for e in messages[k]]
    j = data.draw(st.integers(0, len(marked) - 1))
    real_apply = core.apply  # what the pipeline module calls
    seen = [0]

    def apply(state: Any, obj: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if obj["agent_id"] == "fails":
            seen[0] += 1
            if seen[0] == j + 1:
                raise RuntimeError("a rule failed")
        return real_apply(state, obj, *args, **kwargs)

    def run(batch: list[list[TraceEvent]]) -> tuple[Pipeline, Any, MemoryStates, MemoryEntries]:
        states, entries = MemoryStates(), MemoryEntries()
        pipe = Pipeline(CODEC, CoreConfig(), states, entries, seal_finished=seal)
        rows = [
            (CODEC.encode_batch(m), SourcePosition("events", 0, i)) for i, m in enumerate(batch)
        ]
        return pipe, pipe.handle_many(rows, NOW), states, entries

    monkeypatch.setattr(module, "apply", apply)
    failed_pipe, failed, failed_states, failed_entries = run(
        [*messages[:k], marked, *messages[k + 1 :]]
    )
    monkeypatch.setattr(module, "apply", real_apply)
    pipe, out, states, entries = run([*messages[:k], *messages[k + 1 :]])

    assert seen[0] == j + 1
    assert [d.position.offset for d in failed.deadletters] == [k]
    assert [i.kind for i in failed.intercepts if i.kind == "processing_error"] == [
        "processing_error"
    ]
    assert failed_states.values == states.values
    assert failed_entries.values == entries.values
    assert [e.data for e in failed.entries] == [e.data for e in out.entries]
    assert [t.data for t in failed.totals] == [t.data for t in out.totals]
    assert [b.data for b in failed.bundles] == [b.data for b in out.bundles]
    kept = [i.data for i in failed.intercepts if i.kind != "processing_error"]
    assert kept == [i.data for i in out.intercepts]
    assert failed.sealed == out.sealed
    assert failed_pipe.gapped == pipe.gapped


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(messages=fleets())
@example(messages=SEQ0_COMPLETED)
def test_property_the_embedded_runtime_never_raises_and_accounts_for_every_message(
    tmp_path_factory: pytest.TempPathFactory, messages: list[list[TraceEvent]]
) -> None:
    db = tmp_path_factory.mktemp("prop") / "l.db"
    rows = _encoded(messages)
    append(db, [(r, v) for r, v, _n in rows])
    with EmbeddedRuntime(db, CODEC, CoreConfig(gap_timeout_s=0), clock=lambda: NOW) as rt:
        stats = rt.process_available()
        assert rt.committed_offset() == len(rows)
    with EmbeddedReader(db) as r:
        dead = {d.position.offset for d in r.deadletters()}
        for stored in r.bundles():
            _verifies(stored.data)
    assert stats.messages == len(rows)
    assert stats.events + sum(rows[o - 1][2] for o in dead) == sum(n for _r, _v, n in rows)


def _verifies(data: bytes) -> None:
    """A generated run's bundle verifies; the one check it may fail is ``approvals``, and
    only when the run's own events hold a gate that decided on no written revision (the
    processor records faithfully what a generated agent did; verify refuses the claim)."""
    try:
        verify_bundle_bytes(data)
    except VerificationError as exc:
        assert exc.check == "approvals", exc
        assert any(a.problem for a in approvals(json.loads(data))), exc


# --------------------------------------------------------------------------- canonical


def test_bundles_are_stored_as_their_canonical_bytes(tmp_path: Path) -> None:
    pipeline = memory_pipeline()
    out = pipeline.handle(encode(ev.simple_run("run-1")), SourcePosition("e", 0, 0), NOW)
    [bundle] = out.bundles
    assert bundle.data == rfc8785.dumps(json.loads(bundle.data))
    verify_bundle_bytes(bundle.data)


# --------------------------------------------------------------------------- gap timers


def test_an_idle_runtime_times_out_an_open_gap(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    run = ev.simple_run("run-g", n_calls=3)
    append(db, [("run-g", encode(run[:2])), ("run-g", encode(run[3:]))])  # seq 2 missing
    clock = {"now": NOW}
    config = CoreConfig(gap_timeout_s=30)
    with EmbeddedRuntime(db, CODEC, config, clock=lambda: clock["now"]) as rt:
        rt.process_available()
        clock["now"] = NOW + timedelta(seconds=31)
        assert rt.process_available().intercepts == 1  # nothing new arrived
    with EmbeddedReader(db) as r:
        assert [i["intercept_id"] for i in r.intercepts()] == ["run-g:stale_gap:2"]


def test_an_open_gap_is_found_again_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    run = ev.simple_run("run-g", n_calls=3)
    append(db, [("run-g", encode(run[:2])), ("run-g", encode(run[3:]))])
    config = CoreConfig(gap_timeout_s=30)
    with EmbeddedRuntime(db, CODEC, config, clock=lambda: NOW) as rt:
        rt.process_available()
    later = NOW + timedelta(seconds=31)
    with EmbeddedRuntime(db, CODEC, config, clock=lambda: later) as rt:
        assert rt.open_gap_runs() == ["run-g"]
        rt.process_available()
    with EmbeddedReader(db) as r:
        assert [i["intercept_id"] for i in r.intercepts()] == ["run-g:stale_gap:2"]


def _worker(db: Path, log: Path, gap_s: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FLEETLEDGER_GAP_TIMEOUT_S": str(gap_s)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                str(Path(sys.executable).with_name("fleetledger")),
                "worker",
                "--broker",
                f"sqlite:///{db}",
                "--poll",
                "0.1",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_killed_embedded_worker_reports_the_gap_on_time_after_restart(tmp_path: Path) -> None:
    """SIGKILL with a gap open; the restarted worker, with no new input, flags it on time."""
    db = tmp_path / "l.db"
    log = tmp_path / "worker.log"
    run = ev.simple_run("run-g", n_calls=3)
    append(db, [("run-g", encode(run[:2])), ("run-g", encode(run[3:]))])
    gap_s = 3.0
    opened = time.monotonic()
    worker = _worker(db, log, gap_s)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with EmbeddedReader(db) as r:
                if r.committed_offset() == 2:
                    break
            time.sleep(0.05)
        else:
            pytest.fail(f"the worker did not process the log: {log.read_text()}")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        worker = _worker(db, log, gap_s)
        found: list[str] = []
        while time.monotonic() < opened + gap_s + 10:
            with EmbeddedReader(db) as r:
                found = [i["intercept_id"] for i in r.intercepts()]
            if found:
                break
            assert worker.poll() is None, log.read_text()
            time.sleep(0.1)
        flagged_after = time.monotonic() - opened
        assert found == ["run-g:stale_gap:2"], log.read_text()
        # on time: the timeout, plus the polls and the process start
        assert gap_s <= flagged_after + 0.5 and flagged_after < gap_s + 8
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGTERM)
            worker.wait(10)
