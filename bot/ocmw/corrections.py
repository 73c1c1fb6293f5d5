"""Article 7: the OCMW reports an item wrong, the referrer corrects exactly that item.

The correction goes out as a new version of the same referral (`VD-...-2`) carrying only the
corrected item, encrypted like the first package and notified like it. It is a new transfer named as
the referral's sending team, so only who may send as that team under the protocol now may begin or
send one (`referrer_refusal`, the rule the referral's send applies).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Mapping
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

import cards
from bot.clock import Clock
from bot.core.protocols import ProtocolRegistry
from bot.core.reference import is_reference
from bot.core.referral_values import ITEM_FIELDS, NO_CORRECT_VALUE, FieldError, Referrer
from bot.core.sent_referrals import CLOSED, ReferralState, ReferralStore, SentReferral
from bot.delivery.chat_messages import MessageContent
from bot.delivery.message_outbox import MessageOutbox
from bot.evidence.register import ProcessingRegister, RegisterEvent
from bot.ocmw.links import OcmwLinks
from bot.referral.details_validation import validate_item
from bot.referral.dialogue import Actor, Answer, Banner, Card
from bot.referral.referrers import MembershipUnavailable, ReferrerAccess
from bot.referral.sending import (
    AlreadySent,
    FamilyClosed,
    Origin,
    ReferralSender,
    SendFailure,
)
from bot.storage.database import Database, from_text, to_text

logger = logging.getLogger(__name__)

Item = Literal["name", "address", "phone", "email"]
#: `corrections.kind`: asked by the OCMW ("reported"), or begun by Kind en Gezin itself.
OWN = "own"
#: `reminders.kind` of the referrer's reminder of a correction the OCMW asked for (`subject`: the request's id).
CORRECTION_REMINDER = "correction_referrer"
#: The language of everything the bot says in an OCMW's channel.
OCMW_LANGUAGE: cards.Language = "nl"


class CorrectionService:
    """Correction requests from the OCMW and the referrer's corrected item."""

    def __init__(
        self,
        *,
        db: Database,
        referrals: ReferralStore,
        registry: ProtocolRegistry,
        register: ProcessingRegister,
        sender: ReferralSender,
        messages: MessageOutbox,
        referrers: ReferrerAccess,
        links: OcmwLinks,
        clock: Clock,
        timezone: ZoneInfo,
    ) -> None:
        self._tz = timezone
        self._links = links
        self._referrers = referrers
        self._db = db
        self._referrals = referrals
        self._registry = registry
        self._register = register
        self._sender = sender
        self._messages = messages
        self._clock = clock
        self._cards = RequestCards(registry, messages)

    async def request(self, referral: SentReferral, item: str, actor: Actor) -> SentReferral:
        """Record the OCMW's report and queue the referrer's card to correct that item, in one commit.

        An item already asked for and not corrected yet is asked once: a second report (two workers on one
        card, on one instance or two) adds no request, card or register entry, and gets the referral as it is.
        """
        root = referral.parent_reference or referral.reference
        correction_id = secrets.token_urlsafe(12)
        now = self._clock.now()
        async with self._db.transaction():
            if await self._asked_already(root, item):
                logger.info("correction already requested for this item: not asked again", extra={"reference": root})
                return await self._referrals.get(referral.reference) or referral
            await self._db.execute(
                "INSERT INTO corrections (id, reference, item, requested_by_id, requested_by, requested_at)"
                " VALUES (:id, :reference, :item, :by_id, :by, :at)",
                {"id": correction_id, "reference": root, "item": item, "by_id": actor.user_id,
                 "by": actor.display_name, "at": to_text(now)},
            )
            updated = await self._record_report(referral, item, actor, now, f"item: {item}")
            original = await self._referrals.get(root) or referral
            await self._cards.post(correction_id, original, item, now)
        logger.info("correction requested", extra={"reference": root})
        return updated

    async def report_after_end(self, referral: SentReferral, item: str, actor: Actor) -> SentReferral:
        """The OCMW reports an item wrong after the protocol's end: a correction, a new transfer, would be refused, so
        the report is recorded (the item listed on the OCMW's card, the register) and the referrer told, with no card
        to correct it and nothing to chase; in one commit.

        Said once per item, as `report_superfluous`: a second report (two workers on one card, a double tap) records
        and tells nothing more, and gets the referral as it is.
        """
        now = self._clock.now()
        original = await self._referrals.get(referral.root) or referral
        lang = cards.language_for(original.lang)
        detail = f"item: {item}; protocol ended: no correction through the bot"
        async with self._db.transaction():
            await self._referrals.lock(original.reference)  # a report at the same moment waits, then sees this one
            if await self._register.recorded(original.reference, RegisterEvent.CORRECTION_REQUESTED, detail):
                return await self._referrals.get(referral.reference) or referral
            updated = await self._record_report(referral, item, actor, now, detail)
            text = cards.text(lang, "quality_after_end_to_referrer", reference=original.reference,
                              recipient=self._registry.recipient_name(original.protocol_id),
                              item=cards.text(lang, f"item.{item}.name"))
            await self._messages.post(original.conversation_ref, MessageContent(text=text), now=now,
                                      reference=original.reference)
        logger.info("wrong item reported after the protocol's end: no correction", extra={"reference": original.root})
        return updated

    async def _record_report(self, referral: SentReferral, item: str, actor: Actor, now: dt.datetime,
                             detail: str) -> SentReferral:
        """The item listed as reported on `referral` and the report registered, in the caller's transaction."""
        current = await self._referrals.get(referral.reference) or referral
        items = tuple(dict.fromkeys((*current.reported_items, item)))
        updated = await self._referrals.update(referral.reference, reported_items=items)
        await self._register.append(at=now, event=RegisterEvent.CORRECTION_REQUESTED, actor_id=actor.user_id,
                                    actor_name=actor.display_name, protocol_id=referral.protocol_id,
                                    reference=referral.root, detail=detail)
        return updated


    async def _asked_already(self, root: str, item: str) -> bool:
        """Whether the OCMW's request to correct `item` of the family `root` is still open.

        The family's referral is locked first (PostgreSQL; SQLite's writer lock holds already), so a report at
        the same moment waits for this transaction and then sees its request.
        """
        await self._referrals.lock(root)
        return await self._db.fetch_one(
            "SELECT 1 AS open FROM corrections WHERE reference = :reference AND item = :item"
            " AND kind = 'reported' AND new_reference IS NULL", {"reference": root, "item": item}) is not None

    async def on_action(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> Answer:
        """correction.submit and correction.later from a correction card; correction.start and .open to begin one.

        Any Kind en Gezin colleague who may refer as the referral's team under its protocol may send it
        (`referrer_refusal`): a correction does not wait for the one referrer. Errors are banners: the
        card stays, with what was typed.
        """
        if verb in (cards.VERB_CORRECTION_START, cards.VERB_CORRECTION_OPEN):
            return await self._own_initiative(actor, verb, data)
        correction_id = data.get("correctionId")
        if not isinstance(correction_id, str) or len(correction_id) > 64:
            return _banner(actor, "correction_unknown")
        row = await self._db.fetch_one("SELECT * FROM corrections WHERE id = :id", {"id": correction_id})
        original = None if row is None else await self._referrals.get(str(row["reference"]))
        if row is None or original is None:
            return _banner(actor, "correction_unknown")
        if refused := await self._unlisted(actor, original):
            return refused
        item = str(row["item"])
        if row["new_reference"] is not None:
            return self._answered(actor, str(row["new_reference"]), original, item)
        if original.state in CLOSED:
            return _banner(actor, _closed_problem(original), reference=original.reference)
        own = row["kind"] == OWN
        if verb == cards.VERB_CORRECTION_NONE:
            return await self._no_correct_value(actor, correction_id, original, item, cards.is_confirmed(data))
        if verb == "correction.later":
            return self._cards.card(actor.lang, correction_id, original, item, {}, {}, own=own)
        protocol = self._registry.get(original.protocol_id)
        if protocol is None or not protocol.in_force_on(self._clock.now().astimezone(self._tz).date()):
            return _banner(actor, "protocol_not_in_force", ocmw=self._registry.recipient_name(original.protocol_id))
        result = validate_item(item, data, protocol)
        if result.values is None:
            return self._cards.card(actor.lang, correction_id, original, item, result.typed, result.errors, own=own)
        referrer = Referrer(user_id=actor.user_id, display_name=actor.display_name)
        origin = Origin(conversation_id=actor.conversation_id, conversation_ref=actor.conversation_ref,
                        card_activity_id=actor.card_activity_id, lang=actor.lang)

        async def claim(new_reference: str) -> str | None:
            """Mark the request sent as `new_reference` (and every other open one for the same item: one
            correction answers them all); or the version it was sent as before."""
            cursor = await self._db.execute(
                "UPDATE corrections SET new_reference = :new WHERE id = :id AND new_reference IS NULL",
                {"new": new_reference, "id": correction_id},
            )
            if cursor.rowcount != 1:
                return str(await self._db.scalar("SELECT new_reference FROM corrections WHERE id = :id",
                                                 {"id": correction_id}))
            await self._db.execute(
                "UPDATE corrections SET new_reference = :new WHERE reference = :reference AND item = :item"
                " AND new_reference IS NULL",
                {"new": new_reference, "reference": original.reference, "item": item},
            )
            return None

        try:
            # The same sending team as the referral it corrects, whoever sends the correction.
            sent_by = protocol.sent_by(original.sender_team) if original.sender_team else protocol
            queued = await self._sender.queue_correction(original, item, result.values, sent_by, referrer, origin,
                                                         claim)
        except AlreadySent as sent:
            return self._answered(actor, sent.reference, original, item)
        except FamilyClosed as closed:
            return _banner(actor, _closed_problem(closed.referral), reference=original.reference)
        except SendFailure as failure:
            logger.warning("correction not queued: %s", failure.reason, extra={"reference": original.reference})
            # Nothing of a correction is stored (unlike a draft): what was typed is on the card, which stays.
            return _banner(actor, "correction_not_queued", reference=original.reference)
        return cards.correction_queued_card(actor.lang, reference=queued.reference, corrected_item=item,
                                            recipient=protocol.recipient.organisation,
                                            queued_at=queued.queued_at.astimezone(self._tz))

    def _answered(self, actor: Actor, answered_by: str, original: SentReferral, item: str) -> Banner:
        """The banner for a request answered before: by the version that carried the item, or "geen juist ..."."""
        if answered_by != NO_CORRECT_VALUE:
            return _banner(actor, "correction_done", reference=answered_by)
        return _banner(actor, "correction_answered_none", reference=original.reference,
                       item=cards.item_word(actor.lang, item), recipient=self._registry.recipient_name(
                           original.protocol_id))

    async def _no_correct_value(self, actor: Actor, correction_id: str, original: SentReferral, item: str,
                                confirmed: bool) -> Answer:
        """The family has no (other) phone number or e-mail address (article 7: Kind en Gezin takes the appropriate
        measures and tells the OCMW): asked once more, then every open request for the item is answered without a
        version, the OCMW's channel asked to delete the wrong value (the reference and the item, never a value) and
        the register told, in one commit. No data leaves, so this holds after the protocol's end too; without a
        linked channel nobody would be told, so nothing is recorded and the referrer is asked to tell the OCMW."""
        if item not in cards.ITEMS_WITHOUT_VALUE:
            return _banner(actor, "malformed_action")  # a name or an address the family always has: no such button
        recipient = self._registry.recipient_name(original.protocol_id)
        word = cards.item_word(actor.lang, item)
        if not confirmed:
            return cards.confirm_card(actor.lang, "correction_none", reference=original.reference,
                                      verb=cards.VERB_CORRECTION_NONE, data={"correctionId": correction_id},
                                      back={"correctionId": correction_id}, back_verb=cards.VERB_CORRECTION_LATER,
                                      params={"item": word, "recipient": recipient})
        link = await self._links.for_protocol(original.protocol_id)
        if link is None:
            return _banner(actor, "correction_none_no_channel", reference=original.reference, item=word,
                           recipient=recipient)
        now = self._clock.now()
        async with self._db.transaction():
            current = await self._referrals.lock(original.reference)  # a send or a closing at once waits, then sees
            if current.state in CLOSED:
                return _banner(actor, _closed_problem(current), reference=original.reference)
            cursor = await self._db.execute(
                "UPDATE corrections SET new_reference = :none WHERE id = :id AND new_reference IS NULL",
                {"none": NO_CORRECT_VALUE, "id": correction_id})
            if cursor.rowcount != 1:  # a colleague sent a correction, or said the same, since the card was read
                answered = await self._db.scalar("SELECT new_reference FROM corrections WHERE id = :id",
                                                 {"id": correction_id})
                return self._answered(actor, str(answered), original, item)
            await self._db.execute(
                "UPDATE corrections SET new_reference = :none WHERE reference = :reference AND item = :item"
                " AND new_reference IS NULL", {"none": NO_CORRECT_VALUE, "reference": original.reference, "item": item})
            await self._register.append(at=now, event=RegisterEvent.NO_CORRECT_VALUE, actor_id=actor.user_id,
                                        actor_name=actor.display_name, protocol_id=original.protocol_id,
                                        reference=original.reference,
                                        detail=f"item: {item}; no correct value: the OCMW asked to delete it")
            await self._ask_deletion(link.conversation_ref, original.reference, item, now)
        logger.info("correction answered without a value: the OCMW asked to delete the wrong one",
                    extra={"reference": original.reference})
        return cards.notice_card(actor.lang, cards.text(actor.lang, "correction_none_done", recipient=recipient,
                                                        item=word, reference=original.reference))

    async def _ask_deletion(self, conversation_ref: str, root: str, item: str, now: dt.datetime) -> None:
        """Queue the OCMW channel's message asking to delete the wrong `item` of `root` (the reference and the item,
        never a value), under its own slot, so the bot back in the team knows whether it arrived
        (`ask_deletion_again`). In the caller's transaction."""
        text = cards.text(OCMW_LANGUAGE, "correction_none_to_ocmw", reference=root,
                          item=cards.item_word(OCMW_LANGUAGE, item))
        await self._messages.post(conversation_ref, MessageContent(text=text), now=now, reference=root,
                                  slot=no_correct_value_slot(root, item))

    async def ask_deletion_again(self, protocol_id: str, referrals: list[SentReferral], now: dt.datetime) -> int:
        """The bot is back in the OCMW's team: the messages asking to delete a wrong item answered "geen juist ..."
        (a request reported or Kind en Gezin's own) for these referrals that did not reach the channel (Teams
        refused them and they were given up, or none was ever queued) are queued again, the same text; one that
        arrived is not posted twice. In the caller's transaction; how many."""
        roots = sorted({referral.root for referral in referrals})
        link = await self._links.for_protocol(protocol_id)
        if not roots or link is None:
            return 0
        rows = await self._db.fetch_all(
            "SELECT DISTINCT reference, item FROM corrections WHERE reference IN :roots AND new_reference = :none",
            {"roots": roots, "none": NO_CORRECT_VALUE})
        slots = {no_correct_value_slot(str(row["reference"]), str(row["item"])): str(row["reference"])
                 for row in rows}
        missing = await self._messages.cards_missing(slots)
        for row in rows:
            if no_correct_value_slot(str(row["reference"]), str(row["item"])) in missing:
                await self._ask_deletion(link.conversation_ref, str(row["reference"]), str(row["item"]), now)
        if missing:
            logger.warning("OCMW channel: %d message(s) asking to delete a wrong item Teams did not show, sent again",
                           len(missing), extra={"protocol_id": protocol_id})
        return len(missing)

    async def _own_initiative(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> Answer:
        """Kind en Gezin corrects an item without the OCMW asking (article 7): which item, then the usual card."""
        found = await referral_named(self._referrals, actor, data.get("reference"))
        if isinstance(found, Banner):
            return found
        original = await self._referrals.get(found.root) or found
        if refused := await self._unlisted(actor, original):
            return refused
        if original.state in CLOSED or original.state == ReferralState.QUEUED:
            return _banner(actor, _closed_problem(original) if original.state in CLOSED else "action_not_possible_now",
                           reference=original.reference)
        recipient = self._registry.recipient_name(original.protocol_id)
        item = data.get("item")
        if verb == cards.VERB_CORRECTION_START or item not in ITEM_FIELDS:
            return cards.correction_start_card(actor.lang, reference=original.reference, recipient=recipient)
        correction_id = secrets.token_urlsafe(12)
        now = self._clock.now()
        async with self._db.transaction():
            await self._db.execute(
                "INSERT INTO corrections (id, reference, item, requested_by_id, requested_by, requested_at, kind)"
                " VALUES (:id, :reference, :item, :by_id, :by, :at, :kind)",
                {"id": correction_id, "reference": original.reference, "item": str(item), "by_id": actor.user_id,
                 "by": actor.display_name, "at": to_text(now), "kind": OWN},
            )
            await self._register.append(at=now, event=RegisterEvent.CORRECTION_REQUESTED, actor_id=actor.user_id,
                                  actor_name=actor.display_name, protocol_id=original.protocol_id,
                                  reference=original.reference,
                                  detail=f"item: {item}; on Kind en Gezin's own initiative")
        logger.info("correction opened on Kind en Gezin's own initiative", extra={"reference": original.reference})
        return self._cards.card(actor.lang, correction_id, original, str(item), {}, {}, own=True)

    async def _unlisted(self, actor: Actor, original: SentReferral) -> Banner | None:
        """The refusal when `actor` may not send as the referral's team (the correction is named so); else None."""
        return await referrer_refusal(self._referrers, self._registry, actor, original, team=original.sender_team)

    async def cards_back(self, actor: Actor) -> int:
        """The bot added to a referrer's chat again (the app installed again): the cards of the corrections the OCMW
        asked for there that Teams refused meanwhile (403 while uninstalled, given up) are posted again. How many."""
        rows = await self._db.fetch_all(
            "SELECT c.id, c.reference, c.item FROM corrections AS c JOIN referrals AS r ON r.reference = c.reference"
            " WHERE c.new_reference IS NULL AND c.kind = 'reported' AND r.conversation_id = :conversation",
            {"conversation": actor.conversation_id})
        now = self._clock.now()
        again = 0
        for row in rows:
            original = await self._referrals.get(str(row["reference"]))
            if original is None or not awaits_correction(self._registry, original, now.astimezone(self._tz).date()):
                continue
            async with self._db.transaction():
                again += await self._cards.post_if_missing(str(row["id"]), original, str(row["item"]), now)
        if again:
            logger.warning("correction request: %d card(s) Teams did not show posted again", again)
        return again

    async def reopen(self, version: SentReferral, now: dt.datetime) -> None:
        """A correction version given up (the mail server refused it): the requests it answered are open again, in
        the caller's transaction, so the referrer can send the correction again and is reminded until it goes out.
        Their cards come back to the chat (the one clicked now says "NIET verstuurd"). A first version: nothing.

        A request whose item was answered since (`answered_since`: a later version carries it, or "Er is geen juist
        ..." was said of it) counts as answered so instead: reopening it brought back a card and reminders for an item
        already on its way to the OCMW, or one the OCMW was asked to delete."""
        if version.parent_reference is None:
            return
        rows = await self._db.fetch_all("SELECT id, item, kind FROM corrections WHERE new_reference = :version",
                                        {"version": version.reference})
        if not rows:
            return
        later = await self._answers_since(version, {str(row["item"]) for row in rows})
        reopened = [row for row in rows if str(row["item"]) not in later]
        for row in rows:
            await self._db.execute("UPDATE corrections SET new_reference = :answer WHERE id = :id",
                                   {"answer": later.get(str(row["item"])), "id": str(row["id"])})
        logger.warning("correction not delivered: %d request(s) open again, %d answered since (a later version or no"
                       " correct value)", len(reopened), len(rows) - len(reopened),
                       extra={"reference": version.reference})
        rows = reopened
        if not rows:
            return
        await self._restart_reminders([str(row["id"]) for row in rows if row["kind"] != OWN], now)
        original = await self._referrals.get(version.parent_reference)
        if original is None:
            return
        if not awaits_correction(self._registry, original, now.astimezone(self._tz).date()):
            if original.state not in CLOSED:  # the protocol ended: the OCMW was told "De correctie komt"
                await self._tell_ocmw_not_coming(original, [str(row["item"]) for row in rows if row["kind"] != OWN],
                                                 now)
            return  # closed, or its protocol ended: the card would only refuse (on_action says why)
        for row in rows:
            await self._cards.post(str(row["id"]), original, str(row["item"]), now, own=row["kind"] == OWN)

    async def _restart_reminders(self, request_ids: list[str], now: dt.datetime) -> None:
        """The reminders of requests opened again count from `now` (in the caller's transaction): the referrer is told
        at this moment that the correction did not go, with the card to send it again, which asks what a reminder
        would. Counted from the request (days before), the next pass reminded them a minute later."""
        for request_id in request_ids:
            await self._db.execute(
                "INSERT INTO reminders (subject, kind, at) VALUES (:subject, :kind, :now)"
                " ON CONFLICT (subject, kind) DO UPDATE SET at = excluded.at",
                {"subject": request_id, "kind": CORRECTION_REMINDER, "now": to_text(now)})

    async def answered_since(self, version: SentReferral) -> str | None:
        """What answered the item of `version`, a correction given up, since it was queued: a later version's reference,
        NO_CORRECT_VALUE, or None (nothing: `reopen` opens its requests again). In the caller's transaction.

        The delivery worker asks it before `reopen` runs, to tell the referrer the truth: "verstuur de correctie
        opnieuw" while the OCMW has (or gets) the item from the later version, or was asked to delete it."""
        item = version.corrected_item
        if version.parent_reference is None or item is None:
            return None
        return (await self._answers_since(version, {item})).get(item)

    async def _answers_since(self, version: SentReferral, items: set[str]) -> dict[str, str]:
        """Per item of `items` answered since `version` was queued: the later version that carries it (first, as
        `_later_versions`), else NO_CORRECT_VALUE when a request for it asked after that was answered "geen juist ...".

        Every request open when `version` was queued was claimed by it, so a request answered NO_CORRECT_VALUE and
        asked later than that (the OCMW reported the item again while it waited, or the referrer opened a card of their
        own) was answered after it; one asked at or before it was answered before it and says nothing of it."""
        later = await self._later_versions(version)
        answers = {item: later[item] for item in items if item in later}
        for item in sorted(items - answers.keys()):
            rows = await self._db.fetch_all(
                "SELECT requested_at FROM corrections WHERE reference = :root AND item = :item"
                " AND new_reference = :none",
                {"root": version.root, "item": item, "none": NO_CORRECT_VALUE})
            if any(from_text(str(row["requested_at"])) > version.queued_at for row in rows):
                answers[item] = NO_CORRECT_VALUE
        return answers

    async def _later_versions(self, version: SentReferral) -> dict[str, str]:
        """Per item, the first version of the family queued after `version` that carries it and is not given up.

        Versions are numbered in the order queued (`-2`, `-3`, ..., one at a time under the family's lock); their
        queued_at may be equal."""
        later: dict[str, str] = {}
        versions = await self._referrals.versions_of(version.root)
        for other in sorted(versions, key=lambda found: _number(found.reference)):
            if _number(other.reference) > _number(version.reference) and other.state != ReferralState.FAILED \
                    and other.corrected_item is not None:
                later.setdefault(other.corrected_item, other.reference)
        return later

    async def _tell_ocmw_not_coming(self, original: SentReferral, items: list[str], now: dt.datetime) -> None:
        """The OCMW, told a correction would come as a new card, learns it will not, and whom to ask instead."""
        link = await self._links.for_protocol(original.protocol_id)
        if not items or link is None:
            return
        protocol = self._registry.get(original.protocol_id)
        team = original.sender_team or (protocol.sender.team if protocol else "")
        names = ", ".join(cards.text(OCMW_LANGUAGE, f"item.{item}.name") for item in dict.fromkeys(items))
        text = cards.text(OCMW_LANGUAGE, "correction_not_coming_to_ocmw", reference=original.reference, item=names,
                          team=team)
        await self._messages.post(link.conversation_ref, MessageContent(text=text), now=now,
                                  reference=original.reference)

    async def report_superfluous(self, referral: SentReferral, item: str, actor: Actor) -> SentReferral:
        """The OCMW says an item was not needed (article 7): registered, and the referrer told; nothing is resent.

        Said once per item: a second report (two workers on one card) records and tells nothing more.
        """
        now = self._clock.now()
        original = await self._referrals.get(referral.root) or referral
        lang = cards.language_for(original.lang)
        detail = f"item: {item}"
        async with self._db.transaction():
            await self._referrals.lock(original.reference)  # a report at the same moment waits, then sees this one
            if await self._register.recorded(original.reference, RegisterEvent.SUPERFLUOUS_REPORTED, detail):
                return referral
            await self._register.append(at=now, event=RegisterEvent.SUPERFLUOUS_REPORTED, actor_id=actor.user_id,
                                  actor_name=actor.display_name, protocol_id=referral.protocol_id,
                                  reference=original.reference, detail=detail)
            text = cards.text(lang, "superfluous_to_referrer", reference=original.reference,
                              recipient=self._registry.recipient_name(original.protocol_id),
                              item=cards.text(lang, f"item.{item}.name"))
            await self._messages.post(original.conversation_ref, MessageContent(text=text), now=now,
                                      reference=original.reference)
        return referral


def _number(version: str) -> int:
    """A correction version's number: 3 for `VD-...-3`."""
    return int(version.rsplit("-", 1)[1])


def request_slot(correction_id: str) -> str:
    """Where the id of a correction request's card in the referrer's chat is kept."""
    return f"correction:{correction_id}"


def no_correct_value_slot(root: str, item: str) -> str:
    """Where the id of the OCMW channel's message asking to delete the wrong `item` of `root` ("geen juist ...") is
    kept: whether it reached Teams. Named `<kind>:<reference>` as every slot (retention's `slot_reference`)."""
    return f"ocmw-none-{item}:{root}"


def awaits_correction(registry: ProtocolRegistry, original: SentReferral, today: dt.date) -> bool:
    """The referrer can still send the correction asked for: the family is not closed and its protocol is in force
    (after its end a correction, a new transfer, is refused)."""
    protocol = registry.get(original.protocol_id)
    return original.state not in CLOSED and protocol is not None and protocol.in_force_on(today)


class RequestCards:
    """The referrer's card to correct an item the OCMW reported wrong: posted with the request, and again while it
    is not in the chat (Teams refused it: the app uninstalled), by the reminder or when the bot is added back."""

    def __init__(self, registry: ProtocolRegistry, messages: MessageOutbox) -> None:
        self._registry = registry
        self._messages = messages

    async def post(
        self, correction_id: str, original: SentReferral, item: str, now: dt.datetime, *, own: bool = False
    ) -> None:
        """Queue the request's card in the referrer's chat, in the caller's transaction (its id kept for later)."""
        card = self.card(cards.language_for(original.lang), correction_id, original, item, {}, {}, own=own)
        await self._messages.post(original.conversation_ref, MessageContent(card=card), now=now,
                                  reference=original.reference, slot=request_slot(correction_id))

    async def post_if_missing(self, correction_id: str, original: SentReferral, item: str, now: dt.datetime) -> bool:
        """Queue the card again when it is not in the chat nor on its way (`MessageOutbox.cards_missing`); True then."""
        slot = request_slot(correction_id)
        if slot not in await self._messages.cards_missing({slot: original.reference}):
            return False
        await self.post(correction_id, original, item, now)
        return True

    def card(
        self,
        lang: cards.Language,
        correction_id: str,
        original: SentReferral,
        item: str,
        values: Mapping[str, str],
        errors: Mapping[str, FieldError],
        *,
        own: bool = False,
    ) -> Card:
        """The correction card for `item`, with what was typed and its errors."""
        protocol = self._registry.get(original.protocol_id)
        return cards.correction_request_card(
            lang,
            correction_id=correction_id,
            reference=original.reference,
            item=cast(Item, item),
            recipient=self._registry.recipient_name(original.protocol_id),
            municipality=protocol.recipient_municipality if protocol else "",
            values={field: value for field, value in values.items() if field in ITEM_FIELDS[item]},
            errors=errors,
            own_initiative=own,
        )


async def referrer_refusal(
    referrers: ReferrerAccess,
    registry: ProtocolRegistry,
    actor: Actor,
    referral: SentReferral,
    *,
    team: str | None,
) -> Banner | None:
    """None when `actor` may act as a referrer on `referral` under its protocol now; else the banner that refuses.

    `ReferrerAccess.confirm`, as at the referral's send: with `team`, the user must belong to that
    very entry of the protocol file; without, to any. A protocol no longer loaded lists nobody. When
    the directory cannot answer, nobody is let through on a guess: "probeer zo opnieuw".
    """
    protocol = registry.get(referral.protocol_id)
    extra = {"reference": referral.reference, "protocol_id": referral.protocol_id, "user_id": actor.user_id[:64]}
    try:
        confirmed = None if protocol is None else await referrers.confirm(actor.user_id, protocol, team)
    except MembershipUnavailable as error:
        logger.warning("referrer's teams could not be checked: %s", error.reason, extra=extra)
        return _banner(actor, "membership_unavailable")
    if confirmed is not None:
        return None
    why = "the protocol is not loaded" if protocol is None else \
        f"the protocol does not list this user{'' if team is None else ' in the referral team'}"
    logger.warning("referrer action refused: %s", why, extra=extra)
    return _banner(actor, "not_listed") if team is None else \
        _banner(actor, "not_listed_for_team", team=team, ocmw=registry.recipient_name(referral.protocol_id))


async def referral_named(referrals: ReferralStore, actor: Actor, reference: object) -> SentReferral | Banner:
    """The referral a card's or a typed command's `reference` names, or the banner that says it names none.

    Only a well-formed reference is repeated in the banner: anything else is a card the bot cannot read.
    """
    if not isinstance(reference, str) or not is_reference(reference):
        return _banner(actor, "malformed_action")
    found = await referrals.get(reference)
    return _banner(actor, "referral_unknown", reference=reference) if found is None else found


def _closed_problem(original: SentReferral) -> str:
    """Why no correction can leave for a closed referral, as the problem that says so and what to do instead."""
    if original.withdrawn_at is not None:
        return "correction_withdrawn"  # the parents withdrew consent (before or after the mail left)
    if original.state == ReferralState.FAILED:
        return "correction_not_sent"  # the mail never reached the OCMW's mailbox
    return "correction_closed"  # the OCMW confirmed the data is deleted from its shared mailbox


def _banner(actor: Actor, problem: str, **params: str) -> Banner:
    return Banner(cards.problem_banner(actor.lang, problem, **params))
