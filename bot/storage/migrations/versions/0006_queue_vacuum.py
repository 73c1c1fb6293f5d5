"""PostgreSQL: the queue tables are vacuumed after a few hundred changed rows, whatever their size.

A message, a mail or a click goes through its table in a few writes (queued, sending, sent; a rate
event inserted, later pruned), and each write leaves a dead row version and, for an indexed column
such as `state`, a dead index entry. The claims find the due rows through those indexes with bitmap
scans, which visit every dead entry until a vacuum removes it (bitmap scans never mark entries dead
on the way). By default autovacuum waits until a fifth of the table is dead, so with the history a
table keeps, a claim grew with the number of referrals: 20 000 dead entries made the Teams-message
claim 1.6 ms, the costliest statement per referral (`benchmarks.instances --statements`). With a
fixed threshold of 500 dead rows a vacuum follows a few hundred referrals at any table size. SQLite
needs nothing: it has no row versions.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: Rows pass through these tables; their history stays (outboxes) or is pruned (rate events).
QUEUE_TABLES = ("message_outbox", "outbox", "rate_events")
#: Dead rows that start a vacuum, at any table size (autovacuum's own default is 50 plus 20 % of the table).
DEAD_ROWS_BEFORE_VACUUM = 500


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in QUEUE_TABLES:
        op.execute(f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0,"
                   f" autovacuum_vacuum_threshold = {DEAD_ROWS_BEFORE_VACUUM},"
                   " autovacuum_analyze_scale_factor = 0.02)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in QUEUE_TABLES:
        op.execute(f"ALTER TABLE {table} RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,"
                   " autovacuum_analyze_scale_factor)")
