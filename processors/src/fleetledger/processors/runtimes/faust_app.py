"""The Kafka runtime: the shared pipeline inside one Faust agent.

``build_app(settings)`` returns a fresh :class:`faust.App` (nothing is created at import
time) with:

* the events topic and one table (per-run state, raw bytes, its changelog co-partitioned
  with the events topic) behind the pipeline's ``StateStore`` port; its ``EntryStore``
  holds the ledger entries of open runs in memory, the ledger topic being their durable
  copy (read back by a worker that takes over a partition), so each entry is written
  once;
* ONE agent that reads raw messages (in small batches, ``take_events``), calls
  ``pipeline.handle_many([(value, position), ...], now)``, publishes the returned outputs
  with :class:`~.kafka_io.KafkaSink`, and only then records the new state in the table
  and advances the partitions' processed offsets;
* a timer that calls ``pipeline.tick(now)`` (stale sequence gaps) and one that commits
  the processed offsets.

Delivery is at-least-once: the committed offset of the events topic only covers messages
whose outputs the broker acknowledged and whose state was sent to the changelogs (flushed
before every commit), so a crash at any point makes a message be processed again, and the
pipeline's state (dedupe by run and sequence) plus keyed, idempotent outputs make that
harmless.  No Kafka transactions and no idempotent producer are required.

``run_worker(settings)`` runs it until SIGTERM/SIGINT; ``fleetledger worker`` is its
command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AIOTopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faust.types import TP
from mode import CrashingSupervisor

from fleetledger.kernel import kafka
from fleetledger.kernel.config import Settings
from fleetledger.kernel.errors import ConfigError, ProcessorError, StoreError
from fleetledger.kernel.kafka import KafkaConnection, kafka_connection
from fleetledger.processors.core import RunState, has_open_gap, is_sealed
from fleetledger.processors.pipeline import Staged
from fleetledger.processors.runtimes.entries import LedgerEntryStore
from fleetledger.processors.runtimes.faust_private import (
    commit_offsets,
    race_flow_per_fetch,
    set_fetch_max_wait,
    table_store,
)
from fleetledger.processors.runtimes.heap import HeapTrimmer
from fleetledger.processors.runtimes.kafka_io import (
    KafkaSink,
    Published,
    RecordBatches,
    TopicSet,
    ensure_topics,
    partition_for,
    resolve_output,
    topic_specs,
    worker_state_specs,
)

if TYPE_CHECKING:
    from fleetledger.processors.archive import ArchiveSink
    from fleetledger.processors.pipeline import EntryStore, Outputs, Pipeline, StateStore

log = logging.getLogger("fleetledger.worker")

PipelineFactory = Callable[["StateStore", "EntryStore"], "Pipeline"]

#: Longest wait for the broker before the worker gives up with a :class:`StoreError`.
CONNECT_TIMEOUT_S = 20.0
#: Attempts to publish one message's outputs before the worker stops (crash).
PUBLISH_ATTEMPTS = 8
#: Seconds between ``pipeline.tick`` calls (capped by half the gap timeout).
TICK_INTERVAL_S = 5.0
#: Seconds between commits of the events topic's processed offsets.
COMMIT_INTERVAL_S = 1.0
#: Most input messages handled (and published) together.
BATCH_MAX_MESSAGES = 100
#: Longest wait for more input messages before handling what has arrived.
BATCH_WITHIN_S = 0.005
#: Longest wait when reading input messages the consumer did not deliver.
GAP_READ_TIMEOUT_S = 30.0
#: Seconds a partition's next offset must stay behind its end before the messages past
#: it are read directly (the consumer did not deliver them; see FaustRuntime._catch_up).
TAIL_STALL_S = 10.0
#: Most undelivered tail messages of one partition read and handled in one tick.
TAIL_READ_MAX = 1000

AGENT_NAME = "fleetledger.process"


def default_pipeline_factory(settings: Settings) -> PipelineFactory:
    """Build pipelines with the current codec and the intercept rules of ``settings``."""
    from fleetledger.processors.pipeline import Pipeline
    from fleetledger.processors.runtimes.backend import core_config
    from fleetledger.schemas.codec import Codec

    codec = Codec()
    config = core_config(settings)

    def factory(states: StateStore, entries: EntryStore) -> Pipeline:
        # Open runs' entries live in memory: seal finished runs so their entries can go.
        return Pipeline(codec, config, states, entries, seal_finished=True)

    return factory


# --------------------------------------------------------------------------- state ports


#: A table value of this prefix stands for a value stored in chunks (see TableStateStore).
CHUNKED_PREFIX = b"\x00fleetledger-chunked:"
#: Chunk keys are the value's key + this + the chunk index.
CHUNK_KEY_MARK = b"\x00chunk:"


def _chunk_key(key: bytes, index: int) -> bytes:
    return key + CHUNK_KEY_MARK + str(index).encode()


def is_chunk_key(key: bytes) -> bool:
    """Whether a table key holds one chunk of a larger value (not a value of its own)."""
    return CHUNK_KEY_MARK in key


#: A stored run state may start with this, the offset of the ledger topic's partition
#: from which the run's entries can be read back, and a newline (see LedgerEntryStore).
LEDGER_FROM_PREFIX = b"\x00fleetledger-ledger-from:"


def wrap_state(value: bytes, ledger_from: int | None) -> bytes:
    """A run state as the table stores it: with where its run's entries start, if known."""
    if ledger_from is None:
        return value
    return b"%s%d\n%s" % (LEDGER_FROM_PREFIX, ledger_from, value)


