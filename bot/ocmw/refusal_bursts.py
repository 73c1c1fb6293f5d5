"""Refused OCMW clicks grouped into bursts, so an outsider clicking away cannot flood the register.

A burst is the refused clicks of one user on one verb of one referral from its first click until
`window` (10 minutes) later. The first click gets a register entry; the others are counted in the
log line only, and their number goes into the entry that opens the next burst of that user, verb
and referral. So every click is logged, and the register gets at most one entry per key per window,
whichever instance the clicks reach: the bursts are rows in the shared database, counted under a
lock per key. Bursts older than `keep` go in the periodic sweep (their counts are in the log).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from bot.storage.database import Database, from_text, to_text


@dataclass(frozen=True)
class RefusedClick:
    """One refused click as `RefusalBursts` counts it."""

    clicks_in_burst: int  # this click's number in its burst, from 1
    register: bool  # the first of a burst: write a register entry
    only_counted_before: int  # clicks of the key's previous burst that got no entry of their own


class RefusalBursts:
    """The bursts in the `refusal_bursts` table."""

    def __init__(
        self, db: Database, window: dt.timedelta = dt.timedelta(minutes=10), keep: dt.timedelta = dt.timedelta(days=1)
    ) -> None:
        self._db = db
        self._window = window
        self._keep = keep

    async def click(self, user_id: str, reference: str, verb: str, now: dt.datetime) -> RefusedClick:
        """Count one refused click at `now` (in the caller's transaction, if any)."""
        key = hashlib.sha256(f"{user_id}\n{reference}\n{verb}".encode("utf-8", errors="replace")).hexdigest()[:40]
        async with self._db.transaction():
            await self._db.lock(f"refusal:{key}")
            row = await self._db.fetch_one("SELECT started_at, clicks FROM refusal_bursts WHERE burst_key = :key",
                                           {"key": key})
            if row is not None and now - from_text(row["started_at"]) < self._window:
                clicks = int(row["clicks"]) + 1
                await self._db.execute("UPDATE refusal_bursts SET clicks = :clicks WHERE burst_key = :key",
                                       {"clicks": clicks, "key": key})
                return RefusedClick(clicks_in_burst=clicks, register=False, only_counted_before=0)
            carried = 0 if row is None or now - from_text(row["started_at"]) >= self._keep else int(row["clicks"]) - 1
            await self._db.execute(
                "INSERT INTO refusal_bursts (burst_key, started_at, clicks) VALUES (:key, :now, 1)"
                " ON CONFLICT (burst_key) DO UPDATE SET started_at = excluded.started_at, clicks = 1",
                {"key": key, "now": to_text(now)},
            )
        return RefusedClick(clicks_in_burst=1, register=True, only_counted_before=carried)

    async def prune(self, now: dt.datetime) -> int:
        """Drop bursts older than `keep`; their counts are in the log."""
        done = await self._db.execute("DELETE FROM refusal_bursts WHERE started_at <= :before",
                                      {"before": to_text(now - self._keep)})
        return done.rowcount
