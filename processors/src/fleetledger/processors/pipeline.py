"""The pipeline both runtimes drive: bytes in, typed outputs out, state behind ports.

``Pipeline.handle_many`` takes log messages (their original bytes and source positions),
decodes them, applies every event through the core, materializes bundles of finished runs
and returns typed :class:`Outputs`: ledger entries, run totals, intercepts, bundles (with
run id, tenant and digest) and dead letters.  It holds no I/O: on the input side run state
and ledger entries are behind the ``StateStore`` and ``EntryStore`` ports (Faust tables or
SQLite); on the output side the runtimes hand ``Outputs`` to an ``OutputSink`` (SQLite
tables inside the batch transaction, or Kafka topics), and read them back through an
``OutputReader``.  Adapters serialize what the core built; none of them parses a key or a
bundle to recover what the core already knew.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Generic, Protocol, TypedDict, TypeVar

import orjson

from fleetledger.kernel.errors import FleetLedgerError, ProcessorError
from fleetledger.processors.bundle import assemble_encoded
from fleetledger.processors.canonical import event_hash
from fleetledger.processors.core import (
    CoreConfig,
    Entry,
    EntryLookup,
    Intercept,
    RunState,
    TotalsJson,
    apply,
    check_gap,
    make_intercept,
)
from fleetledger.schemas.codec import Codec

log = logging.getLogger("fleetledger.pipeline")


class StateStore(Protocol):
    """Per-run state, O(1) bytes per run."""

    def get(self, run_id: str) -> bytes | None: ...

    def put(self, run_id: str, value: bytes) -> None: ...


class EntryStore(Protocol):
    """Chained ledger entries keyed by (run_id, seq)."""

    def get(self, run_id: str, seq: int) -> bytes | None: ...

    def put(self, run_id: str, seq: int, value: bytes) -> None: ...


K = TypeVar("K", bound=Hashable)


class Staged(Generic[K]):
    """Writes held back until a runtime makes them durable; reads see them first.

    Both runtimes back their state ports with one: the embedded runtime flushes it into
    the batch's SQLite transaction, the Faust runtime into its tables and changelogs once
    the outputs it covers are published (a crash in between reprocesses the input instead
    of skipping it as a duplicate).
    """

    def __init__(self, read: Callable[[K], bytes | None]) -> None:
        self._read = read
        self._writes: dict[K, bytes] = {}

    def get(self, key: K) -> bytes | None:
        staged = self._writes.get(key)
        return staged if staged is not None else self._read(key)

    def put(self, key: K, value: bytes) -> None:
        self._writes[key] = value

    def __iter__(self) -> Iterator[K]:
        """The keys written since the last :meth:`take` or :meth:`discard`."""
        return iter(list(self._writes))

    def take(self) -> dict[K, bytes]:
        """The staged writes (now no longer staged)."""
        writes, self._writes = self._writes, {}
        return writes

    def discard(self) -> None:
        self._writes.clear()


@dataclass(frozen=True)
class SourcePosition:
    """Where an input message is: its log record, and for a message of an EventPack
    record its place in the pack (``index``, from 0)."""

    topic: str
    partition: int
    offset: int
    index: int | None = None

    def at(self, index: int) -> SourcePosition:
        return SourcePosition(self.topic, self.partition, self.offset, index)


@dataclass(frozen=True)
class DeadLetter:
    """An input message that could not be processed: its original bytes, where, and why."""

    value: bytes
    position: SourcePosition
    error: str

    @property
    def key(self) -> str:
        p = self.position
        key = f"{p.topic}:{p.partition}:{p.offset}"
        return key if p.index is None else f"{key}:{p.index}"


class TotalsDoc(TotalsJson):
    """The totals of one run as published (SPEC.md, "Totals"); money as decimal strings."""

    run_id: str
    tenant: str
    agent_id: str
    status: str
    through_seq: int
    started_at: str | None
    ended_at: str | None
    duration_ms: int | None
    budget: dict[str, str] | None


class InterceptDoc(TypedDict):
    """An intercept as published (SPEC.md, "Intercepts")."""

    intercept_id: str
    run_id: str
    kind: str
    severity: str
    seq: int
    reason: str
    ts: str
    tenant: str
    agent_id: str
    params: dict[str, str | int]


class EntryDoc(TypedDict):
    """A chained ledger entry as published (SPEC.md, "Ledger entries")."""

    run_id: str
    seq: int
    event_hash: str
    prev_hash: str
    entry_hash: str
    event: dict[str, Any]


@dataclass(frozen=True)
class RunTotals:
    """The latest totals of one run: an idempotent upsert keyed by run id."""

    run_id: str
    doc: TotalsDoc

    @cached_property
    def data(self) -> bytes:
        return dumps(self.doc)


@dataclass(frozen=True)
class Bundle:
    """A materialized run bundle: its canonical RFC 8785 bytes and what adapters key it by."""

    run_id: str
    tenant: str
    started_at: str | None
    digest: str
    document: dict[str, Any]
    #: The canonical bytes: what is stored, published, archived and verified.
    data: bytes = field(repr=False)


@dataclass
class _Batch:
    """What one :meth:`Pipeline.handle_many` call holds between its messages: the touched
    runs' working states (persisted once, at the end) and the messages applied so far."""

    states: dict[str, RunState] = field(default_factory=dict)
    applied: list[tuple[list[dict[str, Any]], list[bytes]]] = field(default_factory=list)


