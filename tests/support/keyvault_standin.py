"""A local Key Vault and managed-identity endpoint, so the real Azure SDK can be tested without Azure.

The vault speaks just enough of the REST API for `SecretClient.get_secret`: the 401 bearer challenge,
versioned secrets, Key Vault error bodies. Tests can rotate secrets, force failures, slow it down and
count what it was asked. See ../shared/PLATFORM.md for the SDK behaviour this relies on.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from azure.core.credentials import AccessToken
from azure.keyvault.secrets._shared import http_challenge_cache

from tests.support.local_tls import local_tls

TENANT_ID = "00000000-0000-0000-0000-0000000000aa"
VAULT_RESOURCE = "https://vault.azure.net"
DEFAULT_TOKEN = "test-token-for-the-vault-stand-in"
MANAGED_IDENTITY_TOKEN = "token-from-the-managed-identity-stand-in"
CHALLENGE = f'Bearer authorization="https://login.microsoftonline.com/{TENANT_ID}", resource="{VAULT_RESOURCE}"'


@dataclass
class SeenRequest:
    """One request as the vault saw it, and what it answered (None while it is still being answered)."""

    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    status: int | None = None


@dataclass
class _Forced:
    status: int
    retry_after: str | None


@dataclass
class KeyVaultStandIn:
    """State of a running vault stand-in; the test reads and changes it between calls."""

    url: str
    ca_path: Path
    token: str
    secrets: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # name -> [(version, value)]
    requests: list[SeenRequest] = field(default_factory=list)
    delay: float = 0.0
    disabled: set[str] = field(default_factory=set)  # versions disabled in the vault
    _forced: list[_Forced] = field(default_factory=list)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    def set_secret(self, name: str, value: str) -> str:
        """Add a new version of `name` (a rotation when it exists); returns the version id."""
        version = uuid.uuid4().hex
        self.secrets.setdefault(name, []).append((version, value))
        return version

    def disable(self, name: str, version: str | None = None) -> None:
        """Disable a version of `name` (the latest when None), as the portal's "Enabled: No" does."""
        self.disabled.add(version or self.secrets[name][-1][0])

    def fail_next(self, status: int, times: int = 1, *, retry_after: str | None = None) -> None:
        """Answer the next `times` authenticated requests with `status` (and Retry-After when given)."""
        self._forced.extend(_Forced(status, retry_after) for _ in range(times))

    @property
    def authenticated(self) -> list[SeenRequest]:
        """The requests that carried a bearer token: the ones that count as vault reads."""
        return [seen for seen in self.requests if seen.authorization is not None]

    @property
    def challenged(self) -> list[SeenRequest]:
        """The unauthenticated requests answered with the 401 challenge."""
        return [seen for seen in self.requests if seen.authorization is None and seen.status == 401]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = SeenRequest(request.method, request.path, dict(request.query), request.headers.get("Authorization"))
        self.requests.append(seen)  # on arrival, so a request the client gave up on still counts
        response = await self._answer(request, seen.authorization)
        seen.status = response.status
        return response

    async def _answer(self, request: web.Request, authorization: str | None) -> web.Response:
        if authorization is None:
            return _error(401, "Unauthorized", "AKV10000: Request is missing a Bearer token.", challenge=True)
        if authorization != f"Bearer {self.token}":
            return _error(401, "Unauthorized", "AKV10032: Invalid issuer or token.", challenge=True)
        if self.delay:
            await self._pause(self.delay)
        if self._forced:
            forced = self._forced.pop(0)
            headers = {"Retry-After": forced.retry_after} if forced.retry_after is not None else {}
            return _error(forced.status, _CODES.get(forced.status, "Error"), "Forced by the test.", headers=headers)
        name = request.match_info["name"]
        version = request.match_info["version"]
        versions = self.secrets.get(name)
        if not versions:
            return _error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")
        found = versions[-1] if not version else next((pair for pair in versions if pair[0] == version), None)
        if found is None:
            return _error(404, "SecretNotFound", f"A secret with (name/id) {name}/{version} was not found.")
        if found[0] in self.disabled:  # what Key Vault answers for a disabled secret: 403, inner code SecretDisabled
            return _error(403, "Forbidden", "Operation get is not allowed on a disabled secret.",
                          inner_code="SecretDisabled")
        return web.json_response(
            {
                "value": found[1],
                "id": f"{self.url}/secrets/{name}/{found[0]}",
                "attributes": {"enabled": True, "created": int(time.time()), "recoveryLevel": "Recoverable"},
            }
        )

    async def _pause(self, seconds: float) -> None:
        """Sleep like a slow vault, but let shutdown end the wait so cleanup stays fast."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)


_CODES = {
    403: "Forbidden",
    404: "SecretNotFound",
    429: "Throttled",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def _error(
    status: int, code: str, message: str, *, challenge: bool = False, headers: dict[str, str] | None = None,
    inner_code: str | None = None,
) -> web.Response:
    all_headers = dict(headers or {})
    if challenge:
        all_headers["WWW-Authenticate"] = CHALLENGE
    error: dict[str, Any] = {"code": code, "message": message}
    if inner_code is not None:
        error["innererror"] = {"code": inner_code}
    return web.json_response({"error": error}, status=status, headers=all_headers)


def clear_challenge_cache() -> None:
    """The SDK caches the vault's challenge per host:port for the whole process; tests start clean."""
    http_challenge_cache.clear()


