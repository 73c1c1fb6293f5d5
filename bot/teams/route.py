"""`POST /api/messages`: our own route instead of `CloudAdapter.process`.

The SDK's `process` answers HTTP 500 to every invoke that returns a body (PLATFORM.md), and 500
to a garbage Authorization header. This route parses and checks the request itself, lets the
adapter run the turn, and writes the invoke answer without re-serialising it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import jwt
from aiohttp import web
from azure.core.exceptions import DeserializationError
from botbuilder.core import Bot
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024  # a Teams activity is far smaller; a card is at most 40 KB
MAX_JSON_DEPTH = 32


def messages_route(adapter: CloudAdapter, bot: Bot) -> web.RouteDef:
    """The route to add to the app."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/json":
            return _error(415, "Content-Type must be application/json")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _error(413, "request body too large")
        raw = await request.content.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            return _error(413, "request body too large")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return _error(400, "body is not JSON")
        if not isinstance(body, dict) or _depth(body) > MAX_JSON_DEPTH:
            return _error(400, "body is not an activity")
        try:
            activity = Activity().deserialize(body)
        except (DeserializationError, TypeError, ValueError, AttributeError):
            return _error(400, "body is not an activity")
        if not isinstance(activity.type, str) or not activity.type:
            return _error(400, "activity has no type")
        if not isinstance(activity.service_url, str) or not activity.service_url.startswith(("http://", "https://")):
            return _error(400, "activity has no serviceUrl")
        auth_header = request.headers.get("Authorization", "")
        try:
            invoke_response = await adapter.process_activity(auth_header, activity, bot.on_turn)
        except (PermissionError, jwt.PyJWTError):
            return _error(401, "not authorised")
        if invoke_response is None:
            return web.Response(status=201)
        if invoke_response.body is None:
            return web.Response(status=int(invoke_response.status or 200))
        return web.json_response(invoke_response.body, status=int(invoke_response.status or 200))

    return web.post("/api/messages", handle)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)


def _depth(node: Any, level: int = 1) -> int:
    """Nesting depth of parsed JSON, stopping early once past the limit."""
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(node, dict):
        return max((_depth(value, level + 1) for value in node.values()), default=level)
    if isinstance(node, list):
        return max((_depth(value, level + 1) for value in node), default=level)
    return level
