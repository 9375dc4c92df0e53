"""What every measurement shares: sizes, statistics, the broker, workers and Kafka helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from fleetledger.kernel.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the broker helper lives in the test package
    sys.path.insert(0, str(REPO))

from tests.kafka_broker import TansuBroker  # noqa: E402

#: Consumer-group session timeout of every worker the harness starts (Tansu joins take
#: about half of it); ``BENCH_SESSION_TIMEOUT_S`` overrides it (the smoke run uses 3).
SESSION_TIMEOUT_S = 6


def session_timeout() -> int:
    return int(os.environ.get("BENCH_SESSION_TIMEOUT_S", SESSION_TIMEOUT_S))


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """Workload sizes of one harness run."""

    reps: int
    session_timeout_s: int  # of every worker (Tansu joins take about half of it)
    busy_runs: int  # simulator runs of the few-busy shape
    slow_runs: int  # simulator runs of the many-slow shape
    sdk_busy_runs: int  # runs recorded through the SDK in measurement 1
    sdk_slow_runs: int
    embedded_runs: int  # default-shape runs of the embedded pipeline
    latency_rate: int  # events/s offered in the latency measurement
    latency_s: float  # seconds of steady traffic per repetition
    memory_events: int  # events through one worker in the memory measurement
    memory_runs: int  # concurrent runs of the memory measurement
    demo_events: int  # events of the `fleetledger demo` check (0: skip)
    naive_events: int  # events through the naive Faust agent (its rate is shape-independent)
    wait_s: float  # longest wait for a worker to account for all events
    verify_events: int = 100_000  # events of the bundle `fleetledger verify` checks
    verify_signed: int = 200  # signed demo bundles verified per repetition


FULL = Sizes(
    reps=3,
    session_timeout_s=SESSION_TIMEOUT_S,
    busy_runs=60,
    slow_runs=120,
    sdk_busy_runs=20,
    sdk_slow_runs=300,
    embedded_runs=150,
    latency_rate=5_000,
    latency_s=3.0,
    memory_events=30_000,
    memory_runs=2_000,
    demo_events=0,
    naive_events=4_000,
    wait_s=240.0,
)

SMOKE = Sizes(
    reps=1,
    session_timeout_s=3,
    busy_runs=3,
    slow_runs=30,
    sdk_busy_runs=2,
    sdk_slow_runs=20,
    embedded_runs=10,
    latency_rate=200,
    latency_s=1.0,
    memory_events=2_000,
    memory_runs=50,
    demo_events=0,
    naive_events=300,
    wait_s=60.0,
    verify_events=2_000,
    verify_signed=10,
)


# --------------------------------------------------------------------------- figures


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and N of repeated measurements."""
    vals = [float(v) for v in values]
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": vals,
    }


@dataclass
class Figure:
    """One measured quantity, its repetitions, and (optionally) its same-run baseline.

    ``ratio`` is computed per repetition (figure / its own baseline of that repetition)
    and summarized like the figure.
    """

    key: str
    title: str
    unit: str
    values: list[float] = field(default_factory=list)
    baseline_name: str | None = None
    baseline_values: list[float] = field(default_factory=list)
    target: str | None = None
    target_check: Callable[[dict[str, Any]], bool] | None = None
    notes: str = ""
    higher_is_better: bool = True

    def add(self, value: float, baseline: float | None = None) -> None:
        self.values.append(value)
        if baseline is not None:
            self.baseline_values.append(baseline)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"title": self.title, "unit": self.unit, **summary(self.values)}
        if self.baseline_name is not None and self.baseline_values:
            out["baseline"] = {"name": self.baseline_name, **summary(self.baseline_values)}
            ratios = [v / b for v, b in zip(self.values, self.baseline_values, strict=True) if b]
            out["ratio"] = summary(ratios) if ratios else None
        if self.target is not None:
            out["target"] = self.target
            out["met"] = bool(self.target_check(out)) if self.target_check else None
        if self.notes:
            out["notes"] = self.notes
        return out


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- broker


