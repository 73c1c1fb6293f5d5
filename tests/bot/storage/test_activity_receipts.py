"""Activity receipts are rows in the shared database: a copy is recognised on any instance, once."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from bot.storage.activity_receipts import KEEP, LONGEST_TURN, ActivityReceipts, new_holder_name
from bot.storage.database import Database
from tests.support.databases import another_engine, postgres_database, sqlite_database
from tests.support.postgres_server import PostgresServer

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
    first, second = _instance(database, "A", NOW), _instance(database, "B", NOW)
    answers = await asyncio.gather(*(receipts.first_arrival("a:personal-1", "incoming-1", NOW)
                                     for _ in range(5) for receipts in (first, second)))
    assert answers.count(True) == 1


# -- a turn whose process died: Teams' copy runs -----------------------------------------------------------


def _instance(database: Database, name: str, started_at: dt.datetime) -> ActivityReceipts:
    """The receipts of an instance (process) started at `started_at`: on PostgreSQL an engine of its own whose
    sessions carry its name, as `create_app` opens it; on SQLite, where one process serves at a time, the file."""
    holder = f"{new_holder_name()} {name}"
    if database.is_postgres:
        return ActivityReceipts(another_engine(database, application_name=holder), holder)
    return ActivityReceipts(database, holder, started_at)


async def _ended(receipts: ActivityReceipts) -> None:
    """The process is gone (killed): on PostgreSQL its sessions end with it."""
    await receipts._db.close()  # the test's way to end an instance's sessions


async def test_the_copy_of_a_turn_whose_process_died_runs_once(database: Database) -> None:
    """Killed mid-turn (after the receipt, before the answer): Teams' copy reaches the restarted process or another
    instance, and runs; a copy after that is not run again. Before, every copy was answered without a turn."""
    killed = _instance(database, "A", NOW)
    assert await killed.first_arrival("a:personal-1", "incoming-1", NOW + dt.timedelta(seconds=1))
    await _ended(killed)
    after = _instance(database, "B", NOW + dt.timedelta(seconds=5))
    assert await after.first_arrival("a:personal-1", "incoming-1", NOW + dt.timedelta(seconds=6))
    assert not await after.first_arrival("a:personal-1", "incoming-1", NOW + dt.timedelta(seconds=7))


async def test_the_copy_of_a_turn_done_is_not_run_also_when_its_process_ended_since(database: Database) -> None:
    first = _instance(database, "A", NOW)
    assert await first.first_arrival("a:personal-1", "incoming-1", NOW + dt.timedelta(seconds=1))
    await first.done("a:personal-1", "incoming-1")
    await _ended(first)
    after = _instance(database, "B", NOW + dt.timedelta(seconds=5))
    assert not await after.first_arrival("a:personal-1", "incoming-1", NOW + dt.timedelta(seconds=6))


async def test_the_copy_of_a_turn_still_running_is_not_run(database: Database) -> None:
    """On this process; and on PostgreSQL on another instance, while the one running the turn lives."""
    running = _instance(database, "A", NOW)
    assert await running.first_arrival("a:personal-1", "incoming-1", NOW + dt.timedelta(seconds=1))
    assert not await running.first_arrival("a:personal-1", "incoming-1", NOW + dt.timedelta(seconds=15))
    if database.is_postgres:
        other = _instance(database, "B", NOW)
        assert not await other.first_arrival("a:personal-1", "incoming-1", NOW + dt.timedelta(seconds=15))


async def test_on_postgresql_a_turn_running_longer_than_any_turn_lasts_is_a_dead_instances(
    postgres: PostgresServer,
) -> None:
    """A machine lost without closing its sockets: the server keeps its sessions until TCP gives up (hours)."""
    database = await postgres_database(postgres)
    lost = _instance(database, "A", NOW)
    assert await lost.first_arrival("a:personal-1", "incoming-1", NOW)
    other = _instance(database, "B", NOW)
    assert not await other.first_arrival("a:personal-1", "incoming-1", NOW + LONGEST_TURN - dt.timedelta(seconds=1))
    assert await other.first_arrival("a:personal-1", "incoming-1", NOW + LONGEST_TURN)


async def test_on_sqlite_receipts_that_know_no_start_take_over_no_turn(tmp_path: Path) -> None:
    """Two `ActivityReceipts` on one file without a start (a command's, a test's): neither takes the other's."""
    database = await sqlite_database(tmp_path / "bot.sqlite3")
    first, second = ActivityReceipts(database), ActivityReceipts(database)
    assert await first.first_arrival("a:personal-1", "incoming-1", NOW)
    assert not await second.first_arrival("a:personal-1", "incoming-1", NOW + dt.timedelta(hours=0.5))
