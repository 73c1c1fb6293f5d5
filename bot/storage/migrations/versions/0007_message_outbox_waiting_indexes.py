"""The Teams-message outbox: the worker's lookups go through indexes of the waiting messages only.

A message passes through `queued`, `sending` and `sent` (each a new row version on PostgreSQL), and
the claim, "when is the next one due" and the lease check found the few waiting messages through
indexes holding an entry for every version of every message, `message_outbox_due (state,
next_attempt_at)` and `message_outbox_conversation (conversation_key, state, id)`. Until a vacuum,
the dead entries stayed in them, and the bitmap scans the planner chose read every one of them on
every call without ever marking them dead: at 20 000 messages since the last vacuum a claim read
~600 buffers, 4-7 ms under two instances' load. Partial indexes hold entries only for the versions
that wait (queued, or being sent), the statements name those states in their text (so the planner
knows an index covers them: a parameter could be any state), and the index scans it chooses mark
what they find dead, so the next call skips it. SQLite uses the same indexes the same way.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: name -> (columns, the rows it holds); the states as `bot.delivery.message_outbox.MessageState` spells them.
INDEXES = {
    "message_outbox_queued": (["next_attempt_at"], "state = 'queued'"),
    "message_outbox_leased": (["lease_until"], "state = 'sending'"),
    "message_outbox_waiting": (["conversation_key", "id"], "state IN ('queued', 'sending')"),
}


def upgrade() -> None:
    for name, (columns, rows) in INDEXES.items():
        op.create_index(name, "message_outbox", columns, postgresql_where=sa.text(rows), sqlite_where=sa.text(rows))
    op.drop_index("message_outbox_conversation", table_name="message_outbox")


def downgrade() -> None:
    op.create_index("message_outbox_conversation", "message_outbox", ["conversation_key", "state", "id"])
    for name in INDEXES:
        op.drop_index(name, table_name="message_outbox")
