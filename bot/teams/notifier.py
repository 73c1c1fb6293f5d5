"""Proactive messages and card edits through the Bot Framework, with Teams' retry rules.

Teams throttles (429) and has transient faults (412, 502, 503, 504); msrest does not retry a POST
on 429 (PLATFORM.md), so every outgoing call is retried here, honouring Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from botbuilder.core import CardFactory, MessageFactory, TurnContext
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity, ConversationReference, ErrorResponseException
from requests.exceptions import RequestException

from bot.notifications import Card, NotificationError

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({412, 429, 502, 503, 504})
MAX_ATTEMPTS = 5
MAX_RETRY_AFTER_SECONDS = 60.0


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
        self._rng = random.Random()  # noqa: S311  # nosec B311

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
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                await self._adapter.continue_conversation(reference, callback, self._app_id)
                return
            except ErrorResponseException as error:
                status = getattr(error.response, "status_code", None)
                if status not in RETRYABLE_STATUSES or attempt == MAX_ATTEMPTS:
                    raise NotificationError(f"Teams answered {status}") from error
                await self._sleep(self._delay(attempt, error.response.headers.get("Retry-After")))
            except RequestException as error:
                if attempt == MAX_ATTEMPTS:
                    raise NotificationError("Teams connector unreachable") from error
                await self._sleep(self._delay(attempt, None))

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(MAX_RETRY_AFTER_SECONDS, max(0.0, float(retry_after)))
            except ValueError:
                pass
        step: float = self._base_delay * 2 ** (attempt - 1)
        return step * self._rng.uniform(0.5, 1.0)
