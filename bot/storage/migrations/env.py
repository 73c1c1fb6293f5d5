"""Alembic's entry: runs the revisions on the connection `bot.storage.schema_migration` hands over (never its own)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
