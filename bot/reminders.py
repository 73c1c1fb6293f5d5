"""Nothing waits forgotten: reminders for referrals the OCMW has not acknowledged.

After `working_days` working days (weekends and Belgian public holidays skipped) without
acknowledgement the OCMW conversation is reminded; after twice that, the referrer is told. Both
moments are stored, so a restart neither skips nor repeats a reminder.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Container
from zoneinfo import ZoneInfo

import cards
from bot.clock import Clock
from bot.notifications import NotificationError, Notifier
from bot.ocmw_links import OcmwLinks
from bot.protocols import ProtocolRegistry
from bot.referrals import ReferralState, ReferralStore
from bot.working_days import add_working_days, belgian_public_holidays

logger = logging.getLogger(__name__)


class ReminderService:
    """Sends due reminders; run it every minute."""

    def __init__(
        self,
        *,
        referrals: ReferralStore,
        links: OcmwLinks,
        registry: ProtocolRegistry,
        notifier: Notifier,
        clock: Clock,
        timezone: ZoneInfo,
        working_days: int,
        closed: Container[dt.date] | None = None,
    ) -> None:
        self._closed = belgian_public_holidays() if closed is None else closed
        self._referrals = referrals
        self._links = links
        self._registry = registry
        self._notifier = notifier
        self._clock = clock
        self._tz = timezone
        self._days = working_days

    async def run_due(self) -> int:
        """Send every reminder that is due now; returns how many were sent."""
        now = self._clock.now()
        sent = 0
        for referral in self._referrals.in_state(ReferralState.SENT):
            if referral.sent_at is None:
                continue
            start = referral.sent_at.astimezone(self._tz)
            link = self._links.for_protocol(referral.protocol_id)
            recipient = self._registry.recipient_name(referral.protocol_id)
            first_due = add_working_days(start, self._days, self._closed)
            second_due = add_working_days(start, 2 * self._days, self._closed)
            if referral.reminded_ocmw_at is None and link is not None and first_due <= now:
                text = cards.text("nl", "reminder_ocmw", reference=referral.reference, days=str(self._days))
                if await self._send(link.conversation_ref, text, referral.reference):
                    self._referrals.update(referral.reference, reminded_ocmw_at=now)
                    sent += 1
            if referral.reminded_referrer_at is None and second_due <= now:
                text = cards.text(cards.language_for(referral.lang), "reminder_referrer", reference=referral.reference,
                                  recipient=recipient, days=str(2 * self._days))
                if await self._send(referral.conversation_ref, text, referral.reference):
                    self._referrals.update(referral.reference, reminded_referrer_at=now)
                    sent += 1
        return sent

    async def _send(self, conversation_ref: str, text: str, reference: str) -> bool:
        try:
            await self._notifier.send_text(conversation_ref, text)
        except NotificationError:
            logger.exception("reminder not sent; it is tried again next round", extra={"reference": reference})
            return False
        return True
