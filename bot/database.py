"""The one SQLite database of the embedded mode: opened once, schema created on first start.

`secure_delete` overwrites deleted content with zeros, so a wiped draft does not linger in free
pages of the file; WAL with `synchronous=FULL` makes every commit durable before we answer. The WAL
itself keeps old page versions until a checkpoint, so after a wipe it is checkpointed and truncated
(`Database.wiped`), and it is private from its first byte (`open_database`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
_SCHEMA = """
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


class Database(sqlite3.Connection):
    """The bot's connection: after client data was wiped, it empties the WAL once the wipe is committed.

    In WAL mode an UPDATE that wipes a draft appends new page versions to `-wal`; the old versions,
    with the sealed data, stay in the file until a checkpoint copies the pages back and the WAL is
    reset. `secure_delete` only zeroes the main file. So a wipe marks the WAL dirty, and the
    checkpoint (TRUNCATE: the file is cut to zero bytes) runs outside any transaction: at once when
    the wipe committed on its own, else when the outermost `transaction()` ends, else from the
    periodic sweep (`truncate_wal`).

    What this cannot guarantee: while another connection (`register export`, `check`) holds a read
    snapshot, the checkpoint cannot reset the WAL; it reports busy, the old frames stay until a
    later attempt succeeds (the sweep retries every minute). A truncated file's blocks are freed,
    not overwritten: the file system or an SSD may keep them, still sealed with the draft key.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wal_dirty = False

    def wiped(self) -> None:
        """Client data was just overwritten or deleted: empty the WAL as soon as that is committed."""
        self.wal_dirty = True
        if not self.in_transaction:
            self.truncate_wal()

    def truncate_wal(self) -> bool:
        """Checkpoint and truncate the WAL if a wipe left it dirty; True when nothing is left to do.

        Never waits for other connections (busy_timeout 0 for the call): the event loop must not
        stall behind a long read elsewhere; a busy checkpoint stays due and is tried again later.
        """
        if not self.wal_dirty:
            return True
        if self.in_transaction:
            return False  # inside a transaction SQLite refuses; the transaction's end tries again
        timeout = int(self.execute("PRAGMA busy_timeout").fetchone()[0])
        self.execute("PRAGMA busy_timeout = 0")
        try:
            busy = int(self.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
        except sqlite3.OperationalError as error:
            logger.warning("WAL checkpoint failed; retried later", extra={"error": type(error).__name__})
            return False
        finally:
            self.execute(f"PRAGMA busy_timeout = {timeout}")
        if busy:
            logger.warning("WAL checkpoint busy (another connection is reading); retried later")
            return False
        self.wal_dirty = False
        return True


def note_wipe(connection: sqlite3.Connection) -> None:
    """Tell the connection that client data was wiped (see `Database.wiped`); other connections ignore it."""
    if isinstance(connection, Database):
        connection.wiped()


def truncate_wal(connection: sqlite3.Connection) -> bool:
    """Retry a checkpoint an earlier wipe could not complete; True when the WAL holds no wiped data."""
    return connection.truncate_wal() if isinstance(connection, Database) else True


def open_database(path: Path) -> sqlite3.Connection:
    """Open (and if needed create) the database with the pragmas the bot relies on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _make_private(path)
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, factory=Database)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA secure_delete = ON")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    connection.executescript(_SCHEMA)
    if 0 < version < 2:
        _upgrade_to_2(connection)
    _add_missing_columns(connection)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return connection


