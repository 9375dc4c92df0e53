"""Actions keep the chain hashes of their ledger entry (event hash, previous entry hash,
entry hash), so a run still going shows and checks its chain.

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


def upgrade() -> None:
    with op.batch_alter_table("rm_actions") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.String, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rm_actions") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
