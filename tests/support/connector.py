"""A local stand-in for the Bot Framework connector: records what the bot sends to Teams."""

from __future__ import annotations

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


@dataclass
class ConnectorStandIn:
    """Answers like the connector does and keeps every call for the test to inspect."""

    calls: list[RecordedCall] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _failures: list[tuple[int, str | None]] = field(default_factory=list)

    def fail_next(self, status: int, *, count: int = 1, retry_after: str | None = None) -> None:
        """Answer the next `count` requests with `status` (and Retry-After), as a throttled Teams would."""
        self._failures.extend([(status, retry_after)] * count)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {}
        if request.can_read_body:
            body = await request.json()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.calls.append(RecordedCall(request.method, request.path, body, int(peer[1]) if peer else 0))
        if self._failures:
            status, retry_after = self._failures.pop(0)
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return web.json_response({"error": {"code": "Throttled", "message": "slow down"}}, status=status,
                                     headers=headers)
        if request.method == "GET" and "/members/" in request.path:
            member = request.path.rsplit("/", 1)[-1]
            return web.json_response({"id": member, "name": "Member", "aadObjectId": member})
        return web.json_response({"id": f"activity-{next(self._ids)}"})

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
