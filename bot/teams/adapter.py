"""The Bot Framework adapter, built from our settings instead of a module-level CONFIG."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from botbuilder.core import TurnContext
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
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
    adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(configuration))
    adapter.on_turn_error = _log_turn_error
    return adapter


async def _log_turn_error(turn_context: TurnContext, error: Exception) -> None:
    """Log with the traceback; the user-facing answer is decided by the handler."""
    logger.error(
        "turn failed",
        exc_info=(type(error), error, error.__traceback__),
        extra={"activity_type": str(turn_context.activity.type)[:32]},
    )
