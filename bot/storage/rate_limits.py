"""How often a user (or a conversation) may act: sliding-window limits that hold across instances.

The events are rows in the shared database, so two instances behind the load balancer count the
same clicks; a restart forgives nothing. The key is stored as a hash (a user or conversation id is
not client data, but the table has no need to name anyone). Each check is one statement that
counts and records under a lock per key and kind (PostgreSQL: `rate_allow`, revision 0005; SQLite:
the writer lock), so concurrent clicks on two instances cannot both slip under the limit, and a
click costs one round trip. Old events go in the periodic sweep (`prune`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from bot.storage.database import Database, lock_key, to_text


@dataclass(frozen=True)
class RateLimit:
    """At most `count` events per `window`."""

    count: int
    window: dt.timedelta


class RateLimiter:
    """Sliding-window counters per (key, kind); the key is a user id, or a conversation id."""

    def __init__(self, db: Database, limits: dict[str, RateLimit]) -> None:
        self._db = db
        self.limits = limits

    async def allow(self, key: str, kind: str, now: dt.datetime) -> bool:
        """Count one `kind` event for `key`; False when it is over the limit (and then not counted)."""
        limit = self.limits.get(kind)
        if limit is None:
            return True
        hashed = _hash(key)
        parameters = {"kind": kind, "key": hashed, "since": to_text(now - limit.window), "at": to_text(now),
                      "limit": limit.count}
        if self._db.is_postgres:
            # One statement (revision 0005): the key's lock, the count and the insert, in the server.
            allowed = await self._db.scalar(
                "SELECT rate_allow(:lock, :kind, :key, :since, :at, :limit) AS allowed",
                {"lock": lock_key(f"rate:{kind}:{hashed}"), **parameters})
            return bool(allowed)
        # SQLite: one statement under the writer lock (BEGIN IMMEDIATE), which no other writer shares.
        inserted = await self._db.execute(
            "INSERT INTO rate_events (kind, key_hash, at) SELECT :kind, :key, :at WHERE"
            " (SELECT COUNT(*) FROM rate_events WHERE kind = :kind AND key_hash = :key AND at > :since) < :limit",
            parameters)
        return inserted.rowcount == 1

    async def prune(self, now: dt.datetime) -> int:
        """Forget events older than the longest window; how many went."""
        if not self.limits:
            return 0
        longest = max(limit.window for limit in self.limits.values())
        done = await self._db.execute("DELETE FROM rate_events WHERE at <= :before",
                                      {"before": to_text(now - longest)})
        return done.rowcount


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", errors="replace")).hexdigest()[:32]