@contextlib.contextmanager
def broker(max_lifetime_s: float = 1800.0) -> Iterator[str]:
    """A fresh in-memory Tansu broker on 127.0.0.1 for the duration of the block."""
    b = TansuBroker(max_lifetime_s=max_lifetime_s)
    try:
        b.start()
        yield b.bootstrap
    finally:
        b.cleanup()


def unique_prefix(name: str) -> str:
    return f"bench-{name}-{uuid.uuid4().hex[:8]}"


def bench_settings(bootstrap: str, prefix: str, *, partitions: int = 4, **kw: Any) -> Settings:
    return load_settings(
        broker=f"kafka://{bootstrap}",
        topic_prefix=prefix,
        group_id=f"{prefix}-workers",
        partitions=partitions,
        enable_idempotence=False,
        session_timeout_s=float(session_timeout()),
        **kw,
    )


# --------------------------------------------------------------------------- workers


def console_script() -> str:
    """The venv's ``fleetledger`` console script."""
    path = Path(sys.executable).with_name("fleetledger")
    if not path.exists():
        raise RuntimeError(f"found no {path}, expected the editable install's console script")
    return str(path)


class Proc:
    """A subprocess of the harness, with a bounded lifetime, stopped by its own PID."""

    def __init__(
        self, argv: list[str], env: dict[str, str], name: str, max_lifetime_s: float = 900.0
    ) -> None:
        self.argv = argv
        self.env = env
        self.name = name
        self.max_lifetime_s = max_lifetime_s
        fd, path = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> Proc:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=str(REPO),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self.proc.returncode}: {self.log_tail()}"
            )
        if time.monotonic() - self.started_at > self.max_lifetime_s:
            self.stop()
            raise RuntimeError(f"{self.name} exceeded its {self.max_lifetime_s}s lifetime")

    def log_tail(self, limit: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")

    def peak_rss_bytes(self) -> int | None:
        """``VmHWM`` of the process (Linux), while it runs."""
        if self.proc is None:
            return None
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None

    def stop(self, timeout_s: float = 20.0) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


def worker_env(settings: Settings, archive_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FLEETLEDGER_BROKER": settings.broker,
        "FLEETLEDGER_TOPIC_PREFIX": settings.topic_prefix,
        "FLEETLEDGER_GROUP_ID": settings.group_id,
        "FLEETLEDGER_PARTITIONS": str(settings.partitions),
        "FLEETLEDGER_ENABLE_IDEMPOTENCE": "false",
        "FLEETLEDGER_SESSION_TIMEOUT_S": str(int(settings.session_timeout_s)),
        "FLEETLEDGER_ARCHIVE_DIR": str(archive_dir),
    }


def start_worker(settings: Settings, archive_dir: Path, name: str = "worker") -> Proc:
    """``fleetledger worker --broker kafka://...`` through the venv's console script."""
    argv = [console_script(), "worker", "--broker", settings.broker]
    return Proc(argv, worker_env(settings, archive_dir), name).start()


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[tuple[Proc, ...]]:
    try:
        yield procs
    finally:
        for p in procs:
            p.cleanup()


# --------------------------------------------------------------------------- Kafka I/O


async def create_topics(settings: Settings) -> None:
    """Every topic of the layout and the worker's changelogs, with their configs."""
    from fleetledger.processors.runtimes.kafka_io import (
        ensure_topics,
        topic_specs,
        worker_state_specs,
    )

    bootstrap = settings.broker_url().bootstrap
    specs = (*topic_specs(settings).all(), *worker_state_specs(settings))
    await ensure_topics(bootstrap, specs, timeout_s=30.0)


def kafka_compression(settings: Settings) -> str | None:
    """The producers' compression, as every fleetledger client maps it."""
    from fleetledger.kernel.kafka import compression_type

    return compression_type(settings.compression)


async def produce_raw(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[str, bytes]],
    partitions: int,
    *,
    compression: str | None = "lz4",
) -> float:
    """Publish pre-encoded messages (key = run id) with ``create_batch``/``send_batch``,
    each to the run's partition; return the seconds it took (acknowledged, acks=all)."""
    from fleetledger.processors.runtimes.kafka_io import partition_for

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        compression_type=compression,
        max_request_size=2_000_000,
        max_batch_size=1_000_000,
    )
    await producer.start()
    try:
        t0 = time.perf_counter()
        await send_batches(producer, topic, messages, partitions, partition_for)
        return time.perf_counter() - t0
    finally:
        await producer.stop()