def unwrap_state(stored: bytes) -> tuple[int | None, bytes]:
    """``(ledger_from, state)`` of a stored run state (``ledger_from`` None if unknown)."""
    if not stored.startswith(LEDGER_FROM_PREFIX):
        return None, stored
    head, _, value = stored.partition(b"\n")
    return int(head[len(LEDGER_FROM_PREFIX) :]), value


class TableStateStore:
    """``StateStore`` port over the run-state Faust table: reads through staged writes,
    which reach the table and its changelog only in :meth:`flush`, after the outputs they
    cover are published (a crash in between then reprocesses the input instead of
    skipping it).

    Keys are run ids (UTF-8).  A value is the run state, prefixed with where the run's
    ledger entries start (:func:`wrap_state`).  A value larger than ``chunk_bytes`` (a
    run state holding many events behind a gap) is stored as chunks under keys of their
    own, followed by a small pointer under the value's key naming their count, size and
    sha256: every changelog record then fits a Kafka record, and a reader of the table
    (recovery included, which sees the chunks before their pointer) gets the whole value.
    """

    def __init__(self, table: Any, chunk_bytes: int) -> None:
        self._table = table
        self._chunk_bytes = chunk_bytes
        self.staged: Staged[str] = Staged(self._read)

    def get(self, run_id: str) -> bytes | None:
        return self.staged.get(run_id)

    def put(self, run_id: str, value: bytes) -> None:
        self.staged.put(run_id, value)

    def _read(self, run_id: str) -> bytes | None:
        stored = self._read_raw(run_id.encode())
        return None if stored is None else unwrap_state(stored)[1]

    def _read_raw(self, raw: bytes) -> bytes | None:
        value = table_store(self._table).get(raw)
        if value is None:
            return None
        value = bytes(value)
        return self._join(raw, value) if value.startswith(CHUNKED_PREFIX) else value

    def _join(self, raw: bytes, pointer: bytes) -> bytes:
        store = table_store(self._table)
        meta = json.loads(pointer[len(CHUNKED_PREFIX) :])
        parts = [store.get(_chunk_key(raw, i)) for i in range(int(meta["chunks"]))]
        value = b"".join(bytes(p) for p in parts if p is not None)
        if len(value) != meta["size"] or hashlib.sha256(value).hexdigest() != meta["sha256"]:
            raise StoreError(
                f"table value {raw!r}: found {sum(p is not None for p in parts)} of "
                f"{meta['chunks']} chunks ({len(value)} bytes), expected {meta['size']} "
                "bytes with the sha256 of its pointer"
            )
        return value

    def _chunks_of(self, raw: bytes) -> int:
        value = table_store(self._table).get(raw)
        if value is None or not bytes(value).startswith(CHUNKED_PREFIX):
            return 0
        return int(json.loads(bytes(value)[len(CHUNKED_PREFIX) :])["chunks"])

    def _records(self, raw: bytes, value: bytes) -> list[tuple[bytes, bytes | None]]:
        """The changelog records that store ``value`` under ``raw``, chunked if large,
        with tombstones for chunks of a larger previous value."""
        before = self._chunks_of(raw)
        records: list[tuple[bytes, bytes | None]] = []
        if len(value) > self._chunk_bytes:
            size = self._chunk_bytes
            chunks = [value[i : i + size] for i in range(0, len(value), size)]
            records += [(_chunk_key(raw, i), c) for i, c in enumerate(chunks)]
            meta = {
                "chunks": len(chunks),
                "size": len(value),
                "sha256": hashlib.sha256(value).hexdigest(),
            }
            records.append((raw, CHUNKED_PREFIX + json.dumps(meta).encode()))
        else:
            records.append((raw, value))
        after = len(records) - 1
        records += [(_chunk_key(raw, i), None) for i in range(after, before)]
        return records

    def staged_runs(self) -> set[str]:
        return set(self.staged)

    async def flush(
        self,
        partition_of: Callable[[str], int],
        batches: RecordBatches,
        ledger_from: Mapping[str, int],
    ) -> None:
        """Write staged states (with where their runs' entries start) to the table and
        add them to ``batches`` for its changelog partition.

        The changelog records go through the output producer's batches (acknowledged
        batch by batch once ``batches`` is closed) rather than Faust's one-by-one
        producer buffer; recovery reads them like any changelog record.
        """
        topic = self._table.changelog_topic.get_topic_name()
        store = table_store(self._table)
        for run_id, value in self.staged.take().items():
            raw = run_id.encode()
            partition = partition_of(run_id)
            for k, v in self._records(raw, wrap_state(value, ledger_from.get(run_id))):
                if v is None:
                    store.pop(k, None)
                else:
                    store[k] = v
                await batches.add(topic, partition, k, v)

    def stored(
        self, partitions: set[int], partition_of: Callable[[str], int]
    ) -> Iterator[tuple[str, bytes]]:
        """``(run_id, stored value)`` of the table's runs in ``partitions`` (chunks
        joined; a broken value is logged and left out: its run's next message reports it)."""
        for raw, _value in list(table_store(self._table).items()):
            if is_chunk_key(raw):
                continue
            run_id = raw.decode("utf-8", "replace")
            if partition_of(run_id) not in partitions:
                continue
            try:
                full = self._read_raw(raw)
            except StoreError as exc:
                log.error("cannot read the state of run %r: %s", run_id, exc)
                continue
            if full is not None:
                yield run_id, full


