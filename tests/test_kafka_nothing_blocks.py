"""Nothing blocks, on the Kafka worker (real broker, ``fleetledger worker`` subprocesses):

1. a valid run whose seq 0 is ``run_completed`` (SPEC 1.1's vector at seq 0) is bundled
   and flagged, and the worker goes on;
2. SDK-valid messages whose outputs outgrow a Kafka record (200 KB of control characters,
   800 KB of empty JSON strings, the SDK's largest message) are processed: ledger entries
   offloaded with a manifest, changelog values chunked, bundles archived;
3. a worker that keeps partitions across a rebalance does not stop (Faust's recovery
   consistency check against an under-reported high watermark);
4. a worker killed with a gap open is replaced by one that raises ``stale_gap`` on time,
   with no new input;
5. a worker killed with runs open is replaced by one that reads their ledger entries back
   from the ledger topic (the only place they are stored), oversized ones included: it
   judges redeliveries and equivocations against them and bundles the runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fleetledger.kernel.config import Settings, load_settings
from fleetledger.processors.canonical import event_hash
from fleetledger.processors.evidence import verify_bundle_bytes
from fleetledger.processors.runtimes.kafka_io import (
    KafkaOutputReader,
    ensure_topics,
    is_manifest,
    is_output_manifest,
    load_archived_bundle,
    max_record_bytes,
    read_all,
    read_compacted,
    topic_specs,
    worker_state_specs,
)
from fleetledger.producers import Recorder

from . import eventdicts as ev
from .faultkit import (
    SDK_LARGEST_MESSAGE,
    GroupOffsets,
    KafkaPublisher,
    encode,
    fleetledger_cli,
    huge_inputs,
    worker_env,
)
from .test_nothing_blocks import spec_vector_at_seq0

pytestmark = pytest.mark.kafka

PARTITIONS = 4


def _settings(bootstrap: str, prefix: str, tmp: Path, **kw: object) -> Settings:
    base: dict[str, object] = {
        "broker": f"kafka://{bootstrap}",
        "topic_prefix": prefix,
        "group_id": f"{prefix}-workers",
        "partitions": PARTITIONS,
        "enable_idempotence": False,
        "session_timeout_s": 4,
        "archive_dir": tmp / "archive",
        "linger_ms": 0,
    }
    return load_settings(**{**base, **kw})


class Proc:
    def __init__(self, settings: Settings, log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [fleetledger_cli(), "worker"],
                env=worker_env(settings),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        return self.log.read_bytes()[-4000:].decode("utf-8", "replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


async def _wait(what: str, check: object, procs: list[Proc], timeout_s: float = 90) -> float:
    """Seconds until ``check()`` holds; fails if a worker exits meanwhile."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if await check():  # type: ignore[operator]
            return time.monotonic() - start
        for p in procs:
            assert p.alive(), f"worker exited while waiting for {what}:\n{p.tail()}"
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")


async def _prepare(settings: Settings) -> None:
    await ensure_topics(
        settings.broker_url().bootstrap,
        (*topic_specs(settings).all(), *worker_state_specs(settings)),
    )


