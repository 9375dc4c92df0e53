"""What every measurement shares: sizes, statistics, the broker, processes and Kafka helpers.

How a stream processor is measured (:func:`measure_window`, used by every Kafka figure):

1. the processor (``fleetledger worker``, the raw baseline, the naive agent) starts on a
   fresh topic prefix; the harness waits until its consumer group is ``Stable`` (so its
   partitions are assigned), then publishes a small warm-up fleet and waits for its
   ledger records: from then on the processor is consuming, its tables recovered and its
   producers connected;
2. the measured messages are encoded and put into closed, compressed aiokafka record
   batches *before* the clock starts (one producer, per partition);
3. the clock starts, the batches are sent (``send_batch``, acks=all) and a consumer that
   reads the output topic continuously (no sleeps between polls) records when the last
   expected output record became readable.  The window is *start of publishing -> last
   output readable*: it contains the first input consumed and the last output
   acknowledged, and nothing of start-up;
4. the CPU time of the processor process (``utime + stime`` of ``/proc/<pid>/stat``, all
   threads) and of the broker process is read at both ends of the window: CPU
   microseconds per event is robust on a shared machine where wall time is not.
"""

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
from aiokafka.admin import AIOKafkaAdminClient

from fleetledger.kernel.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the broker helper lives in the test package
    sys.path.insert(0, str(REPO))

from tests.kafka_broker import TansuBroker  # noqa: E402

#: Consumer-group session timeout of every worker the harness starts (Tansu joins take
#: about half of it); ``BENCH_SESSION_TIMEOUT_S`` overrides it (the smoke run uses 3).
SESSION_TIMEOUT_S = 6

#: Partitions of every topic the harness creates.
PARTITIONS = 4


def session_timeout() -> int:
    return int(os.environ.get("BENCH_SESSION_TIMEOUT_S", SESSION_TIMEOUT_S))


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """Workload sizes of one harness run (event counts are lower bounds: the simulator
    runs enough whole runs to reach them)."""

    reps: int
    session_timeout_s: int  # of every worker (Tansu joins take about half of it)
    busy_events: int  # events of the few-busy shape through every processor
    slow_events: int  # events of the many-slow shape through every processor
    sdk_busy_events: int  # events recorded through the SDK in the producer measurement
    sdk_slow_events: int
    embedded_events: int  # default-shape events through the embedded pipeline
    latency_rate: int  # events/s offered in the latency measurement
    latency_s: float  # seconds of steady traffic per repetition
    latency_runs: int  # runs recording at the same time in the latency measurement
    memory_events: int  # events of unfinished runs in flight in the memory measurement
    memory_runs: int  # concurrent runs of the memory measurement
    demo_events: int  # events of the `fleetledger demo` check (0: skip)
    naive_events: int  # events through the naive Faust agent (one event per message)
    wait_s: float  # longest wait for a processor to account for all events
    verify_events: int = 100_000  # events of the bundle `fleetledger verify` checks
    verify_signed: int = 200  # signed demo bundles verified per repetition
    replay_calls: int = 2_000  # model calls (and as many tool calls) of the replayed run
    sdk_calls: int = 400  # model calls per side and variant of the instrumentation overhead
    warmup_runs: int = 2  # default-shape runs published before every measured window
    canonical_runs: int = 37  # default-shape runs whose events the canonical figure uses
    settle_s: float = 1.5  # wait after a window before counting the records written


FULL = Sizes(
    reps=3,
    session_timeout_s=SESSION_TIMEOUT_S,
    busy_events=100_000,
    slow_events=30_000,
    sdk_busy_events=100_000,
    sdk_slow_events=30_000,
    embedded_events=100_000,
    latency_rate=5_000,
    latency_s=10.0,
    latency_runs=50,
    memory_events=100_000,
    memory_runs=2_000,
    demo_events=0,
    naive_events=30_000,
    wait_s=300.0,
)

