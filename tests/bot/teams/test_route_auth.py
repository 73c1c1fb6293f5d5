"""With authentication on, a request that does not prove itself gets 401 (or 503) quickly: never a hang or a 500.

The SDK fetches the Bot Framework's OpenID metadata with a blocking `requests.get` and no timeout;
these tests point it at a silent socket and at a local key server, over real HTTP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from botframework.connector.auth import ChannelValidation, JwtTokenExtractor
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from bot.app import create_app
from bot.config import Settings
from bot.teams import route
from tests.support.activities import TENANT_ID, TeamsUser
from tests.support.bot_server import BotDriver, running_bot, serve
from tests.support.card_reading import actions
from tests.support.clock import ManualClock

APP_ID = "00000000-0000-0000-0000-000000000001"
CHANNEL_ISSUER = "https://api.botframework.com"
EMULATOR_ISSUER = "https://sts.windows.net/d6d49420-f39b-4df7-a1dc-d59a935871db/"
HANG_GUARD_SECONDS = 10.0


@pytest.fixture(autouse=True)
def _fresh_key_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK caches metadata per URL for the whole process; each test starts without it."""
    monkeypatch.setattr(JwtTokenExtractor, "metadataCache", {})


@pytest.fixture
async def secured_bot(tmp_path: Path, clock: ManualClock) -> AsyncIterator[BotDriver]:
    settings = Settings.from_mapping({
        "BOT_DATA_DIR": str(tmp_path / "data"),
        "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD",
        "MicrosoftAppId": APP_ID,
        "MicrosoftAppPassword": "x",
        "MicrosoftAppTenantId": TENANT_ID,
    })
    assert settings.identity.auth_enabled
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as driver:
        yield driver


@pytest.fixture
def silent_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A metadata URL whose server completes the TCP handshake and then never says a word."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # never accept(): the kernel queues the connections, nobody answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/.well-known/openidconfiguration"
    monkeypatch.setattr(ChannelValidation, "open_id_metadata_endpoint", url)
    try:
        yield url
    finally:
        listener.close()  # resets the queued connections: the SDK's stuck fetches end
        for thread in threading.enumerate():
            if thread.name == "bot-authenticate":
                thread.join(timeout=5)


def _token(claims: dict[str, Any], *, key: Any = "k" * 32, algorithm: str = "HS256", kid: str = "kid-1") -> str:
    base = {"aud": APP_ID, "exp": int(time.time()) + 600, "nbf": int(time.time()) - 60}
    return jwt.encode({**base, **claims}, key, algorithm=algorithm, headers={"kid": kid})


async def _timed_post(bot: BotDriver, activity: dict[str, Any], headers: dict[str, str]) -> tuple[int, float]:
    started = time.monotonic()
    response = await bot.post(activity, headers=headers)
    return response.status, time.monotonic() - started


async def test_no_authorization_header_is_401(secured_bot: BotDriver, referrer: TeamsUser) -> None:
    status, _ = await _timed_post(secured_bot, referrer.message(secured_bot.service_url, "hulp"), {})
    assert status == 401
    assert secured_bot.connector.calls == []


