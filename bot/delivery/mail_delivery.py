"""The background worker that empties the outbox: deliver, retry with backoff, or give up loudly.

It never loses a queued mail: rows are claimed (committed) before sending, transient failures are
rescheduled with exponential backoff and jitter up to a horizon, and only a permanent failure or
the horizon makes it give up, after which the referrer is told the referral was NOT delivered.
What follows an accepted mail (the referral's state, its register entry, the referrer's card and
message, the OCMW's card) commits in one transaction with the outbox row, so a crash leaves
either all of it or none (and then the mail is retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

import cards
from bot.clock import Clock
from bot.core.metrics import Metrics
from bot.core.protocols import ProtocolRegistry
from bot.core.referral_values import DATA_CATEGORIES, ITEM_CATEGORIES, NO_CORRECT_VALUE, UNVERSIONED_CONSENT_TEXT
from bot.core.sent_referrals import ReferralState, ReferralStore, SentReferral
from bot.delivery.chat_messages import MessageContent
from bot.delivery.failure_causes import mail_failure_cause
from bot.delivery.mail_message import OutgoingMail
from bot.delivery.mail_outbox import Outbox, OutboxItem
from bot.delivery.mail_transport import MailDeliveryError, MailSender, MailTransport, PartlyDelivered, mail_session
from bot.delivery.message_outbox import MessageOutbox
from bot.delivery.side_by_side import side_by_side
from bot.delivery.worker_loop import Work, WorkerLoop
from bot.evidence.register import (
    DELIVERY_ACTOR_ID,
    DELIVERY_ACTOR_NAME,
    ProcessingRegister,
    RegisterEvent,
    recipient_of,
)
from bot.storage.database import Database

logger = logging.getLogger(__name__)

#: A send may take this share of its lease; past it, it counts as a transient failure.
SEND_SHARE_OF_LEASE = 0.9
#: Lanes the worker sends through side by side, each leasing one mail at a time and keeping its own
#: SMTP connection for the pass. One lane waits behind every request at each of its awaits (the SMTP
#: dialogue, the database) and falls behind what a busy instance accepts; more at once than this
#: would meet the relays' own limits (Exchange Online: a few connections per mailbox).
PARALLEL_SENDS = 4
#: While this many mails are due and wait for a free lane (of any instance: mails being sent do not
#: count, so instances never hold each other back), a new referral's send first waits for a lane to
#: take them (`room`), up to ROOM_WAIT_SECONDS: 20 referrers at once would otherwise be accepted
#: faster than they are delivered, and the wait for the mail would grow without bound.
BACKLOG_LIMIT = 1
ROOM_WAIT_SECONDS = 1.0
#: While waiting for room, how often the outbox is counted again (a lane of another instance may
#: have taken the mail; this instance's own lanes say so at once).
ROOM_RECHECK_SECONDS = 0.1
#: Backoff doublings that count: enough to take a first wait of a microsecond past the longest timedelta.
_MOST_DOUBLINGS = 128

@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded per wait and in total."""

    initial: dt.timedelta = dt.timedelta(seconds=30)
    maximum: dt.timedelta = dt.timedelta(hours=1)
    horizon: dt.timedelta = dt.timedelta(hours=24)
    #: How long a worker holds a row it is sending; a send is cut off before its lease runs out.
    lease: dt.timedelta = dt.timedelta(minutes=2)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> dt.timedelta:
        """Wait before attempt `attempt + 1`: half to all of the doubled step, never below Retry-After.

        In float seconds, the doublings capped before they multiply: a relay that says "later" for
        hours reaches attempts whose `2 ** attempt` no longer fits a timedelta (nor, later, a float).
        """
        maximum = self.maximum.total_seconds()
        doublings = min(max(0, attempt - 1), _MOST_DOUBLINGS)
        step = min(maximum, self.initial.total_seconds() * 2.0**doublings)
        wait = step * rng.uniform(0.5, 1.0)
        if retry_after is not None:
            wait = max(wait, min(retry_after, maximum))
        return dt.timedelta(seconds=wait)


