"""Proactive messages and card edits through the Bot Framework, with Teams' retry rules.

Teams throttles (429) and has transient faults (412, 502, 503, 504); msrest does not retry a POST
on 429 (PLATFORM.md), so every outgoing call is retried here, honouring Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from botbuilder.core import CardFactory, MessageFactory, TurnContext
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity, ConversationReference

from bot.notifications import Card, NotificationError
from bot.teams.retry import with_teams_retry

logger = logging.getLogger(__name__)



def serialize_reference(activity: Activity) -> str:
    """The conversation reference of an incoming activity, as camelCase JSON (tenant kept)."""
    reference = TurnContext.get_conversation_reference(activity)
    channel_data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    tenant = channel_data.get("tenant") if isinstance(channel_data.get("tenant"), dict) else None
    if reference.conversation is not None and tenant and isinstance(tenant.get("id"), str):
        reference.conversation.tenant_id = tenant["id"]
    return json.dumps(reference.serialize())


class TeamsNotifier:
    """Implements `bot.notifications.Notifier` with `continue_conversation`."""

    def __init__(
        self,
        adapter: CloudAdapter,
        app_id: str,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        base_delay: float = 1.0,
    ) -> None:
        self._adapter = adapter
        self._app_id = app_id
        self._sleep = sleep
        self._base_delay = base_delay

    async def send_card(self, conversation_ref: str, card: Card) -> str | None:
        """Post a card as a new message in the conversation."""
        return await self._send(conversation_ref, MessageFactory.attachment(CardFactory.adaptive_card(card)))

    async def send_text(self, conversation_ref: str, text: str) -> None:
        """Post a text message in the conversation."""
        await self._send(conversation_ref, MessageFactory.text(text))

    async def update_card(self, conversation_ref: str, activity_id: str, card: Card) -> None:
        """Replace message `activity_id` with `card` for everyone."""
        activity = MessageFactory.attachment(CardFactory.adaptive_card(card))
        activity.id = activity_id

        async def update(turn_context: TurnContext) -> None:
            await turn_context.update_activity(activity)

        await self._continue(conversation_ref, update)

    async def _send(self, conversation_ref: str, activity: Activity) -> str | None:
        sent: dict[str, Any] = {}

        async def post(turn_context: TurnContext) -> None:
            turn_context.activity.id = None  # a new message, not a reply to a made-up id
            response = await turn_context.send_activity(activity)
            sent["id"] = getattr(response, "id", None)

        await self._continue(conversation_ref, post)
        return sent.get("id")

    async def _continue(self, conversation_ref: str, callback: Callable[[TurnContext], Awaitable[None]]) -> None:
        try:
            reference = ConversationReference().deserialize(json.loads(conversation_ref))
        except (ValueError, TypeError) as error:
            raise NotificationError("stored conversation reference is unreadable") from error
        await with_teams_retry(
            lambda: self._adapter.continue_conversation(reference, callback, self._app_id),
            sleep=self._sleep,
            base_delay=self._base_delay,
        )
