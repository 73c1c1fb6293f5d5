"""Teams sending an activity again is one turn: the retry of a typed message runs nothing twice.

Teams (the Bot Framework channel) sends an activity again when the bot's answer is late or fails;
each copy has the same `id` in the same conversation. A "nieuw" that ran twice opened two drafts
(two consent cards, a second "referral started" in the register the DPO reads); a retried
"melding datalek" two breach cards. Card actions are not de-duplicated: Teams needs their answer,
and every step is a compare-and-set that tells the second click what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.app import create_app
from bot.config import Settings
from tests.conftest import ZIP_PASSWORD
from tests.support.activities import TeamsUser
from tests.support.bot_process import bot_process, wait_until_ready
from tests.support.bot_server import BotDriver, driving, running_bot, running_connector
from tests.support.clock import ManualClock
from tests.support.connector import ConnectorStandIn
from tests.support.keyvault_provider import until
from tests.support.smtp_server import free_port

REFERRER = TeamsUser(aad_object_id="aad-referrer-1", name="Referrer", conversation_id="a:personal-1")


@pytest.fixture
async def bot(tmp_path: Path, clock: ManualClock) -> AsyncIterator[BotDriver]:
    settings = Settings.from_mapping({"BOT_DATA_DIR": str(tmp_path / "data"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD})
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as driver:
        try:
            yield driver
        finally:
            driver.connector.let_go()


def _replies(bot: BotDriver, user: TeamsUser) -> list[dict[str, object]]:
    return _replies_to(bot.connector, user)


def _replies_to(connector: ConnectorStandIn, user: TeamsUser) -> list[dict[str, object]]:
    here = f"/v3/conversations/{user.conversation_id}"
    return [call.body for call in connector.calls if call.method == "POST" and call.path.startswith(here)]


async def _started(bot: BotDriver) -> int:
    return int(await bot.services.db.scalar(
        "SELECT COUNT(*) AS n FROM register WHERE event = 'referral_started'") or 0)


async def test_a_message_teams_sends_again_runs_once(bot: BotDriver) -> None:
    start = REFERRER.message(bot.service_url, "nieuw")
    first = await bot.post(start)
    again = await bot.post(copy.deepcopy(start))
    assert (first.status, again.status) == (202, 202)  # Teams stops sending it again
    assert len(_replies(bot, REFERRER)) == 1, "one consent card"
    assert await bot.services.db.scalar("SELECT COUNT(*) AS n FROM drafts") == 1
    assert await _started(bot) == 1


async def test_the_copy_that_arrives_while_the_first_still_runs_is_answered_at_once(bot: BotDriver) -> None:
    """Teams' copy after 15 s, the first turn still waiting (here: for its reply to reach Teams)."""
    bot.connector.holding = True
    start = REFERRER.message(bot.service_url, "nieuw")
    first = asyncio.create_task(bot.post(start))
    await until(lambda: bot.connector.held >= 1, 5, "the first turn's reply held")
    async with asyncio.timeout(5):
        again = await bot.post(copy.deepcopy(start))
    assert again.status == 202 and not first.done()
    bot.connector.let_go()
    assert (await first).status == 202
    assert len(_replies(bot, REFERRER)) == 1
    assert await _started(bot) == 1


async def test_other_messages_are_not_taken_for_copies(bot: BotDriver) -> None:
    """A new id in the same conversation, and the same id in another conversation, each run."""
    other = TeamsUser(aad_object_id="aad-referrer-2", name="Other", conversation_id="a:personal-2")
    first = REFERRER.message(bot.service_url, "nieuw")
    same_id_elsewhere = other.message(bot.service_url, "nieuw")
    same_id_elsewhere["id"] = first["id"]
    for activity in (first, REFERRER.message(bot.service_url, "nieuw"), same_id_elsewhere):
        assert (await bot.post(activity)).status == 202
    assert len(_replies(bot, REFERRER)) == 2 and len(_replies(bot, other)) == 1
    assert await _started(bot) == 3


async def test_a_card_click_teams_sends_again_is_answered_again(bot: BotDriver) -> None:
    """An invoke's copy still gets its answer (Teams shows it); the step itself is a compare-and-set."""
    click = REFERRER.card_action(bot.service_url, "referral.start", {})
    answers = [await (await bot.post(copy.deepcopy(click))).json() for _ in range(2)]
    assert [answer["type"] for answer in answers] == ["application/vnd.microsoft.card.adaptive"] * 2


async def test_a_turn_cut_off_at_a_stop_lets_teams_copy_run(tmp_path: Path, clock: ManualClock) -> None:
    """A stop (a deploy) cancels a turn still waiting; Teams sends it again, to this or another instance."""
    settings = Settings.from_mapping({"BOT_DATA_DIR": str(tmp_path / "data"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD})
    async with running_connector() as (connector, service_url), aiohttp.ClientSession() as session:
        connector.holding = True
        runner = web.AppRunner(create_app(settings, clock=clock, run_worker=False), shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        start = REFERRER.message(service_url, "nieuw")
        first = asyncio.create_task(session.post(f"http://127.0.0.1:{port}/api/messages", json=start))
        await until(lambda: connector.held >= 1, 5, "the turn's reply held")
        await runner.cleanup()  # the stop: the turn is cancelled after the shutdown time
        with contextlib.suppress(aiohttp.ClientError):
            await first
        connector.let_go()
        async with driving(create_app(settings, clock=clock, run_worker=False), connector, service_url) as bot:
            assert (await bot.post(copy.deepcopy(start))).status == 202
            assert await _started(bot) == 2, "the copy ran: a new draft, a consent card"
        assert len(_replies_to(connector, REFERRER)) == 2


async def test_the_copy_of_a_turn_whose_process_was_killed_runs_after_the_restart(tmp_path: Path) -> None:
    """SIGKILL (out of memory, a crash) while "nieuw" waits for its reply to reach Teams: the receipt was taken,
    the turn never ended. Teams' copy, to the restarted process, runs: its consent card arrives. Before, the copy
    was answered without a turn and the user had to type again. A further copy is not run."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BOT_DATA_DIR": str(tmp_path / "data"), "PORT": str(port), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD}
    async with running_connector() as (connector, service_url), aiohttp.ClientSession() as session:
        start = REFERRER.message(service_url, "nieuw")
        connector.holding = True
        with bot_process(env, tmp_path / "bot.log") as killed:
            await wait_until_ready(url, session)
            first = asyncio.create_task(session.post(f"{url}/api/messages", json=start))
            await until(lambda: connector.held >= 1, 10, "the turn's reply held")
            killed.kill()
            killed.wait(timeout=10)
        with contextlib.suppress(aiohttp.ClientError):
            (await first).release()
        connector.let_go()
        held = len(_replies_to(connector, REFERRER))
        with bot_process(env, tmp_path / "bot.log"):
            await wait_until_ready(url, session)
            for _ in range(2):
                async with session.post(f"{url}/api/messages", json=copy.deepcopy(start)) as again:
                    assert again.status == 202
            await asyncio.sleep(0.5)  # time for a second card to arrive
        assert len(_replies_to(connector, REFERRER)) == held + 1, "the copy's consent card, once"
        assert "referral.consent" in str(_replies_to(connector, REFERRER)[-1])
