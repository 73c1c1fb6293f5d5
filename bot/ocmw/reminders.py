"""Nothing waits forgotten: reminders while the OCMW has not acknowledged, recorded an outcome, or confirmed
deletion, and while a correction the OCMW asked for is not sent.

Each wait is a `Chase`: from the moment the referral entered the waiting state, after `N` working
days (weekends and Belgian public holidays skipped) the OCMW conversation is reminded, after `2N`
the referrer is told. A correction version is chased for its receipt only: the outcome and the
deletion are its family's, chased on the first version. Each reminder is queued in the message
outbox in the same commit that records it (table `reminders`), so a restart neither skips nor
repeats one, and a Teams outage delays it instead of losing it. A correction request is repeated
to the referrer every `N` working days until the correction goes out (article 7), while its protocol is in
force (after its end a correction, a new transfer, is refused).

A pass asks the database only for what may be due: referrals in a waiting state that entered it at
least `N` calendar days ago (a working day is never shorter) and have no such reminder yet, so the
work per pass follows what is waiting, not how many referrals are kept. With several instances the
pass runs on one of them per period (`bot.storage.periodic_jobs`), and a reminder's row is inserted only if
absent: should two passes ever overlap, one queues the message and the other nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

import cards
from bot.clock import Clock
from bot.core.protocols import ProtocolRegistry
from bot.core.sent_referrals import (
    AWAITING_DELETION,
    ReferralState,
    ReferralStore,
    SentReferral,
    referral_from_row,
)
from bot.delivery.chat_messages import MessageContent
from bot.delivery.message_outbox import MessageOutbox
from bot.ocmw.corrections import CORRECTION_REMINDER, RequestCards, awaits_correction
from bot.ocmw.links import OcmwLinks
from bot.ocmw.working_days import add_working_days, belgian_public_holidays
from bot.storage.database import Database, from_text, to_text

logger = logging.getLogger(__name__)

Audience = Literal["ocmw", "referrer"]


@dataclass(frozen=True)
class Chase:
    """One thing the OCMW owes, in which states, since when (a column), and whether versions are chased too."""

    name: str
    states: frozenset[ReferralState]
    since: str  # SQL over `referrals`: when the referral entered the waiting state
    versions_too: bool  # correction versions are chased as well (receipt is per version)


CHASES: tuple[Chase, ...] = (
    Chase("ack", frozenset({ReferralState.SENT}), "sent_at", versions_too=True),
    Chase("outcome", frozenset({ReferralState.RECEIVED}), "acknowledged_at", versions_too=False),
    Chase("deletion", AWAITING_DELETION, "COALESCE(withdrawn_at, outcome_at)", versions_too=False),
)
_CORRECTION = CORRECTION_REMINDER
#: Who is reminded, after how many times the configured working days, with which text.
_TURNS: tuple[tuple[Audience, int], ...] = (("ocmw", 1), ("referrer", 2))


class ReminderService:
    """Queues due reminders; run it every minute."""

    def __init__(
        self,
        *,
        db: Database,
        referrals: ReferralStore,
        links: OcmwLinks,
        registry: ProtocolRegistry,
        messages: MessageOutbox,
        clock: Clock,
        timezone: ZoneInfo,
        working_days: int,
        calendar: Callable[[], Container[dt.date]] = belgian_public_holidays,
    ) -> None:
        #: Loaded by the first pass, in a thread: the `holidays` package takes ~75 ms of CPU to load
        #: (all its countries), which is neither for start-up nor for the event loop.
        self._calendar = calendar
        self._closed: Container[dt.date] = frozenset()
        self._calendar_loaded = False
        self._db = db
        self._referrals = referrals
        self._links = links
        self._registry = registry
        self._messages = messages
        self._clock = clock
        self._tz = timezone
        self._days = working_days
        self._request_cards = RequestCards(registry, messages)

    async def run_due(self) -> int:
        """Queue every reminder that is due now; returns how many were queued."""
        if not self._calendar_loaded:
            self._closed = await asyncio.to_thread(self._calendar)
            self._calendar_loaded = True
        now = self._clock.now()
        queued = 0
        for chase in CHASES:
            for audience, times in _TURNS:
                kind = f"{chase.name}_{audience}"
                entered_before = now - dt.timedelta(days=times * self._days)
                for referral, started in await self._candidates(chase, kind, entered_before):
                    if await self._remind(chase, kind, referral, started, audience, times, now):
                        queued += 1
        return queued + await self._remind_corrections(now)

    async def _candidates(self, chase: Chase, kind: str, entered_before: dt.datetime,
                          ) -> list[tuple[SentReferral, dt.datetime]]:
        """Referrals waiting in `chase` since before `entered_before` without a `kind` reminder, with since when."""
        # First versions only: `COALESCE(...) = ''` rather than `IS NULL`, which the engine may look up in
        # `referrals_parent` (SQLite, without statistics, does), walking every first version ever kept instead
        # of the few waiting in `states` (tests/bot/storage/test_query_plans.py).
        versions = "" if chase.versions_too else " AND COALESCE(r.parent_reference, '') = ''"
        # The chase's `since` and the filters are this module's constants; values are bound parameters.
        rows = await self._db.fetch_all(
            f"SELECT r.*, {chase.since} AS chased_since FROM referrals AS r WHERE r.state IN :states{versions}"  # noqa: S608  # nosec B608
            f" AND {chase.since} <= :before AND NOT EXISTS (SELECT 1 FROM reminders AS m"
            " WHERE m.subject = r.reference AND m.kind = :kind) ORDER BY r.queued_at",
            {"states": sorted(state.value for state in chase.states), "before": to_text(entered_before), "kind": kind},
        )
        return [(referral_from_row(row), from_text(row["chased_since"])) for row in rows]

    async def _still_waiting(self, chase: Chase, reference: str, started: dt.datetime) -> bool:
        """The referral is still in `chase`'s states since `started`, read under its lock (in the caller's commit)."""
        row = await self._db.fetch_one(
            f"SELECT {chase.since} AS chased_since FROM referrals WHERE reference = :reference"  # noqa: S608  # nosec B608
            f" AND state IN :states{self._db.for_update}",
            {"reference": reference, "states": sorted(state.value for state in chase.states)},
        )
        return row is not None and row["chased_since"] is not None and from_text(row["chased_since"]) == started

    async def _remind_corrections(self, now: dt.datetime) -> int:
        """Article 7: the referrer is reminded every N working days until the correction the OCMW asked for is sent."""
        rows = await self._db.fetch_all(
            "SELECT c.id, c.reference, c.item, c.requested_at, r.at AS last FROM corrections AS c"
            " LEFT JOIN reminders AS r ON r.subject = c.id AND r.kind = :kind"
            " WHERE c.new_reference IS NULL AND c.kind = 'reported'",
            {"kind": _CORRECTION},
        )
        queued = 0
        for row in rows:
            since = from_text(row["last"] or row["requested_at"]).astimezone(self._tz)
            if add_working_days(since, self._days, self._closed) > now:
                continue
            original = await self._referrals.get(str(row["reference"]))
            if original is None or not awaits_correction(self._registry, original, now.astimezone(self._tz).date()):
                continue  # closed, or its protocol ended (a correction, a new transfer, is refused): nothing to chase
            lang = cards.language_for(original.lang)
            text = cards.text(lang, "reminder_correction_referrer", reference=original.reference,
                              recipient=self._registry.recipient_name(original.protocol_id),
                              item=cards.text(lang, f"item.{row['item']}.name"))
            async with self._db.transaction():
                still_open = await self._db.fetch_one(  # not sent since the pass read the request
                    "SELECT 1 AS open FROM corrections WHERE id = :id AND new_reference IS NULL"  # noqa: S608  # nosec B608
                    + self._db.for_update,
                    {"id": str(row["id"])})
                if still_open is None:
                    continue
                claimed = await self._db.execute(
                    "INSERT INTO reminders (subject, kind, at) VALUES (:subject, :kind, :now)"
                    " ON CONFLICT (subject, kind) DO UPDATE SET at = excluded.at WHERE reminders.at = :last",
                    {"subject": str(row["id"]), "kind": _CORRECTION, "now": to_text(now),
                     "last": row["last"] or ""},
                )
                if claimed.rowcount != 1:
                    continue  # another instance's pass reminded it just now
                await self._messages.post(original.conversation_ref, MessageContent(text=text), now=now,
                                          reference=original.reference)
                # The text points to the card: when Teams refused it (the app uninstalled), it comes again.
                await self._request_cards.post_if_missing(str(row["id"]), original, str(row["item"]), now)
            queued += 1
        return queued

    async def _remind(self, chase: Chase, kind: str, referral: SentReferral, started: dt.datetime,
                      audience: Audience, times: int, now: dt.datetime) -> bool:
        """Queue this reminder if it is due (in working days), not sent before, and the referral still waits as it
        did when the pass read it (the OCMW may have acted since); True when queued."""
        due = add_working_days(started.astimezone(self._tz), times * self._days, self._closed)
        if due > now:
            return False
        if audience == "ocmw":
            link = await self._links.for_protocol(referral.protocol_id)
            if link is None:
                return False
            target, lang = link.conversation_ref, cards.language_for("nl")
        else:
            target, lang = referral.conversation_ref, cards.language_for(referral.lang)
        text = cards.text(lang, f"reminder_{kind}", reference=referral.reference, days=str(times * self._days),
                          recipient=self._registry.recipient_name(referral.protocol_id))
        async with self._db.transaction():
            if not await self._still_waiting(chase, referral.reference, started):
                return False  # acted on since the pass read it: nothing to remind of
            claimed = await self._db.execute(
                "INSERT INTO reminders (subject, kind, at) VALUES (:subject, :kind, :now) ON CONFLICT DO NOTHING",
                {"subject": referral.reference, "kind": kind, "now": to_text(now)},
            )
            if claimed.rowcount != 1:
                return False  # another instance's pass reminded it just now
            await self._messages.post(target, MessageContent(text=text), now=now, reference=referral.reference)
        logger.info("reminder queued", extra={"reference": referral.reference, "kind": kind})
        return True