async def test_malformed_run_and_huge_outputs_never_stop_the_worker(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, topic_prefix, tmp_path)
    topics = topic_specs(settings)
    await _prepare(settings)
    worker = Proc(settings, tmp_path / "worker.log")
    try:
        async with KafkaPublisher(kafka_bootstrap, topics.events.name, PARTITIONS) as pub:
            await pub.publish([("run-1", spec_vector_at_seq0(), False)])
        run_ids = ["run-1"]
        # the huge payloads, recorded through the SDK's Kafka transport, kept inline (no
        # offload to a blob store) so the messages really are that large
        inline = settings.model_copy(update={"blob_threshold_bytes": 2**31 - 1})
        async with Recorder.from_url(settings.broker, settings=inline) as rec:
            for name, text in huge_inputs():
                run = await rec.start_run(
                    agent_id="uploader", workflow=ev.WORKFLOW, run_id=f"huge-{name}"
                )
                await run.tool_call(name="upload", duration_ms=5, inputs=text)
                await rec.flush()
                await run.complete()
                run_ids.append(run.run_id)
            after = await rec.start_run(agent_id="a", workflow=ev.WORKFLOW, run_id="after")
            await after.complete()
            run_ids.append("after")

        async def bundled() -> bool:
            bundles = await read_compacted(kafka_bootstrap, topics.bundles.name)
            return set(run_ids) <= set(bundles)

        await _wait("every bundle", bundled, [worker], timeout_s=120)
        assert worker.alive(), worker.tail()
        reader = KafkaOutputReader(settings)
        for run_id in run_ids:
            stored = await asyncio.to_thread(reader.bundle, run_id)
            assert stored is not None
            verify_bundle_bytes(stored.data)  # the bytes as read: canonical, digest, chain
        first = await asyncio.to_thread(reader.bundle, "run-1")
        assert first is not None
        seq0 = json.loads(first.data)
        assert seq0["workflow"] is None and seq0["run"]["status"] == "completed"
        intercepts = {i["intercept_id"] for i in await asyncio.to_thread(reader.intercepts)}
        assert "run-1:malformed_run:0" in intercepts

        # the SDK's largest message really is that large, and its entry is offloaded
        events = await read_all(kafka_bootstrap, topics.events.name)
        assert max(len(r.value or b"") for r in events) > SDK_LARGEST_MESSAGE - 4096
        ledger = await read_all(kafka_bootstrap, topics.ledger.name)
        offloaded = [r for r in ledger if r.value and is_output_manifest(r.value)]
        assert {r.key.decode().rsplit(":", 1)[0] for r in offloaded if r.key} == {
            "huge-ctl",
            "huge-strings",
            "huge-sdkmax",
        }
        for run_id in ("huge-ctl", "huge-strings", "huge-sdkmax"):
            entries = await asyncio.to_thread(reader.ledger, run_id)
            # run_started, the implicit step around the call, the call, run_completed
            assert [e["seq"] for e in entries] == list(range(len(entries)))
            (call,) = [e for e in entries if e["event"]["type"] == "tool_call"]
            assert call["event_hash"] == event_hash(call["event"]).hex()
        # every record the worker wrote fits a Kafka record, changelogs included
        limit = max_record_bytes(settings)
        for spec in (*topics.all(), *worker_state_specs(settings)):
            if spec.role == "events":
                continue
            for r in await read_all(kafka_bootstrap, spec.name):
                assert len(r.value or b"") + len(r.key or b"") < limit, spec.name
        deadletters = await read_all(kafka_bootstrap, topics.deadletter.name)
        assert deadletters == []
    finally:
        worker.kill(signal.SIGTERM)
    assert worker.proc.returncode == 0, worker.tail()