@pytest.mark.parametrize(
    "header",
    ["Bearer garbage", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a.b.c", "Bearer a b", "bearer x.y.z", "Bearer \u00e9"],
)
async def test_garbage_authorization_is_401(secured_bot: BotDriver, referrer: TeamsUser, header: str) -> None:
    status, seconds = await _timed_post(
        secured_bot, referrer.message(secured_bot.service_url, "hulp"), {"Authorization": header}
    )
    assert status == 401
    assert seconds < HANG_GUARD_SECONDS


@pytest.mark.parametrize(
    ("claims", "algorithm"),
    [
        pytest.param({"iss": CHANNEL_ISSUER}, "HS256", id="self-signed-channel-token"),
        pytest.param({"iss": CHANNEL_ISSUER}, "none", id="unsigned-channel-token"),
        pytest.param({"iss": EMULATOR_ISSUER, "ver": "1.0", "appid": APP_ID}, "HS256", id="self-signed-emulator-token"),
        pytest.param({}, "HS256", id="no-issuer"),
        pytest.param({"iss": "https://evil.example"}, "HS256", id="unknown-issuer"),
    ],
)
async def test_well_formed_but_unproven_tokens_are_refused_fast(
    secured_bot: BotDriver, referrer: TeamsUser, claims: dict[str, Any], algorithm: str
) -> None:
    """Here login.botframework.com cannot be reached (no network): 503; with network the key is unknown: 401."""
    token = _token({**claims, "serviceurl": secured_bot.service_url}, key=None if algorithm == "none" else "k" * 32,
                   algorithm=algorithm)
    status, seconds = await _timed_post(
        secured_bot, referrer.message(secured_bot.service_url, "hulp"), {"Authorization": f"Bearer {token}"}
    )
    assert status in (401, 503)
    assert seconds < HANG_GUARD_SECONDS
    assert secured_bot.connector.calls == [], "no turn ran"


async def test_a_silent_identity_provider_gives_503_in_time_and_the_bot_keeps_answering(
    secured_bot: BotDriver, referrer: TeamsUser, silent_endpoint: str
) -> None:
    token = _token({"iss": CHANNEL_ISSUER, "serviceurl": secured_bot.service_url})
    headers = {"Authorization": f"Bearer {token}"}
    requests_in_flight = route.MAX_AUTH_THREADS + 4  # more than there are authentication threads
    posts = [
        asyncio.create_task(_timed_post(secured_bot, referrer.message(secured_bot.service_url, "hulp"), headers))
        for _ in range(requests_in_flight)
    ]
    await asyncio.sleep(0.5)
    # The event loop is free while the SDK's fetches hang: other requests are served at once.
    started = time.monotonic()
    health = await secured_bot.session.get(f"{secured_bot.bot_url}/healthz")
    assert health.status == 200
    no_header, _ = await _timed_post(secured_bot, referrer.message(secured_bot.service_url, "hulp"), {})
    assert no_header == 401
    assert time.monotonic() - started < 1.0

    results = await asyncio.gather(*posts)
    assert [status for status, _ in results] == [503] * requests_in_flight
    slowest = max(seconds for _, seconds in results)
    assert slowest < HANG_GUARD_SECONDS
    assert slowest >= route.AUTH_TIMEOUT_SECONDS - 0.5, "the bound, not an early error, ended the wait"
    fastest = min(seconds for _, seconds in results)
    assert fastest < 1.0, "requests beyond the thread limit are refused at once"
    assert secured_bot.connector.calls == []


async def test_503_says_when_to_retry(secured_bot: BotDriver, referrer: TeamsUser) -> None:
    """No network here: the key fetch fails at once (DNS), which is not the caller's fault."""
    token = _token({"iss": CHANNEL_ISSUER, "serviceurl": secured_bot.service_url})
    response = await secured_bot.post(
        referrer.message(secured_bot.service_url, "hulp"), headers={"Authorization": f"Bearer {token}"}
    )
    if response.status == 503:
        assert int(response.headers["Retry-After"]) > 0
    else:
        assert response.status == 401  # a machine with network fetched the real keys: our kid is unknown


class KeyServer:
    """The Bot Framework's OpenID metadata and signing keys, served locally with our own key."""

    def __init__(self) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "local-test-key"
        self.base_url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/.well-known/openidconfiguration", self._metadata)
        app.router.add_get("/v1/.well-known/keys", self._keys)
        return app

    async def _metadata(self, _: web.Request) -> web.Response:
        return web.json_response({"issuer": CHANNEL_ISSUER, "jwks_uri": f"{self.base_url}/v1/.well-known/keys"})

    async def _keys(self, _: web.Request) -> web.Response:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "endorsements": ["msteams"]})
        return web.json_response({"keys": [jwk]})

    def token(self, service_url: str, *, audience: str = APP_ID) -> str:
        return _token({"iss": CHANNEL_ISSUER, "serviceurl": service_url, "aud": audience},
                      key=self.private_key, algorithm="RS256", kid=self.kid)


@pytest.fixture
async def key_server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KeyServer]:
    keys = KeyServer()
    async with serve(keys.app()) as url:
        keys.base_url = url
        monkeypatch.setattr(ChannelValidation, "open_id_metadata_endpoint", f"{url}/v1/.well-known/openidconfiguration")
        yield keys


async def test_a_properly_signed_token_is_let_through(
    secured_bot: BotDriver, referrer: TeamsUser, key_server: KeyServer
) -> None:
    """The authenticated result is handed to the turn: an invoke, which needs no outbound call, gets its card."""
    activity = referrer.card_action(secured_bot.service_url, "referral.start", {})
    response = await secured_bot.post(
        activity, headers={"Authorization": f"Bearer {key_server.token(secured_bot.service_url)}"}
    )
    assert response.status == 200
    body = await response.json()
    assert "referral.consent" in actions(body["value"])


@pytest.mark.parametrize(
    "problem", ["wrong-audience", "wrong-service-url", "expired", "other-key"]
)
async def test_signed_tokens_with_a_flaw_are_401(
    secured_bot: BotDriver, referrer: TeamsUser, key_server: KeyServer, problem: str
) -> None:
    service_url = secured_bot.service_url
    if problem == "wrong-audience":
        token = key_server.token(service_url, audience="00000000-0000-0000-0000-00000000beef")
    elif problem == "wrong-service-url":
        token = key_server.token("https://smba.trafficmanager.net/emea/")
    elif problem == "expired":
        past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        token = _token({"iss": CHANNEL_ISSUER, "serviceurl": service_url, "exp": int(past.timestamp()),
                        "nbf": int(past.timestamp()) - 60}, key=key_server.private_key, algorithm="RS256",
                       kid=key_server.kid)
    else:
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = _token({"iss": CHANNEL_ISSUER, "serviceurl": service_url}, key=stranger, algorithm="RS256",
                       kid=key_server.kid)
    status, seconds = await _timed_post(
        secured_bot, referrer.card_action(service_url, "referral.start", {}), {"Authorization": f"Bearer {token}"}
    )
    assert status == 401
    assert seconds < HANG_GUARD_SECONDS
