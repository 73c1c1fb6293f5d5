"""The Bot Framework's OpenID metadata and signing keys, served on loopback with keys the test holds.

`token()` signs a token the way the Bot Framework does for a Teams request (RS256, issuer
https://api.botframework.com, audience the bot's app id, `serviceurl` claim); `rotate()` publishes a
new key, `silent` makes the metadata endpoint accept and never answer, and `fetches` counts what
was asked.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.support.bot_server import serve

BOT_FRAMEWORK_ISSUER = "https://api.botframework.com"
APP_ID = "00000000-0000-0000-0000-000000000001"


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey
    endorsements: list[str] = field(default_factory=lambda: ["msteams"])


def new_key(kid: str, endorsements: list[str] | None = None) -> SigningKey:
    return SigningKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                      endorsements if endorsements is not None else ["msteams"])


@dataclass
class OpenIdStandIn:
    """State of a running stand-in; tests change it between requests."""

    base_url: str = ""
    keys: list[SigningKey] = field(default_factory=lambda: [new_key("key-1")])
    fetches: list[str] = field(default_factory=list)
    silent: bool = False
    failing: bool = False
    released: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/v1/.well-known/openidconfiguration"

    def rotate(self, kid: str) -> SigningKey:
        """Publish a new key (the old ones stay published)."""
        key = new_key(kid)
        self.keys.append(key)
        return key

    def token(self, service_url: str, *, key: SigningKey | None = None, **claims: Any) -> str:
        """A token as the Bot Framework signs it; `claims` override or add claims."""
        signer = key or self.keys[0]
        now = int(time.time())
        payload = {"iss": BOT_FRAMEWORK_ISSUER, "aud": APP_ID, "serviceurl": service_url, "nbf": now - 60,
                   "exp": now + 600, **claims}
        return jwt.encode(payload, signer.private, algorithm="RS256", headers={"kid": signer.kid})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/.well-known/openidconfiguration", self._metadata)
        app.router.add_get("/v1/.well-known/keys", self._keys)
        return app

    async def _metadata(self, request: web.Request) -> web.Response:
        self.fetches.append("metadata")
        if self.silent:
            await self.released.wait()  # accepted, then not a word until the test ends
        if self.failing:
            return web.json_response({"error": "unavailable"}, status=503)
        return web.json_response({"issuer": BOT_FRAMEWORK_ISSUER, "jwks_uri": f"{self.base_url}/v1/.well-known/keys"})

    async def _keys(self, _: web.Request) -> web.Response:
        self.fetches.append("keys")
        published = []
        for key in self.keys:
            jwk = json.loads(RSAAlgorithm.to_jwk(key.private.public_key()))
            jwk.update({"kid": key.kid, "use": "sig", "endorsements": key.endorsements})
            published.append(jwk)
        return web.json_response({"keys": published})


@asynccontextmanager
async def openid_standin() -> AsyncIterator[OpenIdStandIn]:
    standin = OpenIdStandIn()
    async with serve(standin.app()) as url:
        standin.base_url = url
        try:
            yield standin
        finally:
            standin.released.set()
