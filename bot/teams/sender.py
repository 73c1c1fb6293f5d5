"""`ChatSender` for Teams: posts and edits messages through the connector, outside any turn.

The message outbox's worker calls it with a stored conversation reference; what Teams answers is
turned into `ChatSendError` (status and Retry-After), so the retry rules live in plain Python.
"""

from __future__ import annotations

import asyncio

import aiohttp
from microsoft_agents.activity import Activity
from microsoft_agents.hosting.core import CardFactory, MessageFactory

from bot.delivery.chat_messages import ChatSendError, MessageContent, parse_retry_after
from bot.teams.connector import ConnectorClients
from bot.teams.references import load_reference


def message_activity(content: MessageContent) -> Activity:
    """The message activity for a card or a text."""
    if content.card is not None:
        activity: Activity = MessageFactory.attachment(CardFactory.adaptive_card(content.card))
    else:
        activity = MessageFactory.text(content.text or "")
    return activity


class TeamsChatSender:
    """Implements `bot.delivery.chat_messages.ChatSender` with the shared connector clients."""

    def __init__(self, clients: ConnectorClients) -> None:
        self._clients = clients

    async def post(self, conversation_ref: str, content: MessageContent) -> str | None:
        """Post a new message (not a reply) in the referenced conversation."""
        activity, conversation_id, service_url = self._addressed(conversation_ref, content)
        async with _translated_errors():
            client = await self._clients.client_for(service_url)
            response = await client.conversations.send_to_conversation(conversation_id, activity)
        return response.id or None

    async def update(self, conversation_ref: str, activity_id: str, content: MessageContent) -> None:
        """Replace message `activity_id` for everyone."""
        activity, conversation_id, service_url = self._addressed(conversation_ref, content)
        activity.id = activity_id
        async with _translated_errors():
            client = await self._clients.client_for(service_url)
            await client.conversations.update_activity(conversation_id, activity_id, activity)

    @staticmethod
    def _addressed(conversation_ref: str, content: MessageContent) -> tuple[Activity, str, str]:
        try:
            reference = load_reference(conversation_ref)
        except ValueError as error:
            raise ChatSendError("stored conversation reference is unreadable", status=400) from error
        if reference.conversation is None or not reference.conversation.id or not reference.service_url:
            raise ChatSendError("stored conversation reference is incomplete", status=400)
        # A message of its own, not a reply to the activity the reference was taken from.
        activity = message_activity(content).apply_conversation_reference(reference.model_copy(
            update={"activity_id": None}))
        return activity, reference.conversation.id, reference.service_url


class _translated_errors:
    """aiohttp's connector errors as `ChatSendError`."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> bool:
        if isinstance(error, aiohttp.ClientResponseError):
            retry_after = parse_retry_after(error.headers.get("Retry-After") if error.headers else None)
            raise ChatSendError(f"Teams answered {error.status}", status=error.status,
                                retry_after=retry_after) from error
        if isinstance(error, aiohttp.ClientError | asyncio.TimeoutError | OSError):
            raise ChatSendError(f"Teams connector unreachable: {type(error).__name__}") from error
        return False
