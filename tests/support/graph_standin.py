"""A local Microsoft Graph stand-in (HTTPS, `trustme` certificate) for sendMail and group membership.

Implements `POST /v1.0/users/{sender}/sendMail`, `GET /v1.0/users/{sender}` and
`POST /v1.0/users/{id}/checkMemberGroups` (answered from `memberships`, which each test sets), checks
the bearer token, validates the sendMail and checkMemberGroups shapes the way Graph does (a malformed
request gets 400 and a recorded problem), and can be told to answer the next N requests with any
status (429 with Retry-After, ...) or to answer membership questions slowly (`membership_delay`).

    async with graph_standin() as graph, StaticTokenCredential(graph.token) as credential:
        transport = GraphMailTransport(credential, sender=graph.sender, base_url=graph.base_url,
                                       ca_file=graph.ca_path)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import ssl
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import trustme
from aiohttp import web
from azure.core.credentials import AccessToken

HOST = "127.0.0.1"
DEFAULT_TOKEN = "graph-test-token-5f1c"
DEFAULT_SENDER = "doorverwijzen@kindengezin.be"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class GraphRequest:
    """One request as the stand-in received it."""

    method: str
    path: str
    authorization: str | None
    body: Any  # parsed JSON, None for a GET or a body that is not JSON


@dataclass(frozen=True)
class _ScriptedAnswer:
    status: int
    retry_after: str | None


class GraphStandIn:
    """Answers like Graph and keeps every request; `answer_next` scripts failures."""

    def __init__(self, *, token: str, senders: set[str], ca_path: Path) -> None:
        self.token = token
        self.senders = {sender.lower() for sender in senders}
        self.ca_path = ca_path
        self.base_url = ""  # set once listening
        self.requests: list[GraphRequest] = []
        self.problems: list[str] = []  # why a sendMail body was refused as malformed
        self._script: deque[_ScriptedAnswer] = deque()
        self._accepted: list[GraphRequest] = []
        #: user object id -> the group and team ids they are a member of (checkMemberGroups); others: none.
        self.memberships: dict[str, set[str]] = {}
        #: Seconds checkMemberGroups waits before it answers (a slow directory).
        self.membership_delay = 0.0
        #: User ids the directory does not have: checkMemberGroups answers 404 Request_ResourceNotFound.
        self.unknown_users: set[str] = set()

    @property
    def sender(self) -> str:
        """The (first) mailbox the stand-in knows."""
        return sorted(self.senders)[0]

    @property
    def membership_checks(self) -> list[GraphRequest]:
        """The checkMemberGroups requests received (answered or not)."""
        return [request for request in self.requests if request.path.endswith("/checkMemberGroups")]

    @property
    def sent(self) -> list[dict[str, Any]]:
        """The `message` objects of sendMail requests answered 202."""
        return [request.body["message"] for request in self._accepted]

    def answer_next(self, status: int, count: int = 1, *, retry_after: str | None = None) -> None:
        """Answer the next `count` authenticated requests with `status` (and `Retry-After`)."""
        self._script.extend([_ScriptedAnswer(status, retry_after)] * count)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1.0/users/{sender}/sendMail", self._send_mail)
        app.router.add_get("/v1.0/users/{sender}", self._get_user)
        app.router.add_post("/v1.0/users/{user}/checkMemberGroups", self._check_member_groups)
        return app

    async def _check_member_groups(self, request: web.Request) -> web.StreamResponse:
        """`{"value": [...]}`: the asked ids the user is in, as Graph answers (transitive membership is the test's)."""
        recorded, refusal = await self._receive(request, mailbox=False)
        if refusal is not None:
            return refusal
        if self.membership_delay:
            await asyncio.sleep(self.membership_delay)
        group_ids = recorded.body.get("groupIds") if isinstance(recorded.body, dict) else None
        if (not isinstance(group_ids, list) or not 0 < len(group_ids) <= 20
                or not all(isinstance(group, str) and _GUID.match(group) for group in group_ids)):
            self.problems.append("checkMemberGroups: groupIds must be a list of 1 to 20 GUIDs")
            return _error(400, "Request_BadRequest", "Invalid groupIds.")
        user = request.match_info["user"].lower()
        if user in self.unknown_users:
            return _error(404, "Request_ResourceNotFound", f"Resource '{user}' does not exist.")
        member_of = {group.lower() for group in self.memberships.get(user, set())}
        return web.json_response({"value": [group for group in group_ids if group.lower() in member_of]})

    async def _send_mail(self, request: web.Request) -> web.StreamResponse:
        recorded, refusal = await self._receive(request)
        if refusal is not None:
            return refusal
        problems = sendmail_problems(recorded.body)
        if problems:
            self.problems.extend(problems)
            return _error(400, "ErrorInvalidRequest", "; ".join(problems))
        self._accepted.append(recorded)
        return web.Response(status=202)

    async def _get_user(self, request: web.Request) -> web.StreamResponse:
        _, refusal = await self._receive(request)
        if refusal is not None:
            return refusal
        sender = request.match_info["sender"]
        return web.json_response({"id": "00000000-0000-0000-0000-0000000000b0", "mail": sender})

    async def _receive(
        self, request: web.Request, *, mailbox: bool = True
    ) -> tuple[GraphRequest, web.StreamResponse | None]:
        """Record the request; return the answer when auth, the script or (for mail) the mailbox says no."""
        body: Any = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = None
        recorded = GraphRequest(request.method, request.path, request.headers.get("Authorization"), body)
        self.requests.append(recorded)
        if recorded.authorization != f"Bearer {self.token}":
            return recorded, _error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
        if self._script:
            scripted = self._script.popleft()
            return recorded, _scripted(scripted, body)
        sender = request.match_info.get("sender", "")
        if mailbox and sender.lower() not in self.senders:
            return recorded, _error(404, "ErrorInvalidUser", f"The requested user '{sender}' is invalid.")
        return recorded, None


def sendmail_problems(body: Any) -> list[str]:
    """What Graph would refuse in a sendMail body (only the parts the transport fills in)."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        return ["body must be a JSON object with a 'message' object"]
    problems = []
    if not isinstance(body.get("saveToSentItems", True), bool):
        problems.append("saveToSentItems must be a boolean")
    message = body["message"]
    if not isinstance(message.get("subject"), str) or not message["subject"]:
        problems.append("message.subject missing")
    content = message.get("body")
    if not isinstance(content, dict) or content.get("contentType") not in ("Text", "HTML"):
        problems.append("message.body.contentType must be Text or HTML")
    elif not isinstance(content.get("content"), str):
        problems.append("message.body.content must be a string")
    recipients = message.get("toRecipients")
    if not isinstance(recipients, list) or not recipients:
        problems.append("message.toRecipients must be a non-empty list")
    else:
        for recipient in recipients:
            address = recipient.get("emailAddress", {}).get("address") if isinstance(recipient, dict) else None
            if not isinstance(address, str) or "@" not in address:
                problems.append("a recipient has no emailAddress.address")
    for attachment in message.get("attachments", []):
        problems.extend(_attachment_problems(attachment))
    message_id = message.get("internetMessageId")
    if message_id is not None and not (isinstance(message_id, str) and message_id.startswith("<")):
        problems.append("internetMessageId must look like <id@domain>")
    return problems


def _attachment_problems(attachment: Any) -> list[str]:
    if not isinstance(attachment, dict):
        return ["an attachment is not an object"]
    problems = []
    if attachment.get("@odata.type") != "#microsoft.graph.fileAttachment":
        problems.append("attachment @odata.type must be #microsoft.graph.fileAttachment")
    if not isinstance(attachment.get("name"), str) or not attachment["name"]:
        problems.append("attachment name missing")
    if not isinstance(attachment.get("contentType"), str):
        problems.append("attachment contentType missing")
    try:
        base64.b64decode(attachment.get("contentBytes", ""), validate=True)
    except (binascii.Error, TypeError, ValueError):
        problems.append("attachment contentBytes is not base64")
    return problems


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


_SCRIPTED_CODES = {
    400: "ErrorInvalidRecipients",
    401: "InvalidAuthenticationToken",
    403: "ErrorAccessDenied",
    404: "ErrorInvalidUser",
    429: "ApplicationThrottled",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def _scripted(answer: _ScriptedAnswer, body: Any) -> web.Response:
    if answer.status < 300:
        return web.Response(status=answer.status)
    headers = {"Retry-After": answer.retry_after} if answer.retry_after is not None else None
    # Like Graph, quote the recipient in the message text: the transport must not pass that on.
    recipients = []
    if isinstance(body, dict) and isinstance(body.get("message"), dict):
        for recipient in body["message"].get("toRecipients", []):
            recipients.append(str(recipient.get("emailAddress", {}).get("address")))
    text = f"Request for {', '.join(recipients) or 'the user'} could not be processed."
    return _error(answer.status, _SCRIPTED_CODES.get(answer.status, "generalException"), text, headers)


class StaticTokenCredential:
    """An azure-identity style async credential that always returns the same token."""

    def __init__(self, token: str = DEFAULT_TOKEN) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []
        self.closed = False

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> StaticTokenCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()


@dataclass
class ManagedIdentityStandIn:
    """An App Service style managed identity endpoint: set IDENTITY_ENDPOINT and IDENTITY_HEADER to
    these values and azure-identity's real `ManagedIdentityCredential` gets `token` from it."""

    endpoint: str
    header: str
    token: str
    resources: list[str]


@asynccontextmanager
async def managed_identity_standin(
    token: str = DEFAULT_TOKEN, header: str = "identity-header-test"
) -> AsyncIterator[ManagedIdentityStandIn]:
    """Plain HTTP on 127.0.0.1, like the real endpoint; answers only requests that carry `header`."""
    standin = ManagedIdentityStandIn(endpoint="", header=header, token=token, resources=[])

    async def issue(request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != header:
            return web.json_response({"error": "invalid_request"}, status=400)
        resource = request.query.get("resource", "")
        standin.resources.append(resource)
        expires_on = str(int(time.time()) + 3600)
        return web.json_response(
            {"access_token": token, "expires_on": expires_on, "resource": resource, "token_type": "Bearer"}
        )

    app = web.Application()
    app.router.add_get("/msi/token", issue)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        standin.endpoint = f"http://{HOST}:{runner.addresses[0][1]}/msi/token"
        yield standin
    finally:
        await runner.cleanup()


@asynccontextmanager
async def graph_standin(*, token: str = DEFAULT_TOKEN, senders: set[str] | None = None) -> AsyncIterator[GraphStandIn]:
    """A listening stand-in on 127.0.0.1 with its own CA (`ca_path`); shut down on exit."""
    with tempfile.TemporaryDirectory(prefix="graph-test-") as folder:
        ca = trustme.CA()
        ca_path = Path(folder) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(HOST, "localhost").configure_cert(context)
        standin = GraphStandIn(token=token, senders=senders or {DEFAULT_SENDER}, ca_path=ca_path)
        runner = web.AppRunner(standin.app())
        await runner.setup()
        try:
            site = web.TCPSite(runner, HOST, 0, ssl_context=context)
            await site.start()
            port = runner.addresses[0][1]
            standin.base_url = f"https://{HOST}:{port}"
            yield standin
        finally:
            await runner.cleanup()
