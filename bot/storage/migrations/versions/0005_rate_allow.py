"""PostgreSQL: a rate-limit check in one statement, so a click costs one round trip instead of five.

`rate_allow(lock_key, kind, key_hash, since, at, max_count)` takes the key's advisory lock, counts
the key's events after `since` (a statement of its own inside the function, so it sees what the
lock's previous holder committed) and, below `max_count`, records one at `at`; it answers whether
the click is allowed. Called on its own (autocommit) the lock ends with the statement. Before, the
check was a transaction of its own: BEGIN, the lock, the count, the insert, COMMIT, each a round
trip through the bot's event loop, five times per referral (`benchmarks.instances --statements`: a
third of the statements the server ran per referral). SQLite needs nothing: the bot counts and
inserts in one statement under its writer lock.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""
        CREATE FUNCTION rate_allow(lock_key bigint, event_kind text, event_key text, since text, event_at text,
                                   max_count integer) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            counted bigint;
        BEGIN
            PERFORM pg_advisory_xact_lock(lock_key);
            SELECT COUNT(*) INTO counted FROM rate_events
                WHERE kind = event_kind AND key_hash = event_key AND at > since;
            IF counted >= max_count THEN
                RETURN false;
            END IF;
            INSERT INTO rate_events (kind, key_hash, at) VALUES (event_kind, event_key, event_at);
            RETURN true;
        END $$
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION rate_allow(bigint, text, text, text, text, integer)")
