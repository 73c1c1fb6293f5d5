"""Activity handler: messages, installs and Adaptive Card actions in, cards out.

It decodes the SDK's activity into an `Actor` and the action's data, lets the plain-Python
`Router` decide, and encodes the answer: a reply in the chat, or the invoke's body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import aiohttp
from microsoft_agents.activity import Activity, ChannelAccount, InvokeResponse, TurnContextProtocol
from microsoft_agents.hosting.core import ActivityHandler

import cards
from bot.core.metrics import Metrics
from bot.delivery.chat_messages import RETRYABLE_STATUSES, MessageContent, parse_retry_after
from bot.referral.dialogue import Actor, Answer, Banner
from bot.router import Router
from bot.teams.references import reference_of
from bot.teams.sender import message_activity

logger = logging.getLogger(__name__)

ADAPTIVE_CARD_ACTION = "adaptiveCard/action"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
#: Universal Actions' "message" answer: Teams shows the text and leaves the card as it was.
MESSAGE_CONTENT_TYPE = "application/vnd.microsoft.activity.message"
#: The layout Teams sends with a message's rich text or pasted image: not an attachment of the user's.
HTML_CONTENT_TYPE = "text/html"
#: A reply is part of the turn Teams waits for: retry briefly, then give up (the user can type again).
REPLY_ATTEMPTS = 3
REPLY_MAX_WAIT_SECONDS = 2.0
#: Every attempt together: Teams sends an activity again when its answer takes 15 s (the command would run
#: twice), and a turn keeps its place (`TURNS_AT_ONCE`) while its reply waits for the connector.
REPLY_DEADLINE_SECONDS = 7.0
#: Teams' `channelData.eventType` of a conversationUpdate about a whole team: the bot can post in it again,
#: or no longer (with what the log says).
TEAM_BACK_EVENTS = frozenset({"teamUnarchived", "teamRestored"})
TEAM_GONE_EVENTS = {"teamArchived": "team archived", "teamDeleted": "team deleted",
                    "teamHardDeleted": "team deleted for good"}


def actor_of(activity: Activity, *, with_reference: bool = False) -> Actor:
    """Who is acting: the Entra object id when Teams gives one, else the channel's user id."""
    sender: ChannelAccount | None = activity.from_property
    user_id = ""
    name = ""
    if sender is not None:
        user_id = _clean(sender.aad_object_id or sender.id)
        name = _clean(sender.name)
    conversation_id = str(activity.conversation.id) if activity.conversation and activity.conversation.id else ""
    team_id = _channel_data_id(activity, "team")
    return Actor(
        user_id=user_id[:128],
        display_name=name[:128],
        conversation_id=conversation_id[:512],
        lang=cards.language_for(activity.locale if isinstance(activity.locale, str) else None),
        conversation_ref=reference_of(activity) if with_reference else "",
        card_activity_id=activity.reply_to_id if isinstance(activity.reply_to_id, str) else None,
        tenant_id=_channel_data_id(activity, "tenant"),
        places=tuple(place for place in (team_id, _channel_data_id(activity, "channel"))
                     if place),
        conversation_type=_conversation_type(activity),
        team_id=team_id[:512],
    )


def _conversation_type(activity: Activity) -> str:
    """Teams' `conversation.conversationType`; when it is not said but `isGroup` is, "groupChat".

    The referral dialogue runs only where this says "personal" or nothing (the Agents Playground's
    personal chat says nothing), so a conversation that says it is a group never counts as personal.
    """
    conversation = activity.conversation
    if conversation is None:
        return ""
    said = _clean(conversation.conversation_type)[:32]
    return said or ("groupChat" if conversation.is_group is True else "")


def _actor_or_none(activity: Activity) -> Actor | None:
    """The actor with a conversation reference, or None when the activity cannot give one."""
    try:
        return actor_of(activity, with_reference=True)
    except ValueError:  # pydantic refused the reference built from this activity
        logger.info("activity without a usable conversation reference ignored")
        return None


def _channel_data_id(activity: Activity, key: str) -> str:
    """`channelData.<key>.id` as Teams sends it (every Teams activity carries the tenant there)."""
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


class InvokeAnswerBody:
    """An invoke answer's body, carried through the SDK as it is (the route writes `content`).

    The SDK deep-copies every activity it sends, the invoke answer too, and pydantic walks a dict body
    twice more on the way: for a card of ~200 nodes that was ~11 % of a click's CPU (issue 14). Nothing
    changes the body once it is made, so the copy is the body itself. A plain class, not a dataclass:
    pydantic passes an unknown type through, where it would turn a dataclass into a dict.
    """

    __slots__ = ("content",)

    def __init__(self, content: dict[str, Any]) -> None:
        self.content = content

    def __deepcopy__(self, _memo: object) -> InvokeAnswerBody:
        return self


def card_invoke_response(answer: Answer) -> InvokeResponse:
    """The invoke answer: a card replaces the clicked one; a banner's text shows with it, the card unchanged."""
    if isinstance(answer, Banner):
        content = {"statusCode": HTTPStatus.OK, "type": MESSAGE_CONTENT_TYPE, "value": answer.text}
    else:
        content = {"statusCode": HTTPStatus.OK, "type": CARD_CONTENT_TYPE, "value": answer}
    return InvokeResponse(status=HTTPStatus.OK, body=InvokeAnswerBody(content))


