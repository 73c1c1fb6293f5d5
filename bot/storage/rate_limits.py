"""How often a user (or a conversation) may act: sliding-window limits that hold across instances.

The events are rows in the shared database, so two instances behind the load balancer count the
same clicks; a restart forgives nothing. The key is stored as a hash (a user or conversation id is
not client data, but the table has no need to name anyone). Each check is one statement that
counts and records under a lock per key and kind (PostgreSQL: `rate_allow`, revision 0005; SQLite:
the writer lock), so concurrent clicks on two instances cannot both slip under the limit, and a
click costs one round trip, also a `referral.start`, which counts as an action and as a start
(`allow_all`). Old events go in the periodic sweep (`prune`).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Sequence
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
        return await self.allow_all(key, (kind,), now)

    async def allow_all(self, key: str, kinds: Sequence[str], now: dt.datetime) -> bool:
        """One click that counts as each of `kinds`, in order, in one statement: the answers `allow` would
        give one after the other. Each kind is counted when it and every kind before it allow the click;
        False when one does not (a start refused as a start still counted as an action)."""
        limited = [(kind, self.limits[kind]) for kind in kinds if kind in self.limits]
        if not limited:
            return True
        hashed = _hash(key)
        parameters: dict[str, object] = {"key": hashed, "at": to_text(now)}
        for index, (kind, limit) in enumerate(limited):
            parameters |= {f"kind{index}": kind, f"since{index}": to_text(now - limit.window),
                           f"limit{index}": limit.count, f"lock{index}": lock_key(f"rate:{kind}:{hashed}")}
        if self._db.is_postgres:
            # One statement (revision 0005's function per kind): CASE asks the next kind only when this one
            # allowed the click; each takes its key's lock, always in the order given.
            return bool(await self._db.scalar(f"SELECT {_postgres_checks(len(limited))} AS allowed", parameters))
        # SQLite: one statement under the writer lock (BEGIN IMMEDIATE), which no other writer shares; its
        # SELECT is read in full before the first row goes in (it reads the table it inserts into).
        inserted = await self._db.execute(_sqlite_checks(len(limited)), parameters)
        return inserted.rowcount == len(limited)

    async def prune(self, now: dt.datetime) -> int:
        """Forget events older than the longest window; how many went."""
        if not self.limits:
            return 0
        longest = max(limit.window for limit in self.limits.values())
        done = await self._db.execute("DELETE FROM rate_events WHERE at <= :before",
                                      {"before": to_text(now - longest)})
        return done.rowcount


@functools.cache
def _postgres_checks(count: int, index: int = 0) -> str:
    """`rate_allow` for kind `index`, and when it allows, the ones after it."""
    check = f"rate_allow(:lock{index}, :kind{index}, :key, :since{index}, :at, :limit{index})"
    if index == count - 1:
        return check
    return f"CASE WHEN {check} THEN {_postgres_checks(count, index + 1)} ELSE false END"


@functools.cache
def _sqlite_checks(count: int) -> str:
    """One row per kind, each inserted when its own count and every count before it are under their limits."""
    # Only parameter names numbered here; every value is a bound parameter.
    under = [f"(SELECT COUNT(*) FROM rate_events WHERE kind = :kind{index} AND key_hash = :key"  # noqa: S608  # nosec B608
             f" AND at > :since{index}) < :limit{index}" for index in range(count)]
    rows = [f"SELECT :kind{index}, :key, :at WHERE {' AND '.join(under[:index + 1])}" for index in range(count)]
    return f"INSERT INTO rate_events (kind, key_hash, at) {' UNION ALL '.join(rows)}"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", errors="replace")).hexdigest()[:32]
