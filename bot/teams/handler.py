"""Activity handler: messages, installs and Adaptive Card actions in, cards out."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from botbuilder.core import ActivityHandler, CardFactory, InvokeResponse, MessageFactory, TurnContext
from botbuilder.schema import Activity, ChannelAccount

import cards
from bot.dialogue import Actor
from bot.notifications import NotificationError
from bot.router import Router
from bot.teams.notifier import serialize_reference
from bot.teams.retry import with_teams_retry

logger = logging.getLogger(__name__)

ADAPTIVE_CARD_ACTION = "adaptiveCard/action"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"


def actor_of(activity: Activity, *, with_reference: bool = False) -> Actor:
    """Who is acting: the Entra object id when Teams gives one, else the channel's user id."""
    sender: ChannelAccount | None = activity.from_property
    user_id = ""
    name = ""
    if sender is not None:
        user_id = _clean(sender.aad_object_id or sender.id)
        name = _clean(sender.name)
    conversation_id = str(activity.conversation.id) if activity.conversation and activity.conversation.id else ""
    return Actor(
        user_id=user_id[:128],
        display_name=name[:128],
        conversation_id=conversation_id[:512],
        lang=cards.language_for(activity.locale if isinstance(activity.locale, str) else None),
        conversation_ref=serialize_reference(activity) if with_reference else "",
        card_activity_id=activity.reply_to_id if isinstance(activity.reply_to_id, str) else None,
        tenant_id=_channel_data_id(activity, "tenant"),
        places=tuple(place for place in (_channel_data_id(activity, "team"), _channel_data_id(activity, "channel"))
                     if place),
    )


def _channel_data_id(activity: Activity, key: str) -> str:
    """`channelData.<key>.id` as Teams sends it (the SDK loses `conversation.tenantId`, PLATFORM.md)."""
    channel_data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    holder = channel_data.get(key)
    return _clean(holder.get("id")) if isinstance(holder, dict) else ""


def _clean(value: object) -> str:
    """A Teams-supplied string without control characters or unpaired surrogates (names reach the register)."""
    if not isinstance(value, str):
        return ""
    return "".join(char for char in value if char.isprintable() and not 0xD800 <= ord(char) <= 0xDFFF).strip()


def card_action_of(value: object) -> tuple[str, Mapping[str, Any]] | None:
    """(verb, data) of an `Action.Execute` invoke value, or None when it is malformed."""
    if not isinstance(value, Mapping):
        return None
    action = value.get("action")
    if not isinstance(action, Mapping) or action.get("type") != "Action.Execute":
        return None
    verb = action.get("verb")
    data = action.get("data", {})
    if not isinstance(verb, str) or not isinstance(data, Mapping):
        return None
    return verb, data


def card_invoke_response(card: dict[str, Any]) -> InvokeResponse:
    """The invoke answer that makes Teams replace the clicked card with `card`."""
    return InvokeResponse(
        status=HTTPStatus.OK,
        body={"statusCode": HTTPStatus.OK, "type": CARD_CONTENT_TYPE, "value": card},
    )


class ReferralActivityHandler(ActivityHandler):  # type: ignore[misc]
    """Routes Teams activities to the referral dialogue."""

    def __init__(self, router: Router) -> None:
        super().__init__()
        self._router = router

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        """A typed message: start, help, or a short pointer."""
        activity = turn_context.activity
        actor = actor_of(activity, with_reference=True)
        if not actor.user_id or not actor.conversation_id:
            return
        text = activity.text if isinstance(activity.text, str) else ""
        reply = self._router.on_text(actor, text[:2000])
        if reply.card is not None:
            await _send(turn_context, MessageFactory.attachment(CardFactory.adaptive_card(reply.card)))
        elif reply.text is not None:
            await _send(turn_context, MessageFactory.text(reply.text))

    async def on_members_added_activity(
        self, members_added: list[ChannelAccount], turn_context: TurnContext
    ) -> None:
        """The welcome card, once, when the bot itself is added to a chat."""
        recipient = turn_context.activity.recipient
        bot_id = recipient.id if recipient is not None else None
        if any(member is not None and member.id == bot_id for member in members_added or []):
            card = self._router.welcome(actor_of(turn_context.activity))
            await _send(turn_context, MessageFactory.attachment(CardFactory.adaptive_card(card)))

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        """Card actions; answered here in full so the SDK's error paths are never reached."""
        activity = turn_context.activity
        if activity.name != ADAPTIVE_CARD_ACTION:
            return InvokeResponse(status=HTTPStatus.NOT_IMPLEMENTED)
        actor = actor_of(activity, with_reference=True)
        parsed = card_action_of(activity.value)
        if parsed is None:
            return card_invoke_response(cards.problem_card(actor.lang, "malformed_action"))
        if not actor.user_id or not actor.conversation_id:
            return card_invoke_response(cards.problem_card(actor.lang, "malformed_action"))
        verb, data = parsed
        try:
            card = await self._router.on_action(actor, verb, data)
        except Exception:
            logger.exception("card action failed", extra={"verb": verb[:64]})
            card = cards.problem_card(actor.lang, "internal_error")
        return card_invoke_response(card)


async def _send(turn_context: TurnContext, activity: Activity) -> None:
    """A reply in the current turn, with Teams' retry rules (429 and friends)."""
    try:
        await with_teams_retry(lambda: turn_context.send_activity(activity))
    except NotificationError:
        logger.exception("reply not delivered to Teams")

