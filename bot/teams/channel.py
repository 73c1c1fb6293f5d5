"""The Teams channel layer as the app sees it: a route, a sender, and what to close at shutdown.

`create_app` calls `build_teams_channel` and gets back only plain objects (an aiohttp route, a
`ChatSender`, a close function): no SDK type leaves `bot.teams`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from bot.clock import Clock
from bot.config import BotIdentity
from bot.core.metrics import Metrics
from bot.delivery.chat_messages import ChatSender
from bot.router import Router
from bot.storage.activity_receipts import ActivityReceipts
from bot.teams.adapter import create_adapter
from bot.teams.connector import ConnectorClients, ConnectorTokenSource, MsalConnectorToken, NoConnectorToken
from bot.teams.handler import ReferralActivityHandler
from bot.teams.route import ActivityArrivals, messages_route
from bot.teams.sender import TeamsChatSender
from bot.teams.token_validation import BOT_FRAMEWORK_OPENID_METADATA, TokenValidator


@dataclass(frozen=True)
class TeamsChannel:
    """What the app wires in."""

    route: web.RouteDef
    sender: ChatSender
    close: Callable[[], Awaitable[None]]


def build_teams_channel(
    identity: BotIdentity,
    router: Router,
    *,
    openid_metadata_url: str = BOT_FRAMEWORK_OPENID_METADATA,
    connector_token: ConnectorTokenSource | None = None,
    metrics: Metrics | None = None,
    turns_at_once: int,
    receipts: ActivityReceipts | None = None,
    clock: Clock | None = None,
) -> TeamsChannel:
    """Inbound route (tokens checked when the bot has an app id) and outbound sender on shared clients.

    `connector_token` replaces the MSAL token for calls to the connector (tests with a stand-in);
    `turns_at_once` bounds the turns in progress (`Settings.turns_at_once`); `receipts` and `clock`
    recognise a message Teams sends again.
    """
    metrics = metrics or Metrics.disabled()
    if connector_token is None:
        connector_token = MsalConnectorToken(identity) if identity.auth_enabled else NoConnectorToken()
    clients = ConnectorClients(connector_token, identity.app_id)
    validator = TokenValidator(app_id=identity.app_id, metadata_url=openid_metadata_url) \
        if identity.auth_enabled else None

    arrivals = None if receipts is None or clock is None else ActivityArrivals(receipts, clock)

    async def close() -> None:
        if arrivals is not None:
            await arrivals.close()
        await clients.close()
        if validator is not None:
            await validator.close()

    return TeamsChannel(
        route=messages_route(create_adapter(clients), ReferralActivityHandler(router, metrics), validator,
                             turns_at_once=turns_at_once, metrics=metrics, arrivals=arrivals),
        sender=TeamsChatSender(clients),
        close=close,
    )
