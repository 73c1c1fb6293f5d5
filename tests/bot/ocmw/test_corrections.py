"""Article 7 corrections under concurrent clicks: one correction per request, distinct versions per request.

Twenty identical "send correction" clicks at once (a double-click storm, Teams retrying) must send
one correction and tell the others it is already sent; two different requests at once must both
go out, as `-2` and `-3`. Over real HTTP, the clicks really concurrent, the ZIP password taking a
network round trip's time to arrive (as from Key Vault), so the clicks overlap inside the send.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.app import create_app
from bot.config import Settings
from bot.core.protocols import DataSharingProtocol
from bot.secrets.zip_passwords import LocalZipPasswordProvider, ZipPassword
from tests.conftest import ZIP_PASSWORD
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import actions, texts
from tests.support.clock import ManualClock
from tests.support.ocmw_flow import link, referred_and_delivered

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
BANNER_TYPE = "application/vnd.microsoft.activity.message"


class RoundTripPasswords:
    """The local password, handed out after 20 ms, like a Key Vault answer."""

    def __init__(self) -> None:
        self._local = LocalZipPasswordProvider(configured=ZIP_PASSWORD, password_file=Path("/nonexistent"))

    async def password_for(self, protocol: DataSharingProtocol) -> ZipPassword:
        await asyncio.sleep(0.02)
        return await self._local.password_for(protocol)

    async def keep_warm(self, protocols: Callable[[], list[DataSharingProtocol]]) -> None:
        return None


@pytest.fixture
async def bot(settings: Settings, clock: ManualClock) -> AsyncIterator[BotDriver]:
    app = create_app(settings, clock=clock, run_worker=False, passwords=RoundTripPasswords())
    async with running_bot(app) as driver:
        yield driver


async def _reported(bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, items: list[str]) -> tuple[
        str, dict[str, str]]:
    """A delivered referral, acknowledged, with `items` reported wrong; its reference and each item's request id."""
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": reference})
    for item in items:
        await bot.act(worker, "referral.quality", {"reference": reference, "item": item})
    await bot.settle()
    requests = [actions(c.body["attachments"][0]["content"])["correction.submit"]
                for c in bot.connector.calls
                if c.path.startswith(f"/v3/conversations/{referrer.conversation_id}/") and c.body.get("attachments")
                and "correction.submit" in actions(c.body["attachments"][0]["content"])]
    ids = {item: request["correctionId"] for item, request in zip(items, requests, strict=True)}
    return reference, ids


async def _submit_all(bot: BotDriver, referrer: TeamsUser, forms: list[dict[str, str]]) -> list[str]:
    """Every answer as text: a card (the correction is on its way) or a banner (it is not, and why)."""
    responses = await asyncio.gather(*(
        bot.post(referrer.card_action(bot.service_url, "correction.submit", form)) for form in forms
    ))
    assert [response.status for response in responses] == [200] * len(forms)
    bodies = [await response.json() for response in responses]
    assert all(body["type"] in (CARD_TYPE, BANNER_TYPE) for body in bodies)
    return [texts(body["value"]) if body["type"] == CARD_TYPE else str(body["value"]) for body in bodies]


async def test_twenty_identical_submits_send_one_correction(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    reference, ids = await _reported(bot, referrer, ocmw_worker, ["phone"])
    form = {"correctionId": ids["phone"], "phone": "0470 11 22 33"}
    answers = await _submit_all(bot, referrer, [form] * 20)
    versions = [row.reference for row in await bot.services.referrals.for_referrer(referrer.aad_object_id)
                if row.parent_reference == reference]
    assert versions == [f"{reference}-2"]
    already = [answer for answer in answers if "al verstuurd" in answer]
    assert len(already) == 19, [answer[:200] for answer in answers]
    assert all(f"{reference}-2" in answer for answer in answers)
    assert await bot.services.outbox.counts() == {"delivered": 1, "queued": 1}


async def test_two_different_corrections_at_once_get_distinct_versions(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    reference, ids = await _reported(bot, referrer, ocmw_worker, ["phone", "email"])
    answers = await _submit_all(bot, referrer, [
        {"correctionId": ids["phone"], "phone": "0470 11 22 33"},
        {"correctionId": ids["email"], "email": "nieuw.adres@example.be"},
    ])
    versions = sorted(row.reference for row in await bot.services.referrals.for_referrer(referrer.aad_object_id)
                      if row.parent_reference == reference)
    assert versions == [f"{reference}-2", f"{reference}-3"]
    assert {version for version in versions for answer in answers if version in answer} == set(versions)
    assert not [answer for answer in answers if "al verstuurd" in answer]
