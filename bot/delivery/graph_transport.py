"""Delivery through Microsoft Graph `sendMail`, as the bot's own mailbox, with an Entra ID token.

For tenants without an SMTP relay: the app registration (or managed identity) needs the `Mail.Send`
application permission, scoped to the sending mailbox by an application access policy. The
transport does not retry: the outbox worker does, using `transient` and `retry_after`.

The mail goes in Graph's JSON form, parsed here from the bytes every other transport sends as they
are: only the JSON form carries `saveToSentItems` (docs/verwerkers.md, an open question for the DPO).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email
import email.policy
import email.utils
import json
import math
import re
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential

from bot.delivery.mail_message import OutgoingMail
from bot.delivery.mail_transport import MailDeliveryError

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
_MAX_REQUEST_BYTES = 4 * 1024 * 1024  # sendMail's request limit; bigger attachments need an upload session
_RETRY_AFTER_STATUSES = frozenset({429, 503, 504})
_IMPORTANCES = frozenset({"low", "normal", "high"})  # RFC 2156's `Importance`, as Graph's `importance` spells them
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.]{1,64}$")
_SENDER = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+$|^[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}$")

_REFUSALS = {
    400: "the request or a recipient address is invalid",
    401: "the token was not accepted; check the app registration or managed identity",
    403: "check the Mail.Send permission and the application access policy for the sending mailbox",
    404: "the sending mailbox does not exist or has no Exchange Online mailbox",
}
_CHECK_REFUSALS = {
    401: "the token was not accepted; check the app registration or managed identity",
    403: "reading the sending mailbox's user needs User.ReadBasic.All (or User.Read.All) for the app",
    404: "the sending mailbox does not exist",
}

SessionFactory = Callable[[], aiohttp.ClientSession]


class GraphMailTransport:
    """`POST /v1.0/users/{sender}/sendMail` with the message as Graph JSON; 202 means accepted.

    One `aiohttp.ClientSession` is made on first use and kept until `close()`. The credential
    belongs to the caller, who closes it.
    """

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        sender: str,
        base_url: str = "https://graph.microsoft.com",
        ca_file: Path | None = None,
        session_factory: SessionFactory | None = None,
        timeout_seconds: float = 30,
    ) -> None:
        if not base_url.startswith("https://"):
            raise ValueError("the Graph base URL must start with https://")
        if not _SENDER.match(sender):
            raise ValueError("the Graph sender must be the sending mailbox's plain address or its object id")
        if timeout_seconds <= 0:
            raise ValueError("the Graph timeout must be positive")
        if ca_file is not None and session_factory is not None:
            raise ValueError("give either ca_file or session_factory, not both")
        self._credential = credential
        self._sender = sender
        self._user_url = f"{base_url.rstrip('/')}/v1.0/users/{quote(sender, safe='@')}"
        self._timeout = timeout_seconds
        self._ssl: ssl.SSLContext | bool = verifying_context(ca_file) if ca_file is not None else True
        self._session_factory = session_factory
        self._session: aiohttp.ClientSession | None = None

    async def send(self, mail: OutgoingMail) -> None:
        """Send once; any answer but 202 raises MailDeliveryError."""
        message = email.message_from_bytes(mail.data, policy=email.policy.default)
        if not isinstance(message, EmailMessage):  # the default policy's factory makes one; for mypy
            raise MailDeliveryError("message could not be read", transient=False)
        payload = json.dumps(graph_message(message)).encode("utf-8")
        if len(payload) > _MAX_REQUEST_BYTES:
            raise MailDeliveryError("mail too large for Graph sendMail (over 4 MB)", transient=False)
        status, headers, body = await self._request(
            "POST", f"{self._user_url}/sendMail", data=payload, content_type="application/json"
        )
        if status == 202:
            return
        raise _status_error("Graph refused the mail", status, headers, body, _REFUSALS)

    async def check(self) -> str:
        """A token for Graph, and `GET /users/{sender}`: sends nothing.

        This proves the credential and the mailbox, not `Mail.Send` itself: Graph has no way to test a
        send permission without sending.
        """
        status, headers, body = await self._request("GET", self._user_url)
        if status == 200:
            return f"Microsoft Graph reachable, token accepted, mailbox {self._sender} found"
        raise _status_error("Graph refused the mailbox lookup", status, headers, body, _CHECK_REFUSALS)

    async def close(self) -> None:
        """Close the HTTP session (not the credential)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _request(
        self, method: str, url: str, *, data: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        token = await self._token()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client().request(method, url, data=data, headers=headers) as response:
                    body = await response.read() if response.status >= 300 else b""
                    return response.status, dict(response.headers), body
        except aiohttp.ClientConnectorCertificateError as error:
            raise MailDeliveryError("Graph server certificate not trusted", transient=False) from error
        except aiohttp.ClientSSLError as error:
            raise MailDeliveryError("TLS handshake with Graph failed", transient=False) from error
        except TimeoutError as error:
            raise MailDeliveryError("Graph did not answer in time", transient=True) from error
        except (aiohttp.ClientError, OSError) as error:
            raise MailDeliveryError(f"Graph not reachable ({type(error).__name__})", transient=True) from error

    async def _token(self) -> str:
        """Bounded (an unreachable identity endpoint may otherwise take minutes), and never a refusal.

        azure-identity raises ClientAuthenticationError also when the identity endpoint answers
        503/429/500 or is not listening yet (a new instance): Graph never saw the mail, so it is
        retried, up to the horizon. A real misconfiguration shows in `python -m bot check` and the log.
        """
        try:
            async with asyncio.timeout(self._timeout):
                access = await self._credential.get_token(GRAPH_SCOPE)
        except TimeoutError as error:
            reason = "no Graph token: the identity endpoint did not answer in time"
            raise MailDeliveryError(reason, transient=True) from error
        except Exception as error:  # the type only: azure-identity's message names endpoints and ids
            raise MailDeliveryError(f"no Graph token ({type(error).__name__})", transient=True) from error
        return access.token

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self._session_factory is not None:
                self._session = self._session_factory()
            else:
                self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl))
        return self._session


