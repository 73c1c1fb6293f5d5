"""The referral dialogue driven step by step over HTTP, with recognisable client values."""

from __future__ import annotations

from typing import Any

from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.card_reading import actions, draft_id_of

CONSENT_ALL = {
    "informedData": "true",
    "informedRecipient": "true",
    "informedPurpose": "true",
    "informedFollowUp": "true",
    "consentGiven": "true",
}
PROTOCOL_ID = "OR-KG-NOW-OCMW-SGW-2026"
MAILBOX = "welzijnshuis@sint-gillis-waas.be"

#: Values chosen so that each one is unmistakable wherever it might leak.
CLIENT_FORM = {
    "firstName": "Zoëlle",
    "lastName": "Vandenbroeckx-D'Hondtje",
    "street": "Kerkstraatje Oost",
    "houseNumber": "127 bus 34",
    "postalCode": "9170",
    "municipality": "Meerdonk",
    "phone": "0470 98 76 54",
    "email": "zoelle.vdbx@example.be",
}
#: The values as they are stored after normalisation, for leak checks.
CLIENT_VALUES = ["Zoëlle", "Vandenbroeckx", "Kerkstraatje", "127 bus 34", "Meerdonk", "+32470987654",
                 "470987654", "0470 98 76 54", "zoelle.vdbx@example.be", "zoelle.vdbx"]


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
