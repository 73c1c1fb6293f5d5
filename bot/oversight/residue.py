"""Nothing lingers on disk once the data is gone elsewhere: the outbox folder's mails, the WAL.

When the OCMW confirms it deleted a referral's data (directly, or after consent was withdrawn),
the copies the mail transport kept of that referral and of its correction versions go too, and
SQLite's WAL is emptied of the outbox rows that once held the encrypted package. The removal runs
after the deletion committed; a crash in between, or a removal that failed, is made good by
`sweep`, which runs at start and then every minute with the draft sweep. The sweep at start also
empties the WAL whatever this process did: one killed right after a wipe committed (a draft's, a
package's) left the old page versions there, and a new process has noted no wipe of its own.
"""

from __future__ import annotations

import logging

from bot.core.sent_referrals import ReferralStore, SentReferral
from bot.delivery.mail_transport import SentCopies
from bot.storage.database import Database

logger = logging.getLogger(__name__)


class ResidueSweeper:
    """Removes what the bot kept of a referral the OCMW deleted, and retries what could not be done."""

    def __init__(self, *, db: Database, referrals: ReferralStore, copies: SentCopies) -> None:
        self._db = db
        self._referrals = referrals
        self._copies = copies
        self._copies_due = True  # the first sweep (at start) looks at every deleted referral
        self._started = False  # the first sweep empties the WAL a killed process may have left

    async def data_deleted(self, referral: SentReferral) -> None:
        """The OCMW's deletion of `referral` is committed: remove its copies and its versions'."""
        self._remove(await self._referrals.message_ids_with_versions(referral.reference))
        self._db.note_wipe()
        await self._db.truncate_wal()

    async def sweep(self) -> None:
        """Remove copies of deleted referrals a crash or an error left behind; retry a busy WAL checkpoint."""
        if not self._started:
            self._started = True
            self._db.note_wipe()  # stays due until a checkpoint succeeds (retried like any busy one)
        if self._copies_due:
            self._copies_due = False
            if self._copies.holds_any():  # SMTP and Graph keep none: no deleted referral to read at each start
                self._remove(await self._referrals.deleted_message_ids())
        await self._db.truncate_wal()

    def _remove(self, message_ids: list[str]) -> None:
        for message_id in message_ids:
            try:
                self._copies.remove_copy(message_id)
            except OSError as error:
                # A Message-ID is the reference and the sender's domain: no client data.
                logger.warning("sent mail copy not removed (%s); retried at the next sweep", error.strerror,
                               extra={"message_id": message_id})
                self._copies_due = True
