"""The durable outbox: encrypted packages waiting to be mailed, safe across crashes.

A row holds only the finished RFC 5322 message (headers and body without client data, the
client data inside the AES-256 ZIP). The payload is dropped once delivered or given up on.
Mark-then-send: a row is leased (`sending` until `lease_until`, committed) before the transport is
called. A lease that runs out (its worker died) makes the row due again, and it is sent again with
the same Message-ID, so a duplicate is recognisable by the recipient's mail system; a row whose
lease still runs is never touched by anyone else: with several instances, `claim_due` skips the
rows another instance is leasing at that moment (`FOR UPDATE SKIP LOCKED`), and each mark after a send
is a compare-and-set on the lease it was sent under, so a worker paused past its lease cannot undo what
the instance that took the row over recorded.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from bot.delivery.outbox_due import (
    NextDue,
    lease_statement,
    lease_values,
    mark_under_lease,
    next_due_in,
    requeue_every_lease,
    requeue_expired_leases,
)
from bot.storage.database import Database, Row, from_text, to_text

logger = logging.getLogger(__name__)


class OutboxState(StrEnum):
    """Where a queued mail is."""

    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


#: The worker's lookups name the waiting states in their text, not as parameters: only then can the
#: database use the indexes that hold the waiting mails alone (revision 0007).
_QUEUED = f"'{OutboxState.QUEUED.value}'"
_SENDING = f"'{OutboxState.SENDING.value}'"


@dataclass(frozen=True)
class OutboxItem:
    """One mail to deliver."""

    message_id: str
    reference: str
    payload: bytes = field(repr=False)
    attempts: int
    queued_at: dt.datetime
    lease_until: dt.datetime  # the lease it was claimed under: every mark after the send holds it
    #: The recipients who took it while others refused (a retry goes to the others only).
    delivered_to: tuple[str, ...] = ()


class Outbox:
    """Queue operations on the `outbox` table."""

    def __init__(self, db: Database) -> None:
        self._db = db
        #: Called once the transaction that queued a mail has committed (the delivery worker's `wake`).
        self.on_queued: Callable[[], None] = lambda: None

    async def enqueue(self, *, message_id: str, reference: str, payload: bytes, now: dt.datetime) -> bool:
        """Queue a message for immediate delivery (idempotent per Message-ID); False when it was queued before.

        `reference` names what the mail is about: a referral, or a breach report (`DL-...`), which the
        delivery worker sends like any other row and, finding no referral for it, only marks.
        """
        cursor = await self._db.execute(
            "INSERT INTO outbox (message_id, reference, payload, state, queued_at, next_attempt_at)"
            " VALUES (:message_id, :reference, :payload, :queued, :now, :now) ON CONFLICT DO NOTHING",
            {"message_id": message_id, "reference": reference, "payload": payload,
             "queued": OutboxState.QUEUED.value, "now": to_text(now)},
        )
        self._db.after_commit(self.on_queued)
        return cursor.rowcount == 1

    async def claim_due(self, now: dt.datetime, lease: dt.timedelta, limit: int = 10, *,
                        expired_leases: bool = True) -> list[OutboxItem]:
        """Lease up to `limit` due rows (committed) and return them, earliest due first; expired leases are due
        again first.

        `expired_leases=False`: queued rows only, for a claim made because a mail was just queued, or after a
        read that saw no lease run out (`next_due`); a lease that ran out is taken by a claim that follows a
        read which shows it.
        """
        if expired_leases:
            await self._requeue_expired(now)
        rows = await self._db.fetch_all(_claim(self._db.skip_locked, one=False),
                                        {**lease_values(now, lease, OutboxState.SENDING.value), "limit": limit})
        rows.sort(key=lambda row: (str(row["next_attempt_at"]), str(row["message_id"])))
        return [_item(row, now + lease) for row in rows]

    async def claim_one(self, now: dt.datetime, lease: dt.timedelta, *,
                        expired_leases: bool = True) -> tuple[OutboxItem | None, bool]:
        """Lease the first due row, as `claim_due`; and whether another row is due now (a lane to wake)."""
        if expired_leases:
            await self._requeue_expired(now)
        row = await self._db.fetch_one(_claim(self._db.skip_locked, one=True),
                                       lease_values(now, lease, OutboxState.SENDING.value))
        return (None, False) if row is None else (_item(row, now + lease), bool(row["more_due"]))

    async def _requeue_expired(self, now: dt.datetime) -> None:
        """Rows whose worker stopped mid-send are due again: a statement on its own, before the claim."""
        expired = await requeue_expired_leases(self._db, "outbox", queued_state=OutboxState.QUEUED.value,
                                               sending=_SENDING, now=now)
        if expired:
            logger.warning("outbox: %d mail(s) whose worker stopped mid-send are due again", expired)

    async def mark_delivered(self, item: OutboxItem, now: dt.datetime, refused: str | None = None) -> bool:
        """Delivered: drop the payload (and, once committed, its old pages from the WAL), keep the fact, and
        `refused`: for whom it was not (some recipients had it, the others refused it for good).

        `item.delivered_to` is written here too, not only by `reschedule`: a mail taken for one recipient and
        refused for the other in the attempt that ends it (a 550, or the horizon) was never rescheduled with
        them, and its row named only whom it was refused for. A retry that the rest took: the worker adds them, so
        the row names every recipient (it named only those of the earlier attempt). A mail every recipient took at
        the first attempt keeps NULL there: nobody was ever refused it.

        False when the lease was no longer this worker's (`_mark`): another instance recorded the mail."""
        async with self._db.transaction(savepoint=False):
            return await self._mark(
                item, "delivered", "state = :delivered, payload = NULL, finished_at = :now, last_error = :refused,"
                " delivered_to = :delivered_to",
                {"delivered": OutboxState.DELIVERED.value, "now": to_text(now), "refused": refused,
                 "delivered_to": _recipients_text(item)}, wipes=True)

    async def reschedule(self, item: OutboxItem, next_attempt_at: dt.datetime, error: str) -> bool:
        """A transient failure: try again at `next_attempt_at`, to those not in `item.delivered_to` (False: stale)."""
        return await self._mark(item, "reschedule", "state = :queued, next_attempt_at = :at, last_error = :error,"
                                " delivered_to = :delivered_to",
                                {"queued": OutboxState.QUEUED.value, "at": to_text(next_attempt_at), "error": error,
                                 "delivered_to": _recipients_text(item)})

    async def mark_failed(self, item: OutboxItem, now: dt.datetime, error: str) -> bool:
        """Given up: drop the payload (WAL included, as above); the referrer is told to refer again. False: stale."""
        async with self._db.transaction(savepoint=False):
            return await self._mark(
                item, "give-up", "state = :failed, payload = NULL, finished_at = :now, last_error = :error",
                {"failed": OutboxState.FAILED.value, "now": to_text(now), "error": error}, wipes=True)

    async def _mark(self, item: OutboxItem, mark: str, assignments: str, values: dict[str, object], *,
                    wipes: bool = False) -> bool:
        """Record what became of a send if its lease still holds (`mark_under_lease`); a late mark is dropped."""
        held = await mark_under_lease(self._db, "outbox", key=("message_id", item.message_id), sending=_SENDING,
                                      lease_until=item.lease_until, assignments=assignments, values=values)
        if held:
            if wipes:
                self._db.note_wipe()
            return True
        logger.warning("outbox: a %s mark came after its lease ran out and another worker took the mail; dropped",
                       mark, extra={"reference": item.reference})
        return False

    async def cancel_queued(self, message_id: str, now: dt.datetime, reason: str) -> bool:
        """Drop a mail still waiting (its payload too); False when it is being sent right now or already was.

        A row another instance is leasing at this moment is locked: this waits for that lease's
        commit and then finds the row `sending`, so a mail is never both cancelled and sent.
        """
        async with self._db.transaction(savepoint=False):
            cursor = await self._db.execute(
                "UPDATE outbox SET state = :failed, payload = NULL, finished_at = :now, last_error = :reason"
                " WHERE message_id = :message_id AND state = :queued",
                {"failed": OutboxState.FAILED.value, "now": to_text(now), "reason": reason,
                 "message_id": message_id, "queued": OutboxState.QUEUED.value},
            )
            if cursor.rowcount == 1:
                self._db.note_wipe()
        return cursor.rowcount == 1

    async def requeue_cut_off(self) -> int:
        """Every mail still being sent back to queued, due at once: only at the start of the one process that
        can send (it holds the SQLite data folder), where a stop or crash cut those sends off; how many. As after
        a lease runs out, a mail the relay had taken goes again with its Message-ID, a recognisable repeat."""
        return await requeue_every_lease(self._db, "outbox", queued_state=OutboxState.QUEUED.value, sending=_SENDING)

    async def next_due(self) -> NextDue:
        """When the earliest queued row is due, and when the first lease runs out (the worker's read)."""
        return await next_due_in(self._db, "outbox", queued=_QUEUED, sending=_SENDING)

    async def next_due_at(self) -> dt.datetime | None:
        """When the earliest queued row is due (or a lease runs out), None when nothing waits."""
        return (await self.next_due()).at

    async def waiting_for_a_lane(self, now: dt.datetime) -> int:
        """How many mails are due now and not yet taken by a lane (not those waiting for a later retry)."""
        count = await self._db.scalar(
            f"SELECT COUNT(*) FROM outbox WHERE state = {_QUEUED} AND next_attempt_at <= :now",  # noqa: S608  # nosec B608
            {"now": to_text(now)},
        )
        return int(count or 0)

    async def counts(self) -> dict[str, int]:
        """Rows per state, for status and health checks."""
        rows = await self._db.fetch_all("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state")
        return {str(row["state"]): int(row["n"]) for row in rows}

    async def waiting(self) -> tuple[int, dt.datetime | None]:
        """How many mails wait to be sent (queued or being sent), and when the oldest was queued (metrics)."""
        row = await self._db.fetch_one(
            "SELECT COUNT(*) AS n, MIN(queued_at) AS oldest FROM outbox WHERE state IN (:queued, :sending)",
            {"queued": OutboxState.QUEUED.value, "sending": OutboxState.SENDING.value},
        )
        if row is None or row["oldest"] is None:
            return 0, None
        return int(row["n"]), from_text(row["oldest"])