#: Nullable columns added after a table first shipped; a database that lacks one gets it at open.
_ADDED_COLUMNS = (("drafts", "sender_team", "TEXT"), ("referrals", "sender_team", "TEXT"))


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    """Add `_ADDED_COLUMNS` a database does not have yet: idempotent, so no schema version is needed for them."""
    with transaction(connection):
        for table, column, kind in _ADDED_COLUMNS:
            present = {row["name"] for row in connection.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                # Names and types come from the constant above, never from input.
                connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _make_private(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it, and make any existing one 0600.

    SQLite creates `-wal` and `-shm` with the database file's own mode (and restores bits the
    umask took), so once the main file is 0600 they are 0600 from their first byte, whatever the
    process umask; the umask itself is left alone (it is process-wide, and other threads create
    files too). `-wal`/`-shm` left by an older version with wider modes are narrowed here.
    """
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(descriptor)
    path.chmod(0o600)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.chmod(0o600)


#: Tables and columns that hold stored Teams conversation references.
REFERENCE_COLUMNS = (("drafts", "id", "conversation_ref"), ("referrals", "reference", "conversation_ref"),
                     ("ocmw_links", "protocol_id", "conversation_ref"))


def _upgrade_to_2(connection: sqlite3.Connection) -> None:
    """From the botbuilder-era schema: references readable by the Agents SDK, OCMW card ids as slots, leases,
    reminders in their own table, who withdrew consent when, and the register's evidence fields.

    botbuilder stored the tenant as `conversation.tenantID`, which the Agents SDK drops without a
    word (proactive messages would then go out without a tenant). The OCMW card of a referral is
    now edited through the message outbox's slot `ocmw:<reference>`. A referral queued before has
    no recorded categories (`data_categories` NULL: unknown, `bot.delivery` says so if it leaves
    now); the register's existing entries are not rewritten (their hashes are the evidence).
    """
    with transaction(connection):
        connection.execute("ALTER TABLE outbox ADD COLUMN lease_until TEXT")
        connection.execute("ALTER TABLE corrections ADD COLUMN kind TEXT NOT NULL DEFAULT 'reported'")
        for column in ("withdrawn_by_id", "withdrawn_by", "withdrawn_at", "data_categories"):
            connection.execute(f"ALTER TABLE referrals ADD COLUMN {column} TEXT")
        for table, column in (("referrals", "consent_version"), ("referrals", "recipient"), ("register", "purpose"),
                              ("register", "recipient"), ("register", "consent_version")):
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
        # The entries written so far keep their hashes: they stay format 1 (see `bot.register`).
        connection.execute("ALTER TABLE register ADD COLUMN entry_format TEXT NOT NULL DEFAULT '1'")
        for column, kind in (("reminded_ocmw_at", "ack_ocmw"), ("reminded_referrer_at", "ack_referrer")):
            connection.execute(
                f"INSERT OR IGNORE INTO reminders (subject, kind, at) SELECT reference, '{kind}', {column}"  # noqa: S608  # nosec B608
                f" FROM referrals WHERE {column} IS NOT NULL"
            )
        for table, key, column in REFERENCE_COLUMNS:
            rows = connection.execute(
                f"SELECT {key} AS k, {column} AS ref FROM {table} WHERE {column} LIKE '%tenantID%'"  # noqa: S608  # nosec B608
            ).fetchall()
            for row in rows:
                connection.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?",  # noqa: S608  # nosec B608
                                   (upgrade_reference(row["ref"]), row["k"]))
        connection.execute(
            "INSERT OR IGNORE INTO card_slots (slot, activity_id, updated_at)"
            " SELECT 'ocmw:' || reference, ocmw_card_activity_id, COALESCE(sent_at, queued_at) FROM referrals"
            " WHERE ocmw_card_activity_id IS NOT NULL"
        )


def upgrade_reference(stored: str) -> str:
    """A botbuilder-era reference with `conversation.tenantId` instead of `tenantID`; others unchanged."""
    try:
        data = json.loads(stored)
    except ValueError:
        return stored
    conversation = data.get("conversation") if isinstance(data, dict) else None
    if not isinstance(conversation, dict) or "tenantID" not in conversation:
        return stored
    tenant = conversation.pop("tenantID")
    conversation.setdefault("tenantId", tenant)
    return json.dumps(data, ensure_ascii=False)


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """All statements inside commit together or not at all; nests (SAVEPOINTs)."""
    name = f"sp_{secrets.token_hex(6)}"
    connection.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        connection.execute(f"ROLLBACK TO {name}")
        connection.execute(f"RELEASE {name}")
        truncate_wal(connection)
        raise
    connection.execute(f"RELEASE {name}")
    truncate_wal(connection)  # a wipe inside is committed now (a no-op unless one happened)


def to_text(moment: dt.datetime) -> str:
    """A timezone-aware time as sortable UTC text."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def from_text(text: str) -> dt.datetime:
    """The inverse of `to_text`."""
    return dt.datetime.fromisoformat(text)
