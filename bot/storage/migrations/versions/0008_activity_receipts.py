"""Activities received: Teams sending a typed message again is recognised by its id, on every instance.

One row per message-like activity (its conversation and id, hashed), kept an hour
(`bot.storage.activity_receipts`). A retry reaches whichever instance the load balancer picks, so the
record is in the shared database, not in an instance's memory.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "activity_receipts",
        sa.Column("key_hash", sa.Text(), primary_key=True),
        sa.Column("received_at", sa.Text(), nullable=False),
    )
    op.create_index("activity_receipts_received", "activity_receipts", ["received_at"])


def downgrade() -> None:
    op.drop_index("activity_receipts_received", table_name="activity_receipts")
    op.drop_table("activity_receipts")
