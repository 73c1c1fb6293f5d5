"""The database (SQLAlchemy Core on SQLite or PostgreSQL), its migrations, and coordination between instances.

Owns: connections, schema, the data-folder lock, shared jobs and rate limits. May import: nothing (bar bot.clock).
"""