async def test_a_worker_keeping_partitions_across_a_rebalance_does_not_stop(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """The changelogs' last batches hold several records; Tansu reports the high watermark
    as the last batch's base offset + 1, and a worker whose recovery applied the whole batch
    used to stop with ConsistencyError when a rebalance left it the same partitions."""
    settings = _settings(kafka_bootstrap, topic_prefix, tmp_path)
    topics = topic_specs(settings)
    await _prepare(settings)
    offsets = GroupOffsets(kafka_bootstrap, settings.group_id, topics.events.name, PARTITIONS)
    messages = []
    for i in range(40):
        run = ev.simple_run(f"run-{i}", n_calls=4)
        messages += [(f"run-{i}", encode(run[:3]), False), (f"run-{i}", encode(run[3:]), False)]
    async with KafkaPublisher(kafka_bootstrap, topics.events.name, PARTITIONS) as pub:

        async def caught_up() -> bool:
            committed = await offsets.fetch()
            return all(committed.get(p, 0) >= e for p, e in pub.ends.items())

        await pub.publish(messages)
        first = Proc(settings, tmp_path / "first.log")
        await _wait("the first worker to process everything", caught_up, [first])
        first.kill(signal.SIGTERM)
        # a new worker recovers every changelog partition (no new records after this) ...
        a = Proc(settings, tmp_path / "a.log")
        await pub.publish([("run-x", encode([ev.started("run-x")]), False)])
        await _wait("the new worker to take over", caught_up, [a])
        # ... and keeps some of them when a second worker joins
        b = Proc(settings, tmp_path / "b.log")
        try:
            await asyncio.sleep(3 * settings.session_timeout_s)
            more = [(f"more-{i}", encode(ev.simple_run(f"more-{i}")), False) for i in range(20)]
            await pub.publish(more)
            await _wait("both workers to process new traffic", caught_up, [a, b])
            assert a.alive() and b.alive(), a.tail() + b.tail()
        finally:
            a.kill(signal.SIGTERM)
            b.kill(signal.SIGTERM)
    assert "ConsistencyError" not in a.tail() + b.tail()


async def test_a_restarted_worker_raises_stale_gap_on_time(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    gap_s = 4.0
    settings = _settings(kafka_bootstrap, topic_prefix, tmp_path, gap_timeout_s=gap_s)
    topics = topic_specs(settings)
    await _prepare(settings)
    offsets = GroupOffsets(kafka_bootstrap, settings.group_id, topics.events.name, PARTITIONS)
    run = ev.simple_run("run-g", n_calls=3)
    worker = Proc(settings, tmp_path / "first.log")
    try:
        async with KafkaPublisher(kafka_bootstrap, topics.events.name, PARTITIONS) as pub:
            await pub.publish([("run-g", encode(run[:2]), False)])
            await pub.publish([("run-g", encode(run[3:]), False)])  # seq 2 missing

            async def caught_up() -> bool:
                committed = await offsets.fetch()
                return all(committed.get(p, 0) >= e for p, e in pub.ends.items())

            await _wait("the gap to be seen", caught_up, [worker])
        opened = time.monotonic()
        worker.kill()  # SIGKILL with the gap open, long before it times out
        worker = Proc(settings, tmp_path / "second.log")

        async def flagged() -> bool:
            found = await read_compacted(kafka_bootstrap, topics.intercepts.name)
            return "run-g:stale_gap:2" in found

        await _wait("the stale_gap intercept", flagged, [worker], timeout_s=60)
        waited = time.monotonic() - opened
        # on time: the timeout, the new worker's start and group join, and one tick
        tick = min(5.0, gap_s / 2)
        assert waited < gap_s + 3 * settings.session_timeout_s + tick + 5, waited
    finally:
        worker.kill(signal.SIGTERM)


async def test_a_replacement_worker_reads_open_runs_entries_back_from_the_ledger(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from .test_kafka_e2e import run_embedded

    settings = _settings(kafka_bootstrap, topic_prefix, tmp_path)
    topics = topic_specs(settings)
    await _prepare(settings)
    offsets = GroupOffsets(kafka_bootstrap, settings.group_id, topics.events.name, PARTITIONS)
    runs = {f"open-{i}": ev.simple_run(f"open-{i}", n_calls=3) for i in range(12)}
    call = {"gen_ai_tool_name": "upload", "duration_ms": 5, "outcome": "success"}
    big = "open-big"
    runs[big] = [
        ev.started(big),
        ev.event(big, 1, "tool_call", {**call, "inputs": "\x01" * 200_000}, "plan"),
        ev.event(big, 2, "tool_call", {**call, "inputs": "small"}, "plan"),
        ev.completed(big, 3),
    ]
    first = [(run_id, encode(objs[:2]), False) for run_id, objs in runs.items()]
    rest = [(run_id, encode(objs[2:]), False) for run_id, objs in runs.items()]
    forged = ev.model_io("open-0", 1, "0.5")  # the same seq, another cost
    events = sum(len(objs) for objs in runs.values())
    async with KafkaPublisher(kafka_bootstrap, topics.events.name, PARTITIONS) as pub:

        async def caught_up() -> bool:
            committed = await offsets.fetch()
            return all(committed.get(p, 0) >= e for p, e in pub.ends.items())

        await pub.publish(first)
        worker = Proc(settings, tmp_path / "first.log")
        try:
            await _wait("the first halves to be processed", caught_up, [worker])
        finally:
            worker.kill()  # SIGKILL: every run is open, its entries only in the ledger
        worker = Proc(settings, tmp_path / "second.log")
        try:
            # the first halves again (duplicates), a different event at a committed seq
            # (equivocation), then the rest of every run
            await pub.publish([*first, ("open-0", encode([forged]), False), *rest])

            async def bundled() -> bool:
                found = await read_compacted(kafka_bootstrap, topics.bundles.name)
                return set(runs) <= set(found)

            await _wait("every bundle", bundled, [worker], timeout_s=120)
            await _wait("the second worker to catch up", caught_up, [worker])
        finally:
            worker.kill(signal.SIGTERM)
    assert worker.proc.returncode == 0, worker.tail()

    reader = KafkaOutputReader(settings)
    intercepts = {i["intercept_id"]: i for i in await asyncio.to_thread(reader.intercepts)}
    assert "open-0:equivocation:1" in intercepts
    assert not [k for k in intercepts if ":processing_error:" in k], intercepts
    assert await read_all(kafka_bootstrap, topics.deadletter.name) == []
    for run_id, objs in runs.items():
        stored = await asyncio.to_thread(reader.bundle, run_id)
        assert stored is not None
        verify_bundle_bytes(stored.data)
        bundle = json.loads(stored.data)
        assert [e["seq"] for e in bundle["events"]] == list(range(len(objs)))
    # the same bundles as the embedded runtime over the same input
    embedded = run_embedded(
        tmp_path / "embedded.db", await read_all(kafka_bootstrap, topics.events.name), settings
    )
    bundles = await read_compacted(kafka_bootstrap, topics.bundles.name)
    for run_id, value in bundles.items():
        data = load_archived_bundle(value) if is_manifest(value) else value
        assert data == embedded.bundles[run_id], run_id
    # every entry was written once, to the ledger (the oversized one as a manifest), and
    # the worker has no other copy of them on the broker
    ledger = await read_all(kafka_bootstrap, topics.ledger.name)
    assert len(ledger) == len({r.key for r in ledger}) == events
    assert [r.key for r in ledger if r.value and is_output_manifest(r.value)] == [
        b"open-big:000000000001"
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        names = set(await admin.list_topics())
    finally:
        await admin.close()
    mine = {n for n in names if n.startswith(f"{topic_prefix}.")}
    assert mine == {s.name for s in (*topics.all(), *worker_state_specs(settings))}, mine
