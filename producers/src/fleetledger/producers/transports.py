"""Where the SDK's messages go: the embedded SQLite log, Kafka, or memory.

A message is one single-object encoded ``EventBatch`` of one run, keyed by the run id.
Every transport follows the same small protocol:

* ``await start()`` connects (an unreachable store or broker raises here);
* ``await send(key, value)`` hands one message over.  It may return once the message
  is queued; a failure to deliver it then surfaces on a later ``send`` or on ``flush``;
* ``await flush()`` returns when everything sent so far is durable (SQLite committed,
  Kafka acknowledged by all in-sync replicas) and raises if any of it was not;
* ``await close()`` flushes, then releases the connection.

Transports keep their own queue bounded: ``send`` waits when it is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fleetledger.kernel import kafka
from fleetledger.kernel.config import Settings
from fleetledger.kernel.errors import ConfigError, DeliveryError, FleetLedgerError, StoreError
from fleetledger.kernel.errors import one_line as _describe
from fleetledger.kernel.kafka import KafkaConnection
from fleetledger.kernel.sqlitelog import SqliteLog
from fleetledger.kernel.topics import layout, topic_name
from fleetledger.schemas.codec import Codec

log = logging.getLogger(__name__)

__all__ = [
    "EVENTS_TOPIC_CONFIGS",
    "KafkaTransport",
    "MemoryTransport",
    "SqliteTransport",
    "Transport",
    "ensure_topic",
    "events_topic",
    "make_transport",
]

#: Configs of the events topic when the SDK creates it: the same as the worker's
#: declared topic layout, so whichever side creates the topic first, it is the same.
#: The events topic's declared configs (the worker's layout; it is the source of truth,
#: kept with no retention limit), used when the SDK creates the topic first.
EVENTS_TOPIC_CONFIGS: dict[str, str] = dict(layout("events").configs)


@runtime_checkable
class Transport(Protocol):
    """The four calls the recorder makes on a transport."""

    async def start(self) -> None: ...

    async def send(self, key: str, value: bytes) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


def events_topic(settings: Settings) -> str:
    """Name of the events topic: ``<prefix>.events``."""
    return topic_name(settings.topic_prefix, "events")


class MemoryTransport:
    """Keeps every message in :attr:`messages`, in send order.  For tests and tools."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.started = False
        self.closed = False
        self.flushes = 0

    async def start(self) -> None:
        self.started = True

    async def send(self, key: str, value: bytes) -> None:
        if self.closed:
            raise DeliveryError("memory transport is closed; found a send, expected none")
        self.messages.append((key, value))

    async def flush(self) -> None:
        self.flushes += 1

    async def close(self) -> None:
        self.closed = True


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class _Worker:
    """One daemon thread running blocking calls in order for an event loop.

    Not a ``ThreadPoolExecutor``: those refuse work once interpreter shutdown has begun,
    and a recorder closed from an exit hook still has to write its last rows.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, loop, fut = item
            try:
                result = fn(*args)
            except BaseException as exc:
                loop.call_soon_threadsafe(_settle, fut, False, exc)
            else:
                loop.call_soon_threadsafe(_settle, fut, True, result)

    async def call(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((fn, args, loop, fut))
        return await fut

    def stop(self) -> None:
        """Finish the queued calls, then end the thread."""
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()


class SqliteTransport:
    """Appends messages to the embedded log (:class:`fleetledger.sqlitelog.SqliteLog`).

    Messages are queued in memory and written many per transaction: when
    ``max_queued_messages`` are waiting, ``linger_ms`` after the first queued one (so a
    quiet producer's events still reach the log promptly), and on ``flush``.  Every
    SQLite call runs on one dedicated worker thread (the connection belongs to it), so
    the event loop never blocks on disk I/O.  Rows are appended in send order; a failed
    transaction leaves none of its rows visible, and its error surfaces on the next
    ``send`` or ``flush``.
    """

    def __init__(
        self, path: Path | str, *, max_queued_messages: int = 256, linger_ms: int = 20
    ) -> None:
        if max_queued_messages < 1:
            raise ConfigError(
                f"max_queued_messages: found {max_queued_messages}, expected at least 1"
            )
        if linger_ms < 0:
            raise ConfigError(f"linger_ms: found {linger_ms}, expected at least 0")
        self.path = Path(path)
        self.max_queued_messages = max_queued_messages
        self.linger_ms = linger_ms
        self._queue: list[tuple[str, bytes]] = []
        self._worker: _Worker | None = None
        self._log: SqliteLog | None = None
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._closed = False

    async def _call(self, fn: Any, *args: Any) -> Any:
        if self._worker is None:
            raise DeliveryError(
                f"sqlite transport for {str(self.path)!r} is not started; "
                "found a call before start(), expected start() first"
            )
        return await self._worker.call(fn, *args)

    async def start(self) -> None:
        if self._worker is not None:
            return
        self._worker = _Worker("fleetledger-sqlite")
        try:
            self._log = await self._call(SqliteLog.open, self.path)
        except BaseException:
            self._worker.stop()
            self._worker = None
            raise

    def _append(self, rows: Sequence[tuple[str, bytes]]) -> None:
        assert self._log is not None
        self._log.append(rows)

    def _raise_error(self) -> None:
        if self._error is not None:
            exc = self._error
            raise DeliveryError(
                f"cannot append to the embedded log {str(self.path)!r}: {_describe(exc)}"
            ) from exc

    async def _write(self) -> None:
        async with self._lock:
            if not self._queue:
                return
            rows, self._queue = self._queue, []
            try:
                await self._call(self._append, rows)
            except Exception as exc:
                if self._error is None:
                    self._error = exc
                raise

    async def _write_later(self) -> None:
        await asyncio.sleep(self.linger_ms / 1000)
        self._timer = None
        with contextlib.suppress(Exception):  # kept in self._error, raised on send/flush
            await self._write()

    async def send(self, key: str, value: bytes) -> None:
        self._raise_error()
        if self._closed:
            raise DeliveryError(
                f"sqlite transport for {str(self.path)!r} is closed; found a send, expected none"
            )
        self._queue.append((key, value))
        if len(self._queue) >= self.max_queued_messages:
            await self._write()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._write_later())

    async def flush(self) -> None:
        self._raise_error()
        await self._write()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        timer, self._timer = self._timer, None
        if timer is not None:  # at most linger_ms; its error, if any, is in self._error
            await timer
        if self._worker is None:
            return
        try:
            self._raise_error()
            await self._write()
        finally:
            if self._log is not None:
                await self._call(self._log.close)
                self._log = None
            self._worker.stop()
            self._worker = None


async def _cannot_connect(conn: KafkaConnection, exc: BaseException) -> DeliveryError:
    """One line saying why no connection to ``conn`` could be made."""
    from aiokafka.conn import create_conn

    return DeliveryError(await kafka.connect_failure(conn, exc, create_conn))


async def ensure_topic(
    bootstrap_servers: str | KafkaConnection,
    topic: str,
    *,
    partitions: int,
    replication_factor: int = 1,
    configs: dict[str, str] | None = None,
    request_timeout_ms: int = 30_000,
) -> bool:
    """Create ``topic`` unless it exists; return True when it was created.

    An existing topic is left as it is (whatever its partition count).  A bootstrap string
    connects in plaintext; a :class:`KafkaConnection` says how to connect.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    conn = kafka.as_connection(bootstrap_servers)
    admin = AIOKafkaAdminClient(
        request_timeout_ms=request_timeout_ms, **conn.client_options("fleetledger-producer")
    )
    try:
        await admin.start()
    except Exception as exc:  # an SASL exchange may also fail with a KeyError/ValueError
        await admin.close()
        raise await _cannot_connect(conn, exc) from exc
    try:
        existing = await admin.list_topics()
        if topic in existing:
            return False
        new = NewTopic(
            topic,
            num_partitions=partitions,
            replication_factor=replication_factor,
            topic_configs=dict(EVENTS_TOPIC_CONFIGS if configs is None else configs),
        )
        try:
            await admin.create_topics([new])
        except TopicAlreadyExistsError:
            return False
        return True
    except TopicAlreadyExistsError:
        return False
    except KafkaError as exc:
        raise StoreError(
            f"cannot create topic {topic!r} on {conn.bootstrap}: {_describe(exc)}"
        ) from exc
    finally:
        await admin.close()


#: A pack's bytes besides its messages: header, block count and end of array (at most),
#: and per message its length prefix (at most).
_PACK_FRAME_BYTES = 10 + 10 + 1
_PACK_ITEM_BYTES = 5


class _Pack:
    """The messages of one partition waiting to go out as one record."""

    __slots__ = ("deadline", "key", "messages", "size")

    def __init__(self, key: bytes, deadline: float) -> None:
        self.key = key
        self.messages: list[bytes] = []
        self.size = _PACK_FRAME_BYTES  # what the encoded pack will take, at most
        self.deadline = deadline


class KafkaTransport:
    """Publishes messages with aiokafka (``acks="all"``, key = run id).

    The key keeps every message of a run in one partition, so a run's batches are
    read in the order they were sent.  ``send`` returns once the message is queued;
    delivery failures surface on the next ``send`` or on ``flush``.
    ``bootstrap_servers`` is a plaintext ``host:port[,host:port]`` string or a
    :class:`~fleetledger.kernel.kafka.KafkaConnection` (TLS, SASL).

    With ``pack`` (the default), the messages sent for one partition within ``linger_ms``
    of the first of them go out as **one record**: an ``EventPack`` holding them in send
    order (a window with a single message sends it as it is).  The record's key is the
    run id of its first message, so it lands in that run's partition, which is every
    packed run's partition.  A consumer pays its per-record costs (Faust's stream, the
    offset bookkeeping, the fetch) once per pack instead of once per message: at about one
    event per message, which is what many concurrent slow runs of one process send, those
    costs are most of a worker's CPU.  The client itself then lingers 0 ms: the window
    is the transport's.  A pack is sealed early when its messages reach
    ``max_pack_bytes``.

    Without ``pack`` every message is its own record, appended to one open aiokafka batch
    per partition (``send_batch``), which the client lingers ``linger_ms``.

    Either way records go to the client as whole batches (``send_batch``):
    ``producer.send`` costs ~30 us of Python per record (a future per record, the
    pure-Python partitioner, the accumulator's bookkeeping, a result per record on
    delivery).  Records of a partition stay in the order they were sent.  The partition
    is the one the Java/aiokafka default partitioner picks for the key.
    """

    def __init__(
        self,
        bootstrap_servers: str | KafkaConnection,
        topic: str,
        *,
        enable_idempotence: bool = True,
        compression: str = "zstd",
        linger_ms: int = 5,
        max_request_size: int = 1_048_576,
        request_timeout_ms: int = 30_000,
        client_id: str = "fleetledger-producer",
        create_topic: bool = False,
        partitions: int = 4,
        replication_factor: int = 1,
        max_outstanding: int = 10_000,
        pack: bool = True,
        max_pack_bytes: int = 900_000,
    ) -> None:
        self.connection = kafka.as_connection(bootstrap_servers)
        self.bootstrap_servers = self.connection.bootstrap
        self.topic = topic
        self.enable_idempotence = enable_idempotence
        self.compression_type = kafka.compression_type(compression)
        self.linger_ms = linger_ms
        self.max_request_size = max_request_size
        self.request_timeout_ms = request_timeout_ms
        self.client_id = client_id
        self.create_topic = create_topic
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.max_outstanding = max_outstanding
        self.pack = pack
        self.max_pack_bytes = max_pack_bytes
        self._producer: Any = None
        self._partitioner = kafka.KeyPartitioner()
        #: per partition: the batch messages are appended to, and its delivery future
        self._open: dict[int, tuple[Any, asyncio.Future[Any]]] = {}
        #: per partition: the pack being filled (``pack`` only)
        self._packs: dict[int, _Pack] = {}
        self._pack_lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._sealer: asyncio.Task[None] | None = None
        self._codec = Codec()  # packs (schemas parsed once: ~10 ms)
        #: undelivered batches and how many messages each holds
        self._outstanding: dict[asyncio.Future[Any], int] = {}
        self._queued = 0
        self._error: BaseException | None = None
        self._closed = False
        #: how many batches were handed to the client (each one produce-request entry)
        self.batches_sent = 0
        #: how many records were sent, and how many of them were packs
        self.records_sent = 0
        self.packs_sent = 0

    @classmethod
    def from_settings(cls, settings: Settings, *, create_topic: bool = True) -> KafkaTransport:
        return cls(
            kafka.kafka_connection(settings),
            events_topic(settings),
            enable_idempotence=settings.enable_idempotence,
            compression=settings.compression,
            linger_ms=settings.linger_ms,
            max_request_size=kafka.events_request_bytes(settings),
            create_topic=create_topic,
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            pack=settings.pack_messages,
            max_pack_bytes=settings.max_message_bytes,
        )

    async def start(self) -> None:
        if self._producer is not None:
            return
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaConnectionError, KafkaError

        if self.create_topic:
            await ensure_topic(
                self.connection,
                self.topic,
                partitions=self.partitions,
                replication_factor=self.replication_factor,
                request_timeout_ms=self.request_timeout_ms,
            )
        producer = AIOKafkaProducer(
            **self.connection.client_options(self.client_id),
            acks="all",
            enable_idempotence=self.enable_idempotence,
            compression_type=self.compression_type,
            linger_ms=0 if self.pack else self.linger_ms,  # a pack has lingered already
            max_request_size=self.max_request_size,
            # a partition's batches go one per produce request: room for a linger's worth
            max_batch_size=self.max_request_size,
            request_timeout_ms=self.request_timeout_ms,
        )
        try:
            await producer.start()
            await producer.partitions_for(self.topic)
        except (KafkaConnectionError, OSError, KeyError, ValueError) as exc:
            # (an SASL exchange the broker ends with an error may surface as KeyError/ValueError)
            await producer.stop()
            raise await _cannot_connect(self.connection, exc) from exc
        except KafkaError as exc:
            await producer.stop()
            found = kafka.explain(self.connection, exc) or _describe(exc)
            raise DeliveryError(
                f"cannot start a Kafka producer on {self.connection.describe()}: {found}"
            ) from exc
        self._producer = producer

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            exc = self._error
            raise DeliveryError(
                f"Kafka did not acknowledge a message for {self.topic!r} on "
                f"{self.bootstrap_servers}: {_describe(exc)}"
            ) from exc

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self._queued -= self._outstanding.pop(fut, 0)
        if fut.cancelled():
            if self._error is None:
                self._error = asyncio.CancelledError("delivery cancelled")
            return
        exc = fut.exception()
        if exc is not None and self._error is None:
            self._error = exc

    async def _partition(self, key: str) -> int:
        known = self._producer.client.cluster.partitions_for_topic(self.topic)
        if not known:  # no metadata for the topic now (start() fetched it): wait for it
            from aiokafka.errors import KafkaError

            try:
                known = await self._producer.partitions_for(self.topic)
            except KafkaError as exc:
                raise DeliveryError(
                    f"Kafka has no partitions for {self.topic!r} on {self.bootstrap_servers}: "
                    f"{_describe(exc)}"
                ) from exc
        return self._partitioner(key, len(known))

    async def send(self, key: str, value: bytes) -> None:
        self._raise_pending_error()
        if self._producer is None or self._closed:
            raise DeliveryError(
                f"Kafka transport for {self.topic!r} is not running; "
                "found a send outside start()/close(), expected start() first"
            )
        if self._queued >= self.max_outstanding:
            await self._seal_all()
            if self._outstanding:
                await asyncio.wait(list(self._outstanding), return_when=asyncio.FIRST_COMPLETED)
            self._raise_pending_error()
        raw_key = key.encode("utf-8")
        partition = await self._partition(key)
        if self.pack:
            await self._add_to_pack(partition, key, raw_key, value)
            return
        current = self._open.get(partition)
        if current is not None:
            batch, fut = current
            lingering = not fut.done()  # (a drained batch is closed: append returns None)
            if lingering and batch.append(timestamp=None, key=raw_key, value=value) is not None:
                self._outstanding[fut] += 1
                self._queued += 1
                self.records_sent += 1
                return  # still lingering in the client: delivered with that batch
        self._open.pop(partition, None)
        self._check_size(key, raw_key, value)
        batch, fut = await self._send_record(partition, key, raw_key, value, 1)
        self._queued += 1
        self._open[partition] = (batch, fut)

    async def _add_to_pack(self, partition: int, key: str, raw_key: bytes, value: bytes) -> None:
        self._check_size(key, raw_key, value)
        try:
            self._codec.writer_of(value)
        except FleetLedgerError as exc:
            raise DeliveryError(
                f"cannot pack a message for {self.topic!r} (key {key!r}): {exc} "
                "(packing takes whole TraceEvent/EventBatch messages; pack=False sends any bytes)"
            ) from exc
        pack = self._packs.get(partition)
        size = len(value) + _PACK_ITEM_BYTES
        if pack is not None and pack.size + size > self.max_pack_bytes:
            await self._seal(partition)
            pack = self._packs.get(partition)
        if pack is None:
            loop = asyncio.get_running_loop()
            pack = self._packs[partition] = _Pack(raw_key, loop.time() + self.linger_ms / 1000)
            if self._timer is None and self._sealer is None:
                self._timer = loop.call_at(pack.deadline, self._on_timer)
        pack.messages.append(value)
        pack.size += size
        self._queued += 1

    def _on_timer(self) -> None:
        self._timer = None
        self._sealer = asyncio.ensure_future(self._seal_due())

    async def _seal_due(self) -> None:
        """Seal every pack whose window has passed, then wait for the next window."""
        try:
            loop = asyncio.get_running_loop()
            now = loop.time()
            for partition in [p for p, pack in self._packs.items() if pack.deadline <= now]:
                await self._seal(partition)
        except Exception as exc:  # surfaces on the next send, flush or close
            if self._error is None:
                cause = exc.__cause__ if isinstance(exc, DeliveryError) else None
                self._error = cause or exc
        finally:
            self._sealer = None
            if self._packs and not self._closed:
                deadline = min(pack.deadline for pack in self._packs.values())
                self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    async def _seal(self, partition: int) -> None:
        """Hand the partition's pack to the client as one record (in the order sealed)."""
        pack = self._packs.pop(partition, None)
        if pack is None:
            return
        async with self._pack_lock:
            key = pack.key.decode("utf-8", "replace")
            try:
                if len(pack.messages) == 1:  # (checked when added)
                    value = pack.messages[0]
                else:
                    value = self._codec.encode_pack(pack.messages, check=False)
                    self._check_size(key, pack.key, value)
                    self.packs_sent += 1
                await self._send_record(partition, key, pack.key, value, len(pack.messages))
            except DeliveryError:
                self._queued -= len(pack.messages)
                raise

    async def _seal_all(self) -> None:
        """Hand every pack to the client, and wait for seals already under way."""
        for partition in list(self._packs):
            await self._seal(partition)
        async with self._pack_lock:  # (FIFO: every seal that started before has ended)
            pass

    def _check_size(self, key: str, raw_key: bytes, value: bytes) -> None:
        from aiokafka.record.default_records import DefaultRecordBatchBuilder

        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(raw_key, value, [])
        if size > self.max_request_size:
            raise DeliveryError(
                f"Kafka refused a message for {self.topic!r} (key {key!r}, {len(value)} bytes): "
                f"the message is {size} bytes when serialized, larger than the "
                f"max_request_size of {self.max_request_size}"
            )

    async def _send_record(
        self, partition: int, key: str, raw_key: bytes, value: bytes, messages: int
    ) -> tuple[Any, asyncio.Future[Any]]:
        """Open a batch holding one record of ``messages`` messages and hand it to the
        client (the caller has checked its size and counted its messages in ``_queued``)."""
        from aiokafka.errors import KafkaError

        try:
            batch = self._producer.create_batch()
            batch.append(timestamp=None, key=raw_key, value=value)  # a first record always fits
            fut = await self._producer.send_batch(batch, self.topic, partition=partition)
        except KafkaError as exc:
            raise DeliveryError(
                f"Kafka refused a message for {self.topic!r} (key {key!r}, {len(value)} bytes): "
                f"{_describe(exc)}"
            ) from exc
        self._outstanding[fut] = messages
        self.batches_sent += 1
        self.records_sent += 1
        fut.add_done_callback(self._done)
        return batch, fut

    async def flush(self) -> None:
        if self._producer is not None:
            await self._seal_all()
        if self._producer is not None and self._outstanding:
            await asyncio.wait(list(self._outstanding))
        self._raise_pending_error()

    async def close(self) -> None:
        if self._closed:
            return
        producer = self._producer
        try:
            if producer is not None:
                await self._seal_all()
        finally:
            self._closed = True
            self._producer = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if producer is None:
            return
        try:
            if self._outstanding:
                await asyncio.wait(list(self._outstanding))
        finally:
            self._open.clear()
            await producer.stop()
        self._raise_pending_error()


def make_transport(settings: Settings, *, create_topic: bool = True) -> Transport:
    """The transport the broker URL of ``settings`` names (sqlite or kafka)."""
    url = settings.broker_url()
    if url.kind == "sqlite":
        assert url.path is not None
        return SqliteTransport(url.path)
    if url.kind == "kafka":
        return KafkaTransport.from_settings(settings, create_topic=create_topic)
    raise ConfigError(f"broker kind: found {url.kind!r}, expected 'sqlite' or 'kafka'")
