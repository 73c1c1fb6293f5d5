"""Referral records as `bot.core.sent_referrals.ReferralStore` keeps them, for the stores' contract tests.

No client data: a `SentReferral` has none, and the values here are the fixed ones of the shipped
protocol (`tests/support/sample_values.py`), so a test reads like the bot's own records.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from bot.core.sent_referrals import ReferralState, SentReferral
from tests.support.sample_values import PROTOCOL_ID

NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


def conversation_ref(conversation_id: str) -> str:
    """A stored Teams conversation reference (the part the message outbox reads)."""
    return json.dumps({"conversation": {"id": conversation_id}, "serviceUrl": "https://smba.example/emea/"})


def a_referral(reference: str, state: ReferralState = ReferralState.QUEUED, *, at: dt.datetime = NOW,
               **changes: Any) -> SentReferral:
    """A referral queued at `at` by the referrer `aad-referrer-1`, in `state`, with `changes` on top."""
    referral = SentReferral(
        reference=reference,
        protocol_id=PROTOCOL_ID,
        referrer_id="aad-referrer-1",
        referrer_name="An Verpleeg",
        conversation_id="a:personal-referrer",
        conversation_ref=conversation_ref("a:personal-referrer"),
        card_activity_id=None,
        lang="nl",
        state=state,
        key_version="3",
        message_id=f"<{reference}@doorverwijzen.example>",
        created_at=at - dt.timedelta(minutes=5),
        queued_at=at,
    )
    return dataclasses.replace(referral, **changes)
