"""Nothing waits forgotten: reminders while the OCMW has not acknowledged, recorded an outcome, or confirmed
deletion, and while a correction the OCMW asked for is not sent.

Each wait is a `Chase`: from the moment the referral entered the waiting state, after `N` working
days (weekends and Belgian public holidays skipped) the OCMW conversation is reminded, after `2N`
the referrer is told. A correction version is chased for its receipt only: the outcome and the
deletion are its family's, chased on the first version. Each reminder is queued in the message
outbox in the same commit that records it (table `reminders`), so a restart neither skips nor
repeats one, and a Teams outage delays it instead of losing it. A correction request is repeated
to the referrer every `N` working days until the correction goes out (article 7).
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

import cards
from bot.chat_messages import MessageContent
from bot.clock import Clock
from bot.database import from_text, to_text, transaction
from bot.message_outbox import MessageOutbox
from bot.ocmw_links import OcmwLinks
from bot.protocols import ProtocolRegistry
from bot.referrals import AWAITING_DELETION, CLOSED, ReferralState, ReferralStore, SentReferral
from bot.working_days import add_working_days, belgian_public_holidays

logger = logging.getLogger(__name__)

Audience = Literal["ocmw", "referrer"]


@dataclass(frozen=True)
class Chase:
    """One thing the OCMW owes, in which states, since when, and who is reminded after how long."""

    name: str
    states: frozenset[ReferralState]
    since: Callable[[SentReferral], dt.datetime | None]
    versions_too: bool  # correction versions are chased as well (receipt is per version)


CHASES: tuple[Chase, ...] = (
    Chase("ack", frozenset({ReferralState.SENT}), lambda r: r.sent_at, versions_too=True),
    Chase("outcome", frozenset({ReferralState.RECEIVED}), lambda r: r.acknowledged_at, versions_too=False),
    Chase("deletion", AWAITING_DELETION, lambda r: r.withdrawn_at or r.outcome_at, versions_too=False),
)
_CORRECTION = "correction_referrer"
#: Who is reminded, after how many times the configured working days, with which text.
_TURNS: tuple[tuple[Audience, int], ...] = (("ocmw", 1), ("referrer", 2))


class ReminderService:
    """Queues due reminders; run it every minute."""

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
        for chase in CHASES:
            for referral in self._referrals.in_states(chase.states):
                if referral.parent_reference is not None and not chase.versions_too:
                    continue
                started = chase.since(referral)
                if started is None:
                    continue
                for audience, times in _TURNS:
                    if self._remind(chase, referral, started, audience, times, now):
                        queued += 1
        return queued + self._remind_corrections(now)

    def _remind_corrections(self, now: dt.datetime) -> int:
        """Article 7: the referrer is reminded every N working days until the correction the OCMW asked for is sent."""
        rows = self._db.execute(
            "SELECT c.id, c.reference, c.item, c.requested_at, r.at AS last FROM corrections AS c"
            " LEFT JOIN reminders AS r ON r.subject = c.id AND r.kind = ?"
            " WHERE c.new_reference IS NULL AND c.kind = 'reported'",
            (_CORRECTION,),
        ).fetchall()
        queued = 0
        for row in rows:
            original = self._referrals.get(str(row["reference"]))
            if original is None or original.state in CLOSED:
                continue
            since = from_text(row["last"] or row["requested_at"]).astimezone(self._tz)
            if add_working_days(since, self._days, self._closed) > now:
                continue
            lang = cards.language_for(original.lang)
            text = cards.text(lang, "reminder_correction_referrer", reference=original.reference,
                              recipient=self._registry.recipient_name(original.protocol_id),
                              item=cards.text(lang, f"item.{row['item']}.name"))
            with transaction(self._db):
                self._db.execute(
                    "INSERT INTO reminders (subject, kind, at) VALUES (?, ?, ?)"
                    " ON CONFLICT (subject, kind) DO UPDATE SET at = excluded.at",
                    (str(row["id"]), _CORRECTION, to_text(now)),
                )
                self._messages.post(original.conversation_ref, MessageContent(text=text), now=now,
                                    reference=original.reference)
            queued += 1
        return queued

    def _remind(self, chase: Chase, referral: SentReferral, started: dt.datetime, audience: Audience, times: int,
                now: dt.datetime) -> bool:
        """Queue this reminder if it is due and not sent before; True when queued."""
        kind = f"{chase.name}_{audience}"
        due = add_working_days(started.astimezone(self._tz), times * self._days, self._closed)
        if due > now or self._already(referral.reference, kind):
            return False
        if audience == "ocmw":
            link = self._links.for_protocol(referral.protocol_id)
            if link is None:
                return False
            target, lang = link.conversation_ref, cards.language_for("nl")
        else:
            target, lang = referral.conversation_ref, cards.language_for(referral.lang)
        text = cards.text(lang, f"reminder_{kind}", reference=referral.reference, days=str(times * self._days),
                          recipient=self._registry.recipient_name(referral.protocol_id))
        with transaction(self._db):
            self._db.execute("INSERT INTO reminders (subject, kind, at) VALUES (?, ?, ?)",
                             (referral.reference, kind, to_text(now)))
            self._messages.post(target, MessageContent(text=text), now=now, reference=referral.reference)
        logger.info("reminder queued", extra={"reference": referral.reference, "kind": kind})
        return True

    def _already(self, subject: str, kind: str) -> bool:
        row = self._db.execute("SELECT 1 FROM reminders WHERE subject = ? AND kind = ?", (subject, kind)).fetchone()
        return row is not None
