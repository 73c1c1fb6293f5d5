"""What the bot posts or edits in a Teams conversation on its own, in plain Python.

The services put messages into the durable message outbox (`bot.delivery.message_outbox`); a worker hands
them to a `ChatSender` (the Teams implementation lives in `bot.teams`). Conversation references
are opaque strings here, and errors are described by HTTP status and Retry-After only, so no SDK
type crosses this line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

Card = dict[str, Any]

#: What Teams asks to retry: throttled (429), precondition (412) and gateway/server trouble (5xx).
RETRYABLE_STATUSES = frozenset({408, 412, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class MessageContent:
    """An Adaptive Card or a short text; exactly one of them."""

    card: Card | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if (self.card is None) == (self.text is None):
            raise ValueError("a message is a card or a text")

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps({"card": self.card} if self.card is not None else {"text": self.text},
                          ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, stored: str) -> MessageContent:
        """The inverse of `to_json`."""
        values = json.loads(stored)
        return cls(card=values.get("card"), text=values.get("text"))


class ChatSendError(Exception):
    """Teams did not accept a message.

    `status` is the connector's HTTP status (None when it could not be reached at all),
    `retry_after` the seconds Teams asked to wait. The message is safe to log.
    """

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth trying again: unreachable, throttled, or a server-side fault."""
        return self.status is None or self.status in RETRYABLE_STATUSES or self.status == 401

    @property
    def message_gone(self) -> bool:
        """The message to edit no longer exists (deleted in Teams)."""
        return self.status == 404


class ChatSender(Protocol):
    """Posts and edits messages in a conversation the bot was in before."""

    async def post(self, conversation_ref: str, content: MessageContent) -> str | None:
        """Post a new message; returns its id when Teams gives one. Raises ChatSendError."""
        ...

    async def update(self, conversation_ref: str, activity_id: str, content: MessageContent) -> None:
        """Replace message `activity_id` for everyone in the conversation. Raises ChatSendError."""
        ...


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form); None when absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def conversation_key(conversation_ref: str) -> str:
    """The conversation a stored reference points at, without a channel thread's ";messageid=" part.

    Messages to one conversation are sent in the order they were queued; this is what "one" means.
    """
    try:
        reference = json.loads(conversation_ref)
        conversation_id = reference["conversation"]["id"]
    except (ValueError, KeyError, TypeError):
        return conversation_ref[:512]
    return str(conversation_id).split(";messageid=", 1)[0][:512]
