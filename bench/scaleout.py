"""Measurement 4: scale-out by partitions, 2 worker processes on a 4-partition topic.

Per repetition, on a fresh topic prefix:

* 2 workers are started together and made ready (group Stable with 2 members, warm-up
  fleet processed); the few-busy traffic is measured like one worker's
  (:func:`bench.common.measure_window`: start of publishing -> last ledger record
  readable; CPU of both processes).  The baseline is the 1-worker rate of the same
  repetition (measurement 2), or measured here when that did not run;
* join: the same traffic is published again (every event a redelivery: the workers are
  busy judging duplicates) and a third worker is started; seconds from its start until
  the group is ``Stable`` with 3 members, i.e. it owns partitions and shares the load.

This machine has 2 cores: expect less than 2x.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from .common import (
    Broker,
    Figure,
    Sizes,
    bench_producer,
    bench_settings,
    create_topics,
    log,
    measure_window,
    prebuild,
    ready,
    running,
    send_prebuilt,
    start_worker,
    unique_prefix,
    wait_group,
    worker_target,
)
from .traffic import Traffic


async def one_rep(
    broker: Broker, traffic: Traffic, warm: Traffic, sizes: Sizes, archive: Path, workers: int
) -> tuple[float, float | None]:
    settings = bench_settings(
        broker.bootstrap, unique_prefix(f"scale{workers}"), archive_dir=archive
    )
    await create_topics(settings)
    procs = [start_worker(settings, archive, f"worker{i}") for i in range(workers)]
    with running(*procs):
        target = worker_target(broker.bootstrap, settings, procs[0], members=workers)
        target.extra = procs[1:]
        await ready(target, warm.messages, warm.events, sizes)
        window = await measure_window(
            target, traffic.messages, traffic.events, sizes, broker, count_records=False
        )
        if workers < 2:
            return window.rate, None
        # join a busy group: publish everything again (redeliveries), start one more worker
        producer = bench_producer(broker.bootstrap, target.compression)
        await producer.start()
        try:
            batches = prebuild(producer, traffic.messages, target.partitions)
            sending = asyncio.create_task(send_prebuilt(producer, target.events_topic, batches))
            await asyncio.sleep(0.2)
            extra = start_worker(settings, archive, "worker-join")
            with running(extra):
                t0 = time.monotonic()
                await wait_group(broker.bootstrap, settings.group_id, workers + 1, [*procs, extra])
                joined = time.monotonic() - t0
            await sending
        finally:
            await producer.stop()
    return window.rate, joined


def run(
    broker: Broker,
    traffic: Traffic,
    warm: Traffic,
    sizes: Sizes,
    one_worker: list[float] | None = None,
) -> list[Figure]:
    """``one_worker``: this run's 1-worker rates on the same traffic (measurement 2),
    measured again here when not given."""
    archive = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    two = Figure(
        "scaleout.two_workers",
        f"2 workers vs 1 worker, 4 partitions, few busy, {traffic.events:,} events",
        "events/s",
        baseline_name="1 worker on the same topic layout and data",
        notes="2 cores on this machine: less than 2x is expected; the 1-worker baseline is "
        "the few-busy worker figure of the same repetition",
    )
    join = Figure(
        "scaleout.join_s",
        "Another worker joining a busy group: start -> group Stable with 3 members",
        "s",
        higher_is_better=False,
        notes=f"session timeout {sizes.session_timeout_s} s (Tansu joins take about half of it)",
    )
    for rep in range(sizes.reps):
        if one_worker and rep < len(one_worker):
            one_rate = one_worker[rep]
        else:
            one_rate, _ = asyncio.run(one_rep(broker, traffic, warm, sizes, archive, 1))
        two_rate, joined = asyncio.run(one_rep(broker, traffic, warm, sizes, archive, 2))
        assert joined is not None
        two.add(two_rate, one_rate)
        join.add(joined)
        log(
            f"scale-out rep {rep + 1}: 1 worker {one_rate:,.0f} ev/s, 2 workers {two_rate:,.0f} "
            f"ev/s, join {joined:.1f}s"
        )
    return [two, join]
