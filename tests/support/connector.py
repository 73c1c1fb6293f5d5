"""A local stand-in for the Bot Framework connector: records what the bot sends to Teams."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class RecordedCall:
    """One request the bot made to the connector."""

    method: str
    path: str
    body: dict[str, Any]
    peer_port: int = 0  # the bot's side of the TCP connection: equal ports mean a reused connection
    authorization: str | None = None
    answered_id: str | None = None  # the activity id the stand-in gave in its answer


@dataclass
class ConnectorStandIn:
    """Answers like the connector does and keeps every call for the test to inspect."""

    calls: list[RecordedCall] = field(default_factory=list)
    #: Requests answered 2xx: what Teams accepted (and shows).
    accepted: list[RecordedCall] = field(default_factory=list)
    #: While set, every request is held without an answer (a connector that hangs).
    hanging: bool = False
    #: Seconds each request is held before it is answered: Teams has taken the message, the bot hears so later.
    answer_after: float = 0.0
    #: While set, every request waits for `let_go()` and is then answered as usual (a slow connector).
    holding: bool = False
    #: Requests waiting now because of `holding`.
    held: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _failures: list[tuple[int, str | None, str]] = field(default_factory=list)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _let_go: asyncio.Event = field(default_factory=asyncio.Event)

    def fail_next(self, status: int, *, count: int = 1, retry_after: str | None = None, path: str = "") -> None:
        """Answer the next `count` requests (whose path contains `path`) with `status` (and Retry-After)."""
        self._failures.extend([(status, retry_after, path)] * count)

    def release(self) -> None:
        """End the hang: held requests are dropped (their callers see the connection end)."""
        self.hanging = False
        self._released.set()

    def let_go(self) -> None:
        """End `holding`: the requests it holds, and every one after, are answered."""
        self.holding = False
        self._let_go.set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {}
        if request.can_read_body:
            body = await request.json()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        call = RecordedCall(request.method, request.path, body, int(peer[1]) if peer else 0,
                            request.headers.get("Authorization"))
        self.calls.append(call)
        if self.hanging:
            await self._released.wait()
            raise ConnectionResetError("the connector hung up")
        if self.holding:
            self.held += 1
            try:
                await self._let_go.wait()
            finally:
                self.held -= 1
        failure = next((f for f in self._failures if f[2] in request.path), None)
        if failure is not None:
            self._failures.remove(failure)
            status, retry_after, _ = failure
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return web.json_response({"error": {"code": "Throttled", "message": "slow down"}}, status=status,
                                     headers=headers)
        self.accepted.append(call)
        if self.answer_after:
            await asyncio.sleep(self.answer_after)
        if request.method == "GET" and "/members/" in request.path:
            member = request.path.rsplit("/", 1)[-1]
            return web.json_response({"id": member, "name": "Member", "aadObjectId": member})
        call.answered_id = f"activity-{next(self._ids)}"
        return web.json_response({"id": call.answered_id})

    def sent_activities(self) -> list[dict[str, Any]]:
        """Bodies of every message the bot posted or updated."""
        return [call.body for call in self.calls if call.method in ("POST", "PUT")]

    def sent_cards(self) -> list[dict[str, Any]]:
        """Every Adaptive Card content the bot posted or updated."""
        found = []
        for activity in self.sent_activities():
            for attachment in activity.get("attachments") or []:
                if attachment.get("contentType") == "application/vnd.microsoft.card.adaptive":
                    found.append(attachment["content"])
        return found