SMOKE = Sizes(
    reps=1,
    session_timeout_s=3,
    busy_events=1_000,
    slow_events=500,
    sdk_busy_events=500,
    sdk_slow_events=300,
    embedded_events=300,
    latency_rate=300,
    latency_s=1.0,
    latency_runs=10,
    memory_events=1_000,
    memory_runs=50,
    demo_events=0,
    naive_events=200,
    wait_s=60.0,
    verify_events=2_000,
    verify_signed=10,
    replay_calls=50,
    sdk_calls=40,
    warmup_runs=1,
    canonical_runs=2,
    settle_s=0.5,
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


def ratio_at_least(x: float) -> Callable[[dict[str, Any]], bool]:
    """Target check: the median of the per-repetition ratios is at least ``x``."""
    return lambda f: bool(f.get("ratio")) and f["ratio"]["median"] >= x


def median_at_most(x: float) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["median"] <= x


def median_below(x: float) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["median"] < x


def median_at_least(x: float) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["median"] >= x


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_bytes(pid: int, name: str) -> int | None:
    """A ``kB`` line of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``) in bytes."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * 1024
    return None


def machine_load() -> str:
    """The 1-minute load average and the busiest other processes, for the notes."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        return "load unknown"
    return f"load average {load1:.2f}"


@dataclass
class Broker:
    """The harness's broker: where to connect and its PID (for its CPU time)."""

    bootstrap: str
    pid: int | None

    def cpu_seconds(self) -> float | None:
        return None if self.pid is None else cpu_seconds(self.pid)


@contextlib.contextmanager
def broker(max_lifetime_s: float = 5400.0) -> Iterator[Broker]:
    """A fresh in-memory Tansu broker on 127.0.0.1 for the duration of the block."""
    b = TansuBroker(max_lifetime_s=max_lifetime_s)
    try:
        b.start()
        yield Broker(b.bootstrap, b.proc.pid if b.proc is not None else None)
    finally:
        b.cleanup()


def unique_prefix(name: str) -> str:
    return f"bench-{name}-{uuid.uuid4().hex[:8]}"


def bench_settings(
    bootstrap: str, prefix: str, *, partitions: int = PARTITIONS, **kw: Any
) -> Settings:
    return load_settings(
        broker=f"kafka://{bootstrap}",
        topic_prefix=prefix,
        group_id=f"{prefix}-workers",
        partitions=partitions,
        enable_idempotence=False,
        session_timeout_s=float(session_timeout()),
        **kw,
    )


def console_script() -> str:
    """The venv's ``fleetledger`` console script."""
    path = Path(sys.executable).with_name("fleetledger")
    if not path.exists():
        raise RuntimeError(f"found no {path}, expected the editable install's console script")
    return str(path)


class Proc:
    """A subprocess of the harness, with a bounded lifetime, stopped by its own PID."""

    def __init__(
        self, argv: list[str], env: dict[str, str], name: str, max_lifetime_s: float = 1200.0
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

    def cpu_seconds(self) -> float | None:
        return None if self.proc is None else cpu_seconds(self.proc.pid)

    def peak_rss_bytes(self) -> int | None:
        """``VmHWM`` of the process (Linux), while it runs."""
        return None if self.proc is None else status_bytes(self.proc.pid, "VmHWM")

    def rss_bytes(self) -> int | None:
        """``VmRSS`` of the process (Linux), while it runs."""
        return None if self.proc is None else status_bytes(self.proc.pid, "VmRSS")

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


def start_module(module: str, env: dict[str, str], name: str) -> Proc:
    """``python -m <module>`` of the harness (the raw baseline, the naive agent...)."""
    return Proc([sys.executable, "-m", module], {**os.environ, **env}, name).start()


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[tuple[Proc, ...]]:
    """Stop (SIGTERM, all at once, each by its PID) and clean up ``procs`` at the end."""
    try:
        yield procs
    finally:
        stop_all(procs)


def stop_all(procs: Sequence[Proc], timeout_s: float = 20.0) -> None:
    for p in procs:
        if p.proc is not None and p.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        if p.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
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


def partition_of(key: str, partitions: int) -> int:
    from fleetledger.processors.runtimes.kafka_io import partition_for

    return partition_for(key, partitions)


def bench_producer(bootstrap: str, compression: str | None = "zstd") -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        compression_type=compression,
        max_request_size=2_000_000,
        max_batch_size=1_000_000,
        linger_ms=0,
    )


async def produce_raw(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[str, bytes]],
    partitions: int,
    *,
    compression: str | None = "zstd",
) -> float:
    """Publish pre-encoded messages (key = run id) with ``create_batch``/``send_batch``,
    each to the run's partition; return the seconds it took (acknowledged, acks=all)."""
    producer = bench_producer(bootstrap, compression)
    await producer.start()
    try:
        t0 = time.perf_counter()
        await send_batches(producer, topic, messages, partitions, partition_of)
        return time.perf_counter() - t0
    finally:
        await producer.stop()


