"""The read model: runs, actions, per-run model use, intercepts, bundles, agents, archived
runs, tracking records and the change-feed head.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fleetledger.processors.readstore.schema import Money, UTCDateTime

#: The registry's covering indexes as this revision creates them (frozen here: a later
#: change of indexes is a later revision).
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

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rm_runs",
        sa.Column("run_id", sa.String, primary_key=True),
        sa.Column("tenant", sa.String, nullable=False),
        sa.Column("agent_id", sa.String, nullable=False),
        sa.Column("project", sa.String),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime),
        sa.Column("duration_ms", sa.BigInteger),
        sa.Column("actions", sa.Integer, nullable=False),
        sa.Column("actions_ok", sa.Integer, nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("through_seq", sa.BigInteger, nullable=False),
        sa.Column("cost", Money, nullable=False),
        sa.Column("currency", sa.String),
        sa.Column("intercepts", sa.Integer, nullable=False),
        sa.Column("digest", sa.String),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    for name, cols in RUN_INDEXES.items():
        op.create_index(name, "rm_runs", list(cols))
    op.create_index("ix_rm_runs_position", "rm_runs", ["position"])

    op.create_table(
        "rm_actions",
        sa.Column("run_id", sa.String, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("type", sa.String, nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("ts", UTCDateTime, nullable=False),
        sa.Column("step_id", sa.String),
        sa.Column("outcome", sa.String),
        sa.Column("cost", Money),
        sa.Column("currency", sa.String),
        sa.Column("duration_ms", sa.BigInteger),
        sa.Column("provider", sa.String),
        sa.Column("request_model", sa.String),
        sa.Column("response_model", sa.String),
        sa.Column("input_tokens", sa.BigInteger),
        sa.Column("output_tokens", sa.BigInteger),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_rm_actions_position", "rm_actions", ["position"])

    op.create_table(
        "rm_run_models",
        sa.Column("run_id", sa.String, primary_key=True),
        sa.Column("provider", sa.String, primary_key=True),
        sa.Column("model", sa.String, primary_key=True),
        sa.Column("currency", sa.String, primary_key=True),
        sa.Column("served", sa.String),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("fallbacks", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost", Money, nullable=False),
    )

    op.create_table(
        "rm_intercepts",
        sa.Column("intercept_id", sa.String, primary_key=True),
        sa.Column("run_id", sa.String, nullable=False),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("severity", sa.String, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("ts", UTCDateTime, nullable=False),
        sa.Column("tenant", sa.String, nullable=False),
        sa.Column("agent_id", sa.String, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_rm_intercepts_recent", "rm_intercepts", ["ts", "intercept_id"])
    op.create_index("ix_rm_intercepts_run", "rm_intercepts", ["run_id"])
    op.create_index("ix_rm_intercepts_tenant_recent", "rm_intercepts", ["tenant", "ts"])
    op.create_index("ix_rm_intercepts_position", "rm_intercepts", ["position"])

    op.create_table(
        "rm_bundles",
        sa.Column("run_id", sa.String, primary_key=True),
        sa.Column("digest", sa.String, nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("manifest", sa.Boolean, nullable=False),
    )

    op.create_table(
        "rm_agents",
        sa.Column("tenant", sa.String, primary_key=True),
        sa.Column("agent_id", sa.String, primary_key=True),
        sa.Column("runs", sa.Integer, nullable=False),
    )
    op.create_index("ix_rm_agents_agent", "rm_agents", ["agent_id"])

    op.create_table(
        "rm_archived",
        sa.Column("run_id", sa.String, primary_key=True),
        sa.Column("tenant", sa.String, nullable=False),
        sa.Column("agent_id", sa.String, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("digest", sa.String, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("archived_at", UTCDateTime, nullable=False),
    )

    op.create_table(
        "rm_tracking",
        sa.Column("consumer", sa.String, primary_key=True),
        sa.Column("topic", sa.String, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )

    head = op.create_table(
        "rm_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "position": 0}])


def downgrade() -> None:
    for table in (
        "rm_head",
        "rm_tracking",
        "rm_archived",
        "rm_agents",
        "rm_bundles",
        "rm_intercepts",
        "rm_run_models",
        "rm_actions",
        "rm_runs",
    ):
        op.drop_table(table)
