"""The read model in SQL: the pure projection's rows upserted with tracking records, and
the typed queries of the reader port, on SQLite or PostgreSQL (SQLAlchemy Core).

Writes (:meth:`ReadStore.apply`) run in ONE transaction: the rows a batch of output
records produces, the position (topic, partition, next offset) of every record it
consumed, and the change-feed head.  A record whose position is already stored is
skipped, so a redelivery, a replay after a crash or two projectors overlapping during a
rebalance never apply a record twice; and since every row is keyed (run; run and seq;
intercept id), applying the same output twice at *different* positions (the worker
re-publishing after a crash) changes nothing either.

Every write transaction first locks the head row, so writers are serialized and the
change-feed positions they hand out increase in commit order: a reader that saw
position P has seen every change up to P.  That is what makes a position usable as a
stream event id.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Row,
    Select,
    Update,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    inspect,
    literal,
    literal_column,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from fleetledger.kernel.config import ReadDbURL
from fleetledger.kernel.errors import StoreError
from fleetledger.processors.readmodel import (
    ActionRow,
    AgentRow,
    BundleRow,
    Change,
    CostLine,
    CostReport,
    InterceptPage,
    InterceptQuery,
    InterceptRow,
    ModelUse,
    OutputRecord,
    Projection,
    RunFilter,
    RunPage,
    RunQuery,
    RunRow,
    RunSummary,
    decode_cursor,
    encode_cursor,
    iso,
    merge_cost_lines,
    model_uses,
    parse_ts,
    project,
    total_cost,
)
from fleetledger.processors.readstore import schema as s
from fleetledger.schemas import money_str

_CHUNK = 500
_MIGRATIONS = Path(__file__).with_name("migrations")


@dataclass(frozen=True)
class TrackedRecord:
    """An output record with the position it was read from."""

    topic: str
    partition: int
    offset: int
    record: OutputRecord


@dataclass
class ApplyResult:
    applied: int = 0
    skipped: int = 0
    runs: int = 0
    actions: int = 0
    intercepts: int = 0
    bundles: int = 0
    position: int = 0
    touched: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class ArchivedRun:
    """A run removed from the read model once its bundle was found in the archive."""

    run_id: str
    tenant: str
    agent_id: str
    started_at: datetime
    digest: str
    path: str
    archived_at: datetime


def _chunks(items: Sequence[Any], n: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def known_actions_sql(count: int, paramstyle: str) -> str:
    """The stored actions among ``count`` (run id, seq) keys, as the driver's SQL: one
    primary-key lookup per key.

    The wanted keys are a ``VALUES`` list joined on the primary key.  A row-value
    ``(run_id, seq) IN (...)`` reads the same rows, but SQLite answers it by scanning the
    whole actions table for every chunk of keys, so each batch cost time in proportion to
    every action ever projected.  Driver SQL (positional parameters, flattened keys):
    SQLAlchemy compiles a ``VALUES`` list or a text clause of 1,000 parameters anew for
    every chunk, more than the lookups themselves cost.
    """
    mark = "?" if paramstyle == "qmark" else "%s"  # SQLite; psycopg (format / pyformat)
    rows = ", ".join([f"({mark}, {mark})"] * count)
    return (
        f"WITH wanted (run_id, seq) AS (VALUES {rows}) "
        f"SELECT a.run_id, a.seq FROM {s.actions.name} AS a "
        "JOIN wanted ON a.run_id = wanted.run_id AND a.seq = wanted.seq"
    )


class _Borrowed:
    """A DBAPI connection lent by the embedded runtime: its transaction is the runtime's.

    SQLAlchemy's commit and rollback are no-ops here; the runtime commits the batch (the
    projection's rows with it) or rolls it all back.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _sqlite_writer_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # transactions are begun explicitly (below)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_reader_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """Readers of a large read model: memory-mapped pages and a larger page cache (the
    registry's aggregate figures scan an index of every run)."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA mmap_size=268435456")
    cur.execute("PRAGMA cache_size=-65536")
    cur.close()