@dataclass
class Outputs:
    entries: list[Entry] = field(default_factory=list)
    totals: list[RunTotals] = field(default_factory=list)
    intercepts: list[Intercept] = field(default_factory=list)
    bundles: list[Bundle] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)
    #: (run_id, entries) of runs sealed in this call: once the state that seals them is
    #: durable, a runtime may drop their entries 0..entries-1 from its entry store.
    sealed: list[tuple[str, int]] = field(default_factory=list)
    duplicates: int = 0
    events: int = 0

    def extend(self, other: Outputs) -> None:
        self.entries += other.entries
        self.totals += other.totals
        self.intercepts += other.intercepts
        self.bundles += other.bundles
        self.deadletters += other.deadletters
        self.sealed += other.sealed
        self.duplicates += other.duplicates
        self.events += other.events


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON for output values (not the canonical form, which is for hashing)."""
    return orjson.dumps(obj)


class OutputSink(Protocol):
    """Where a runtime puts a batch's outputs (idempotent upserts keyed by run and seq)."""

    def write(self, outputs: Outputs) -> None: ...


@dataclass(frozen=True)
class StoredBundle:
    """A bundle as an output store holds it: its run, digest and canonical bytes."""

    run_id: str
    digest: str
    data: bytes


class OutputReader(Protocol):
    """The outputs of a backend, read back (the embedded store or the Kafka topics)."""

    def totals(self) -> list[TotalsDoc]: ...

    def intercepts(self) -> list[InterceptDoc]: ...

    def bundle(self, run_id: str) -> StoredBundle | None: ...

    def bundles(self) -> Iterator[StoredBundle]: ...

    def ledger(self, run_id: str) -> list[EntryDoc]: ...

    def deadletters(self) -> list[DeadLetter]: ...

    def close(self) -> None: ...

    def __enter__(self) -> OutputReader: ...

    def __exit__(self, *exc: object) -> None: ...


def run_totals(state: RunState) -> RunTotals:
    fold = state.fold
    value: TotalsDoc = {
        "run_id": state.run_id,
        "tenant": fold.tenant,
        "agent_id": fold.agent_id,
        "status": fold.status,
        "through_seq": state.next_seq - 1,
        "started_at": fold.started_at,
        "ended_at": fold.ended_at,
        "duration_ms": fold.duration_ms(),
        "budget": fold.budget,
        **fold.totals_json(),
    }
    return RunTotals(state.run_id, value)