async def send_batches(
    producer: AIOKafkaProducer,
    topic: str,
    messages: Sequence[tuple[str, bytes]],
    partitions: int,
    partition_of: Callable[[str, int], int],
) -> None:
    """Group ``messages`` into aiokafka batches per partition and send them all."""
    batches: dict[int, Any] = {}
    futures: list[asyncio.Future[Any]] = []
    for key, value in messages:
        p = partition_of(key, partitions)
        batch = batches.get(p)
        if batch is None:
            batch = batches[p] = producer.create_batch()
        kb = key.encode()
        if batch.append(key=kb, value=value, timestamp=None) is None:
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=p))
            batch = batches[p] = producer.create_batch()
            if batch.append(key=kb, value=value, timestamp=None) is None:
                raise RuntimeError(f"a {len(value)}-byte message does not fit one batch")
    for p, batch in batches.items():
        if batch.record_count():
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=p))
    if futures:
        await asyncio.gather(*futures)


class OffsetProbe:
    """Counts the records of a topic as they are published, with a plain consumer.

    (Records are counted by reading them: Tansu's ListOffsets answers can lag behind the
    last records of a partition.)
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.topic = topic
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.counts = dict.fromkeys(range(partitions), 0)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8_000_000,
            fetch_max_bytes=32_000_000,
            fetch_max_wait_ms=20,
        )

    async def __aenter__(self) -> OffsetProbe:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self, timeout_ms: int = 50) -> list[Any]:
        """Read what arrived; return the new records."""
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=50_000)
        new: list[Any] = []
        for tp, records in batches.items():
            self.counts[tp.partition] += len(records)
            new.extend(records)
        return new

    async def per_partition(self) -> dict[int, int]:
        await self.poll()
        return dict(self.counts)

    async def total(self) -> int:
        await self.poll()
        return sum(self.counts.values())


@dataclass
class Drain:
    """How a worker worked through a preloaded topic."""

    events: int
    seconds: float
    first_seen: float  # monotonic time the window started
    done_at: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def measure_drain(
    probe: OffsetProbe,
    total: int,
    procs: Sequence[Proc],
    *,
    warmup_fraction: float = 0.05,
    timeout_s: float = 240.0,
    poll_s: float = 0.1,
) -> Drain:
    """Wait until ``total`` outputs were published; the rate counts from the first poll
    that saw at least ``warmup_fraction`` of them (start-up and group join excluded)."""
    threshold = max(1, int(total * warmup_fraction))
    deadline = time.monotonic() + timeout_s
    start: tuple[float, int] | None = None
    while True:
        count = await probe.total()
        now = time.monotonic()
        if start is None and count >= threshold:
            start = (now, count)
        if count >= total:
            assert start is not None
            if count == start[1]:  # everything landed between two polls
                return Drain(total, poll_s, start[0], now)
            return Drain(count - start[1], now - start[0], start[0], now)
        for p in procs:
            p.check()
        if now > deadline:
            raise RuntimeError(
                f"timed out after {timeout_s}s: {count} of {total} outputs on {probe.topic}; "
                + "; ".join(f"{p.name}: {p.log_tail(800)}" for p in procs)
            )
        await asyncio.sleep(poll_s)
