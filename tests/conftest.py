"""Fixtures shared by the suite: settings in a temporary folder, a manual clock, a running bot."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gc
import inspect
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.app import create_app
from bot.config import Settings, TelemetryConfig
from bot.operations.telemetry import telemetry_from_settings
from bot.storage.database import Database
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.clock import ManualClock
from tests.support.databases import BACKENDS, postgres_database, sqlite_database
from tests.support.ocmw_flow import CHANNEL
from tests.support.postgres_server import PostgresServer, postgres_server

ZIP_PASSWORD = "K7M2QX9PLR4TWB8N6VHJ3CZD"
#: The tests' client shows a click's reply before it takes its next step: the bot's edits after a click need not
#: wait for the reply to land (tests/bot/delivery/test_mail_delivery.py tests that wait).
REPLIES_SHOWN_AT_ONCE = {"TEAMS_CLICK_REPLY_SECONDS": "0"}
#: Turns of the event loop that tasks still ending (their cancellation delivered) get after the test.
TASKS_GRACE_TURNS = 3
#: Then how long a task found still running may take to end before the loop's close cancels it.
TASKS_GRACE_SECONDS = 2.0


def _is_async_test(request: pytest.FixtureRequest) -> bool:
    """Only an async test has an event loop whose tasks, connections and transports can outlive it."""
    return inspect.iscoroutinefunction(request.function)


@pytest.fixture(autouse=True)
def _garbage_of_an_async_test_is_its_own(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect an async test's garbage when it and its event loop are done (set up first, torn down last).

    A connection or transport left unclosed in a reference cycle warns only when a full collection
    reaches it, in whatever test runs one: CI failed in tests/bot/secrets on an asyncpg connection an
    unknown earlier test had left. Collected here, the warning fails the test that left it. What
    survives is alive, so it is frozen (never unfrozen): the next test's collection walks only what
    came after, not the whole run's heap (a full collection after every test made the run twice as long).
    """
    yield
    if _is_async_test(request):
        gc.collect()
        gc.freeze()


@pytest.fixture(autouse=True)
def _nothing_outlives_an_async_test(request: pytest.FixtureRequest) -> None:
    """For an async test, check that no task it started is still running when it and its fixtures are done."""
    if _is_async_test(request):
        request.getfixturevalue("_no_task_left_running")


@pytest.fixture
async def _no_task_left_running() -> AsyncIterator[None]:
    """Set up before, so torn down after, every other fixture of the test.

    A task left running (a delivery lane, once) is cancelled by the event loop's close, and one that
    does not end then hangs the whole run: this fails the test that left it instead, naming it.
    """
    yield
    for _ in range(TASKS_GRACE_TURNS):
        await asyncio.sleep(0)
    current = asyncio.current_task()
    running = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    names = sorted(getattr(task.get_coro(), "__qualname__", repr(task)) for task in running)
    if running:  # let them end first: cancelled again by the loop's close, a lane hung the whole run
        await asyncio.wait(running, timeout=TASKS_GRACE_SECONDS)
    assert not names, f"tasks still running after the test and its fixtures: {names}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The suite's own PostgreSQL server, started on first use (a temporary cluster on a free port)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_tls() -> Iterator[PostgresServer]:
    """A second server set up as Azure's: TLS and a password (scram-sha-256) required over TCP."""
    with postgres_server(tls=True) as server:
        yield server


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """A fresh, migrated database of each backend: the contract every store keeps on both."""
    if request.param == "sqlite":
        return await sqlite_database(tmp_path / "bot.sqlite3")
    return await postgres_database(request.getfixturevalue("postgres"))


@pytest.fixture
def clock() -> ManualClock:
    """28 November 2026, 10:00 in Brussels: the protocol has been in force since 1 March."""
    return ManualClock(dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_mapping(
        {
            "BOT_DATA_DIR": str(tmp_path / "data"),
            "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
            # The fuzz tests fire thousands of actions; tests/bot/core/test_access.py tests the limits themselves.
            "RATE_LIMIT_STARTS_PER_HOUR": "10000",
            "RATE_LIMIT_ACTIONS_PER_MINUTE": "10000",
            **REPLIES_SHOWN_AT_ONCE,
        }
    )


@pytest.fixture
async def bot(settings: Settings, clock: ManualClock) -> AsyncIterator[BotDriver]:
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as driver:
        yield driver


@pytest.fixture
async def metered_bot(settings: Settings, clock: ManualClock) -> AsyncIterator[BotDriver]:
    """The bot with `METRICS_PORT=0` (a free loopback port), as `make run` has it on 9464 and the alerts read it."""
    settings = dataclasses.replace(settings, telemetry=TelemetryConfig(metrics_port=0))
    app = create_app(settings, clock=clock, run_worker=False, telemetry=telemetry_from_settings(settings.telemetry))
    async with running_bot(app) as driver:
        yield driver


@pytest.fixture
def referrer() -> TeamsUser:
    return TeamsUser(aad_object_id="aad-referrer-1", name="An Verpleeg", conversation_id="a:personal-referrer")


@pytest.fixture
def colleague() -> TeamsUser:
    return TeamsUser(aad_object_id="aad-colleague-2", name="Bert Collega", conversation_id="a:personal-colleague")


@pytest.fixture
def ocmw_worker() -> TeamsUser:
    return TeamsUser("aad-ocmw-1", "Olga Maatschappelijk", f"{CHANNEL};messageid=1700000000001", channel=True)


@pytest.fixture
def second_worker() -> TeamsUser:
    return TeamsUser("aad-ocmw-2", "Omar Collega", CHANNEL, channel=True)


@pytest.fixture
def outsider() -> TeamsUser:
    return TeamsUser("aad-outsider", "Otto Buiten", "19:other-team@thread.tacv2", channel=True)