async def send_batches(
    producer: AIOKafkaProducer,
    topic: str,
    messages: Sequence[tuple[str, bytes]],
    partitions: int,
    partition_fn: Callable[[str, int], int],
) -> None:
    """Group ``messages`` into aiokafka batches per partition and send them all."""
    await send_prebuilt(producer, topic, prebuild(producer, messages, partitions, partition_fn))


def prebuild(
    producer: AIOKafkaProducer,
    messages: Sequence[tuple[str, bytes]],
    partitions: int,
    partition_fn: Callable[[str, int], int] = partition_of,
) -> list[tuple[int, Any]]:
    """``messages`` as closed record batches per partition, in order, compressed now
    (so that sending them later costs the harness only the network I/O)."""
    open_batches: dict[int, Any] = {}
    built: list[tuple[int, Any]] = []

    def seal(p: int, batch: Any) -> None:
        batch.close()
        build = getattr(batch, "_build", None)  # compress now, not inside the window
        if build is not None:
            build()
        built.append((p, batch))

    for key, value in messages:
        p = partition_fn(key, partitions)
        batch = open_batches.get(p)
        if batch is None:
            batch = open_batches[p] = producer.create_batch()
        kb = key.encode()
        if batch.append(key=kb, value=value, timestamp=None) is None:
            seal(p, batch)
            batch = open_batches[p] = producer.create_batch()
            if batch.append(key=kb, value=value, timestamp=None) is None:
                raise RuntimeError(f"a {len(value)}-byte message does not fit one batch")
    for p, batch in open_batches.items():
        if batch.record_count():
            seal(p, batch)
    return built


async def send_prebuilt(
    producer: AIOKafkaProducer, topic: str, batches: Sequence[tuple[int, Any]]
) -> None:
    """Send prepared batches (per partition in order) and wait until all are acknowledged."""
    futures: list[asyncio.Future[Any]] = []
    for p, batch in batches:
        futures.append(await producer.send_batch(batch, topic, partition=p))
    if futures:
        await asyncio.gather(*futures)


class OutputCounter:
    """Reads a topic continuously from the beginning and counts its records.

    ``reach(n)`` returns the monotonic time at which the n-th record had been read.  The
    poll loop never sleeps (``getmany`` waits at most ``fetch_max_wait_ms``), so that time
    is within a few tens of milliseconds of the record becoming readable.  ``keep`` keeps
    every record (for the latency measurement).
    """

    def __init__(
        self, bootstrap: str, topic: str, partitions: int = PARTITIONS, *, keep: bool = False
    ) -> None:
        self.topic = topic
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.count = 0
        self.keep = keep
        self.records: list[tuple[float, Any]] = []  # (time.time() read, record)
        self._waiters: list[tuple[int, asyncio.Future[float]]] = []
        self._task: asyncio.Task[None] | None = None
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8_000_000,
            fetch_max_bytes=32_000_000,
            fetch_max_wait_ms=10,
        )

    async def __aenter__(self) -> OutputCounter:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.consumer.stop()

    async def _loop(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=100_000)
            if not batches:
                continue
            now = time.monotonic()
            wall = time.time()
            for records in batches.values():
                self.count += len(records)
                if self.keep:
                    self.records.extend((wall, r) for r in records)
            if self._waiters:
                still = []
                for n, fut in self._waiters:
                    if self.count >= n:
                        if not fut.done():
                            fut.set_result(now)
                    else:
                        still.append((n, fut))
                self._waiters = still

    async def reach(self, n: int, procs: Sequence[Proc] = (), timeout_s: float = 300.0) -> float:
        """Monotonic time at which ``n`` records had been read (raises on timeout or when
        one of ``procs`` died)."""
        if self.count >= n:
            return time.monotonic()
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(fut), 0.5)
            except TimeoutError:
                pass
            if self._task is not None and self._task.done():
                self._task.result()
                raise RuntimeError(f"the reader of {self.topic} stopped")
            for p in procs:
                p.check()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"timed out after {timeout_s:g}s: {self.count} of {n} records on "
                    f"{self.topic}; " + "; ".join(f"{p.name}: {p.log_tail(800)}" for p in procs)
                )

    async def settle(self, quiet_s: float = 0.5, timeout_s: float = 30.0) -> int:
        """Wait until no record arrived for ``quiet_s``; return the count."""
        deadline = time.monotonic() + timeout_s
        last = -1
        while time.monotonic() < deadline:
            if self.count == last:
                return self.count
            last = self.count
            await asyncio.sleep(quiet_s)
        return self.count


