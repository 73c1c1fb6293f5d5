"""The OCMW side: linking its Teams conversation, the card per referral, receipt, outcome, deletion.

Only members of the conversation linked to a protocol may act on that protocol's referrals: the
check compares the conversation a click comes from with the linked one, so a forwarded card or a
crafted invoke from anywhere else is refused, logged and (once per burst) registered. Only a Teams
channel of an allowed tenant can be linked.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

import cards
from bot.clock import Clock
from bot.core.access import OcmwChannelPolicy
from bot.core.protocols import ProtocolRegistry
from bot.core.sent_referrals import (
    AWAITING_DELETION,
    HOLDS_DATA,
    OUTCOMES,
    TRANSITIONS,
    IllegalTransition,
    ReferralState,
    ReferralStore,
    SentReferral,
)
from bot.delivery.chat_messages import MessageContent
from bot.delivery.mail_outbox import Outbox
from bot.delivery.message_outbox import MessageOutbox
from bot.evidence.register import ProcessingRegister, RegisterEvent
from bot.ocmw.corrections import (
    OCMW_LANGUAGE,
    CorrectionService,
    awaits_correction,
    referral_named,
    referrer_refusal,
)
from bot.ocmw.links import OcmwLink, OcmwLinks, base_conversation_id, display_code
from bot.ocmw.refusal_bursts import RefusalBursts
from bot.referral.dialogue import Actor, Answer, Banner, Card, Reply
from bot.referral.referrers import ReferrerAccess
from bot.storage.database import Database

logger = logging.getLogger(__name__)

QUALITY_ITEMS = ("name", "address", "phone", "email")
#: The OCMW channel's cards are shared by everyone in it: one language, the OCMW's own.
OCMW_CHANNEL_LANGUAGE: cards.Language = OCMW_LANGUAGE
OcmwState = Literal["sent", "received", "help_wanted", "no_help_wanted", "unreachable", "data_deleted",
                    "consent_withdrawn"]


class _MailBeingSent(Exception):
    """A mail of the family (a correction version's) is being handed to the mail server: no closing this moment.

    Its data reaches the OCMW whatever happens now, so closing the family first would leave that copy
    with no deletion to confirm or chase; the click that closes it is asked to wait a minute instead.
    """

    def __init__(self, reference: str) -> None:
        super().__init__(reference)
        self.reference = reference


class OcmwService:
    """Everything the OCMW conversation can do, and the cards the bot posts there."""

    def __init__(
        self,
        *,
        db: Database,
        links: OcmwLinks,
        referrals: ReferralStore,
        registry: ProtocolRegistry,
        register: ProcessingRegister,
        corrections: CorrectionService,
        messages: MessageOutbox,
        outbox: Outbox,
        clock: Clock,
        timezone: ZoneInfo,
        channels: OcmwChannelPolicy,
        refusals: RefusalBursts,
        referrers: ReferrerAccess,
        after_deletion: Callable[[SentReferral], Awaitable[None]] | None = None,
    ) -> None:
        """`after_deletion` runs once a deletion is committed (the outbox folder's copies go)."""
        self._channels = channels
        self._referrers = referrers
        self._refusals = refusals
        self._after_deletion = after_deletion
        self._db = db
        self._links = links
        self._referrals = referrals
        self._registry = registry
        self._register = register
        self._corrections = corrections
        self._messages = messages
        self._outbox = outbox
        self._clock = clock
        self._tz = timezone

    # -- linking --------------------------------------------------------------------------------

    async def link_command(self, actor: Actor, code: str) -> Reply:
        """`koppel <code>`: link this conversation, or ask before replacing another one."""
        refusal = self._place_refusal(actor)
        if refusal is not None:
            return Reply(text=refusal)
        now = self._clock.now()
        protocol_id = await self._links.protocol_for_code(code, now)
        protocol = None if protocol_id is None else self._registry.get(protocol_id)
        if protocol is None:
            logger.warning("pairing code refused")
            return Reply(text=cards.text(actor.lang, "link_invalid"))
        existing = await self._links.for_protocol(protocol.id)
        if existing is not None and existing.conversation_id == base_conversation_id(actor.conversation_id):
            again = await self._post_missing_cards(protocol.id)
            return Reply(text=cards.text(actor.lang, "link_already_here_cards_again" if again else "link_already_here",
                                         ocmw=protocol.recipient.organisation, count=str(again)))
        if existing is not None:
            return Reply(card=cards.link_confirm_card(actor.lang, ocmw=protocol.recipient.organisation,
                                                      code=display_code(code)))
        return Reply(text=await self._link(actor, code, protocol.id))

    def _place_refusal(self, actor: Actor) -> str | None:
        """Why this conversation cannot be linked, or None: only a Teams channel of an allowed tenant.

        Checked before the code is looked at, so a refusal says nothing about the code.
        """
        if actor.conversation_type != "channel":
            logger.warning("OCMW link refused: not a Teams channel",
                           extra={"conversation_type": actor.conversation_type or "unknown"})
            return cards.text(actor.lang, "link_not_in_channel")
        if not self._channels.allows_tenant(actor.tenant_id):
            logger.warning("OCMW link refused: tenant not allowed", extra={"tenant_id": actor.tenant_id[:64]})
            return cards.text(actor.lang, "link_tenant_not_allowed")
        return None

    async def _link(self, actor: Actor, code: str, protocol_id: str) -> str:
        protocol = self._registry.get(protocol_id)
        now = self._clock.now()
        link = OcmwLink(
            protocol_id=protocol_id,
            conversation_id=base_conversation_id(actor.conversation_id),
            conversation_ref=_channel_reference(actor.conversation_ref),
            linked_by_id=actor.user_id,
            linked_by=actor.display_name,
            linked_at=now,
            team_id=actor.team_id,
        )
        if protocol is None:
            return cards.text(actor.lang, "link_invalid")
        async with self._db.transaction():
            before = await self._links.for_protocol(protocol_id)
            if not (await self._links.link(code, link, now)):
                return cards.text(actor.lang, "link_invalid")
            await self._register.append(at=now, event=RegisterEvent.LINK_CREATED, actor_id=actor.user_id,
                                  actor_name=actor.display_name, protocol_id=protocol_id,
                                  detail=f"conversation {link.conversation_id[:80]}")
            if before is None or before.conversation_id != link.conversation_id:
                # Only the linked channel may act, so it needs a card for every referral it still has to act
                # on: those delivered before it was linked (a withdrawal recorded meanwhile too) or elsewhere.
                await self._queue_open_cards(protocol_id, now)
        logger.info("OCMW conversation linked", extra={"protocol_id": protocol_id})
        return cards.text(actor.lang, "link_done", ocmw=protocol.recipient.organisation)

    async def _queue_open_cards(self, protocol_id: str, now: dt.datetime, *, missing_only: bool = False) -> int:
        """Queue the card of every referral the protocol's OCMW still has to act on, inside the caller's transaction:
        all of them for a channel just linked. With `missing_only`, those whose card is not in the channel (Teams
        refused its post and it was given up, or none was ever queued) are posted, and those whose card shows a
        step before (Teams refused its edit) are edited again. A family's withdrawal notice comes again with its
        card only when it did not reach the channel either (given up, or never queued): one the OCMW read is not
        posted twice when only the card's edit was refused. So does a message asking to delete a wrong item answered
        "geen juist ..." that did not reach the channel, whatever its referral's card shows. How many cards."""
        referrals = await self._referrals.open_for_protocol(protocol_id)
        if not missing_only:
            for referral in referrals:
                await self.queue_referral_card(referral, now)
            return len(referrals)
        slots = {_card_slot(referral): referral.reference for referral in referrals}
        missing = await self._messages.cards_missing(slots)
        behind = await self._messages.cards_behind(slots) - missing
        again = [referral for referral in referrals if _card_slot(referral) in missing | behind]
        unheard = await self._messages.cards_missing({  # the notice is the family's: on its first version only
            _withdrawal_slot(referral): referral.reference for referral in again
            if referral.state == ReferralState.CONSENT_WITHDRAWN and referral.parent_reference is None})
        for referral in again:
            if _card_slot(referral) in missing:
                await self.queue_referral_card(referral, now)
            else:
                await self._update_for_everyone(referral)
            if _withdrawal_slot(referral) in unheard:
                await self._tell_ocmw(referral)
        await self._corrections.ask_deletion_again(protocol_id, referrals, now)  # after the cards they concern
        return len(again)

    async def _post_missing_cards(self, protocol_id: str) -> int:
        """The cards the protocol's linked channel should show and does not, queued again (one commit); how many."""
        async with self._db.transaction():
            again = await self._queue_open_cards(protocol_id, self._clock.now(), missing_only=True)
        if again:
            logger.warning("OCMW channel: %d card(s) Teams did not show, or showed a step behind, sent again", again,
                           extra={"protocol_id": protocol_id})
        return again

    async def bot_back(self, actor: Actor) -> int:
        """The bot is in an OCMW's conversation again (the app added to its team again, the team unarchived or
        restored): the cards Teams refused meanwhile are posted again, for each protocol linked there. How many.

        Teams says it in the conversation concerned, or for a whole team in its General channel: a link is
        found by its channel or by its team (`actor.team_id`).
        """
        return sum([await self._post_missing_cards(link.protocol_id)
                    for link in await self._links.in_place(actor.conversation_id, actor.team_id)])

    async def bot_gone(self, actor: Actor, why: str) -> None:
        """The bot can no longer post in an OCMW's conversation (`why`: the app removed, the team archived or
        deleted): an error per protocol, since that OCMW's cards are refused and given up until it is back."""
        for link in await self._links.in_place(actor.conversation_id, actor.team_id):
            logger.error("bot out of the OCMW's team of protocol %s (%s): its cards are refused by Teams until the"
                         " app is in the team again, then they are posted again", link.protocol_id, why,
                         extra={"protocol_id": link.protocol_id})

    # -- delivery -------------------------------------------------------------------------------

    async def queue_referral_card(self, referral: SentReferral, now: dt.datetime) -> None:
        """Queue the referral's card for the OCMW conversation, inside the caller's transaction.

        Called when the mail was accepted (in the delivery's own transaction) and, for referrals
        delivered before, when the conversation is linked.
        """
        link = await self._links.for_protocol(referral.protocol_id)
        if link is None:
            logger.warning("no OCMW conversation linked yet; the card follows when it is",
                           extra={"reference": referral.reference, "protocol_id": referral.protocol_id})
            return
        card = cards.ocmw_referral_card(OCMW_CHANNEL_LANGUAGE, self._view(referral))
        await self._messages.post(link.conversation_ref, MessageContent(card=card), now=now,
                                  reference=referral.reference, slot=_card_slot(referral))

    # -- card actions ---------------------------------------------------------------------------

    async def on_action(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> Answer:
        """ack.receive, referral.outcome, referral.deleted, referral.quality, referral.view, link.confirm/cancel.

        Errors are answered with a banner: the card with the reference and its buttons stays.
        """
        if verb == "link.confirm":
            refusal = self._place_refusal(actor)
            if refusal is not None:
                return cards.notice_card(actor.lang, refusal)
            code = data.get("code")
            protocol_id = None if not isinstance(code, str) else await self._links.protocol_for_code(
                code, self._clock.now())
            if not isinstance(code, str) or protocol_id is None:
                return cards.notice_card(actor.lang, cards.text(actor.lang, "link_invalid"))
            return cards.notice_card(actor.lang, await self._link(actor, code, protocol_id))
        if verb == "link.cancel":
            return cards.notice_card(actor.lang, cards.text(actor.lang, "link_cancelled"))
        found = await self._referral_for_ocmw(actor, verb, data)
        if not isinstance(found, SentReferral):
            return found
        handlers = {
            "ack.receive": self._acknowledge,
            "referral.outcome": self._outcome,
            "referral.deleted": self._deleted,
            "referral.quality": self._quality,
            cards.VERB_VIEW: self._show,
        }
        return await handlers[verb](actor, found, data)

    async def _show(self, actor: Actor, referral: SentReferral, data: Mapping[str, Any]) -> Answer:
        """The card as it is now ("Terug" from a confirmation)."""
        return self._card(actor, referral)

    async def _acknowledge(self, actor: Actor, referral: SentReferral, data: Mapping[str, Any]) -> Answer:
        if referral.state != ReferralState.SENT:
            if referral.acknowledged_at is not None:
                return self._card(actor, referral, notice="already_acknowledged")
            return _banner(actor, "action_not_possible_now", reference=referral.reference)
        now = self._clock.now()
        try:
            async with self._db.transaction():
                updated = await self._referrals.transition(
                    referral.reference, ReferralState.RECEIVED,
                    acknowledged_by_id=actor.user_id, acknowledged_by=actor.display_name, acknowledged_at=now,
                )
                await self._record(actor, updated, RegisterEvent.ACKNOWLEDGED)
                await self._after_change(updated, cards.text(
                    cards.language_for(updated.lang), "ack_to_referrer", reference=updated.reference,
                    recipient=self._registry.recipient_name(updated.protocol_id),
                    name=cards.escape_markdown(actor.display_name), time=self._local(now),
                ))
        except IllegalTransition:
            return self._card(actor, await self._fresh(referral), notice="already_acknowledged")
        return self._card(actor, updated)

    async def _outcome(self, actor: Actor, clicked: SentReferral, data: Mapping[str, Any]) -> Answer:
        """The family's outcome, on its first version; "wil geen hulp" and "niet bereikt" asked once more."""
        outcome = data.get("outcome")
        target = OUTCOMES.get(outcome) if isinstance(outcome, str) else None
        if target is None:
            return _banner(actor, "outcome_invalid")
        referral = await self._family_root(clicked)
        reached_after_all = referral.state == ReferralState.UNREACHABLE and target != ReferralState.UNREACHABLE
        if referral.outcome_at is not None and not reached_after_all:
            return self._card(actor, referral, notice="outcome_already_recorded")
        if referral.state != ReferralState.RECEIVED and not reached_after_all:
            return _banner(actor, "action_not_possible_now", reference=referral.reference)
        if target != ReferralState.HELP_WANTED and not cards.is_confirmed(data):
            return cards.confirm_card(OCMW_CHANNEL_LANGUAGE, target.value, reference=referral.reference,
                                      verb="referral.outcome", data={"reference": referral.reference,
                                                                     "outcome": str(outcome)},
                                      back={"reference": clicked.reference})
        try:
            async with self._db.transaction():
                updated = await self._referrals.transition(
                    referral.reference, target,
                    outcome_by_id=actor.user_id, outcome_by=actor.display_name, outcome_at=self._clock.now(),
                )
                await self._record(actor, updated, RegisterEvent.OUTCOME_RECORDED, detail=str(outcome))
                await self._after_change(updated, cards.text(
                    cards.language_for(updated.lang), f"outcome_to_referrer_{outcome}", reference=updated.reference,
                    recipient=self._registry.recipient_name(updated.protocol_id),
                ))
                for version in await self._referrals.versions_of(updated.reference):
                    await self._update_for_everyone(version)
        except IllegalTransition:
            fresh = await self._fresh(referral)
            if fresh.outcome_at is not None and fresh.outcome_at != referral.outcome_at:
                # The same click (or a colleague's) recorded an outcome just now: say so, as one after the other.
                return self._card(actor, fresh, notice="outcome_already_recorded")
            return _banner(actor, "action_not_possible_now", reference=referral.reference)
        return self._card(actor, updated)

    async def withdraw_consent(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> Answer:
        """A Kind en Gezin colleague records that the parents withdrew consent, for the family's every version.

        Any referrer allowed under the protocol now, of any of its teams, may record it (the parents
        may tell whoever they see at Kind en Gezin; `referrer_refusal`), after a confirmation; the
        register names who recorded it, the OCMW is asked to delete, the original referrer is told
        when it was someone else. A version still queued is not sent.
        """
        found = await referral_named(self._referrals, actor, data.get("reference"))
        if isinstance(found, Banner):
            return found
        referral = await self._family_root(found)
        if refused := await referrer_refusal(self._referrers, self._registry, actor, referral, team=None):
            return refused
        if referral.state == ReferralState.CONSENT_WITHDRAWN:
            return cards.notice_card(actor.lang, cards.text(actor.lang, "withdrawal_recorded",
                                                            reference=referral.reference))
        before_sending = referral.state == ReferralState.QUEUED
        if referral.state == ReferralState.DATA_DELETED:
            return await self._nothing_left_to_withdraw(actor, referral)
        if referral.state == ReferralState.FAILED:  # given up: the OCMW never got the family's data
            return _banner(actor, "withdrawal_never_delivered", reference=referral.reference,
                           ocmw=self._registry.recipient_name(referral.protocol_id))
        if not before_sending and ReferralState.CONSENT_WITHDRAWN not in TRANSITIONS[referral.state]:
            return _banner(actor, "action_not_possible_now", reference=referral.reference)
        if not cards.is_confirmed(data):
            return cards.confirm_card(actor.lang, "withdraw_consent", reference=referral.reference,
                                      verb="consent.withdraw", data={"reference": referral.reference},
                                      back={"reference": found.reference})
        if before_sending:
            return await self._withdraw_before_sending(actor, referral)
        now = self._clock.now()
        marks = {"withdrawn_by_id": actor.user_id, "withdrawn_by": actor.display_name, "withdrawn_at": now}
        try:
            async with self._db.transaction():
                updated = await self._referrals.transition(referral.reference, ReferralState.CONSENT_WITHDRAWN, **marks)
                await self._record(actor, updated, RegisterEvent.CONSENT_WITHDRAWN)
                await self._update_for_everyone(updated)
                for version in await self._referrals.versions_of(updated.reference):
                    await self._carry(actor, version, ReferralState.CONSENT_WITHDRAWN, RegisterEvent.CONSENT_WITHDRAWN,
                                **marks)
                await self._tell_ocmw(updated)
                if updated.referrer_id != actor.user_id:
                    await self._messages.post(updated.conversation_ref, MessageContent(text=cards.text(
                        cards.language_for(updated.lang), "withdrawal_by_colleague", reference=updated.reference,
                        name=cards.escape_markdown(actor.display_name))), now=now, reference=updated.reference)
        except _MailBeingSent as sending:
            return _banner(actor, "being_sent", reference=sending.reference)
        except IllegalTransition:
            if (await self._fresh(referral)).state != ReferralState.CONSENT_WITHDRAWN:
                return _banner(actor, "action_not_possible_now", reference=referral.reference)
            # The same click (or a colleague's) recorded the withdrawal just now: say so, as one after the other.
            return cards.notice_card(actor.lang, cards.text(actor.lang, "withdrawal_recorded",
                                                            reference=referral.reference))
        logger.info("consent withdrawn", extra={"reference": updated.reference})
        return cards.notice_card(actor.lang, cards.text(actor.lang, "withdrawal_recorded",
                                                        reference=updated.reference))

    async def _nothing_left_to_withdraw(self, actor: Actor, referral: SentReferral) -> Answer:
        """A withdrawal after the OCMW confirmed the deletion: why the bot passes nothing on, and where to go instead.

        After help was wanted the OCMW filed the data in its own dossier: the parents' request goes to the OCMW or
        its DPO. Otherwise (no help wanted, not reached, consent withdrawn before) the data is gone at the OCMW.
        """
        ocmw = self._registry.recipient_name(referral.protocol_id)
        protocol = self._registry.get(referral.protocol_id)
        outcome = await self._register.last_detail(referral.reference, RegisterEvent.OUTCOME_RECORDED)
        if protocol is not None and referral.withdrawn_at is None and outcome is not None \
                and OUTCOMES.get(outcome) == ReferralState.HELP_WANTED:
            return _banner(actor, "withdrawal_after_filing", reference=referral.reference, ocmw=ocmw,
                           dpo=protocol.recipient_dpo)
        return _banner(actor, "withdrawal_after_deletion", reference=referral.reference, ocmw=ocmw)

    async def _withdraw_before_sending(self, actor: Actor, referral: SentReferral) -> Answer:
        """The mail has not left: it never will. Nothing reached the OCMW, so nothing is to be deleted there.

        The outbox row is cancelled only while it waits; a mail being handed to the mail server at
        this moment cannot be recalled, so the user is asked to try again in a minute, when the
        usual withdrawal (and deletion at the OCMW) applies.
        """
        now = self._clock.now()
        try:
            async with self._db.transaction():
                if not await self._cancel_mail(referral):
                    raise _MailBeingSent(referral.reference)
                updated = await self._referrals.transition(
                    referral.reference, ReferralState.FAILED,
                    failure_reason="not sent: consent withdrawn before the mail left",
                    withdrawn_by_id=actor.user_id, withdrawn_by=actor.display_name, withdrawn_at=now)
                await self._record(actor, updated, RegisterEvent.CONSENT_WITHDRAWN,
                                   detail="before the mail left: nothing sent")
                for version in await self._referrals.versions_of(updated.reference):
                    await self._carry(actor, version, ReferralState.CONSENT_WITHDRAWN,
                                      RegisterEvent.CONSENT_WITHDRAWN)
        except _MailBeingSent as sending:
            return _banner(actor, "being_sent", reference=sending.reference)
        logger.info("consent withdrawn before the mail left", extra={"reference": updated.reference})
        return cards.notice_card(actor.lang, cards.text(actor.lang, "withdrawal_before_sending",
                                                        reference=updated.reference))

    async def _tell_ocmw(self, referral: SentReferral) -> None:
        """Queue the withdrawal notice in the OCMW channel, under its own slot, so the bot back in the team knows
        whether it arrived (`_queue_open_cards`)."""
        link = await self._links.for_protocol(referral.protocol_id)
        if link is not None:
            text = cards.text(OCMW_CHANNEL_LANGUAGE, "withdrawal_to_ocmw", reference=referral.reference)
            await self._messages.post(link.conversation_ref, MessageContent(text=text), now=self._clock.now(),
                                reference=referral.reference, slot=_withdrawal_slot(referral))

    async def _deleted(self, actor: Actor, clicked: SentReferral, data: Mapping[str, Any]) -> Answer:
        """The OCMW confirms it deleted the family's data (every version) from the shared mailbox."""
        referral = await self._family_root(clicked)
        if referral.state == ReferralState.DATA_DELETED:
            return self._card(actor, await self._fresh(clicked), notice="deletion_recorded")
        if referral.state not in AWAITING_DELETION:
            return _banner(actor, "action_not_possible_now", reference=referral.reference)
        if not cards.is_confirmed(data):
            kind = "data_filed_and_deleted" if referral.state == ReferralState.HELP_WANTED else "data_deleted"
            return cards.confirm_card(OCMW_CHANNEL_LANGUAGE, kind, reference=referral.reference,
                                      verb="referral.deleted", data={"reference": referral.reference},
                                      back={"reference": clicked.reference})
        now = self._clock.now()
        try:
            async with self._db.transaction():
                updated = await self._referrals.transition(referral.reference, ReferralState.DATA_DELETED,
                                                     deleted_by=actor.display_name, deleted_at=now)
                await self._record(actor, updated, RegisterEvent.DELETION_CONFIRMED)
                filed = "deleted_to_referrer_help_wanted" if referral.state == ReferralState.HELP_WANTED \
                    else "deleted_to_referrer"
                await self._after_change(updated, cards.text(
                    cards.language_for(updated.lang), filed, reference=updated.reference,
                    recipient=self._registry.recipient_name(updated.protocol_id),
                ))
                for version in await self._referrals.versions_of(updated.reference):
                    await self._carry(actor, version, ReferralState.DATA_DELETED, RegisterEvent.DELETION_CONFIRMED,
                                deleted_by=actor.display_name, deleted_at=now)
        except _MailBeingSent as sending:
            return _banner(actor, "being_sent", reference=sending.reference)
        except IllegalTransition:
            if (await self._fresh(referral)).state == ReferralState.DATA_DELETED:  # the same click, just now
                return self._card(actor, await self._fresh(clicked), notice="deletion_recorded")
            return _banner(actor, "action_not_possible_now", reference=referral.reference)
        if self._after_deletion is not None:
            await self._after_deletion(updated)
        return self._card(actor, await self._fresh(clicked))

    async def _carry(self, actor: Actor, version: SentReferral, state: ReferralState, event: RegisterEvent,
               **changes: Any) -> None:
        """The family's withdrawal or deletion, carried to one correction version (inside the caller's commit).

        A version whose mail has not gone out yet is not sent at all: its outbox row is cancelled. One
        being handed to the mail server right now cannot be: `_MailBeingSent`.
        """
        if version.state in (ReferralState.DATA_DELETED, ReferralState.FAILED, state):
            return
        if version.state == ReferralState.QUEUED:
            if not await self._cancel_mail(version):
                raise _MailBeingSent(version.reference)  # the caller's commit is rolled back
            await self._referrals.transition(version.reference, ReferralState.FAILED,
                                       failure_reason=f"not sent: {event.value} for the referral")
            await self._record(actor, version, event, detail="not sent: cancelled with its referral")
            return
        if (state == ReferralState.DATA_DELETED and version.state not in TRANSITIONS) or \
                state not in TRANSITIONS[version.state]:
            changes = {key: value for key, value in changes.items() if not key.startswith("withdrawn")}
            await self._referrals.transition(version.reference, ReferralState.CONSENT_WITHDRAWN)
        updated = await self._referrals.transition(version.reference, state, **changes)
        await self._record(actor, updated, event, detail=f"with its referral {updated.root}")
        await self._update_for_everyone(updated)

    async def _cancel_mail(self, referral: SentReferral) -> bool:
        """Drop a queued mail before it leaves; False when it is being sent right now (or already was)."""
        return await self._outbox.cancel_queued(referral.message_id, self._clock.now(), "cancelled: consent withdrawn")

    async def _quality(self, actor: Actor, referral: SentReferral, data: Mapping[str, Any]) -> Answer:
        item = data.get("item")
        if item not in QUALITY_ITEMS:
            return self._card(actor, referral, notice="quality_item_missing")
        if referral.state not in HOLDS_DATA or (await self._family_root(referral)).state not in HOLDS_DATA:
            return _banner(actor, "action_not_possible_now", reference=referral.reference)
        if data.get("kind") == "superfluous":  # article 7: an item that was not needed; nothing is resent
            updated = await self._corrections.report_superfluous(referral, str(item), actor)
            return self._card(actor, updated, notice="superfluous_reported")
        today = self._clock.now().astimezone(self._tz).date()
        if not awaits_correction(self._registry, await self._family_root(referral), today):
            # The protocol has ended: a correction, a new transfer, would be refused. Recorded, nothing promised.
            async with self._db.transaction():
                updated = await self._corrections.report_after_end(referral, str(item), actor)
                await self._update_for_everyone(updated)
            return self._card(actor, updated, notice="quality_reported_protocol_ended")
        async with self._db.transaction():
            updated = await self._corrections.request(referral, str(item), actor)
            await self._update_for_everyone(updated)
        return self._card(actor, updated, notice="quality_reported")

    async def referrer_card(self, actor: Actor, reference: object) -> Answer:
        """The referrer's card of a referral as it stands ("Terug" from the withdrawal confirmation)."""
        referral = await referral_named(self._referrals, actor, reference)
        if isinstance(referral, Banner):
            return referral
        protocol = self._registry.get(referral.protocol_id)
        recipient = self._registry.recipient_name(referral.protocol_id)
        mailbox = referral.sent_to_mailbox or (protocol.recipient_mailbox if protocol else "")
        if referral.sent_at is not None:
            return cards.sent_card(actor.lang, reference=referral.reference, recipient=recipient, mailbox=mailbox,
                                   sent_at=referral.sent_at.astimezone(self._tz))
        return cards.queued_card(actor.lang, reference=referral.reference, recipient=recipient, mailbox=mailbox,
                                 queued_at=referral.queued_at.astimezone(self._tz))

    async def _family_root(self, referral: SentReferral) -> SentReferral:
        """The family's first version, which carries its outcome, deletion and withdrawal."""
        if referral.parent_reference is None:
            return referral
        return await self._referrals.get(referral.parent_reference) or referral

    # -- status ---------------------------------------------------------------------------------

    async def linked_protocols(self, conversation_id: str) -> list[OcmwLink]:
        """The protocols whose OCMW conversation this is."""
        return await self._links.for_conversation(conversation_id)

    # -- helpers --------------------------------------------------------------------------------

    async def _referral_for_ocmw(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> SentReferral | Banner:
        referral = await referral_named(self._referrals, actor, data.get("reference"))
        if isinstance(referral, Banner):
            return referral
        link = await self._links.for_protocol(referral.protocol_id)
        if link is None or link.conversation_id != base_conversation_id(actor.conversation_id):
            await self._refuse(actor, referral, verb)
            return _banner(actor, "not_ocmw_conversation")
        return referral

    async def _refuse(self, actor: Actor, referral: SentReferral, verb: str) -> None:
        """Log every refused click with its count; a register entry only for the first of a burst."""
        now = self._clock.now()
        click = await self._refusals.click(actor.user_id, referral.reference, verb, now)
        logger.warning("OCMW action from outside the linked conversation refused (click %d of this burst)",
                       click.clicks_in_burst,
                       extra={"reference": referral.reference, "verb": verb, "refused_clicks": click.clicks_in_burst})
        if not click.register:
            return
        detail = f"{verb} from outside the OCMW conversation"
        if click.only_counted_before:
            detail += f"; {click.only_counted_before} more such clicks in the previous burst were only counted"
        await self._register.append(at=now, event=RegisterEvent.REFUSED, actor_id=actor.user_id,
                              actor_name=actor.display_name, protocol_id=referral.protocol_id,
                              reference=referral.reference, detail=detail)

    def _card(self, actor: Actor, referral: SentReferral, notice: str | None = None) -> Card:
        """The channel's shared card: in the channel's language (Dutch), like the edit everyone sees."""
        return cards.ocmw_referral_card(OCMW_CHANNEL_LANGUAGE, self._view(referral, notice))

    def _view(self, referral: SentReferral, notice: str | None = None) -> cards.OcmwReferralView:
        protocol = self._registry.get(referral.protocol_id)
        return cards.OcmwReferralView(
            reference=referral.reference,
            sent_at=(referral.sent_at or referral.queued_at).astimezone(self._tz),
            sender_team=referral.sender_team or (protocol.sender.team if protocol else ""),
            recipient=self._registry.recipient_name(referral.protocol_id),
            mailbox=referral.sent_to_mailbox or (protocol.recipient_mailbox if protocol else ""),
            key_version=referral.key_version,
            state=_ocmw_state(referral.state),
            acknowledged_by=referral.acknowledged_by,
            acknowledged_at=_local_or_none(referral.acknowledged_at, self._tz),
            outcome_by=referral.outcome_by,
            outcome_at=_local_or_none(referral.outcome_at, self._tz),
            deleted_by=referral.deleted_by,
            deleted_at=_local_or_none(referral.deleted_at, self._tz),
            correction_of=referral.parent_reference,
            corrected_item=cast(Any, referral.corrected_item),
            reported_items=referral.reported_items,
            notice=notice,
        )

    async def _after_change(self, referral: SentReferral, referrer_text: str) -> None:
        """Queue the OCMW card's edit for everyone and the referrer's notice, in the caller's transaction."""
        await self._update_for_everyone(referral)
        await self._messages.post(referral.conversation_ref, MessageContent(text=referrer_text), now=self._clock.now(),
                            reference=referral.reference)

    async def _update_for_everyone(self, referral: SentReferral) -> None:
        link = await self._links.for_protocol(referral.protocol_id)
        if link is None:
            return
        card = cards.ocmw_referral_card(OCMW_CHANNEL_LANGUAGE, self._view(referral))
        await self._messages.update(link.conversation_ref, MessageContent(card=card), now=self._clock.now(),
                              slot=_card_slot(referral), reference=referral.reference)

    async def _record(self, actor: Actor, referral: SentReferral, event: RegisterEvent, detail: str = "") -> None:
        await self._register.append(at=self._clock.now(), event=event, actor_id=actor.user_id,
                              actor_name=actor.display_name, protocol_id=referral.protocol_id,
                              reference=referral.reference, detail=detail)

    async def _fresh(self, referral: SentReferral) -> SentReferral:
        return await self._referrals.get(referral.reference) or referral


    def _local(self, moment: dt.datetime) -> str:
        return moment.astimezone(self._tz).strftime("%d/%m/%Y %H:%M")


def _banner(actor: Actor, problem: str, **params: str) -> Banner:
    return Banner(cards.problem_banner(actor.lang, problem, **params))


def _card_slot(referral: SentReferral) -> str:
    """Where the id of the referral's card in the OCMW conversation is kept."""
    return f"ocmw:{referral.reference}"


def _withdrawal_slot(referral: SentReferral) -> str:
    """Where the id of the family's withdrawal notice in the OCMW conversation is kept: whether it reached Teams."""
    return f"ocmw-withdrawal:{referral.reference}"


def _ocmw_state(state: ReferralState) -> OcmwState:
    if state in (ReferralState.QUEUED, ReferralState.FAILED):
        return "sent"
    return cast(OcmwState, state.value)


def _local_or_none(moment: dt.datetime | None, tz: ZoneInfo) -> dt.datetime | None:
    return None if moment is None else moment.astimezone(tz)


def _channel_reference(conversation_ref: str) -> str:
    """The stored reference points at the channel itself, so each card starts its own thread."""
    try:
        reference = json.loads(conversation_ref)
    except ValueError:
        return conversation_ref
    conversation = reference.get("conversation") if isinstance(reference, dict) else None
    if isinstance(conversation, dict) and isinstance(conversation.get("id"), str):
        conversation["id"] = base_conversation_id(conversation["id"])
    reference.pop("activityId", None)
    return json.dumps(reference)
