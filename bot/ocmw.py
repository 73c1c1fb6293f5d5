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
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

import cards
from bot.access import OcmwChannelPolicy
from bot.chat_messages import MessageContent
from bot.clock import Clock
from bot.corrections import CorrectionService
from bot.database import transaction
from bot.dialogue import Actor, Card, Reply
from bot.message_outbox import MessageOutbox
from bot.ocmw_links import OcmwLink, OcmwLinks, base_conversation_id, display_code
from bot.protocols import ProtocolRegistry
from bot.reference import is_reference
from bot.referrals import HOLDS_DATA, OUTCOMES, IllegalTransition, ReferralState, ReferralStore, SentReferral
from bot.register import ProcessingRegister, RegisterEvent

logger = logging.getLogger(__name__)

QUALITY_ITEMS = ("name", "address", "phone", "email")
#: The OCMW channel's cards are shared by everyone in it: one language, the OCMW's own.
OCMW_CHANNEL_LANGUAGE: cards.Language = "nl"
OcmwState = Literal["sent", "received", "help_wanted", "no_help_wanted", "unreachable", "data_deleted",
                    "consent_withdrawn"]


@dataclass(frozen=True)
class RefusedClick:
    """One refused click as `RefusalBursts` counts it."""

    clicks_in_burst: int  # this click's number in its burst, from 1
    register: bool  # the first of a burst: write a register entry
    only_counted_before: int  # clicks of the key's previous burst that got no entry of their own


@dataclass
class _Burst:
    started: dt.datetime
    clicks: int = 1


class RefusalBursts:
    """Refused OCMW clicks grouped into bursts, so an outsider clicking away cannot flood the register.

    A burst is the refused clicks of one user on one verb of one referral from its first click until
    `window` (10 minutes) later. The first click gets a register entry; the others are counted in
    the log line only, and their number goes into the entry that opens the next burst of that user,
    verb and referral. So every click is logged, and the register gets at most one entry per key per
    window. Kept in memory (built by `create_app`): a restart starts new bursts, which can add an
    entry but never hides a click; a count not yet carried into an entry is then only in the log.
    """

    def __init__(
        self, window: dt.timedelta = dt.timedelta(minutes=10), keep: dt.timedelta = dt.timedelta(days=1)
    ) -> None:
        self._window = window
        self._keep = keep
        self._bursts: dict[tuple[str, str, str], _Burst] = {}

    def click(self, user_id: str, reference: str, verb: str, now: dt.datetime) -> RefusedClick:
        """Count one refused click at `now`."""
        key = (user_id, reference, verb)
        burst = self._bursts.get(key)
        if burst is not None and now - burst.started < self._window:
            burst.clicks += 1
            return RefusedClick(clicks_in_burst=burst.clicks, register=False, only_counted_before=0)
        self._forget_old(now)
        self._bursts[key] = _Burst(started=now)
        return RefusedClick(clicks_in_burst=1, register=True,
                            only_counted_before=0 if burst is None else burst.clicks - 1)

    def _forget_old(self, now: dt.datetime) -> None:
        """Drop closed bursts with nothing to carry, and any older than `keep` (their count is in the log)."""
        for key, burst in list(self._bursts.items()):
            age = now - burst.started
            if age >= self._keep or (age >= self._window and burst.clicks == 1):
                del self._bursts[key]