async def true_end_offsets(bootstrap: str, topics: Sequence[str], partitions: int) -> int:
    """The number of records in ``topics`` (sum of the partitions' end offsets).

    Tansu's ListOffsets can answer the base offset of the last record batch + 1 rather
    than the last offset + 1, so the last batch of every partition is read to find the
    real end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        consumer.assign(tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        last = {tp: int(ends.get(tp, 0)) - 1 for tp in tps}
        unseen = {tp for tp in tps if last[tp] >= 0}
        for tp in tps:
            if tp in unseen:
                consumer.seek(tp, last[tp])
            else:
                consumer.pause(tp)
        deadline = time.monotonic() + 10.0
        while unseen and time.monotonic() < deadline:
            got = await consumer.getmany(*unseen, timeout_ms=200)
            for tp, records in got.items():
                if records:
                    last[tp] = max(last[tp], records[-1].offset)
                    unseen.discard(tp)
                    consumer.pause(tp)
        return sum(v + 1 for v in last.values())
    finally:
        await consumer.stop()


async def group_state(admin: AIOKafkaAdminClient, group: str) -> tuple[str, int]:
    response = await admin.describe_consumer_groups([group])
    g = response[0].groups[0]
    return g[2], len(g[5])  # (state, members)


async def wait_group(
    bootstrap: str, group: str, members: int, procs: Sequence[Proc], timeout_s: float = 90.0
) -> float:
    """Seconds until ``group`` is Stable with ``members`` members (partitions assigned)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    t0 = time.monotonic()
    try:
        while True:
            state, n = await group_state(admin, group)
            if state == "Stable" and n >= members:
                return time.monotonic() - t0
            for p in procs:
                p.check()
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(
                    f"group {group} not Stable with {members} members ({state}, {n}); "
                    + "; ".join(f"{p.name}: {p.log_tail(800)}" for p in procs)
                )
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


# --------------------------------------------------------------------------- windows


@dataclass
class Window:
    """One measured window: events in, seconds from the start of publishing to the last
    output readable, CPU seconds of the processor and of the broker over that window."""

    events: int
    seconds: float
    publish_s: float  # of which: publishing the prepared batches (acknowledged)
    cpu_s: float
    broker_cpu_s: float | None
    records_out: int | None = None  # records the processor wrote (all topics), if counted
    others_cpu_s: float = 0.0  # CPU of the idle processes of the harness over the window

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.events * 1e6 if self.events else 0.0

    @property
    def broker_cpu_us(self) -> float:
        if self.broker_cpu_s is None or not self.events:
            return 0.0
        return self.broker_cpu_s / self.events * 1e6

    @property
    def records_per_event(self) -> float:
        return (self.records_out or 0) / self.events if self.events else 0.0

    def describe(self) -> str:
        return (
            f"{self.events:,} events in {self.seconds:.2f}s ({self.rate:,.0f} ev/s), "
            f"{self.cpu_us:.1f} CPU us/event, broker {self.broker_cpu_us:.1f} us/event"
            + (f", {self.records_per_event:.2f} records/event" if self.records_out else "")
            + (f", idle others {self.others_cpu_s:.2f} CPU s" if self.others_cpu_s else "")
        )


@dataclass
class Target:
    """A processor under test, started and ready (see :func:`ready`)."""

    proc: Proc
    bootstrap: str
    events_topic: str
    output_topic: str  # one record per event (the ledger)
    group: str
    written_topics: tuple[str, ...] = ()  # every topic it writes (records per event)
    partitions: int = PARTITIONS
    compression: str | None = "zstd"
    members: int = 1
    extra: list[Proc] = field(default_factory=list)  # more processes of the same group


