"""Databases made before migrations were Alembic's: SQLite files that record their version in `user_version`.

Version 1 is the botbuilder era, version 2 the schema the bot had when Alembic took over (the
tables of revision 0001, `sender_team` columns added at open since). Such a file is brought to
version 2 here and then stamped at revision 0001, from where Alembic goes on. The DDL below is
frozen history: it never changes, later changes are Alembic revisions.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from bot.storage.database import upgrade_reference

#: The schema as version 2 created it (CREATE ... IF NOT EXISTS: tables a version-1 file lacks).
VERSION_2_SCHEMA = """
CREATE TABLE IF NOT EXISTS drafts (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    state TEXT NOT NULL,
    protocol_id TEXT,
    consent_json TEXT,
    sealed_details BLOB,
    reference TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    conversation_ref TEXT,
    card_activity_id TEXT,
    lang TEXT,
    sender_team TEXT
);
CREATE INDEX IF NOT EXISTS drafts_updated_at ON drafts (updated_at);
CREATE TABLE IF NOT EXISTS referrals (
    reference TEXT PRIMARY KEY,
    protocol_id TEXT NOT NULL,
    referrer_id TEXT NOT NULL,
    referrer_name TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    conversation_ref TEXT NOT NULL,
    card_activity_id TEXT,
    lang TEXT NOT NULL,
    state TEXT NOT NULL,
    key_version TEXT NOT NULL,
    message_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    queued_at TEXT NOT NULL,
    sent_at TEXT,
    failure_reason TEXT,
    parent_reference TEXT,
    corrected_item TEXT,
    ocmw_card_activity_id TEXT,
    acknowledged_by_id TEXT,
    acknowledged_by TEXT,
    acknowledged_at TEXT,
    outcome_by_id TEXT,
    outcome_by TEXT,
    outcome_at TEXT,
    deleted_by TEXT,
    deleted_at TEXT,
    reported_items TEXT NOT NULL DEFAULT '',
    reminded_ocmw_at TEXT,
    reminded_referrer_at TEXT,
    withdrawn_by_id TEXT,
    withdrawn_by TEXT,
    withdrawn_at TEXT,
    data_categories TEXT,
    consent_version TEXT NOT NULL DEFAULT '',
    recipient TEXT NOT NULL DEFAULT '',
    sender_team TEXT
);
CREATE INDEX IF NOT EXISTS referrals_parent ON referrals (parent_reference);
CREATE TABLE IF NOT EXISTS reminders (
    subject TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (subject, kind)
);
CREATE INDEX IF NOT EXISTS referrals_referrer ON referrals (referrer_id, queued_at);
CREATE INDEX IF NOT EXISTS referrals_protocol_state ON referrals (protocol_id, state);
CREATE TABLE IF NOT EXISTS pairing_codes (
    code_hash TEXT PRIMARY KEY,
    protocol_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT
);
CREATE TABLE IF NOT EXISTS ocmw_links (
    protocol_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    conversation_ref TEXT NOT NULL,
    linked_by_id TEXT NOT NULL,
    linked_by TEXT NOT NULL,
    linked_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS corrections (
    id TEXT PRIMARY KEY,
    reference TEXT NOT NULL,
    item TEXT NOT NULL,
    requested_by_id TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    new_reference TEXT,
    kind TEXT NOT NULL DEFAULT 'reported'
);
CREATE TABLE IF NOT EXISTS outbox (
    message_id TEXT PRIMARY KEY,
    reference TEXT NOT NULL,
    payload BLOB,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    queued_at TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT,
    finished_at TEXT,
    lease_until TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS message_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_key TEXT NOT NULL,
    conversation_ref TEXT NOT NULL,
    action TEXT NOT NULL,
    content TEXT NOT NULL,
    activity_id TEXT,
    slot TEXT,
    reference TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    queued_at TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    lease_until TEXT,
    last_error TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS message_outbox_due ON message_outbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS message_outbox_conversation ON message_outbox (conversation_key, state, id);
CREATE INDEX IF NOT EXISTS message_outbox_reference ON message_outbox (reference, state);
CREATE TABLE IF NOT EXISTS card_slots (
    slot TEXT PRIMARY KEY,
    activity_id TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS register (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    protocol_id TEXT NOT NULL,
    reference TEXT NOT NULL,
    legal_basis TEXT NOT NULL,
    data_categories TEXT NOT NULL,
    recipient_category TEXT NOT NULL,
    detail TEXT NOT NULL,
    previous_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    purpose TEXT NOT NULL DEFAULT '',
    recipient TEXT NOT NULL DEFAULT '',
    consent_version TEXT NOT NULL DEFAULT '',
    entry_format TEXT NOT NULL DEFAULT '1'
);
CREATE INDEX IF NOT EXISTS register_reference ON register (reference, at);
CREATE INDEX IF NOT EXISTS register_protocol ON register (protocol_id, seq);
CREATE TABLE IF NOT EXISTS register_links (
    token_hash TEXT PRIMARY KEY,
    dpo_id TEXT NOT NULL,
    dpo_name TEXT NOT NULL,
    protocol_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
"""

#: Tables and columns that hold stored Teams conversation references.
REFERENCE_COLUMNS = (("drafts", "id", "conversation_ref"), ("referrals", "reference", "conversation_ref"),
                     ("ocmw_links", "protocol_id", "conversation_ref"))
#: Nullable columns version 2 added when the bot opened a file that lacked them.
_ADDED_COLUMNS = (("drafts", "sender_team", "TEXT"), ("referrals", "sender_team", "TEXT"))


def user_version(connection: Connection) -> int:
    """SQLite's `user_version`: 0 for a new file (or one Alembic manages), 1 or 2 for the older bot's."""
    return int(connection.exec_driver_sql("PRAGMA user_version").scalar_one())


def has_tables(connection: Connection) -> bool:
    """True when the file holds the bot's tables (a legacy file) rather than nothing at all."""
    found = connection.exec_driver_sql(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'referrals'").scalar_one()
    return bool(found)


def upgrade_to_version_2(connection: Connection) -> None:
    """Bring a version-1 or version-2 file to the full version-2 schema (in the caller's transaction)."""
    version = user_version(connection)
    for statement in VERSION_2_SCHEMA.split(";"):
        if statement.strip():
            connection.exec_driver_sql(statement)
    if version < 2:
        _upgrade_1_to_2(connection)
    for table, column, kind in _ADDED_COLUMNS:
        present = {row[1] for row in connection.exec_driver_sql(f"PRAGMA table_info({table})")}
        if column not in present:
            # Names and types come from the constant above, never from input.
            connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    connection.exec_driver_sql("PRAGMA user_version = 0")  # from now on Alembic's table says the version

def _upgrade_1_to_2(connection: Connection) -> None:
    """From the botbuilder-era schema: references readable by the Agents SDK, OCMW card ids as slots, leases,
    reminders in their own table, who withdrew consent when, and the register's evidence fields.

    botbuilder stored the tenant as `conversation.tenantID`, which the Agents SDK drops without a
    word (proactive messages would then go out without a tenant). The OCMW card of a referral is
    now edited through the message outbox's slot `ocmw:<reference>`. A referral queued before has
    no recorded categories (`data_categories` NULL: unknown, `bot.delivery.mail_delivery` says so if it leaves
    now); the register's existing entries are not rewritten (their hashes are the evidence).
    """
    connection.exec_driver_sql("ALTER TABLE outbox ADD COLUMN lease_until TEXT")
    connection.exec_driver_sql("ALTER TABLE corrections ADD COLUMN kind TEXT NOT NULL DEFAULT 'reported'")
    for column in ("withdrawn_by_id", "withdrawn_by", "withdrawn_at", "data_categories"):
        connection.exec_driver_sql(f"ALTER TABLE referrals ADD COLUMN {column} TEXT")
    for table, column in (("referrals", "consent_version"), ("referrals", "recipient"), ("register", "purpose"),
                          ("register", "recipient"), ("register", "consent_version")):
        connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
    # The entries written so far keep their hashes: they stay format 1 (see `bot.evidence.register`).
    connection.exec_driver_sql("ALTER TABLE register ADD COLUMN entry_format TEXT NOT NULL DEFAULT '1'")
    for column, kind in (("reminded_ocmw_at", "ack_ocmw"), ("reminded_referrer_at", "ack_referrer")):
        connection.exec_driver_sql(
            f"INSERT OR IGNORE INTO reminders (subject, kind, at) SELECT reference, '{kind}', {column}"  # noqa: S608  # nosec B608
            f" FROM referrals WHERE {column} IS NOT NULL"
        )
    for table, key, column in REFERENCE_COLUMNS:
        rows = connection.exec_driver_sql(
            f"SELECT {key}, {column} FROM {table} WHERE {column} LIKE '%tenantID%'"  # noqa: S608  # nosec B608
        ).fetchall()
        for row_key, stored in rows:
            connection.execute(text(f"UPDATE {table} SET {column} = :value WHERE {key} = :key"),  # noqa: S608  # nosec B608
                               {"value": upgrade_reference(stored), "key": row_key})
    connection.exec_driver_sql(
        "INSERT OR IGNORE INTO card_slots (slot, activity_id, updated_at)"
        " SELECT 'ocmw:' || reference, ocmw_card_activity_id, COALESCE(sent_at, queued_at) FROM referrals"
        " WHERE ocmw_card_activity_id IS NOT NULL"
    )
