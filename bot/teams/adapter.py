"""The Bot Framework adapter, built from our settings instead of a module-level CONFIG."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
from botbuilder.schema import Activity
from botframework.connector.auth import (
    BotFrameworkAuthentication,
    ClaimsIdentity,
    ConnectorFactory,
    JwtTokenValidation,
)
from msrest.universal_http.requests import ClientRetryPolicy

from bot.config import BotIdentity

logger = logging.getLogger(__name__)

# msrest rebuilds a list of 999 status codes twice per turn; a frozenset makes that lookup
# constant-time and the turn ~4x cheaper (PLATFORM.md, "Cost"). Same membership semantics.
ClientRetryPolicy.safe_codes = frozenset(ClientRetryPolicy.safe_codes)  # type: ignore[assignment]


@dataclass(frozen=True)
class _SdkConfiguration:
    """The attribute names ConfigurationBotFrameworkAuthentication reads."""

    APP_ID: str
    APP_PASSWORD: str
    APP_TENANTID: str
    APP_TYPE: str


class _ReusingConnectorFactory(ConnectorFactory):  # type: ignore[misc]
    """Hands out one ConnectorClient per (service URL, audience) instead of a new one per turn."""

    def __init__(self, inner: ConnectorFactory, cache: dict[tuple[str, str, str], Any], app_id: str) -> None:
        self._inner = inner
        self._cache = cache
        self._app_id = app_id

    async def create(self, service_url: str, audience: str | None = None) -> Any:
        key = (self._app_id, service_url, audience or "")
        client = self._cache.get(key)
        if client is None:
            client = await self._inner.create(service_url, audience)
            self._cache[key] = client
        return client


class ReusingBotFrameworkAuthentication(BotFrameworkAuthentication):  # type: ignore[misc]
    """The SDK's authentication, but connector and user-token clients are reused across turns.

    A new ConnectorClient (and requests.Session, and TCP connection) per turn was most of a turn's
    CPU (PLATFORM.md, "Client reuse"). The caches belong to this object, which the app owns.
    """

    def __init__(self, inner: BotFrameworkAuthentication) -> None:
        self._inner = inner
        self._connectors: dict[tuple[str, str, str], Any] = {}
        self._token_clients: dict[str, Any] = {}

    async def authenticate_request(self, activity: Activity, auth_header: str) -> Any:
        result = await self._inner.authenticate_request(activity, auth_header)
        if result.connector_factory is not None:
            result.connector_factory = self._reusing(result.connector_factory, result.claims_identity)
        return result

    async def authenticate_streaming_request(self, auth_header: str, channel_id_header: str) -> Any:
        return await self._inner.authenticate_streaming_request(auth_header, channel_id_header)

    def create_connector_factory(self, claims_identity: ClaimsIdentity) -> ConnectorFactory:
        return self._reusing(self._inner.create_connector_factory(claims_identity), claims_identity)

    async def create_user_token_client(self, claims_identity: ClaimsIdentity) -> Any:
        app_id = _app_id(claims_identity)
        client = self._token_clients.get(app_id)
        if client is None:
            client = await self._inner.create_user_token_client(claims_identity)
            self._token_clients[app_id] = client
        return client

    def get_originating_audience(self) -> str:
        return str(self._inner.get_originating_audience())

    async def authenticate_channel_request(self, auth_header: str) -> ClaimsIdentity:
        return await self._inner.authenticate_channel_request(auth_header)

    def _reusing(self, inner: ConnectorFactory, claims_identity: ClaimsIdentity | None) -> ConnectorFactory:
        return _ReusingConnectorFactory(inner, self._connectors, _app_id(claims_identity))


def _app_id(claims_identity: ClaimsIdentity | None) -> str:
    claims = getattr(claims_identity, "claims", None) or {}
    return str(JwtTokenValidation.get_app_id_from_claims(claims) or "")


def create_adapter(identity: BotIdentity) -> CloudAdapter:
    """A CloudAdapter that validates tokens when an app id is configured."""
    configuration = _SdkConfiguration(
        APP_ID=identity.app_id,
        APP_PASSWORD=identity.app_password,
        APP_TENANTID=identity.app_tenant_id,
        # With no app id the SDK's single-tenant factory refuses to start; the password factory
        # with empty credentials is the SDK's own "authentication off" mode.
        APP_TYPE=identity.app_type if identity.auth_enabled else "MultiTenant",
    )
    adapter = CloudAdapter(ReusingBotFrameworkAuthentication(ConfigurationBotFrameworkAuthentication(configuration)))
    adapter.on_turn_error = _log_turn_error
    return adapter


async def _log_turn_error(turn_context: TurnContext, error: Exception) -> None:
    """Log with the traceback; the user-facing answer is decided by the handler."""
    logger.error(
        "turn failed",
        exc_info=(type(error), error, error.__traceback__),
        extra={"activity_type": str(turn_context.activity.type)[:32]},
    )
