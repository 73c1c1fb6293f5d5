"""The durable outbox of Teams messages: every card, text and card edit the bot sends on its own.

A service queues a message in the same transaction as the state change that causes it (an
acknowledgement and the referrer's notice commit together, or neither does); a worker
(`bot.delivery.message_delivery`) sends it later, retries what Teams refuses for now, and marks it sent
only after Teams accepted it. Messages to one conversation go out in the order they were queued.

A posted card that will be edited later gets a *slot* (e.g. ``ocmw:VD-...``): the worker stores the
id Teams gives the post under that name, and an edit queued for the slot is sent to that id, or
posted afresh when the card is gone. A row is leased while it is sent; a lease that expires
(the process died) makes the row due again, and nobody else touches a leased row. Each mark after a
send is a compare-and-set on the lease it was sent under: a worker paused past its lease, whose row
another instance took and recorded meanwhile, changes nothing with its late mark.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from bot.delivery.chat_messages import MessageContent, conversation_key
from bot.delivery.outbox_due import (
    NextDue,
    first_lease_end,
    lease_statement,
    lease_values,
    mark_under_lease,
    next_due_in,
    next_due_of,
    requeue_every_lease,
    requeue_expired_leases,
)
from bot.storage.database import Database, Row, from_text, to_text

logger = logging.getLogger(__name__)


class MessageState(StrEnum):
    """Where a queued Teams message is."""

    QUEUED = "queued"
    SENDING = "sending"  # leased by a worker until `lease_until`
    SENT = "sent"
    FAILED = "failed"  # given up after the horizon, or refused for good


#: The worker's lookups name the waiting states in their text, not as parameters: only then can the
#: database use the indexes that hold the waiting messages alone (revision 0007).
_QUEUED = f"'{MessageState.QUEUED.value}'"
_SENDING = f"'{MessageState.SENDING.value}'"
_WAITING = f"state IN ({_QUEUED}, {_SENDING})"


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
    lease_until: dt.datetime  # the lease it was claimed under: every mark after the send holds it


@dataclass(frozen=True)
class StuckMessages:
    """What `python -m bot check` and `/readyz` report."""

    given_up: int
    waiting: int  # queued for longer than asked
    oldest_waiting_since: dt.datetime | None


_COLUMNS = ("id, conversation_ref, action, content, activity_id, slot, reference, attempts, queued_at")
#: The ids of the due messages that are first of their conversation among those waiting. The conversations with
#: waiting messages are found one after the other (each the next key in `message_outbox_waiting`), and
#: each one's first waiting message by one more look in it: the claim reads a few index entries per
#: conversation, not every message of a backlog (a busy OCMW channel), whatever its length.
_WAITING_CONVERSATIONS = (  # module constants only; the values are bound parameters
    "WITH RECURSIVE waiting (conversation_key) AS ("  # noqa: S608  # nosec B608
    f" SELECT MIN(conversation_key) FROM message_outbox WHERE {_WAITING}"
    f" UNION ALL SELECT (SELECT MIN(conversation_key) FROM message_outbox WHERE {_WAITING}"
    " AND conversation_key > waiting.conversation_key) FROM waiting WHERE waiting.conversation_key IS NOT NULL)"
)
#: A waiting conversation's (`waiting.conversation_key`) first waiting message: the only one of it a claim may take.
_FIRST_OF_ITS_CONVERSATION = (  # module constants only
    f"(SELECT MIN(e.id) FROM message_outbox AS e WHERE e.{_WAITING}"  # noqa: S608  # nosec B608
    " AND e.conversation_key = waiting.conversation_key)"
)
_FIRST_DUE = (  # module constants only
    f"SELECT m.id FROM message_outbox AS m WHERE m.state = {_QUEUED} AND m.next_attempt_at <= :now"  # noqa: S608  # nosec B608
    f" AND m.id IN (SELECT {_FIRST_OF_ITS_CONVERSATION} FROM waiting WHERE waiting.conversation_key IS NOT NULL)"
    " ORDER BY m.id LIMIT :limit"
)

#: When the first message in turn is due: each waiting conversation's first waiting message looked up by its id (a
#: few index entries per conversation), the earliest retry among those still queued; and the first lease's end.
_NEXT_IN_TURN = (  # module constants only
    f"{_WAITING_CONVERSATIONS} SELECT MIN(first.next_attempt_at) AS queued,"  # noqa: S608  # nosec B608
    f" {first_lease_end('message_outbox', _SENDING)} AS leased"
    f" FROM (SELECT (SELECT m.next_attempt_at FROM message_outbox AS m WHERE m.state = {_QUEUED}"
    f" AND m.id = {_FIRST_OF_ITS_CONVERSATION}) AS next_attempt_at"
    " FROM waiting WHERE waiting.conversation_key IS NOT NULL) AS first"
)


@functools.cache
def _claim(skip_locked: str) -> str:
    """`_FIRST_DUE`'s messages (each skipped while another instance leases it, with `skip_locked`) leased and
    returned as they are now, their attempt counted, in one statement (`lease_statement`)."""
    return lease_statement("message_outbox", key="id", pick=_FIRST_DUE + skip_locked, returning=_COLUMNS,
                           with_clauses=_WAITING_CONVERSATIONS)


class MessageOutbox:
    """Queue operations on `message_outbox` and `card_slots`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        #: Called once the transaction that queued a message due now has committed (the worker's `wake`).
        self.on_queued: Callable[[], None] = lambda: None
        #: Called instead for a message queued for later (`not_before`): the worker reads when it is due, it
        #: does not claim (`look_again`); unset, `on_queued`.
        self.on_queued_later: Callable[[], None] | None = None

    # -- queueing (inside the caller's transaction) ----------------------------------------------

    async def post(
        self, conversation_ref: str, content: MessageContent, *, now: dt.datetime, reference: str | None = None,
        slot: str | None = None, not_before: dt.datetime | None = None,
    ) -> int:
        """Queue a new message; with `slot`, its id is kept for later edits; sent at `not_before` at the earliest."""
        return await self._insert(conversation_ref, MessageAction.POST, content, now, reference=reference, slot=slot,
                                  not_before=not_before)

    async def update(
        self, conversation_ref: str, content: MessageContent, *, now: dt.datetime, activity_id: str | None = None,
        slot: str | None = None, reference: str | None = None, not_before: dt.datetime | None = None,
    ) -> int:
        """Queue an edit of message `activity_id`, or of the card kept under `slot`; sent at `not_before` at the
        earliest (a reply Teams shows in that card may still be on its way: sent after it, the edit would be lost)."""
        if (activity_id is None) == (slot is None):
            raise ValueError("an edit names the message or its slot")
        return await self._insert(conversation_ref, MessageAction.UPDATE, content, now, reference=reference,
                                  slot=slot, activity_id=activity_id, not_before=not_before)

    async def has_slot(self, slot: str) -> bool:
        """True when a card was ever queued under `slot` (posted or not yet)."""
        found = await self._db.fetch_one("SELECT 1 AS found FROM card_slots WHERE slot = :slot", {"slot": slot})
        if found is not None:
            return True
        return await self._db.fetch_one(
            "SELECT 1 AS found FROM message_outbox WHERE slot = :slot AND action = :post LIMIT 1",
            {"slot": slot, "post": MessageAction.POST.value},
        ) is not None

    async def cards_missing(self, slots: Mapping[str, str]) -> set[str]:
        """Which of these slots (each with the reference its messages carry) have no card (or message posted under a
        slot, as the withdrawal notice) showing in Teams nor one on its way: the last post under it was given up
        (Teams refused it: the bot out of the team, the app uninstalled), or none was ever queued. Read through the
        references' index."""
        if not slots:
            return set()
        last_posts = await self._db.fetch_all(
            "SELECT slot, state, finished_at FROM message_outbox WHERE id IN (SELECT MAX(id) FROM message_outbox"
            " WHERE reference IN :references AND slot IN :slots AND action = :post GROUP BY slot)",
            {"references": sorted(set(slots.values())), "slots": list(slots), "post": MessageAction.POST.value})
        shown = {str(row["slot"]): from_text(row["updated_at"]) for row in await self._db.fetch_all(
            "SELECT slot, updated_at FROM card_slots WHERE slot IN :slots", {"slots": list(slots)})}
        # A later edit of a card never posted posts it (`message_delivery`), and keeps its id under the slot.
        given_up = {str(row["slot"]) for row in last_posts if row["state"] == MessageState.FAILED.value
                    and (str(row["slot"]) not in shown or shown[str(row["slot"])] < from_text(row["finished_at"]))}
        known = {str(row["slot"]) for row in last_posts} | set(shown)
        return given_up | (set(slots) - known)

    async def cards_behind(self, slots: Mapping[str, str]) -> set[str]:
        """Which of these slots show a card a step behind: the last message sent or given up under it is an edit
        given up (Teams refused it: the bot out of the team). Such a card still offers the step before, whose
        buttons are refused; an edit queued again brings it up to date. Messages to a conversation go out in
        the order queued, so the last by id is the last Teams answered. Read through the references' index."""
        if not slots:
            return set()
        last_done = await self._db.fetch_all(
            "SELECT slot, action, state FROM message_outbox WHERE id IN (SELECT MAX(id) FROM message_outbox"
            " WHERE reference IN :references AND slot IN :slots AND state IN (:sent, :failed) GROUP BY slot)",
            {"references": sorted(set(slots.values())), "slots": list(slots), "sent": MessageState.SENT.value,
             "failed": MessageState.FAILED.value})
        return {str(row["slot"]) for row in last_done
                if row["action"] == MessageAction.UPDATE.value and row["state"] == MessageState.FAILED.value}

    async def _insert(
        self, conversation_ref: str, action: MessageAction, content: MessageContent, now: dt.datetime, *,
        reference: str | None, slot: str | None, activity_id: str | None = None, not_before: dt.datetime | None = None,
    ) -> int:
        due = now if not_before is None else max(now, not_before)
        queued = await self._db.scalar(
            "INSERT INTO message_outbox (conversation_key, conversation_ref, action, content, activity_id, slot,"
            " reference, state, attempts, queued_at, next_attempt_at) VALUES (:key, :ref, :action, :content,"
            " :activity, :slot, :reference, :queued, 0, :now, :due) RETURNING id",
            {"key": conversation_key(conversation_ref), "ref": conversation_ref, "action": action.value,
             "content": content.to_json(), "activity": activity_id, "slot": slot, "reference": reference,
             "queued": MessageState.QUEUED.value, "now": to_text(now), "due": to_text(due)},
        )
        self._db.after_commit(self.on_queued_later if due > now and self.on_queued_later else self.on_queued)
        return int(queued)

    # -- the worker ------------------------------------------------------------------------------

    async def claim_due(self, now: dt.datetime, lease: dt.timedelta, limit: int = 20, *,
                        expired_leases: bool = True) -> list[QueuedMessage]:
        """Lease up to `limit` due messages, at most the first unsent one of each conversation.

        A message waits while an earlier one to its conversation is queued or being sent, so
        Teams shows them in order; a message given up on no longer holds the others back. With
        several instances, rows another instance is leasing right now are skipped (their lock), and
        a conversation whose first message is being leased elsewhere offers nothing (the earlier
        message is still queued in this transaction's view).

        Expired leases are due again first; with `expired_leases=False` (a claim made because a
        message was just queued, no read before it, or after a read that saw no lease run out) they
        are left to a claim that follows a read which shows them (`next_due`).

        The claim itself is one statement on its own (`_claim`): one round trip where a read, the lease,
        and BEGIN and COMMIT around them were four.
        """
        until = now + lease
        if expired_leases and (expired := await requeue_expired_leases(
                self._db, "message_outbox", queued_state=MessageState.QUEUED.value, sending=_SENDING, now=now)):
            logger.warning("message outbox: %d Teams message(s) whose worker stopped mid-send are due again", expired)
        rows = await self._db.fetch_all(_claim(self._db.skip_locked), {
            **lease_values(now, lease, MessageState.SENDING.value), "limit": limit})
        claimed, unreadable = [], []
        for row in sorted(rows, key=lambda row: int(row["id"])):
            try:
                claimed.append(_message(row, until))
            except (ValueError, TypeError, KeyError):  # a row no version of this bot could have written so
                unreadable.append(int(row["id"]))
        if unreadable:
            await self._give_up_unreadable(unreadable, now, until)
        return claimed

    async def _give_up_unreadable(self, ids: list[int], now: dt.datetime, until: dt.datetime) -> None:
        """Give up, under the lease just taken, messages no version of this bot could have stored so: the ones
        leased with them go out, and they do not come back. The claim has committed: when this fails, those
        others still go, and these are given up by a claim after their lease runs out."""
        try:
            await self._db.execute(
                "UPDATE message_outbox SET state = :failed, content = '', finished_at = :now, last_error = :why,"  # noqa: S608  # nosec B608
                f" lease_until = NULL WHERE id IN :ids AND state = {_SENDING} AND lease_until = :until",
                {"failed": MessageState.FAILED.value, "now": to_text(now), "ids": ids, "until": to_text(until),
                 "why": "stored content unreadable: given up without sending"})
        except Exception as error:  # the messages leased with them are sent all the same
            logger.warning("message outbox: Teams message(s) %s with unreadable content not given up yet (%s);"
                           " again when their lease runs out", ", ".join(map(str, ids)), type(error).__name__)
            return
        logger.error("message outbox: Teams message(s) %s given up: stored content unreadable",
                     ", ".join(map(str, ids)))

    async def slot_activity_id(self, slot: str) -> str | None:
        """The id of the card kept under `slot`, once Teams has given one."""
        found = await self._db.scalar("SELECT activity_id FROM card_slots WHERE slot = :slot", {"slot": slot})
        return None if found is None else str(found)

    async def mark_sent(self, message: QueuedMessage, now: dt.datetime, *, activity_id: str | None) -> bool:
        """Teams accepted it: keep the fact (not the content, a review card's data) and the posted id under its slot.

        Without a slot to remember, one statement on its own (no transaction around it). False when the
        lease was no longer this worker's (`_held`): another instance sent and recorded it, nothing changes."""
        remembers = message.slot is not None and bool(activity_id)
        async with self._db.transaction() if remembers else contextlib.nullcontext():
            self._db.note_wipe()  # on its own: the statement below empties the WAL after it
            marked = await self._mark(
                message, "sent", "state = :sent, content = '', finished_at = :now, last_error = NULL",
                {"sent": MessageState.SENT.value, "now": to_text(now)})
            if marked and remembers:
                await self._db.execute(
                    "INSERT INTO card_slots (slot, activity_id, updated_at) VALUES (:slot, :activity, :now)"
                    " ON CONFLICT (slot) DO UPDATE SET activity_id = excluded.activity_id,"
                    " updated_at = excluded.updated_at",
                    {"slot": message.slot, "activity": activity_id, "now": to_text(now)},
                )
        return marked

    async def repost(self, message: QueuedMessage, now: dt.datetime) -> bool:
        """The card to edit is gone (or was never posted): post the new card instead, at once (False: stale)."""
        return await self._mark(
            message, "repost", "action = :post, activity_id = NULL, state = :queued, next_attempt_at = :now",
            {"post": MessageAction.POST.value, "queued": MessageState.QUEUED.value, "now": to_text(now)})

    async def reschedule(self, message: QueuedMessage, next_attempt_at: dt.datetime, error: str) -> bool:
        """Not accepted for now: try again at `next_attempt_at` (False: stale, see `mark_sent`)."""
        return await self._mark(
            message, "reschedule", "state = :queued, next_attempt_at = :at, last_error = :error",
            {"queued": MessageState.QUEUED.value, "at": to_text(next_attempt_at), "error": error[:200]})

    async def mark_failed(self, message: QueuedMessage, now: dt.datetime, error: str) -> bool:
        """Given up: drop the content, keep the fact and the reason (no client data in either); False: stale."""
        async with self._db.transaction():
            self._db.note_wipe()
            return await self._mark(
                message, "give-up", "state = :failed, content = '', finished_at = :now, last_error = :error",
                {"failed": MessageState.FAILED.value, "now": to_text(now), "error": error[:200]})

    async def _mark(self, message: QueuedMessage, mark: str, assignments: str, values: dict[str, object]) -> bool:
        """Record what became of a send if its lease still holds (`mark_under_lease`); a late mark is dropped."""
        held = await mark_under_lease(self._db, "message_outbox", key=("id", message.id), sending=_SENDING,
                                      lease_until=message.lease_until, assignments=assignments, values=values)
        if held:
            return True
        logger.warning("message outbox: a %s mark came after its lease ran out and another worker took the"
                       " message; dropped", mark, extra={"message_id": message.id})
        return False

    async def requeue_cut_off(self) -> int:
        """Every Teams message still being sent back to queued, due at once: only at the start of the one process
        that can send (it holds the SQLite data folder), where a stop or crash cut those sends off; how many."""
        return await requeue_every_lease(self._db, "message_outbox", queued_state=MessageState.QUEUED.value,
                                         sending=_SENDING)

    async def next_due(self) -> NextDue:
        """When the earliest queued message is due, and when the first lease runs out (the worker's read)."""
        return await next_due_in(self._db, "message_outbox", queued=_QUEUED, sending=_SENDING)

    async def next_due_in_turn(self) -> NextDue:
        """As `next_due`, of the messages a claim may take: each conversation's first waiting one.

        Asked after a claim that took nothing: the due message waits behind an earlier one to its conversation
        (a retry later, or being sent by another instance), and `next_due` would say "now" until that one goes.
        Only the earlier one's retry (or the lease's end) is work for this worker; whoever sends it finds the
        next one due in its own read after the send."""
        return next_due_of(await self._db.fetch_one(_NEXT_IN_TURN))

    async def next_due_at(self) -> dt.datetime | None:
        """When the earliest queued message is due (or a lease runs out), None when nothing waits."""
        return (await self.next_due()).at

    # -- what is visible -------------------------------------------------------------------------

    async def given_up_for(self, references: list[str]) -> set[str]:
        """Which of these referrals have a Teams message the bot gave up on."""
        if not references:
            return set()
        rows = await self._db.fetch_all(
            "SELECT DISTINCT reference FROM message_outbox WHERE state = :failed AND reference IN :references",
            {"failed": MessageState.FAILED.value, "references": list(references)},
        )
        return {str(row["reference"]) for row in rows}

    async def stuck(
        self, now: dt.datetime, waiting_longer_than: dt.timedelta, given_up_within: dt.timedelta = dt.timedelta(days=7)
    ) -> StuckMessages:
        """Messages given up on lately, and messages still waiting after `waiting_longer_than`."""
        given_up = await self._db.scalar(
            "SELECT COUNT(*) AS n FROM message_outbox WHERE state = :failed AND finished_at >= :since",
            {"failed": MessageState.FAILED.value, "since": to_text(now - given_up_within)},
        )
        waiting = await self._db.fetch_one(
            "SELECT COUNT(*) AS n, MIN(queued_at) AS oldest FROM message_outbox WHERE state IN (:queued, :sending)"
            " AND queued_at < :before",
            {"queued": MessageState.QUEUED.value, "sending": MessageState.SENDING.value,
             "before": to_text(now - waiting_longer_than)},
        )
        if waiting is None:  # an aggregate always answers one row
            return StuckMessages(int(given_up), 0, None)
        oldest = waiting["oldest"]
        return StuckMessages(int(given_up), int(waiting["n"]), None if oldest is None else from_text(oldest))

    async def waiting(self) -> tuple[int, dt.datetime | None]:
        """How many messages wait to be sent (queued or being sent), and when the oldest was queued (metrics)."""
        row = await self._db.fetch_one(
            "SELECT COUNT(*) AS n, MIN(queued_at) AS oldest FROM message_outbox WHERE state IN (:queued, :sending)",
            {"queued": MessageState.QUEUED.value, "sending": MessageState.SENDING.value},
        )
        if row is None or row["oldest"] is None:
            return 0, None
        return int(row["n"]), from_text(row["oldest"])

    async def counts(self) -> dict[str, int]:
        """Messages per state."""
        rows = await self._db.fetch_all("SELECT state, COUNT(*) AS n FROM message_outbox GROUP BY state")
        return {str(row["state"]): int(row["n"]) for row in rows}


def _message(row: Row, lease_until: dt.datetime) -> QueuedMessage:
    return QueuedMessage(
        id=int(row["id"]),
        conversation_ref=str(row["conversation_ref"]),
        action=MessageAction(row["action"]),
        content=MessageContent.from_json(row["content"]),
        activity_id=row["activity_id"],
        slot=row["slot"],
        reference=row["reference"],
        attempts=int(row["attempts"]),  # counted by the claim
        queued_at=from_text(row["queued_at"]),
        lease_until=lease_until,
    )
