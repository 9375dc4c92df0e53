"""Where the worker's CPU per event goes: ``python -m bench.profile``.

``python -m bench.profile [--shape few_busy|many_slow ...] [--events N] [--rate HZ]``
starts a test broker and a ready ``fleetledger worker`` (like measurement 2), attaches
``py-spy record`` (``pip install py-spy``; a sampling profiler that reads the process
from outside, threads included) for one measured window of the shape's traffic, and
splits the samples into the parts of the worker's job, in percent of the samples and in
CPU microseconds per event (share x the window's CPU per event):

* exclusive: every sample counted once, by the innermost frame that names a part
  (decode, chain, fold, entry JSON, run state, bundle, totals, changelog writes, output
  sends, Kafka client, Faust, event loop...);
* inclusive: samples under a few key functions (a function's callees included).

``--pipeline`` profiles the pipeline alone instead (``cProfile`` of
``Pipeline.handle_many`` over in-memory ports on the same traffic, no Kafka), by function;
``--embedded`` profiles ``EmbeddedRuntime.process_available`` over a simulated default
fleet of ``--events`` events in a SQLite log: wall time by part without a profiler, then
cProfile by function (which inflates code making many small Python calls).
Writes ``profile-<shape>.txt`` (and the raw py-spy stacks) to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .common import (
    PARTITIONS,
    Broker,
    Sizes,
    Window,
    bench_settings,
    broker,
    create_topics,
    log,
    measure_window,
    partition_of,
    ready,
    running,
    start_worker,
    unique_prefix,
    worker_target,
)
from .traffic import WORKER_SHAPES, Traffic, shape_traffic, warmup_fleet

#: (part, regex over one py-spy frame "function (path:line)").  A sample is named by the
#: innermost frame that matches one of these; frames that only match :data:`GENERIC`
#: (the event loop, the Kafka client's connections and codecs) are charged to the part
#: that called them, or to themselves when no part is on the stack (exclusive view).
PARTS: tuple[tuple[str, str], ...] = (
    ("decode (codec, fastavro, fast path)", r"fleetledger/schemas/(codec|fastpath)\.py|fastavro"),
    ("chain: canonical JSON + sha256", r"fleetledger/processors/canonical\.py"),
    ("entry JSON (Entry.to_bytes)", r"\bEntry\.(to_bytes|to_json) "),
    ("entry parse (Entry.from_bytes)", r"\bEntry\.from_bytes "),
    (
        "run state (de)serialization",
        r"\bRunState\.(to_bytes|from_bytes|new) |\bRunFold\.(to_json|from_json) "
        r"|_dec_money|_str_money",
    ),
    (
        "totals and intercept records",
        r"\b(totals_record|intercept_record|dumps) \(.*pipeline\.py|\bIntercept\.\w+ "
        r"|\bRunFold\.(totals_json|duration_ms) |_money_fields",
    ),
    ("fold (totals, intercept rules)", r"\bRunFold\.\w+ "),
    ("apply (seq, dedupe, link)", r"processors/core\.py"),
    ("bundle (assemble, materialize)", r"processors/bundle\.py|Pipeline\._materialize |merkle"),
    ("pipeline (other)", r"processors/pipeline\.py|processors/memory\.py"),
    ("changelog writes (tables)", r"\b(TableStateStore|LedgerEntryStore)\."),
    ("output sends (KafkaSink)", r"\bKafkaSink\.|runtimes/kafka_io\.py"),
    ("runtime (admit, offsets, commit)", r"runtimes/faust_app\.py"),
    ("socket writes (send syscalls)", r"_SelectorSocketTransport\.write |sock_sendall"),
    ("socket reads (recv syscalls)", r"_SelectorSocketTransport\._read_ready"),
    ("Kafka producer (aiokafka)", r"aiokafka/producer|aiokafka/record"),
    ("Kafka consumer (aiokafka)", r"aiokafka/consumer"),
    ("Faust and mode", r"/faust/|/mode/"),
    ("logging", r"/logging/"),
)

#: Frames charged to the part that called them (see :data:`PARTS`).
GENERIC: tuple[tuple[str, str], ...] = (
    ("Kafka client (connections, protocol, compression)", r"aiokafka/"),
    ("event loop (asyncio)", r"/asyncio/|selectors\.py|uvloop"),
)

#: A sample whose innermost frame matches this waits in the event loop's selector: idle
#: (or runnable but not running on a loaded machine), not CPU work; left out of the shares.
IDLE = r"^(EpollSelector|PollSelector|SelectSelector|DefaultSelector)\.select "

#: Inclusive view: samples with such a frame anywhere on the stack.
KEY_FUNCTIONS: tuple[tuple[str, str], ...] = (
    ("FaustRuntime.process_batch", r"\bFaustRuntime\.process_batch "),
    ("  Pipeline.handle_many", r"\bPipeline\.handle_many "),
    ("    Codec.decode_objs", r"\bCodec\.decode_objs "),
    ("    event_hash", r"^event_hash \("),
    ("    core.apply", r"^apply \(.*processors/core\.py"),
    ("      RunFold.fold", r"\bRunFold\.fold "),
    ("      Entry.to_bytes", r"\bEntry\.to_bytes "),
    ("    Pipeline._materialize (bundles)", r"\bPipeline\._materialize "),
    ("      Entry.from_bytes", r"\bEntry\.from_bytes "),
    ("      bundle.assemble", r"^assemble \(.*bundle\.py"),
    ("    Pipeline._persist (state + totals)", r"\bPipeline\._persist "),
    ("  FaustRuntime._persist", r"\bFaustRuntime\._persist "),
    ("    TableStateStore.flush (changelog)", r"\bTableStateStore\.flush "),
    ("    KafkaSink.publish (outputs)", r"\bKafkaSink\.publish "),
    ("  FaustRuntime._admit", r"\bFaustRuntime\._admit "),
    ("FaustRuntime.commit", r"\bFaustRuntime\.commit "),
    ("aiokafka producer (all callers)", r"aiokafka/producer"),
    ("aiokafka consumer/fetcher", r"aiokafka/consumer"),
    ("Faust's consumer thread", r"^thread \(\d+\): (?!MainThread)"),
)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("found no py-spy; expected it installed: .venv/bin/pip install py-spy")
    return found


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy ``--format raw`` lines: ``frame;frame;...;leaf count``."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def split(
    stacks: Sequence[tuple[list[str], int]],
) -> tuple[Counter[str], Counter[str], int, int]:
    """(exclusive samples per part, inclusive samples per key function, active samples,
    idle samples)."""
    parts = [(name, re.compile(rx)) for name, rx in PARTS]
    generic = [(name, re.compile(rx)) for name, rx in GENERIC]
    keys = [(name, re.compile(rx)) for name, rx in KEY_FUNCTIONS]
    idle_rx = re.compile(IDLE)
    exclusive: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    active = idle = 0
    for frames, count in stacks:
        if frames and idle_rx.search(frames[-1]):
            idle += count
            continue
        active += count
        found: str | None = None
        fallback: str | None = None
        for frame in reversed(frames):
            found = next((name for name, rx in parts if rx.search(frame)), None)
            if found is not None:
                break
            if fallback is None:
                fallback = next((name for name, rx in generic if rx.search(frame)), None)
        exclusive[found or fallback or "other"] += count
        for name, rx in keys:
            if any(rx.search(f) for f in frames):
                inclusive[name] += count
    return exclusive, inclusive, active, idle


def report(label: str, stacks: Sequence[tuple[list[str], int]], cpu_us: float) -> str:
    """The breakdown of py-spy ``stacks`` scaled to ``cpu_us`` CPU microseconds/event."""
    exclusive, inclusive, total, idle = split(stacks)
    us = cpu_us
    lines = [
        label,
        f"{total + idle} samples, {idle} of them waiting in the selector (left out); "
        f"us/event = share of the other {total} x {us:.1f} CPU us/event (measured)",
        "",
        "exclusive (innermost part named on the stack):",
    ]
    for name, n in exclusive.most_common():
        lines.append(f"  {name:<42} {100 * n / total:5.1f}%  {us * n / total:7.1f} us/event")
    lines += ["", "inclusive (samples under the function):"]
    for name, _ in KEY_FUNCTIONS:
        n = inclusive.get(name, 0)
        lines.append(f"  {name:<42} {100 * n / total:5.1f}%  {us * n / total:7.1f} us/event")
    return "\n".join(lines) + "\n"


def window_label(shape: str, traffic: Traffic, window: Window) -> str:
    return (
        f"{shape}: {traffic.events:,} events in {len(traffic.messages):,} messages "
        f"({traffic.events_per_message:.2f} events/message); window {window.describe()}"
    )


async def profile_worker(
    b: Broker, traffic: Traffic, warm: Traffic, sizes: Sizes, rate: int, out: Path
) -> tuple[Window, str]:
    archive = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    settings = bench_settings(b.bootstrap, unique_prefix(f"profile-{traffic.shape}"))
    await create_topics(settings)
    worker = start_worker(settings, archive)
    raw_path = out / f"profile-{traffic.shape}.pyspy.txt"
    with running(worker):
        target = worker_target(b.bootstrap, settings, worker)
        await ready(target, warm.messages, warm.events, sizes)
        spy = subprocess.Popen(
            [
                py_spy(),
                "record",
                "--pid",
                str(worker.pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--threads",
                "--full-filenames",
                "--output",
                str(raw_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            await asyncio.sleep(1.0)  # attached
            window = await measure_window(
                target, traffic.messages, traffic.events, sizes, b, count_records=False
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(spy.pid, signal.SIGINT)
            try:
                _, err = spy.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                _, err = spy.communicate()
    if not raw_path.exists():
        raise SystemExit(f"py-spy wrote nothing: {err.decode(errors='replace')[-2000:]}")
    return window, raw_path.read_text(encoding="utf-8")


def profile_pipeline(traffic: Traffic, top: int = 30) -> str:
    """cProfile of Pipeline.handle_many over in-memory ports (the worker's batching)."""
    from fleetledger.processors.core import CoreConfig
    from fleetledger.processors.memory import MemoryEntries, MemoryStates
    from fleetledger.processors.pipeline import Pipeline, SourcePosition
    from fleetledger.schemas.codec import Codec

    pipe = Pipeline(Codec(), CoreConfig(), MemoryStates(), MemoryEntries(), seal_finished=True)
    by_partition: dict[int, list[tuple[bytes, SourcePosition]]] = {}
    for i, (key, value) in enumerate(traffic.messages):
        p = partition_of(key, PARTITIONS)
        by_partition.setdefault(p, []).append((value, SourcePosition("bench", p, i)))
    now = datetime.now(UTC)
    prof = cProfile.Profile()
    t0 = time.process_time()
    prof.enable()
    for msgs in by_partition.values():
        for start in range(0, len(msgs), 100):
            pipe.handle_many(msgs[start : start + 100], now)
    prof.disable()
    cpu = time.process_time() - t0
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    head = (
        f"{traffic.shape}: pipeline alone (cProfile on, so slower than without), "
        f"{traffic.events:,} events, {cpu / traffic.events * 1e6:.1f} CPU us/event\n"
    )
    return head + buf.getvalue()


def _timed(owner: object, name: str, label: str, spent: dict[str, float]) -> None:
    """Wrap ``owner.name`` (an instance attribute shadows the method) to add its wall
    time to ``spent[label]``."""
    inner = getattr(owner, name)

    def wrapper(*args: object, **kwargs: object) -> object:
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0

    setattr(owner, name, wrapper)


def embedded_phases(path: Path, events: int) -> str:
    """Wall time per part of the embedded runtime's batch, without a profiler (cProfile
    inflates code that makes many Python calls, such as copies and SQLAlchemy)."""
    from fleetledger.processors.core import CoreConfig
    from fleetledger.processors.runtimes.embedded import EmbeddedRuntime
    from fleetledger.schemas.codec import Codec

    labels = (
        "pipeline.handle_many",
        "  of which Codec.decode_objs",
        "  of which bundles (_materialize)",
        "output tables (EmbeddedSink.write)",
        "read model (ReadStore.apply)",
        "run states flushed",
    )
    spent = dict.fromkeys(labels, 0.0)
    codec = Codec()
    with EmbeddedRuntime(path, codec, CoreConfig()) as runtime:
        pipeline = runtime._pipeline
        owners = (pipeline, codec, pipeline, runtime._sink, runtime, runtime._states)
        names = ("handle_many", "decode_objs", "_materialize", "write", "_project", "flush")
        for owner, name, label in zip(owners, names, labels, strict=True):
            _timed(owner, name, label, spent)
        t0 = time.perf_counter()
        runtime.process_available()
        total = time.perf_counter() - t0
    top = sum(v for k, v in spent.items() if not k.startswith(" "))
    spent["other (log read, tick, offsets, BEGIN/COMMIT)"] = total - top
    lines = [f"embedded: wall time by part, no profiler, {events:,} events, {total:.2f} s"]
    for label, seconds in spent.items():
        lines.append(
            f"  {label:<48} {seconds:7.2f} s {seconds / total * 100:5.1f}% "
            f"{seconds / events * 1e6:7.1f} us/event"
        )
    return "\n".join(lines) + "\n\n"


def profile_embedded(events: int, top: int = 30) -> str:
    """The embedded runtime processing a simulated default fleet: wall time by part
    (no profiler), then cProfile of the same log (a copy, processed afresh)."""
    from fleetledger.processors.core import CoreConfig
    from fleetledger.processors.runtimes.embedded import EmbeddedRuntime
    from fleetledger.schemas.codec import Codec

    from .embedded import _record
    from .traffic import runs_for

    tmp = Path(tempfile.mkdtemp(prefix="bench-profile-embedded-"))
    try:
        path = tmp / "ledger.db"
        n, _ = asyncio.run(_record(path, runs_for("default", events), seed=100))
        fresh = tmp / "profiled.db"
        shutil.copyfile(path, fresh)
        phases = embedded_phases(path, n)
        prof = cProfile.Profile()
        t0 = time.process_time()
        with EmbeddedRuntime(fresh, Codec(), CoreConfig()) as runtime:
            prof.enable()
            runtime.process_available()
            prof.disable()
        cpu = time.process_time() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    head = (
        f"embedded: process_available (cProfile on), {n:,} events, "
        f"{cpu / n * 1e6:.1f} CPU us/event\n"
    )
    return phases + head + buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    from .common import FULL

    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    ap.add_argument(
        "--shape",
        nargs="*",
        default=["few_busy", "many_slow"],
        choices=WORKER_SHAPES,
    )
    ap.add_argument("--events", type=int, help="events per shape (default: the bench's)")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--pipeline", action="store_true", help="cProfile the pipeline alone")
    ap.add_argument("--embedded", action="store_true", help="cProfile the embedded runtime")
    ap.add_argument("--analyze", type=Path, help="only split this saved py-spy raw file")
    ap.add_argument("--cpu-us", type=float, default=0.0, help="with --analyze: CPU us/event")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args(argv)
    sizes = FULL
    os.environ.setdefault("BENCH_SESSION_TIMEOUT_S", str(sizes.session_timeout_s))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.analyze is not None:
        stacks = parse_collapsed(args.analyze.read_text(encoding="utf-8"))
        print(report(str(args.analyze), stacks, args.cpu_us or 1.0))
        return 0
    if args.embedded:
        text = profile_embedded(args.events or sizes.embedded_events)
        (args.out / "profile-embedded.txt").write_text(text, encoding="utf-8")
        print(text)
        return 0
    shapes = {s: shape_traffic(s, sizes, args.events) for s in args.shape}
    if args.pipeline:
        for shape, traffic in shapes.items():
            text = profile_pipeline(traffic)
            (args.out / f"profile-{shape}-pipeline.txt").write_text(text, encoding="utf-8")
            print(text)
        return 0
    warm = warmup_fleet(sizes.warmup_runs)
    with broker() as b:
        for shape, traffic in shapes.items():
            log(f"profiling the worker on {shape} ({traffic.events:,} events)")
            window, raw = asyncio.run(profile_worker(b, traffic, warm, sizes, args.rate, args.out))
            label = window_label(shape, traffic, window)
            text = report(label, parse_collapsed(raw), window.cpu_us)
            (args.out / f"profile-{shape}.txt").write_text(text, encoding="utf-8")
            print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
