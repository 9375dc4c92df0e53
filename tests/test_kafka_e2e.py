"""End to end on a real Kafka-protocol broker: SDK -> events topic -> Faust worker -> outputs.

One worker process (started as a subprocess, stopped by its PID) serves the whole module:

1. simulated fleet traffic is recorded through the SDK's Kafka transport;
2. a garbage message and a truncated real message are put on every events partition,
   then more traffic follows on the same partitions;
3. the outputs are read back with a plain consumer and checked: contiguous, correctly
   chained ledgers; totals; bundles (inline or archived with a manifest) whose digests
   verify; intercepts; dead letters carrying the original bytes and their provenance;
4. the same messages are produced again: totals, bundles and ledgers stay as they were;
5. the very same message bytes processed by the embedded runtime give byte-identical
   bundle digests and equal totals;
6. SIGTERM stops the worker cleanly; a restarted worker (same group) resumes from its
   committed offsets and changelog-backed state and processes new traffic;
7. SIGKILL in the middle of a burst: a replacement worker finishes it, and every total
   and bundle digest still equals the embedded runtime's over the whole events topic.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from fleetledger.kernel.config import Settings, load_settings
from fleetledger.kernel.sqlitelog import SqliteLog
from fleetledger.processors.bundle import bundle_digest
from fleetledger.processors.canonical import event_hash, genesis, link
from fleetledger.processors.runtimes import kafka_io
from fleetledger.processors.runtimes.embedded import EmbeddedReader, EmbeddedRuntime
from fleetledger.processors.runtimes.kafka_io import (
    KafkaRecord,
    TopicSet,
    ensure_topics,
    partition_for,
    read_all,
    read_compacted,
    topic_specs,
)
from fleetledger.processors.signing import generate_key, private_pem, public_pem
from fleetledger.producers import Recorder
from fleetledger.producers.simulator import simulate
from fleetledger.schemas.codec import Codec

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio(loop_scope="module")]

PARTITIONS = 3
RUNS_BEFORE = 24
RUNS_AFTER = 8
RUNS_RESTART = 4
RUNS_CRASH = 40
WAIT_S = 60.0


# --------------------------------------------------------------------------- helpers


@dataclass
class Worker:
    """A ``fleetledger worker`` subprocess (settings from its environment), stopped by PID."""

    settings: Settings
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

    def start(self) -> None:
        s = self.settings
        self.env = {
            **os.environ,
            "FLEETLEDGER_BROKER": s.broker,
            "FLEETLEDGER_TOPIC_PREFIX": s.topic_prefix,
            "FLEETLEDGER_GROUP_ID": s.group_id,
            "FLEETLEDGER_PARTITIONS": str(s.partitions),
            "FLEETLEDGER_ENABLE_IDEMPOTENCE": "false",
            "FLEETLEDGER_SESSION_TIMEOUT_S": str(s.session_timeout_s),
            "FLEETLEDGER_ARCHIVE_DIR": str(s.archive_dir),
            "FLEETLEDGER_MAX_MESSAGE_BYTES": str(s.max_message_bytes),
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("fleetledger")), "worker", *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log_tail(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-4000:].decode("utf-8", "replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout_s``; the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                return None
        return proc.returncode


async def wait_for(
    what: str,
    check: Callable[[], Awaitable[bool]],
    worker: Worker,
    timeout_s: float = WAIT_S,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        if not worker.alive():
            pytest.fail(f"worker exited while waiting for {what}:\n{worker.log_tail()}")
        await asyncio.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}:\n{worker.log_tail()}")


async def record_fleet(settings: Settings, runs: int, seed: int) -> list[str]:
    async with Recorder.from_url(settings.broker, settings=settings) as rec:
        summary = await simulate(rec, runs=runs, seed=seed)
    return list(summary.run_ids)


async def produce(
    bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes, int | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for key, value, partition in messages:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


async def committed_lag(bootstrap: str, group: str, topic: str) -> int:
    """Messages of ``topic`` the group has not committed yet."""
    records = await read_all(bootstrap, topic)
    ends: dict[int, int] = defaultdict(int)
    for r in records:
        ends[r.partition] = max(ends[r.partition], r.offset + 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # Partitions named explicitly: an "all partitions" offset fetch is not
        # understood by every broker (Tansu answers with a frame aiokafka cannot parse).
        offsets = await admin.list_consumer_group_offsets(
            group, partitions=[TopicPartition(topic, p) for p in range(PARTITIONS)]
        )
    finally:
        await admin.close()
    committed = {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    return sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())


def ledger_by_run(records: list[KafkaRecord]) -> dict[str, dict[int, dict[str, Any]]]:
    runs: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in records:
        assert r.key is not None and r.value is not None
        entry = json.loads(r.value)
        assert r.key.decode() == f"{entry['run_id']}:{entry['seq']:012d}"
        assert r.partition == partition_for(entry["run_id"], PARTITIONS)
        previous = runs[entry["run_id"]].setdefault(entry["seq"], entry)
        assert previous == entry, "one (run, seq) was published with two different entries"
    return runs


def check_chain(run_id: str, entries: dict[int, dict[str, Any]]) -> None:
    seqs = sorted(entries)
    assert seqs == list(range(len(seqs))), f"run {run_id}: ledger seqs not contiguous: {seqs}"
    prev = genesis(run_id)
    for seq in seqs:
        e = entries[seq]
        assert e["prev_hash"] == prev.hex()
        ev_hash = event_hash(e["event"])
        assert e["event_hash"] == ev_hash.hex()
        prev = link(prev, ev_hash)
        assert e["entry_hash"] == prev.hex()


def bundle_of(value: bytes) -> dict[str, Any]:
    if kafka_io.is_manifest(value):
        value = kafka_io.load_archived_bundle(value)
    bundle: dict[str, Any] = json.loads(value)
    return bundle


# --------------------------------------------------------------------------- scenario


@dataclass
class Scenario:
    settings: Settings
    topics: TopicSet
    holder: list[Worker]
    bootstrap: str
    run_ids: list[str]
    corrupt: list[tuple[int, bytes]]  # (partition, bytes) of every expected dead letter
    bad_records: list[tuple[int, bytes]]  # the records that carry them
    totals: dict[str, bytes]
    bundles: dict[str, bytes]
    ledger: list[KafkaRecord]
    tmp: Path

    @property
    def worker(self) -> Worker:
        return self.holder[-1]


@pytest.fixture(scope="module")
def scenario_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kafka-e2e")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scenario(kafka_bootstrap: str, scenario_dir: Path) -> AsyncIterator[Scenario]:
    prefix = f"e2e-{os.getpid()}-{int(time.time())}"
    settings = load_settings(
        broker=f"kafka://{kafka_bootstrap}",
        topic_prefix=prefix,
        group_id=f"{prefix}-workers",
        partitions=PARTITIONS,
        enable_idempotence=False,
        session_timeout_s=6,
        archive_dir=scenario_dir / "archive",
        max_message_bytes=20_000,
        linger_ms=0,
    )
    topics = topic_specs(settings)
    await ensure_topics(kafka_bootstrap, topics.all())
    key = generate_key()
    (scenario_dir / "signer.pem").write_bytes(private_pem(key))
    (scenario_dir / "signer.pub.pem").write_bytes(public_pem(key.public_key()))
    worker = Worker(
        settings,
        scenario_dir / "worker.log",
        args=[
            "--archive",
            str(scenario_dir / "compliance"),
            "--sign",
            str(scenario_dir / "signer.pem"),
        ],
    )
    worker.start()
    # The worker object may be replaced by a test (restart); stop whichever is current.
    holder: list[Worker] = [worker]
    try:
        run_ids = await record_fleet(settings, RUNS_BEFORE, seed=11)

        # Corrupt input on every partition: garbage, and a real message cut short.
        events = await read_all(kafka_bootstrap, topics.events.name)
        real = next(r.value for r in events if r.value is not None and len(r.value) > 40)
        corrupt = [(p, b"\x00garbage, not a fleetledger message") for p in range(PARTITIONS)]
        corrupt += [(p, real[: len(real) // 2]) for p in range(PARTITIONS)]
        bad_records = list(corrupt)
        # ... and a pack whose second and third messages are bad: only those are dead letters
        codec = Codec()
        good = codec.messages_of(real)[0]
        bad_items = [b"\xc3\x01 truncated", good[:-1]]
        for p in range(PARTITIONS):
            pack = codec.encode_pack([good, *bad_items], check=False)
            bad_records.append((p, pack))
            corrupt += [(p, item) for item in bad_items]
        await produce(kafka_bootstrap, topics.events.name, [(b"bad", v, p) for p, v in bad_records])

        # Traffic after the corrupt messages, on the same partitions.
        run_ids += await record_fleet(settings, RUNS_AFTER, seed=12)

        async def all_bundled() -> bool:
            bundles = await read_compacted(kafka_bootstrap, topics.bundles.name)
            return set(run_ids) <= set(bundles)

        await wait_for(f"{len(run_ids)} bundles", all_bundled, worker)

        async def caught_up() -> bool:
            lag = await committed_lag(kafka_bootstrap, settings.group_id, topics.events.name)
            return lag == 0

        await wait_for("committed offsets at the end of the events topic", caught_up, worker)
        yield Scenario(
            settings=settings,
            topics=topics,
            holder=holder,
            bootstrap=kafka_bootstrap,
            run_ids=run_ids,
            corrupt=corrupt,
            bad_records=bad_records,
            totals=await read_compacted(kafka_bootstrap, topics.totals.name),
            bundles=await read_compacted(kafka_bootstrap, topics.bundles.name),
            ledger=await read_all(kafka_bootstrap, topics.ledger.name),
            tmp=scenario_dir,
        )
    finally:
        for w in holder:
            w.stop()


# --------------------------------------------------------------------------- tests


async def test_ledger_is_contiguous_and_chained(scenario: Scenario) -> None:
    runs = ledger_by_run(scenario.ledger)
    assert set(runs) == set(scenario.run_ids)
    for run_id, entries in runs.items():
        check_chain(run_id, entries)
        # Entries of a run were published in seq order into the run's partition.
        in_log = [
            json.loads(r.value)["seq"]
            for r in scenario.ledger
            if r.value is not None and r.key is not None and r.key.startswith(f"{run_id}:".encode())
        ]
        assert in_log == sorted(in_log)


async def test_totals_and_bundles_match_the_ledger(scenario: Scenario) -> None:
    runs = ledger_by_run(scenario.ledger)
    assert set(scenario.totals) == set(scenario.run_ids)
    archived = 0
    for run_id in scenario.run_ids:
        totals = json.loads(scenario.totals[run_id])
        assert totals["run_id"] == run_id
        assert totals["status"] in ("completed", "failed")
        assert totals["events"] == len(runs[run_id])
        assert totals["through_seq"] == len(runs[run_id]) - 1
        value = scenario.bundles[run_id]
        archived += kafka_io.is_manifest(value)
        bundle = bundle_of(value)
        assert bundle["chain"]["length"] == len(runs[run_id])
        assert bundle["chain"]["head"] == runs[run_id][len(runs[run_id]) - 1]["entry_hash"]
        assert bundle["integrity"]["digest"] == bundle_digest(bundle)
        assert bundle["totals"]["cost"] == totals["cost"]
        if kafka_io.is_manifest(value):
            assert json.loads(value)["digest"] == bundle["integrity"]["digest"]
    # The 20 kB limit of this scenario sends the larger bundles to the archive.
    assert 0 < archived < len(scenario.run_ids)


async def test_intercepts_are_published(scenario: Scenario) -> None:
    intercepts = await read_compacted(scenario.bootstrap, scenario.topics.intercepts.name)
    assert intercepts
    for key, value in intercepts.items():
        obj = json.loads(value)
        assert obj["run_id"] in scenario.run_ids
        assert key.startswith(f"{obj['run_id']}:{obj['kind']}:")
    kinds = {json.loads(v)["kind"] for v in intercepts.values()}
    assert "run_failed" in kinds or "budget_exceeded" in kinds or kinds


async def test_corrupt_messages_become_dead_letters(scenario: Scenario) -> None:
    dead = await read_all(scenario.bootstrap, scenario.topics.deadletter.name)
    assert sorted(
        (int(d.header(kafka_io.HEADER_SOURCE_PARTITION) or b"-1"), d.value) for d in dead
    ) == sorted(scenario.corrupt)
    events = {
        (r.partition, r.offset): r.value
        for r in await read_all(scenario.bootstrap, scenario.topics.events.name)
    }
    for d in dead:
        topic = d.header(kafka_io.HEADER_SOURCE_TOPIC)
        partition = int(d.header(kafka_io.HEADER_SOURCE_PARTITION) or b"-1")
        offset = int(d.header(kafka_io.HEADER_SOURCE_OFFSET) or b"-1")
        index = d.header(kafka_io.HEADER_SOURCE_INDEX)
        error = (d.header(kafka_io.HEADER_ERROR) or b"").decode()
        assert topic == scenario.topics.events.name.encode()
        source = events[(partition, offset)]
        key = f"{scenario.topics.events.name}:{partition}:{offset}"
        if index is not None:  # a message of a pack: its own bytes, keyed by its index
            assert source is not None
            assert Codec().unpack(source)[int(index)] == d.value
            key += f":{int(index)}"
        else:
            assert source == d.value, "dead letter must carry the original bytes"
        assert d.key == key.encode()
        assert "expected" in error
    assert sum(d.header(kafka_io.HEADER_SOURCE_INDEX) is not None for d in dead) == 2 * PARTITIONS


async def test_redelivered_messages_change_nothing(scenario: Scenario) -> None:
    events = await read_all(scenario.bootstrap, scenario.topics.events.name)
    corrupt = {v for _, v in scenario.bad_records}
    again = [(r.key, r.value, r.partition) for r in events if r.value not in corrupt]
    assert again
    await produce(scenario.bootstrap, scenario.topics.events.name, again)  # type: ignore[arg-type]

    async def caught_up() -> bool:
        lag = await committed_lag(
            scenario.bootstrap, scenario.settings.group_id, scenario.topics.events.name
        )
        return lag == 0

    await wait_for("the redelivered messages to be processed", caught_up, scenario.worker)
    assert await read_compacted(scenario.bootstrap, scenario.topics.totals.name) == scenario.totals
    assert (
        await read_compacted(scenario.bootstrap, scenario.topics.bundles.name) == scenario.bundles
    )
    ledger = await read_all(scenario.bootstrap, scenario.topics.ledger.name)
    assert ledger_by_run(ledger) == ledger_by_run(scenario.ledger)
    dead = await read_all(scenario.bootstrap, scenario.topics.deadletter.name)
    assert len(dead) == len(scenario.corrupt)


@dataclass
class EmbeddedResult:
    deadletters: int
    digests: dict[str, str]
    totals: dict[str, dict[str, Any]]
    bundles: dict[str, bytes]


def run_embedded(path: Path, events: list[KafkaRecord], settings: Settings) -> EmbeddedResult:
    """The same message bytes, in partition order, through the embedded runtime."""
    from fleetledger.processors.runtimes.backend import core_config

    log = SqliteLog.open(path)
    try:
        log.append([((r.key or b"").decode("utf-8", "replace"), r.value or b"") for r in events])
    finally:
        log.close()
    config = core_config(settings)
    with EmbeddedRuntime(path, Codec(), config) as runtime:
        stats = runtime.process_available()
    with EmbeddedReader(path) as reader:
        return EmbeddedResult(
            deadletters=stats.deadletters,
            digests={b.run_id: b.digest for b in reader.bundles()},
            totals={t["run_id"]: dict(t) for t in reader.totals()},
            bundles={b.run_id: b.data for b in reader.bundles()},
        )


async def test_embedded_runtime_gives_the_same_bundles_and_totals(scenario: Scenario) -> None:
    events = await read_all(scenario.bootstrap, scenario.topics.events.name)
    embedded = run_embedded(scenario.tmp / "embedded.db", events, scenario.settings)
    assert embedded.deadletters == len(scenario.corrupt)
    kafka_digests = {
        run_id: bundle_of(value)["integrity"]["digest"]
        for run_id, value in scenario.bundles.items()
    }
    assert embedded.digests == kafka_digests
    for run_id, value in scenario.bundles.items():
        if kafka_io.is_manifest(value):
            assert embedded.bundles[run_id] == kafka_io.load_archived_bundle(value)
        else:
            assert embedded.bundles[run_id] == value
    assert embedded.totals == {k: json.loads(v) for k, v in scenario.totals.items()}


async def test_sigterm_then_restart_resumes(scenario: Scenario) -> None:
    worker = scenario.worker
    assert worker.alive()
    started = time.monotonic()
    assert worker.stop(timeout_s=30) == 0, worker.log_tail()
    assert time.monotonic() - started < 30

    restarted = Worker(scenario.settings, scenario.tmp / "worker-restarted.log")
    scenario.holder.append(restarted)  # stopped by the fixture's teardown
    restarted.start()
    new_runs = await record_fleet(scenario.settings, RUNS_RESTART, seed=13)

    async def bundled() -> bool:
        bundles = await read_compacted(scenario.bootstrap, scenario.topics.bundles.name)
        return set(new_runs) <= set(bundles)

    await wait_for("bundles of the runs recorded after the restart", bundled, restarted)

    async def caught_up() -> bool:
        lag = await committed_lag(
            scenario.bootstrap, scenario.settings.group_id, scenario.topics.events.name
        )
        return lag == 0

    await wait_for("the restarted worker to catch up", caught_up, restarted)
    totals = await read_compacted(scenario.bootstrap, scenario.topics.totals.name)
    assert {k: totals[k] for k in scenario.totals} == scenario.totals
    ledger = ledger_by_run(await read_all(scenario.bootstrap, scenario.topics.ledger.name))
    for run_id in new_runs:
        check_chain(run_id, ledger[run_id])
    old = ledger_by_run(scenario.ledger)
    assert {k: ledger[k] for k in old} == old


async def test_sigkill_mid_stream_loses_and_doubles_nothing(scenario: Scenario) -> None:
    worker = scenario.worker
    assert worker.alive()
    before = set(await read_compacted(scenario.bootstrap, scenario.topics.bundles.name))
    new_runs = await record_fleet(scenario.settings, RUNS_CRASH, seed=14)

    async def some_progress() -> bool:
        bundles = await read_compacted(scenario.bootstrap, scenario.topics.bundles.name)
        return len(set(bundles) - before) >= 1

    await wait_for("the worker to start on the new runs", some_progress, worker)
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGKILL)  # no shutdown, no final commit
    worker.proc.wait(timeout=10)

    replacement = Worker(scenario.settings, scenario.tmp / "worker-after-kill.log")
    scenario.holder.append(replacement)
    replacement.start()

    async def all_bundled() -> bool:
        bundles = await read_compacted(scenario.bootstrap, scenario.topics.bundles.name)
        return set(new_runs) <= set(bundles)

    await wait_for("bundles of every run after the crash", all_bundled, replacement, 90)

    async def caught_up() -> bool:
        lag = await committed_lag(
            scenario.bootstrap, scenario.settings.group_id, scenario.topics.events.name
        )
        return lag == 0

    await wait_for("the replacement worker to catch up", caught_up, replacement)
    ledger = ledger_by_run(await read_all(scenario.bootstrap, scenario.topics.ledger.name))
    for run_id in new_runs:
        check_chain(run_id, ledger[run_id])
    events = await read_all(scenario.bootstrap, scenario.topics.events.name)
    embedded = run_embedded(scenario.tmp / "embedded-after-kill.db", events, scenario.settings)
    totals = await read_compacted(scenario.bootstrap, scenario.topics.totals.name)
    assert {k: json.loads(v) for k, v in totals.items()} == embedded.totals
    bundles = await read_compacted(scenario.bootstrap, scenario.topics.bundles.name)
    assert {k: bundle_of(v)["integrity"]["digest"] for k, v in bundles.items()} == (
        embedded.digests
    )


async def test_the_worker_archives_signed_bundles_that_verify_offline(scenario: Scenario) -> None:
    root = scenario.tmp / "compliance"
    bundles = sorted(root.rglob("*.bundle.json"))
    archived = {p.name.removesuffix(".bundle.json") for p in bundles}
    assert set(scenario.run_ids) <= archived
    for path in bundles:
        # <archive>/<tenant>/<yyyy>/<mm>/<dd>/<run_id>.bundle.json, with its envelope beside
        assert len(path.relative_to(root).parts) == 5
        assert path.with_name(path.name.replace(".bundle.json", ".dsse.json")).exists()
    files = [str(p) for p in root.rglob("*.json")]
    res = subprocess.run(
        [
            str(Path(sys.executable).with_name("fleetledger")),
            "verify",
            *files,
            "--key",
            str(scenario.tmp / "signer.pub.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]


async def test_read_commands_on_kafka_read_the_projected_read_model(scenario: Scenario) -> None:
    env = {
        **os.environ,
        "FLEETLEDGER_BROKER": scenario.settings.broker,
        "FLEETLEDGER_TOPIC_PREFIX": scenario.settings.topic_prefix,
        "FLEETLEDGER_READ_DB": f"sqlite:///{scenario.tmp / 'read.db'}",
        "FLEETLEDGER_PROJECTOR_GROUP_ID": f"{scenario.settings.topic_prefix}-projector",
    }
    exe = str(Path(sys.executable).with_name("fleetledger"))

    def cli(*args: str) -> str:
        res = subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=180)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout

    totals_topic = scenario.topics.totals.name
    before = len(await read_compacted(scenario.bootstrap, totals_topic))
    cli("projector", "--once")
    after = len(await read_compacted(scenario.bootstrap, totals_topic))
    report = json.loads(cli("costs", "--json"))
    # other tests of this module may still be adding runs: the report lies between two reads
    assert before <= report["runs"] <= after and report["runs"] >= len(scenario.run_ids)
    assert sum(line["runs"] for line in report["by_agent"]) == report["runs"]
    run_id = scenario.run_ids[0]
    published = json.loads(scenario.bundles[run_id])
    is_manifest = published.get("kind") == "bundle-manifest"  # archived: read from the file
    expected = published["digest"] if is_manifest else published["integrity"]["digest"]
    shown = json.loads(cli("show", run_id, "--json"))
    assert shown["integrity"]["digest"] == expected
    assert f"Run {run_id}" in cli("show", run_id)
    listed = json.loads(cli("runs", "--json", "--limit", "1000"))["runs"]
    assert set(scenario.run_ids) <= {r["run_id"] for r in listed}
    started = [r["started_at"] for r in listed if r["started_at"]]
    assert started == sorted(started, reverse=True)
    intercepts = json.loads(cli("intercepts", "--json", "--limit", "1000"))
    assert intercepts["total"] >= 1
