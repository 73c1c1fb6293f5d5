"""At most `TURNS_AT_ONCE` turns run at once; the others wait for a place, in the order they came.

Turns that all run at once share the event loop with the mail and Teams-message workers: each of a
worker's awaits then waits for a step of every turn in progress, and a mail queued by "Verstuur"
reached the relay only after hundreds of milliseconds of other people's clicks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import create_app
from bot.config import Settings
from bot.teams.handler import REPLY_ATTEMPTS
from tests.conftest import ZIP_PASSWORD
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.clock import ManualClock
from tests.support.keyvault_provider import until

#: Long enough for every request sent to reach the connector, were it let through (they take milliseconds).
GRACE_SECONDS = 0.5


@pytest.fixture
async def bot_two_at_once(tmp_path: Path, clock: ManualClock) -> AsyncIterator[BotDriver]:
    settings = Settings.from_mapping({
        "BOT_DATA_DIR": str(tmp_path / "data"),
        "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
        "RATE_LIMIT_ACTIONS_PER_MINUTE": "10000",
        "TURNS_AT_ONCE": "2",
    })
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as driver:
        try:
            yield driver
        finally:
            driver.connector.let_go()  # a test that failed while holding leaves no turn waiting


def _users(count: int) -> list[TeamsUser]:
    return [TeamsUser(aad_object_id=f"aad-referrer-{n}", name=f"Referrer {n}", conversation_id=f"a:personal-{n}")
            for n in range(count)]


async def test_no_more_turns_run_at_once_than_the_setting_allows(bot_two_at_once: BotDriver) -> None:
    bot = bot_two_at_once
    bot.connector.holding = True  # each "hulp" turn waits for its answer to reach Teams
    users = _users(6)
    posts = [asyncio.create_task(bot.post(user.message(bot.service_url, "hulp"))) for user in users]
    await until(lambda: bot.connector.held >= 2, 5, "two turns' replies held")
    await asyncio.sleep(GRACE_SECONDS)
    assert bot.connector.held == 2  # the other four wait for a place, not for Teams
    bot.connector.let_go()
    responses = await asyncio.gather(*posts)
    assert [response.status for response in responses] == [202] * 6
    answered = {call.path.split("/")[3] for call in bot.connector.accepted if call.method == "POST"}
    assert answered == {user.conversation_id for user in users}  # every turn ran, once its place came


async def test_a_waiting_turn_takes_the_place_a_finished_one_leaves(bot_two_at_once: BotDriver) -> None:
    bot = bot_two_at_once
    first, second, third = _users(3)
    bot.connector.holding = True
    held = [asyncio.create_task(bot.post(user.message(bot.service_url, "hulp"))) for user in (first, second)]
    await until(lambda: bot.connector.held >= 2, 5, "two turns' replies held")
    waiting = asyncio.create_task(bot.post(third.message(bot.service_url, "hulp")))
    await asyncio.sleep(GRACE_SECONDS)
    assert bot.connector.held == 2 and not waiting.done()
    bot.connector.let_go()
    assert [response.status for response in await asyncio.gather(*held, waiting)] == [202] * 3


async def test_a_turn_that_fails_gives_its_place_back(bot_two_at_once: BotDriver) -> None:
    bot = bot_two_at_once
    users = _users(3)
    bot.connector.fail_next(500, count=len(users) * REPLY_ATTEMPTS)  # every reply refused: each turn fails
    async with asyncio.timeout(10):  # a place never given back would leave the third turn waiting for ever
        for user in users:
            await bot.post(user.message(bot.service_url, "hulp"))
        assert not bot.connector.accepted
        card = await bot.act(users[0], "referral.start", {})
    assert card["type"] == "AdaptiveCard"  # a place was free: the failed turns let go of theirs
