"""`POST /api/messages`: the bot's own route in front of the Agents SDK adapter.

It reads the whole body however it arrives (several TCP segments, `Content-Length` or chunked),
checks its size, JSON depth and shape, refuses activities from any channel but Microsoft Teams
(identity and tenant come from fields only Teams guarantees), authenticates the request when the
bot has an app id (401 for a token that proves nothing, 503 when the signing keys cannot be had in
time), runs the turn, and writes the invoke's answer itself. Malformed input gets a 4xx with a
short reason, never a 500; a body cut off by its sender is one INFO line and counted as 499.

A typed message (any activity but an invoke) that Teams sends again, with the id of one that arrived
before on any instance, is answered 202 without a turn (`bot.storage.activity_receipts`): "nieuw" ran
twice. Unless that turn's process died before the turn was done: then the copy runs. An invoke's copy
runs again: Teams needs its answer, and each step is a compare-and-set.

At most `turns_at_once` turns run side by side; a request past them is read and checked, then waits
for a place, first come first served. asyncio gives every task in progress a step in turn, so each
await of the mail and Teams-message workers waits for a step of every turn in progress: with twenty
clicks at once a mail queued by "Verstuur" took ~0.3 s to reach the relay after its click was answered,
and ~0.03 s with eight places. The clicks themselves take no longer: one core does the same work in
either order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pydantic
from aiohttp import web
from microsoft_agents.activity import Activity
from microsoft_agents.hosting.aiohttp import CloudAdapter
from microsoft_agents.hosting.core import ActivityHandler, ClaimsIdentity

from bot.clock import Clock
from bot.core.metrics import ANSWER_CAUSE, Metrics
from bot.storage.activity_receipts import ActivityReceipts
from bot.storage.database import DatabaseError
from bot.teams.handler import InvokeAnswerBody
from bot.teams.token_validation import IdentityProviderUnavailableError, NotAuthenticatedError, TokenValidator

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024  # a Teams activity is far smaller; a card is at most 40 KB
MAX_JSON_DEPTH = 32
TEAMS_CHANNEL = "msteams"
RETRY_AFTER_SECONDS = 10
#: The answer recorded for a request whose sender went away before its body was whole (nginx's "client closed").
CLIENT_CLOSED_REQUEST = 499
#: The cause of a 503 while the Bot Framework's signing keys cannot be fetched (`vd.http.responses`' `cause`): not
#: the bot's own failure, so the *server-errors* alert leaves it out and *teams-keys-unavailable* counts it.
SIGNING_KEYS_UNAVAILABLE = "signing_keys_unavailable"
#: At a stop, how long the receipts of the turns it cut off may take to be taken back.
FORGET_WAIT_SECONDS = 2.0


class BodyTooLargeError(Exception):
    """More than MAX_BODY_BYTES arrived."""


async def read_whole_body(request: web.Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """Every byte of the body, until the end of the stream, whatever the segmentation; at most `limit`.

    `StreamReader.read(n)` returns what has arrived so far, not n bytes: one call loses the rest
    of a body that comes in two TCP segments.
    """
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLargeError
    body = bytearray()
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise BodyTooLargeError


def messages_route(
    adapter: CloudAdapter,
    handler: ActivityHandler,
    validator: TokenValidator | None,
    *,
    turns_at_once: int,
    metrics: Metrics,
    arrivals: ActivityArrivals | None = None,
) -> web.RouteDef:
    """The route to add to the app; `validator` is None when authentication is off (no app id).

    `arrivals` recognises the copies Teams sends again; None runs every copy.
    """
    places = asyncio.Semaphore(turns_at_once)  # first come, first served

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/json":
            return _error(415, "Content-Type must be application/json")
        try:
            raw = await read_whole_body(request)
        except BodyTooLargeError:
            return _error(413, "request body too large")
        except ConnectionResetError:  # aiohttp.ClientConnectionResetError too: the sender went away mid-body
            # Nobody waits for this answer and the bot did nothing wrong: not a traceback, not a 5xx for the alert.
            logger.info("request body cut off: the sender closed the connection")
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return _error(400, "body is not JSON")
        if not isinstance(body, dict) or _depth(body) > MAX_JSON_DEPTH:
            return _error(400, "body is not an activity")
        problem = _shape_problem(body)
        if problem is not None:
            return _error(400, problem)
        try:
            activity = Activity.model_validate(body)
        except (pydantic.ValidationError, TypeError, ValueError):
            return _error(400, "body is not an activity")
        claims: dict[str, Any] = {}
        if validator is None and "Authorization" in request.headers:
            # A token sent to a bot that cannot check it: the deployment lacks its app id. Say so.
            return _error(401, "not authorised")
        if validator is not None:
            try:
                claims = await validator.validate(request.headers.get("Authorization", ""), channel_id=TEAMS_CHANNEL,
                                                  service_url=str(body["serviceUrl"]))
            except NotAuthenticatedError as error:
                if error.signed_refusal is None and not error.advice:
                    logger.info("request not authenticated", extra={"reason": str(error)})
                elif error.signed_refusal is None:  # unproven, so not counted for the alert
                    logger.warning("%s", error.advice, extra={"reason": str(error)})
                else:  # a real Teams request, refused: likely every one is (see NotAuthenticatedError)
                    logger.warning("a request the Bot Framework signed was refused (401): %s", error.advice,
                                   extra={"reason": error.signed_refusal})
                    metrics.auth_refused(error.signed_refusal)
                return _error(401, "not authorised")
            except IdentityProviderUnavailableError as error:
                logger.warning("cannot check tokens now: identity provider unavailable", extra={"reason": str(error)})
                metrics.auth_unavailable()
                request[ANSWER_CAUSE] = SIGNING_KEYS_UNAVAILABLE
                return _error(503, "authentication unavailable, retry later", retry_after=RETRY_AFTER_SECONDS)
        identity = ClaimsIdentity(claims, authentication_type="Bearer" if claims else "anonymous")
        key = _receipt_key(activity) if arrivals is not None else None
        if arrivals is not None and key is not None and not await arrivals.first(key):
            logger.info("activity arrived before: not run again", extra={"activity_type": activity.type[:32]})
            return web.Response(status=202)
        arrived = time.monotonic()
        try:
            async with places:
                metrics.turn_waited(time.monotonic() - arrived)
                invoke_response = await adapter.process_activity(identity, activity, handler.on_turn)
        except BaseException:
            if arrivals is not None and key is not None:
                arrivals.forget(key)  # Teams' retry of a turn that failed (or a stop cut off) must run
            raise
        if arrivals is not None and key is not None:
            await arrivals.done(key)
        if activity.type != "invoke":
            return web.Response(status=202)
        if invoke_response is None or invoke_response.body is None:
            return web.Response(status=int(invoke_response.status if invoke_response else 501))
        body = invoke_response.body
        content = body.content if isinstance(body, InvokeAnswerBody) else body
        return web.json_response(content, status=int(invoke_response.status or 200))

    return web.post("/api/messages", handle)


class ActivityArrivals:
    """`ActivityReceipts` for the route: a database out of reach runs the turn (it says "probeer zo opnieuw").

    A failed turn's receipt is taken back in a task of its own, which `close()` waits for before the
    database closes: a stop cancels a turn still waiting, and its cancellation must not cut the delete.
    """

    def __init__(self, receipts: ActivityReceipts, clock: Clock) -> None:
        self._receipts = receipts
        self._clock = clock
        self._forgetting: set[asyncio.Task[None]] = set()

    async def first(self, key: tuple[str, str]) -> bool:
        try:
            return await self._receipts.first_arrival(*key, self._clock.now())
        except DatabaseError as error:
            logger.warning("cannot tell whether an activity arrived before; it runs: %s", error)
            return True

    async def done(self, key: tuple[str, str]) -> None:
        """The turn ran to its end: its copies are not run, also when this process dies next."""
        try:
            await self._receipts.done(*key)
        except DatabaseError as error:
            logger.warning("a turn's receipt still names this process; should it die, a copy runs: %s", error)

    def forget(self, key: tuple[str, str]) -> None:
        task = asyncio.create_task(self._forget(key))
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)

    async def _forget(self, key: tuple[str, str]) -> None:
        try:
            await self._receipts.forget(*key)
        except DatabaseError as error:
            logger.warning("a failed turn's receipt stays; Teams' retry of it is not run: %s", error)

    async def close(self) -> None:
        """Wait (briefly) for the receipts being taken back."""
        if self._forgetting:
            await asyncio.wait(set(self._forgetting), timeout=FORGET_WAIT_SECONDS)


def _receipt_key(activity: Activity) -> tuple[str, str] | None:
    """(conversation id, activity id) of an activity whose copies are not run again; None for an invoke."""
    if activity.type == "invoke" or not activity.id or activity.conversation is None or not activity.conversation.id:
        return None
    return str(activity.conversation.id), str(activity.id)


def _shape_problem(body: dict[str, Any]) -> str | None:
    """What makes the parsed body no Teams activity the bot can answer, or None."""
    if not isinstance(body.get("type"), str) or not body["type"]:
        return "activity has no type"
    if body.get("channelId") != TEAMS_CHANNEL:
        return "only Microsoft Teams activities are accepted"
    service_url = body.get("serviceUrl")
    if not isinstance(service_url, str) or not service_url.startswith(("http://", "https://")) \
            or not _short_text(service_url, 1024):
        return "activity has no serviceUrl"
    if not _well_formed_ids(body):
        return "activity ids are missing or malformed"
    return None


def _well_formed_ids(body: dict[str, Any]) -> bool:
    """conversation.id, from.id and recipient.id are short strings; id and replyToId, when present, too.

    They end up in connector URLs and headers: junk there fails deep inside the SDK instead of here.
    """
    conversation, sender, recipient = body.get("conversation"), body.get("from"), body.get("recipient")
    for holder in (conversation, sender, recipient):
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
