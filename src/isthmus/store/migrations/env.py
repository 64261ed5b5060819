"""Alembic environment: isthmus passes its own connection in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from isthmus.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `isthmus migrate`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
