"""`POST /api/messages`: our own route instead of `CloudAdapter.process`.

The SDK's `process` answers HTTP 500 to every invoke that returns a body (PLATFORM.md), and 500
to a garbage Authorization header. This route parses and checks the request itself, authenticates
it (bounded, off the event loop), lets the adapter run the turn with that result, and writes the
invoke answer without re-serialising it.

Authentication: the SDK fetches the identity provider's OpenID metadata and signing keys with a
blocking `requests.get` without a timeout, on the event loop, whenever a token names a known
issuer and the keys are older than a day (or the last fetch failed). Unreachable or silent, that
froze the whole bot; failing, it surfaced as a 500. So the SDK's `authenticate_request` runs in
a daemon thread with its own event loop, at most `MAX_AUTH_THREADS` at once, and the request
waits at most `AUTH_TIMEOUT_SECONDS`: a token that does not prove itself gets 401, a key fetch
that failed or did not finish in time 503, never a hang or a 500.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import requests
from aiohttp import web
from azure.core.exceptions import DeserializationError
from botbuilder.core import Bot
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity
from botframework.connector.auth import AuthenticateRequestResult, BotFrameworkAuthentication

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024  # a Teams activity is far smaller; a card is at most 40 KB
MAX_JSON_DEPTH = 32
#: Teams gives up on an invoke after 10-15 s; answer well before, so it can retry.
AUTH_TIMEOUT_SECONDS = 5.0
#: Authentication threads alive at once: the SDK fetches keys without a timeout, so a silent
#: identity provider keeps a thread until its connection ends; beyond this, 503 at once.
MAX_AUTH_THREADS = 16
RETRY_AFTER_SECONDS = 10

_T = TypeVar("_T")


class NotAuthenticatedError(Exception):
    """The request's token did not prove it comes from the Bot Framework for this bot: 401."""


class IdentityProviderUnavailableError(Exception):
    """The signing keys could not be fetched in time, so no token can be checked now: 503."""


class BoundedAuthenticator:
    """The SDK's request authentication, off the event loop and bounded in time and threads."""

    def __init__(
        self,
        authentication: BotFrameworkAuthentication,
        *,
        timeout: float = AUTH_TIMEOUT_SECONDS,
        max_threads: int = MAX_AUTH_THREADS,
    ) -> None:
        self._authentication = authentication
        self._timeout = timeout
        self._slots = threading.BoundedSemaphore(max_threads)

    async def authenticate(self, activity: Activity, auth_header: str) -> AuthenticateRequestResult:
        """The SDK's result for a request that proved itself; raises one of the two errors above.

        Without a header the SDK fetches nothing (it refuses, or lets through when auth is off),
        so that case stays on the loop and is answered even while every thread waits on a fetch.
        """
        if not auth_header:
            pending: Awaitable[AuthenticateRequestResult] = self._authentication.authenticate_request(activity, "")
        elif not self._slots.acquire(blocking=False):
            raise IdentityProviderUnavailableError("too many authentications pending")
        else:
            try:
                pending = _in_own_thread(
                    lambda: self._authentication.authenticate_request(activity, auth_header), self._slots
                )
            except RuntimeError as error:  # no thread to be had: the machine is out of resources
                raise IdentityProviderUnavailableError("cannot start an authentication thread") from error
        try:
            async with asyncio.timeout(self._timeout):
                return await pending
        except TimeoutError as error:
            raise IdentityProviderUnavailableError("authentication timed out") from error
        except requests.RequestException as error:
            # The only network call in authenticate_request is the OpenID metadata / keys fetch.
            raise IdentityProviderUnavailableError(type(error).__name__) from error
        except Exception as error:
            # The SDK says "bad token" with PermissionError, PyJWT errors, KeyError (no `iss`),
            # IndexError (unknown `kid`) and bare Exception: whatever it raises, nothing was proven.
            raise NotAuthenticatedError(type(error).__name__) from error


def _in_own_thread(
    make: Callable[[], Coroutine[Any, Any, _T]], slots: threading.BoundedSemaphore
) -> asyncio.Future[_T]:
    """Run the coroutine `make()` builds on a fresh event loop in a daemon thread; frees a slot after.

    A daemon thread, not an executor: a key fetch that hangs forever must neither hold up the
    process's exit nor take a worker of the default executor, which the SDK's outbound sends use.
    """
    outcome: concurrent.futures.Future[_T] = concurrent.futures.Future()
    outcome.set_running_or_notify_cancel()  # a timed-out wait then leaves the thread's result unread

    def run() -> None:
        try:
            outcome.set_result(asyncio.run(make()))
        except Exception as error:
            outcome.set_exception(error)
        finally:
            slots.release()

    thread = threading.Thread(target=run, name="bot-authenticate", daemon=True)
    try:
        thread.start()
    except RuntimeError:
        slots.release()
        raise
    return asyncio.wrap_future(outcome)


def messages_route(adapter: CloudAdapter, bot: Bot) -> web.RouteDef:
    """The route to add to the app."""
    authenticator = BoundedAuthenticator(adapter.bot_framework_authentication)

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
        if not _well_formed_ids(body):
            return _error(400, "activity ids are missing or malformed")
        auth_header = request.headers.get("Authorization", "")
        try:
            authenticated = await authenticator.authenticate(activity, auth_header)
        except NotAuthenticatedError as error:
            logger.info("request not authenticated", extra={"reason": str(error)})
            return _error(401, "not authorised")
        except IdentityProviderUnavailableError as error:
            logger.warning("cannot check tokens now: identity provider unavailable", extra={"reason": str(error)})
            return _error(503, "authentication unavailable, retry later", retry_after=RETRY_AFTER_SECONDS)
        invoke_response = await adapter.process_activity(authenticated, activity, bot.on_turn)
        if invoke_response is None:
            return web.Response(status=201)
        if invoke_response.body is None:
            return web.Response(status=int(invoke_response.status or 200))
        return web.json_response(invoke_response.body, status=int(invoke_response.status or 200))

    return web.post("/api/messages", handle)


def _well_formed_ids(body: dict[str, Any]) -> bool:
    """conversation.id and from.id are short strings; id and replyToId, when present, too.

    They end up in connector URLs and headers: junk there fails deep inside the SDK instead of here.
    """
    conversation, sender = body.get("conversation"), body.get("from")
    for holder in (conversation, sender):
        if not isinstance(holder, dict) or not _short_text(holder.get("id"), 1024):
            return False
    return all(body.get(key) is None or _short_text(body.get(key), 256) for key in ("id", "replyToId"))


def _short_text(value: object, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable() and value.isascii()


def _error(status: int, message: str, *, retry_after: int | None = None) -> web.Response:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return web.json_response({"error": {"message": message}}, status=status, headers=headers)


def _depth(node: Any, level: int = 1) -> int:
    """Nesting depth of parsed JSON, stopping early once past the limit."""
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(node, dict):
        return max((_depth(value, level + 1) for value in node.values()), default=level)
    if isinstance(node, list):
        return max((_depth(value, level + 1) for value in node), default=level)
    return level
