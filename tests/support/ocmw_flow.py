"""The OCMW side driven over HTTP: link the channel, a referral delivered to it, the OCMW's clicks on it."""

from __future__ import annotations

from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.card_reading import actions, texts
from tests.support.referral_flow import PROTOCOL_ID, reach_review

CHANNEL = "19:ocmw-welzijnshuis@thread.tacv2"


def ocmw_worker() -> TeamsUser:
    """A member of the OCMW's linked channel."""
    return TeamsUser("aad-ocmw-1", "Olga Maatschappelijk", f"{CHANNEL};messageid=1700000000001", channel=True)


async def link(bot: BotDriver, worker: TeamsUser) -> None:
    """Link the worker's channel to the sample protocol with a fresh code (the channel then gets the cards
    of the referrals it still has to act on, after the answer)."""
    code = await bot.services.links.new_code(PROTOCOL_ID, bot.services.worker._clock.now())
    answer, *_ = await bot.say(worker, f"<at>Veilig doorverwijzen</at> koppel {code}")
    assert "Gekoppeld" in answer["text"]


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
    card_id = await bot.services.messages.slot_activity_id(f"ocmw:{reference}")
    assert card_id
    return reference, card_id


async def send_and_deliver(bot: BotDriver, referrer: TeamsUser) -> tuple[str, TeamsUser]:
    """A referral sent and delivered; returns its reference and the OCMW worker in its card's thread."""
    reference, card_id = await referred_and_delivered(bot, referrer)
    return reference, ocmw_worker().in_thread(card_id)


async def reported_wrong(bot: BotDriver, referrer: TeamsUser, worker: TeamsUser, reference: str,
                         item: str = "phone") -> str:
    """The OCMW reports `item` wrong; returns the id of the request the referrer's card carries."""
    await bot.act(worker, "referral.quality", {"reference": reference, "item": item})
    await bot.settle()
    [request] = [call.body["attachments"][0]["content"] for call in bot.connector.calls
                 if call.path.startswith(f"/v3/conversations/{referrer.conversation_id}/")
                 and call.body.get("attachments")
                 and "correction.submit" in actions(call.body["attachments"][0]["content"])]
    return str(actions(request)["correction.submit"]["correctionId"])


async def correct_phone(bot: BotDriver, referrer: TeamsUser, worker: TeamsUser, reference: str) -> str:
    """The OCMW reports the phone number wrong, the referrer corrects it; returns the new version's reference."""
    correction_id = await reported_wrong(bot, referrer, worker, reference)
    await bot.act(referrer, "correction.submit", {"correctionId": correction_id, "phone": "0470 11 22 33"})
    await bot.deliver()
    return f"{reference}-2"


async def confirm_deletion(bot: BotDriver, worker: TeamsUser, reference: str) -> None:
    """Receipt, "no help wanted", then the OCMW confirms it deleted the data."""
    await bot.act(worker, "ack.receive", {"reference": reference})
    await bot.act_confirmed(worker, "referral.outcome", {"reference": reference, "outcome": "contact_no_help_wanted"})
    card = await bot.act_confirmed(worker, "referral.deleted", {"reference": reference})
    assert "referral.deleted" not in actions(card)
    assert (await bot.services.referrals.get(reference)).state == "data_deleted"  # type: ignore[union-attr]
