"""The outboxes: the workers' lookups go through indexes of the waiting rows only.

A Teams message passes through `queued`, `sending` and `sent`, a mail through `queued`, `sending` and
`delivered` (each a new row version on PostgreSQL), and the workers' lookups (the claim, "when is the
next one due", the expired leases, the mails waiting for a lane) found the few waiting rows through
indexes holding an entry for every version of every row: `message_outbox_due (state,
next_attempt_at)`, `message_outbox_conversation (conversation_key, state, id)`, `outbox_due (state,
next_attempt_at)`. Until a vacuum, the dead entries stayed in them, and the bitmap scans the planner
chose read every one of them on every call without ever marking them dead: at 20 000 messages since
the last vacuum a Teams-message claim read ~600 buffers (4-7 ms under two instances' load), the mail
outbox's next due time ~500. Partial indexes hold entries only for the versions that wait (queued, or
being sent); the statements name those states in their text (so the planner knows an index covers
them: a parameter could be any state), and the index scans it chooses mark what they find dead, so
the next call skips it. SQLite uses the same indexes the same way.

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

#: (table, name, columns, the rows it holds); the states as the outboxes' state enums spell them.
INDEXES = (
    ("message_outbox", "message_outbox_queued", ["next_attempt_at"], "state = 'queued'"),
    ("message_outbox", "message_outbox_leased", ["lease_until"], "state = 'sending'"),
    ("message_outbox", "message_outbox_waiting", ["conversation_key", "id"], "state IN ('queued', 'sending')"),
    ("outbox", "outbox_queued", ["next_attempt_at"], "state = 'queued'"),
    ("outbox", "outbox_leased", ["lease_until"], "state = 'sending'"),
)


def upgrade() -> None:
    for table, name, columns, rows in INDEXES:
        op.create_index(name, table, columns, postgresql_where=sa.text(rows), sqlite_where=sa.text(rows))
    op.drop_index("message_outbox_conversation", table_name="message_outbox")


def downgrade() -> None:
    op.create_index("message_outbox_conversation", "message_outbox", ["conversation_key", "state", "id"])
    for table, name, _columns, _rows in INDEXES:
        op.drop_index(name, table_name=table)
