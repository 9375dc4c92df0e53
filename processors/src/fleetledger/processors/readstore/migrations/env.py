"""Alembic environment of the read model: run with the connection the store passes in."""

from __future__ import annotations

from alembic import context

from fleetledger.processors.readstore.schema import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
