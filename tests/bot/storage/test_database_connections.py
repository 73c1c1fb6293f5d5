"""The PostgreSQL connection pool under load and after the server closed connections, against a real server.

A pool that opens a connection per burst costs the server a process per connection (and asyncpg a
round of type lookups); a check that pings on every checkout costs three round trips (BEGIN, a
ping, ROLLBACK) per transaction. Both were a large part of the server's work per referral
(benchmarks/instances.py: 433 connections opened in one 25 s phase). What stays: a connection the
server closed (a restart, a failover, an idle cut) is never handed to a step.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event

from bot.storage.database import (
    LOCK_WAIT_SECONDS,
    Database,
    DatabaseError,
    DatabaseSettings,
    open_database,
)
from tests.support.databases import (
    OPENED,
    migrated_postgres_url,
    postgres_database,
    postgres_url,
    set_read_only,
    transaction_held_open,
)
from tests.support.keyvault_provider import until
from tests.support.postgres_server import PostgresServer
from tests.support.tcp_proxy import TcpProxy

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
    await asyncio.sleep(0)  # asyncpg calls its query loggers soon after each query, not in it
    # The transactions' BEGIN and COMMIT (the statements are prepared, which asyncpg does not log);
    # `pool_pre_ping` added a ping (";") for each of the 10 checkouts. A transaction runs at the session's
    # level (read committed; repeatable read for a read-only command's sessions).
    assert ";" not in sent
    assert sent == ["BEGIN;", "COMMIT;"] * 5


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


async def test_a_statement_waiting_for_a_row_lock_another_session_holds_gives_up_in_bounded_time(
        postgres: PostgresServer) -> None:
    """Another instance frozen mid-step, or a client the server has not yet found dead, holds the row: the step
    is told the database is busy after LOCK_WAIT_SECONDS, not after that session ends, and its connection is back."""
    db = await postgres_database(postgres)
    await db.execute("INSERT INTO job_runs (name, next_run_at, last_started_at, last_instance)"
                     " VALUES ('sweep', 'a', 'a', 'x')")
    assert db.settings is not None and db.settings.url is not None
    holder = await asyncpg.connect(db.settings.url.split("?", 1)[0])
    try:
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1 FROM job_runs WHERE name = 'sweep' FOR UPDATE")
        started = time.monotonic()
        with pytest.raises(DatabaseError, match="busy"):
            async with asyncio.timeout(LOCK_WAIT_SECONDS + 10), db.transaction():
                await db.execute("UPDATE job_runs SET last_instance = 'y' WHERE name = 'sweep'")
        waited = time.monotonic() - started
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()
    assert LOCK_WAIT_SECONDS - 0.5 <= waited <= LOCK_WAIT_SECONDS + 2, waited
    assert db.engine.sync_engine.pool.checkedout() == 0
    assert await db.scalar("SELECT last_instance FROM job_runs") == "x"


async def test_a_step_on_a_server_that_stopped_answering_gives_up_in_bounded_time(postgres: PostgresServer) -> None:
    """No FIN, no RST, no answer: the client gives up after `server_silence_seconds` (here 1 s) with the database
    unavailable, and the connection is dropped rather than rolled back or handed out again."""
    url = await migrated_postgres_url(postgres)
    proxy = TcpProxy(postgres.port)
    port = await proxy.start()
    db = open_database(DatabaseSettings(sqlite_path=Path("/nonexistent"), pool_size=2, server_silence_seconds=1.0,
                                        url=url.replace(f":{postgres.port}/", f":{port}/")))
    OPENED.append(db)
    try:
        assert await db.scalar("SELECT 1") == 1  # a pooled connection through the proxy
        proxy.vanished = True
        for step in ("in a transaction", "on its own"):
            started = time.monotonic()
            with pytest.raises(DatabaseError, match="unavailable"):
                async with asyncio.timeout(10):
                    if step == "on its own":
                        await db.execute("SELECT 1")
                    else:
                        async with db.transaction():
                            await db.execute("SELECT 1")
            waited = time.monotonic() - started
            assert waited <= 4, (step, waited)
            assert db.engine.sync_engine.pool.checkedout() == 0, step
    finally:
        await proxy.close()


async def test_limits_bound_every_session_and_are_lifted_only_for_work_that_runs_long(
        postgres: PostgresServer) -> None:
    """A migration's DDL or an import's one transaction may wait and run as long as it needs; nothing else."""
    db = await postgres_database(postgres)
    limits = "SELECT current_setting('lock_timeout') AS l, current_setting('statement_timeout') AS s," \
             " current_setting('idle_in_transaction_session_timeout') AS i"

    async def client_limit() -> object:
        raw = await db.current_connection().get_raw_connection()
        return raw.driver_connection._config.command_timeout  # type: ignore[union-attr]

    async with db.transaction():
        assert dict(await db.fetch_one(limits) or {}) == {"l": "3s", "s": "10s", "i": "1min"}
        assert await client_limit() == 15
    async with db.without_time_limits():
        assert dict(await db.fetch_one(limits) or {}) == {"l": "0", "s": "0", "i": "0"}
        assert await client_limit() is None
    async with db.transaction():
        assert dict(await db.fetch_one(limits) or {}) == {"l": "3s", "s": "10s", "i": "1min"}
        assert await client_limit() == 15


async def test_writes_a_read_only_server_refuses_are_a_database_error_reads_still_answer(
        postgres: PostgresServer) -> None:
    """A failover that leaves the bot on a standby, or Azure making a server read-only as its storage fills up: every
    write is refused with read_only_sql_transaction (25006). That is "probeer zo opnieuw" (`DatabaseError`) for a
    step, in a transaction or on its own; it was the driver's own error, which a click answered "Begin opnieuw"."""
    db = await postgres_database(postgres)
    await set_read_only(postgres, db)
    write = "INSERT INTO job_runs (name, next_run_at, last_started_at, last_instance) VALUES ('sweep', 'a', 'a', 'x')"
    with pytest.raises(DatabaseError, match=r"^database read-only$"):
        await db.execute(write)
    with pytest.raises(DatabaseError, match=r"^database read-only$"):
        async with db.transaction():
            await db.execute(write)
    assert await db.scalar("SELECT COUNT(*) FROM job_runs") == 0
    assert db.engine.sync_engine.pool.checkedout() == 0
