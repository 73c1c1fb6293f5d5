"""The activity handler's replies inside a message turn, against a connector that does not answer.

Teams waits 15 s for the answer to an activity and then sends the activity again; a reply inside a
message turn ("hulp", "nieuw", "status") goes to the connector first. Each attempt could wait for the
whole `CONNECTOR_TIMEOUT`, and there are `REPLY_ATTEMPTS`: about a minute against a connector that
hangs, so "nieuw" ran twice (two drafts) and the turn held its place as long.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.teams import handler
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.keyvault_provider import until

#: What Teams waits for the answer to an activity before it sends the activity again.
TEAMS_ACTIVITY_TIMEOUT_SECONDS = 15.0


def test_every_reply_attempt_together_ends_well_before_teams_sends_the_activity_again() -> None:
    assert handler.REPLY_DEADLINE_SECONDS <= TEAMS_ACTIVITY_TIMEOUT_SECONDS / 2


async def test_a_message_turn_ends_at_the_reply_deadline_while_the_connector_hangs(
    bot: BotDriver, referrer: TeamsUser, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(handler, "REPLY_DEADLINE_SECONDS", 1.0)  # the mechanism, without waiting 8 s
    bot.connector.hanging = True
    started = time.monotonic()
    post = asyncio.create_task(bot.post(referrer.message(bot.service_url, "hulp")))
    try:
        await until(lambda: post.done(), 3, "the turn answered once its reply's deadline passed")
        assert (await post).status == 202
        assert 1.0 <= time.monotonic() - started < 2.0
        assert "reply not delivered to Teams: no answer within 1 s" in caplog.text
    finally:
        bot.connector.release()
        await post
