"""Several instances on one database: periodic jobs claimed once per period, shared rate limits and
refusal bursts, and an index for every lookup (a pass over the referrals stays flat as they grow).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("next_run_at", sa.Text(), nullable=False),
        sa.Column("last_started_at", sa.Text(), nullable=False),
        sa.Column("last_instance", sa.Text(), nullable=False),
    )
    op.create_table(
        "rate_events",
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("at", sa.Text(), nullable=False),
    )
    op.create_index("rate_events_key", "rate_events", ["kind", "key_hash", "at"])
    op.create_index("rate_events_at", "rate_events", ["at"])
    op.create_table(
        "refusal_bursts",
        sa.Column("burst_key", sa.Text(), primary_key=True),
        sa.Column("started_at", sa.Text(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
    )
    op.create_index("refusal_bursts_started", "refusal_bursts", ["started_at"])
    for name, table, columns in (
        ("referrals_message_id", "referrals", ["message_id"]),
        ("referrals_state", "referrals", ["state", "queued_at"]),
        ("drafts_state", "drafts", ["state", "updated_at"]),
        ("outbox_reference", "outbox", ["reference", "state"]),
        ("message_outbox_slot", "message_outbox", ["slot"]),
        ("corrections_reference", "corrections", ["reference", "item"]),
        ("corrections_open", "corrections", ["new_reference", "kind"]),
        ("ocmw_links_conversation", "ocmw_links", ["conversation_id"]),
        ("register_at", "register", ["at"]),
        ("register_event", "register", ["event", "seq"]),
        ("register_links_expires", "register_links", ["expires_at"]),
        ("pairing_codes_expires", "pairing_codes", ["expires_at"]),
    ):
        op.create_index(name, table, columns)
