"""The durable outbox: encrypted packages waiting to be mailed, safe across crashes.

A row holds only the finished RFC 5322 message (headers and body without client data, the
client data inside the AES-256 ZIP). The payload is dropped once delivered or given up on.
Mark-then-send: a row is leased (`sending` until `lease_until`, committed) before the transport is
called. A lease that runs out (its worker died) makes the row due again, and it is sent again with
the same Message-ID, so a duplicate is recognisable by the recipient's mail system; a row whose
lease still runs is never touched by anyone else.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum

from bot.database import from_text, note_wipe, to_text, transaction

logger = logging.getLogger(__name__)


class OutboxState(StrEnum):
    """Where a queued mail is."""

    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class OutboxItem:
    """One mail to deliver."""

    message_id: str
    reference: str
    payload: bytes = field(repr=False)
    attempts: int
    queued_at: dt.datetime


class Outbox:
    """Queue operations on the `outbox` table."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def enqueue(self, *, message_id: str, reference: str, payload: bytes, now: dt.datetime) -> bool:
        """Queue a message for immediate delivery (idempotent per Message-ID); False when it was queued before.

        `reference` names what the mail is about: a referral, or a breach report (`DL-...`), which the
        delivery worker sends like any other row and, finding no referral for it, only marks.
        """
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO outbox (message_id, reference, payload, state, queued_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (message_id, reference, payload, OutboxState.QUEUED.value, to_text(now), to_text(now)),
        )
        return cursor.rowcount == 1

    def claim_due(self, now: dt.datetime, lease: dt.timedelta, limit: int = 10) -> list[OutboxItem]:
        """Lease up to `limit` due rows (committed) and return them; expired leases are due again first."""
        with transaction(self._db):
            expired = self._db.execute(
                "UPDATE outbox SET state = ?, lease_until = NULL WHERE state = ? AND lease_until < ?",
                (OutboxState.QUEUED.value, OutboxState.SENDING.value, to_text(now)),
            ).rowcount
            if expired:
                logger.warning("outbox: %d mail(s) whose worker stopped mid-send are due again", expired)
            rows = self._db.execute(
                "SELECT message_id, reference, payload, attempts, queued_at FROM outbox"
                " WHERE state = ? AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
                (OutboxState.QUEUED.value, to_text(now), limit),
            ).fetchall()
            for row in rows:
                self._db.execute(
                    "UPDATE outbox SET state = ?, attempts = attempts + 1, lease_until = ? WHERE message_id = ?",
                    (OutboxState.SENDING.value, to_text(now + lease), row["message_id"]),
                )
        return [
            OutboxItem(
                message_id=row["message_id"],
                reference=row["reference"],
                payload=row["payload"],
                attempts=row["attempts"] + 1,
                queued_at=from_text(row["queued_at"]),
            )
            for row in rows
        ]

    def mark_delivered(self, message_id: str, now: dt.datetime) -> None:
        """Delivered: drop the payload (and, once committed, its old pages from the WAL), keep the fact."""
        note_wipe(self._db)
        self._db.execute(
            "UPDATE outbox SET state = ?, payload = NULL, finished_at = ?, last_error = NULL, lease_until = NULL"
            " WHERE message_id = ?",
            (OutboxState.DELIVERED.value, to_text(now), message_id),
        )

    def reschedule(self, message_id: str, next_attempt_at: dt.datetime, error: str) -> None:
        """A transient failure: try again at `next_attempt_at`."""
        self._db.execute(
            "UPDATE outbox SET state = ?, next_attempt_at = ?, last_error = ?, lease_until = NULL WHERE message_id = ?",
            (OutboxState.QUEUED.value, to_text(next_attempt_at), error, message_id),
        )

    def mark_failed(self, message_id: str, now: dt.datetime, error: str) -> None:
        """Given up: drop the payload (WAL included, as above); the referrer is told to refer again."""
        note_wipe(self._db)
        self._db.execute(
            "UPDATE outbox SET state = ?, payload = NULL, finished_at = ?, last_error = ?, lease_until = NULL"
            " WHERE message_id = ?",
            (OutboxState.FAILED.value, to_text(now), error, message_id),
        )

    def next_due_at(self) -> dt.datetime | None:
        """When the earliest queued row is due (or a lease runs out), None when nothing waits."""
        row = self._db.execute(
            "SELECT MIN(CASE WHEN state = ? THEN next_attempt_at ELSE lease_until END) AS due FROM outbox"
            " WHERE state IN (?, ?)",
            (OutboxState.QUEUED.value, OutboxState.QUEUED.value, OutboxState.SENDING.value),
        ).fetchone()
        return None if row is None or row["due"] is None else from_text(row["due"])

    def counts(self) -> dict[str, int]:
        """Rows per state, for status and health checks."""
        rows = self._db.execute("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state").fetchall()
        return {str(row["state"]): int(row["n"]) for row in rows}
