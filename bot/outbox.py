"""The durable outbox: encrypted packages waiting to be mailed, safe across crashes.

A row holds only the finished RFC 5322 message (headers and body without client data, the
client data inside the AES-256 ZIP). The payload is dropped once delivered or given up on.
Mark-then-send: a row is marked `sending` (committed) before the transport is called; after a
crash such rows go back to `queued` and are sent again with the same Message-ID, so a duplicate
is recognisable by the recipient's mail system.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum

from bot.database import from_text, to_text, transaction


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

    def enqueue(self, *, message_id: str, reference: str, payload: bytes, now: dt.datetime) -> None:
        """Queue a message for immediate delivery (idempotent per Message-ID)."""
        self._db.execute(
            "INSERT OR IGNORE INTO outbox (message_id, reference, payload, state, queued_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (message_id, reference, payload, OutboxState.QUEUED.value, to_text(now), to_text(now)),
        )

    def recover(self) -> int:
        """After a restart: rows left `sending` by a crash are queued again."""
        cursor = self._db.execute(
            "UPDATE outbox SET state = ? WHERE state = ?", (OutboxState.QUEUED.value, OutboxState.SENDING.value)
        )
        return cursor.rowcount

    def claim_due(self, now: dt.datetime, limit: int = 10) -> list[OutboxItem]:
        """Mark up to `limit` due rows `sending` (committed) and return them."""
        with transaction(self._db):
            rows = self._db.execute(
                "SELECT message_id, reference, payload, attempts, queued_at FROM outbox"
                " WHERE state = ? AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
                (OutboxState.QUEUED.value, to_text(now), limit),
            ).fetchall()
            for row in rows:
                self._db.execute(
                    "UPDATE outbox SET state = ?, attempts = attempts + 1 WHERE message_id = ?",
                    (OutboxState.SENDING.value, row["message_id"]),
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
        """Delivered: drop the payload, keep the fact."""
        self._db.execute(
            "UPDATE outbox SET state = ?, payload = NULL, finished_at = ?, last_error = NULL WHERE message_id = ?",
            (OutboxState.DELIVERED.value, to_text(now), message_id),
        )

    def reschedule(self, message_id: str, next_attempt_at: dt.datetime, error: str) -> None:
        """A transient failure: try again at `next_attempt_at`."""
        self._db.execute(
            "UPDATE outbox SET state = ?, next_attempt_at = ?, last_error = ? WHERE message_id = ?",
            (OutboxState.QUEUED.value, to_text(next_attempt_at), error, message_id),
        )

    def mark_failed(self, message_id: str, now: dt.datetime, error: str) -> None:
        """Given up: drop the payload; the referrer is told to refer again."""
        self._db.execute(
            "UPDATE outbox SET state = ?, payload = NULL, finished_at = ?, last_error = ? WHERE message_id = ?",
            (OutboxState.FAILED.value, to_text(now), error, message_id),
        )

    def next_due_at(self) -> dt.datetime | None:
        """When the earliest queued row is due, or None when nothing is queued."""
        row = self._db.execute(
            "SELECT MIN(next_attempt_at) AS due FROM outbox WHERE state = ?", (OutboxState.QUEUED.value,)
        ).fetchone()
        return None if row is None or row["due"] is None else from_text(row["due"])

    def counts(self) -> dict[str, int]:
        """Rows per state, for status and health checks."""
        rows = self._db.execute("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state").fetchall()
        return {str(row["state"]): int(row["n"]) for row in rows}
