"""Periodic jobs run once per period however many instances run, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from bot.storage.database import Database, to_text
from bot.storage.periodic_jobs import PeriodicJobs
from tests.support.clock import ManualClock
from tests.support.databases import another_engine
from tests.support.stored_referrals import NOW

HOUR = dt.timedelta(hours=1)


async def test_a_job_is_claimed_once_per_period(database: Database) -> None:
    clock = ManualClock(NOW)
    jobs = PeriodicJobs(database, clock, instance="bot-1")
    assert await jobs.claim("retention", HOUR), "never ran: due at once"
    assert not await jobs.claim("retention", HOUR)
    assert await jobs.claim("reminders", dt.timedelta(minutes=1)), "each job has its own period"
    clock.advance(HOUR - dt.timedelta(seconds=1))
    assert not await jobs.claim("retention", HOUR)
    clock.advance(dt.timedelta(seconds=1))
    assert await jobs.claim("retention", HOUR), "due again after the period"
    row = await database.fetch_one("SELECT * FROM job_runs WHERE name = 'retention'")
    assert row is not None and (row["last_instance"], row["last_started_at"]) == ("bot-1", to_text(clock.now()))


@pytest.mark.parametrize("first_run", [True, False], ids=["never-ran", "ran-before"])
async def test_two_instances_at_the_same_moment_run_it_once(database: Database, first_run: bool) -> None:
    clock = ManualClock(NOW)
    instances = [PeriodicJobs(db, clock, instance=f"bot-{number}")
                 for number, db in enumerate((database, another_engine(database)))]
    if not first_run:
        assert await instances[0].claim("reminders", HOUR)
        clock.advance(HOUR)
    ran: list[str] = []

    async def job(name: str) -> None:
        ran.append(name)

    for period in range(5):
        results = await asyncio.gather(*(jobs.run_once("reminders", HOUR, lambda jobs=jobs: job(jobs.instance))
                                         for jobs in instances))
        assert sorted(results) == [False, True] and len(ran) == period + 1
        last = await database.scalar("SELECT last_instance FROM job_runs WHERE name = 'reminders'")
        assert last == ran[-1]
        clock.advance(HOUR)


async def test_a_failing_job_keeps_its_period_and_the_next_period_runs_it_again(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(NOW)
    jobs = PeriodicJobs(database, clock)

    async def failing() -> None:
        raise OSError("disk full")

    assert await jobs.run_once("sweep", HOUR, failing)
    assert "periodic job sweep failed" in caplog.text
    ran: list[bool] = []

    async def job() -> None:
        ran.append(True)

    assert not await jobs.run_once("sweep", HOUR, job)
    clock.advance(HOUR)
    assert await jobs.run_once("sweep", HOUR, job) and ran == [True]


async def test_a_clock_stepped_back_does_not_stop_a_job_for_the_length_of_the_step(database: Database) -> None:
    """The job was claimed on a clock 2 minutes ahead; NTP steps it back. Its next run, stored on the clock as it
    was, lies further ahead than one period: it is due at once (it was due only after the step's 2 minutes)."""
    clock = ManualClock(NOW + 2 * dt.timedelta(minutes=1))
    jobs = PeriodicJobs(database, clock)
    second = dt.timedelta(seconds=1)
    assert await jobs.claim("sweep", second)
    clock.current = NOW
    assert await jobs.claim("sweep", second), "a next run 2 minutes past now + period is a step, not a claim"
    assert not await jobs.claim("sweep", second), "claimed again on the clock as it is now"
    clock.advance(second)
    assert await jobs.claim("sweep", second)


async def test_an_instance_that_read_the_time_just_before_another_claimed_does_not_run_it_too(
    database: Database,
) -> None:
    """B reads the time, A claims the period half a second later (by its clock), then B's update runs: A's
    next run lies half a second past B's `now + period`, which is no step of a clock."""
    a, b = (PeriodicJobs(db, ManualClock(NOW + moment)) for db, moment in (
        (database, dt.timedelta(seconds=0.5)), (another_engine(database), dt.timedelta(0))))
    assert await a.claim("sweep", HOUR)
    assert not await b.claim("sweep", HOUR)
