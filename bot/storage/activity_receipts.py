"""Which Teams activities arrived already, so a copy Teams sends again is not run a second time.

Teams sends an activity again when the bot's answer is late or fails, with the same `id` in the same
conversation, to whichever instance the load balancer picks. A typed "nieuw" run twice opened two
drafts (two consent cards, two "referral started" entries in the register). The first copy inserts a
row keyed by a hash of the conversation and activity id (ids are not client data, but the table has no
need to name anyone); a copy finds the row and is answered without a turn. A turn that fails takes its
row back (`forget`), so Teams' retry of it runs. Rows older than `KEEP` go in the periodic sweep.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from bot.storage.database import Database, to_text

#: Teams retries within minutes; an hour is far past any retry and keeps the table a few thousand rows.
KEEP = dt.timedelta(hours=1)


class ActivityReceipts:
    """The `activity_receipts` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def first_arrival(self, conversation_id: str, activity_id: str, now: dt.datetime) -> bool:
        """Record the activity; False when it had arrived before (on any instance). One statement."""
        done = await self._db.execute(
            "INSERT INTO activity_receipts (key_hash, received_at) VALUES (:key, :now)"
            " ON CONFLICT (key_hash) DO NOTHING",
            {"key": _key(conversation_id, activity_id), "now": to_text(now)})
        return done.rowcount == 1

    async def forget(self, conversation_id: str, activity_id: str) -> None:
        """The turn failed: the next copy of the activity runs."""
        await self._db.execute("DELETE FROM activity_receipts WHERE key_hash = :key",
                               {"key": _key(conversation_id, activity_id)})

    async def prune(self, now: dt.datetime) -> int:
        """Forget receipts older than `KEEP`; how many went."""
        done = await self._db.execute("DELETE FROM activity_receipts WHERE received_at <= :before",
                                      {"before": to_text(now - KEEP)})
        return done.rowcount


def _key(conversation_id: str, activity_id: str) -> str:
    return hashlib.sha256(f"{conversation_id}\n{activity_id}".encode("utf-8", errors="replace")).hexdigest()[:40]
