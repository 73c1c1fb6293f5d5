"""The referral dialogue driven step by step over HTTP, with recognisable client values."""

from __future__ import annotations

from typing import Any

from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.card_reading import actions, draft_id_of
from tests.support.sample_values import CLIENT_FORM, CLIENT_VALUES, CONSENT_ALL, MAILBOX, PROTOCOL_ID

__all__ = ["CLIENT_FORM", "CLIENT_VALUES", "CONSENT_ALL", "MAILBOX", "PROTOCOL_ID", "open_consent", "reach_review"]


async def open_consent(bot: BotDriver, user: TeamsUser) -> dict[str, Any]:
    """Type `nieuw` and return the consent card the bot posts."""
    posted = await bot.say(user, "nieuw")
    assert len(posted) == 1, posted
    card: dict[str, Any] = posted[0]["attachments"][0]["content"]
    assert "referral.consent" in actions(card)
    return card


async def reach_review(
    bot: BotDriver, user: TeamsUser, form: dict[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """Walk consent and data; returns the draft id and the review card."""
    consent_card = await open_consent(bot, user)
    draft_id = draft_id_of(consent_card)
    details_card = await bot.act(user, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    assert "referral.details" in actions(details_card), details_card
    review = await bot.act(user, "referral.details", {"draftId": draft_id, **(form or CLIENT_FORM)})
    assert "referral.send" in actions(review), review
    return draft_id, review
