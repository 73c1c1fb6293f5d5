"""The OCMW side driven over HTTP: link the channel, a referral delivered to it."""

from __future__ import annotations

from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.card_reading import texts
from tests.support.referral_flow import PROTOCOL_ID, reach_review

CHANNEL = "19:ocmw-welzijnshuis@thread.tacv2"


async def link(bot: BotDriver, worker: TeamsUser) -> None:
    code = bot.services.links.new_code(PROTOCOL_ID, bot.services.worker._clock.now())
    [reply] = await bot.say(worker, f"<at>Veilig doorverwijzen</at> koppel {code}")
    assert "Gekoppeld" in reply["text"]


async def referred_and_delivered(bot: BotDriver, referrer: TeamsUser) -> tuple[str, str]:
    """A referral sent and delivered; returns its reference and the OCMW card's activity id."""
    draft_id, _ = await reach_review(bot, referrer)
    queued = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    [reference] = [word for word in texts(queued).replace('"', " ").split() if word.startswith("VD-")][:1]
    before = len(bot.connector.calls)
    await bot.deliver()
    posts = [
        c for c in bot.connector.calls[before:]
        if c.method == "POST" and c.path.startswith(f"/v3/conversations/{CHANNEL}/")
    ]
    assert posts, "a card was posted in the OCMW channel"
    card_id = bot.services.messages.slot_activity_id(f"ocmw:{reference}")
    assert card_id
    return reference, card_id
