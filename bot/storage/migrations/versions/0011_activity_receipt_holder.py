"""Activity receipts: which process is running the turn, so a copy of a turn whose process died runs.

A receipt was taken when an activity arrived and kept whatever became of its turn: when the process was killed
mid-turn, Teams' copy found the receipt and was answered without a turn, and the user had to type again. The
process running the turn is now named (`holder`); NULL once the turn is done. A copy that finds a holder which
has ended takes the receipt over and runs (`bot.storage.activity_receipts`). Rows from before are done.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("activity_receipts", sa.Column("holder", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("activity_receipts", "holder")
