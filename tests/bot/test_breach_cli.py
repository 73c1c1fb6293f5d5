"""`python -m bot breach-report`: both DPOs told, references and categories only, recorded."""

from __future__ import annotations

import argparse
import email
import email.policy

from bot.breach_cli import run_breach_command
from bot.config import Settings
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.clock import ManualClock
from tests.support.referral_flow import CLIENT_VALUES, reach_review


async def _sent_reference(bot: BotDriver, referrer: TeamsUser) -> str:
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    await bot.deliver()
    [referral] = bot.services.referrals.for_referrer(referrer.aad_object_id)
    return referral.reference


async def test_both_dpos_are_told_without_client_data(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock
) -> None:
    reference = await _sent_reference(bot, referrer)
    before = set(settings.outbox_dir.glob("*.eml"))

    status = await _run(settings, clock, [reference])

    assert status == 0
    [report] = set(settings.outbox_dir.glob("*.eml")) - before
    message = email.message_from_bytes(report.read_bytes(), policy=email.policy.default)
    assert "dpo@opgroeien.be" in message["To"] and "informatica@sint-gillis-waas.be" in message["To"]
    assert "artikel 9" in message["Subject"]
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert reference in text and "contact:phone" in text
    assert not [value for value in CLIENT_VALUES if value in report.read_text("utf-8", errors="replace")]
    assert bot.services.register.events_for(reference)[-1] == "breach_reported"


async def test_an_unknown_reference_sends_nothing(settings: Settings, clock: ManualClock, bot: BotDriver) -> None:
    assert await _run(settings, clock, ["VD-20261128-AAAAAA"]) == 2
    assert not settings.outbox_dir.exists() or not list(settings.outbox_dir.glob("*.eml"))


async def _run(settings: Settings, clock: ManualClock, references: list[str]) -> int:
    import asyncio

    arguments = argparse.Namespace(reference=references, reported_by="DPO Opgroeien")
    return await asyncio.to_thread(run_breach_command, arguments, settings, clock)
