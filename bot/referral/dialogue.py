"""The referral dialogue as a declared state table, and the service that walks it.

    welcome --referral.start--> CONSENT --referral.consent--> DETAILS --referral.details--> REVIEW
    REVIEW --referral.edit--> DETAILS;  REVIEW --referral.send--> SENDING --> SENT (or back to REVIEW)

A send carries the fingerprint of the data its review card showed; data changed since (another
window) is not sent, and the review card is shown anew (`_send`).
    CONSENT | DETAILS | REVIEW --referral.cancel--> CANCELLED;  idle DRAFT_TTL_MINUTES --> EXPIRED

Plain Python: it takes an `Actor` and the action's data and returns the card to show. Teams
types stay in `bot.teams`.

The dialogue runs only in the worker's personal chat with the bot: its cards show the family's
data to whoever reads the conversation. In a channel or group chat every step is answered with a
card that sends the worker to the personal chat, before any draft is created or looked at.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import re
import traceback
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import cards
from bot.clock import Clock
from bot.core.metrics import Metrics
from bot.core.protocols import DataSharingProtocol, ProtocolRegistry
from bot.core.referral_values import ClientDetails, ConsentRecord, FieldError, Referrer
from bot.evidence.register import ProcessingRegister, RegisterEvent
from bot.referral.chat_privacy import looks_like_client_data
from bot.referral.details_validation import details_as_typed, typed_values, validate_details
from bot.referral.drafts import Draft, DraftState, DraftStore, ShownCard
from bot.referral.information_sheet import protocol_facts
from bot.referral.referrers import Allowed, MembershipUnavailable, ReferrerAccess
from bot.referral.sending import Origin, PasswordUnavailable, ReferralSender, SendFailure
from bot.storage.database import Database

logger = logging.getLogger(__name__)

Card = dict[str, Any]
CONSENT_TOGGLES: tuple[str, ...] = (
    "informedData",
    "informedRecipient",
    "informedPurpose",
    "informedFollowUp",
    "consentGiven",
)
TERMINAL_STATES = frozenset({DraftState.SENT, DraftState.CANCELLED, DraftState.EXPIRED})


@dataclass(frozen=True)
class Transition:
    """A verb allowed in `sources`, leading to one of `targets`."""

    sources: frozenset[DraftState]
    targets: frozenset[DraftState]


_OPEN = frozenset({DraftState.CONSENT, DraftState.DETAILS, DraftState.REVIEW})
TRANSITIONS: Mapping[str, Transition] = {
    "referral.consent": Transition(frozenset({DraftState.CONSENT}), frozenset({DraftState.DETAILS})),
    # From REVIEW too: a second tap on a slow phone, a field fixed in between; the last tap's data counts.
    "referral.details": Transition(
        frozenset({DraftState.DETAILS, DraftState.REVIEW}), frozenset({DraftState.REVIEW, DraftState.DETAILS})
    ),
    "referral.edit": Transition(frozenset({DraftState.REVIEW}), frozenset({DraftState.DETAILS})),
    "referral.send": Transition(
        frozenset({DraftState.REVIEW}), frozenset({DraftState.SENDING, DraftState.SENT, DraftState.REVIEW})
    ),
    "referral.cancel": Transition(_OPEN, frozenset({DraftState.CANCELLED})),
}
START_VERB = "referral.start"


def check_transitions(table: Mapping[str, Transition]) -> None:
    """Refuse a table in which a terminal state has a way out or an open state has none to an end."""
    for verb, transition in table.items():
        if transition.sources & TERMINAL_STATES:
            raise ValueError(f"{verb}: a terminal state cannot be left")
    reachable_end: set[DraftState] = set(TERMINAL_STATES)
    changed = True
    while changed:
        changed = False
        for transition in table.values():
            if transition.targets & reachable_end:
                for source in transition.sources - reachable_end:
                    reachable_end.add(source)
                    changed = True
    stuck = _OPEN - reachable_end
    if stuck:
        raise ValueError(f"states without a way to an end: {sorted(stuck)}")


check_transitions(TRANSITIONS)


@dataclass(frozen=True)
class Actor:
    """Who acts, where, and in which language: all the dialogue needs from Teams.

    `conversation_ref` (opaque) and `card_activity_id` let the bot report back later, e.g.
    update the card when the queued mail has been delivered.
    """

    user_id: str
    display_name: str
    conversation_id: str
    lang: cards.Language
    conversation_ref: str = ""
    card_activity_id: str | None = None
    tenant_id: str = ""
    places: tuple[str, ...] = ()  # the Teams team and channel ids, when the action comes from a channel
    team_id: str = ""  # the Teams team (`channelData.team.id`), in a channel
    #: Teams' "personal", "groupChat" or "channel"; "" when not said (the Agents Playground's personal chat).
    conversation_type: str = ""


def is_personal_chat(actor: Actor) -> bool:
    """True in the worker's one-to-one chat with the bot, the only place nobody else reads the cards.

    Teams always says "personal" there; the Agents Playground says nothing in its personal chat, so an
    unsaid type counts as personal (the Teams layer calls an unsaid type with `isGroup` a "groupChat").
    """
    return actor.conversation_type in {"personal", ""}


def personal_chat_url(app_id: str) -> str:
    """Teams' deep link to the chat with the bot (`28:` + its app id); "" without an app id (local runs)."""
    if not app_id:
        return ""
    return "https://teams.microsoft.com/l/chat/0/0?users=" + urllib.parse.quote(f"28:{app_id}", safe=":")


