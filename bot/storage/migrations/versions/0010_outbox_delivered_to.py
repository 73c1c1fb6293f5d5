"""The mail outbox: the recipients who already have a mail that others refused.

A mail with several recipients (the breach report to both DPOs) may be taken for one and refused for the
other at RCPT. The addresses that took it are kept here (one a line), so a retry goes only to the others;
NULL: nobody has it yet.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("delivered_to", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox", "delivered_to")
