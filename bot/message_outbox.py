"""The durable outbox of Teams messages: every card, text and card edit the bot sends on its own.

A service queues a message in the same transaction as the state change that causes it (an
acknowledgement and the referrer's notice commit together, or neither does); a worker
(`bot.message_delivery`) sends it later, retries what Teams refuses for now, and marks it sent
only after Teams accepted it. Messages to one conversation go out in the order they were queued.

A posted card that will be edited later gets a *slot* (e.g. ``ocmw:VD-...``): the worker stores the
id Teams gives the post under that name, and an edit queued for the slot is sent to that id, or
posted afresh when the card is gone. A row is leased while it is sent; a lease that expires
(the process died) makes the row due again, and nobody else touches a leased row.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from bot.chat_messages import MessageContent, conversation_key
from bot.database import from_text, to_text, transaction

logger = logging.getLogger(__name__)


class MessageState(StrEnum):
    """Where a queued Teams message is."""

    QUEUED = "queued"
    SENDING = "sending"  # leased by a worker until `lease_until`
    SENT = "sent"
    FAILED = "failed"  # given up after the horizon, or refused for good


class MessageAction(StrEnum):
    """Post a new message, or edit one."""

    POST = "post"
    UPDATE = "update"


@dataclass(frozen=True)
class QueuedMessage:
    """One message to send."""

    id: int
    conversation_ref: str
    action: MessageAction
    content: MessageContent
    activity_id: str | None  # the message to edit (an update with a known id)
    slot: str | None  # where the posted id is kept, or which card an update edits
    reference: str | None  # the referral it is about (status shows a message given up on)
    attempts: int
    queued_at: dt.datetime


@dataclass(frozen=True)
class StuckMessages:
    """What `python -m bot check` and `/readyz` report."""

    given_up: int
    waiting: int  # queued for longer than asked
    oldest_waiting_since: dt.datetime | None


_COLUMNS = ("id, conversation_ref, action, content, activity_id, slot, reference, attempts, queued_at")


class MessageOutbox:
    """Queue operations on `message_outbox` and `card_slots`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        #: Called after each message is queued (the worker's `wake`); the caller's transaction
        #: commits before the worker runs, as no await lies between the two.
        self.on_queued: Callable[[], None] = lambda: None

    # -- queueing (inside the caller's transaction) ----------------------------------------------

    def post(
        self, conversation_ref: str, content: MessageContent, *, now: dt.datetime, reference: str | None = None,
        slot: str | None = None,
    ) -> int:
        """Queue a new message; with `slot`, its id is kept for later edits."""
        return self._insert(conversation_ref, MessageAction.POST, content, now, reference=reference, slot=slot)

    def update(
        self, conversation_ref: str, content: MessageContent, *, now: dt.datetime, activity_id: str | None = None,
        slot: str | None = None, reference: str | None = None,
    ) -> int:
        """Queue an edit of message `activity_id`, or of the card kept under `slot`."""
        if (activity_id is None) == (slot is None):
            raise ValueError("an edit names the message or its slot")
        return self._insert(conversation_ref, MessageAction.UPDATE, content, now, reference=reference, slot=slot,
                            activity_id=activity_id)

    def has_slot(self, slot: str) -> bool:
        """True when a card was ever queued under `slot` (posted or not yet)."""
        found = self._db.execute("SELECT 1 FROM card_slots WHERE slot = ?", (slot,)).fetchone()
        if found is not None:
            return True
        return self._db.execute(
            "SELECT 1 FROM message_outbox WHERE slot = ? AND action = ? LIMIT 1", (slot, MessageAction.POST.value)
        ).fetchone() is not None

    def _insert(
        self, conversation_ref: str, action: MessageAction, content: MessageContent, now: dt.datetime, *,
        reference: str | None, slot: str | None, activity_id: str | None = None,
    ) -> int:
        self.on_queued()
        cursor = self._db.execute(
            "INSERT INTO message_outbox (conversation_key, conversation_ref, action, content, activity_id, slot,"
            " reference, state, attempts, queued_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
            (conversation_key(conversation_ref), conversation_ref, action.value, content.to_json(), activity_id, slot,
             reference, MessageState.QUEUED.value, to_text(now), to_text(now)),
        )
        return int(cursor.lastrowid or 0)

    # -- the worker ------------------------------------------------------------------------------

    def claim_due(self, now: dt.datetime, lease: dt.timedelta, limit: int = 20) -> list[QueuedMessage]:
        """Lease up to `limit` due messages, at most the first unsent one of each conversation.

        A message waits while an earlier one to its conversation is queued or being sent, so
        Teams shows them in order; a message given up on no longer holds the others back.
        """
        with transaction(self._db):
            expired = self._db.execute(
                "UPDATE message_outbox SET state = ?, lease_until = NULL WHERE state = ? AND lease_until < ?",
                (MessageState.QUEUED.value, MessageState.SENDING.value, to_text(now)),
            ).rowcount
            if expired:
                logger.warning("message outbox: %d Teams message(s) whose worker stopped mid-send are due again",
                               expired)
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM message_outbox AS m WHERE state = ? AND next_attempt_at <= ?"  # noqa: S608  # nosec B608
                " AND NOT EXISTS (SELECT 1 FROM message_outbox AS e WHERE e.conversation_key = m.conversation_key"
                " AND e.id < m.id AND e.state IN (?, ?)) ORDER BY id LIMIT ?",
                (MessageState.QUEUED.value, to_text(now), MessageState.QUEUED.value, MessageState.SENDING.value,
                 limit),
            ).fetchall()
            for row in rows:
                self._db.execute(
                    "UPDATE message_outbox SET state = ?, attempts = attempts + 1, lease_until = ? WHERE id = ?",
                    (MessageState.SENDING.value, to_text(now + lease), row["id"]),
                )
        return [_message(row) for row in rows]

    def slot_activity_id(self, slot: str) -> str | None:
        """The id of the card kept under `slot`, once Teams has given one."""
        row = self._db.execute("SELECT activity_id FROM card_slots WHERE slot = ?", (slot,)).fetchone()
        return None if row is None else row["activity_id"]

    def mark_sent(self, message_id: int, now: dt.datetime, *, slot: str | None, activity_id: str | None) -> None:
        """Teams accepted it: keep the fact (not the content) and the posted id under its slot."""
        with transaction(self._db):
            self._db.execute(
                "UPDATE message_outbox SET state = ?, content = '', finished_at = ?, last_error = NULL,"
                " lease_until = NULL WHERE id = ?",
                (MessageState.SENT.value, to_text(now), message_id),
            )
            if slot is not None and activity_id:
                self._db.execute(
                    "INSERT INTO card_slots (slot, activity_id, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (slot) DO UPDATE SET activity_id = excluded.activity_id,"
                    " updated_at = excluded.updated_at",
                    (slot, activity_id, to_text(now)),
                )

    def repost(self, message_id: int, now: dt.datetime) -> None:
        """The card to edit is gone (or was never posted): post the new card instead, at once."""
        self._db.execute(
            "UPDATE message_outbox SET action = ?, activity_id = NULL, state = ?, next_attempt_at = ?,"
            " lease_until = NULL WHERE id = ?",
            (MessageAction.POST.value, MessageState.QUEUED.value, to_text(now), message_id),
        )

    def reschedule(self, message_id: int, next_attempt_at: dt.datetime, error: str) -> None:
        """Not accepted for now: try again at `next_attempt_at`."""
        self._db.execute(
            "UPDATE message_outbox SET state = ?, next_attempt_at = ?, last_error = ?, lease_until = NULL"
            " WHERE id = ?",
            (MessageState.QUEUED.value, to_text(next_attempt_at), error[:200], message_id),
        )

    def mark_failed(self, message_id: int, now: dt.datetime, error: str) -> None:
        """Given up: drop the content, keep the fact and the reason (no client data in either)."""
        self._db.execute(
            "UPDATE message_outbox SET state = ?, content = '', finished_at = ?, last_error = ?, lease_until = NULL"
            " WHERE id = ?",
            (MessageState.FAILED.value, to_text(now), error[:200], message_id),
        )

    def next_due_at(self) -> dt.datetime | None:
        """When the earliest queued message is due (or a lease runs out), None when nothing waits."""
        row = self._db.execute(
            "SELECT MIN(CASE WHEN state = ? THEN next_attempt_at ELSE lease_until END) AS due FROM message_outbox"
            " WHERE state IN (?, ?)",
            (MessageState.QUEUED.value, MessageState.QUEUED.value, MessageState.SENDING.value),
        ).fetchone()
        return None if row is None or row["due"] is None else from_text(row["due"])

    # -- what is visible -------------------------------------------------------------------------

    def given_up_for(self, references: list[str]) -> set[str]:
        """Which of these referrals have a Teams message the bot gave up on."""
        if not references:
            return set()
        marks = ", ".join("?" for _ in references)
        rows = self._db.execute(
            f"SELECT DISTINCT reference FROM message_outbox WHERE state = ? AND reference IN ({marks})",  # noqa: S608  # nosec B608
            (MessageState.FAILED.value, *references),
        ).fetchall()
        return {str(row["reference"]) for row in rows}

    def stuck(
        self, now: dt.datetime, waiting_longer_than: dt.timedelta, given_up_within: dt.timedelta = dt.timedelta(days=7)
    ) -> StuckMessages:
        """Messages given up on lately, and messages still waiting after `waiting_longer_than`."""
        given_up = self._db.execute(
            "SELECT COUNT(*) AS n FROM message_outbox WHERE state = ? AND finished_at >= ?",
            (MessageState.FAILED.value, to_text(now - given_up_within)),
        ).fetchone()["n"]
        waiting = self._db.execute(
            "SELECT COUNT(*) AS n, MIN(queued_at) AS oldest FROM message_outbox WHERE state IN (?, ?)"
            " AND queued_at < ?",
            (MessageState.QUEUED.value, MessageState.SENDING.value, to_text(now - waiting_longer_than)),
        ).fetchone()
        oldest = waiting["oldest"]
        return StuckMessages(int(given_up), int(waiting["n"]), None if oldest is None else from_text(oldest))

    def counts(self) -> dict[str, int]:
        """Messages per state."""
        rows = self._db.execute("SELECT state, COUNT(*) AS n FROM message_outbox GROUP BY state").fetchall()
        return {str(row["state"]): int(row["n"]) for row in rows}


def _message(row: sqlite3.Row) -> QueuedMessage:
    return QueuedMessage(
        id=int(row["id"]),
        conversation_ref=str(row["conversation_ref"]),
        action=MessageAction(row["action"]),
        content=MessageContent.from_json(row["content"]),
        activity_id=row["activity_id"],
        slot=row["slot"],
        reference=row["reference"],
        attempts=int(row["attempts"]) + 1,
        queued_at=from_text(row["queued_at"]),
    )
