"""`status`: what became of my referrals (referrer), or what is still open (OCMW conversation)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import cards
from bot.core.protocols import ProtocolRegistry
from bot.core.sent_referrals import AWAITING_DELETION, ReferralStore, SentReferral
from bot.delivery.message_outbox import MessageOutbox
from bot.ocmw.links import OcmwLink
from bot.referral.dialogue import Actor, Card

_OUTCOME_NAMES = {"help_wanted": "contact_help_wanted", "no_help_wanted": "contact_no_help_wanted",
                  "unreachable": "unreachable"}


class StatusService:
    """Builds the status cards; references, states and times only, never client data."""

    def __init__(
        self, *, referrals: ReferralStore, registry: ProtocolRegistry, messages: MessageOutbox, timezone: ZoneInfo
    ) -> None:
        self._referrals = referrals
        self._messages = messages
        self._registry = registry
        self._tz = timezone

    async def for_referrer(self, actor: Actor) -> Card:
        """The referrer's own referrals, those still open first, newest first within each; as many as the card shows,
        and how many there are in all."""
        referrals = await self._referrals.for_referrer(actor.user_id, limit=cards.STATUS_MAX_ROWS)
        total = await self._referrals.count_for_referrer(actor.user_id)
        lost = await self._messages.given_up_for([referral.reference for referral in referrals])
        rows = [self._row(referral, lost) for referral in referrals]
        return cards.referral_status_card(actor.lang, audience="referrer", rows=rows, total=total)

    async def for_ocmw(self, actor: Actor, links: list[OcmwLink]) -> Card:
        """The open referrals of every protocol linked to this conversation, oldest first."""
        referrals = [referral for link in links
                     for referral in await self._referrals.open_for_protocol(link.protocol_id)]
        lost = await self._messages.given_up_for([referral.reference for referral in referrals])
        rows = [self._row(referral, lost) for referral in referrals]
        return cards.referral_status_card(actor.lang, audience="ocmw", rows=rows)

    def _row(self, referral: SentReferral, lost: set[str]) -> cards.StatusRow:
        return cards.StatusRow(
            reference=referral.reference,
            recipient=self._registry.recipient_name(referral.protocol_id),
            state=referral.state.value,
            queued_at=self._local(referral.queued_at),
            sent_at=self._local_or_none(referral.sent_at),
            acknowledged_at=self._local_or_none(referral.acknowledged_at),
            outcome=_OUTCOME_NAMES.get(referral.state.value),
            teams_message_lost=referral.reference in lost,
            awaiting_deletion=referral.state in AWAITING_DELETION,
        )

    def _local(self, moment: dt.datetime) -> dt.datetime:
        return moment.astimezone(self._tz)

    def _local_or_none(self, moment: dt.datetime | None) -> dt.datetime | None:
        return None if moment is None else moment.astimezone(self._tz)
