"""Kafka plumbing shared by the worker, the CLI and the deployment checks.

* :data:`TOPIC_LAYOUT` is the one declaration of every topic fleetledger uses: its role,
  name suffix, key and configs.  :func:`topic_specs` turns it into concrete
  :class:`TopicSpec` values for a :class:`~fleetledger.config.Settings`.
* :func:`ensure_topics` creates missing topics with their configs and checks partition
  counts of existing ones.
* :class:`KafkaSink` publishes a pipeline's ``Outputs``: records keyed and partitioned by
  run, dead letters with their original bytes and provenance headers, oversized bundles
  archived to disk with a small manifest published instead.
* :func:`read_compacted` and :func:`read_all` read a topic from the beginning up to the end
  offsets seen when the read started, bounded in time.

Every record of a run lands in the partition ``murmur2(run_id) % partitions`` of its topic,
the partition the producer SDK's default partitioner picks for the run's events, so a run's
ledger entries are one ordered sequence in one partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError

from fleetledger.kernel import kafka
from fleetledger.kernel.config import Settings
from fleetledger.kernel.errors import StoreError
from fleetledger.kernel.kafka import (
    MESSAGE_OVERHEAD_BYTES,
    KafkaConnection,
    KeyPartitioner,
    as_connection,
    kafka_connection,
    max_record_bytes,
    partition_for,
)
from fleetledger.kernel.topics import MANIFEST_KIND, ROLES, TOPIC_LAYOUT, TopicTemplate, topic_name
from fleetledger.processors.archive import load_archived_bundle, write_atomic
from fleetledger.processors.evidence import file_stem
from fleetledger.processors.pipeline import (
    DeadLetter,
    EntryDoc,
    InterceptDoc,
    SourcePosition,
    StoredBundle,
    TotalsDoc,
)

if TYPE_CHECKING:
    from fleetledger.processors.pipeline import Bundle, Outputs


#: Header names of a dead letter (values are UTF-8 text).
HEADER_ERROR = "fleetledger.error"
HEADER_SOURCE_TOPIC = "fleetledger.source.topic"
HEADER_SOURCE_PARTITION = "fleetledger.source.partition"
HEADER_SOURCE_OFFSET = "fleetledger.source.offset"
HEADER_SOURCE_INDEX = "fleetledger.source.index"
#: Header of a bundles-topic record: the bundle's ``integrity.digest`` (an archived
#: bundle's manifest carries it too).
HEADER_DIGEST = "fleetledger.digest"

#: ``kind`` of the manifest published instead of any other output record too large for a
#: Kafka record (a ledger entry, totals, an intercept, a dead letter): SPEC section 9.3.
OUTPUT_MANIFEST_KIND = "output-manifest"
#: Longest ``fleetledger.error`` header of a dead letter (the text is cut there).
MAX_ERROR_HEADER_BYTES = 4096
#: Bytes counted per record on top of key, value and headers (batch and record framing).
RECORD_FRAMING_BYTES = 512

#: A bootstrap string (plaintext) or a connection (with its TLS and SASL settings).
Target = str | KafkaConnection


@dataclass(frozen=True)
class TopicSpec:
    """A concrete topic: name, partitions, replication and configs to create it with."""

    role: str
    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)
    key: str = ""

    @property
    def compacted(self) -> bool:
        return "compact" in self.configs.get("cleanup.policy", "")

    def new_topic(self) -> NewTopic:
        return NewTopic(
            self.name,
            num_partitions=self.partitions,
            replication_factor=self.replication_factor,
            topic_configs=dict(self.configs),
        )


@dataclass(frozen=True)
class TopicSet:
    """The concrete topics of one deployment (one prefix)."""

    events: TopicSpec
    ledger: TopicSpec
    totals: TopicSpec
    intercepts: TopicSpec
    bundles: TopicSpec
    deadletter: TopicSpec

    def all(self) -> tuple[TopicSpec, ...]:
        return tuple(getattr(self, role) for role in ROLES)

    def by_role(self, role: str) -> TopicSpec:
        if role not in ROLES:
            raise StoreError(f"found topic role {role!r}, expected one of {', '.join(ROLES)}")
        spec: TopicSpec = getattr(self, role)
        return spec


def topic_specs(settings: Settings) -> TopicSet:
    """The concrete topics for ``settings`` (prefix, partitions, replication factor).

    Every topic gets the events topic's partition count, so outputs of a run share the
    partition number of its events.  Topics the worker publishes to also allow messages of
    :func:`max_record_bytes`.
    """
    specs: dict[str, TopicSpec] = {}
    for t in TOPIC_LAYOUT:
        configs = dict(t.configs)
        if t.role != "events":
            configs["max.message.bytes"] = str(max_record_bytes(settings))
        specs[t.role] = TopicSpec(
            role=t.role,
            name=topic_name(settings.topic_prefix, t.role),
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            configs=MappingProxyType(configs),
            key=t.key,
        )
    return TopicSet(**specs)


def worker_state_specs(settings: Settings) -> tuple[TopicSpec, ...]:
    """Changelog topics of the worker's tables (compacted, co-partitioned with events).

    One: ``<prefix>.<group_id>.runstate-changelog`` (each consumer group keeps its own run
    state).  The ledger entries of open runs need no changelog of their own: the ledger
    topic, keyed and partitioned like them, is where a worker reads them back.
    """
    base = f"{settings.topic_prefix}.{settings.group_id}"
    return (
        TopicSpec(
            role="runstate-changelog",
            name=f"{base}.runstate-changelog",
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            configs=MappingProxyType(
                {"cleanup.policy": "compact", "max.message.bytes": str(max_record_bytes(settings))}
            ),
            key="run_id",
        ),
    )


def _admin(conn: KafkaConnection, timeout_s: float) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        request_timeout_ms=int(timeout_s * 1000), **conn.client_options("fleetledger-admin")
    )


async def cannot_connect(
    conn: KafkaConnection, timeout_s: float, exc: BaseException | None
) -> StoreError:
    """One line saying why no connection to ``conn`` could be made (``exc`` None: timeout)."""
    probe = None if exc is None else create_conn
    return StoreError(await kafka.connect_failure(conn, exc, probe, timeout_s=min(timeout_s, 10)))


#: What a client's start raises when it cannot connect (an SASL exchange the broker ends
#: with an error may surface from the client as KeyError or ValueError).
_CONNECT_ERRORS = (KafkaError, OSError, KeyError, ValueError)


async def ensure_topics(
    bootstrap: Target, specs: Iterable[TopicSpec], *, timeout_s: float = 30.0
) -> dict[str, str]:
    """Create every missing topic with its partitions and configs.

    Returns ``{name: "created" | "exists"}``.  An existing topic with another partition
    count raises :class:`StoreError` (co-partitioning of state would break).  The whole
    call is bounded by ``timeout_s``; an unreachable broker raises :class:`StoreError`.
    """
    conn = as_connection(bootstrap)
    wanted = list(specs)
    try:
        return await asyncio.wait_for(_ensure_topics(conn, wanted, timeout_s), timeout_s)
    except TimeoutError as exc:
        raise await cannot_connect(conn, timeout_s, None) from exc


async def _ensure_topics(
    conn: KafkaConnection, wanted: list[TopicSpec], timeout_s: float
) -> dict[str, str]:
    admin = _admin(conn, timeout_s)
    try:
        await admin.start()
    except _CONNECT_ERRORS as exc:
        with contextlib.suppress(Exception):
            await admin.close()
        raise await cannot_connect(conn, timeout_s, exc) from exc
    result: dict[str, str] = {}
    try:
        # Listing all topics never auto-creates one (a metadata request naming a topic
        # may, on brokers with auto-creation on).
        existing = set(await admin.list_topics())
        missing = [s for s in wanted if s.name not in existing]
        if missing:
            response = await admin.create_topics([s.new_topic() for s in missing])
            for name, code, message in _topic_errors(response):
                if code == 0:
                    result[name] = "created"
                elif code == 36:  # TOPIC_ALREADY_EXISTS: created concurrently
                    result[name] = "exists"
                else:
                    raise StoreError(
                        f"cannot create topic {name!r}: broker error {code} ({message}); "
                        "expected it created"
                    )
        present = [s for s in wanted if s.name not in result or result[s.name] == "exists"]
        if present:
            described = await admin.describe_topics([s.name for s in present])
            counts = {t["topic"]: len(t["partitions"]) for t in described}
            for spec in present:
                result.setdefault(spec.name, "exists")
                found = counts.get(spec.name)
                if found is not None and found != spec.partitions:
                    raise StoreError(
                        f"topic {spec.name!r} has {found} partitions, expected "
                        f"{spec.partitions} (FLEETLEDGER_PARTITIONS)"
                    )
    except KafkaError as exc:
        raise StoreError(f"cannot create topics on Kafka at {conn.bootstrap}: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return result


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    out: list[tuple[str, int, str | None]] = []
    for item in response.topic_errors:
        name, code = item[0], int(item[1])
        message = item[2] if len(item) > 2 else None
        out.append((name, code, message))
    return out


# --------------------------------------------------------------------------- sink


def archive_bundle(archive_dir: Path, bundle: Bundle) -> bytes:
    """Write an oversized bundle to the archive; return the manifest JSON to publish.

    The manifest is ``{"kind": "bundle-manifest", "run_id", "digest", "path", "size",
    "sha256"}``: ``digest`` is the bundle's own ``integrity.digest``; ``sha256`` is over
    the archived file's bytes; ``path`` is absolute.
    """
    value = bundle.data
    path = (archive_dir / f"{file_stem(bundle.run_id)}.bundle.json").resolve()
    try:
        write_atomic(path, value)
    except OSError as exc:
        raise StoreError(
            f"cannot archive bundle of run {bundle.run_id!r} to {str(path)!r}: {exc}"
        ) from exc
    manifest = {
        "kind": MANIFEST_KIND,
        "run_id": bundle.run_id,
        "digest": bundle.digest,
        "path": str(path),
        "size": len(value),
        "sha256": hashlib.sha256(value).hexdigest(),
    }
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()


def is_manifest(value: bytes) -> bool:
    """Whether a bundles-topic value is an archive manifest (not an inline bundle)."""
    if len(value) > 4096:
        return False
    try:
        obj = json.loads(value)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("kind") == MANIFEST_KIND


def archive_output(archive_dir: Path, role: str, key: str, value: bytes) -> bytes:
    """Write an output record too large for Kafka to the archive; return its manifest.

    The file is ``<archive_dir>/<role>/<key>.json`` (``:`` written as ``.``; keys that
    are not safe file names hashed), written atomically; the manifest is ``{"kind":
    "output-manifest", "role", "key", "path", "size", "sha256"}``, plus, for a ledger
    entry, its chain members (``run_id``, ``seq``, ``event_hash``, ``prev_hash``,
    ``entry_hash``), so the chain can be followed on the topic without opening the file.
    """
    path = (archive_dir / role / f"{file_stem(key.replace(':', '.'))}.json").resolve()
    try:
        write_atomic(path, value)
    except OSError as exc:
        raise StoreError(
            f"cannot archive the {role} record {key!r} to {str(path)!r}: {exc}"
        ) from exc
    manifest: dict[str, Any] = {
        "kind": OUTPUT_MANIFEST_KIND,
        "role": role,
        "key": key,
        "path": str(path),
        "size": len(value),
        "sha256": hashlib.sha256(value).hexdigest(),
    }
    if role == "ledger":
        with contextlib.suppress(ValueError, KeyError, TypeError):
            entry = json.loads(value)
            for name in ("run_id", "seq", "event_hash", "prev_hash", "entry_hash"):
                manifest[name] = entry[name]
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()


def record_fits(
    settings: Settings, key: bytes, value: bytes | None, headers_bytes: int = 0
) -> bool:
    """Whether a record of this key, value and header size can be published as it is."""
    size = len(key) + (0 if value is None else len(value)) + headers_bytes + RECORD_FRAMING_BYTES
    return size <= max_record_bytes(settings)


#: Every output manifest holds these bytes (compact JSON, sorted keys): a value without
#: them is not one, which spares parsing every small output to find out.
OUTPUT_MANIFEST_MARK = b'"kind":"output-manifest"'


def is_output_manifest(value: bytes) -> bool:
    """Whether an output value is an archive manifest of an oversized record (9.3)."""
    if len(value) > 4096 or not value.startswith(b"{") or OUTPUT_MANIFEST_MARK not in value:
        return False
    try:
        obj = json.loads(value)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("kind") == OUTPUT_MANIFEST_KIND


def resolve_output(value: bytes) -> bytes:
    """An output value as published, or the archived record its manifest points at."""
    return load_archived_bundle(value) if is_output_manifest(value) else value


def deadletter_headers(dl: DeadLetter) -> list[tuple[str, bytes]]:
    p = dl.position
    error = dl.error.encode("utf-8", "replace")
    if len(error) > MAX_ERROR_HEADER_BYTES:
        error = error[: MAX_ERROR_HEADER_BYTES - 3].decode("utf-8", "ignore").encode() + b"..."
    return [
        (HEADER_ERROR, error),
        (HEADER_SOURCE_TOPIC, p.topic.encode()),
        (HEADER_SOURCE_PARTITION, str(p.partition).encode()),
        (HEADER_SOURCE_OFFSET, str(p.offset).encode()),
        *([] if p.index is None else [(HEADER_SOURCE_INDEX, str(p.index).encode())]),
    ]


class RecordBatches:
    """Records appended to one aiokafka batch per topic partition and sent batch by batch:
    one future per batch instead of one per record.

    ``producer.send`` costs ~40 us of Python per record (a future, the partitioner, the
    accumulator's bookkeeping); with three records per input event it was a third of the
    worker's CPU.  Appending to a ``BatchBuilder`` and sending it with ``send_batch`` keeps
    each partition's records in the order they were added (batches of a partition are
    queued in the order sent, after anything ``send`` queued before).  A batch is sent
    when full, and every open one on :meth:`close`; a record larger than a batch gets a
    batch of its own.
    """

    def __init__(self, producer: AIOKafkaProducer, bootstrap: str) -> None:
        self._producer = producer
        self._bootstrap = bootstrap
        self._open: dict[tuple[str, int], Any] = {}
        self.futures: list[asyncio.Future[Any]] = []
        self.records = 0

    async def add(
        self,
        topic: str,
        partition: int,
        key: bytes,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        where = (topic, partition)
        batch = self._open.get(where)
        if batch is None:
            batch = self._open[where] = self._producer.create_batch()
        if batch.append(timestamp=None, key=key, value=value, headers=list(headers)) is None:
            await self._send(where, batch)  # full: the record starts the next batch
            batch = self._open[where] = self._producer.create_batch()
            batch.append(timestamp=None, key=key, value=value, headers=list(headers))
        self.records += 1

    async def _send(self, where: tuple[str, int], batch: Any) -> None:
        topic, partition = where
        try:
            self.futures.append(await self._producer.send_batch(batch, topic, partition=partition))
        except KafkaError as exc:
            raise StoreError(
                f"cannot send to {topic!r} on Kafka at {self._bootstrap}: {exc}"
            ) from exc

    async def close(self) -> list[asyncio.Future[Any]]:
        """Send every open batch; the futures resolve when the broker acknowledged them."""
        open_batches, self._open = self._open, {}
        for where, batch in open_batches.items():
            await self._send(where, batch)
        return self.futures


@dataclass(frozen=True)
class Published:
    """What one :meth:`KafkaSink.publish` sent, acknowledged: how many records, and per
    ``(topic, partition)`` the offset of the first of them there (where the broker said)."""

    records: int
    first_offsets: Mapping[tuple[str, int], int]


class KafkaSink:
    """Publishes ``Outputs`` and waits until the broker acknowledged every record.

    Outputs are idempotent upserts by key, so publishing the same ``Outputs`` twice (a
    redelivered input) leaves every compacted topic with the same final values.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap: Target | None = None,
        topics: TopicSet | None = None,
    ) -> None:
        self._settings = settings
        self._connection = (
            kafka_connection(settings) if bootstrap is None else as_connection(bootstrap)
        )
        self._bootstrap = self._connection.bootstrap
        self._topics = topics or topic_specs(settings)
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}
        self._partitioner = KeyPartitioner()

    @property
    def topics(self) -> TopicSet:
        return self._topics

    async def start(self, *, timeout_s: float = 30.0) -> None:
        producer = AIOKafkaProducer(
            request_timeout_ms=int(timeout_s * 1000),
            **self._connection.client_options(f"fleetledger-{self._settings.group_id}"),
            **kafka.output_producer_options(self._settings),
        )
        try:
            await asyncio.wait_for(producer.start(), timeout_s)
            for spec in self._topics.all():
                if spec.role == "events":
                    continue
                parts = await asyncio.wait_for(producer.partitions_for(spec.name), timeout_s)
                self._partitions[spec.name] = len(parts)
        except (*_CONNECT_ERRORS, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise await cannot_connect(
                self._connection, timeout_s, None if isinstance(exc, TimeoutError) else exc
            ) from exc
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> KafkaSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _partition(self, topic: str, run_id: str) -> int:
        return self._partitioner(run_id, self._partitions[topic])

    def batches(self) -> RecordBatches:
        """A new set of per-partition batches on this sink's producer."""
        producer = self._producer
        if producer is None:
            raise StoreError("Kafka sink is not started; expected start() before sending")
        return RecordBatches(producer, self._bootstrap)

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged (or failed)."""
        if self._producer is not None:
            await self._producer.flush()

    async def publish(self, outputs: Outputs) -> Published:
        """Send every output record; return what was sent once all are acknowledged."""
        producer = self._producer
        if producer is None:
            raise StoreError("Kafka sink is not started; expected start() before publish()")
        t = self._topics
        batches = RecordBatches(producer, self._bootstrap)

        async def send(
            topic: str,
            run_id: str,
            key: str,
            value: bytes,
            headers: Sequence[tuple[str, bytes]] = (),
        ) -> None:
            await batches.add(topic, self._partition(topic, run_id), key.encode(), value, headers)

        try:
            for e in outputs.entries:
                await send(t.ledger.name, e.run_id, e.key, await self._fit("ledger", e.key, e.data))
            for r in outputs.totals:
                value = await self._fit("totals", r.run_id, r.data)
                await send(t.totals.name, r.run_id, r.run_id, value)
            for i in outputs.intercepts:
                value = await self._fit("intercepts", i.key, i.data)
                await send(t.intercepts.name, i.run_id, i.key, value)
            for b in outputs.bundles:
                headers = [(HEADER_DIGEST, b.digest.encode())]
                await send(t.bundles.name, b.run_id, b.run_id, await self._bundle_value(b), headers)
            futures = await batches.close()
            for d in outputs.deadletters:  # keyed by source position, partitioned by the key
                headers = deadletter_headers(d)
                size = sum(len(k) + len(v) for k, v in headers)
                value = await self._fit("deadletter", d.key, d.value, size)
                futures.append(
                    await producer.send(
                        t.deadletter.name, value=value, key=d.key.encode(), headers=headers
                    )
                )
            acknowledged = await asyncio.gather(*futures) if futures else []
        except KafkaError as exc:
            raise StoreError(
                f"cannot publish outputs to Kafka at {self._bootstrap}: {exc}"
            ) from exc
        first: dict[tuple[str, int], int] = {}
        for meta in acknowledged:
            if meta is not None and meta.offset is not None:
                where = (meta.topic, meta.partition)
                first[where] = min(meta.offset, first.get(where, meta.offset))
        return Published(batches.records + len(outputs.deadletters), first)

    async def _fit(self, role: str, key: str, value: bytes, headers_bytes: int = 0) -> bytes:
        """The value to publish: itself when the record fits, else an archive manifest.

        Sized from what the record holds (JSON escaping can make an output six times the
        size of the input it came from), so no output is ever too large to publish.
        """
        if record_fits(self._settings, key.encode(), value, headers_bytes):
            return value
        return await asyncio.to_thread(archive_output, self._settings.archive_dir, role, key, value)

    async def _bundle_value(self, bundle: Bundle) -> bytes:
        if len(bundle.data) <= self._settings.max_message_bytes:
            return bundle.data
        return await asyncio.to_thread(archive_bundle, self._settings.archive_dir, bundle)


# --------------------------------------------------------------------------- readers


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


async def read_all(bootstrap: Target, topic: str, *, timeout_s: float = 30.0) -> list[KafkaRecord]:
    """Every record of ``topic``, at least up to the end offsets seen at the start of the call.

    Ordered by partition, then offset.  Raises :class:`StoreError` when the broker is
    unreachable, the topic does not exist, or the read does not finish within ``timeout_s``.
    """
    conn = as_connection(bootstrap)
    try:
        return await asyncio.wait_for(_read_all(conn, topic, timeout_s), timeout_s)
    except TimeoutError as exc:
        raise StoreError(
            f"reading topic {topic!r} from Kafka at {conn.bootstrap} did not finish within "
            f"{timeout_s:g}s; expected the broker to serve it"
        ) from exc


async def _read_all(conn: KafkaConnection, topic: str, timeout_s: float) -> list[KafkaRecord]:
    bootstrap = conn.bootstrap
    consumer = AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=int(timeout_s * 1000),
        **conn.client_options("fleetledger-reader"),
    )
    try:
        await consumer.start()
    except _CONNECT_ERRORS as exc:
        with contextlib.suppress(Exception):
            await consumer.stop()
        raise await cannot_connect(conn, timeout_s, exc) from exc
    out: list[KafkaRecord] = []
    try:
        if topic not in await consumer.topics():
            raise StoreError(
                f"found no topic {topic!r} on Kafka at {bootstrap}; expected it to exist"
            )
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:  # listed while it is being created: not readable yet
            raise StoreError(
                f"topic {topic!r} on Kafka at {bootstrap} has no partitions yet; "
                "expected it created"
            )
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
        by_tp: dict[TopicPartition, list[KafkaRecord]] = {tp: [] for tp in tps}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=200)
            # Every fetched record is kept, also past the captured end offset: some
            # brokers (Tansu) report the end offset of a multi-record batch as its base
            # offset + 1, so filtering by it would drop the rest of the batch.
            for tp, messages in batch.items():
                by_tp[tp].extend(
                    KafkaRecord(
                        topic=m.topic,
                        partition=m.partition,
                        offset=m.offset,
                        key=m.key,
                        value=m.value,
                        headers=tuple((k, bytes(v)) for k, v in (m.headers or ())),
                        timestamp_ms=m.timestamp,
                    )
                    for m in messages
                )
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        for tp in tps:
            out.extend(by_tp[tp])
    except KafkaError as exc:
        raise StoreError(f"cannot read topic {topic!r} from Kafka at {bootstrap}: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return out


async def read_compacted(
    bootstrap: Target, topic: str, *, timeout_s: float = 30.0
) -> dict[str, bytes]:
    """The latest value per key of a compacted topic (``{key: value}``; tombstones delete).

    Reads every partition from the beginning to the end offsets captured at the start, so
    the result is the same whether or not the broker has compacted the log yet.
    """
    latest: dict[str, bytes] = {}
    for rec in await read_all(bootstrap, topic, timeout_s=timeout_s):
        if rec.key is None:
            continue
        key = rec.key.decode("utf-8", "replace")
        if rec.value is None:
            latest.pop(key, None)
        else:
            latest[key] = rec.value
    return latest


class KafkaOutputReader:
    """``OutputReader`` over the worker's output topics (the same port as the embedded store).

    Each topic is read once per reader, from the beginning to its end (bounded in time).
    """

    def __init__(self, settings: Settings, *, timeout_s: float = 30.0) -> None:
        self._connection = kafka_connection(settings)
        self._bootstrap = self._connection.bootstrap
        self._topics = topic_specs(settings)
        self._timeout_s = timeout_s
        self._cache: dict[str, dict[bytes, KafkaRecord]] = {}

    def __repr__(self) -> str:
        where = self._connection.describe()
        return f"Kafka at {where} (topics {self._topics.events.name[:-7]}.*)"

    def __enter__(self) -> KafkaOutputReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._cache.clear()

    def _records(self, role: str) -> list[KafkaRecord]:
        name = self._topics.by_role(role).name
        return read_all_sync(self._connection, name, timeout_s=self._timeout_s)

    def _latest(self, role: str) -> dict[bytes, KafkaRecord]:
        """The latest record per key of a compacted topic (tombstones delete)."""
        if role not in self._cache:
            latest: dict[bytes, KafkaRecord] = {}
            for rec in self._records(role):
                if rec.key is None:
                    continue
                if rec.value is None:
                    latest.pop(rec.key, None)
                else:
                    latest[rec.key] = rec
            self._cache[role] = latest
        return self._cache[role]

    def _docs(self, role: str) -> list[Any]:
        return [
            orjson.loads(resolve_output(r.value or b""))
            for _, r in sorted(self._latest(role).items())
        ]

    def totals(self) -> list[TotalsDoc]:
        return self._docs("totals")

    def intercepts(self) -> list[InterceptDoc]:
        return self._docs("intercepts")

    def _stored(self, run_id: str, rec: KafkaRecord) -> StoredBundle:
        value = rec.value or b""
        data = load_archived_bundle(value) if is_manifest(value) else value
        digest = rec.header(HEADER_DIGEST)
        if digest is None:
            raise StoreError(
                f"bundle record of run {run_id!r} at {rec.topic}:{rec.partition}:{rec.offset} "
                f"has no {HEADER_DIGEST} header; expected one on every bundle the worker publishes"
            )
        return StoredBundle(run_id, digest.decode(), data)

    def bundle(self, run_id: str) -> StoredBundle | None:
        rec = self._latest("bundles").get(run_id.encode())
        return None if rec is None else self._stored(run_id, rec)

    def bundles(self) -> Iterator[StoredBundle]:
        for key, rec in sorted(self._latest("bundles").items()):
            yield self._stored(key.decode(), rec)

    def ledger(self, run_id: str) -> list[EntryDoc]:
        """A run's ledger entries in seq order (last write per key wins)."""
        prefix = f"{run_id}:".encode()
        by_key: dict[bytes, bytes] = {}
        for rec in self._records("ledger"):
            if rec.key is not None and rec.value is not None and rec.key.startswith(prefix):
                by_key[rec.key] = rec.value
        return [orjson.loads(resolve_output(v)) for _, v in sorted(by_key.items())]

    def deadletters(self) -> list[DeadLetter]:
        return [deadletter_of(rec) for rec in self._records("deadletter")]


def deadletter_of(rec: KafkaRecord) -> DeadLetter:
    """A dead letter read back from its topic (its provenance is in its headers)."""

    def text(name: str) -> str:
        value = rec.header(name)
        if value is None:
            raise StoreError(
                f"dead letter at {rec.topic}:{rec.partition}:{rec.offset} has no {name} "
                "header; expected the headers the worker writes"
            )
        return value.decode("utf-8", "replace")

    position = SourcePosition(
        text(HEADER_SOURCE_TOPIC),
        int(text(HEADER_SOURCE_PARTITION)),
        int(text(HEADER_SOURCE_OFFSET)),
        None if rec.header(HEADER_SOURCE_INDEX) is None else int(text(HEADER_SOURCE_INDEX)),
    )
    return DeadLetter(resolve_output(rec.value or b""), position, text(HEADER_ERROR))


def read_all_sync(bootstrap: Target, topic: str, *, timeout_s: float = 30.0) -> list[KafkaRecord]:
    """:func:`read_all` for synchronous callers (the CLI)."""
    return asyncio.run(read_all(bootstrap, topic, timeout_s=timeout_s))


def read_compacted_sync(
    bootstrap: Target, topic: str, *, timeout_s: float = 30.0
) -> dict[str, bytes]:
    """:func:`read_compacted` for synchronous callers (the CLI)."""
    return asyncio.run(read_compacted(bootstrap, topic, timeout_s=timeout_s))


def ensure_topics_sync(
    bootstrap: Target, specs: Iterable[TopicSpec], *, timeout_s: float = 30.0
) -> dict[str, str]:
    """:func:`ensure_topics` for synchronous callers (the CLI)."""
    return asyncio.run(ensure_topics(bootstrap, specs, timeout_s=timeout_s))


__all__ = [
    "HEADER_DIGEST",
    "HEADER_ERROR",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "MANIFEST_KIND",
    "MESSAGE_OVERHEAD_BYTES",
    "OUTPUT_MANIFEST_KIND",
    "ROLES",
    "TOPIC_LAYOUT",
    "KafkaOutputReader",
    "KafkaRecord",
    "KafkaSink",
    "Published",
    "TopicSet",
    "TopicSpec",
    "TopicTemplate",
    "archive_bundle",
    "archive_output",
    "ensure_topics",
    "ensure_topics_sync",
    "is_manifest",
    "is_output_manifest",
    "load_archived_bundle",
    "max_record_bytes",
    "partition_for",
    "read_all",
    "read_all_sync",
    "read_compacted",
    "read_compacted_sync",
    "record_fits",
    "resolve_output",
    "topic_name",
    "topic_specs",
    "worker_state_specs",
    "write_atomic",
]