class Pipeline:
    """Decode -> apply -> materialize; one instance per runtime, fed in log order."""

    def __init__(
        self,
        codec: Codec,
        config: CoreConfig,
        states: StateStore,
        entries: EntryStore,
        *,
        seal_finished: bool = False,
    ) -> None:
        """``seal_finished``: keep a finished run's event hashes in its state and report
        it in ``Outputs.sealed``, so a runtime whose entry store lives in memory can drop
        the entries (late redeliveries are still judged against the sealed hashes)."""
        self._codec = codec
        self._config = config
        self._states = states
        self._entries = entries
        self._seal_finished = seal_finished
        self._gapped: set[str] = set()

    @property
    def config(self) -> CoreConfig:
        return self._config

    def _lookup(self, run_id: str, seq: int) -> Entry | None:
        raw = self._entries.get(run_id, seq)
        return None if raw is None else Entry.from_bytes(raw)

    def _load(self, run_id: str) -> RunState:
        raw = self._states.get(run_id)
        return RunState.new(run_id) if raw is None else RunState.from_bytes(raw)

    def handle(self, value: bytes, position: SourcePosition, now: datetime) -> Outputs:
        """Process one message.  Undecodable input becomes a dead letter, never an exception."""
        return self.handle_many([(value, position)], now)

    def handle_many(
        self, messages: Iterable[tuple[bytes, SourcePosition]], now: datetime
    ) -> Outputs:
        """Process messages in log order, persisting each touched run's state once.

        Every message ends processed or dead-lettered, never as an exception: one that
        cannot be decoded, validated or hashed becomes a dead letter before anything of it
        is applied; one whose events fail later (folding, intercept rules, bundle
        assembly: a defect or a store that disagrees with the run state) is rolled back
        whole, dead-lettered with the reason, and its run gets a ``processing_error``
        intercept.  So a bad message never leaves a run half-updated and never stops the
        messages after it.  Totals are emitted once per touched run.
        """
        out = Outputs()
        batch = _Batch()
        for value, position in self._split_packs(messages, out):
            try:
                objs = self._codec.decode_objs(value)
                hashes = [event_hash(obj) for obj in objs]
            except FleetLedgerError as exc:
                out.deadletters.append(DeadLetter(value, position, str(exc)))
                continue
            except Exception as exc:  # a decoder defect: still this message's problem only
                error = f"cannot decode: {type(exc).__name__}: {exc}; expected a message"
                out.deadletters.append(DeadLetter(value, position, error))
                continue
            if not objs:
                error = "found an EventBatch with no events; expected at least one (SPEC 1.1)"
                out.deadletters.append(DeadLetter(value, position, error))
                continue
            try:
                self._apply_objs(objs, hashes, batch, now, out)
            except Exception as exc:  # per-message isolation is the point
                self._roll_back(objs, batch, now)
                self._failed(objs, value, position, exc, out)
        self._persist(batch.states, out)
        return out

    def _split_packs(
        self, messages: Iterable[tuple[bytes, SourcePosition]], out: Outputs
    ) -> Iterator[tuple[bytes, SourcePosition]]:
        """Each message in log order, the messages of an EventPack record in pack order
        (positioned by their index); an unreadable pack is dead-lettered whole."""
        is_pack = self._codec.is_pack
        for value, position in messages:
            if not is_pack(value):
                yield value, position
                continue
            try:
                items = self._codec.unpack(value)
            except FleetLedgerError as exc:
                out.deadletters.append(DeadLetter(value, position, str(exc)))
                continue
            for index, item in enumerate(items):
                yield item, position.at(index)

    def _failed(
        self,
        objs: list[dict[str, Any]],
        value: bytes,
        position: SourcePosition,
        exc: Exception,
        out: Outputs,
    ) -> None:
        """A decoded message whose processing failed: dead letter + intercept, go on."""
        error = (
            f"processing failed: {type(exc).__name__}: {exc}; expected every valid event "
            "to be applied (nothing of this message was applied)"
        )
        dead = DeadLetter(value, position, error)
        log.error("%s: %s", dead.key, error)
        out.deadletters.append(dead)
        first = objs[0]
        out.intercepts.append(
            make_intercept(
                "processing_error",
                run_id=first["run_id"],
                seq=first["seq"],
                ts=first["ts"],
                tenant=first.get("tenant", ""),
                agent_id=first.get("agent_id", ""),
                error=error,
            )
        )

    def _apply_all(self, objs: list[dict[str, Any]], now: datetime) -> Outputs:
        """Apply already-decoded event objects (tests and tools)."""
        out = Outputs()
        batch = _Batch()
        self._apply_objs(objs, [event_hash(o) for o in objs], batch, now, out)
        self._persist(batch.states, out)
        return out

    def _apply_objs(
        self,
        objs: list[dict[str, Any]],
        hashes: list[bytes],
        batch: _Batch,
        now: datetime,
        out: Outputs,
    ) -> None:
        """Apply one message's events all or nothing.

        The events are applied to the batch's run states in place, with new ledger entries
        and outputs kept aside; only when every event (and any bundle) succeeded are the
        entries stored, the outputs taken over and the message remembered in the batch.
        On an exception the caller rolls the touched runs back (:meth:`_roll_back`), so
        nothing of the message is left behind.
        """
        new_entries: dict[tuple[str, int], Entry] = {}
        local = Outputs(events=len(objs))
        states = batch.states

        def lookup(run_id: str, seq: int) -> Entry | None:
            staged = new_entries.get((run_id, seq))
            return staged if staged is not None else self._lookup(run_id, seq)

        for obj, h in zip(objs, hashes, strict=True):
            run_id = obj["run_id"]
            state = states.get(run_id)
            if state is None:
                state = states[run_id] = self._load(run_id)
            result = apply(state, obj, lookup, self._config, now, h)
            if result.duplicate:
                local.duplicates += 1
            for entry in result.entries:
                new_entries[(entry.run_id, entry.seq)] = entry
                local.entries.append(entry)
            local.intercepts += result.intercepts
            if result.materialize:
                local.bundles.append(self._materialize(state, local, lookup))
        for (run_id, seq), entry in new_entries.items():
            self._entries.put(run_id, seq, entry.data)
        batch.applied.append((objs, hashes))
        out.extend(local)

    def _roll_back(self, objs: list[dict[str, Any]], batch: _Batch, now: datetime) -> None:
        """Put the runs that a failed message touched back where the batch's earlier
        messages left them: each from its stored state (the batch persists only at its
        end), with those messages' events of the run applied again.  Applying is
        deterministic and their entries are stored, so the states are what they were
        before the failed message; the outputs of the second application are dropped.
        A store that cannot be read here raises to the runtime: nothing of the batch is
        persisted then, and its input is read again."""
        for run_id in {obj["run_id"] for obj in objs}:
            redo = [
                (obj, h)
                for done, hashes in batch.applied
                for obj, h in zip(done, hashes, strict=True)
                if obj["run_id"] == run_id
            ]
            if not redo:
                batch.states.pop(run_id, None)  # the failed message was its first
                continue
            state = batch.states[run_id] = self._load(run_id)
            for obj, h in redo:
                if apply(state, obj, self._lookup, self._config, now, h).materialize:
                    self._materialize(state, Outputs(), self._lookup)

    def _persist(self, states: dict[str, RunState], out: Outputs) -> None:
        for run_id, state in states.items():
            if state.pending:
                self._gapped.add(run_id)
            else:
                self._gapped.discard(run_id)
            self._states.put(run_id, state.to_bytes())
            out.totals.append(run_totals(state))

    def _materialize(self, state: RunState, out: Outputs, lookup: EntryLookup) -> Bundle:
        assert state.terminal_seq is not None
        entries = []
        for seq in range(state.terminal_seq + 1):
            entry = lookup(state.run_id, seq)
            if entry is None:
                raise ProcessorError(
                    f"run {state.run_id!r}: entry {seq} missing at materialization; "
                    "expected every seq up to the terminal event"
                )
            entries.append(entry)
        bundle, data = assemble_encoded(state.run_id, entries, self._config)
        if self._seal_finished:
            state.seal([e.event_hash for e in entries])
            out.sealed.append((state.run_id, len(entries)))
        run = bundle["run"]
        return Bundle(
            run_id=state.run_id,
            tenant=run["tenant"],
            started_at=run.get("started_at"),
            digest=bundle["integrity"]["digest"],
            document=bundle,
            data=data,
        )

    def watch_gaps(self, run_ids: Iterable[str]) -> None:
        """Runs whose stored state has an open gap (found by a runtime on start or after a
        rebalance): :meth:`tick` checks them like runs seen with a gap since."""
        self._gapped.update(run_ids)

    @property
    def gapped(self) -> frozenset[str]:
        """Runs with an open sequence gap that :meth:`tick` watches."""
        return frozenset(self._gapped)

    def tick(self, now: datetime) -> Outputs:
        """Flag runs whose sequence gap has stayed open past the timeout.

        A run whose state cannot be checked is logged and left out of this tick, so one
        bad state never stops the checks of the others.
        """
        out = Outputs()
        for run_id in sorted(self._gapped):
            try:
                state = self._load(run_id)
                intercept = check_gap(state, self._config, now)
            except Exception as exc:  # one run never stops the others
                log.error("gap check of run %r failed: %s: %s", run_id, type(exc).__name__, exc)
                continue
            if intercept is not None:
                self._states.put(run_id, state.to_bytes())
                out.intercepts.append(intercept)
            if not state.pending:
                self._gapped.discard(run_id)
        return out
