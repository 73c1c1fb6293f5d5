"""The database server's time as the instances' shared clock, on the suite's real PostgreSQL.

The instances' wall clocks are `ManualClock`s set minutes off the true time (the server keeps the
true time); the database is made unreachable by refusing new connections and ending the open ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterator

import pytest

from bot.clock import SystemClock
from bot.storage.database import Database
from bot.storage.database_clock import DatabaseClock
from tests.support.clock import ManualClock
from tests.support.databases import another_engine, postgres_database
from tests.support.postgres_server import PostgresServer

MINUTE = dt.timedelta(minutes=1)
#: How close two readings of the server's time must be (a round trip on this machine, under load).
CLOSE = dt.timedelta(seconds=0.5)


@pytest.fixture
async def db(postgres: PostgresServer) -> Database:
    return await postgres_database(postgres)


def off_by(minutes: float) -> ManualClock:
    """A wall clock `minutes` off the true time."""
    return ManualClock(dt.datetime.now(dt.UTC) + minutes * MINUTE)


async def server_time(db: Database) -> dt.datetime:
    moment: dt.datetime = await db.scalar("SELECT clock_timestamp() AS now")
    return moment


def near(moment: dt.datetime, expected: dt.datetime) -> bool:
    return abs(moment - expected) < CLOSE


async def test_an_aligned_clock_tells_the_server_time_whatever_the_wall_clock_says(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bot.storage.database_clock")
    wall = off_by(3)
    clock = DatabaseClock(db, wall=wall)
    assert clock.now() == wall.now(), "before the first alignment: the wall clock"
    assert await clock.align()
    assert near(clock.now(), await server_time(db))
    await asyncio.sleep(0.3)
    assert near(clock.now(), await server_time(db)), "it goes on with the time that passes"
    assert "wall clock is +180 s off the database server's" in caplog.text

    caplog.clear()
    assert await clock.align()
    assert "wall clock" not in caplog.text, "said once, not every minute"
    wall.current = dt.datetime.now(dt.UTC)  # NTP sets it right
    assert await clock.align()
    assert "within 5 s of the database server's again" in caplog.text


async def test_two_instances_minutes_apart_tell_the_same_time(db: Database) -> None:
    ahead, behind = DatabaseClock(db, wall=off_by(3)), DatabaseClock(another_engine(db), wall=off_by(-2))
    assert all(await asyncio.gather(ahead.align(), behind.align()))
    assert near(ahead.now(), behind.now())


async def test_a_step_of_the_wall_clock_changes_nothing(db: Database) -> None:
    wall = off_by(2)
    clock = DatabaseClock(db, wall=wall)
    assert await clock.align()
    wall.advance(-2 * MINUTE)  # NTP steps it back
    assert near(clock.now(), await server_time(db))
    wall.advance(10 * MINUTE)  # a VM resumed: stepped forward
    assert await clock.align()
    assert near(clock.now(), await server_time(db))


async def test_with_the_database_out_of_reach_it_goes_on_from_its_last_alignment(
    db: Database, postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Never aligned (the server was down at start): the wall clock. Aligned once: that alignment, carried on."""
    wall = off_by(3)
    clock = DatabaseClock(db, wall=wall)
    with unreachable(postgres, db):
        assert not await clock.align()
    assert clock.now() == wall.now()
    assert "it goes on from this instance's wall clock" in caplog.text

    assert await clock.align()
    aligned = clock.now()
    with unreachable(postgres, db):
        await asyncio.sleep(0.3)
        assert not await clock.align()
        assert "it goes on from its last alignment" in caplog.text
        assert near(clock.now(), aligned + dt.timedelta(seconds=0.3))
    assert await clock.align(), "aligned again once the server is back"
    assert near(clock.now(), await server_time(db))


class MonotonicAcrossSuspend:
    """`time.monotonic()` as Linux gives it: CLOCK_MONOTONIC stands still while the machine is suspended or
    paused (a VM hibernated or paused and resumed), while the server's clock and, once resumed, the wall clock
    go on."""

    def __init__(self) -> None:
        self.suspended = 0.0

    def __call__(self) -> float:
        return time.monotonic() - self.suspended

    def suspend(self, duration: dt.timedelta) -> None:
        self.suspended += duration.total_seconds()


async def test_after_a_suspend_the_clock_is_not_the_length_of_the_suspend_behind(db: Database) -> None:
    """Carried by the monotonic clock alone, the time lagged the server by the whole suspend until the next
    alignment, up to a minute later: the instance stamped leases, drafts' last change and clicks ten minutes in
    the past, so another instance took over a mail it was sending or wiped a draft it had just touched."""
    monotonic = MonotonicAcrossSuspend()
    clock = DatabaseClock(db, wall=SystemClock(), monotonic=monotonic)
    assert await clock.align()
    keeper = asyncio.create_task(clock.keep_aligned())  # as the app runs it
    try:
        monotonic.suspend(10 * MINUTE)  # ... resumed
        assert near(clock.now(), await server_time(db)), "at once: from the wall clock's progress"
        await asyncio.sleep(2.5)
        assert near(clock.now(), await server_time(db)), "and aligned again"
        assert not clock.diverged
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def test_an_alignment_that_waited_for_a_pooled_connection_does_not_put_the_clock_ahead(
    db: Database,
) -> None:
    """The reading was placed at the midpoint of the wait for a connection and the statement, though the server
    read its clock at the end: with every pooled connection busy for 4 s the clock went 2 s ahead of the server
    and of the other instances for a minute (leases ended early in their eyes, drafts wiped early)."""
    clock = DatabaseClock(db, wall=SystemClock())
    assert await clock.align()
    busy = [asyncio.create_task(db.scalar("SELECT pg_sleep(4) IS NULL AS slept")) for _ in range(5)]  # pool of 5
    await asyncio.sleep(0.3)
    try:
        await clock.align()  # the minute's alignment, on a loaded instance
        assert near(clock.now(), await server_time(db))
    finally:
        await asyncio.gather(*busy)


@contextlib.contextmanager
def unreachable(server: PostgresServer, db: Database) -> Iterator[None]:
    """While the block runs, `db`'s database takes no new connection and its open ones are ended."""
    name = str(db.engine.url.database)
    server.psql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    server.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")  # noqa: S608  # nosec B608  # its own name
    try:
        yield
    finally:
        server.psql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
