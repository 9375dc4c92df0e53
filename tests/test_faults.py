"""Fault injection against ``fleetledger worker`` (SPEC 9.4: nothing lost, nothing
doubled, nothing blocks), on the embedded store and on the Kafka-protocol test broker.

Each test publishes traffic it built itself (ordinary runs, odd-but-valid runs, huge valid
payloads and a sweep of bad inputs), SIGKILLs workers at random moments while they work,
replays the log from offset 0 and produces the same bytes twice, then checks the outputs
against an oracle computed from what it published (``tests/faultkit.py``) and reports lost,
duplicated, miscounted, dead-lettered, unplanned exits and the longest stall.

`make test` runs a short version; `make test-faults` (``FLEETLEDGER_FAULTS=full``) the full
one, which appends every report to ``faults-report.jsonl``.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fleetledger.kernel.config import load_settings
from fleetledger.kernel.sqlitelog import SqliteLog
from fleetledger.processors.runtimes.embedded import EmbeddedReader
from fleetledger.processors.runtimes.kafka_io import ensure_topics, topic_specs, worker_state_specs

from .faultkit import (
    FULL,
    GroupOffsets,
    KafkaPublisher,
    Outputs,
    Report,
    StallMonitor,
    Traffic,
    Workers,
    add_odd_runs,
    as_records,
    bad_inputs,
    build_traffic,
    check,
    fleetledger_cli,
    group_members,
    kafka_outputs,
    reset_group_offsets,
    values_of,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.faults

#: The longest a partition may go without progress.  The full run (`make test-faults`)
#: holds the workers to 10 s.  The short run inside `make test` shares a 2-core machine
#: with the rest of the suite, where a worker takes several times longer to boot and to
#: rejoin its group; it allows 20 s, still far below what a stuck partition shows (the
#: wait for progress times out at 120 s).
MAX_STALL_S = 10.0 if FULL else 20.0


def _traffic(seed: int, runs: int, tag: str) -> Traffic:
    t = build_traffic(seed, runs, prefix=tag)
    add_odd_runs(t, tag)
    t.bad = bad_inputs(tag)
    return t


# --------------------------------------------------------------------------- embedded


def _embedded_progress(db: Path) -> dict[int, tuple[int, int]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        end = conn.execute("SELECT COALESCE(MAX(offset), 0) FROM event_log").fetchone()[0]
        row = None
        with_offsets = conn.execute(
            "SELECT name FROM sqlite_master WHERE name = 'consumer_offsets'"
        ).fetchone()
        if with_offsets:
            row = conn.execute(
                "SELECT \"offset\" FROM consumer_offsets WHERE consumer = 'processor'"
            ).fetchone()
        return {0: (0 if row is None else int(row[0]), int(end))}
    finally:
        conn.close()


def _embedded_outputs(db: Path) -> Outputs:
    with EmbeddedReader(db) as r:
        conn = r._conn
        ledger = {
            (run_id, seq): {bytes(v)}
            for run_id, seq, v in conn.execute("SELECT run_id, seq, value FROM ledger")
        }
        return Outputs(
            ledger=ledger,
            totals={t["run_id"]: t for t in r.totals()},
            intercepts={i["intercept_id"]: i for i in r.intercepts()},
            bundles={b.run_id: b.data for b in r.bundles()},
            deadletters={d.key: [d.value] for d in r.deadletters()},
        )


def test_faults_embedded_kill_loop_replay_and_bad_input(tmp_path: Path) -> None:
    """SIGKILL loop under load, replay from offset 0, the same bytes twice, bad input."""
    rng = random.Random(8)
    runs, kills = (600, 25) if FULL else (150, 6)
    traffic = _traffic(seed=3, runs=runs, tag="emb")
    rows = traffic.all_rows(rng)
    db = tmp_path / "faults.db"
    SqliteLog.open(db).close()
    expected_dl: dict[str, bytes] = {}
    report = Report("embedded", events_published=traffic.events)

    failures: list[BaseException] = []
    feed_rng = random.Random(9)

    def publish(batch: list[tuple[str, bytes, bool]]) -> None:
        # about half of the chunks go packed, as an SDK with several runs packs them
        records = as_records(batch, lambda _key: 0, feed_rng if feed_rng.random() < 0.5 else None)
        log = SqliteLog.open(db)
        try:
            start = log.end_offset()
            log.append([(r.key, r.value) for r in records])
        finally:
            log.close()
        for offset, rec in enumerate(records, start=start + 1):
            expected = rec.deadletter_keys("event_log", offset)
            expected_dl.update(expected)
            report.count_published(rec, expected)

    def publisher() -> None:
        i = 0
        try:
            while i < len(rows):
                n = feed_rng.randint(1, 40)
                publish(rows[i : i + n])
                i += n
                time.sleep(feed_rng.uniform(0, 0.03))
        except BaseException as exc:
            failures.append(exc)

    env = {**os.environ, "FLEETLEDGER_GAP_TIMEOUT_S": "3600"}
    argv = [fleetledger_cli(), "worker", "--broker", f"sqlite:///{db}", "--poll", "0.05"]
    workers = Workers(argv, env, tmp_path)

    def caught_up() -> bool:
        committed, end = _embedded_progress(db)[0]
        return committed == end

    monitor = StallMonitor(lambda: _embedded_progress(db))
    with workers, monitor:
        workers.start()
        feeder = threading.Thread(target=publisher)
        feeder.start()
        for _ in range(kills):
            # at a random moment of a worker's work: after it processed something
            # (killing workers faster than they start would measure nothing but that)
            before = _embedded_progress(db)[0][0]
            wait_until(
                "the worker to make progress",
                lambda before=before: caught_up() or _embedded_progress(db)[0][0] > before,  # type: ignore[misc]
                60,
                workers.reap,
            )
            time.sleep(rng.uniform(0.05, 1.5))
            workers.reap()
            workers.kill_random(rng)
            workers.start()
        feeder.join()
        assert not failures, failures
        wait_until("the worker to catch up", caught_up, 120, workers.reap)
        first = _embedded_outputs(db)

        # replay from offset 0: every message again, against the state it built
        monitor.pause()  # a planned stop: the stall clock starts afresh
        workers.stop_all()
        with sqlite3.connect(db) as conn:
            conn.execute('UPDATE consumer_offsets SET "offset" = 0')
        monitor.resume()
        workers.start()
        time.sleep(rng.uniform(0.3, 1.0))
        workers.kill_random(rng)
        workers.start()
        wait_until("the replay to finish", caught_up, 120, workers.reap)
        replayed = _embedded_outputs(db)

        # the same bytes produced twice
        publish(rows)
        wait_until("the second copy to be processed", caught_up, 120, workers.reap)
        workers.stop_all()
    outputs = _embedded_outputs(db)
    report.kills, report.restarts = workers.kills, workers.restarts
    report.unplanned_exits = len(workers.unplanned)
    report.longest_stall_s, report.stall_where = monitor.longest, monitor.where
    check(report, traffic.oracle, outputs, expected_dl, values_of(rows))
    if replayed.totals != first.totals or replayed.bundles != first.bundles:
        report.duplicated += 1
        report.problems.append("replay from offset 0 changed totals or bundles")
    report.save(tmp_path)
    print(report.line())
    assert report.ok(MAX_STALL_S), (report.line(), report.problems[:20], workers.unplanned[:2])
    # packed records went through the kill loop, bad items inside them included
    assert report.packs_published > 0 and report.bad_in_packs > 0, report.line()


# --------------------------------------------------------------------------- kafka


async def _until(what: str, check_: Any, timeout_s: float, workers: Workers) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers.reap()
        if await check_():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")


@pytest.mark.kafka
async def test_faults_kafka_kill_loop_rebalances_replay_and_bad_input(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Two workers (sometimes three) under load; SIGKILLs at random moments, some while a
    rebalance is going on; then a replay from offset 0 and the same bytes twice."""
    rng = random.Random(21)
    runs, kills = (500, 16) if FULL else (120, 4)
    partitions = 4
    settings = load_settings(
        broker=f"kafka://{kafka_bootstrap}",
        topic_prefix=topic_prefix,
        group_id=f"{topic_prefix}-workers",
        partitions=partitions,
        enable_idempotence=False,
        session_timeout_s=3,
        archive_dir=tmp_path / "archive",
        linger_ms=0,
        gap_timeout_s=3600,
    )
    topics = topic_specs(settings)
    await ensure_topics(kafka_bootstrap, (*topics.all(), *worker_state_specs(settings)))
    traffic = _traffic(seed=5, runs=runs, tag="kfk")
    rows = traffic.all_rows(rng)
    report = Report("kafka", events_published=traffic.events)
    offsets = GroupOffsets(kafka_bootstrap, settings.group_id, topics.events.name, partitions)
    workers = Workers([fleetledger_cli(), "worker"], worker_env(settings), tmp_path)

    pack_rng = random.Random(22)
    async with KafkaPublisher(
        kafka_bootstrap, topics.events.name, partitions, pack_rng=pack_rng, report=report
    ) as pub:

        async def caught_up() -> bool:
            committed = await offsets.fetch()
            return all(committed.get(p, 0) >= end for p, end in pub.ends.items())

        async def feed(chunk_max: int, pause_s: float) -> None:
            i = 200
            while i < len(rows):
                n = rng.randint(1, chunk_max)
                # about half of the chunks go packed, as an SDK with several runs packs them
                await pub.publish(rows[i : i + n], pack=pack_rng.random() < 0.5)
                i += n
                await asyncio.sleep(rng.uniform(0, pause_s))

        async def settled(members: int) -> bool:
            # a killed member stays in the group until its session times out
            if time.monotonic() - workers.last_kill < settings.session_timeout_s + 1:
                return False
            state, found = await group_members(kafka_bootstrap, settings.group_id)
            return state == "Stable" and found == members

        async def joined(members: int) -> bool:
            return (await group_members(kafka_bootstrap, settings.group_id))[1] >= members

        async def started() -> bool:
            committed = await offsets.fetch()
            return all(committed.get(p, 0) > 0 for p in range(partitions))

        monitor = StallMonitor(lambda: offsets.sample(pub.ends), every_s=0.25)
        with workers:
            workers.start()
            workers.start()
            # warm-up, not measured: the first group join and the first commits
            await pub.publish(rows[:200])
            await _until("the workers to start", started, 120, workers)
            monitor.__enter__()
            feeder = asyncio.create_task(feed(20, 0.3))
            for k in range(kills):
                # at a random moment of the workers' work: once every live worker is a
                # member of the settled group and has processed something (killing
                # workers while they boot would measure only how long Python takes to
                # import them on a busy machine)
                await _until(
                    "the group to settle", lambda: settled(len(workers.procs)), 180, workers
                )
                before = sum((await offsets.fetch()).values())

                async def progressed(before: int = before) -> bool:
                    return await caught_up() or sum((await offsets.fetch()).values()) > before

                await _until("the workers to make progress", progressed, 120, workers)
                await asyncio.sleep(rng.uniform(0.5, 4))
                workers.reap()
                if k % 2:
                    # a kill while the group rebalances: a third member joins, and one of
                    # the members is killed while the group settles
                    slot = workers.start()
                    await _until("the third member to join", lambda: joined(3), 180, workers)
                    await asyncio.sleep(rng.uniform(0, 2))
                    workers.kill_random(rng)
                    if len(workers.procs) > 2 and slot in workers.procs:
                        workers.kill(slot)
                else:
                    workers.kill_random(rng)
                while len(workers.procs) < 2:
                    workers.start()
            await feeder
            await _until("the workers to catch up", caught_up, 180, workers)
            first = await kafka_outputs(kafka_bootstrap, topics)

            # replay from offset 0 against the state the workers built (a planned stop of
            # every worker: not measured until they process again)
            monitor.pause()
            workers.stop_all()
            await reset_group_offsets(
                kafka_bootstrap, settings.group_id, topics.events.name, partitions
            )
            workers.start()
            workers.start()
            await _until("the workers to restart", started, 120, workers)
            monitor.resume()
            # a kill in the middle of the replay, at a random moment of settled work
            await _until("the group to settle", lambda: settled(2), 180, workers)
            await asyncio.sleep(rng.uniform(0.5, 3))
            workers.kill_random(rng)
            workers.start()
            await _until("the replay to finish", caught_up, 180, workers)

            # the same bytes produced twice
            await pub.publish(rows)
            await _until("the second copy to be processed", caught_up, 180, workers)
            await asyncio.sleep(2)  # the last changelog and output records settle
            monitor.__exit__()
            workers.stop_all()
        offsets.close()
        expected_dl = pub.expected_deadletters
    outputs = await kafka_outputs(kafka_bootstrap, topics)
    report.kills, report.restarts = workers.kills, workers.restarts
    report.unplanned_exits = len(workers.unplanned)
    report.longest_stall_s, report.stall_where = monitor.longest, monitor.where
    check(report, traffic.oracle, outputs, expected_dl, values_of(rows))
    if {k: v for k, v in outputs.totals.items()} != first.totals:
        report.duplicated += 1
        report.problems.append(
            "replay from offset 0 or the second copy changed totals: "
            + _totals_diff(first.totals, outputs.totals)
        )
    report.save(tmp_path)
    print(report.line())
    assert report.ok(MAX_STALL_S), (report.line(), report.problems[:20], workers.unplanned[:2])
    # packed records went through the kill loop, bad items inside them included
    assert report.packs_published > 0 and report.bad_in_packs > 0, report.line()


def _totals_diff(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]], most: int = 5
) -> str:
    """Which runs' totals differ, and in which members (after the first pass -> at the end)."""
    out = []
    for run_id in sorted(set(before) | set(after)):
        a, b = before.get(run_id), after.get(run_id)
        if a == b:
            continue
        if a is None or b is None:
            out.append(f"{run_id}: {'absent' if a is None else 'present'} after the first pass")
            continue
        members = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        out.append(f"{run_id}: " + "; ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in members))
    more = f" (+{len(out) - most} more)" if len(out) > most else ""
    return " | ".join(out[:most]) + more
