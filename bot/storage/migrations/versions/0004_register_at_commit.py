"""PostgreSQL: a register entry written inside a step is chained at that step's commit, in the server.

Since revision 0003 an append is one statement, but the register's advisory lock, taken in it, was
then held to the end of the step's transaction: over the step's remaining statements and its COMMIT,
each a round trip through the bot's busy event loop. Every step of every instance waits for that one
lock (`benchmarks.instances`: held 45 % of the time by one instance, 66 % by two, with a backend
waiting for it most of the time).

Now a step inserts the entry into `register_pending` (no lock), and a deferred constraint trigger
chains it when the transaction commits: it calls `register_append` (0003: lock, read the last entry,
insert with the next seq and the hash) and removes the pending row, all inside the COMMIT. The lock
is held from there to the commit's end, within the server; the chain's order is the commits' order.
Several entries of one step are chained in the order they were written; an entry in a savepoint that
rolls back, or in a step that fails, never reaches the register. A failing chain makes the COMMIT
fail, so the step is undone whole, as before.

SQLite gets the table too (one schema on both backends) but never uses it: its writer lock already
serialises the steps, and the bot chains in Python there.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "register_pending",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("lock_key", sa.BigInteger(), nullable=False),
        sa.Column("genesis", sa.Text(), nullable=False),
        sa.Column("canonical", sa.Text(), nullable=False),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""
        CREATE FUNCTION register_chain_pending() RETURNS trigger
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            PERFORM register_append(NEW.lock_key, NEW.genesis, NEW.canonical);
            DELETE FROM register_pending WHERE id = NEW.id;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE CONSTRAINT TRIGGER register_chain_at_commit AFTER INSERT ON register_pending
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION register_chain_pending()
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER register_chain_at_commit ON register_pending")
        op.execute("DROP FUNCTION register_chain_pending()")
    op.drop_table("register_pending")
