"""Actions keep the chain hashes of their ledger entry (event hash, previous entry hash,
entry hash), so a run still going shows and checks its chain; an index covering the
summary figures (status, currency and the summed columns), so the console's figures
over a large registry read the index alone.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = ("event_hash", "prev_hash", "entry_hash")
SUMMARY = ("status", "currency", "cost", "actions", "actions_ok", "intercepts")


def upgrade() -> None:
    with op.batch_alter_table("rm_actions") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.String, nullable=True))
    op.create_index("ix_rm_runs_summary", "rm_runs", list(SUMMARY))


def downgrade() -> None:
    op.drop_index("ix_rm_runs_summary", "rm_runs")
    with op.batch_alter_table("rm_actions") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
