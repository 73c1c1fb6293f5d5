"""The Microsoft 365 Agents SDK's own cost for a card action: a bot that does nothing else.

The SDK's sample shape (`CloudAdapter.process` on aiohttp, an `ActivityHandler`), authentication off,
answering every `adaptiveCard/action` invoke with one fixed Adaptive Card: no storage, no rate limit,
no rendering, no logging. Whatever a card action of any bot on this SDK costs, it costs at least
this; `benchmarks.sdk_floor` sets it beside the stock botbuilder echo bot, issue 14's baseline. Run
with the project's venv: `python benchmarks/floor_agents_bot.py`. Listens on HOST (127.0.0.1) and
PORT (3978): `POST /api/messages`, `GET /healthz`. A benchmark stand-in, never deployed.
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web
from microsoft_agents.activity import AdaptiveCardInvokeResponse, AdaptiveCardInvokeValue
from microsoft_agents.hosting.aiohttp import CloudAdapter
from microsoft_agents.hosting.core import ActivityHandler, ChannelServiceClientFactoryBase, TurnContext
from microsoft_agents.hosting.core.connector.client import UserTokenClient
from microsoft_agents.hosting.core.connector.teams import TeamsConnectorClient

#: About the size of the bot's smallest answer card: a heading, a line of text and two buttons.
CARD = {
    "type": "AdaptiveCard",
    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
    "version": "1.5",
    "body": [
        {"type": "TextBlock", "text": "Floor", "weight": "Bolder", "size": "Medium", "wrap": True},
        {"type": "TextBlock", "text": "The SDK's own work for one card action.", "wrap": True},
    ],
    "actions": [
        {"type": "Action.Execute", "title": "Next", "verb": "floor.next", "data": {}},
        {"type": "Action.Execute", "title": "Stop", "verb": "floor.stop", "data": {}},
    ],
}


class _KeptConnector(TeamsConnectorClient):
    """Built once; the SDK's close after each turn keeps it (the cheapest a turn's client can be)."""

    async def close(self) -> None:
        return None


class _KeptUserTokens(UserTokenClient):
    async def close(self) -> None:
        return None


class OneClientFactory(ChannelServiceClientFactoryBase):
    """The SDK builds a connector and a user-token client for every turn, even an invoke that sends
    nothing; these are built on first use and handed out again, so no turn opens an HTTP session."""

    def __init__(self) -> None:
        self._connector: _KeptConnector | None = None
        self._user_tokens: _KeptUserTokens | None = None

    async def create_connector_client(self, context: Any, claims_identity: Any, service_url: str, audience: str,
                                      scopes: list[str] | None = None, use_anonymous: bool = False) -> Any:
        if self._connector is None:
            self._connector = _KeptConnector(service_url if service_url.endswith("/") else f"{service_url}/", "")
        return self._connector

    async def create_user_token_client(self, context: Any, claims_identity: Any, use_anonymous: bool = False) -> Any:
        if self._user_tokens is None:
            self._user_tokens = _KeptUserTokens("https://api.botframework.com/", "")
        return self._user_tokens


class FloorAgent(ActivityHandler):
    """Every card action gets the same card back, answered in the invoke's HTTP response."""

    async def on_adaptive_card_invoke(
        self, turn_context: TurnContext, invoke_value: AdaptiveCardInvokeValue
    ) -> AdaptiveCardInvokeResponse:
        return AdaptiveCardInvokeResponse(status_code=200, type="application/vnd.microsoft.card.adaptive",
                                          value=CARD)


def make_app() -> web.Application:
    """`POST /api/messages` through the SDK's own aiohttp adapter, and `GET /healthz`."""
    adapter = CloudAdapter(channel_service_client_factory=OneClientFactory())
    agent = FloorAgent()

    async def messages(request: web.Request) -> web.StreamResponse:
        response = await adapter.process(request, agent)
        return response if response is not None else web.Response(status=202)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/api/messages", messages)
    app.router.add_get("/healthz", healthz)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "3978")),
                print=None)
