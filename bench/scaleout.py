"""Measurement 4: scale-out by partitions, 1 and 2 worker processes on a 4-partition topic.

Per repetition (fresh topic prefix each time, the few-busy traffic preloaded):

* 1 worker: events/s while it drains the topic (ledger records counted; the first 5% of
  the events excluded as start-up);
* 2 workers started together: the same;
* join: a second worker started while the first is busy; seconds from its start until the
  consumer group is ``Stable`` with two members, i.e. it owns partitions and shares the
  load.  (This machine has 2 cores: expect less than 2x.)
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from fleetledger.processors.runtimes.kafka_io import topic_specs

from .common import (
    Figure,
    OffsetProbe,
    Proc,
    Sizes,
    bench_settings,
    create_topics,
    kafka_compression,
    log,
    measure_drain,
    produce_raw,
    running,
    start_worker,
    unique_prefix,
)
from .traffic import Traffic

PARTITIONS = 4


async def group_members(admin: AIOKafkaAdminClient, group: str) -> tuple[str, int]:
    response = await admin.describe_consumer_groups([group])
    g = response[0].groups[0]
    return g[2], len(g[5])  # (state, members)


async def wait_group(
    bootstrap: str, group: str, members: int, procs: list[Proc], timeout_s: float = 60.0
) -> float:
    """Seconds until ``group`` is Stable with ``members`` members."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    t0 = time.monotonic()
    try:
        while True:
            state, n = await group_members(admin, group)
            if state == "Stable" and n >= members:
                return time.monotonic() - t0
            for p in procs:
                p.check()
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(
                    f"group {group} not Stable with {members} members ({state}, {n})"
                )
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _preload(bootstrap: str, traffic: Traffic, name: str, archive: Path):  # type: ignore[no-untyped-def]
    settings = bench_settings(
        bootstrap, unique_prefix(name), partitions=PARTITIONS, archive_dir=archive
    )
    await create_topics(settings)
    topics = topic_specs(settings)
    await produce_raw(
        bootstrap,
        topics.events.name,
        traffic.messages,
        PARTITIONS,
        compression=kafka_compression(settings),
    )
    return settings, topics


async def drain_with(
    bootstrap: str, traffic: Traffic, workers: int, sizes: Sizes, archive: Path
) -> float:
    settings, topics = await _preload(bootstrap, traffic, f"scale{workers}", archive)
    procs = [start_worker(settings, archive, f"worker{i}") for i in range(workers)]
    with running(*procs):
        async with OffsetProbe(bootstrap, topics.ledger.name, PARTITIONS) as probe:
            drain = await measure_drain(probe, traffic.events, procs, timeout_s=sizes.wait_s)
    return drain.rate


async def join_time(bootstrap: str, traffic: Traffic, sizes: Sizes, archive: Path) -> float:
    settings, topics = await _preload(bootstrap, traffic, "join", archive)
    first = start_worker(settings, archive, "worker-a")
    with running(first):
        await wait_group(bootstrap, settings.group_id, 1, [first])
        async with OffsetProbe(bootstrap, topics.ledger.name, PARTITIONS) as probe:
            deadline = time.monotonic() + sizes.wait_s
            while await probe.total() < 1:  # the first worker is busy
                first.check()
                if time.monotonic() > deadline:
                    raise RuntimeError("the first worker produced nothing")
                await asyncio.sleep(0.05)
            second = start_worker(settings, archive, "worker-b")
            with running(second):
                return await wait_group(bootstrap, settings.group_id, 2, [first, second])


def run(
    bootstrap: str, traffic: Traffic, sizes: Sizes, one_worker: list[float] | None = None
) -> list[Figure]:
    """``one_worker``: this run's 1-worker rates on the same traffic (measurement 2),
    measured again here when not given."""
    archive = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    two = Figure(
        "scaleout.two_workers",
        "2 workers vs 1 worker, 4 partitions, few busy",
        "events/s",
        baseline_name="1 worker on the same topic layout and data",
        notes="2 cores on this machine: less than 2x is expected; the 1-worker baseline is "
        "the few-busy worker figure of the same repetition",
    )
    join = Figure(
        "scaleout.join_s",
        "Second worker: start -> group Stable with 2 members",
        "s",
        higher_is_better=False,
        notes=f"session timeout {sizes.session_timeout_s} s (Tansu joins take about half of it)",
    )
    for rep in range(sizes.reps):
        if one_worker and rep < len(one_worker):
            one_rate = one_worker[rep]
        else:
            one_rate = asyncio.run(drain_with(bootstrap, traffic, 1, sizes, archive))
        two_rate = asyncio.run(drain_with(bootstrap, traffic, 2, sizes, archive))
        joined = asyncio.run(join_time(bootstrap, traffic, sizes, archive))
        two.add(two_rate, one_rate)
        join.add(joined)
        log(
            f"scale-out rep {rep + 1}: 1 worker {one_rate:,.0f} ev/s, 2 workers {two_rate:,.0f} "
            f"ev/s, join {joined:.1f}s"
        )
    return [two, join]
