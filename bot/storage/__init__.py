"""The database (SQLite through sqlite3, PostgreSQL through SQLAlchemy Core), its migrations, instance coordination.

Owns: connections, schema, the data-folder lock, shared jobs and rate limits. May import: nothing (bar bot.clock).
"""
