"""The database (SQLAlchemy Core, async: SQLite via aiosqlite, PostgreSQL via asyncpg), migrations, coordination.

Owns: connections, schema, the data-folder lock, shared jobs and rate limits. May import: nothing (bar bot.clock).
"""
