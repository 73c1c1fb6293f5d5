"""PostgreSQL: a register entry appended in one statement, so the register's lock is held for one round trip.

`register_append(lock_key, genesis, canonical)` takes the register's advisory lock, reads the last
entry (a statement of its own inside the function, so it sees what the previous holder committed),
and inserts the new entry: its fields are `canonical` (the JSON the hash covers, made by
`bot.evidence.register.canonical_fields`), its hash SHA-256 over the previous hash and `canonical`, exactly as
`bot.evidence.register.entry_hash` computes it. Before, the lock was held from `pg_advisory_xact_lock` over
three more round trips (read, insert, commit), each waiting for the bot's event loop: with two busy
instances it was held 81-84 % of the time (`benchmarks.instances`), 14-19 % since. SQLite needs nothing: its
writer lock already serialises appends, and the bot hashes in Python there.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: The register's columns besides seq and the two hashes: what `canonical` holds (format 2).
_FIELDS = ("at", "event", "actor_id", "actor_name", "protocol_id", "reference", "purpose", "legal_basis",
           "data_categories", "recipient", "recipient_category", "consent_version", "detail", "entry_format")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    columns = ", ".join(_FIELDS)
    values = ", ".join(f"entry.{name}" for name in _FIELDS)
    op.execute(f"""
        CREATE FUNCTION register_append(lock_key bigint, genesis text, canonical text) RETURNS text
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            last_seq integer;
            previous text;
            digest text;
        BEGIN
            PERFORM pg_advisory_xact_lock(lock_key);
            SELECT seq, hash INTO last_seq, previous FROM register ORDER BY seq DESC LIMIT 1;
            previous := COALESCE(previous, genesis);
            digest := encode(sha256(convert_to(previous || canonical, 'UTF8')), 'hex');
            INSERT INTO register (seq, {columns}, previous_hash, hash)
                SELECT COALESCE(last_seq, 0) + 1, {values}, previous, digest
                FROM json_populate_record(NULL::register, canonical::json) AS entry;
            RETURN digest;
        END $$
    """)  # noqa: S608 - the column names are this module's constants  # nosec B608


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION register_append(bigint, text, text)")
