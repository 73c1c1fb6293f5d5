"""`status` over HTTP as time goes by: a referrer's list once more referrals are kept than one card shows."""

from __future__ import annotations

import datetime as dt

from bot.core.sent_referrals import ReferralState
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.card_reading import texts
from tests.support.stored_referrals import a_referral

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


async def test_a_referrer_with_more_than_50_kept_referrals_is_told_how_many_the_status_card_leaves_out(
    bot: BotDriver, referrer: TeamsUser
) -> None:
    """A nurse who refers a few families a week keeps more than 50 referrals within the 90 days a closed one is
    kept. Her oldest referral still waits for the OCMW's deletion ("De verwijdering uit de gedeelde mailbox is nog
    niet bevestigd"), the one thing on the list she may have to chase; the 59 after it are closed. The card shows 30
    and must say how many it leaves out (here 30, among them the one still open)."""
    start = dt.datetime(2026, 9, 1, 9, 0, tzinfo=dt.UTC)
    open_one = f"VD-{start:%Y%m%d}-OPENAA"
    await bot.services.referrals.add(a_referral(open_one, ReferralState.NO_HELP_WANTED, at=start, sent_at=start,
                                                outcome_at=start))
    closed = []
    for number in range(59):
        at = start + dt.timedelta(days=1 + number)
        suffix = "CL" + ALPHABET[number // len(ALPHABET)] + ALPHABET[number % len(ALPHABET)] + "AA"
        closed.append(f"VD-{at:%Y%m%d}-{suffix}")
        await bot.services.referrals.add(a_referral(closed[-1], ReferralState.DATA_DELETED, at=at,
                                                    sent_at=at, deleted_at=at))

    [answer] = await bot.say(referrer, "status")
    card = texts(answer["attachments"][0]["content"])
    assert "nog 30 niet getoond" in card, [part for part in card.split('"') if "getoond" in part]
    shown = [part for part in card.split('"') if part.startswith("VD-") and "Doorverwijzing" not in part]
    assert shown[0] == open_one, "the one still waiting for the OCMW comes first, not among those left out"
    assert shown[1:] == closed[::-1][:29], "then the closed ones, newest first"
