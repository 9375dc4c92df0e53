"""The projector: the Kafka worker's output topics into the read model.

``fleetledger projector`` consumes the ledger, totals, intercepts and bundles topics in
its own consumer group (``FLEETLEDGER_PROJECTOR_GROUP_ID``) and applies each fetched
batch to the read model in ONE transaction together with the position of every record
it consumed (Kafka's "storing offsets outside Kafka"; eventsourcing's tracking records).
Offsets are never committed to Kafka for correctness: when partitions are assigned, the
projector seeks each one to the position stored in the read model (the beginning when
there is none), so a crash between any two writes replays exactly what was not
committed, and the store skips anything it already holds.

Every topic of the layout has the same partition count and a run's records land in the
same partition number of each, so the range assignor gives one projector all of a
run's records; more projectors in the group share the partitions.  Writes are
serialized by the read model itself (see ``readstore.store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from fleetledger.kernel.config import Settings
from fleetledger.kernel.errors import StoreError
from fleetledger.kernel.kafka import kafka_connection
from fleetledger.kernel.topics import topic_name
from fleetledger.processors.readmodel import PROJECTED_ROLES, OutputRecord
from fleetledger.processors.readstore import ReadStore, TrackedRecord, apply_retention
from fleetledger.processors.runtimes.kafka_io import cannot_connect, resolve_output

log = logging.getLogger("fleetledger.projector")

#: Longest wait for the broker before giving up with a :class:`StoreError`.
CONNECT_TIMEOUT_S = 20.0
#: Most records fetched (and applied in one transaction) at a time.
BATCH_MAX_RECORDS = 2000
#: Seconds between housekeeping passes: retention (with ``FLEETLEDGER_RETENTION_DAYS``)
#: and fresh planner statistics for the read model.
RETENTION_EVERY_S = 3600.0


@dataclass
class ProjectorStats:
    records: int = 0
    applied: int = 0
    skipped: int = 0
    batches: int = 0
    position: int = 0


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, seek each partition to the position stored in the read model."""

    def __init__(self, projector: Projector, consumer: AIOKafkaConsumer) -> None:
        self._projector = projector
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Positions live in the read model, committed with the rows: nothing to save.
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._projector.seek(self._consumer, sorted(assigned))


