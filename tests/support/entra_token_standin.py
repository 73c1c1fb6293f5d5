"""Entra ID's token endpoint for an app registration with a client secret, reached as on the internet.

MSAL's confidential client hard-codes `login.microsoftonline.com`: it asks that host for the tenant's
OpenID metadata when it is built, then posts the client credentials to the token endpoint the metadata
names. Here `requests` reaches that host the way it reaches it behind a corporate proxy: through
HTTPS_PROXY, whose CONNECT tunnel leads to a local HTTPS stand-in with a certificate for
`login.microsoftonline.com` from a throwaway CA that REQUESTS_CA_BUNDLE makes trusted. Nothing in MSAL
or `requests` is patched; the stand-in speaks the v2.0 endpoints' REST protocol.
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from aiohttp import web

ENTRA_HOST = "login.microsoftonline.com"
#: Environment variables by which `requests` would bypass the tunnel or trust some other CA.
_PROXY_VARIABLES = ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                    "CURL_CA_BUNDLE", "SSL_CERT_FILE")


@dataclass
class EntraTokenStandIn:
    """What the endpoints saw, and what they answer: `refusal` (an OAuth error code) refuses every token request."""

    proxy_url: str
    ca_path: Path
    token: str = "entra-issued-app-token"  # nosec B105 - a test token
    refusal: str | None = None
    #: (method, path) of every request, in order.
    requests: list[tuple[str, str]] = field(default_factory=list)
    #: The form fields of every token request.
    token_forms: list[dict[str, str]] = field(default_factory=list)
    #: The host:port of every CONNECT the proxy was asked for.
    tunnels: list[str] = field(default_factory=list)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list, repr=False)

    def use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make `requests` (trust_env) reach Entra ID through this stand-in only."""
        for name in _PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", self.proxy_url)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(self.ca_path))

    async def _metadata(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        tenant = request.match_info["tenant"]
        base = f"https://{ENTRA_HOST}/{tenant}"
        return web.json_response({
            "issuer": f"https://{ENTRA_HOST}/{tenant}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "token"],
        })

    async def _instance_discovery(self, request: web.Request) -> web.Response:
        """Where MSAL looks for other names of the host after a refusal (tokens cached under an alias)."""
        self.requests.append((request.method, request.path))
        return web.json_response({
            "tenant_discovery_endpoint": f"https://{ENTRA_HOST}/common/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": ENTRA_HOST, "preferred_cache": "login.windows.net",
                          "aliases": [ENTRA_HOST, "login.windows.net", "login.microsoft.com", "sts.windows.net"]}],
        })

    async def _token(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.token_forms.append(form)
        if self.refusal is not None:
            return web.json_response({"error": self.refusal, "error_description": "AADSTS7000215: refused.",
                                      "error_codes": [7000215]}, status=401)
        return web.json_response({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                  "access_token": self.token})

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        self.tunnels.append(target)
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        self._writers += [writer, upstream_writer]
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source: asyncio.StreamReader, target_writer: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                target_writer.write(data)
                await target_writer.drain()
            target_writer.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True)


@asynccontextmanager
async def entra_token_standin() -> AsyncIterator[EntraTokenStandIn]:
    """The stand-in and its CONNECT proxy on free 127.0.0.1 ports; `standin.use(monkeypatch)` routes to it."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(ENTRA_HOST).configure_cert(server_context)
    with tempfile.TemporaryDirectory() as scratch:
        ca_path = Path(scratch) / "entra-ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        holder: list[EntraTokenStandIn] = []

        async def metadata(request: web.Request) -> web.Response:
            return await holder[0]._metadata(request)

        async def token(request: web.Request) -> web.Response:
            return await holder[0]._token(request)

        async def instance_discovery(request: web.Request) -> web.Response:
            return await holder[0]._instance_discovery(request)

        app = web.Application()
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", metadata)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
        app.router.add_get("/common/discovery/instance", instance_discovery)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
        await site.start()
        https_port: int = runner.addresses[0][1]
        proxy = await asyncio.start_server(lambda r, w: holder[0]._tunnel(r, w, https_port), "127.0.0.1", 0)
        proxy_port = int(proxy.sockets[0].getsockname()[1])
        holder.append(EntraTokenStandIn(proxy_url=f"http://127.0.0.1:{proxy_port}", ca_path=ca_path))
        try:
            yield holder[0]
        finally:
            for writer in holder[0]._writers:
                writer.close()
            proxy.close()
            await runner.cleanup()
