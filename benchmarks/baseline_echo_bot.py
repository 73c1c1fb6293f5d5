"""The stock Bot Framework echo bot (the botbuilder-python sample's shape), as a cost floor.

`CloudAdapter` + `ConfigurationBotFrameworkAuthentication` + an `ActivityHandler` that echoes the
text, with none of this project's changes (no connector-client reuse, no msrest `safe_codes` fix,
no own route): what any botbuilder bot pays per message turn. Run with a Python that has
botbuilder-integration-aiohttp (the "before" build's venv): `python benchmarks/baseline_echo_bot.py`.
Listens on HOST (127.0.0.1) and PORT (3978): `POST /api/messages`, `GET /healthz`. Authentication
is off (empty MicrosoftAppId); a benchmark stand-in, never deployed.
"""

from __future__ import annotations

import os
import sys
import traceback

from aiohttp import web
from aiohttp.web import Request, Response
from botbuilder.core import ActivityHandler, MessageFactory, TurnContext
from botbuilder.core.integration import aiohttp_error_middleware
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
from botbuilder.schema import ChannelAccount


class DefaultConfig:
    """The sample's config.py: the attribute names ConfigurationBotFrameworkAuthentication reads."""

    PORT = int(os.environ.get("PORT", "3978"))
    APP_ID = os.environ.get("MicrosoftAppId", "")  # noqa: SIM112 - the Bot Framework's names
    APP_PASSWORD = os.environ.get("MicrosoftAppPassword", "")  # noqa: SIM112 - the Bot Framework's names
    APP_TYPE = os.environ.get("MicrosoftAppType", "MultiTenant")  # noqa: SIM112 - the Bot Framework's names
    APP_TENANTID = os.environ.get("MicrosoftAppTenantId", "")  # noqa: SIM112 - the Bot Framework's names


class EchoBot(ActivityHandler):  # type: ignore[misc]
    """The sample's bot.py."""

    async def on_members_added_activity(self, members_added: list[ChannelAccount], turn_context: TurnContext) -> None:
        for member in members_added:
            if member.id != turn_context.activity.recipient.id:
                await turn_context.send_activity("Hello and welcome!")

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        await turn_context.send_activity(MessageFactory.text(f"Echo: {turn_context.activity.text}"))


CONFIG = DefaultConfig()
ADAPTER = CloudAdapter(ConfigurationBotFrameworkAuthentication(CONFIG))


async def on_error(context: TurnContext, error: Exception) -> None:
    """The sample's handler, minus the trace activity to the Emulator."""
    sys.stderr.write(f"\n [on_turn_error] unhandled error: {error}\n")
    traceback.print_exc()
    await context.send_activity("The bot encountered an error or bug.")


ADAPTER.on_turn_error = on_error
BOT = EchoBot()


async def messages(req: Request) -> Response:
    response: Response = await ADAPTER.process(req, BOT)
    return response


async def healthz(_: Request) -> Response:
    return web.json_response({"status": "ok"})


APP = web.Application(middlewares=[aiohttp_error_middleware])
APP.router.add_post("/api/messages", messages)
APP.router.add_get("/healthz", healthz)

if __name__ == "__main__":
    web.run_app(APP, host=os.environ.get("HOST", "127.0.0.1"), port=CONFIG.PORT, print=None)