async def ready(
    target: Target, warmup: Sequence[tuple[str, bytes]], warmup_events: int, sizes: Sizes
) -> None:
    """Wait for the group to be Stable, publish the warm-up fleet, wait for its outputs."""
    procs = [target.proc, *target.extra]
    await wait_group(target.bootstrap, target.group, target.members, procs)
    producer = bench_producer(target.bootstrap, target.compression)
    await producer.start()
    try:
        await send_batches(producer, target.events_topic, warmup, target.partitions, partition_of)
    finally:
        await producer.stop()
    async with OutputCounter(target.bootstrap, target.output_topic, target.partitions) as out:
        await out.reach(warmup_events, procs, timeout_s=sizes.wait_s)


async def measure_window(
    target: Target,
    messages: Sequence[tuple[str, bytes]],
    events: int,
    sizes: Sizes,
    broker_: Broker,
    *,
    count_records: bool = True,
    during: Callable[[], Any] | None = None,
    others: Sequence[Proc] = (),
    outputs: int | None = None,
) -> Window:
    """Publish ``messages`` (prepared first) to a ready processor; see the module docstring.

    ``events`` outputs (or ``outputs``, for a processor that writes one per message) are
    expected on the output topic after those already there.
    ``during``: a coroutine function started with the window (the scale-out join);
    ``others``: processes that idle meanwhile (their CPU over the window is reported)."""
    procs = [target.proc, *target.extra]
    producer = bench_producer(target.bootstrap, target.compression)
    await producer.start()
    try:
        batches = prebuild(producer, messages, target.partitions)
        async with OutputCounter(target.bootstrap, target.output_topic, target.partitions) as out:
            base = await out.settle(0.3)
            written0 = (
                await true_end_offsets(target.bootstrap, target.written_topics, target.partitions)
                if count_records and target.written_topics
                else None
            )
            cpu0 = _cpu(procs)
            idle0 = _cpu(others)
            bcpu0 = broker_.cpu_seconds()
            t0 = time.monotonic()
            extra_task = asyncio.create_task(during()) if during is not None else None
            await send_prebuilt(producer, target.events_topic, batches)
            published = time.monotonic()
            expected = events if outputs is None else outputs
            done = await out.reach(base + expected, procs, timeout_s=sizes.wait_s)
            cpu1 = _cpu(procs)
            idle1 = _cpu(others)
            bcpu1 = broker_.cpu_seconds()
            if extra_task is not None:
                await extra_task
    finally:
        await producer.stop()
    written = None
    if written0 is not None:
        await asyncio.sleep(sizes.settle_s)  # state and changelog writes after the outputs
        written = (
            await true_end_offsets(target.bootstrap, target.written_topics, target.partitions)
            - written0
        )
    return Window(
        events=events,
        seconds=done - t0,
        publish_s=published - t0,
        cpu_s=cpu1 - cpu0,
        broker_cpu_s=None if bcpu0 is None or bcpu1 is None else bcpu1 - bcpu0,
        records_out=written,
        others_cpu_s=idle1 - idle0,
    )


def _cpu(procs: Sequence[Proc]) -> float:
    total = 0.0
    for p in procs:
        c = p.cpu_seconds()
        if c is None:
            raise RuntimeError(f"cannot read the CPU time of {p.name} (pid {p.pid})")
        total += c
    return total


def worker_target(bootstrap: str, settings: Settings, proc: Proc, members: int = 1) -> Target:
    """The :class:`Target` of ``fleetledger worker`` processes on ``settings``' topics."""
    from fleetledger.processors.runtimes.kafka_io import topic_specs, worker_state_specs

    topics = topic_specs(settings)
    written = tuple(s.name for s in topics.all() if s.role != "events") + tuple(
        s.name for s in worker_state_specs(settings)
    )
    return Target(
        proc=proc,
        bootstrap=bootstrap,
        events_topic=topics.events.name,
        output_topic=topics.ledger.name,
        group=settings.group_id,
        written_topics=written,
        partitions=settings.partitions,
        compression=kafka_compression(settings),
        members=members,
    )