class Projector:
    """Consumes the output topics of one deployment (topic prefix) into ``store``."""

    def __init__(
        self,
        settings: Settings,
        store: ReadStore,
        *,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._report = report or log.info
        self._conn = kafka_connection(settings)
        self._bootstrap = self._conn.describe()
        self._role_of = {topic_name(settings.topic_prefix, role): role for role in PROJECTED_ROLES}
        #: the tracking records' consumer name: the group, so --once and the group resume
        #: from the same positions
        self.consumer_name = settings.projector_group_id
        self.stats = ProjectorStats()

    @property
    def topics(self) -> list[str]:
        return sorted(self._role_of)

    async def seek(self, consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]) -> None:
        # Read without yielding to the event loop: the consumer's fetcher must not start
        # fetching the new partitions from the reset position before they are sought.
        # A partition never read starts at offset 0; where compaction or retention removed
        # it, the consumer's reset policy (earliest) takes the first offset there is.
        stored = self._store.positions(self.consumer_name)
        for tp in tps:
            consumer.seek(tp, stored.get((tp.topic, tp.partition), 0))
        log.info("assigned %s", ", ".join(f"{tp.topic}:{tp.partition}" for tp in tps))

    def _consumer(self, *, group: bool) -> AIOKafkaConsumer:
        options: dict[str, Any] = {
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "request_timeout_ms": int(CONNECT_TIMEOUT_S * 1000),
            "max_partition_fetch_bytes": 4 * 1024 * 1024,
            # the worker's setting: how long a fetch may wait at the broker for records
            "fetch_max_wait_ms": self._settings.fetch_max_wait_ms,
        }
        if group:
            session_ms = int(self._settings.session_timeout_s * 1000)
            options.update(
                group_id=self._settings.projector_group_id,
                partition_assignment_strategy=(RangePartitionAssignor,),
                session_timeout_ms=session_ms,
                heartbeat_interval_ms=max(500, min(3000, session_ms // 10)),
            )
        else:
            options["group_id"] = None
        # bootstrap servers, client id, TLS and SASL: from the one Kafka options helper
        return AIOKafkaConsumer(
            **options, **self._conn.client_options(f"fleetledger-{self.consumer_name}")
        )

    async def _start(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await asyncio.wait_for(consumer.start(), CONNECT_TIMEOUT_S)
            found = await asyncio.wait_for(consumer.topics(), CONNECT_TIMEOUT_S)
        except (KafkaError, TimeoutError, OSError, KeyError, ValueError) as exc:
            with contextlib.suppress(Exception):
                await consumer.stop()
            found = None if isinstance(exc, TimeoutError) else exc
            raise await cannot_connect(self._conn, CONNECT_TIMEOUT_S, found) from exc
        missing = [t for t in self.topics if t not in found]
        if missing:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise StoreError(
                f"found no topic {', '.join(missing)} on Kafka at {self._bootstrap}; "
                "`fleetledger worker` creates the topics (start it first, with the same "
                "FLEETLEDGER_TOPIC_PREFIX)"
            )

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None) -> ProjectorStats:
        """Consume until ``stop`` is set (``once``: until the ends seen at the start)."""
        consumer = self._consumer(group=not once)
        await self._start(consumer)
        ends: dict[TopicPartition, int] = {}
        try:
            if once:
                tps = [
                    TopicPartition(t, p)
                    for t in self.topics
                    for p in sorted(consumer.partitions_for_topic(t) or ())
                ]
                consumer.assign(tps)
                await self.seek(consumer, tps)
                ends = await consumer.end_offsets(tps)
            else:
                consumer.subscribe(self.topics, listener=_SeekToStored(self, consumer))
            await self._loop(consumer, once=once, ends=ends, stop=stop)
        except KafkaError as exc:
            raise StoreError(f"projector lost Kafka at {self._bootstrap}: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        return self.stats

    async def _loop(
        self,
        consumer: AIOKafkaConsumer,
        *,
        once: bool,
        ends: dict[TopicPartition, int],
        stop: asyncio.Event | None,
    ) -> None:
        interval = self._settings.report_interval_s
        started = last = time.monotonic()
        last_records = 0
        days = self._settings.retention_days
        last_retention = started - RETENTION_EVERY_S
        while stop is None or not stop.is_set():
            if once and all(await self._caught_up(consumer, ends)):
                break
            batch = await consumer.getmany(timeout_ms=200, max_records=BATCH_MAX_RECORDS)
            records = [
                TrackedRecord(
                    m.topic,
                    m.partition,
                    m.offset,
                    OutputRecord(
                        self._role_of[m.topic],
                        m.key.decode("utf-8", "replace") if m.key is not None else "",
                        # an oversized output was archived: project the record itself
                        None if m.value is None else resolve_output(m.value),
                    ),
                )
                for msgs in batch.values()
                for m in msgs
            ]
            if records:
                result = await asyncio.to_thread(self._store.apply, self.consumer_name, records)
                self.stats.records += len(records)
                self.stats.applied += result.applied
                self.stats.skipped += result.skipped
                self.stats.batches += 1
                self.stats.position = result.position
            now = time.monotonic()
            if not once and now - last_retention >= RETENTION_EVERY_S:
                last_retention = now
                if days is not None:
                    moved = await asyncio.to_thread(
                        apply_retention,
                        self._store,
                        self._settings.compliance_archive,
                        days,
                        datetime.now(UTC),
                    )
                    if moved:
                        self._report(f"retention: moved {moved} runs to the compliance archive")
                await asyncio.to_thread(self._store.optimize)
            if now - last >= interval:
                await self._emit(consumer, now - last, self.stats.records - last_records)
                last, last_records = now, self.stats.records
        await self._emit(
            consumer, max(time.monotonic() - last, 1e-9), self.stats.records - last_records
        )

    async def _caught_up(
        self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]
    ) -> list[bool]:
        return [await consumer.position(tp) >= end for tp, end in ends.items()]

    async def _emit(self, consumer: AIOKafkaConsumer, elapsed: float, records: int) -> None:
        lag = 0
        assigned = sorted(consumer.assignment())
        if assigned:
            with contextlib.suppress(KafkaError):
                ends = await consumer.end_offsets(assigned)
                for tp in assigned:
                    lag += max(0, ends[tp] - await consumer.position(tp))
        self._report(
            f"projector: {records:,} records ({records / elapsed:,.0f}/s) in {elapsed:.1f}s, "
            f"lag {lag:,} on {len(assigned)} partitions, read-model position "
            f"{self.stats.position:,}; {self.stats.records:,} records since start"
        )


def run_projector(
    settings: Settings, *, once: bool = False, report: Callable[[str], None] | None = None
) -> ProjectorStats:
    """Run the projector until SIGTERM/SIGINT (``once``: catch up, then return)."""
    from fleetledger.processors.readstore import open_read_model

    if not settings.verbose:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def main() -> ProjectorStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        with open_read_model(settings, create=True) as store:
            return await Projector(settings, store, report=report).run(once=once, stop=stop)

    return asyncio.run(main())


__all__ = ["Projector", "ProjectorStats", "run_projector"]
