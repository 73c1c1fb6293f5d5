"""How the bot reaches a conversation outside a turn (proactive messages, card updates).

Plain-Python interface; the Teams implementation lives in `bot.teams.notifier`. Conversation
references are opaque strings here.
"""

from __future__ import annotations

from typing import Any, Protocol

Card = dict[str, Any]


class NotificationError(Exception):
    """The message could not be delivered to Teams after retries."""


class Notifier(Protocol):
    """Posts and edits messages in a conversation the bot was in before."""

    async def send_card(self, conversation_ref: str, card: Card) -> str | None:
        """Post a card; returns the new message's id when Teams gives one."""
        ...

    async def send_text(self, conversation_ref: str, text: str) -> None:
        """Post a short text message."""
        ...

    async def update_card(self, conversation_ref: str, activity_id: str, card: Card) -> None:
        """Replace the card in message `activity_id` for everyone in the conversation."""
        ...
