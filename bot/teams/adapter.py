"""The Agents SDK adapter, built from our objects instead of a module-level configuration.

Its channel-service factory hands out the app's shared connector clients, so a turn opens no
HTTP session of its own; its turn-error handler logs, and never shows the exception text to the
user as the SDK's default does (the handler answers users itself).
"""

from __future__ import annotations

import logging

from microsoft_agents.hosting.aiohttp import CloudAdapter
from microsoft_agents.hosting.core import TurnContext

from bot.teams.connector import ConnectorClients, ReusingClientFactory

logger = logging.getLogger(__name__)


def create_adapter(clients: ConnectorClients) -> CloudAdapter:
    """A CloudAdapter whose connector clients live as long as the app."""
    adapter = CloudAdapter(channel_service_client_factory=ReusingClientFactory(clients))
    adapter.on_turn_error = _log_turn_error
    return adapter


async def _log_turn_error(turn_context: TurnContext, error: Exception) -> None:
    """Log with the traceback; what the user sees is decided by the handler."""
    logger.error(
        "turn failed",
        exc_info=(type(error), error, error.__traceback__),
        extra={"activity_type": str(turn_context.activity.type)[:32]},
    )
