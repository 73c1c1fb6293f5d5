"""Referrals that left the dialogue: the lasting record, which holds no client data at all."""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from bot.database import from_text, to_text


class ReferralState(StrEnum):
    """What happened to a referral after the referrer pressed "send"."""

    QUEUED = "queued"  # in the outbox, not yet accepted by the mail system
    SENT = "sent"  # accepted by the mail system (or written to the outbox folder)
    FAILED = "failed"  # given up: the referrer was told it was NOT delivered


@dataclass(frozen=True)
class SentReferral:
    """What the bot remembers of a referral, and where to tell the referrer about it."""

    reference: str
    protocol_id: str
    referrer_id: str
    referrer_name: str
    conversation_id: str
    conversation_ref: str  # serialized Teams conversation reference, for proactive messages
    card_activity_id: str | None  # the card to update in place when the state changes
    lang: str
    state: ReferralState
    key_version: str
    message_id: str
    created_at: dt.datetime
    queued_at: dt.datetime
    sent_at: dt.datetime | None = None
    failure_reason: str | None = None


class ReferralStore:
    """Referrals in SQLite, by reference."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def add(self, referral: SentReferral) -> None:
        """Record a referral (the reference is unique)."""
        self._db.execute(
            "INSERT INTO referrals (reference, protocol_id, referrer_id, referrer_name, conversation_id,"
            " conversation_ref, card_activity_id, lang, state, key_version, message_id, created_at, queued_at,"
            " sent_at, failure_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                referral.reference,
                referral.protocol_id,
                referral.referrer_id,
                referral.referrer_name,
                referral.conversation_id,
                referral.conversation_ref,
                referral.card_activity_id,
                referral.lang,
                referral.state.value,
                referral.key_version,
                referral.message_id,
                to_text(referral.created_at),
                to_text(referral.queued_at),
                None if referral.sent_at is None else to_text(referral.sent_at),
                referral.failure_reason,
            ),
        )

    def get(self, reference: str) -> SentReferral | None:
        """The referral with this reference, or None."""
        row = self._db.execute("SELECT * FROM referrals WHERE reference = ?", (reference,)).fetchone()
        return None if row is None else _from_row(row)

    def by_message_id(self, message_id: str) -> SentReferral | None:
        """The referral whose mail has this Message-ID."""
        row = self._db.execute("SELECT * FROM referrals WHERE message_id = ?", (message_id,)).fetchone()
        return None if row is None else _from_row(row)

    def mark_sent(self, reference: str, at: dt.datetime) -> None:
        """The mail system accepted the referral."""
        self._db.execute(
            "UPDATE referrals SET state = ?, sent_at = ? WHERE reference = ? AND state = ?",
            (ReferralState.SENT.value, to_text(at), reference, ReferralState.QUEUED.value),
        )

    def mark_failed(self, reference: str, reason: str) -> None:
        """Given up on; `reason` is safe to show to support (no client data)."""
        self._db.execute(
            "UPDATE referrals SET state = ?, failure_reason = ? WHERE reference = ? AND state = ?",
            (ReferralState.FAILED.value, reason, reference, ReferralState.QUEUED.value),
        )


def _from_row(row: sqlite3.Row) -> SentReferral:
    return SentReferral(
        reference=row["reference"],
        protocol_id=row["protocol_id"],
        referrer_id=row["referrer_id"],
        referrer_name=row["referrer_name"],
        conversation_id=row["conversation_id"],
        conversation_ref=row["conversation_ref"],
        card_activity_id=row["card_activity_id"],
        lang=row["lang"],
        state=ReferralState(row["state"]),
        key_version=row["key_version"],
        message_id=row["message_id"],
        created_at=from_text(row["created_at"]),
        queued_at=from_text(row["queued_at"]),
        sent_at=None if row["sent_at"] is None else from_text(row["sent_at"]),
        failure_reason=row["failure_reason"],
    )
