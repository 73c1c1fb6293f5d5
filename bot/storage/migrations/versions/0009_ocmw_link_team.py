"""The Teams team of an OCMW's linked channel: Teams says what happens to a team in its General channel.

When the app is added to the team again, or the team is unarchived or restored, the activity names the
team (`channelData.team.id`), not the linked channel; this column finds the link from it. Links made
before have none (NULL) and are found by their own channel's id.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ocmw_links", sa.Column("team_id", sa.Text(), nullable=True))
    op.create_index("ocmw_links_team", "ocmw_links", ["team_id"])


def downgrade() -> None:
    op.drop_index("ocmw_links_team", table_name="ocmw_links")
    op.drop_column("ocmw_links", "team_id")
