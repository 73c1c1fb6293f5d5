"""Exactly-once in effect: a SIGKILLed bot with queued mail and SMTP down sends each referral once.

The real bot process (`python -m bot serve`) with the real SMTP transport and a real aiosmtpd
server: queue referrals while SMTP is down, kill -9 the bot, restart it, bring SMTP up, and
count the messages per Message-ID at the server.
"""

from __future__ import annotations

import asyncio
import collections
import email
import email.policy
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.support.activities import TeamsUser
from tests.support.bot_process import bot_process, wait_until_ready
from tests.support.bot_server import serve
from tests.support.connector import ConnectorStandIn
from tests.support.referral_flow import CLIENT_FORM, CONSENT_ALL, PROTOCOL_ID
from tests.support.smtp_server import free_port, smtp_server

REFERRALS = 3
ZIP_PASSWORD = "K7M2QX9PLR4TWB8N6VHJ3CZD"


@asynccontextmanager
async def connector() -> AsyncIterator[tuple[ConnectorStandIn, str]]:
    stand_in = ConnectorStandIn()
    async with serve(stand_in.app()) as url:
        yield stand_in, url


async def refer(session: aiohttp.ClientSession, bot_url: str, service_url: str, user: TeamsUser) -> None:
    async def act(verb: str, data: dict[str, str]) -> dict[str, object]:
        activity = user.card_action(service_url, verb, data)
        async with session.post(f"{bot_url}/api/messages", json=activity) as response:
            assert response.status == 200
            body: dict[str, object] = await response.json()
            return body

    start = await act("referral.start", {})
    value = start["value"]
    assert isinstance(value, dict)
    draft_id = next(a["data"]["draftId"] for a in value["actions"] if a["verb"] == "referral.consent")
    await act("referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    await act("referral.details", {"draftId": draft_id, **CLIENT_FORM})
    queued = await act("referral.send", {"draftId": draft_id})
    assert "VD-" in str(queued)


async def test_sigkill_with_queued_mail_and_smtp_down_sends_each_referral_exactly_once(tmp_path: Path) -> None:
    with smtp_server(tls="starttls") as smtp:
        smtp.stop()  # SMTP is down while the referrals are made
        bot_port = free_port()
        env = {
            **os.environ,
            "BOT_DATA_DIR": str(tmp_path / "data"),
            "PORT": str(bot_port),
            "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
            "MAIL_TRANSPORT": "smtp",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp.port),
            "SMTP_CA_FILE": str(smtp.ca_path),
            "SMTP_TIMEOUT_SECONDS": "5",
            "OUTBOX_RETRY_INITIAL_SECONDS": "1",
            "OUTBOX_RETRY_MAX_SECONDS": "1",
            "OUTBOX_LEASE_SECONDS": "10",  # a mail the killed process held is due again after this
        }
        bot_url = f"http://127.0.0.1:{bot_port}"
        log = tmp_path / "bot.log"
        async with connector() as (_, service_url), aiohttp.ClientSession() as session:
            with bot_process(env, log) as first:
                await wait_until_ready(bot_url, session)
                for number in range(REFERRALS):
                    user = TeamsUser(f"aad-{number}", f"Verpleeg {number}", f"a:personal-{number}")
                    await refer(session, bot_url, service_url, user)
                await asyncio.sleep(1.5)  # the worker has tried (and failed) at least once
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
            assert smtp.messages == []

            smtp.start()
            with bot_process(env, log):
                await wait_until_ready(bot_url, session)
                deadline = time.monotonic() + 40
                while len(smtp.messages) < REFERRALS and time.monotonic() < deadline:  # noqa: ASYNC110 - another process
                    await asyncio.sleep(0.2)
                await asyncio.sleep(2.5)  # time for any duplicate to show up

        message_ids = collections.Counter(
            email.message_from_bytes(mail.data, policy=email.policy.default)["Message-ID"] for mail in smtp.messages
        )
        assert len(message_ids) == REFERRALS, log.read_text()
        assert set(message_ids.values()) == {1}, message_ids
        assert "Connection refused" in log.read_text() or "ECONNREFUSED" in log.read_text()