@dataclass(frozen=True)
class Banner:
    """An answer to a card action that leaves the card as it is and shows `text` with it.

    For errors on a card that holds a reference (the OCMW's card, a correction, the "sent" card):
    the card the user needs stays in the chat, its buttons and typed values included.
    """

    text: str


#: What a card action is answered with: the next card (it replaces the clicked one), or a banner.
Answer = Card | Banner


@dataclass(frozen=True)
class Reply:
    """What to send back for a chat message: a card, or a plain text."""

    card: Card | None = None
    text: str | None = None


_MENTION = re.compile(r"<at>.*?</at>", re.IGNORECASE | re.DOTALL)
_START_WORDS = frozenset({"nieuw", "new", "nieuwe doorverwijzing", "new referral", "start"})
_HELP_WORDS = frozenset({"hulp", "help", "hallo", "hello", "hi", "dag", "goeiedag", "goedendag", "menu"})


def is_start_command(command: str) -> bool:
    """True for `nieuw`, `new` and their variants (after `command_of`)."""
    return command in _START_WORDS


def command_of(text: str) -> str:
    """The command typed, without @mentions, case, surrounding spaces or a final '!', '.' or '?'."""
    return " ".join(_MENTION.sub(" ", text).split()).lower().rstrip("!.?")


class ReferralDialogue:
    """Runs one step of a referral for one actor and answers with the next card."""

    def __init__(
        self,
        *,
        registry: ProtocolRegistry,
        drafts: DraftStore,
        db: Database,
        register: ProcessingRegister,
        sender: ReferralSender,
        referrers: ReferrerAccess,
        clock: Clock,
        timezone: ZoneInfo,
        on_queued: Callable[[], None] = lambda: None,
        chat_url: str = "",
        public_base_url: str = "",
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or Metrics.disabled()
        self._referrers = referrers
        self._on_queued = on_queued
        self._chat_url = chat_url
        self._public_base_url = public_base_url
        self._registry = registry
        self._drafts = drafts
        self._db = db
        self._register = register
        self._sender = sender
        self._clock = clock
        self._tz = timezone
        self._handlers: Mapping[str, Callable[[Actor, Draft, Mapping[str, Any]], Awaitable[Card]]] = {
            "referral.consent": self._consent,
            "referral.details": self._details,
            "referral.edit": self._edit,
            "referral.send": self._send,
            "referral.cancel": self._cancel,
        }
        if set(self._handlers) != set(TRANSITIONS):
            raise ValueError("every verb in TRANSITIONS needs exactly one handler")

    # -- entry points ---------------------------------------------------------------------------

    async def on_text(self, actor: Actor, text: str, *, attachments: bool = False) -> Reply:
        """Answer a typed message: start, help, a warning when it holds client data or a photo or file
        (`attachments`: the bot never looks at one, it may be a family's letter or identity card), or a pointer
        to the commands."""
        command = command_of(text)
        if command in _START_WORDS:
            return Reply(card=await self.start(actor))
        if command in _HELP_WORDS:
            return Reply(card=self.welcome(actor))
        where = "personal" if is_personal_chat(actor) else "shared"
        scope = {"conversation_type": actor.conversation_type[:32] or "unknown"}
        if looks_like_client_data(text):
            # Only the fact is logged: the text is what must not be kept anywhere.
            logger.warning("client data typed as a chat message: warned", extra=scope)
            return Reply(text=cards.text(actor.lang, f"client_data_in_chat.{where}"))
        if attachments:  # only the fact, never the file's name or address
            logger.warning("attachment sent as a chat message: warned", extra=scope)
            return Reply(text=cards.text(actor.lang, f"attachment_in_chat.{where}"))
        if not is_personal_chat(actor):
            return Reply(text=cards.text(actor.lang, "unknown_command_shared"))
        return Reply(text=cards.text(actor.lang, "unknown_command"))

    def welcome(self, actor: Actor) -> Card:
        """The card shown when the bot is installed or greeted: the start button only in the personal chat."""
        return cards.welcome_card(actor.lang) if is_personal_chat(actor) else cards.shared_welcome_card(actor.lang)

    async def start(self, actor: Actor) -> Card:
        """Open a new draft and show the consent card (personal chat only).

        Only the protocols in force today that list this user (`[[sender.teams]]`) are offered; with
        none, no draft is made and the card says whom to ask.
        """
        if not is_personal_chat(actor):
            return self.personal_chat_only(actor, START_VERB)
        allowed = await self._allowed(actor, START_VERB)
        if not isinstance(allowed, list):
            return allowed
        protocols = [entry.protocol for entry in allowed]
        now = self._clock.now()
        async with self._db.transaction():  # the draft and its register entry: one commit
            draft = await self._drafts.create(actor.user_id, actor.conversation_id, now, self._today())
            await self._record(draft, actor, RegisterEvent.REFERRAL_STARTED,
                               protocols[0].id if len(protocols) == 1 else "-",
                               detail=f"protocols in force that list this referrer: "
                                      f"{', '.join(p.id for p in protocols)}")
        self._metrics.referral_started(protocols[0].id if len(protocols) == 1 else "not chosen yet")
        logger.info("referral started", extra={"reference": draft.reference, "draft_id": draft.id})
        return self._consent_card(actor, draft.id, protocols, selected=None, ticked={}, missing=())

    async def on_action(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> Card:
        """Run the card action `verb` with its `data` and return the card that replaces it."""
        if not is_personal_chat(actor):
            return self.personal_chat_only(actor, verb)
        if verb == START_VERB:
            return await self.start(actor)
        transition = TRANSITIONS.get(verb)
        if transition is None and verb != cards.VERB_VIEW:
            logger.info("unknown card action", extra={"verb": verb[:64]})
            return cards.problem_card(actor.lang, "unknown_action")
        draft_id = data.get("draftId")
        if not isinstance(draft_id, str) or not draft_id or len(draft_id) > 64:
            return cards.problem_card(actor.lang, "malformed_action")
        draft = await self._drafts.get(draft_id)
        if draft is None:
            return cards.problem_card(actor.lang, "draft_unknown")
        if draft.owner_id != actor.user_id:
            logger.warning("card action on another user's draft refused", extra={"draft_id": draft.id})
            return cards.problem_card(actor.lang, "draft_foreign")
        if draft.conversation_id != actor.conversation_id:
            # A draft lives in the chat it was started in (a personal chat): never continued elsewhere.
            logger.warning("card action on a draft from another chat refused", extra={"draft_id": draft.id})
            return cards.problem_card(actor.lang, "draft_foreign")
        now = self._clock.now()
        if actor.card_activity_id and actor.conversation_ref and draft.state not in TERMINAL_STATES:
            shown = ShownCard(actor.conversation_ref, actor.card_activity_id, actor.lang)
            await self._drafts.remember_card(draft, shown)
        if draft.state not in TERMINAL_STATES and self._drafts.is_expired(draft, now):
            await self._drafts.close(draft, DraftState.EXPIRED, now)
            draft = Draft(**{**draft.__dict__, "state": DraftState.EXPIRED})
        if transition is None:  # "Terug" from the cancel confirmation
            return await self._step_card(actor, draft)
        if draft.state not in transition.sources:
            return await self._card_after(actor, draft, verb)
        return await self._handlers[verb](actor, draft, data)

    async def _step_card(self, actor: Actor, draft: Draft) -> Card:
        """The card of the step the draft is at, with what was entered (the user's own chat only)."""
        protocol = None if draft.protocol_id is None else self._registry.get(draft.protocol_id)
        if draft.state == DraftState.CONSENT or (protocol is None and draft.state not in TERMINAL_STATES):
            allowed = await self._allowed(actor, cards.VERB_VIEW)
            if not isinstance(allowed, list):
                return allowed
            protocols = [entry.protocol for entry in allowed]
            return self._consent_card(actor, draft.id, protocols, selected=None, ticked={}, missing=())
        if draft.state == DraftState.REVIEW and draft.details is not None and protocol is not None:
            return self._review_card(actor, draft.id, protocol, draft.details)
        if draft.state == DraftState.DETAILS and protocol is not None:
            values = {} if draft.details is None else details_as_typed(draft.details)
            return self._details_card(actor, draft, protocol, values=values, errors={})
        return self._not_possible_card(actor, draft)

    # -- steps ----------------------------------------------------------------------------------

    async def _consent(self, actor: Actor, draft: Draft, data: Mapping[str, Any]) -> Card:
        allowed = await self._allowed(actor, "referral.consent")
        if not isinstance(allowed, list):
            return allowed
        protocols = [entry.protocol for entry in allowed]
        version = cards.consent_text_version()
        shown = data.get("textVersion")
        if isinstance(shown, str) and shown != version:
            # A card from before the texts changed (a restart in between): the parents heard other
            # words than this version's. Show the new texts; the points are ticked again after reading.
            logger.info("consent card of another text version answered: shown anew", extra={"draft_id": draft.id})
            return self._consent_card(actor, draft.id, protocols, selected=None, ticked={}, missing=(), changed=True)
        chosen = next((entry for entry in allowed if entry.protocol.id == data.get("ocmw")), None)
        ticked = {name: _is_ticked(data.get(name)) for name in CONSENT_TOGGLES}
        missing = [name for name in CONSENT_TOGGLES if not ticked[name]]
        if chosen is None:
            missing.insert(0, "ocmw")
        if missing or chosen is None:
            return self._consent_card(
                actor, draft.id, protocols, selected=None if chosen is None else chosen.protocol.id,
                ticked=ticked, missing=missing,
            )
        protocol = chosen.protocol
        now = self._clock.now()
        consent = ConsentRecord(True, True, True, True, True, confirmed_at=now, text_version=version)
        async with self._db.transaction():  # the step and its register entry: one commit
            updated = await self._drafts.advance(draft, DraftState.DETAILS, now, protocol_id=protocol.id,
                                                 consent=consent, sender_team=chosen.team)
            if updated is not None:
                await self._record(updated, actor, RegisterEvent.CONSENT_CONFIRMED, protocol.id,
                                   detail="informed: data, recipient, purpose, follow-up; consent given; "
                                          f"consent text version {version}",
                                   consent_version=consent.text_version)
        if updated is None:
            return await self._current_card(actor, draft.id, "referral.consent")
        return self._details_card(actor, updated, protocol, values={}, errors={})

    async def _details(self, actor: Actor, draft: Draft, data: Mapping[str, Any]) -> Card:
        protocol = await self._protocol_in_force(actor, draft)
        if isinstance(protocol, dict):
            return protocol
        result = validate_details(data, protocol)
        if draft.state == DraftState.REVIEW:
            # The first tap made the review; this tap is the last the referrer made (a field fixed in between).
            if result.details == draft.details:
                return await self._step_card(actor, draft)  # a plain double tap: the first tap's review card
            logger.info("data card answered again after the review was made: the last tap's data counts",
                        extra={"draft_id": draft.id})
        if result.details is None:
            logger.info("data card refused", extra={"draft_id": draft.id, "fields": sorted(result.errors)})
            if draft.state == DraftState.REVIEW:  # back to the data card: the review showed other data
                back = await self._drafts.advance(draft, DraftState.DETAILS, self._clock.now())
                if back is None:
                    return await self._current_card(actor, draft.id, "referral.details")
            return self._details_card(actor, draft, protocol, values=result.typed, errors=result.errors)
        updated = await self._drafts.advance(draft, DraftState.REVIEW, self._clock.now(), details=result.details)
        if updated is None:
            return await self._current_card(actor, draft.id, "referral.details")
        return self._review_card(actor, draft.id, protocol, result.details)

    async def _edit(self, actor: Actor, draft: Draft, data: Mapping[str, Any]) -> Card:
        protocol = await self._protocol_in_force(actor, draft)
        if isinstance(protocol, dict):
            return protocol
        updated = await self._drafts.advance(draft, DraftState.DETAILS, self._clock.now())
        if updated is None:
            return await self._current_card(actor, draft.id, "referral.edit")
        values = {} if draft.details is None else details_as_typed(draft.details)
        return self._details_card(actor, updated, protocol, values=values, errors={})

    async def _send(self, actor: Actor, draft: Draft, data: Mapping[str, Any]) -> Card:
        protocol = await self._protocol_in_force(actor, draft)
        if isinstance(protocol, dict):
            return protocol
        if draft.details is None or draft.consent is None or not draft.consent.complete:
            return self._not_possible_card(actor, draft)
        fingerprint = self._drafts.details_fingerprint(draft.id, draft.details)
        shown = data.get("detailsFingerprint")
        # The button carries the fingerprint of the data its card showed: data changed since then (in
        # another window, on another device) is not what the referrer confirmed. Nothing is sent; the
        # card shows the data as it is now. A click without one (a card rendered before fingerprints,
        # a script or benchmark clicking {"draftId": ...}) is accepted as before and sends the draft as it is.
        # A change after this check makes the claim below fail (it compares `updated_at`).
        if shown is not None and not (
            isinstance(shown, str) and hmac.compare_digest(shown.encode("utf-8"), fingerprint.encode("ascii"))
        ):
            logger.info("send on a card showing other data: review card shown anew", extra={"draft_id": draft.id})
            return self._review_card(actor, draft.id, protocol, draft.details, changed=True)
        if not protocol.covers_postal_code(draft.details.postal_code):
            return self._details_card(
                actor, draft, protocol, values=details_as_typed(draft.details),
                errors=validate_details(details_as_typed(draft.details), protocol).errors,
            )
        team = await self._team_at_send(actor, draft, protocol, fingerprint)
        if not isinstance(team, str):
            return team
        now = self._clock.now()
        claimed = await self._drafts.advance(draft, DraftState.SENDING, now)
        if claimed is None:  # a second click while the first is being handled
            return await self._current_card(actor, draft.id)
        referrer = Referrer(user_id=actor.user_id, display_name=actor.display_name)
        origin = Origin(
            conversation_id=actor.conversation_id,
            conversation_ref=actor.conversation_ref,
            card_activity_id=actor.card_activity_id,
            lang=actor.lang,
        )
        try:
            queued = await self._sender.queue(claimed, protocol.sent_by(team), referrer, origin)
        except SendFailure as failure:
            await self._drafts.advance(claimed, DraftState.REVIEW, self._clock.now())
            logger.warning("referral not queued: %s", failure.reason, extra={"reference": claimed.reference})
            problem = "password_unavailable" if isinstance(failure, PasswordUnavailable) else "send_failed"
            return cards.problem_card(actor.lang, problem, reference=claimed.reference,
                                      minutes=self._drafts.idle_minutes, draft_id=claimed.id,
                                      details_fingerprint=fingerprint)
        except Exception as error:
            # Anything else (a full disk, a protocol value a mail header refuses, a bug): nothing was
            # committed, so the draft goes back to review and the user can send again. The message of
            # such an error may quote what it choked on, which may be client data: frames only.
            await self._drafts.advance(claimed, DraftState.REVIEW, self._clock.now())
            logger.error("referral not queued: unexpected %s\n%s", type(error).__name__,
                         "".join(traceback.format_tb(error.__traceback__)), extra={"reference": claimed.reference})
            return cards.problem_card(actor.lang, "send_failed", reference=claimed.reference,
                                      minutes=self._drafts.idle_minutes, draft_id=claimed.id,
                                      details_fingerprint=fingerprint)
        self._on_queued()
        logger.info("referral queued", extra={"reference": queued.reference, "protocol_id": protocol.id})
        return cards.queued_card(
            actor.lang,
            reference=queued.reference,
            recipient=protocol.recipient.organisation,
            mailbox=protocol.recipient_mailbox,
            queued_at=queued.queued_at.astimezone(self._tz),
        )

    async def _cancel(self, actor: Actor, draft: Draft, data: Mapping[str, Any]) -> Card:
        filled_in = draft.details is not None or draft.state in (DraftState.DETAILS, DraftState.REVIEW)
        if filled_in and not cards.is_confirmed(data):  # the data card may hold typed values: ask once more
            return cards.confirm_card(actor.lang, "cancel_referral", reference=draft.reference,
                                      verb="referral.cancel", data={"draftId": draft.id}, back={"draftId": draft.id})
        if not (await self._close_cancelled(draft, actor, draft.protocol_id)):
            return await self._current_card(actor, draft.id)
        logger.info("referral cancelled", extra={"reference": draft.reference})
        return cards.cancelled_card(actor.lang, reference=draft.reference)

    # -- helpers --------------------------------------------------------------------------------

    def personal_chat_only(self, actor: Actor, verb: str) -> Card:
        """Refuse a referral step where others read along, and point to the personal chat."""
        logger.info("referral step outside a personal chat refused",
                    extra={"verb": verb[:64], "conversation_type": actor.conversation_type[:32] or "unknown"})
        return cards.personal_chat_card(actor.lang, chat_url=self._chat_url)

    def _today(self) -> dt.date:
        return self._clock.now().astimezone(self._tz).date()

    async def _allowed(self, actor: Actor, verb: str) -> list[Allowed] | Card:
        """The protocols in force today this user may refer under, with their team; else the card that says why not.

        Asked at the start, at consent and when the consent card is shown again: the answers are
        kept a while (`ReferrerAccess`), so this costs the directory one lookup per referral.
        """
        protocols = self._registry.in_force_on(self._today())
        if not protocols:
            return cards.problem_card(actor.lang, "no_protocol_in_force")
        try:
            allowed = await self._referrers.allowed(actor.user_id, protocols)
        except MembershipUnavailable as error:
            logger.warning("referrer's teams could not be checked: %s", error.reason, extra={"verb": verb[:64]})
            return cards.problem_card(actor.lang, "membership_unavailable")
        if not allowed:
            logger.warning("referral refused: no protocol in force lists this user",
                           extra={"verb": verb[:64], "user_id": actor.user_id[:64],
                                  "protocol_ids": [protocol.id for protocol in protocols]})
            return cards.problem_card(actor.lang, "not_listed")
        return allowed

    async def _team_at_send(
        self, actor: Actor, draft: Draft, protocol: DataSharingProtocol, fingerprint: str
    ) -> str | Card:
        """The team the package names, if the user still belongs to it; else the card that stops the send.

        Membership can be taken away while a referral is being entered. Then nothing is sent and, as
        this user may not send it, the draft's data is wiped at once. When the directory cannot
        answer, the draft stays at review and the card offers to try again (with `fingerprint`, the
        data the clicked card showed).
        """
        try:
            team = await self._referrers.confirm(actor.user_id, protocol, draft.sender_team)
        except MembershipUnavailable as error:
            logger.warning("referrer's teams could not be checked at send: %s", error.reason,
                           extra={"reference": draft.reference})
            return cards.problem_card(actor.lang, "membership_unavailable", draft_id=draft.id,
                                      details_fingerprint=fingerprint)
        if team is not None:
            return team
        if not (await self._close_cancelled(
                draft, actor, protocol.id,
                f"referrer no longer listed for '{draft.sender_team or '-'}': nothing sent, data wiped")):
            return await self._current_card(actor, draft.id)
        logger.warning("referral stopped at send: the referrer is no longer listed",
                       extra={"reference": draft.reference, "protocol_id": protocol.id, "user_id": actor.user_id[:64]})
        return cards.problem_card(actor.lang, "no_longer_listed", ocmw=protocol.recipient.organisation,
                                  reference=draft.reference)

    async def _protocol_in_force(self, actor: Actor, draft: Draft) -> DataSharingProtocol | Card:
        """The draft's protocol if it is still in force today; else the draft is wiped and a card says so.

        A protocol can end (its file's `ends_on` passed, or the file was removed) while a referral is
        being entered: nothing may be sent under it, and the draft can never be sent, so its data
        goes at once instead of after the idle time.
        """
        if draft.protocol_id is None:
            return cards.problem_card(actor.lang, "step_not_possible")
        protocol = self._registry.get(draft.protocol_id)
        if protocol is not None and protocol.in_force_on(self._today()):
            return protocol
        if not (await self._close_cancelled(
                draft, actor, draft.protocol_id,
                f"protocol not in force on {self._today().isoformat()}: nothing sent, data wiped")):
            return await self._current_card(actor, draft.id)
        logger.info("referral stopped: its protocol is no longer in force",
                    extra={"reference": draft.reference, "protocol_id": draft.protocol_id})
        return cards.problem_card(actor.lang, "protocol_ended", ocmw=self._registry.recipient_name(draft.protocol_id),
                                  reference=draft.reference)

    async def _close_cancelled(self, draft: Draft, actor: Actor, protocol_id: str | None, detail: str = "") -> bool:
        """Wipe the draft as cancelled and record `cancelled` (once a protocol was chosen) in one commit.

        Two commits left a draft wiped without its register entry when the process died between them,
        and a second click could not add it. False when another click moved the draft first.
        """
        async with self._db.transaction():
            if not (await self._drafts.close(draft, DraftState.CANCELLED, self._clock.now())):
                return False
            if protocol_id is not None:
                await self._record(draft, actor, RegisterEvent.CANCELLED, protocol_id, detail=detail)
        return True

    async def _record(
        self, draft: Draft, actor: Actor, event: RegisterEvent, protocol_id: str, detail: str = "",
        consent_version: str = "",
    ) -> None:
        await self._register.append(
            at=self._clock.now(),
            event=event,
            actor_id=actor.user_id,
            actor_name=actor.display_name,
            protocol_id=protocol_id,
            reference=draft.reference,
            detail=detail,
            consent_version=consent_version,
        )

    def _consent_card(
        self,
        actor: Actor,
        draft_id: str,
        protocols: list[DataSharingProtocol],
        *,
        selected: str | None,
        ticked: Mapping[str, bool],
        missing: list[str] | tuple[str, ...],
        changed: bool = False,
    ) -> Card:
        today = self._today()
        return cards.consent_card(
            actor.lang,
            draft_id=draft_id,
            protocols=[protocol_facts(p, self._public_base_url) for p in protocols],
            selected=selected,
            ticked=ticked,
            missing=missing,
            ending=[(p.recipient.organisation, p.ends_on) for p in protocols
                    if p.ends_on is not None and p.ending_notice_on(today)],
            changed=changed,
        )

    def _details_card(
        self,
        actor: Actor,
        draft: Draft,
        protocol: DataSharingProtocol,
        *,
        values: Mapping[str, str],
        errors: Mapping[str, FieldError],
    ) -> Card:
        return cards.details_card(
            actor.lang,
            draft_id=draft.id,
            recipient=protocol.recipient.organisation,
            municipality=protocol.recipient_municipality,
            values=values,
            errors=errors,
        )

    def _review_card(
        self, actor: Actor, draft_id: str, protocol: DataSharingProtocol, details: ClientDetails, *,
        changed: bool = False,
    ) -> Card:
        return cards.review_card(
            actor.lang,
            draft_id=draft_id,
            recipient=protocol.recipient.organisation,
            mailbox=protocol.recipient_mailbox,
            client=details,
            details_fingerprint=self._drafts.details_fingerprint(draft_id, details),
            changed=changed,
        )

    async def _current_card(self, actor: Actor, draft_id: str, verb: str | None = None) -> Card:
        """After a lost race: say what state the draft is in now (with `verb`, as `_card_after`)."""
        draft = await self._drafts.get(draft_id)
        if draft is None:
            return cards.problem_card(actor.lang, "draft_unknown")
        return self._not_possible_card(actor, draft) if verb is None else await self._card_after(actor, draft, verb)

    async def _card_after(self, actor: Actor, draft: Draft, verb: str) -> Card:
        """The answer to `verb` on the user's own draft that is no longer at the step the click was for.

        Already at the step the click would have made (a double tap on a slow phone: the first tap made it),
        the card of that step, as the first tap's answer showed it. Anywhere else (a card from before a cancel,
        from another window, or for a step long past) the refusal that says what happened.
        """
        if draft.state in TRANSITIONS[verb].targets - TERMINAL_STATES:
            logger.info("click on a step already made: its card shown again", extra={"draft_id": draft.id,
                                                                                     "verb": verb[:64]})
            return await self._step_card(actor, draft)
        return self._not_possible_card(actor, draft)

    def _not_possible_card(self, actor: Actor, draft: Draft) -> Card:
        if draft.state == DraftState.SENT:
            return cards.problem_card(actor.lang, "draft_sent", reference=draft.reference)
        if draft.state == DraftState.SENDING:  # another click is sending it: starting again would refer twice
            return cards.problem_card(actor.lang, "draft_sending", reference=draft.reference)
        if draft.state == DraftState.CANCELLED:
            return cards.problem_card(actor.lang, "draft_cancelled", reference=draft.reference)
        if draft.state == DraftState.EXPIRED:
            return cards.problem_card(actor.lang, "draft_expired", minutes=self._drafts.idle_minutes)
        return cards.problem_card(actor.lang, "step_not_possible")


def _is_ticked(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


__all__ = ["Actor", "ReferralDialogue", "Reply", "command_of", "is_personal_chat", "personal_chat_url", "typed_values"]