@functools.cache
def _claim(skip_locked: str, *, one: bool) -> str:
    """A claim is one statement on its own (`lease_statement`): no transaction, one round trip where a read, the
    lease, and BEGIN and COMMIT around them were four. Due rows are found through the `outbox_queued` index,
    earliest first. With `one`, the first due row, and whether another is due now (`more_due`): on PostgreSQL
    read in the statement's own view, on SQLite as the row is written; both leave the claimed row out by its
    key, so both answer the same."""
    more_due = (f", EXISTS (SELECT 1 FROM outbox AS other WHERE other.state = {_QUEUED}"  # noqa: S608  # nosec B608
                " AND other.next_attempt_at <= :now AND other.message_id <> outbox.message_id) AS more_due")
    return lease_statement(
        "outbox", key="message_id",
        pick=f"SELECT message_id FROM outbox WHERE state = {_QUEUED} AND next_attempt_at <= :now"  # noqa: S608  # nosec B608
        f" ORDER BY next_attempt_at LIMIT {'1' if one else ':limit'}{skip_locked}",
        returning="message_id, reference, payload, attempts, queued_at, next_attempt_at, delivered_to"
        + (more_due if one else ""))


def _item(row: Row, lease_until: dt.datetime) -> OutboxItem:
    """A claimed row as the worker sends it (`attempts`: already counted by the claim)."""
    return OutboxItem(
        message_id=row["message_id"],
        reference=row["reference"],
        payload=bytes(row["payload"]),
        attempts=int(row["attempts"]),
        queued_at=from_text(row["queued_at"]),
        lease_until=lease_until,
        delivered_to=tuple((row["delivered_to"] or "").splitlines()),
    )


def _recipients_text(item: OutboxItem) -> str | None:
    """`item.delivered_to` as the column keeps it: one address a line, NULL when nobody took it yet."""
    return "\n".join(item.delivered_to) or None
