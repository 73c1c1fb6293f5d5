"""Nothing waits forgotten: reminders for referrals the OCMW has not acknowledged.

After `working_days` working days (weekends and Belgian public holidays skipped) without
acknowledgement the OCMW conversation is reminded; after twice that, the referrer is told. Each
reminder is queued in the message outbox in the same commit that stores its moment, so a restart
neither skips nor repeats one, and a Teams outage delays it instead of losing it.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Container
from zoneinfo import ZoneInfo

import cards
from bot.chat_messages import MessageContent
from bot.clock import Clock
from bot.database import transaction
from bot.message_outbox import MessageOutbox
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
        connection: sqlite3.Connection,
        referrals: ReferralStore,
        links: OcmwLinks,
        registry: ProtocolRegistry,
        messages: MessageOutbox,
        clock: Clock,
        timezone: ZoneInfo,
        working_days: int,
        closed: Container[dt.date] | None = None,
    ) -> None:
        self._closed = belgian_public_holidays() if closed is None else closed
        self._db = connection
        self._referrals = referrals
        self._links = links
        self._registry = registry
        self._messages = messages
        self._clock = clock
        self._tz = timezone
        self._days = working_days

    async def run_due(self) -> int:
        """Queue every reminder that is due now; returns how many were queued."""
        now = self._clock.now()
        queued = 0
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
                with transaction(self._db):
                    self._referrals.update(referral.reference, reminded_ocmw_at=now)
                    self._messages.post(link.conversation_ref, MessageContent(text=text), now=now,
                                        reference=referral.reference)
                queued += 1
            if referral.reminded_referrer_at is None and second_due <= now:
                text = cards.text(cards.language_for(referral.lang), "reminder_referrer", reference=referral.reference,
                                  recipient=recipient, days=str(2 * self._days))
                with transaction(self._db):
                    self._referrals.update(referral.reference, reminded_referrer_at=now)
                    self._messages.post(referral.conversation_ref, MessageContent(text=text), now=now,
                                        reference=referral.reference)
                queued += 1
        return queued