class OcmwService:
    """Everything the OCMW conversation can do, and the cards the bot posts there."""

    def __init__(
        self,
        *,
        connection: sqlite3.Connection,
        links: OcmwLinks,
        referrals: ReferralStore,
        registry: ProtocolRegistry,
        register: ProcessingRegister,
        corrections: CorrectionService,
        messages: MessageOutbox,
        clock: Clock,
        timezone: ZoneInfo,
        channels: OcmwChannelPolicy,
        refusals: RefusalBursts,
        after_deletion: Callable[[SentReferral], None] = lambda _: None,
    ) -> None:
        """`after_deletion` runs once a deletion is committed (the outbox folder's copies go)."""
        self._channels = channels
        self._refusals = refusals
        self._after_deletion = after_deletion
        self._db = connection
        self._links = links
        self._referrals = referrals
        self._registry = registry
        self._register = register
        self._corrections = corrections
        self._messages = messages
        self._clock = clock
        self._tz = timezone

    # -- linking --------------------------------------------------------------------------------

    def link_command(self, actor: Actor, code: str) -> Reply:
        """`koppel <code>`: link this conversation, or ask before replacing another one."""
        refusal = self._place_refusal(actor)
        if refusal is not None:
            return Reply(text=refusal)
        now = self._clock.now()
        protocol_id = self._links.protocol_for_code(code, now)
        protocol = None if protocol_id is None else self._registry.get(protocol_id)
        if protocol is None:
            logger.warning("pairing code refused")
            return Reply(text=cards.text(actor.lang, "link_invalid"))
        existing = self._links.for_protocol(protocol.id)
        if existing is not None and existing.conversation_id == base_conversation_id(actor.conversation_id):
            return Reply(text=cards.text(actor.lang, "link_already_here", ocmw=protocol.recipient.organisation))
        if existing is not None:
            return Reply(card=cards.link_confirm_card(actor.lang, ocmw=protocol.recipient.organisation,
                                                      code=display_code(code)))
        return Reply(text=self._link(actor, code, protocol.id))

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

    def _link(self, actor: Actor, code: str, protocol_id: str) -> str:
        protocol = self._registry.get(protocol_id)
        now = self._clock.now()
        link = OcmwLink(
            protocol_id=protocol_id,
            conversation_id=base_conversation_id(actor.conversation_id),
            conversation_ref=_channel_reference(actor.conversation_ref),
            linked_by_id=actor.user_id,
            linked_by=actor.display_name,
            linked_at=now,
        )
        if protocol is None:
            return cards.text(actor.lang, "link_invalid")
        with transaction(self._db):
            if not self._links.link(code, link, now):
                return cards.text(actor.lang, "link_invalid")
            self._register.append(at=now, event=RegisterEvent.LINK_CREATED, actor_id=actor.user_id,
                                  actor_name=actor.display_name, protocol_id=protocol_id,
                                  detail=f"conversation {link.conversation_id[:80]}")
            for referral in self._referrals.in_state(ReferralState.SENT):
                if referral.protocol_id == protocol_id and not self._messages.has_slot(_card_slot(referral)):
                    self.queue_referral_card(referral, now)
        logger.info("OCMW conversation linked", extra={"protocol_id": protocol_id})
        return cards.text(actor.lang, "link_done", ocmw=protocol.recipient.organisation)

    # -- delivery -------------------------------------------------------------------------------

    def queue_referral_card(self, referral: SentReferral, now: dt.datetime) -> None:
        """Queue the referral's card for the OCMW conversation, inside the caller's transaction.

        Called when the mail was accepted (in the delivery's own transaction) and, for referrals
        delivered before, when the conversation is linked.
        """
        link = self._links.for_protocol(referral.protocol_id)
        if link is None:
            logger.warning("no OCMW conversation linked yet; the card follows when it is",
                           extra={"reference": referral.reference, "protocol_id": referral.protocol_id})
            return
        card = cards.ocmw_referral_card(OCMW_CHANNEL_LANGUAGE, self._view(referral))
        self._messages.post(link.conversation_ref, MessageContent(card=card), now=now, reference=referral.reference,
                            slot=_card_slot(referral))

    # -- card actions ---------------------------------------------------------------------------

    async def on_action(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> Card:
        """ack.receive, referral.outcome, referral.deleted, referral.quality, link.confirm, link.cancel."""
        if verb == "link.confirm":
            refusal = self._place_refusal(actor)
            if refusal is not None:
                return cards.notice_card(actor.lang, refusal)
            code = data.get("code")
            protocol_id = self._links.protocol_for_code(code, self._clock.now()) if isinstance(code, str) else None
            if not isinstance(code, str) or protocol_id is None:
                return cards.notice_card(actor.lang, cards.text(actor.lang, "link_invalid"))
            return cards.notice_card(actor.lang, self._link(actor, code, protocol_id))
        if verb == "link.cancel":
            return cards.notice_card(actor.lang, cards.text(actor.lang, "link_cancelled"))
        found = self._referral_for_ocmw(actor, verb, data)
        if not isinstance(found, SentReferral):
            return found
        handlers = {
            "ack.receive": self._acknowledge,
            "referral.outcome": self._outcome,
            "referral.deleted": self._deleted,
            "referral.quality": self._quality,
        }
        return await handlers[verb](actor, found, data)

    async def _acknowledge(self, actor: Actor, referral: SentReferral, data: Mapping[str, Any]) -> Card:
        if referral.state != ReferralState.SENT:
            if referral.acknowledged_at is not None:
                return self._card(actor, referral, notice="already_acknowledged")
            return cards.problem_card(actor.lang, "action_not_possible_now", reference=referral.reference)
        now = self._clock.now()
        try:
            with transaction(self._db):
                updated = self._referrals.transition(
                    referral.reference, ReferralState.RECEIVED,
                    acknowledged_by_id=actor.user_id, acknowledged_by=actor.display_name, acknowledged_at=now,
                )
                self._record(actor, updated, RegisterEvent.ACKNOWLEDGED)
                self._after_change(updated, cards.text(
                    cards.language_for(updated.lang), "ack_to_referrer", reference=updated.reference,
                    recipient=self._registry.recipient_name(updated.protocol_id),
                    name=cards.escape_markdown(actor.display_name), time=self._local(now),
                ))
        except IllegalTransition:
            return self._card(actor, self._fresh(referral), notice="already_acknowledged")
        return self._card(actor, updated)

    async def _outcome(self, actor: Actor, referral: SentReferral, data: Mapping[str, Any]) -> Card:
        outcome = data.get("outcome")
        target = OUTCOMES.get(outcome) if isinstance(outcome, str) else None
        if target is None:
            return cards.problem_card(actor.lang, "outcome_invalid")
        if referral.outcome_at is not None:
            return self._card(actor, referral, notice="outcome_already_recorded")
        try:
            with transaction(self._db):
                updated = self._referrals.transition(
                    referral.reference, target,
                    outcome_by_id=actor.user_id, outcome_by=actor.display_name, outcome_at=self._clock.now(),
                )
                self._record(actor, updated, RegisterEvent.OUTCOME_RECORDED, detail=str(outcome))
                self._after_change(updated, cards.text(
                    cards.language_for(updated.lang), f"outcome_to_referrer_{outcome}", reference=updated.reference,
                    recipient=self._registry.recipient_name(updated.protocol_id),
                ))
        except IllegalTransition:
            return cards.problem_card(actor.lang, "action_not_possible_now", reference=referral.reference)
        return self._card(actor, updated)

    async def withdraw_consent(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> Card:
        """The referrer records that the parents withdrew consent; the OCMW is asked to delete."""
        reference = data.get("reference")
        referral = self._referrals.get(reference) if isinstance(reference, str) and is_reference(reference) else None
        if referral is not None and referral.parent_reference is not None:
            referral = self._referrals.get(referral.parent_reference)  # consent is about the family, not a version
        if referral is None:
            return cards.problem_card(actor.lang, "referral_unknown", reference=str(reference)[:40])
        if referral.referrer_id != actor.user_id:
            logger.warning("consent withdrawal by someone other than the referrer refused",
                           extra={"reference": referral.reference})
            return cards.problem_card(actor.lang, "not_allowed")
        if referral.state == ReferralState.CONSENT_WITHDRAWN:
            return cards.notice_card(actor.lang, cards.text(actor.lang, "withdrawal_recorded",
                                                            reference=referral.reference))
        try:
            with transaction(self._db):
                updated = self._referrals.transition(referral.reference, ReferralState.CONSENT_WITHDRAWN)
                self._record(actor, updated, RegisterEvent.CONSENT_WITHDRAWN)
                self._update_for_everyone(updated)
                self._tell_ocmw(updated)
        except IllegalTransition:
            return cards.problem_card(actor.lang, "action_not_possible_now", reference=referral.reference)
        logger.info("consent withdrawn", extra={"reference": updated.reference})
        return cards.notice_card(actor.lang, cards.text(actor.lang, "withdrawal_recorded",
                                                        reference=updated.reference))

    def _tell_ocmw(self, referral: SentReferral) -> None:
        link = self._links.for_protocol(referral.protocol_id)
        if link is not None:
            text = cards.text(OCMW_CHANNEL_LANGUAGE, "withdrawal_to_ocmw", reference=referral.reference)
            self._messages.post(link.conversation_ref, MessageContent(text=text), now=self._clock.now(),
                                reference=referral.reference)

    async def _deleted(self, actor: Actor, referral: SentReferral, data: Mapping[str, Any]) -> Card:
        if referral.state == ReferralState.DATA_DELETED:
            return self._card(actor, referral, notice="deletion_recorded")
        try:
            with transaction(self._db):
                updated = self._referrals.transition(
                    referral.reference, ReferralState.DATA_DELETED,
                    deleted_by=actor.display_name, deleted_at=self._clock.now(),
                )
                self._record(actor, updated, RegisterEvent.DELETION_CONFIRMED)
                self._after_change(updated, cards.text(
                    cards.language_for(updated.lang), "deleted_to_referrer", reference=updated.reference,
                    recipient=self._registry.recipient_name(updated.protocol_id),
                ))
        except IllegalTransition:
            return cards.problem_card(actor.lang, "action_not_possible_now", reference=referral.reference)
        self._after_deletion(updated)
        return self._card(actor, updated)

    async def _quality(self, actor: Actor, referral: SentReferral, data: Mapping[str, Any]) -> Card:
        item = data.get("item")
        if item not in QUALITY_ITEMS:
            return self._card(actor, referral, notice="quality_item_missing")
        if referral.state not in HOLDS_DATA:
            return cards.problem_card(actor.lang, "action_not_possible_now", reference=referral.reference)
        with transaction(self._db):
            updated = self._corrections.request(referral, str(item), actor)
            self._update_for_everyone(updated)
        return self._card(actor, updated, notice="quality_reported")

    # -- status ---------------------------------------------------------------------------------

    def linked_protocols(self, conversation_id: str) -> list[OcmwLink]:
        """The protocols whose OCMW conversation this is."""
        return self._links.for_conversation(conversation_id)

    # -- helpers --------------------------------------------------------------------------------

    def _referral_for_ocmw(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> SentReferral | Card:
        reference = data.get("reference")
        if not isinstance(reference, str) or not is_reference(reference):
            return cards.problem_card(actor.lang, "malformed_action")
        referral = self._referrals.get(reference)
        if referral is None:
            return cards.problem_card(actor.lang, "referral_unknown", reference=reference)
        link = self._links.for_protocol(referral.protocol_id)
        if link is None or link.conversation_id != base_conversation_id(actor.conversation_id):
            self._refuse(actor, referral, verb)
            return cards.problem_card(actor.lang, "not_ocmw_conversation")
        return referral

    def _refuse(self, actor: Actor, referral: SentReferral, verb: str) -> None:
        """Log every refused click with its count; a register entry only for the first of a burst."""
        now = self._clock.now()
        click = self._refusals.click(actor.user_id, referral.reference, verb, now)
        logger.warning("OCMW action from outside the linked conversation refused (click %d of this burst)",
                       click.clicks_in_burst,
                       extra={"reference": referral.reference, "verb": verb, "refused_clicks": click.clicks_in_burst})
        if not click.register:
            return
        detail = f"{verb} from outside the OCMW conversation"
        if click.only_counted_before:
            detail += f"; {click.only_counted_before} more such clicks in the previous burst were only counted"
        self._register.append(at=now, event=RegisterEvent.REFUSED, actor_id=actor.user_id,
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
            sender_team=protocol.sender.team if protocol else "",
            recipient=self._registry.recipient_name(referral.protocol_id),
            mailbox=protocol.recipient_mailbox if protocol else "",
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

    def _after_change(self, referral: SentReferral, referrer_text: str) -> None:
        """Queue the OCMW card's edit for everyone and the referrer's notice, in the caller's transaction."""
        self._update_for_everyone(referral)
        self._messages.post(referral.conversation_ref, MessageContent(text=referrer_text), now=self._clock.now(),
                            reference=referral.reference)

    def _update_for_everyone(self, referral: SentReferral) -> None:
        link = self._links.for_protocol(referral.protocol_id)
        if link is None:
            return
        card = cards.ocmw_referral_card(OCMW_CHANNEL_LANGUAGE, self._view(referral))
        self._messages.update(link.conversation_ref, MessageContent(card=card), now=self._clock.now(),
                              slot=_card_slot(referral), reference=referral.reference)

    def _record(self, actor: Actor, referral: SentReferral, event: RegisterEvent, detail: str = "") -> None:
        self._register.append(at=self._clock.now(), event=event, actor_id=actor.user_id,
                              actor_name=actor.display_name, protocol_id=referral.protocol_id,
                              reference=referral.reference, detail=detail)

    def _fresh(self, referral: SentReferral) -> SentReferral:
        return self._referrals.get(referral.reference) or referral


    def _local(self, moment: dt.datetime) -> str:
        return moment.astimezone(self._tz).strftime("%d/%m/%Y %H:%M")


def _card_slot(referral: SentReferral) -> str:
    """Where the id of the referral's card in the OCMW conversation is kept."""
    return f"ocmw:{referral.reference}"


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
