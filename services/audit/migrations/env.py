"""Alembic's entry: migrations run on the connection the audit store hands over, recorded
in a version table of their own (registry and audit may share a database)."""

from __future__ import annotations

from alembic import context

from services.audit.store import VERSION_TABLE, Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=Base.metadata, render_as_batch=True, version_table=VERSION_TABLE
)
with context.begin_transaction():
    context.run_migrations()
