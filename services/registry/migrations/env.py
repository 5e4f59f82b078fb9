"""Alembic's entry: migrations run on the connection the registry store hands over."""

from __future__ import annotations

from alembic import context

from services.registry.store import Base

connection = context.config.attributes["connection"]
# Batch mode lets ALTERs run on SQLite, which cannot alter most things in place.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
