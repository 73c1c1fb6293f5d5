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


async def test_a_start_is_checked_against_both_its_limits_in_one_statement(database: Database) -> None:
    """A `referral.start` counts as an action and as a start: two statements before, one now, with the same
    answers: the kinds in order, each counted when it and every kind before it allow the click."""
    statements: list[str] = []

    @event.listens_for(database.engine.sync_engine, "before_cursor_execute")
    def record(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.startswith("BEGIN"):
            statements.append(statement)

    limiter = RateLimiter(database, {"actions": RateLimit(3, dt.timedelta(minutes=1)),
                                     "starts": RateLimit(1, dt.timedelta(minutes=1))})
    both = ("actions", "starts")
    answers = [await limiter.allow_all("a", both, NOW), await limiter.allow_all("a", both, NOW)]
    assert answers == [True, False] and len(statements) == 2, statements
    event.remove(database.engine.sync_engine, "before_cursor_execute", record)
    # The refused start still counted as an action, as the checks one after the other did: one action is left.
    assert await limiter.allow("a", "actions", NOW) and not await limiter.allow("a", "actions", NOW)
    # Refused as an action: not counted as a start either (another key, the start limit untouched).
    limiter.limits["actions"] = RateLimit(0, dt.timedelta(minutes=1))
    assert not await limiter.allow_all("b", both, NOW)
    limiter.limits["actions"] = RateLimit(3, dt.timedelta(minutes=1))
    assert await limiter.allow_all("b", both, NOW)
    assert await limiter.allow_all("c", ("unlimited", "starts"), NOW) and await limiter.allow_all("c", (), NOW)
    kinds = [row["kind"] for row in await database.fetch_all("SELECT kind FROM rate_events")]
    assert kinds.count("starts") == 3 and kinds.count("actions") == 4
    # The last action a limit allows, with a start: the start's check counts the actions before this click.
    last = RateLimiter(database, {"actions": RateLimit(1, dt.timedelta(minutes=1)),
                                  "starts": RateLimit(1, dt.timedelta(minutes=1))})
    assert await last.allow_all("d", both, NOW) and not await last.allow_all("d", both, NOW)