@dataclass(frozen=True)
class _DriverPlan:
    """A write statement compiled once, with the bind processors of its parameters: a
    batch's rows go to the SQLite driver's ``executemany`` as tuples.

    SQLAlchemy's own ``executemany`` builds and processes a parameter dictionary per row
    in Python, which was half the time of writing a batch's actions (measured on 30,000
    action rows: 16 -> 8 us per row).  The processors are the ones SQLAlchemy applies
    (the dialect implementation's ``bind_processor``: ``UTCDateTime``, ``Money``), so the
    stored values are the same.
    """

    sql: str
    names: tuple[str, ...]
    convert: tuple[tuple[int, Callable[[Any], Any]], ...]

    @classmethod
    def of(cls, stmt: Insert | Update, dialect: Dialect, keys: Sequence[str]) -> _DriverPlan | None:
        """The plan of ``stmt`` for rows with ``keys``; None when a parameter of the
        statement is not one of them (it then runs through SQLAlchemy)."""
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        names = tuple(getattr(compiled, "positiontup", None) or ())
        if not names or not set(names) <= set(keys):
            return None
        binds = compiled.binds
        convert = tuple(
            (i, proc)
            for i, name in enumerate(names)
            if (proc := binds[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        )
        return cls(compiled.string, names, convert)

    def params(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        values = [row[name] for name in self.names]
        for i, proc in self.convert:
            values[i] = proc(values[i])
        return tuple(values)


def _wrap(what: str, label: str, exc: BaseException) -> StoreError:
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return StoreError(f"read model at {label}: {what} failed: {detail}")


class ReadStore:
    """The read model on one SQL engine; the :class:`~fleetledger.processors.readmodel.ReadModel`
    port for the read commands and the console, and the writer of the projection."""

    def __init__(self, engine: Engine, label: str, *, begin_immediate: bool = False) -> None:
        self._engine = engine
        self._label = label
        self._pg = engine.dialect.name == "postgresql"
        self._begin_immediate = begin_immediate
        self._plans: dict[tuple[str, tuple[str, ...]], _DriverPlan | None] = {}

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction (on SQLite it takes the write lock up front: BEGIN
        IMMEDIATE, so two writers queue instead of failing to upgrade a read lock)."""
        with self._engine.begin() as conn:
            if self._begin_immediate:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, url: ReadDbURL, *, create: bool) -> ReadStore:
        """Open the read model at ``url``.

        ``create=True`` (writers: the worker, the projector) creates or migrates it.
        ``create=False`` (readers) changes nothing: a missing database, a database that is
        not a read model, or one at another revision is refused with a
        :class:`StoreError` saying what was found.
        """
        label = str(url)
        if url.kind == "sqlite":
            assert url.path is not None
            if create:
                url.path.parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(
                    f"sqlite:///{url.path}", connect_args={"check_same_thread": False}
                )
                event.listen(engine, "connect", _sqlite_writer_pragmas)
            else:
                if not url.path.is_file():
                    raise StoreError(
                        f"found no read model at {label} (no such file); expected one that "
                        "`fleetledger worker` (embedded) or `fleetledger projector` (Kafka) "
                        "built"
                    )
                engine = create_engine(
                    f"sqlite:///file:{url.path.resolve()}?mode=ro&uri=true",
                    connect_args={"check_same_thread": False},
                )
                event.listen(engine, "connect", _sqlite_reader_pragmas)
        else:
            # no pre-ping (a round trip per query): stale connections are recycled instead
            engine = create_engine(url.sqlalchemy_url, pool_recycle=1800)
        store = cls(engine, label, begin_immediate=url.kind == "sqlite" and create)
        try:
            if create:
                store.migrate()
            else:
                store.check()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def borrow(cls, conn: sqlite3.Connection, label: str) -> ReadStore:
        """A store writing through the embedded runtime's connection, inside its batch
        transaction (migrated first, in a transaction of its own)."""
        engine = create_engine(
            "sqlite://",
            creator=lambda: _Borrowed(conn),
            poolclass=StaticPool,
        )
        store = cls(engine, label)
        conn.execute("BEGIN IMMEDIATE")
        try:
            store.migrate()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return store

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> ReadStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"the read model at {self._label}"

    @property
    def label(self) -> str:
        return self._label

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def migrate(self) -> None:
        """Bring the schema to the latest revision (Alembic)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        try:
            with self._writing() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except SQLAlchemyError as exc:
            raise _wrap("migration", self._label, exc) from exc

    @staticmethod
    def head_revision() -> str:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        rev = ScriptDirectory.from_config(cfg).get_current_head()
        assert rev is not None
        return rev

    def check(self) -> None:
        """Refuse a database that is not this version's read model (reading changes nothing)."""
        try:
            with self._engine.connect() as conn:
                names = set(inspect(conn).get_table_names())
                if s.VERSION_TABLE not in names:
                    raise StoreError(self._not_a_read_model(names))
                found = conn.exec_driver_sql(f"SELECT version_num FROM {s.VERSION_TABLE}").scalar()
        except SQLAlchemyError as exc:
            raise _wrap("opening", self._label, exc) from exc
        expected = self.head_revision()
        if found != expected:
            raise StoreError(
                f"read model at {self._label} is at revision {found!r}; expected {expected!r} "
                "(`fleetledger worker` or `fleetledger projector` migrates it)"
            )

    def _not_a_read_model(self, names: set[str]) -> str:
        if not names:
            return (
                f"found no read model at {self._label} (an empty database); expected one "
                "that `fleetledger worker` (embedded) or `fleetledger projector` (Kafka) built"
            )
        if "event_log" in names:
            return (
                f"found an embedded store without a read model at {self._label}; run "
                "`fleetledger worker --once` to build it"
            )
        shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
        return (
            f"{self._label} is not a fleetledger database (found tables {shown}); expected "
            "a fleetledger store or read model, so nothing was read or changed"
        )

    def optimize(self) -> None:
        """Refresh the planner's statistics (``ANALYZE``) so every filter combination
        picks its index; the worker and the projector run it with their housekeeping."""
        try:
            if self._pg:
                with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    for t in s.TABLES:
                        conn.exec_driver_sql(f"ANALYZE {t.name}")
            else:
                with self._writing() as conn:
                    conn.exec_driver_sql("ANALYZE")
        except SQLAlchemyError as exc:
            raise _wrap("analyzing", self._label, exc) from exc

    # ------------------------------------------------------------------ writing

    def positions(self, consumer: str) -> dict[tuple[str, int], int]:
        """The next offset to read of every (topic, partition) ``consumer`` tracked."""
        t = s.tracking
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(t.c.topic, t.c.partition, t.c.next_offset).where(
                        t.c.consumer == consumer
                    )
                )
                return {(r.topic, r.partition): r.next_offset for r in rows}
        except SQLAlchemyError as exc:
            raise _wrap("reading positions", self._label, exc) from exc

    def apply(self, consumer: str, records: Sequence[TrackedRecord]) -> ApplyResult:
        """Project ``records`` and store their rows and positions in one transaction."""
        try:
            with self._writing() as conn:
                return self._apply(conn, consumer, records)
        except SQLAlchemyError as exc:
            raise _wrap("writing", self._label, exc) from exc

    def _apply(
        self, conn: Connection, consumer: str, records: Sequence[TrackedRecord]
    ) -> ApplyResult:
        result = ApplyResult()
        position = int(
            conn.execute(
                select(s.head.c.position).where(s.head.c.id == 1).with_for_update()
            ).scalar_one()
        )
        t = s.tracking
        stored = {
            (r.topic, r.partition): r.next_offset
            for r in conn.execute(
                select(t.c.topic, t.c.partition, t.c.next_offset)
                .where(t.c.consumer == consumer)
                .with_for_update()
            )
        }
        keep: list[TrackedRecord] = []
        ends: dict[tuple[str, int], int] = {}
        for tr in records:
            tp = (tr.topic, tr.partition)
            if tr.offset < stored.get(tp, 0):
                result.skipped += 1
                continue
            keep.append(tr)
            ends[tp] = max(ends.get(tp, 0), tr.offset + 1)
        result.applied = len(keep)
        if not keep:
            result.position = position
            return result
        proj = project(tr.record for tr in keep)
        position = self._write(conn, proj, position, result)
        ins = self._insert(t)
        self._many(
            conn,
            "tracking",
            ins.on_conflict_do_update(
                index_elements=[t.c.consumer, t.c.topic, t.c.partition],
                set_={"next_offset": ins.excluded.next_offset},
            ),
            [
                {"consumer": consumer, "topic": tp[0], "partition": tp[1], "next_offset": n}
                for tp, n in sorted(ends.items())
            ],
        )
        conn.execute(update(s.head).where(s.head.c.id == 1).values(position=position))
        result.position = position
        return result

    def _many(
        self, conn: Connection, name: str, stmt: Insert | Update, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Execute ``stmt`` (the write ``name``) once per row of ``rows``, which all have
        the keys of the first.  On SQLite through a :class:`_DriverPlan`; PostgreSQL keeps
        SQLAlchemy's, which sends many rows per statement."""
        if not rows:
            return
        if self._pg:
            conn.execute(stmt, list(rows))
            return
        key = (name, tuple(rows[0]))
        if key not in self._plans:
            self._plans[key] = _DriverPlan.of(stmt, conn.dialect, key[1])
        plan = self._plans[key]
        if plan is None:
            conn.execute(stmt, list(rows))
        else:
            conn.exec_driver_sql(plan.sql, [plan.params(row) for row in rows])

    def _insert(self, table: Any) -> Any:
        if self._pg:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    def _write(self, conn: Connection, proj: Projection, position: int, result: ApplyResult) -> int:
        r = s.runs
        # -- runs (the latest totals; an older value never overwrites a newer one)
        existing: dict[str, Any] = {}
        touched = sorted(proj.touched_runs())
        for chunk in _chunks(touched):
            for row in conn.execute(
                select(r.c.run_id, r.c.tenant, r.c.agent_id, r.c.through_seq).where(
                    r.c.run_id.in_(chunk)
                )
            ):
                existing[row.run_id] = row
        agent_delta: dict[tuple[str, str], int] = {}
        run_values = []
        for run in proj.runs.values():
            known = existing.get(run.run_id)
            if known is not None and known.through_seq > run.through_seq:
                continue
            if known is None:
                agent_delta[(run.tenant, run.agent_id)] = (
                    agent_delta.get((run.tenant, run.agent_id), 0) + 1
                )
            elif (known.tenant, known.agent_id) != (run.tenant, run.agent_id):
                old = (known.tenant, known.agent_id)
                agent_delta[old] = agent_delta.get(old, 0) - 1
                new = (run.tenant, run.agent_id)
                agent_delta[new] = agent_delta.get(new, 0) + 1
            run_values.append(_run_values(run))
        if run_values:
            ins = self._insert(r)
            updatable = {
                k: ins.excluded[k]
                for k in run_values[0]
                if k not in ("run_id", "intercepts", "digest", "position")
            }
            self._many(
                conn,
                "runs",
                ins.on_conflict_do_update(index_elements=[r.c.run_id], set_=updatable),
                run_values,
            )
            result.runs += len(run_values)
            for v in run_values:
                existing.setdefault(v["run_id"], None)
        if agent_delta:
            a = s.agents
            ins = self._insert(a)
            self._many(
                conn,
                "agents",
                ins.on_conflict_do_update(
                    index_elements=[a.c.tenant, a.c.agent_id],
                    set_={"runs": a.c.runs + ins.excluded.runs},
                ),
                [{"tenant": t, "agent_id": g, "runs": n} for (t, g), n in agent_delta.items()],
            )

        # -- actions (immutable by run and seq) and the model use of new ones
        new_actions = self._new_actions(conn, proj.actions)
        if new_actions:
            values = []
            for action in new_actions:
                position += 1
                values.append(_action_values(action, position))
            self._many(conn, "actions", self._insert(s.actions), values)
            result.actions += len(values)
            uses = model_uses(new_actions)
            if uses:
                m = s.run_models
                ins = self._insert(m)
                self._many(
                    conn,
                    "run_models",
                    ins.on_conflict_do_update(
                        index_elements=[m.c.run_id, m.c.provider, m.c.model, m.c.currency],
                        set_={
                            "served": func.coalesce(ins.excluded.served, m.c.served),
                            "calls": m.c.calls + ins.excluded.calls,
                            "fallbacks": m.c.fallbacks + ins.excluded.fallbacks,
                            "errors": m.c.errors + ins.excluded.errors,
                            "input_tokens": m.c.input_tokens + ins.excluded.input_tokens,
                            "output_tokens": m.c.output_tokens + ins.excluded.output_tokens,
                            "cost": m.c.cost + ins.excluded.cost,
                        },
                    ),
                    [_use_values(u) for u in uses.values()],
                )

        # -- intercepts (one fact per key: the first value stays)
        if proj.intercepts:
            i = s.intercepts
            ids = sorted(proj.intercepts)
            known_ids: set[str] = set()
            for chunk in _chunks(ids):
                known_ids.update(
                    conn.execute(select(i.c.intercept_id).where(i.c.intercept_id.in_(chunk)))
                    .scalars()
                    .all()
                )
            values = []
            for key in ids:
                if key in known_ids:
                    continue
                position += 1
                values.append(_intercept_values(proj.intercepts[key], position))
            if values:
                self._many(conn, "intercepts", self._insert(i), values)
                result.intercepts += len(values)

        # -- bundles
        if proj.bundles:
            b = s.bundles
            ins = self._insert(b)
            self._many(
                conn,
                "bundles",
                ins.on_conflict_do_update(
                    index_elements=[b.c.run_id],
                    set_={
                        "digest": ins.excluded.digest,
                        "value": ins.excluded.value,
                        "manifest": ins.excluded.manifest,
                    },
                ),
                [
                    {
                        "run_id": x.run_id,
                        "digest": x.digest,
                        "value": x.value,
                        "manifest": x.manifest,
                    }
                    for x in proj.bundles.values()
                ],
            )
            result.bundles += len(proj.bundles)

        # -- derived run columns, and a new position for every run touched
        runs_here = [run_id for run_id in touched if run_id in existing]
        if runs_here:
            i, b = s.intercepts, s.bundles
            stmt = (
                update(r)
                .where(r.c.run_id == bindparam("b_run_id"))
                .values(
                    intercepts=select(func.count())
                    .select_from(i)
                    .where(i.c.run_id == r.c.run_id)
                    .scalar_subquery(),
                    digest=select(b.c.digest).where(b.c.run_id == r.c.run_id).scalar_subquery(),
                    position=bindparam("b_position"),
                )
            )
            params = []
            for run_id in runs_here:
                position += 1
                params.append({"b_run_id": run_id, "b_position": position})
            self._many(conn, "run_positions", stmt, params)
        result.touched = set(touched)
        return position

    def _new_actions(
        self, conn: Connection, actions: Mapping[tuple[str, int], ActionRow]
    ) -> list[ActionRow]:
        if not actions:
            return []
        keys = sorted(actions)
        known: set[tuple[str, int]] = set()
        for chunk in _chunks(keys):
            sql = known_actions_sql(len(chunk), conn.dialect.paramstyle)
            flat = tuple(value for key in chunk for value in key)
            for run_id, seq in conn.exec_driver_sql(sql, flat):
                known.add((run_id, seq))
        return [actions[k] for k in keys if k not in known]

    # ------------------------------------------------------------------ retention

    def expired(self, ended_before: datetime, *, limit: int = 500) -> list[RunRow]:
        """Finished runs with a bundle that ended before ``ended_before``, oldest first."""
        r, b = s.runs, s.bundles
        q = (
            select(r)
            .join(b, b.c.run_id == r.c.run_id)
            .where(r.c.ended_at < ended_before, r.c.status.in_(("completed", "failed")))
            .order_by(r.c.ended_at, r.c.run_id)
            .limit(limit)
        )
        with self._read() as conn:
            return [_run_row(row) for row in conn.execute(q)]

    def archive(self, runs: Sequence[ArchivedRun]) -> int:
        """Record ``runs`` as archived and remove them (rows, actions, model use,
        intercepts, bundles) from the read model, in one transaction."""
        if not runs:
            return 0
        try:
            with self._writing() as conn:
                position = int(
                    conn.execute(
                        select(s.head.c.position).where(s.head.c.id == 1).with_for_update()
                    ).scalar_one()
                )
                ins = self._insert(s.archived)
                conn.execute(
                    ins.on_conflict_do_nothing(index_elements=[s.archived.c.run_id]),
                    [vars(a) for a in runs],
                )
                ids = [a.run_id for a in runs]
                delta: dict[tuple[str, str], int] = {}
                for chunk in _chunks(ids):
                    for row in conn.execute(
                        select(s.runs.c.tenant, s.runs.c.agent_id).where(s.runs.c.run_id.in_(chunk))
                    ):
                        delta[(row.tenant, row.agent_id)] = (
                            delta.get((row.tenant, row.agent_id), 0) - 1
                        )
                    for table in (s.actions, s.run_models, s.intercepts, s.bundles, s.runs):
                        conn.execute(delete(table).where(table.c.run_id.in_(chunk)))
                a = s.agents
                for (tenant, agent), n in delta.items():
                    conn.execute(
                        update(a)
                        .where(a.c.tenant == tenant, a.c.agent_id == agent)
                        .values(runs=a.c.runs + n)
                    )
                conn.execute(update(s.head).where(s.head.c.id == 1).values(position=position + 1))
        except SQLAlchemyError as exc:
            raise _wrap("archiving runs", self._label, exc) from exc
        return len(runs)

    def archived(self, run_id: str) -> ArchivedRun | None:
        with self._read() as conn:
            row = conn.execute(select(s.archived).where(s.archived.c.run_id == run_id)).first()
        return None if row is None else ArchivedRun(**row._mapping)

    # ------------------------------------------------------------------ reading

    def _read(self) -> Any:
        return _Reading(self._engine, self._label)

    def _filtered(
        self, q: Select[Any], f: RunFilter, c: Any = None, *, hide: str | None = None
    ) -> Select[Any]:
        """``q`` with the filter's conditions on the run columns ``c`` (``rm_runs``);
        conditions on column ``hide`` go through :meth:`_unindexed` (no index serves them)."""
        c = s.runs.c if c is None else c
        if hide is not None:
            cols = {
                name: c[name] for name in ("status", "agent_id", "tenant", "cost", "started_at")
            }
            cols[hide] = self._unindexed(c[hide])
            c = _Cols(cols)
        if f.status:
            q = q.where(c.status.in_(f.status))
        if f.agent is not None:
            q = q.where(c.agent_id == f.agent)
        if f.tenant is not None:
            q = q.where(c.tenant == f.tenant)
        if f.min_cost is not None:
            q = q.where(c.cost >= f.min_cost)
        if f.since is not None:
            q = q.where(c.started_at >= f.since)
        if f.until is not None:
            q = q.where(c.started_at < f.until)
        return q

    #: A range filter on the column the page is NOT sorted by that matches fewer rows
    #: than this is read through its own index and sorted (instead of walking the sort
    #: order's index past every row the range rejects).
    SELECTIVE_RANGE_ROWS = 10_000

    def _range_is_selective(self, conn: Connection, cond: Any) -> bool:
        """Whether ``cond`` (one range on one indexed column) matches few rows: a count
        bounded by :data:`SELECTIVE_RANGE_ROWS`, so it never reads more index entries."""
        probe = select(literal(1)).select_from(s.runs).where(cond)
        bounded = probe.limit(self.SELECTIVE_RANGE_ROWS).subquery()
        n = conn.execute(select(func.count()).select_from(bounded)).scalar_one()
        return int(n) < self.SELECTIVE_RANGE_ROWS

    def _unindexed(self, col: Any) -> Any:
        """``col`` as an expression of the same type and order that no index serves."""
        if col.name == "cost":
            expr = col.op("+")(0)
        elif self._pg and col.name == "started_at":
            expr = col.op("+")(literal_column("interval '0 seconds'"))
        else:
            expr = func.coalesce(col, col)
        return type_coerce(expr, col.type)

    def runs(self, query: RunQuery) -> RunPage:
        """One page of the registry, newest first (or most expensive first).

        Every filter combination stays on an index: equality filters (status, agent,
        tenant) ride the composite ``(column, sort key)`` indexes in sort order; a range on
        the other column (min cost when sorting by recency, the time window when sorting
        by cost) is first probed, and when it is selective the page is read through that
        range's index and sorted, which planners without range statistics miss.
        """
        r = s.runs
        f = query.filter
        if query.sort == "cost":
            window = [
                cond
                for cond in (
                    r.c.started_at >= f.since if f.since is not None else None,
                    r.c.started_at < f.until if f.until is not None else None,
                )
                if cond is not None
            ]
            other = and_(*window) if window else None
        else:
            other = r.c.cost >= f.min_cost if f.min_cost is not None else None
        with self._read() as conn:
            # The page's run ids come from an index alone (every registry index covers the
            # filter columns); only the page's own rows are then read from the table.
            through_range = other is not None and self._range_is_selective(conn, other)
            sort_col = r.c.cost if query.sort == "cost" else r.c.started_at
            q = self._filtered(
                select(r.c.run_id, r.c.started_at, r.c.cost),
                f,
                hide=sort_col.name if through_range else None,
            )
            # Through a selective range, the sort key is an expression no index serves (in
            # the ORDER BY and in the page bound alike): the planner then takes the range's
            # index behind any equality prefix instead of walking the sort order's index
            # past every row the range rejects.
            first = self._unindexed(sort_col) if through_range else sort_col
            if query.after is not None:
                if query.sort == "cost":
                    cost, run_id = decode_cursor(query.after, "cost", 2)
                    bound: Any = literal(Decimal(cost), s.Money())
                else:
                    ts, run_id = decode_cursor(query.after, "recent", 2)
                    bound = literal(parse_ts(ts), s.UTCDateTime())
                q = q.where(tuple_(first, r.c.run_id) < tuple_(bound, literal(run_id)))
            order = [first.desc(), r.c.run_id.desc()]
            ids_q = q.order_by(*order).limit(query.limit + 1).subquery("page")
            page_sort = ids_q.c.cost if query.sort == "cost" else ids_q.c.started_at
            rows = conn.execute(
                select(r)
                .join(ids_q, ids_q.c.run_id == r.c.run_id)
                .order_by(page_sort.desc(), ids_q.c.run_id.desc())
            ).all()
        ids = [row.run_id for row in rows[: query.limit]]
        full = {row.run_id: row for row in rows}
        page = [_run_row(full[run_id]) for run_id in ids]
        cursor = None
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            cursor = (
                encode_cursor("cost", money_str(last.cost), last.run_id)
                if query.sort == "cost"
                else encode_cursor("recent", iso(last.started_at), last.run_id)
            )
        return RunPage(tuple(page), cursor)

    def count(self, f: RunFilter) -> int:
        with self._read() as conn:
            return int(
                conn.execute(
                    self._filtered(select(func.count()).select_from(s.runs), f)
                ).scalar_one()
            )

    def run(self, run_id: str) -> RunRow | None:
        with self._read() as conn:
            row = conn.execute(select(s.runs).where(s.runs.c.run_id == run_id)).first()
        return None if row is None else _run_row(row)

    def actions(
        self, run_id: str, *, after_seq: int = -1, limit: int | None = None
    ) -> list[ActionRow]:
        a = s.actions
        q = select(a).where(a.c.run_id == run_id, a.c.seq > after_seq).order_by(a.c.seq)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [_action_row(row) for row in conn.execute(q)]

    def intercepts(self, query: InterceptQuery) -> InterceptPage:
        i = s.intercepts
        q = select(i)
        conds = []
        if query.run_id is not None:
            conds.append(i.c.run_id == query.run_id)
        if query.tenant is not None:
            conds.append(i.c.tenant == query.tenant)
        if query.agent is not None:
            conds.append(i.c.agent_id == query.agent)
        if query.severity is not None:
            conds.append(i.c.severity == query.severity)
        if conds:
            q = q.where(and_(*conds))
        total_q = select(func.count()).select_from(i)
        if conds:
            total_q = total_q.where(and_(*conds))
        if query.after is not None:
            ts, key = decode_cursor(query.after, "intercepts", 2)
            q = q.where(
                tuple_(i.c.ts, i.c.intercept_id)
                < tuple_(literal(parse_ts(ts), s.UTCDateTime()), literal(key))
            )
        q = q.order_by(i.c.ts.desc(), i.c.intercept_id.desc()).limit(query.limit + 1)
        with self._read() as conn:
            rows = conn.execute(q).all()
            total = int(conn.execute(total_q).scalar_one())
        items = [_intercept_row(row) for row in rows[: query.limit]]
        cursor = None
        if len(rows) > query.limit:
            last = items[-1]
            cursor = encode_cursor("intercepts", iso(last.ts), last.intercept_id)
        return InterceptPage(tuple(items), cursor, total)

    def summary(self, f: RunFilter) -> RunSummary:
        r = s.runs
        q = self._filtered(
            select(
                r.c.status,
                r.c.currency,
                func.count().label("n"),
                func.sum(r.c.cost).label("cost"),
                func.sum(r.c.actions).label("actions"),
                func.sum(r.c.actions_ok).label("ok"),
                func.sum(r.c.intercepts).label("intercepts"),
            ).group_by(r.c.status, r.c.currency),
            f,
        )
        by_status: dict[str, int] = {}
        cost: dict[str, Decimal] = {}
        runs = actions = ok = intercepts = 0
        with self._read() as conn:
            for row in conn.execute(q):
                runs += int(row.n)
                by_status[row.status] = by_status.get(row.status, 0) + int(row.n)
                if row.currency:
                    cost[row.currency] = cost.get(row.currency, Decimal(0)) + row.cost
                actions += int(row.actions or 0)
                ok += int(row.ok or 0)
                intercepts += int(row.intercepts or 0)
        return RunSummary(runs, by_status, cost, actions, ok, intercepts)

    def costs(self, f: RunFilter) -> CostReport:
        r, m = s.runs, s.run_models
        per_run = self._filtered(
            select(
                r.c.agent_id,
                r.c.currency,
                func.count().label("n"),
                func.sum(r.c.cost).label("cost"),
            ).group_by(r.c.agent_id, r.c.currency),
            f,
        )
        per_agent_use = self._filtered(
            select(
                r.c.agent_id,
                func.sum(m.c.calls).label("calls"),
                func.sum(m.c.input_tokens).label("inp"),
                func.sum(m.c.output_tokens).label("outp"),
                # calls without a price are the model rows without a currency
                func.sum(case((m.c.currency == "", m.c.calls), else_=0)).label("unpriced"),
            )
            .join(m, m.c.run_id == r.c.run_id)
            .group_by(r.c.agent_id),
            f,
        )
        per_model = self._filtered(
            select(
                m.c.provider,
                m.c.model,
                m.c.currency,
                func.count(func.distinct(m.c.run_id)).label("n"),
                func.sum(m.c.calls).label("calls"),
                func.sum(m.c.fallbacks).label("fallbacks"),
                func.sum(m.c.errors).label("errors"),
                func.sum(m.c.input_tokens).label("inp"),
                func.sum(m.c.output_tokens).label("outp"),
                func.sum(m.c.cost).label("cost"),
            )
            .join(r, m.c.run_id == r.c.run_id)
            .group_by(m.c.provider, m.c.model, m.c.currency),
            f,
        )
        served_q = self._filtered(
            select(m.c.provider, m.c.model, m.c.served)
            .distinct()
            .join(r, m.c.run_id == r.c.run_id)
            .where(m.c.served.is_not(None)),
            f,
        )
        with self._read() as conn:
            use = {row.agent_id: row for row in conn.execute(per_agent_use)}
            agent_rows = []
            runs = 0
            for row in conn.execute(per_run):
                runs += int(row.n)
                agent_rows.append((row.agent_id, row.currency, int(row.n), 0, 0, 0, row.cost))
            served: dict[tuple[str, str], set[str]] = {}
            for row in conn.execute(served_q):
                served.setdefault((row.provider, row.model), set()).add(row.served)
            models: dict[str, dict[str, Any]] = {}
            for row in conn.execute(per_model):
                name = f"{row.provider}/{row.model}"
                line = models.setdefault(
                    name,
                    {
                        "runs": 0,
                        "calls": 0,
                        "fallbacks": 0,
                        "errors": 0,
                        "inp": 0,
                        "outp": 0,
                        "cost": {},
                        "unpriced": 0,
                        "served": served.get((row.provider, row.model), set()),
                    },
                )
                # PostgreSQL sums BIGINT columns as NUMERIC: counts come back as ints
                line["runs"] = max(line["runs"], int(row.n))
                line["calls"] += int(row.calls)
                line["fallbacks"] += int(row.fallbacks)
                line["errors"] += int(row.errors)
                line["inp"] += int(row.inp)
                line["outp"] += int(row.outp)
                if row.currency and int(row.calls):
                    line["cost"][row.currency] = (
                        line["cost"].get(row.currency, Decimal(0)) + row.cost
                    )
                elif not row.currency:
                    line["unpriced"] += int(row.calls)
        by_agent = tuple(
            CostLine(
                name=line.name,
                runs=line.runs,
                calls=int(use[line.name].calls) if line.name in use else 0,
                input_tokens=int(use[line.name].inp) if line.name in use else 0,
                output_tokens=int(use[line.name].outp) if line.name in use else 0,
                cost=line.cost,
                unpriced_calls=int(use[line.name].unpriced or 0) if line.name in use else 0,
            )
            for line in merge_cost_lines(agent_rows)
        )
        by_model = tuple(
            CostLine(
                name=name,
                runs=v["runs"],
                calls=v["calls"],
                fallbacks=v["fallbacks"],
                errors=v["errors"],
                input_tokens=v["inp"],
                output_tokens=v["outp"],
                cost=v["cost"],
                served=tuple(sorted(v["served"])),
                unpriced_calls=v["unpriced"],
            )
            for name, v in sorted(models.items())
        )
        return CostReport(
            runs=runs, by_agent=by_agent, by_model=by_model, total=total_cost(by_agent)
        )

    def bundle(self, run_id: str) -> bytes | None:
        """A finished run's bundle bytes (read from the archive folder for a manifest)."""
        b = s.bundles
        with self._read() as conn:
            row = conn.execute(select(b.c.value, b.c.manifest).where(b.c.run_id == run_id)).first()
        if row is None:
            return None
        if row.manifest:
            from fleetledger.processors.archive import load_archived_bundle

            return load_archived_bundle(bytes(row.value))
        return bytes(row.value)

    def bundle_row(self, run_id: str) -> BundleRow | None:
        b = s.bundles
        with self._read() as conn:
            row = conn.execute(select(b).where(b.c.run_id == run_id)).first()
        if row is None:
            return None
        return BundleRow(row.run_id, row.digest, bytes(row.value), bool(row.manifest))

    def agents(
        self, search: str = "", *, tenant: str | None = None, limit: int = 20
    ) -> list[AgentRow]:
        a = s.agents
        q = select(a).where(a.c.agent_id != "", a.c.runs > 0)
        if search:
            q = q.where(func.lower(a.c.agent_id).contains(search.lower(), autoescape=True))
        if tenant is not None:
            q = q.where(a.c.tenant == tenant)
        q = q.order_by(a.c.agent_id, a.c.tenant).limit(limit)
        with self._read() as conn:
            return [AgentRow(row.tenant, row.agent_id, row.runs) for row in conn.execute(q)]

    def position(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(s.head.c.position).where(s.head.c.id == 1)).scalar_one())

    def changes(self, after: int, *, limit: int = 500) -> list[Change]:
        """Rows changed after position ``after``, in position order (at most ``limit``).

        The three tables are read up to the head read first: each statement may see a
        later commit than the one before it, and a row committed after the head was read
        would otherwise be returned while an earlier one of another table was not, so a
        reader resuming from the last position returned would skip it.
        """
        out: list[Change] = []
        with self._read() as conn:
            head = int(conn.execute(select(s.head.c.position).where(s.head.c.id == 1)).scalar_one())
            if head <= after:
                return out
            for row in conn.execute(
                select(s.runs)
                .where(s.runs.c.position > after, s.runs.c.position <= head)
                .order_by(s.runs.c.position)
                .limit(limit)
            ):
                out.append(Change(row.position, "run", row.run_id, _run_row(row)))
            for row in conn.execute(
                select(s.actions)
                .where(s.actions.c.position > after, s.actions.c.position <= head)
                .order_by(s.actions.c.position)
                .limit(limit)
            ):
                out.append(Change(row.position, "action", row.run_id, _action_row(row)))
            for row in conn.execute(
                select(s.intercepts)
                .where(s.intercepts.c.position > after, s.intercepts.c.position <= head)
                .order_by(s.intercepts.c.position)
                .limit(limit)
            ):
                out.append(Change(row.position, "intercept", row.run_id, _intercept_row(row)))
        out.sort(key=lambda c: c.position)
        return out[:limit]

    def table_counts(self) -> dict[str, int]:
        """Rows per table (tests and diagnostics)."""
        with self._read() as conn:
            return {
                t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in s.TABLES
            }

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every projected table, sorted (the contract tests compare these)."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        with self._read() as conn:
            for t in (s.runs, s.actions, s.run_models, s.intercepts, s.bundles, s.agents):
                cols = [c for c in t.c if c.name != "position"]
                rows = conn.execute(select(*cols)).all()
                out[t.name] = sorted(tuple(_plain(v) for v in row) for row in rows)
        return out


def _plain(v: Any) -> Any:
    if isinstance(v, Decimal):
        return money_str(v)
    if isinstance(v, memoryview):
        return bytes(v)
    return v


class _Cols:
    """Attribute access over a mapping of column expressions (for :meth:`ReadStore._filtered`)."""

    def __init__(self, cols: dict[str, Any]) -> None:
        self._cols = cols

    def __getattr__(self, name: str) -> Any:
        return self._cols[name]


class _Reading:
    """A read connection that wraps database errors as :class:`StoreError`."""

    def __init__(self, engine: Engine, label: str) -> None:
        self._engine = engine
        self._label = label
        self._conn: Connection | None = None

    def __enter__(self) -> Connection:
        try:
            self._conn = self._engine.connect()
        except SQLAlchemyError as exc:
            raise _wrap("connecting", self._label, exc) from exc
        return self._conn

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        assert self._conn is not None
        self._conn.close()
        if isinstance(exc, SQLAlchemyError):
            raise _wrap("reading", self._label, exc) from exc


# --------------------------------------------------------------------------- row mapping


def _run_values(run: RunRow) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "tenant": run.tenant,
        "agent_id": run.agent_id,
        "project": run.project,
        "status": run.status,
        "started_at": run.started_at or s.NO_START,
        "ended_at": run.ended_at,
        "duration_ms": run.duration_ms,
        "actions": run.actions,
        "actions_ok": run.actions_ok,
        "events": run.events,
        "through_seq": run.through_seq,
        "cost": run.cost,
        "currency": run.currency,
        "intercepts": 0,
        "digest": None,
        "position": 0,
    }


def _run_row(row: Row[Any]) -> RunRow:
    started = row.started_at
    return RunRow(
        run_id=row.run_id,
        tenant=row.tenant,
        agent_id=row.agent_id,
        project=row.project,
        status=row.status,
        started_at=None if started == s.NO_START else started,
        ended_at=row.ended_at,
        duration_ms=row.duration_ms,
        actions=row.actions,
        actions_ok=row.actions_ok,
        events=row.events,
        through_seq=row.through_seq,
        cost=row.cost,
        currency=row.currency,
        intercepts=row.intercepts,
        digest=row.digest,
        position=row.position,
    )


def _action_values(a: ActionRow, position: int) -> dict[str, Any]:
    return {
        "run_id": a.run_id,
        "seq": a.seq,
        "type": a.type,
        "name": a.name,
        "ts": a.ts,
        "step_id": a.step_id,
        "outcome": a.outcome,
        "cost": a.cost,
        "currency": a.currency,
        "duration_ms": a.duration_ms,
        "provider": a.provider,
        "request_model": a.request_model,
        "response_model": a.response_model,
        "input_tokens": a.input_tokens,
        "output_tokens": a.output_tokens,
        "event": orjson.dumps(a.event).decode(),
        "position": position,
        "event_hash": a.event_hash,
        "prev_hash": a.prev_hash,
        "entry_hash": a.entry_hash,
    }


def _action_row(row: Row[Any]) -> ActionRow:
    return ActionRow(
        run_id=row.run_id,
        seq=row.seq,
        type=row.type,
        name=row.name,
        ts=row.ts,
        step_id=row.step_id,
        outcome=row.outcome,
        cost=row.cost,
        currency=row.currency,
        duration_ms=row.duration_ms,
        provider=row.provider,
        request_model=row.request_model,
        response_model=row.response_model,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        event=orjson.loads(row.event),
        position=row.position,
        event_hash=row.event_hash,
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
    )


def _use_values(u: ModelUse) -> dict[str, Any]:
    return {
        "run_id": u.run_id,
        "provider": u.provider,
        "model": u.model,
        "currency": u.currency,
        "served": u.served,
        "calls": u.calls,
        "fallbacks": u.fallbacks,
        "errors": u.errors,
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cost": u.cost,
    }


def _intercept_values(i: InterceptRow, position: int) -> dict[str, Any]:
    return {
        "intercept_id": i.intercept_id,
        "run_id": i.run_id,
        "kind": i.kind,
        "severity": i.severity,
        "seq": i.seq,
        "reason": i.reason,
        "ts": i.ts,
        "tenant": i.tenant,
        "agent_id": i.agent_id,
        "position": position,
    }


def _intercept_row(row: Row[Any]) -> InterceptRow:
    return InterceptRow(
        intercept_id=row.intercept_id,
        run_id=row.run_id,
        kind=row.kind,
        severity=row.severity,
        seq=row.seq,
        reason=row.reason,
        ts=row.ts,
        tenant=row.tenant,
        agent_id=row.agent_id,
        position=row.position,
    )


def tracked(
    topic: str, partition: int, offset: int, records: Iterable[OutputRecord]
) -> list[TrackedRecord]:
    """Records that all came from one input position (the embedded runtime's batches)."""
    return [TrackedRecord(topic, partition, offset, r) for r in records]
