"""The read model's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Money is exact to 10 fractional digits on both engines: ``NUMERIC(38, 10)`` on
PostgreSQL; on SQLite, which has no decimal type, an integer count of 10^-10 units (so
sums, comparisons and indexes stay exact and fast).  An amount the column cannot hold
(more fractional digits, or beyond +-922,337,203.6854775807 on SQLite and 10^28 on
PostgreSQL) is stored as the nearest one it can, with a warning: the read model is a view
for the console and the CLI, the ledger, totals and bundles keep every amount exact, and
one unusual amount must not stop the projection.  Time is aware UTC: ``TIMESTAMP WITH
TIME ZONE`` on PostgreSQL, UTC text on SQLite.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

from fleetledger.kernel.errors import StoreError

MONEY_SCALE = 10

log = logging.getLogger(__name__)
_INT64 = 2**63


#: The largest amount a Money column holds: scaled int64 on SQLite, NUMERIC(38, 10).
#: (``_MONEY_CONTEXT`` has room for any amount up to them at MONEY_SCALE digits.)
_MONEY_CONTEXT = Context(prec=60, rounding=ROUND_HALF_EVEN)
_SQLITE_MONEY_MAX = Decimal(_INT64 - 1).scaleb(-MONEY_SCALE, context=_MONEY_CONTEXT)
_PG_MONEY_MAX = Decimal(10**38 - 1).scaleb(-MONEY_SCALE, context=_MONEY_CONTEXT)
_MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)


def fit_amount(value: Decimal, limit: Decimal) -> Decimal:
    """The amount a Money column stores for ``value``: itself when it fits, else the
    nearest amount of at most :data:`MONEY_SCALE` fractional digits within +-``limit``
    (half to even)."""
    if value.copy_abs() > limit:
        return limit.copy_sign(value)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -MONEY_SCALE:
        return value
    rounded = value.quantize(_MONEY_QUANTUM, context=_MONEY_CONTEXT)
    return limit.copy_sign(value) if rounded.copy_abs() > limit else rounded


class Money(TypeDecorator[Decimal]):
    """An exact amount (``Decimal``): NUMERIC(38, 10), or scaled BIGINT on SQLite."""

    impl = BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(38, MONEY_SCALE, asdecimal=True))
        return dialect.type_descriptor(BigInteger())

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            value = Decimal(value)
        pg = dialect.name == "postgresql"
        limit = _PG_MONEY_MAX if pg else _SQLITE_MONEY_MAX
        stored = fit_amount(value, limit)
        if stored != value:
            log.warning(
                "amount %s does not fit the %s read model (%d fractional digits, at most %s): "
                "stored as %s; the ledger, totals and bundles keep it exact",
                value,
                dialect.name,
                MONEY_SCALE,
                limit,
                stored,
            )
        return stored if pg else int(stored.scaleb(MONEY_SCALE))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return Decimal(value)
        return Decimal(int(value)).scaleb(-MONEY_SCALE)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime: TIMESTAMPTZ, or naive UTC text on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise StoreError(f"datetime {value.isoformat()} has no time zone; expected UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: ``started_at`` of a run whose ``run_started`` has not arrived (sorts last).
NO_START = datetime(1970, 1, 1, tzinfo=UTC)

#: Prefix of every table (the read model may share a database with other data).
PREFIX = "rm_"
#: Alembic's version table of the read model.
VERSION_TABLE = f"{PREFIX}alembic_version"

metadata = MetaData()

runs = Table(
    f"{PREFIX}runs",
    metadata,
    Column("run_id", String, primary_key=True),
    Column("tenant", String, nullable=False),
    Column("agent_id", String, nullable=False),
    Column("project", String),
    Column("status", String, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("duration_ms", BigInteger),
    Column("actions", Integer, nullable=False),
    Column("actions_ok", Integer, nullable=False),
    Column("events", Integer, nullable=False),
    Column("through_seq", BigInteger, nullable=False),
    Column("cost", Money, nullable=False),
    Column("currency", String),
    Column("intercepts", Integer, nullable=False),
    Column("digest", String),
    Column("position", BigInteger, nullable=False),
)
#: The registry's indexes: (equality column?, sort key, run_id) then every other filter
#: column, so a page is found from the index alone (the rows are read only for the page).
#: Each entry: name -> column names.
RUN_INDEXES: dict[str, tuple[str, ...]] = {
    "ix_rm_runs_recent": ("started_at", "run_id", "cost", "status", "tenant", "agent_id"),
    "ix_rm_runs_cost": ("cost", "run_id", "started_at", "status", "tenant", "agent_id"),
    "ix_rm_runs_tenant_recent": ("tenant", "started_at", "run_id", "cost", "status", "agent_id"),
    "ix_rm_runs_agent_recent": ("agent_id", "started_at", "run_id", "cost", "status", "tenant"),
    "ix_rm_runs_status_recent": ("status", "started_at", "run_id", "cost", "tenant", "agent_id"),
    "ix_rm_runs_tenant_cost": ("tenant", "cost", "run_id", "started_at", "status", "agent_id"),
    "ix_rm_runs_agent_cost": ("agent_id", "cost", "run_id", "started_at", "status", "tenant"),
    "ix_rm_runs_status_cost": ("status", "cost", "run_id", "started_at", "tenant", "agent_id"),
}
for _name, _cols in RUN_INDEXES.items():
    Index(_name, *(runs.c[c] for c in _cols))
Index("ix_rm_runs_position", runs.c.position)
# revision 0002: covers the summary figures (status, currency, sums) without table reads
Index(
    "ix_rm_runs_summary",
    runs.c.status,
    runs.c.currency,
    runs.c.cost,
    runs.c.actions,
    runs.c.actions_ok,
    runs.c.intercepts,
)

actions = Table(
    f"{PREFIX}actions",
    metadata,
    Column("run_id", String, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("type", String, nullable=False),
    Column("name", String, nullable=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("step_id", String),
    Column("outcome", String),
    Column("cost", Money),
    Column("currency", String),
    Column("duration_ms", BigInteger),
    Column("provider", String),
    Column("request_model", String),
    Column("response_model", String),
    Column("input_tokens", BigInteger),
    Column("output_tokens", BigInteger),
    Column("event", Text, nullable=False),
    Column("position", BigInteger, nullable=False),
    # revision 0002: the entry's recorded chain hashes
    Column("event_hash", String),
    Column("prev_hash", String),
    Column("entry_hash", String),
)
Index("ix_rm_actions_position", actions.c.position)

run_models = Table(
    f"{PREFIX}run_models",
    metadata,
    Column("run_id", String, primary_key=True),
    Column("provider", String, primary_key=True),
    Column("model", String, primary_key=True),
    Column("currency", String, primary_key=True),
    Column("served", String),
    Column("calls", Integer, nullable=False),
    Column("fallbacks", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost", Money, nullable=False),
)

intercepts = Table(
    f"{PREFIX}intercepts",
    metadata,
    Column("intercept_id", String, primary_key=True),
    Column("run_id", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("severity", String, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("tenant", String, nullable=False),
    Column("agent_id", String, nullable=False),
    Column("position", BigInteger, nullable=False),
)
Index("ix_rm_intercepts_recent", intercepts.c.ts, intercepts.c.intercept_id)
Index("ix_rm_intercepts_run", intercepts.c.run_id)
Index("ix_rm_intercepts_tenant_recent", intercepts.c.tenant, intercepts.c.ts)
Index("ix_rm_intercepts_position", intercepts.c.position)

bundles = Table(
    f"{PREFIX}bundles",
    metadata,
    Column("run_id", String, primary_key=True),
    Column("digest", String, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("manifest", Boolean, nullable=False),
)

agents = Table(
    f"{PREFIX}agents",
    metadata,
    Column("tenant", String, primary_key=True),
    Column("agent_id", String, primary_key=True),
    Column("runs", Integer, nullable=False),
)
Index("ix_rm_agents_agent", agents.c.agent_id)

archived = Table(
    f"{PREFIX}archived",
    metadata,
    Column("run_id", String, primary_key=True),
    Column("tenant", String, nullable=False),
    Column("agent_id", String, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("digest", String, nullable=False),
    Column("path", Text, nullable=False),
    Column("archived_at", UTCDateTime, nullable=False),
)

tracking = Table(
    f"{PREFIX}tracking",
    metadata,
    Column("consumer", String, primary_key=True),
    Column("topic", String, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

head = Table(
    f"{PREFIX}head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("position", BigInteger, nullable=False),
)

#: Every table of the read model (their names identify a database as a read model).
TABLES = tuple(metadata.sorted_tables)