def graph_message(message: EmailMessage) -> dict[str, Any]:
    """The sendMail request body: subject, plain-text body, To recipients, file attachments, Message-ID, importance.

    Graph sends only what this body holds, not the message's other headers: `Importance` (the breach report's
    `high`) goes as the message's `importance`, or Outlook shows the mail at normal importance.
    """
    recipients = [address for _, address in email.utils.getaddresses(message.get_all("To", [])) if address]
    if not recipients:
        raise MailDeliveryError("message has no To recipient", transient=False)
    body_part = message.get_body(preferencelist=("plain",))
    body = body_part.get_content() if body_part is not None else ""
    attachments = []
    for part in message.iter_attachments():
        content = part.get_content()
        if isinstance(content, str):
            content = content.encode("utf-8")
        if not isinstance(content, bytes):
            raise MailDeliveryError("message has an attachment that is not a file", transient=False)
        attachments.append(
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": part.get_filename() or "attachment",
                "contentType": part.get_content_type(),
                "contentBytes": base64.b64encode(content).decode("ascii"),
            }
        )
    graph: dict[str, Any] = {
        "subject": str(message.get("Subject", "")),
        "body": {"contentType": "Text", "content": body},
        "toRecipients": [{"emailAddress": {"address": address}} for address in recipients],
        "attachments": attachments,
    }
    message_id = message.get("Message-ID")
    if message_id:
        graph["internetMessageId"] = str(message_id).strip()
    importance = str(message.get("Importance", "")).strip().lower()
    if importance in _IMPORTANCES:
        graph["importance"] = importance
    return {"message": graph, "saveToSentItems": True}


def _status_error(
    what: str, status: int, headers: dict[str, str], body: bytes, refusals: dict[int, str]
) -> MailDeliveryError:
    """Status plus Graph's error code (a fixed identifier); Graph's message text may quote addresses."""
    code = graph_error_code(body)
    label = f"{status} {code}" if code else str(status)
    if status in refusals:
        return MailDeliveryError(f"{what}: {label} — {refusals[status]}", transient=False)
    if status in _RETRY_AFTER_STATUSES or status >= 500 or status == 408:
        kind = "throttled" if status == 429 else "temporarily unavailable"
        return MailDeliveryError(f"{what}: {label} — {kind}", transient=True, retry_after=_retry_after(headers))
    return MailDeliveryError(f"{what}: {label} — unexpected answer", transient=False)


def graph_error_code(body: bytes) -> str | None:
    """Graph's error code (a fixed identifier, safe to log); never its message, which may quote addresses."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.match(code) else None


def _retry_after(headers: dict[str, str]) -> float | None:
    """`Retry-After` as seconds or an HTTP date; None when absent or unreadable."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def verifying_context(ca_file: Path) -> ssl.SSLContext:
    """A TLS context that trusts the system's CAs and `ca_file` (a local Graph stand-in's CA)."""
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as error:
        raise ValueError("Graph CA file cannot be read as PEM certificates") from error
    return context