class ReferralActivityHandler(ActivityHandler):
    """Routes Teams activities to the referral dialogue."""

    def __init__(self, router: Router, metrics: Metrics | None = None) -> None:
        super().__init__()
        self._router = router
        self._metrics = metrics or Metrics.disabled()

    async def on_message_activity(self, turn_context: TurnContextProtocol[Any]) -> None:
        """A typed message: start, help, or a short pointer (timed as the verb "message")."""
        started = time.monotonic()
        try:
            await self._on_message(turn_context)
        finally:
            self._metrics.turn("message", time.monotonic() - started)

    async def on_invoke_activity(self, turn_context: TurnContextProtocol[Any]) -> InvokeResponse:
        """Card actions, timed by verb (`bot.core.metrics.KNOWN_VERBS`; anything else as "other")."""
        started = time.monotonic()
        verb = "other"
        try:
            parsed = card_action_of(turn_context.activity.value)
            verb = parsed[0] if parsed is not None else verb
            return await self._on_invoke(turn_context)
        finally:
            self._metrics.turn(verb, time.monotonic() - started)

    async def _on_message(self, turn_context: TurnContextProtocol[Any]) -> None:
        activity = turn_context.activity
        actor = _actor_or_none(activity)
        if actor is None or not actor.user_id or not actor.conversation_id:
            return
        text = activity.text if isinstance(activity.text, str) else ""
        reply = await self._router.on_text(actor, text[:2000], attachments=_carries_attachments(activity))
        if reply.card is not None:
            await _reply(turn_context, MessageContent(card=reply.card))
        elif reply.text is not None:
            await _reply(turn_context, MessageContent(text=reply.text))

    async def on_conversation_update_activity(self, turn_context: TurnContextProtocol[Any]) -> None:
        """Members added or removed (the SDK's dispatch), then what Teams says of a whole team."""
        await super().on_conversation_update_activity(turn_context)
        activity = turn_context.activity
        channel_data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
        event = channel_data.get("eventType")
        if event in TEAM_BACK_EVENTS:
            await self._router.bot_back(actor_of(activity))
        elif isinstance(event, str) and event in TEAM_GONE_EVENTS:
            await self._router.bot_gone(actor_of(activity), TEAM_GONE_EVENTS[event])

    async def on_members_added_activity(
        self, members_added: list[ChannelAccount], turn_context: TurnContextProtocol[Any]
    ) -> None:
        """The welcome card, once, when the bot itself is added to a chat; then what Teams refused while it was out."""
        if _is_the_bot_among(members_added, turn_context.activity):
            actor = actor_of(turn_context.activity)
            await _reply(turn_context, MessageContent(card=self._router.welcome(actor)))
            await self._router.bot_back(actor)

    async def on_members_removed_activity(
        self, members_removed: list[ChannelAccount], turn_context: TurnContextProtocol[Any]
    ) -> None:
        """The bot itself removed (the app removed from a team, or uninstalled): logged where it matters."""
        if _is_the_bot_among(members_removed, turn_context.activity):
            await self._router.bot_gone(actor_of(turn_context.activity), "app removed")

    async def _on_invoke(self, turn_context: TurnContextProtocol[Any]) -> InvokeResponse:
        """Card actions; answered here in full so the SDK's error paths are never reached."""
        activity = turn_context.activity
        if activity.name != ADAPTIVE_CARD_ACTION:
            return InvokeResponse(status=HTTPStatus.NOT_IMPLEMENTED)
        actor = _actor_or_none(activity)
        parsed = card_action_of(activity.value)
        if actor is None or parsed is None or not actor.user_id or not actor.conversation_id:
            lang = cards.language_for(activity.locale if isinstance(activity.locale, str) else None)
            return card_invoke_response(cards.problem_card(lang, "malformed_action"))
        verb, data = parsed
        try:
            answer = await self._router.on_action(actor, verb, data)
        except Exception:
            logger.exception("card action failed", extra={"verb": verb[:64]})
            # The card that was clicked may hold a reference: keep it, say what happened with it.
            answer = Banner(cards.problem_banner(actor.lang, "internal_error"))
        return card_invoke_response(answer)


def _carries_attachments(activity: Activity) -> bool:
    """True when a message carries a photo or a file: any attachment but the text/html Teams adds to lay one out."""
    return any(attachment is not None and attachment.content_type != HTML_CONTENT_TYPE
               for attachment in activity.attachments or [])


def _is_the_bot_among(members: list[ChannelAccount] | None, activity: Activity) -> bool:
    """True when the bot itself (the activity's recipient) is one of these members."""
    bot_id = activity.recipient.id if activity.recipient is not None else None
    return bot_id is not None and any(member is not None and member.id == bot_id for member in members or [])


async def _reply(turn_context: TurnContextProtocol[Any], content: MessageContent) -> None:
    """A reply in the current turn, retried briefly on what Teams says is transient."""
    await _with_brief_retry(lambda: turn_context.send_activity(message_activity(content)))


async def _with_brief_retry(send: Callable[[], Awaitable[object]]) -> None:
    try:
        async with asyncio.timeout(REPLY_DEADLINE_SECONDS):
            await _attempts(send)
    except TimeoutError:
        logger.error("reply not delivered to Teams: no answer within %g s", REPLY_DEADLINE_SECONDS)


async def _attempts(send: Callable[[], Awaitable[object]]) -> None:
    for attempt in range(1, REPLY_ATTEMPTS + 1):
        try:
            await send()
            return
        except aiohttp.ClientResponseError as error:
            if error.status not in RETRYABLE_STATUSES or attempt == REPLY_ATTEMPTS:
                logger.error("reply not delivered to Teams: HTTP %s", error.status)
                return
            wait = parse_retry_after(error.headers.get("Retry-After") if error.headers else None)
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            if attempt == REPLY_ATTEMPTS:
                logger.error("reply not delivered to Teams: %s", type(error).__name__)
                return
            wait = None
        await asyncio.sleep(min(REPLY_MAX_WAIT_SECONDS, wait if wait is not None else 0.25 * 2 ** attempt))
