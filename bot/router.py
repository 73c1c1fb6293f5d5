"""Routes typed commands and card verbs to the service that owns them."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import cards
from bot.clock import Clock
from bot.core.access import ReferrerPolicy
from bot.core.reference import find_references
from bot.ocmw.actions import OcmwService
from bot.ocmw.corrections import CorrectionService
from bot.ocmw.links import base_conversation_id
from bot.ocmw.status import StatusService
from bot.oversight.breach import BREACH_WORDS, BreachService
from bot.oversight.register_export import RegisterExports
from bot.referral.chat_privacy import looks_like_client_data
from bot.referral.dialogue import (
    Actor,
    Answer,
    Banner,
    Card,
    ReferralDialogue,
    Reply,
    command_of,
    is_personal_chat,
    is_start_command,
)
from bot.storage.database import DatabaseError
from bot.storage.rate_limits import RateLimit, RateLimiter

logger = logging.getLogger(__name__)
#: The problem shown while the database cannot be reached (down, failing over, every connection busy).
DATABASE_UNAVAILABLE = "database_unavailable"
#: The problem shown to a user who did too many actions in a short time (their draft is kept).
RATE_LIMITED = "rate_limited"

_LINK_PREFIXES = ("koppel ", "link ")
#: Verbs only a referrer (a Kind en Gezin team member) may use.
_REFERRER_VERBS = frozenset({"referral.start", "referral.consent", "referral.details", "referral.edit",
                             "referral.send", "referral.cancel", "correction.submit", "correction.later",
                             cards.VERB_CORRECTION_NONE, "correction.start", "correction.open", "consent.withdraw"})
#: Verbs of the correction cards, which ask for the family's data: only in the personal chat.
_CORRECTION_VERBS = frozenset({"correction.submit", "correction.later", cards.VERB_CORRECTION_NONE, "correction.start",
                               "correction.open"})
#: Typed commands with a reference: `intrekken VD-...` (a colleague records a withdrawal) and
#: `verbeter VD-...` (a correction on Kind en Gezin's own initiative), mapped to their card verbs. The
#: reference may stand anywhere after the word ("withdraw consent VD-..."); the rest is never repeated.
_REFERENCE_COMMANDS = {"intrekken": "consent.withdraw", "withdraw": "consent.withdraw",
                       "verbeter": "correction.start", "correct": "correction.start"}
_STATUS_WORDS = frozenset({"status", "mijn doorverwijzingen", "my referrals"})
#: The DPO's command: the register of their protocols (`bot.oversight.register_export`).
_REGISTER_WORDS = frozenset({"register", "verwerkingsregister", "processing register"})
#: `koppel` and `link.confirm` try a pairing code: a brake on guessing, per user and per conversation
#: (limiter kinds "link_user" and "link_conversation").
LINK_LIMIT = RateLimit(5, dt.timedelta(minutes=10))


class Router:
    """One entry for the Teams layer: `on_text` and `on_action`, the rest is decided here."""

    def __init__(
        self,
        *,
        dialogue: ReferralDialogue,
        ocmw: OcmwService,
        corrections: CorrectionService,
        status: StatusService,
        register_exports: RegisterExports,
        referrers: ReferrerPolicy,
        limiter: RateLimiter,
        clock: Clock,
        draft_minutes: str,
        breach: BreachService,
    ) -> None:
        self._draft_minutes = draft_minutes
        self._register_exports = register_exports
        self._referrers = referrers
        self._breach = breach
        self._limiter = limiter
        self._clock = clock
        self._dialogue = dialogue
        self._ocmw = ocmw
        self._corrections = corrections
        self._status = status
        self._verbs: Mapping[str, Callable[[Actor, str, Mapping[str, Any]], Awaitable[Answer]]] = {
            "ack.receive": ocmw.on_action,
            "referral.outcome": ocmw.on_action,
            "referral.deleted": ocmw.on_action,
            "referral.quality": ocmw.on_action,
            "link.confirm": ocmw.on_action,
            "link.cancel": ocmw.on_action,
            "consent.withdraw": ocmw.withdraw_consent,
            "correction.submit": corrections.on_action,
            "correction.later": corrections.on_action,
            cards.VERB_CORRECTION_NONE: corrections.on_action,
            cards.VERB_CORRECTION_START: corrections.on_action,
            cards.VERB_CORRECTION_OPEN: corrections.on_action,
            cards.VERB_BREACH_SUBMIT: breach.on_action,
            cards.VERB_BREACH_CANCEL: breach.on_action,
        }

    async def on_text(self, actor: Actor, text: str, *, attachments: bool = False) -> Reply:
        """A typed message, mentions stripped; with the database out of reach, "probeer zo opnieuw".

        `attachments`: the message carries a photo or a file (anything but Teams' text/html layout of it).
        """
        try:
            return await self._on_text(actor, text, attachments)
        except DatabaseError as error:
            logger.warning("typed command not handled: %s", error)
            return Reply(card=cards.problem_card(actor.lang, DATABASE_UNAVAILABLE))

    async def on_action(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> Answer:
        """A card action; with the database out of reach, a banner and the card kept, to click again.

        Nothing of the step was stored (its transaction did not commit), so the same click later
        does it whole: a database restart or failover costs the user a minute, not the card.
        """
        try:
            return await self._on_action(actor, verb, data)
        except DatabaseError as error:
            logger.warning("card action not handled: %s", error, extra={"verb": verb[:64]})
            return Banner(cards.problem_banner(actor.lang, DATABASE_UNAVAILABLE))

    async def _on_text(self, actor: Actor, text: str, attachments: bool) -> Reply:
        command = command_of(text)
        if command in BREACH_WORDS:  # `datalek`: the breach report card, for whoever may report (bot.oversight.breach)
            refusal = await self._refusal(actor, "breach.start")
            if refusal:
                return Reply(card=cards.problem_card(actor.lang, refusal, **self._params(refusal)))
            return await self._breach.on_command(actor)
        word, _, rest = command.partition(" ")
        if word in _REFERENCE_COMMANDS:  # `intrekken VD-...`, `verbeter telefoonnummer VD-...`
            return await self._reference_command(actor, word, text, rest)
        for prefix in _LINK_PREFIXES:
            if command.startswith(prefix):
                limited = await self._link_limited(actor)
                return Reply(text=limited) if limited else await self._ocmw.link_command(actor, command[len(prefix):])
        for register_word in _REGISTER_WORDS:  # `register`, or `register <part of an OCMW's or protocol's name>`
            if command == register_word or command.startswith(register_word + " "):
                return await self._register_exports.on_command(actor, command[len(register_word):])
        if command in _STATUS_WORDS:
            links = await self._ocmw.linked_protocols(actor.conversation_id)
            if links:
                return Reply(card=await self._status.for_ocmw(actor, links))
            return Reply(card=await self._status.for_referrer(actor))
        if is_start_command(command):
            refusal = await self._refusal(actor, "referral.start")
            if refusal is not None:
                return Reply(card=cards.problem_card(actor.lang, refusal, **self._params(refusal)))
        return await self._dialogue.on_text(actor, text, attachments=attachments)

    async def _reference_command(self, actor: Actor, word: str, text: str, rest: str) -> Reply:
        """`intrekken` or `verbeter` (`word`, as typed) with the reference in `rest`, what followed the command word.

        Nothing else typed is ever repeated: it may be what the parents said, and the bot's answer, which
        nobody can delete, is read by everyone in a group chat. Without a reference, the command's usage;
        with more than the reference that looks like a family's data, the warning to delete the message.
        With two references or more, none is acted on (a confirmation for the first alone was taken for
        both): the command to type for each, one message each.
        """
        verb = _REFERENCE_COMMANDS[word]
        references = find_references(rest)
        reference = references[0] if references else None
        warning = None
        typed_beside = len(rest.split()) > (1 if reference else 0)
        if typed_beside and looks_like_client_data(text):
            where = "personal" if is_personal_chat(actor) else "shared"
            logger.warning("client data typed after a reference command: warned",
                           extra={"conversation_type": actor.conversation_type[:32] or "unknown"})
            warning = cards.text(actor.lang, f"client_data_beside_command.{where}")
        if reference is None:
            usage = cards.text(actor.lang, f"reference_usage.{verb}")
            return Reply(text=usage if warning is None else f"{warning}\n\n{usage}")
        if len(references) > 1:
            each = "\n".join(f"- **{word} {typed}**" for typed in references)
            usage = f"{cards.text(actor.lang, 'reference_usage.one_at_a_time')}\n\n{each}"
            return Reply(text=usage if warning is None else f"{warning}\n\n{usage}")
        answer = await self.on_action(actor, verb, {"reference": reference})
        if isinstance(answer, Banner):
            return Reply(text=answer.text if warning is None else f"{warning}\n\n{answer.text}")
        return Reply(card=answer if warning is None else cards.with_warning(answer, warning))

    def welcome(self, actor: Actor) -> Card:
        """The welcome card."""
        return self._dialogue.welcome(actor)

    async def bot_back(self, actor: Actor) -> None:
        """The bot added to a conversation (again), or its team unarchived or restored: what Teams refused while
        it was out is posted again (an OCMW channel's cards, a referrer's correction cards). With the database out
        of reach, only logged (`koppel` or the next reminder does it later)."""
        try:
            await self._ocmw.bot_back(actor)
            await self._corrections.cards_back(actor)
        except DatabaseError as error:
            logger.warning("cards refused while the bot was out not posted again: %s", error)

    async def bot_gone(self, actor: Actor, why: str) -> None:
        """The bot removed from a conversation, or its team archived or deleted (`why`): logged where it matters."""
        try:
            await self._ocmw.bot_gone(actor, why)
        except DatabaseError as error:
            logger.warning("bot removed (%s), its links not looked up: %s", why, error)

    async def _on_action(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> Answer:
        """A card action: OCMW and correction verbs here, the referral dialogue's own verbs there.

        A refusal of an action on a card that holds a reference (or a correction) is a banner: the
        card stays, its reference and buttons with it.
        """
        refusal = await self._refusal(actor, verb)
        if refusal is not None:
            holds_reference = "reference" in data or "correctionId" in data
            params = self._params(refusal)
            return Banner(cards.problem_banner(actor.lang, refusal, **params)) if holds_reference else \
                cards.problem_card(actor.lang, refusal, **params)
        if verb == "link.confirm" and (limited := await self._link_limited(actor)):
            return cards.notice_card(actor.lang, limited)
        if verb in _CORRECTION_VERBS and not is_personal_chat(actor):  # the card asks for the family's data
            return self._dialogue.personal_chat_only(actor, verb)
        if verb == cards.VERB_VIEW:
            return await self._view(actor, data)
        handler = self._verbs.get(verb)
        if handler is not None:
            return await handler(actor, verb, data)
        return await self._dialogue.on_action(actor, verb, data)

    async def _view(self, actor: Actor, data: Mapping[str, Any]) -> Answer:
        """ "Terug" from a confirmation: the card as it stands, for the draft, the OCMW or the referrer."""
        if "draftId" in data:
            return await self._dialogue.on_action(actor, cards.VERB_VIEW, data)
        if await self._ocmw.linked_protocols(actor.conversation_id):
            return await self._ocmw.on_action(actor, cards.VERB_VIEW, data)
        refusal = await self._refusal(actor, "consent.withdraw")  # a referrer's card: for referrers only
        if refusal is not None:
            return Banner(cards.problem_banner(actor.lang, refusal, **self._params(refusal)))
        return await self._ocmw.referrer_card(actor, data.get("reference"))

    async def _link_limited(self, actor: Actor) -> str | None:
        """The answer when this user, or this conversation, tried linking too often; None when it may."""
        now = self._clock.now()
        if await self._limiter.allow(actor.user_id, "link_user", now) and await self._limiter.allow(
            base_conversation_id(actor.conversation_id), "link_conversation", now
        ):
            return None
        logger.warning("rate limit reached: OCMW link")
        minutes = str(int(LINK_LIMIT.window.total_seconds() // 60))
        return cards.text(actor.lang, "link_rate_limited", minutes=minutes)

    def _params(self, refusal: str) -> dict[str, str]:
        """What the refusal's text needs: how long a draft waits, for "too many actions" (it keeps what was entered)."""
        return {"minutes": self._draft_minutes} if refusal == RATE_LIMITED else {}

    async def _refusal(self, actor: Actor, verb: str) -> str | None:
        """The problem (from `cards.PROBLEMS`) that refuses this actor this verb, or None when it may go ahead."""
        kinds = ("actions", "starts") if verb == "referral.start" else ("actions",)
        if not await self._limiter.allow_all(actor.user_id, kinds, self._clock.now()):
            logger.warning("rate limit reached", extra={"verb": verb[:64]})
            return RATE_LIMITED
        if verb in _REFERRER_VERBS and not self._referrers.allows(
            tenant_id=actor.tenant_id, object_id=actor.user_id, team_or_channel_ids=actor.places
        ):
            logger.warning("referral refused: not an allowed referrer",
                           extra={"verb": verb[:64], "tenant_id": actor.tenant_id[:64]})
            return "not_allowed"
        return None
