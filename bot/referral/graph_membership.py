"""Group and team membership from Microsoft Graph: `POST /v1.0/users/{id}/checkMemberGroups`.

A Teams activity names the user's Entra object id and tenant, never their groups (and in the
personal chat not even a team), so a protocol that names its referrers by group or team needs the
directory. A team is a Microsoft 365 group whose id is the team's id, so both are checked the same
way. The app (the managed identity) needs the application permissions `GroupMember.Read.All` and
`User.Read.All` (infra/README.md). Tokens and HTTP as in `bot.delivery.graph_transport`.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError

from bot.delivery.graph_transport import GRAPH_SCOPE, graph_error_code, verifying_context
from bot.referral.referrers import MAX_GROUPS_PER_REQUEST, MembershipUnavailable

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HINTS = {
    401: "the token was not accepted; check the managed identity",
    403: "the app needs the application permissions GroupMember.Read.All and User.Read.All",
    429: "throttled",
}


class GraphMembershipChecker:
    """Implements `bot.referral.referrers.MembershipChecker` over Graph; the caller owns (and closes) the credential.

    One `aiohttp.ClientSession` is made on first use and kept until `close()`. Each call is bounded by
    `timeout_seconds` (the token included); `ReferrerAccess` bounds the whole lookup more tightly.
    """

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        base_url: str = "https://graph.microsoft.com",
        ca_file: Path | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        if not base_url.startswith("https://"):
            raise ValueError("the Graph base URL must start with https://")
        if timeout_seconds <= 0:
            raise ValueError("the Graph timeout must be positive")
        self._credential = credential
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout_seconds
        self._ssl: ssl.SSLContext | bool = verifying_context(ca_file) if ca_file is not None else True
        self._session: aiohttp.ClientSession | None = None

    async def member_of(self, user_id: str, group_ids: Sequence[str]) -> frozenset[str]:
        """The ids among `group_ids` Graph says the user is in (transitively); a user Graph does not know is in none."""
        if not 0 < len(group_ids) <= MAX_GROUPS_PER_REQUEST:
            raise ValueError(f"checkMemberGroups takes 1 to {MAX_GROUPS_PER_REQUEST} group ids")
        if not _GUID.match(user_id):
            raise ValueError("the user must be named by their Entra object id (a GUID)")
        url = f"{self._base_url}/v1.0/users/{user_id}/checkMemberGroups"
        try:
            async with asyncio.timeout(self._timeout):
                token = await self._token()
                headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
                async with self._client().post(url, json={"groupIds": list(group_ids)}, headers=headers) as response:
                    status, body = response.status, await response.read()
        except TimeoutError as error:
            raise MembershipUnavailable("Graph did not answer in time") from error
        except aiohttp.ClientSSLError as error:
            raise MembershipUnavailable("TLS with Graph failed (certificate not trusted?)") from error
        except (aiohttp.ClientError, OSError) as error:
            raise MembershipUnavailable(f"Graph not reachable ({type(error).__name__})") from error
        if status == 200:
            return _member_ids(body, group_ids)
        code = graph_error_code(body)
        if status == 404 and code == "Request_ResourceNotFound":
            return frozenset()  # no such user in this directory: a member of nothing here
        label = f"{status} {code}" if code else str(status)
        hint = _HINTS.get(status, "temporarily unavailable" if status >= 500 else "unexpected answer")
        raise MembershipUnavailable(f"Graph refused checkMemberGroups: {label} — {hint}")

    async def close(self) -> None:
        """Close the HTTP session (not the credential)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _token(self) -> str:
        try:
            access = await self._credential.get_token(GRAPH_SCOPE)
        except ClientAuthenticationError as error:  # includes CredentialUnavailableError: no identity here
            raise MembershipUnavailable(f"no Graph token ({type(error).__name__})") from error
        except Exception as error:  # network trouble and throttling at the identity endpoint
            raise MembershipUnavailable(f"no Graph token ({type(error).__name__})") from error
        return access.token

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl))
        return self._session


def _member_ids(body: bytes, asked: Sequence[str]) -> frozenset[str]:
    """`{"value": [ids]}`, kept to the ids asked about (Graph answers with the ids it was given)."""
    try:
        parsed = json.loads(body)
    except ValueError as error:
        raise MembershipUnavailable("Graph's checkMemberGroups answer is not JSON") from error
    value = parsed.get("value") if isinstance(parsed, dict) else None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise MembershipUnavailable("Graph's checkMemberGroups answer has no list of ids")
    wanted = {group.lower() for group in asked}
    return frozenset(item.lower() for item in value if item.lower() in wanted)
