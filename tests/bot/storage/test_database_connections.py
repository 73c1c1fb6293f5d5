"""The PostgreSQL connection pool under load and after the server closed connections, against a real server.

A pool that opens a connection per burst costs the server a process per connection (and asyncpg a
round of type lookups); a check that pings on every checkout costs three round trips (BEGIN, a
ping, ROLLBACK) per transaction. Both were a large part of the server's work per referral
(benchmarks/instances.py: 433 connections opened in one 25 s phase). What stays: a connection the
server closed (a restart, a failover, an idle cut) is never handed to a step.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event

from bot.storage.database import Database, DatabaseError, DatabaseSettings, open_database
from tests.support.databases import OPENED, postgres_url, transaction_held_open
from tests.support.keyvault_provider import until
from tests.support.postgres_server import PostgresServer

pytestmark = pytest.mark.asyncio


def _open(server: PostgresServer, pool_size: int, pool_wait_seconds: float = 10.0) -> Database:
    db = open_database(DatabaseSettings(sqlite_path=Path("/nonexistent"), url=postgres_url(server),
                                        pool_size=pool_size, pool_wait_seconds=pool_wait_seconds))
    OPENED.append(db)
    return db


def _count_connects(db: Database) -> list[int]:
    opened = [0]

    @event.listens_for(db.engine.sync_engine, "connect")
    def count(*_: Any) -> None:
        opened[0] += 1

    return opened


async def _driver_connection(db: Database) -> asyncpg.Connection:
    """The asyncpg connection under the current transaction's connection."""
    raw = await db.current_connection().get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


async def test_bursts_wider_than_the_pool_reuse_its_connections(postgres: PostgresServer) -> None:
    db = _open(postgres, pool_size=4)
    opened = _count_connects(db)

    async def step(number: int) -> int:
        async with db.transaction():
            await db.execute("SELECT pg_sleep(0.01)")
            return int(await db.scalar("SELECT CAST(:n AS integer)", {"n": number}))

    for _ in range(3):  # three bursts of 30 steps at once, each wider than the pool
        assert await asyncio.gather(*(step(number) for number in range(30))) == list(range(30))
    assert opened[0] == 4  # a pool with overflow opened (and closed) up to 4 more per burst: 16 in all


async def test_a_checkout_sends_nothing_to_the_server(postgres: PostgresServer) -> None:
    db = _open(postgres, pool_size=1)
    sent: list[str] = []
    async with db.transaction():
        driver = await _driver_connection(db)
    driver.add_query_logger(lambda record: sent.append(record.query))
    for number in range(5):
        assert await db.scalar("SELECT CAST(:n AS integer)", {"n": number}) == number
        async with db.transaction():
            await db.execute("SELECT 1")
    # Only the statements themselves (SQLAlchemy's BEGIN and COMMIT are protocol calls, not logged
    # queries); `pool_pre_ping` added a ping (";") for each of the 10 checkouts.
    assert ";" not in sent
    assert len(sent) == 10


async def test_a_connection_the_server_closed_is_replaced_not_used(postgres: PostgresServer) -> None:
    db = _open(postgres, pool_size=3)
    held = asyncio.Barrier(3)
    drivers: list[asyncpg.Connection] = []

    async def hold_one() -> None:  # three at once: three connections in the pool afterwards
        async with db.transaction():
            drivers.append(await _driver_connection(db))
            await held.wait()

    await asyncio.gather(*(hold_one() for _ in range(3)))
    pids = ",".join(str(driver.get_server_pid()) for driver in drivers)
    # What a restart or failover does to every open connection; waits (up to 5 s) until they are gone.
    terminate = f"SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE pid IN ({pids})"  # noqa: S608 - ints
    await asyncio.to_thread(postgres.psql, terminate)
    await until(lambda: all(driver.is_closed() for driver in drivers), 5, "asyncpg saw the connections close")

    async def step() -> int:
        async with db.transaction():
            return int(await db.scalar("SELECT 7"))

    assert list(await asyncio.gather(step(), step(), step(), return_exceptions=True)) == [7, 7, 7]


async def test_a_step_that_waits_too_long_for_a_connection_is_told_the_database_is_busy(
        postgres: PostgresServer) -> None:
    db = _open(postgres, pool_size=1, pool_wait_seconds=0.2)
    async with transaction_held_open(db):
        with pytest.raises(DatabaseError, match="busy"):
            await db.scalar("SELECT 1")
    assert await db.scalar("SELECT 1") == 1


async def test_a_statement_on_its_own_that_a_step_gives_up_on_gives_its_connection_back(
        postgres: PostgresServer) -> None:
    """A statement on its own runs checkout, statement and return in one pass through SQLAlchemy's async bridge:
    a step that stops waiting for it (a timeout, a client gone) still leaves the pool whole, and the server
    is not left running the abandoned statement for the next user of the connection."""
    db = _open(postgres, pool_size=1, pool_wait_seconds=2.0)
    for _ in range(3):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await db.execute("SELECT pg_sleep(5)")
        async with asyncio.timeout(3):  # not behind the abandoned 5-second statement on the one connection
            assert await db.scalar("SELECT CAST(:n AS integer)", {"n": 7}) == 7
        assert db.engine.sync_engine.pool.checkedout() == 0