# --------------------------------------------------------------------------- runtime


class FaustRuntime:
    """What the agent and the timers share: pipeline, stores, sink, input offsets, a lock.

    The input offsets of the events topic are tracked and committed here, not by Faust:
    messages are processed in offset order per partition, and the committed offset only
    covers messages whose outputs were published and whose state was sent to the
    changelogs.  Faust's own bookkeeping treats an offset it did not deliver -- which
    happens when a fetch races the seek at the end of table recovery -- as a gap to skip,
    and commits past it.  Here, a message delivered ahead of the partition's next offset
    makes the runtime read the undelivered ones directly from the broker and process
    them first; a message behind it was already processed and is dropped.
    """

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        topics: TopicSet,
        state_table: Any,
        pipeline_factory: PipelineFactory,
        archive: ArchiveSink | None = None,
        connection: KafkaConnection | None = None,
    ) -> None:
        self.archive = archive
        self.app = app
        self.settings = settings
        self.topics = topics
        self.connection = connection or kafka_connection(settings)
        self.sink = KafkaSink(settings, topics=topics, bootstrap=self.connection)
        self._factory = pipeline_factory
        self._state_table = state_table
        self._lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._sink_started = False
        self._reset = True
        self._partition_of_run: dict[str, int] = {}
        #: Events partitions assigned by the last completed table recovery, and those whose
        #: changelog tail was applied and open gaps were found since the last reset.
        self._recovered: set[int] = set()
        self._prepared: set[int] = set()
        self.heap = HeapTrimmer()
        self._next: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}
        #: Per events partition: (its next offset, its end offset) at the last tick, and
        #: since when (loop time) both have been what they are (see :meth:`_catch_up`).
        self._behind: dict[TP, tuple[tuple[int, int], float]] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self._reader: AIOKafkaConsumer | None = None
        self.states: TableStateStore
        self.entries: LedgerEntryStore
        #: Per open run: the ledger offset its entries can be read back from.
        self._ledger_from: dict[str, int] = {}
        self.pipeline: Pipeline
        self.messages = 0
        self.redelivered = 0
        self.gap_reads = 0

    # ------------------------------------------------------------------ lifecycle
    def request_reset(self) -> None:
        """Drop in-memory pipeline state and input positions before the next message."""
        self._reset = True
        self._recovered.clear()

    def on_recovered(self) -> None:
        """Table recovery finished: remember the events partitions now assigned here, so
        the next tick finds their runs with open gaps even if no message arrives."""
        events = self.topics.events.name
        self._recovered = {
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == events
        }
        log.info("table recovered; partitions %s assigned here", sorted(self._recovered))

    def _maybe_reset(self) -> None:
        if self._reset:
            chunk = self.settings.max_message_bytes
            self.states = TableStateStore(self._state_table, chunk)
            self.entries = LedgerEntryStore()
            self.pipeline = self._factory(self.states, self.entries)
            self._ledger_from.clear()
            self._partition_of_run.clear()
            self._prepared.clear()
            self._next.clear()
            self._committed.clear()
            self._behind.clear()
            self._reset = False

    async def _ensure_sink(self) -> None:
        if not self._sink_started:
            await self.sink.start(timeout_s=CONNECT_TIMEOUT_S)
            self._sink_started = True

    async def on_revoked(self) -> None:
        """Rebalance: finish the current message, commit, forget positions and state."""
        async with self._lock:
            await self.commit()
            self.request_reset()

    async def stop(self) -> None:
        """Shutdown: finish the current message, commit, close the clients."""
        async with self._lock:
            try:
                await self.commit()
            except Exception as exc:  # the consumer is gone after a crash
                log.warning("final commit skipped: %s", exc)
            self.request_reset()
        await self.heap.close()
        if self._sink_started:
            self._sink_started = False
            await self.sink.stop()
        admin, self._admin = self._admin, None
        reader, self._reader = self._reader, None
        with contextlib.suppress(Exception):
            if admin is not None:
                await admin.close()
        with contextlib.suppress(Exception):
            if reader is not None:
                await reader.stop()

    # ------------------------------------------------------------------ input offsets
    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        """Admin client (committed offsets) and a group-less consumer (gap reads)."""
        if self._admin is None or self._reader is None:
            conn = self.connection
            admin = AIOKafkaAdminClient(
                request_timeout_ms=int(CONNECT_TIMEOUT_S * 1000),
                **conn.client_options("fleetledger-worker-offsets"),
            )
            reader = AIOKafkaConsumer(
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=50,
                request_timeout_ms=int(CONNECT_TIMEOUT_S * 1000),
                **conn.client_options("fleetledger-worker-gaps"),
            )
            await admin.start()
            await reader.start()
            self._admin, self._reader = admin, reader
        return self._admin, self._reader

    async def _start_offset(self, tp: TP) -> int:
        """The group's committed offset of ``tp``, else the partition's first offset."""
        admin, reader = await self._clients()
        atp = AIOTopicPartition(tp.topic, tp.partition)
        found = await admin.list_consumer_group_offsets(self.settings.group_id, partitions=[atp])
        for meta in found.values():
            if meta.offset >= 0:
                return int(meta.offset)
        earliest = await reader.beginning_offsets([atp])
        return int(earliest.get(atp, 0))

    async def _prepare(self, partition: int) -> None:
        """Once per partition after a reset: complete its recovery and watch its open gaps.

        Open gaps are part of the durable run state (``gap_since`` and the held events),
        so a worker that restarts or is assigned the partition in a rebalance finds them
        in the recovered table and keeps timing them from when they opened.
        """
        if partition in self._prepared:
            return
        await self._complete_recovery(partition)
        gaps: set[str] = set()
        open_runs: dict[str, tuple[int, int | None]] = {}
        for run_id, stored in self.states.stored({partition}, self._partition):
            if has_open_gap(stored):
                gaps.add(run_id)
            ledger_from, value = unwrap_state(stored)
            if is_sealed(value):
                continue  # its entries were dropped; the sealed hashes judge redeliveries
            next_seq = RunState.from_bytes(value).next_seq
            if next_seq:
                open_runs[run_id] = (next_seq, ledger_from)
        await self._load_entries(partition, open_runs)
        if gaps:
            log.info("partition %d: %d runs with an open sequence gap", partition, len(gaps))
            self.pipeline.watch_gaps(gaps)
        self._prepared.add(partition)

    async def _complete_recovery(self, partition: int) -> None:
        """Apply the tail of the run-state changelog's ``partition`` that table recovery
        may miss.

        Recovery reads a changelog up to the high watermark the broker reports.  Some
        Kafka-protocol brokers (Tansu 0.6) report the base offset of the last record batch
        + 1 instead of the last offset + 1, which would leave the rest of that batch
        unapplied: run state older than the ledger entries published after it.  So the
        records from the reported end - 1 to the real end are read here (by position, which
        does not depend on the reported end) and applied in order; they are the newest
        records of the partition, so their values win.  Against a correct broker this
        re-applies one record.
        """
        _, reader = await self._clients()
        table = self._state_table
        atp = AIOTopicPartition(table.changelog_topic.get_topic_name(), partition)
        reader.assign([atp])
        reported = int((await reader.end_offsets([atp])).get(atp, 0))
        if reported == 0:
            return
        reader.seek(atp, reported - 1)
        deadline = asyncio.get_running_loop().time() + GAP_READ_TIMEOUT_S
        applied = 0
        # The fetch at ``reported - 1`` returns the whole batch holding it: the last
        # batch of the partition (no one else writes to it while it is assigned here).
        failed = f"changelog {atp.topic}:{partition} could not be read to its end"
        while not applied:
            for m in await self._fetch(reader, atp, deadline, failed):
                if m.value is None:
                    table_store(table).pop(m.key, None)
                else:
                    table_store(table)[m.key] = m.value
                applied += 1
        if applied > 1:
            log.info(
                "%s:%d: applied %d changelog records past the reported end %d",
                atp.topic,
                partition,
                applied - 1,
                reported,
            )

    async def _load_entries(
        self, partition: int, open_runs: Mapping[str, tuple[int, int | None]]
    ) -> None:
        """Read the ledger entries of ``partition``'s open runs back from the ledger topic.

        ``open_runs``: ``run_id -> (next_seq, ledger_from)`` of every run not sealed with
        at least one entry; each needs its entries 0..next_seq-1 for the chain's duplicate
        checks and its bundle.  ``ledger_from`` (from :func:`wrap_state`; None: read from
        the partition's first offset) says where they can be read, and the partition is
        read from the lowest of those until every needed entry was found: by what was
        found, not by the end offset the broker reports.  Entries at or past a run's
        ``next_seq`` come from an attempt whose state was never stored; they are left out
        (they are made again).
        """
        if not open_runs:
            return
        needed = {run_id: next_seq for run_id, (next_seq, _) in open_runs.items()}
        known = {r: lf for r, (_, lf) in open_runs.items() if lf is not None}
        unknown = [r for r, (_, lf) in open_runs.items() if lf is None]
        self._ledger_from.update(known)
        start = min(known.values()) if known else None
        _, reader = await self._clients()
        atp = AIOTopicPartition(self.topics.ledger.name, partition)
        reader.assign([atp])
        if unknown or start is None:
            start = int((await reader.beginning_offsets([atp])).get(atp, 0))
            # Their entries are found from here: a lower bound for their next states.
            self._ledger_from.update(dict.fromkeys(unknown, start))
        reader.seek(atp, start)
        missing = sum(needed.values())
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + GAP_READ_TIMEOUT_S
        while missing:
            failed = (
                f"ledger {atp.topic}:{partition}: {missing} entries of {len(needed)} open "
                f"runs were not found reading from offset {start}"
            )
            for m in await self._fetch(reader, atp, deadline, failed):
                if m.key is None or m.value is None:
                    continue
                run_id, _, seq_text = m.key.decode("utf-8", "replace").rpartition(":")
                upto = needed.get(run_id)
                if upto is None or not seq_text.isdigit():
                    continue
                seq = int(seq_text)
                if seq < upto and self.entries.load(run_id, seq, resolve_output(m.value)):
                    missing -= 1
        log.info(
            "%s:%d: read back %d entries of %d open runs from offset %d in %.2fs",
            atp.topic,
            partition,
            sum(needed.values()),
            len(needed),
            start,
            loop.time() - began,
        )

    async def _fetch(
        self, reader: AIOKafkaConsumer, atp: AIOTopicPartition, deadline: float, failed: str
    ) -> list[Any]:
        """One fetch of ``atp`` by the group-less reader; past ``deadline`` (loop time) a
        :class:`StoreError` saying ``failed`` and how long was waited."""
        if asyncio.get_running_loop().time() > deadline:
            raise StoreError(
                f"{failed} within {GAP_READ_TIMEOUT_S:g}s; expected the broker to serve it"
            )
        batch = await reader.getmany(atp, timeout_ms=500)
        return list(batch.get(atp, []))

    async def _read_missing(
        self, tp: TP, start: int, stop: int, *, tail: bool = False
    ) -> list[tuple[int, bytes]]:
        """Messages ``start <= offset < stop`` of ``tp``, read directly from the broker.

        With ``tail``, ``stop`` is the partition's end as the broker reports it, and every
        record of the batches read is kept, up to :data:`TAIL_READ_MAX` of them: a broker
        may report the end of a partition as its last batch's base offset + 1.
        """
        limit = start + TAIL_READ_MAX if tail else stop
        _, reader = await self._clients()
        atp = AIOTopicPartition(tp.topic, tp.partition)
        earliest = int((await reader.beginning_offsets([atp])).get(atp, 0))
        if earliest > start:
            log.warning(
                "%s:%d: offsets %d..%d were deleted before they were processed",
                tp.topic,
                tp.partition,
                start,
                earliest - 1,
            )
            start = earliest
        reader.assign([atp])
        reader.seek(atp, start)
        found: list[tuple[int, bytes]] = []
        deadline = asyncio.get_running_loop().time() + GAP_READ_TIMEOUT_S
        failed = (
            f"{tp.topic}:{tp.partition}: offsets {start}..{stop - 1} were not delivered "
            "and could not be read"
        )
        while await reader.position(atp) < stop:
            for m in await self._fetch(reader, atp, deadline, failed):
                if start <= m.offset < limit:
                    found.append((m.offset, m.value or b""))
            if len(found) >= limit - start:
                break
        return found

    async def commit(self) -> None:
        """Commit the next offset of every partition that advanced since the last commit."""
        async with self._commit_lock:
            pending = {tp: o for tp, o in self._next.items() if o > self._committed.get(tp, -1)}
            if not pending:
                return
            # Every changelog record sent so far is acknowledged before the offsets that
            # cover it are committed.  Then Faust commits as a group member (flushing its
            # own producer first); partitions no longer assigned are left out.
            if self._sink_started:
                await self.sink.flush()
            await commit_offsets(self.app, pending)
            self._committed.update(pending)

    # ------------------------------------------------------------------ processing
    def _partition(self, run_id: str) -> int:
        found = self._partition_of_run.get(run_id)
        if found is None:
            found = partition_for(run_id, self.topics.events.partitions)
        return found

    async def _publish(self, outputs: Outputs) -> Published:
        delay = 0.2
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                await self._ensure_sink()
                return await self.sink.publish(outputs)
            except (StoreError, KafkaError) as exc:
                if attempt == PUBLISH_ATTEMPTS:
                    raise StoreError(
                        f"publishing outputs failed {attempt} times, last: {exc}; "
                        "expected the broker to accept them"
                    ) from exc
                log.warning("publishing outputs failed (attempt %d): %s", attempt, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable: the last attempt raises")

    def _remember(self, partition: int) -> None:
        """Runs staged for the first time live in ``partition`` (their events' partition)."""
        for store in (self.states, self.entries):
            for run_id in store.staged_runs():
                self._partition_of_run.setdefault(run_id, partition)

    async def process(self, value: bytes, topic: str, partition: int, offset: int) -> None:
        """Handle one delivered message; see :meth:`process_batch`."""
        await self.process_batch([(value, topic, partition, offset)])

    async def _input_offset(self, tp: TP) -> int:
        """The next offset of ``tp`` to process; after a reset, the group's committed one
        (the partition is prepared first)."""
        found = self._next.get(tp)
        if found is None:
            await self._prepare(tp.partition)
            found = self._next[tp] = await self._start_offset(tp)
            self._committed.setdefault(tp, found)
        return found

    async def _admit(
        self, messages: Sequence[tuple[bytes, str, int, int]]
    ) -> dict[TP, list[tuple[int, bytes]]]:
        """The messages to process now, per partition in offset order, with no gaps.

        Messages behind a partition's next offset were processed already and are dropped;
        offsets the consumer skipped are read directly from the broker.
        """
        admitted: dict[TP, list[tuple[int, bytes]]] = {}
        next_offset: dict[TP, int] = {}
        for value, topic, partition, offset in messages:
            tp = TP(topic, partition)
            expected = next_offset.get(tp)
            if expected is None:
                expected = await self._input_offset(tp)
            if offset < expected:
                self.redelivered += 1
                continue
            batch = admitted.setdefault(tp, [])
            if offset > expected:
                missing = await self._read_missing(tp, expected, offset)
                log.info(
                    "%s:%d: offsets %d..%d were not delivered; read %d of them directly",
                    topic,
                    partition,
                    expected,
                    offset - 1,
                    len(missing),
                )
                self.gap_reads += len(missing)
                batch.extend(missing)
            batch.append((offset, value))
            next_offset[tp] = offset + 1
        return admitted

    async def process_batch(self, messages: Sequence[tuple[bytes, str, int, int]]) -> None:
        """Handle delivered ``(value, topic, partition, offset)`` messages, in order."""
        async with self._lock:
            self._maybe_reset()
            await self._handle(await self._admit(messages))

    async def _handle(self, admitted: dict[TP, list[tuple[int, bytes]]]) -> None:
        """Process admitted messages (gap-free, per partition in offset order).

        One pipeline call per partition, one publish for the batch.  Order matters for
        crash safety: ledger entries reach their changelog (and the outputs their topics)
        before the run state that refers to them is sent, so a recovered state never
        points at entries that were lost; offsets advance last.
        """
        from fleetledger.processors.pipeline import Outputs, SourcePosition

        if not admitted:
            return
        now = datetime.now(UTC)
        outputs = Outputs()
        try:
            for tp, batch in admitted.items():
                log.debug(
                    "messages %s:%d:%d..%d", tp.topic, tp.partition, batch[0][0], batch[-1][0]
                )
                outputs.extend(
                    self.pipeline.handle_many(
                        [(v, SourcePosition(tp.topic, tp.partition, o)) for o, v in batch],
                        now,
                    )
                )
                self._remember(tp.partition)
        except BaseException:
            self._abandon()
            raise
        await self._persist(outputs)
        for tp, batch in admitted.items():
            self._next[tp] = batch[-1][0] + 1
            self.messages += len(batch)

    async def _catch_up(self) -> None:
        """Read and process tail messages the consumer fetched but never delivered.

        A fetch that races the seek at the end of table recovery can move the consumer's
        position past messages that never reach the agent.  :meth:`_admit` finds such a
        gap when a later message arrives; on a partition that then stays quiet nothing
        does.  So each tick compares every assigned partition's next offset with its end:
        if the end is ahead and neither has moved for :data:`TAIL_STALL_S`, the messages
        from the next offset on are read directly.  Should the consumer deliver them
        after all, they are behind the next offset and dropped.
        """
        events = self.topics.events.name
        partitions = sorted(self._recovered & self._prepared)
        if not partitions:
            return
        _, reader = await self._clients()
        expected = {TP(events, p): await self._input_offset(TP(events, p)) for p in partitions}
        atps = [AIOTopicPartition(tp.topic, tp.partition) for tp in expected]
        ends = await reader.end_offsets(atps)
        now = asyncio.get_running_loop().time()
        admitted: dict[TP, list[tuple[int, bytes]]] = {}
        for tp, start in expected.items():
            end = int(ends.get(AIOTopicPartition(tp.topic, tp.partition), 0))
            seen, since = self._behind.get(tp, (None, now))
            if seen != (start, end):
                self._behind[tp] = ((start, end), now)
                continue
            if end <= start or now - since < TAIL_STALL_S:
                continue
            tail = await self._read_missing(tp, start, end, tail=True)
            if tail:
                log.info(
                    "%s:%d: %d messages from offset %d were not delivered; read them directly",
                    tp.topic,
                    tp.partition,
                    len(tail),
                    start,
                )
                self.gap_reads += len(tail)
                admitted[tp] = tail
        await self._handle(admitted)

    def _abandon(self) -> None:
        """Forget staged writes and in-memory pipeline state after a failure."""
        self.states.staged.discard()
        self.entries.staged.discard()
        self.request_reset()

    async def _persist(self, outputs: Outputs) -> None:
        """Archive, publish and persist one step's outputs, in crash-safe order.

        Bundles are archived (write-once, atomic) before anything is published, as in the
        embedded runtime; ledger entries (and every other output) are acknowledged before
        the run state that refers to them is sent, with, for a run whose first entries
        these are, the ledger offset they start from (where a worker that takes over the
        partition reads them back).  A sealed run's entries leave memory only: the ledger
        keeps them.
        """
        try:
            await self._ensure_sink()
            if self.archive is not None and outputs.bundles:
                await asyncio.to_thread(self._archive_all, outputs)
            published = await self._publish(outputs)
        except BaseException:
            self._abandon()
            raise
        ledger = self.topics.ledger
        for run_id in self.entries.keep():
            if run_id not in self._ledger_from:
                where = (ledger.name, partition_for(run_id, ledger.partitions))
                first = published.first_offsets.get(where)
                if first is not None:
                    self._ledger_from[run_id] = first
        states = self.sink.batches()
        await self.states.flush(self._partition, states, self._ledger_from)
        await states.close()
        if outputs.sealed:
            for run_id, _count in outputs.sealed:
                self.entries.drop(run_id)
                self._ledger_from.pop(run_id, None)
            await self.heap.dropped(sum(count for _run, count in outputs.sealed))

    def _archive_all(self, outputs: Outputs) -> None:
        assert self.archive is not None
        for bundle in outputs.bundles:
            self.archive.write(bundle)

    async def tick(self) -> None:
        """Stale-gap checks: publish their intercepts, then persist the state they changed."""
        async with self._lock:
            self._maybe_reset()
            for partition in sorted(self._recovered - self._prepared):
                await self._prepare(partition)
            await self._catch_up()
            try:
                outputs = self.pipeline.tick(datetime.now(UTC))
            except BaseException:
                self._abandon()
                raise
            await self._persist(outputs)


def _ensure_kafka(settings: Settings) -> KafkaConnection:
    url = settings.broker_url()
    if url.kind != "kafka":
        raise ConfigError(f"the Faust worker needs a kafka:// broker; found {url.raw!r}")
    return kafka_connection(settings)


def faust_credentials(conn: KafkaConnection) -> Any:
    """Faust's broker credentials for ``conn`` (None for plaintext).

    Faust turns them back into the same aiokafka options every other client of the worker
    gets (``conn.security_options()``), for its consumer, producer and topic creation.
    """
    from faust.auth import OAuthCredentials, SASLCredentials, SSLCredentials

    if conn.sasl:
        if conn.sasl_mechanism == "OAUTHBEARER":
            return OAuthCredentials(oauth_cb=conn.token_provider, ssl_context=conn.ssl_context)
        password = conn.sasl_password
        return SASLCredentials(
            username=conn.sasl_username,
            password=None if password is None else password.get_secret_value(),
            ssl_context=conn.ssl_context,
            mechanism=conn.sasl_mechanism,
        )
    if conn.tls:
        return SSLCredentials(conn.ssl_context)
    return None


def _faust_options(
    settings: Settings, conn: KafkaConnection, datadir: Path | None
) -> dict[str, Any]:
    session = float(settings.session_timeout_s)
    options: dict[str, Any] = {
        "broker": f"kafka://{conn.bootstrap}",
        "broker_credentials": faust_credentials(conn),
        "store": "memory://",
        "autodiscover": False,
        "processing_guarantee": "at_least_once",
        "broker_session_timeout": session,
        "broker_rebalance_timeout": session,
        "broker_heartbeat_interval": max(0.5, min(3.0, session / 10)),
        "broker_request_timeout": max(30.0, session * 1.5),
        "broker_commit_interval": 1.0,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "producer_compression_type": kafka.compression_type(settings.compression),
        "producer_max_request_size": kafka.max_record_bytes(settings),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "web_enabled": False,
        "worker_redirect_stdouts": False,
        "table_standby_replicas": 0,
        # Faust's recovery compares the last changelog offset it applied to a partition
        # with the partition's reported high watermark and raises ConsistencyError (the
        # worker exits) when the offset is higher.  The check exists for on-disk stores
        # whose files outlived their topic.  With the in-memory store nothing outlives
        # the process, and the offset can only be higher when a broker under-reports the
        # high watermark: Tansu reports the base offset of the last record batch + 1, and
        # recovery applies the whole batch it fetched, so a partition that stays assigned
        # across a rebalance (its recovery offsets are kept) without new changelog
        # records fails the check.  The state is not damaged then: the table holds every
        # record, and _complete_recovery applies the tail past the reported end anyway.
        "recovery_consistency_check": False,
    }
    if datadir is not None:
        options["datadir"] = str(datadir)
    return options


def build_app(
    settings: Settings,
    *,
    pipeline_factory: PipelineFactory | None = None,
    datadir: Path | None = None,
    archive: ArchiveSink | None = None,
    connection: KafkaConnection | None = None,
) -> faust.App:
    """A new Faust app for ``settings`` (a ``kafka://`` broker); see the module docstring.

    The app id (and consumer group) is ``settings.group_id``.  The runtime object shared by
    the agent and the timer is available as ``app.fleetledger_runtime``.  Every client of
    the app (Faust's, the sink's, the offset and gap readers') connects with ``connection``
    (by default the one ``settings`` describe).
    """
    conn = connection or _ensure_kafka(settings)
    factory = pipeline_factory or default_pipeline_factory(settings)
    topics = topic_specs(settings)
    (state_spec,) = worker_state_specs(settings)
    app = faust.App(settings.group_id, **_faust_options(settings, conn, datadir))
    set_fetch_max_wait(app, settings.fetch_max_wait_ms)
    race_flow_per_fetch(app)

    events = app.topic(
        topics.events.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=topics.events.partitions,
        replicas=topics.events.replication_factor,
        config=dict(topics.events.configs),
        # Offsets of the events topic are committed by FaustRuntime, not by Faust.
        acks=False,
    )

    def table(name: str, spec: Any) -> Any:
        changelog = app.topic(
            spec.name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=spec.partitions,
            replicas=spec.replication_factor,
            compacting=True,
            acks=False,
            internal=True,
            config=dict(spec.configs),
            maxsize=131_072,
            allow_empty=True,
        )
        return app.Table(
            name,
            default=None,
            key_type=bytes,
            value_type=bytes,
            partitions=spec.partitions,
            changelog_topic=changelog,
        )

    state_table = table("runstate", state_spec)
    runtime = FaustRuntime(app, settings, topics, state_table, factory, archive, connection=conn)
    app.fleetledger_runtime = runtime  # type: ignore[attr-defined]

    async def recovered() -> None:
        runtime.on_recovered()

    state_table.on_recover(recovered)

    async def process(stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX_MESSAGES, within=BATCH_WITHIN_S):
            await runtime.process_batch(
                [
                    # a record without a value (null) is dead-lettered as empty bytes
                    (e.value or b"", e.message.topic, e.message.partition, e.message.offset)
                    for e in events
                ]
            )

    # A failure that survived the publish retries stops the worker; the failed message's
    # offset is not committed, so it is processed again after a restart.
    app.agent(events, name=AGENT_NAME, supervisor_strategy=CrashingSupervisor)(process)

    interval = max(0.5, min(TICK_INTERVAL_S, settings.gap_timeout_s / 2))

    async def tick() -> None:
        await runtime.tick()

    app.timer(interval, name="fleetledger.tick")(tick)

    async def commit() -> None:
        await runtime.commit()

    app.timer(COMMIT_INTERVAL_S, name="fleetledger.commit")(commit)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        await runtime.on_revoked()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _on_shutdown(sender: Any, *args: Any, **kwargs: Any) -> None:
        await runtime.stop()

    return app


# --------------------------------------------------------------------------- worker


class _Worker(faust.Worker):
    """Faust worker with explicit log levels (faust leaves the root logger at DEBUG)."""

    def __init__(self, app: faust.App, *, level: int, **kwargs: Any) -> None:
        self._fl_level = level
        super().__init__(app, loglevel=logging.getLevelName(level), **kwargs)

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)
        apply_log_levels(self._fl_level)