class DeliveryWorker:
    """Delivers due outbox rows; `wake()` after queueing makes it look at once."""

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        transport: MailTransport,
        referrals: ReferralStore,
        register: ProcessingRegister,
        registry: ProtocolRegistry,
        messages: MessageOutbox,
        clock: Clock,
        timezone: ZoneInfo,
        policy: RetryPolicy,
        click_reply_lands: dt.timedelta,
        after_delivery: Callable[[SentReferral, dt.datetime], Awaitable[None]] | None = None,
        after_failure: Callable[[SentReferral, dt.datetime], Awaitable[None]] | None = None,
        answered_since: Callable[[SentReferral], Awaitable[str | None]] | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """`after_delivery` runs inside the delivery's transaction (it queues the OCMW's card); `after_failure`
        inside the one that gives a referral up (it opens again the correction requests a failed version answered).
        The referrer's card edit and notice go out `click_reply_lands` after the click at the earliest (the click's
        reply, "being sent", shown after the edit, overwrote it: `Settings.click_reply_lands`).
        `answered_since`, asked first in that transaction, says what answered a failed correction's item meanwhile
        (a later version's reference, or NO_CORRECT_VALUE): the referrer is then told nothing is left to do."""
        self._db = db
        self._metrics = metrics or Metrics.disabled()
        self._after_delivery = after_delivery
        self._after_failure = after_failure
        self._answered_since = answered_since
        self._outbox = outbox
        self._transport = transport
        self._referrals = referrals
        self._register = register
        self._registry = registry
        self._messages = messages
        self._clock = clock
        self._tz = timezone
        self._policy = policy
        self._click_reply_lands = click_reply_lands
        self._rng = rng or random.Random()  # noqa: S311  # nosec B311
        #: One loop per lane: each wakes, passes over what is due and sleeps on its own.
        self._lanes = [WorkerLoop(name="mail outbox", clock=clock, next_due=outbox.next_due)
                       for _ in range(PARALLEL_SENDS)]
        self._running = False
        self._progress = asyncio.Event()  # set (and replaced) each time a lane finished with a mail

    def wake(self) -> None:
        """Look at the outbox now (something was queued): one lane that is not in a pass looks.

        Waking every lane for every mail made each of them ask what is due and try a claim (a write
        transaction: on SQLite the lock every referrer's step waits for) that all but one lost. A lane
        that claims a mail while another is due too wakes the next one (`_wake_another`), so a backlog
        still spreads over every lane. When every lane is in a pass, every lane is told: one that
        already found nothing more due (and is closing its relay session) would otherwise sleep on
        that answer.
        """
        if not self._wake_another():
            for lane in self._lanes:
                lane.wake()

    def _wake_another(self) -> bool:
        """Wake one lane that is not in a pass; False when there is none."""
        for lane in self._lanes:
            if lane.idle:
                lane.wake()
                return True
        return False

    def stop(self) -> None:
        """Take no more mails; `run` returns once each lane has sent and recorded the mail it holds."""
        for lane in self._lanes:
            lane.stop()

    async def run(self) -> None:
        """Deliver forever in PARALLEL_SENDS lanes (a row a dead worker held is due again when its lease runs out).

        Each lane is a loop of its own, so a lane that waits on a slow relay holds up only its own mail:
        the others go on taking what is queued meanwhile. Cancelled, it returns once every lane has
        let go (the app closes the database right after).
        """
        self._running = True
        try:
            await side_by_side(*(lane.run_forever(functools.partial(self._pass, lane)) for lane in self._lanes))
        finally:
            self._running = False

    async def room(self) -> None:
        """Return once fewer than BACKLOG_LIMIT due mails wait for a lane, or after ROOM_WAIT_SECONDS.

        Back-pressure for the send step: under a load the bot cannot deliver, a send waits a moment
        instead of lengthening the queue. At once when this process runs no worker (nothing here
        would make room), when one of its lanes is free (the mail about to be queued wakes it: the
        count, a statement for every send, is not asked), or when the mails wait for a later retry (a
        relay that is down).
        """
        if not self._running or any(lane.idle for lane in self._lanes):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ROOM_WAIT_SECONDS
        while True:
            progress = self._progress
            if await self._outbox.waiting_for_a_lane(self._clock.now()) < BACKLOG_LIMIT:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), min(remaining, ROOM_RECHECK_SECONDS))

    def _made_progress(self) -> None:
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    async def deliver_in_lanes(self, lanes: int = PARALLEL_SENDS) -> int:
        """`lanes` passes (`deliver_due`) side by side, once; returns how many rows they tried.

        A lane that fails unexpectedly (the database gone) does not stop the others; the first such
        error is raised once they are done, and the row it held is due again when its lease ends.
        """
        return sum(await side_by_side(*(self.deliver_due() for _ in range(lanes))))

    async def deliver_due(self) -> int:
        """One pass over what is due now (`_pass`), outside the lanes' own loops: tests, `deliver_in_lanes`."""
        return await self._pass(self._lanes[0])

    async def _pass(self, lane: WorkerLoop) -> int:
        """One pass of `lane` over what is due now, one mail at a time; returns how many rows were tried.

        Each row is leased right before it is sent: rows leased together would wait behind a slow
        relay until their lease ran out, and another instance would take them and send them too.
        The pass keeps one connection to the relay for its mails (`mail_session`), opened with the
        first and closed when nothing more is due. Whether anything is due is first read without a
        write transaction, so a pass that finds nothing costs one cheap read.
        """
        tried = 0
        async with mail_session(self._transport) as sender:
            while not lane.stopped:
                work = await lane.look()
                if work is Work.NONE:
                    return tried
                item, more_due = await self._outbox.claim_one(self._clock.now(), self._policy.lease,
                                                              expired_leases=work is Work.LEASE_RAN_OUT)
                if item is None:  # another lane or instance took it
                    return tried
                if more_due:  # a lane not sending takes the next meanwhile
                    self._wake_another()
                await self._deliver(item, sender)
                tried += 1
                self._made_progress()
            return tried

    async def _deliver(self, item: OutboxItem, sender: MailSender) -> None:
        # Looked up once: the commit below needs only which referral it is (its transition is a compare-and-set
        # on the row as it stands then, and returns it).
        referral = await self._referrals.by_message_id(item.message_id)
        message = OutgoingMail.from_bytes(item.payload)  # the envelope from its headers; the bytes go as they are
        # Recipients who took it on an earlier attempt (others refused it for now) do not get it again.
        pending = tuple(address for address in message.recipients if address not in item.delivered_to)
        ended = self._protocol_ended(referral)
        if ended is not None:
            await self._handle_failure(item, MailDeliveryError(ended, transient=False), referral, pending)
            return
        try:
            async with asyncio.timeout(self._policy.lease.total_seconds() * SEND_SHARE_OF_LEASE):
                await sender.send(dataclasses.replace(message, recipients=pending))
        except TimeoutError:
            error = MailDeliveryError("no answer within the lease", transient=True)
            await self._handle_failure(item, error, referral, pending)
            return
        except PartlyDelivered as error:
            item = dataclasses.replace(item, delivered_to=(*item.delivered_to, *error.accepted))
            await self._handle_failure(item, error, referral, error.refused)
            return
        except MailDeliveryError as error:
            await self._handle_failure(item, error, referral, pending)
            return
        if item.delivered_to:  # the others took it at an earlier attempt: the row names everyone who has it now
            item = dataclasses.replace(item, delivered_to=(*item.delivered_to, *pending))
        await self._record_delivery(item, referral)

    async def _record_delivery(
        self, item: OutboxItem, referral: SentReferral | None, refused: str | None = None, cause: str = ""
    ) -> None:
        """Accepted (for every recipient, or for `item.delivered_to` while `refused` says for whom it was not).

        Given up for those refused (`cause` as `_handle_failure`'s): a give-up, which the give-up alert counts, as
        when nobody took it; a DPO who never gets the breach report is mailed by an operator or not at all.
        """
        now = self._clock.now()
        partly = "" if refused is None else f"delivered to {', '.join(item.delivered_to)}; {refused}"
        async with self._db.transaction():
            if not await self._outbox.mark_delivered(item, now, refused):
                return  # another instance took the row over after this lease ran out, and recorded the delivery
            if partly:
                self._metrics.give_up("mail", cause)
            if referral is None and not partly:  # not a referral's mail (a breach report to the DPOs)
                logger.info("mail delivered", extra={"reference": item.reference})
                return
            if referral is None:  # the breach report's entry said "queued to" both DPOs: this one says who has it
                logger.error("mail %s", partly, extra={"reference": item.reference})
                protocol_id = await self._register.protocol_of(item.reference)
                await self._register.append(at=now, event=RegisterEvent.DELIVERY_FAILED, actor_id=DELIVERY_ACTOR_ID,
                                            actor_name=DELIVERY_ACTOR_NAME, protocol_id=protocol_id or "-",
                                            reference=item.reference, detail=f"mail {partly}")
                return
            referral = await self._referrals.transition(referral.reference, ReferralState.SENT, sent_at=now)
            await self._tell_referrer(referral, delivered_at=now)
            if self._after_delivery is not None:
                await self._after_delivery(referral, now)
            # Last, so its entry follows the ones above (PostgreSQL chains it at the commit: revision 0004).
            await self._append_delivered(referral, f"attempt {item.attempts}" + (f"; {partly}" if partly else ""))
        self._metrics.referral_delivered(referral.protocol_id, _kind(referral), now - referral.queued_at)
        logger.info("referral delivered", extra={"reference": referral.reference})

    def _protocol_ended(self, referral: SentReferral | None) -> str | None:
        """Why the mail may not leave any more (its protocol ended while it waited), or None.

        The transfer happens when the mail leaves, so a mail queued on the protocol's last day and
        still waiting the next day (a mail server down) is not sent: the referrer is told.
        """
        if referral is None:
            return None
        today = self._clock.now().astimezone(self._tz).date()
        protocol = self._registry.get(referral.protocol_id)
        if protocol is not None and protocol.in_force_on(today):
            return None
        return f"protocol {referral.protocol_id} not in force on {today.isoformat()}"

    async def _handle_failure(
        self, item: OutboxItem, error: MailDeliveryError, referral: SentReferral | None, refused: Sequence[str]
    ) -> None:
        """Retry later (to the `refused` recipients), or give up: the mail marked failed, the referral (None: a breach
        report) too; or, when others took it (`item.delivered_to`), delivered with the refusal recorded."""
        now = self._clock.now()
        give_up_at = item.queued_at + self._policy.horizon
        if error.transient and now < give_up_at:
            next_at = min(now + self._policy.delay(item.attempts, error.retry_after, self._rng), give_up_at)
            if not await self._outbox.reschedule(item, next_at, error.reason):
                return  # another instance took the row over meanwhile (the outbox logged the late mark)
            self._metrics.retry("mail", mail_failure_cause(error))
            logger.warning(
                "mail not delivered yet%s (%s), retrying at %s (attempt %d)",
                f" to {', '.join(refused)} (delivered to {', '.join(item.delivered_to)})" if item.delivered_to else "",
                error.reason,
                next_at.isoformat(timespec="seconds"),
                item.attempts,
                extra={"reference": item.reference},
            )
            return
        reason = error.reason if not error.transient else f"gave up after {item.attempts} attempts: {error.reason}"
        cause = "horizon" if error.transient else mail_failure_cause(error)
        if item.delivered_to:
            await self._record_delivery(item, referral, f"refused for {', '.join(refused)}: {reason}", cause)
            return
        async with self._db.transaction():
            if referral is not None and referral.parent_reference:
                # The family first, as every step on it locks it (a correction queued, "geen juist" answered, a
                # withdrawal): what answered the item since is read after such a step commits, not before it.
                await self._referrals.lock(referral.parent_reference)
            if not await self._outbox.mark_failed(item, now, reason):
                return  # another instance took the row over meanwhile and recorded what became of it
            self._metrics.give_up("mail", cause)
            logger.error("mail NOT delivered: %s", reason, extra={"reference": item.reference})
            if referral is None:
                return
            referral = await self._referrals.transition(referral.reference, ReferralState.FAILED, failure_reason=reason)
            answered = None
            if referral.parent_reference and self._answered_since is not None:
                answered = await self._answered_since(referral)
            await self._tell_referrer(referral, delivered_at=None, answered_since=answered)
            if self._after_failure is not None:
                await self._after_failure(referral, now)
            await self._append(referral, RegisterEvent.DELIVERY_FAILED, reason)  # last, as above
        self._metrics.referral_failed(referral.protocol_id, _kind(referral), cause)

    async def _append(
        self,
        referral: SentReferral,
        event: RegisterEvent,
        detail: str,
        *,
        data_categories: Sequence[str] = (),
        recipient: str = "",
        consent_version: str = "",
    ) -> None:
        """The bot's delivery worker acted, on the referrer's behalf: both are named."""
        await self._register.append(
            at=self._clock.now(),
            event=event,
            actor_id=DELIVERY_ACTOR_ID,
            actor_name=DELIVERY_ACTOR_NAME,
            protocol_id=referral.protocol_id,
            reference=referral.reference,
            detail=f"{detail}; on behalf of {referral.referrer_id} ({referral.referrer_name})",
            data_categories=data_categories,
            recipient=recipient,
            consent_version=consent_version,
        )

    async def _append_delivered(self, referral: SentReferral, detail: str) -> None:
        """The transfer itself: the categories and addressee recorded when it was queued (no client data here).

        A referral queued by a version that did not record them yet: a correction carried its item;
        of a first package only the protocol's maximum is known, and the detail says so.
        """
        categories = referral.data_categories
        if categories is None:
            item = referral.corrected_item
            if item is not None and item in ITEM_CATEGORIES:
                categories = ITEM_CATEGORIES[item]
            else:
                categories = DATA_CATEGORIES
                detail += "; categories not recorded when it was queued: the protocol's maximum"
        protocol = self._registry.get(referral.protocol_id)
        recipient = referral.recipient or (recipient_of(protocol) if protocol is not None
                                           else self._registry.recipient_name(referral.protocol_id))
        # Queued before referrals recorded it: confirmed under the texts a consent without a version means.
        consent_version = referral.consent_version or UNVERSIONED_CONSENT_TEXT
        await self._append(referral, RegisterEvent.DELIVERED, detail, data_categories=categories,
                     recipient=recipient, consent_version=consent_version)

    async def _tell_referrer(
        self, referral: SentReferral, *, delivered_at: dt.datetime | None, answered_since: str | None = None
    ) -> None:
        """Queue the referrer's card, updated in place, and a short message (inside the caller's transaction).

        A correction given up whose item was answered since (`answered_since`: a later version, or NO_CORRECT_VALUE)
        says so and asks nothing: its requests are not opened again, so "verstuur de correctie opnieuw" pointed to a
        card that did not come, for an item the OCMW has from that version or was asked to delete."""
        lang = cards.language_for(referral.lang)
        protocol = self._registry.get(referral.protocol_id)
        recipient = self._registry.recipient_name(referral.protocol_id)
        mailbox = referral.sent_to_mailbox or (protocol.recipient_mailbox if protocol else "")
        if delivered_at is not None:
            local = delivered_at.astimezone(self._tz)
            card = cards.sent_card(lang, reference=referral.reference, recipient=recipient, mailbox=mailbox,
                                   sent_at=local)
            text = cards.text(lang, "delivered", reference=referral.reference, recipient=recipient)
        elif answered_since is not None and referral.parent_reference and referral.corrected_item:
            said = {"reference": referral.reference, "recipient": recipient,
                    "item": cards.item_word(lang, referral.corrected_item)}
            if answered_since == NO_CORRECT_VALUE:
                kind = "answered_none"
            else:
                kind, said["later"] = "carried_later", answered_since
            card = cards.problem_card(lang, f"correction_not_delivered_{kind}", **said)
            text = cards.text(lang, f"correction_delivery_failed_{kind}", correction_of=referral.parent_reference,
                              **said)
        elif self._protocol_ended(referral) is not None:
            # Neither a new referral nor a correction may go to this OCMW any more: nothing to do again.
            kind = "correction_" if referral.parent_reference else ""
            card = cards.problem_card(lang, f"{kind}not_sent_protocol_ended", reference=referral.reference,
                                      recipient=recipient)
            text = cards.text(lang, f"{kind}delivery_failed_protocol_ended", reference=referral.reference,
                              recipient=recipient, correction_of=referral.parent_reference or "")
        elif referral.parent_reference:  # a correction: the request is open again, its card comes back
            card = cards.problem_card(lang, "correction_not_delivered", reference=referral.reference,
                                      recipient=recipient)
            text = cards.text(lang, "correction_delivery_failed", reference=referral.reference, recipient=recipient,
                              correction_of=referral.parent_reference)
        else:
            card = cards.problem_card(lang, "not_delivered", reference=referral.reference, recipient=recipient)
            text = cards.text(lang, "delivery_failed", reference=referral.reference, recipient=recipient)
        now = self._clock.now()
        not_before = referral.queued_at + self._click_reply_lands  # the notice too: it follows the card
        if referral.card_activity_id:
            await self._messages.update(referral.conversation_ref, MessageContent(card=card), now=now,
                                        activity_id=referral.card_activity_id, reference=referral.reference,
                                        not_before=not_before)
        await self._messages.post(referral.conversation_ref, MessageContent(text=text), now=now,
                                  reference=referral.reference, not_before=not_before)


def _kind(referral: SentReferral) -> Literal["referral", "correction"]:
    return "correction" if referral.parent_reference else "referral"
