"""Rate limits are rows in the shared database: they count per user and kind, and hold across instances."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from sqlalchemy import event

from bot.storage.database import Database
from bot.storage.rate_limits import RateLimit, RateLimiter
from tests.support.databases import another_engine

NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


async def test_counts_per_user_and_kind_in_a_sliding_window(database: Database) -> None:
    limiter = RateLimiter(database, {"actions": RateLimit(2, dt.timedelta(minutes=1))})
    assert await limiter.allow("a", "actions", NOW) and await limiter.allow("a", "actions", NOW)
    assert not await limiter.allow("a", "actions", NOW + dt.timedelta(seconds=30))
    assert await limiter.allow("b", "actions", NOW) and await limiter.allow("a", "other", NOW)
    assert await limiter.allow("a", "actions", NOW + dt.timedelta(minutes=1))


async def test_the_user_id_is_not_stored(database: Database) -> None:
    await RateLimiter(database, {"actions": RateLimit(2, dt.timedelta(minutes=1))}).allow("aad-an-1", "actions", NOW)
    [row] = await database.fetch_all("SELECT * FROM rate_events")
    assert "aad-an-1" not in str(dict(row))


async def test_old_events_are_pruned(database: Database) -> None:
    limiter = RateLimiter(database, {"starts": RateLimit(5, dt.timedelta(hours=1)),
                                     "actions": RateLimit(5, dt.timedelta(minutes=1))})
    await limiter.allow("a", "starts", NOW)
    await limiter.allow("a", "actions", NOW + dt.timedelta(minutes=50))
    assert await limiter.prune(NOW + dt.timedelta(hours=1)) == 1, "kept as long as the longest window"
    assert await database.scalar("SELECT COUNT(*) AS n FROM rate_events") == 1


async def test_two_instances_clicking_at_once_get_no_more_than_the_limit(database: Database) -> None:
    """Two bots on one database, 20 clicks each at the same moment: 5 are allowed in all, not 5 per bot."""
    other = another_engine(database)
    limits = {"actions": RateLimit(5, dt.timedelta(minutes=1))}
    first, second = RateLimiter(database, limits), RateLimiter(other, limits)
    answers = await asyncio.gather(*(limiter.allow("aad-an-1", "actions", NOW)
                                     for _ in range(20) for limiter in (first, second)))
    assert answers.count(True) == 5


async def test_a_click_is_checked_and_counted_in_one_statement(database: Database) -> None:
    """Before, a check was a transaction of five round trips (BEGIN, lock, count, insert, COMMIT), five per referral."""
    statements: list[str] = []

    @event.listens_for(database.engine.sync_engine, "before_cursor_execute")
    def record(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's BEGIN IMMEDIATE: its writer lock, not a round trip
            statements.append(statement)

    limiter = RateLimiter(database, {"actions": RateLimit(1, dt.timedelta(minutes=1))})
    assert await limiter.allow("aad-an-1", "actions", NOW)
    assert not await limiter.allow("aad-an-1", "actions", NOW)
    assert len(statements) == 2, statements
    assert not database.in_transaction