def apply_log_levels(level: int) -> None:
    """Root and library loggers at ``level``; fleetledger's own messages at INFO or lower.

    Faust's logging setup gives the root handler the worker's level too, which dropped
    fleetledger's INFO messages (recovery, entries read back, gap reads) before they were
    written: the root handlers pass INFO, the loggers' levels filter the libraries.
    """
    root = logging.getLogger()
    root.setLevel(level)
    for name in ("faust", "mode", "aiokafka", "kafka", "venusian"):
        logging.getLogger(name).setLevel(level)
    logging.getLogger("fleetledger").setLevel(min(level, logging.INFO))
    for handler in root.handlers:
        if handler.level > logging.INFO:
            handler.setLevel(logging.INFO)


@contextlib.contextmanager
def _quiet(name: str, *, enabled: bool) -> Iterator[None]:
    """Silence a library logger (its connection errors are reported as one StoreError)."""
    logger = logging.getLogger(name)
    before = logger.level
    if enabled:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def _new_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        if not loop.is_closed():
            loop.close()
        asyncio.set_event_loop(None)


def run_worker(
    settings: Settings,
    *,
    pipeline_factory: PipelineFactory | None = None,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    archive: ArchiveSink | None = None,
) -> None:
    """Run the worker until SIGTERM/SIGINT (clean shutdown: offsets of finished messages
    committed, producers flushed).

    Topics and the table's changelog are created first (with their configs); a broker
    that does not answer within ``connect_timeout_s`` raises :class:`StoreError`.
    A crash of the processing loop raises :class:`ProcessorError`.
    """
    conn = _ensure_kafka(settings)
    level = logging.DEBUG if settings.verbose else logging.WARNING
    if not logging.getLogger().handlers:
        logging.basicConfig(format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    apply_log_levels(level)
    datadir = Path(tempfile.mkdtemp(prefix="fleetledger-worker-"))
    try:
        with _new_loop() as loop:
            specs = (*topic_specs(settings).all(), *worker_state_specs(settings))
            with _quiet("aiokafka", enabled=not settings.verbose):
                loop.run_until_complete(ensure_topics(conn, specs, timeout_s=connect_timeout_s))
            app = build_app(
                settings,
                pipeline_factory=pipeline_factory,
                datadir=datadir,
                archive=archive,
                connection=conn,
            )
            worker = _Worker(app, level=level, loop=loop, quiet=True)
            log.info(
                "worker %s consuming %s (%d partitions)",
                settings.group_id,
                topic_specs(settings).events.name,
                settings.partitions,
            )
            # What exists now (modules, Faust, the app) lives as long as the process: moved
            # out of the collector's reach, a full collection walks only what the worker
            # made since (pauses of up to ~45 ms in the processing loop before).
            gc.collect()
            gc.freeze()
            try:
                worker.execute_from_commandline()
            except SystemExit as exc:
                if exc.code not in (0, None):
                    reason = worker.crash_reason
                    raise ProcessorError(
                        f"worker stopped after a failure: {reason or f'exit code {exc.code}'}"
                    ) from reason
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
