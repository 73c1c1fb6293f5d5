"""Activity receipts are rows in the shared database: a copy is recognised on any instance, once."""

from __future__ import annotations

import asyncio
import datetime as dt

from bot.storage.activity_receipts import KEEP, ActivityReceipts
from bot.storage.database import Database
from tests.support.databases import another_engine

NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


async def test_the_first_copy_is_the_first_arrival_and_the_next_are_not(database: Database) -> None:
    receipts = ActivityReceipts(database)
    assert await receipts.first_arrival("a:personal-1", "incoming-1", NOW)
    assert not await receipts.first_arrival("a:personal-1", "incoming-1", NOW + dt.timedelta(seconds=15))
    assert await receipts.first_arrival("a:personal-1", "incoming-2", NOW)
    assert await receipts.first_arrival("a:personal-2", "incoming-1", NOW), "ids are per conversation"


async def test_a_forgotten_receipt_lets_the_next_copy_run(database: Database) -> None:
    receipts = ActivityReceipts(database)
    assert await receipts.first_arrival("a:personal-1", "incoming-1", NOW)
    await receipts.forget("a:personal-1", "incoming-1")
    assert await receipts.first_arrival("a:personal-1", "incoming-1", NOW)


async def test_no_id_is_stored(database: Database) -> None:
    await ActivityReceipts(database).first_arrival("a:personal-aad-an-1", "incoming-1", NOW)
    [row] = await database.fetch_all("SELECT * FROM activity_receipts")
    assert "aad-an-1" not in str(dict(row)) and "incoming-1" not in str(dict(row))


async def test_old_receipts_are_pruned(database: Database) -> None:
    receipts = ActivityReceipts(database)
    await receipts.first_arrival("a:personal-1", "incoming-1", NOW)
    await receipts.first_arrival("a:personal-1", "incoming-2", NOW + dt.timedelta(minutes=30))
    assert await receipts.prune(NOW + KEEP) == 1
    assert await database.scalar("SELECT COUNT(*) AS n FROM activity_receipts") == 1


async def test_copies_arriving_on_two_instances_at_once_run_once(database: Database) -> None:
    """Teams' retry and the first copy, on two instances at the same moment."""
    first, second = ActivityReceipts(database), ActivityReceipts(another_engine(database))
    answers = await asyncio.gather(*(receipts.first_arrival("a:personal-1", "incoming-1", NOW)
                                     for _ in range(5) for receipts in (first, second)))
    assert answers.count(True) == 1
