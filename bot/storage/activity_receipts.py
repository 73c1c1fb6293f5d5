"""Which Teams activities arrived already, so a copy Teams sends again is not run a second time.

Teams sends an activity again when the bot's answer is late or fails, with the same `id` in the same
conversation, to whichever instance the load balancer picks. A typed "nieuw" run twice opened two
drafts (two consent cards, two "referral started" entries in the register). The first copy inserts a
row keyed by a hash of the conversation and activity id (ids are not client data, but the table has no
need to name anyone); a copy finds the row and is answered without a turn. A turn that fails takes its
row back (`forget`), so Teams' retry of it runs. Rows older than `KEEP` go in the periodic sweep.

While its turn runs, a row names the process running it (`holder`); `done` clears that. A copy that finds
the row of a turn whose process has ended (killed mid-turn: out of memory, a crash, SIGKILL) takes it over
and runs: before, the copy was answered without a turn and the user had to type again. Whether a holder
has ended: on PostgreSQL, no session of the server carries its name (every connection of an instance
names it, `application_name`; a killed process's sessions end with its sockets), or its turn began longer
ago than any turn lasts (a machine lost without closing anything); on SQLite, where only one process
serves a data folder, its turn began before this process started.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from bot.storage.database import Database, to_text

#: Teams retries within minutes; an hour is far past any retry and keeps the table a few thousand rows.
KEEP = dt.timedelta(hours=1)
#: Longer than any turn lasts (Teams gives up waiting for an answer after 15 s; a turn's replies take 7 s
#: at most): a turn in progress for longer has no process left running it.
LONGEST_TURN = dt.timedelta(minutes=2)


def new_holder_name() -> str:
    """A name for this process's turns, unique among the instances (and short enough for `application_name`)."""
    return f"veilig-doorverwijzen {secrets.token_hex(8)}"


class ActivityReceipts:
    """The `activity_receipts` table, for the turns of one process (`holder`).

    `started_at` (SQLite): when this process started serving, so a turn in progress from before is a dead
    process's; None takes over no turn on SQLite.
    """

    def __init__(self, db: Database, holder: str | None = None, started_at: dt.datetime | None = None) -> None:
        self._db = db
        self.holder = holder or new_holder_name()
        self._started_at = started_at
        self._take_over = _take_over_sql(postgres=db.is_postgres, knows_its_start=started_at is not None)

    async def first_arrival(self, conversation_id: str, activity_id: str, now: dt.datetime) -> bool:
        """Record the activity as this process's turn; False when it arrived before (on any instance) and its
        turn is done or still running. A copy of a turn whose process ended is taken over: True.

        One statement for a first arrival; a copy costs a second.
        """
        key = _key(conversation_id, activity_id)
        inserted = await self._db.execute(
            "INSERT INTO activity_receipts (key_hash, received_at, holder) VALUES (:key, :now, :holder)"
            " ON CONFLICT (key_hash) DO NOTHING",
            {"key": key, "now": to_text(now), "holder": self.holder})
        if inserted.rowcount == 1:
            return True
        taken = await self._db.execute(self._take_over, {
            "key": key, "now": to_text(now), "holder": self.holder, "stale": to_text(now - LONGEST_TURN),
            "started": to_text(self._started_at or now)})
        return taken.rowcount == 1

    async def done(self, conversation_id: str, activity_id: str) -> None:
        """The turn ran to its end: a copy is not run again, whatever becomes of this process."""
        await self._db.execute("UPDATE activity_receipts SET holder = NULL WHERE key_hash = :key AND holder = :holder",
                               {"key": _key(conversation_id, activity_id), "holder": self.holder})

    async def forget(self, conversation_id: str, activity_id: str) -> None:
        """The turn failed: the next copy of the activity runs."""
        await self._db.execute("DELETE FROM activity_receipts WHERE key_hash = :key",
                               {"key": _key(conversation_id, activity_id)})

    async def prune(self, now: dt.datetime) -> int:
        """Forget receipts older than `KEEP`; how many went."""
        done = await self._db.execute("DELETE FROM activity_receipts WHERE received_at <= :before",
                                      {"before": to_text(now - KEEP)})
        return done.rowcount


def _take_over_sql(*, postgres: bool, knows_its_start: bool) -> str:
    """The row of a copy's turn made this process's, when another process held it and has ended (module
    docstring): `ended` is one of three fixed conditions, never input."""
    if postgres:
        ended = ("received_at <= :stale OR NOT EXISTS (SELECT 1 FROM pg_stat_activity"
                 " WHERE application_name = activity_receipts.holder)")
    else:
        ended = "received_at < :started" if knows_its_start else "1 = 0"
    return ("UPDATE activity_receipts SET holder = :holder, received_at = :now WHERE key_hash = :key"  # noqa: S608  # nosec B608
            f" AND holder IS NOT NULL AND holder <> :holder AND ({ended})")


def _key(conversation_id: str, activity_id: str) -> str:
    return hashlib.sha256(f"{conversation_id}\n{activity_id}".encode("utf-8", errors="replace")).hexdigest()[:40]
