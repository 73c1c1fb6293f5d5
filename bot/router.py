"""Routes typed commands and card verbs to the service that owns them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bot.corrections import CorrectionService
from bot.dialogue import Actor, Card, ReferralDialogue, Reply, command_of
from bot.ocmw import OcmwService
from bot.status import StatusService

_LINK_PREFIXES = ("koppel ", "link ")
_STATUS_WORDS = frozenset({"status", "mijn doorverwijzingen", "my referrals"})


class Router:
    """One entry for the Teams layer: `on_text` and `on_action`, the rest is decided here."""

    def __init__(
        self,
        *,
        dialogue: ReferralDialogue,
        ocmw: OcmwService,
        corrections: CorrectionService,
        status: StatusService,
    ) -> None:
        self._dialogue = dialogue
        self._ocmw = ocmw
        self._status = status
        self._verbs: Mapping[str, Callable[[Actor, str, Mapping[str, Any]], Awaitable[Card]]] = {
            "ack.receive": ocmw.on_action,
            "referral.outcome": ocmw.on_action,
            "referral.deleted": ocmw.on_action,
            "referral.quality": ocmw.on_action,
            "link.confirm": ocmw.on_action,
            "link.cancel": ocmw.on_action,
            "consent.withdraw": ocmw.withdraw_consent,
            "correction.submit": corrections.on_action,
            "correction.later": corrections.on_action,
        }

    def on_text(self, actor: Actor, text: str) -> Reply:
        """A typed message, mentions stripped."""
        command = command_of(text)
        for prefix in _LINK_PREFIXES:
            if command.startswith(prefix):
                return self._ocmw.link_command(actor, command[len(prefix):])
        if command in _STATUS_WORDS:
            links = self._ocmw.linked_protocols(actor.conversation_id)
            return Reply(card=self._status.for_ocmw(actor, links) if links else self._status.for_referrer(actor))
        return self._dialogue.on_text(actor, text)

    def welcome(self, actor: Actor) -> Card:
        """The welcome card."""
        return self._dialogue.welcome(actor)

    async def on_action(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> Card:
        """A card action: OCMW and correction verbs here, the referral dialogue's own verbs there."""
        handler = self._verbs.get(verb)
        if handler is not None:
            return await handler(actor, verb, data)
        return await self._dialogue.on_action(actor, verb, data)
