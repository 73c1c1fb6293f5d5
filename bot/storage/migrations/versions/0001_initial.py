"""The schema as it was when Alembic took over (the bot's SQLite version 2): drafts, referrals, outboxes, register.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drafts",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("owner_id", sa.Text(), nullable=False),
        sa.Column("conversation_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("protocol_id", sa.Text()),
        sa.Column("consent_json", sa.Text()),
        sa.Column("sealed_details", sa.LargeBinary()),
        sa.Column("reference", sa.Text(), nullable=False, unique=True),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Text(), nullable=False),
        sa.Column("conversation_ref", sa.Text()),
        sa.Column("card_activity_id", sa.Text()),
        sa.Column("lang", sa.Text()),
        sa.Column("sender_team", sa.Text()),
    )
    op.create_index("drafts_updated_at", "drafts", ["updated_at"])
    op.create_table(
        "referrals",
        sa.Column("reference", sa.Text(), primary_key=True),
        sa.Column("protocol_id", sa.Text(), nullable=False),
        sa.Column("referrer_id", sa.Text(), nullable=False),
        sa.Column("referrer_name", sa.Text(), nullable=False),
        sa.Column("conversation_id", sa.Text(), nullable=False),
        sa.Column("conversation_ref", sa.Text(), nullable=False),
        sa.Column("card_activity_id", sa.Text()),
        sa.Column("lang", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("key_version", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("queued_at", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.Text()),
        sa.Column("failure_reason", sa.Text()),
        sa.Column("parent_reference", sa.Text()),
        sa.Column("corrected_item", sa.Text()),
        sa.Column("ocmw_card_activity_id", sa.Text()),
        sa.Column("acknowledged_by_id", sa.Text()),
        sa.Column("acknowledged_by", sa.Text()),
        sa.Column("acknowledged_at", sa.Text()),
        sa.Column("outcome_by_id", sa.Text()),
        sa.Column("outcome_by", sa.Text()),
        sa.Column("outcome_at", sa.Text()),
        sa.Column("deleted_by", sa.Text()),
        sa.Column("deleted_at", sa.Text()),
        sa.Column("reported_items", sa.Text(), nullable=False, server_default=""),
        sa.Column("reminded_ocmw_at", sa.Text()),
        sa.Column("reminded_referrer_at", sa.Text()),
        sa.Column("withdrawn_by_id", sa.Text()),
        sa.Column("withdrawn_by", sa.Text()),
        sa.Column("withdrawn_at", sa.Text()),
        sa.Column("data_categories", sa.Text()),
        sa.Column("consent_version", sa.Text(), nullable=False, server_default=""),
        sa.Column("recipient", sa.Text(), nullable=False, server_default=""),
        sa.Column("sender_team", sa.Text()),
    )
    op.create_index("referrals_parent", "referrals", ["parent_reference"])
    op.create_table(
        "reminders",
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("at", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("subject", "kind", name="reminders_pkey"),
    )
    op.create_index("referrals_referrer", "referrals", ["referrer_id", "queued_at"])
    op.create_index("referrals_protocol_state", "referrals", ["protocol_id", "state"])
    op.create_table(
        "pairing_codes",
        sa.Column("code_hash", sa.Text(), primary_key=True),
        sa.Column("protocol_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Text(), nullable=False),
        sa.Column("used_at", sa.Text()),
    )
    op.create_table(
        "ocmw_links",
        sa.Column("protocol_id", sa.Text(), primary_key=True),
        sa.Column("conversation_id", sa.Text(), nullable=False),
        sa.Column("conversation_ref", sa.Text(), nullable=False),
        sa.Column("linked_by_id", sa.Text(), nullable=False),
        sa.Column("linked_by", sa.Text(), nullable=False),
        sa.Column("linked_at", sa.Text(), nullable=False),
    )
    op.create_table(
        "corrections",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("item", sa.Text(), nullable=False),
        sa.Column("requested_by_id", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.Text(), nullable=False),
        sa.Column("new_reference", sa.Text()),
        sa.Column("kind", sa.Text(), nullable=False, server_default="reported"),
    )
    op.create_table(
        "outbox",
        sa.Column("message_id", sa.Text(), primary_key=True),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary()),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("queued_at", sa.Text(), nullable=False),
        sa.Column("next_attempt_at", sa.Text(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("finished_at", sa.Text()),
        sa.Column("lease_until", sa.Text()),
    )
    op.create_index("outbox_due", "outbox", ["state", "next_attempt_at"])
    op.create_table(
        "message_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("conversation_key", sa.Text(), nullable=False),
        sa.Column("conversation_ref", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("activity_id", sa.Text()),
        sa.Column("slot", sa.Text()),
        sa.Column("reference", sa.Text()),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("queued_at", sa.Text(), nullable=False),
        sa.Column("next_attempt_at", sa.Text(), nullable=False),
        sa.Column("lease_until", sa.Text()),
        sa.Column("last_error", sa.Text()),
        sa.Column("finished_at", sa.Text()), sqlite_autoincrement=True,
    )
    op.create_index("message_outbox_due", "message_outbox", ["state", "next_attempt_at"])
    op.create_index("message_outbox_conversation", "message_outbox", ["conversation_key", "state", "id"])
    op.create_index("message_outbox_reference", "message_outbox", ["reference", "state"])
    op.create_table(
        "card_slots",
        sa.Column("slot", sa.Text(), primary_key=True),
        sa.Column("activity_id", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Text(), nullable=False),
    )
    op.create_table(
        "register",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.Text(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.Text(), nullable=False),
        sa.Column("actor_name", sa.Text(), nullable=False),
        sa.Column("protocol_id", sa.Text(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.Column("data_categories", sa.Text(), nullable=False),
        sa.Column("recipient_category", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("previous_hash", sa.Text(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False, server_default=""),
        sa.Column("recipient", sa.Text(), nullable=False, server_default=""),
        sa.Column("consent_version", sa.Text(), nullable=False, server_default=""),
        sa.Column("entry_format", sa.Text(), nullable=False, server_default="1"), sqlite_autoincrement=True,
    )
    op.create_index("register_reference", "register", ["reference", "at"])
    op.create_index("register_protocol", "register", ["protocol_id", "seq"])
    op.create_table(
        "register_links",
        sa.Column("token_hash", sa.Text(), primary_key=True),
        sa.Column("dpo_id", sa.Text(), nullable=False),
        sa.Column("dpo_name", sa.Text(), nullable=False),
        sa.Column("protocol_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Text(), nullable=False),
    )
