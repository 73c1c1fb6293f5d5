"""Connector clients for the app's whole life: one HTTP session per Teams service URL, a token that is reused.

The Agents SDK builds two aiohttp sessions per turn and closes them after it (PLATFORM.md); here
one `TeamsConnectorClient` per service URL is kept (its connection pool with it) and handed to the
SDK as the turn's client, and to the message outbox's sender. The bearer token comes from a
`ConnectorTokenSource`: MSAL for the bot's app registration, nothing when authentication is off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import aiohttp
import jwt
from microsoft_agents.activity import TurnContextProtocol
from microsoft_agents.hosting.core import ClaimsIdentity
from microsoft_agents.hosting.core.connector.client import UserTokenClient
from microsoft_agents.hosting.core.connector.teams import TeamsConnectorClient

from bot.config import BotIdentity

logger = logging.getLogger(__name__)

BOT_FRAMEWORK_SCOPE = "https://api.botframework.com/.default"
TOKEN_SERVICE_URL = "https://api.botframework.com"  # noqa: S105  # nosec B105 - a URL
#: A connector call that takes longer than this is retried by the outbox, not waited for.
CONNECTOR_TIMEOUT = aiohttp.ClientTimeout(total=20, connect=5)
_TOKEN_MARGIN_SECONDS = 300


class ConnectorTokenSource(Protocol):
    """The bearer token for calls to the Bot Framework connector."""

    async def token(self) -> str:
        """A valid token, or "" when calls go without one (authentication off)."""
        ...


class NoConnectorToken:
    """Authentication off (local runs, the Agents Playground): calls carry no token."""

    async def token(self) -> str:
        """Always empty."""
        return ""


class MsalConnectorToken:
    """The bot's app registration (client secret or managed identity) through MSAL, kept until near expiry.

    MSAL is synchronous and runs in a thread of the loop's default executor; asking it once an hour
    instead of per call keeps a thread hop off every message. One fetch at a time, shared by every
    caller and not cancelled by one that stops waiting (a reply's deadline, an outbox lease), so
    callers that give up start no new threads; MSAL's HTTP gives up on its own (`msal_client`). It
    is imported here, with authentication on only: MSAL and `requests` are about 0.1 s of every
    start otherwise (local runs, the Playground).
    """

    def __init__(self, identity: BotIdentity) -> None:
        from bot.teams.msal_client import AppRegistrationToken

        self._app = AppRegistrationToken(identity, resource=TOKEN_SERVICE_URL, scope=BOT_FRAMEWORK_SCOPE)
        self._token = ""  # nosec B105 - no token yet
        self._valid_until = 0.0
        self._fetch: asyncio.Task[str] | None = None

    async def token(self) -> str:
        """A token for the connector, refreshed five minutes before it expires."""
        if self._token and time.time() < self._valid_until:
            return self._token
        fetch = self._fetch
        if fetch is None or fetch.done():
            fetch = asyncio.create_task(self._fetch_token(), name="connector-token")
            fetch.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved: callers see it
            self._fetch = fetch
        return await asyncio.shield(fetch)

    async def _fetch_token(self) -> str:
        token = await asyncio.to_thread(self._app.fetch)
        self._token, self._valid_until = token, _expiry(token) - _TOKEN_MARGIN_SECONDS
        return token


def _expiry(token: str) -> float:
    """When the token expires (its `exp`), or ten minutes from now when it does not say."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        return float(claims["exp"])
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return time.time() + 600 + _TOKEN_MARGIN_SECONDS


class _SharedConnectorClient(TeamsConnectorClient):
    """A connector client the SDK may "close" after each turn; only `ConnectorClients` really closes it."""

    async def close(self) -> None:
        return None

    async def close_for_good(self) -> None:
        await self.client.close()


class _SharedUserTokenClient(UserTokenClient):
    """The SDK wants a user-token client per turn; this bot signs nobody in, so one suffices."""

    async def close(self) -> None:
        return None

    async def close_for_good(self) -> None:
        await self.client.close()


class ConnectorClients:
    """One connector client per service URL; each request gets the current token as it is sent.

    The token is added by a client middleware, so building a client (the SDK does so for every
    turn, even an invoke that sends nothing) never waits for, or fails on, the identity platform.
    """

    def __init__(self, token_source: ConnectorTokenSource, app_id: str) -> None:
        self._token_source = token_source
        self._app_id = app_id
        self._clients: dict[str, _SharedConnectorClient] = {}
        self._user_tokens: _SharedUserTokenClient | None = None

    async def client_for(self, service_url: str) -> TeamsConnectorClient:
        """The client for `service_url` (created on first use, inside the event loop)."""
        endpoint = service_url if service_url.endswith("/") else f"{service_url}/"
        client = self._clients.get(endpoint)
        if client is None:
            client = _SharedConnectorClient(endpoint, "", session=self._session(endpoint))
            self._clients[endpoint] = client
        return client

    def user_token_client(self) -> UserTokenClient:
        """The one user-token client (created on first use, inside the event loop)."""
        if self._user_tokens is None:
            endpoint = f"{TOKEN_SERVICE_URL}/"
            self._user_tokens = _SharedUserTokenClient(endpoint, "", app_id=self._app_id or None,
                                                        session=self._session(endpoint))
        return self._user_tokens

    def _session(self, endpoint: str) -> aiohttp.ClientSession:
        token_source = self._token_source

        async def bearer_token(
            request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
        ) -> aiohttp.ClientResponse:
            token = await token_source.token()
            if token:
                request.headers["Authorization"] = f"Bearer {token}"
            return await handler(request)

        return aiohttp.ClientSession(base_url=endpoint, timeout=CONNECTOR_TIMEOUT, middlewares=(bearer_token,))

    async def close(self) -> None:
        """Close every session (app shutdown)."""
        for client in self._clients.values():
            await client.close_for_good()
        self._clients.clear()
        if self._user_tokens is not None:
            await self._user_tokens.close_for_good()
            self._user_tokens = None


class ReusingClientFactory:
    """The SDK's channel-service client factory, answering with the shared clients."""

    def __init__(self, clients: ConnectorClients) -> None:
        self._clients = clients

    async def create_connector_client(
        self,
        context: TurnContextProtocol[Any] | None,
        claims_identity: ClaimsIdentity,
        service_url: str,
        audience: str,
        scopes: list[str] | None = None,
        use_anonymous: bool = False,
    ) -> TeamsConnectorClient:
        """The shared client for the activity's service URL."""
        return await self._clients.client_for(service_url)

    async def create_user_token_client(
        self, context: Any, claims_identity: ClaimsIdentity, use_anonymous: bool = False
    ) -> UserTokenClient:
        """The shared user-token client."""
        return self._clients.user_token_client()