@asynccontextmanager
async def _serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port: int = runner.addresses[0][1]  # the port the OS picked
    try:
        yield port
    finally:
        await runner.cleanup()


@asynccontextmanager
async def keyvault_standin(*, token: str = DEFAULT_TOKEN) -> AsyncIterator[KeyVaultStandIn]:
    """An HTTPS vault on a free 127.0.0.1 port whose certificate comes from a fresh test CA.

    Clients trust it with `connection_verify=str(standin.ca_path)` and must accept `token`.
    """
    with local_tls("keyvault-standin") as (server_context, ca_path):
        app = web.Application()
        holder: list[KeyVaultStandIn] = []

        async def handle(request: web.Request) -> web.StreamResponse:
            return await holder[0]._handle(request)

        app.router.add_get("/secrets/{name}/{version:[^/]*}", handle)
        clear_challenge_cache()
        async with _serve(app, server_context) as port:
            standin = KeyVaultStandIn(url=f"https://127.0.0.1:{port}", ca_path=ca_path, token=token)
            holder.append(standin)
            try:
                yield standin
            finally:
                standin._closing.set()
                clear_challenge_cache()


@dataclass
class ManagedIdentityStandIn:
    """The App Service managed-identity endpoint (IDENTITY_ENDPOINT + IDENTITY_HEADER)."""

    endpoint: str
    header: str
    token: str
    requests: list[dict[str, str]] = field(default_factory=list)
    #: Every token handed out, oldest first.
    issued: list[str] = field(default_factory=list)


#: Awaited with each token before the endpoint hands it out (a server that must accept it, or an
#: `aiohttp.web.HTTPException` raised: the endpoint's 503, 429, ...).
TokenHook = Callable[[str], Awaitable[None]]


@dataclass
class IdentityOutage:
    """The endpoint in trouble (`before_issue` is its `TokenHook`): `down` answers 503, `silent` answers nothing.

    A silent request stays open until `end()` (the test's end), then gets a 503, even when `silent` was
    cleared meanwhile (the endpoint answers again, a request lost in flight stays lost); no token is issued.
    """

    down: bool = False
    silent: bool = False
    _ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def before_issue(self, token: str) -> None:
        if self.silent:
            await self._ended.wait()
            raise web.HTTPServiceUnavailable()
        if self.down:
            raise web.HTTPServiceUnavailable(text='{"error": "busy"}', content_type="application/json")

    def end(self) -> None:
        self.down = self.silent = False
        self._ended.set()


#: What azure-identity reads besides IDENTITY_ENDPOINT/IDENTITY_HEADER: the test machine's values would win.
_OTHER_AZURE_VARIABLES = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "IDENTITY_SERVER_THUMBPRINT",
)


def use_managed_identity(monkeypatch: pytest.MonkeyPatch, endpoint: str, header: str) -> None:
    """Make `DefaultAzureCredential` ask this App Service identity endpoint alone; build the credential after."""
    for name in _OTHER_AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", header)


@asynccontextmanager
async def managed_identity_standin(
    *, token: str = MANAGED_IDENTITY_TOKEN, fresh_tokens: bool = False, refresh_in: int | None = None,
    on_issue: TokenHook | None = None,
) -> AsyncIterator[ManagedIdentityStandIn]:
    """An http endpoint handing out `token`, valid for an hour; set IDENTITY_ENDPOINT/IDENTITY_HEADER to its fields.

    `fresh_tokens`: a new token of a real one's size for every request instead. `refresh_in`: the
    endpoint's hint of when to renew, which azure-identity honours (0: it keeps no copy of its own,
    so every token the bot asks for reaches the endpoint).
    """
    standin = ManagedIdentityStandIn("", uuid.uuid4().hex, token)

    async def issue(request: web.Request) -> web.Response:
        standin.requests.append(dict(request.query))
        if request.headers.get("X-IDENTITY-HEADER") != standin.header:
            return web.json_response({"error": "missing or wrong X-IDENTITY-HEADER"}, status=401)
        if request.query.get("api-version") != "2019-08-01" or "resource" not in request.query:
            return web.json_response({"error": "bad request"}, status=400)
        value = f"eyJ0eXAiOiJKV1Qi.{secrets.token_urlsafe(900)}" if fresh_tokens else token
        if on_issue is not None:
            await on_issue(value)
        standin.issued.append(value)
        body: dict[str, str | int] = {
            "access_token": value,
            "expires_on": str(int(time.time()) + 3600),
            "resource": request.query["resource"],
            "token_type": "Bearer",
        }
        if refresh_in is not None:
            body["refresh_in"] = refresh_in
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/msi/token", issue)
    async with _serve(app) as port:
        standin.endpoint = f"http://127.0.0.1:{port}/msi/token"
        yield standin


class StaticTokenCredential:
    """An AsyncTokenCredential that always hands out one token and remembers the scopes asked for."""

    def __init__(self, token: str = DEFAULT_TOKEN) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []
        self.closed = False

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> StaticTokenCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
