"""Runs the real aiohttp app and the connector stand-in on real loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from bot.app import SERVICES_KEY, Services
from tests.support.activities import TeamsUser
from tests.support.connector import ConnectorStandIn


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 on a free port; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server  # the bound socket tells the real port
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class RestartableSite:
    """A server that can stop listening (connections refused) and listen again on the same port."""

    runner: web.AppRunner
    port: int
    site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Close the listening socket and every open connection: the next request is refused."""
        if self.site is not None:
            await self.site.stop()
            self.site = None
        server = self.runner.server
        if server is not None:
            for connection in server.connections:
                connection.force_close()

    async def start(self) -> None:
        """Listen again on the same port."""
        self.site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await self.site.start()


@asynccontextmanager
async def serve_restartable(app: web.Application) -> AsyncIterator[RestartableSite]:
    """Like `serve`, but the test can take the server down and up again."""
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, reuse_address=True)
    await site.start()
    server = site._server
    assert server is not None
    restartable = RestartableSite(runner, server.sockets[0].getsockname()[1], site)  # type: ignore[union-attr]
    try:
        yield restartable
    finally:
        await runner.cleanup()


@dataclass
class BotDriver:
    """Talks to the bot the way Teams does, and reads what the bot sent back."""

    bot_url: str
    service_url: str
    connector: ConnectorStandIn
    session: aiohttp.ClientSession
    services: Services

    async def deliver(self) -> int:
        """Let the mail outbox deliver what is due now, then send the Teams messages that follow."""
        delivered = await self.services.worker.deliver_due()
        await self.settle()
        return delivered

    async def settle(self) -> int:
        """Send the Teams messages (card edits, notices) that are due now; returns how many sends were tried."""
        return await self.services.message_worker.deliver_due()

    async def post(self, activity: dict[str, Any], headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        response = await self.session.post(f"{self.bot_url}/api/messages", json=activity, headers=headers)
        await response.read()
        return response

    async def say(self, user: TeamsUser, text: str) -> list[dict[str, Any]]:
        """Send a message; returns the activities the bot posted in answer, in that conversation."""
        await self.settle()  # what earlier steps queued is not the answer to this message
        before = len(self.connector.calls)
        response = await self.post(user.message(self.service_url, text))
        assert response.status == 202, response.status
        await self.settle()
        here = f"/v3/conversations/{user.conversation_id.split(';')[0]}"
        return [call.body for call in self.connector.calls[before:]
                if call.method == "POST" and call.path.startswith(here)]

    async def answer(self, user: TeamsUser, verb: str, data: dict[str, Any]) -> dict[str, Any]:
        """Click a card button; returns the invoke's answer (a card, or a message shown with the card)."""
        response = await self.post(user.card_action(self.service_url, verb, data))
        assert response.status == 200, response.status
        body: dict[str, Any] = await response.json()
        return body

    async def act(self, user: TeamsUser, verb: str, data: dict[str, Any]) -> dict[str, Any]:
        """Click a card button; returns the card that replaces it."""
        body = await self.answer(user, verb, data)
        assert body["type"] == "application/vnd.microsoft.card.adaptive", body
        card: dict[str, Any] = body["value"]
        return card

    async def banner(self, user: TeamsUser, verb: str, data: dict[str, Any]) -> str:
        """Click a card button that is refused: the card stays and Teams shows this text with it."""
        body = await self.answer(user, verb, data)
        assert body["type"] == "application/vnd.microsoft.activity.message", body
        return str(body["value"])

    async def act_confirmed(self, user: TeamsUser, verb: str, data: dict[str, Any]) -> dict[str, Any]:
        """Click a button that asks once more, then its confirm button; returns the card after both."""
        question = await self.act(user, verb, data)
        confirm = next(
            (element for element in _walk(question)
             if element.get("type") == "Action.Execute" and element.get("data", {}).get("confirmed") == "true"),
            None,
        )
        assert confirm is not None and confirm["verb"] == verb, question
        return await self.act(user, verb, confirm["data"])


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@asynccontextmanager
async def running_connector() -> AsyncIterator[tuple[ConnectorStandIn, str]]:
    """A connector stand-in on its own port; yields it and its URL (the activities' serviceUrl)."""
    connector = ConnectorStandIn()
    async with serve(connector.app()) as service_url:
        yield connector, service_url


@asynccontextmanager
async def driving(app: web.Application, connector: ConnectorStandIn, service_url: str) -> AsyncIterator[BotDriver]:
    """Serve `app` and drive it against an already running connector (so it can outlive a restart)."""
    async with serve(app) as bot_url, aiohttp.ClientSession() as session:
        yield BotDriver(
            bot_url=bot_url, service_url=service_url, connector=connector, session=session, services=app[SERVICES_KEY]
        )


@asynccontextmanager
async def running_bot(app: web.Application) -> AsyncIterator[BotDriver]:
    """The bot and a connector stand-in, both listening, and a driver for them."""
    async with running_connector() as (connector, service_url), driving(app, connector, service_url) as driver:
        yield driver
