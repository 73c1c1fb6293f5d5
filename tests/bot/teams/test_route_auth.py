"""With authentication on, only a request the Bot Framework signed for this bot gets a turn.

Over real HTTP, against a local OpenID metadata and key stand-in holding keys the test signs with:
a valid token is let through (an invoke gets its card, a message its reply through the connector,
with the connector token); garbage, unproven and flawed tokens get 401 quickly; an identity
provider that is silent or down gives 503 with Retry-After within the bound, while the bot keeps
answering everything else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bot.app import create_app
from bot.config import Settings, TelemetryConfig
from bot.operations.telemetry import telemetry_from_settings
from bot.teams.token_validation import KEY_FETCH_TIMEOUT_SECONDS
from tests.support.activities import TENANT_ID, TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import actions
from tests.support.clock import ManualClock
from tests.support.openid_standin import APP_ID, OpenIdStandIn, new_key, openid_standin

HANG_GUARD_SECONDS = 10.0
CONNECTOR_TOKEN = "connector-token-from-the-bots-own-identity"


class StaticConnectorToken:
    """The outbound token MSAL would get for the bot; fixed, as no identity platform runs here."""

    async def token(self) -> str:
        return CONNECTOR_TOKEN


@pytest.fixture
async def keys() -> AsyncIterator[OpenIdStandIn]:
    async with openid_standin() as standin:
        yield standin


@pytest.fixture
async def secured_bot(tmp_path: Path, clock: ManualClock, keys: OpenIdStandIn) -> AsyncIterator[BotDriver]:
    settings = dataclasses.replace(Settings.from_mapping({
        "BOT_DATA_DIR": str(tmp_path / "data"),
        "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD",
        "MicrosoftAppId": APP_ID,
        "MicrosoftAppPassword": "x",
        "MicrosoftAppTenantId": TENANT_ID,
    }), openid_metadata_url=keys.metadata_url)
    assert settings.identity.auth_enabled
    app = create_app(settings, clock=clock, run_worker=False, connector_token=StaticConnectorToken())
    async with running_bot(app) as driver:
        yield driver


def _metered_secured_app(tmp_path: Path, clock: ManualClock, keys: OpenIdStandIn) -> web.Application:
    """As `secured_bot`, with the metrics served (`metrics_view`) as `serve` serves them."""
    settings = dataclasses.replace(Settings.from_mapping({
        "BOT_DATA_DIR": str(tmp_path / "data"), "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD",
        "MicrosoftAppId": APP_ID, "MicrosoftAppPassword": "x", "MicrosoftAppTenantId": TENANT_ID,
    }), openid_metadata_url=keys.metadata_url, telemetry=TelemetryConfig(metrics_port=0))
    return create_app(settings, clock=clock, run_worker=False, connector_token=StaticConnectorToken(),
                      telemetry=telemetry_from_settings(settings.telemetry))


async def _timed_post(bot: BotDriver, activity: dict[str, Any], headers: dict[str, str]) -> tuple[int, float]:
    started = time.monotonic()
    response = await bot.post(activity, headers=headers)
    return response.status, time.monotonic() - started


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_properly_signed_invoke_gets_its_card(
    secured_bot: BotDriver, referrer: TeamsUser, keys: OpenIdStandIn
) -> None:
    activity = referrer.card_action(secured_bot.service_url, "referral.start", {})
    response = await secured_bot.post(activity, headers=_bearer(keys.token(secured_bot.service_url)))
    assert response.status == 200
    assert "referral.consent" in actions((await response.json())["value"])


async def test_a_properly_signed_message_is_answered_with_the_bots_connector_token(
    secured_bot: BotDriver, referrer: TeamsUser, keys: OpenIdStandIn
) -> None:
    response = await secured_bot.post(referrer.message(secured_bot.service_url, "hulp"),
                                      headers=_bearer(keys.token(secured_bot.service_url)))
    assert response.status == 202
    [reply] = secured_bot.connector.calls
    assert reply.method == "POST" and reply.authorization == f"Bearer {CONNECTOR_TOKEN}"
    assert "referral.start" in actions(reply.body["attachments"][0]["content"])
    assert reply.body["conversation"]["tenantId"] == TENANT_ID


async def test_no_authorization_header_is_401(secured_bot: BotDriver, referrer: TeamsUser) -> None:
    status, _ = await _timed_post(secured_bot, referrer.message(secured_bot.service_url, "hulp"), {})
    assert status == 401
    assert secured_bot.connector.calls == []


@pytest.mark.parametrize(
    "header",
    ["Bearer garbage", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a.b.c", "Bearer a b", "bearer x.y.z", "Bearer \u00e9",
     "Bearer " + "x" * 8_000],
)
async def test_garbage_authorization_is_401(secured_bot: BotDriver, referrer: TeamsUser, header: str) -> None:
    status, seconds = await _timed_post(
        secured_bot, referrer.message(secured_bot.service_url, "hulp"), {"Authorization": header}
    )
    assert status == 401
    assert seconds < HANG_GUARD_SECONDS
    assert secured_bot.connector.calls == []


def _self_signed(claims: dict[str, Any], algorithm: str, kid: str = "key-1") -> str:
    now = int(time.time())
    payload = {"aud": APP_ID, "exp": now + 600, "nbf": now - 60, **claims}
    return jwt.encode(payload, None if algorithm == "none" else "k" * 32, algorithm=algorithm, headers={"kid": kid})


@pytest.mark.parametrize("flaw", [
    "wrong-audience", "wrong-service-url", "wrong-issuer", "expired", "not-yet-valid", "other-key-same-kid",
    "unknown-kid", "not-endorsed-for-teams", "hmac-with-a-known-kid", "unsigned", "no-expiry",
])
async def test_tokens_with_a_flaw_are_401(
    secured_bot: BotDriver, referrer: TeamsUser, keys: OpenIdStandIn, flaw: str
) -> None:
    service_url = secured_bot.service_url
    now = int(time.time())
    token = {
        "wrong-audience": lambda: keys.token(service_url, aud="00000000-0000-0000-0000-00000000beef"),
        "wrong-service-url": lambda: keys.token("https://smba.trafficmanager.net/emea/"),
        "wrong-issuer": lambda: keys.token(service_url, iss="https://sts.windows.net/evil/"),
        "expired": lambda: keys.token(service_url, exp=now - 3600, nbf=now - 7200),
        "not-yet-valid": lambda: keys.token(service_url, nbf=now + 3600),
        "other-key-same-kid": lambda: keys.token(service_url, key=dataclasses.replace(new_key("x"), kid="key-1")),
        "unknown-kid": lambda: keys.token(service_url, key=new_key("never-published")),
        "hmac-with-a-known-kid": lambda: _self_signed({"iss": "https://api.botframework.com",
                                                       "serviceurl": service_url}, "HS256"),
        "unsigned": lambda: _self_signed({"iss": "https://api.botframework.com", "serviceurl": service_url}, "none"),
    }.get(flaw)
    if flaw == "not-endorsed-for-teams":
        keys.keys.append(new_key("webchat-only", endorsements=["webchat"]))
        signed = keys.token(service_url, key=keys.keys[-1])
    elif flaw == "no-expiry":
        signed = _without_expiry(keys, service_url)
    else:
        assert token is not None
        signed = token()
    status, seconds = await _timed_post(
        secured_bot, referrer.card_action(service_url, "referral.start", {}), _bearer(signed)
    )
    assert status == 401, flaw
    assert seconds < HANG_GUARD_SECONDS
    assert secured_bot.connector.calls == []


async def test_a_token_the_bot_framework_signed_but_the_bot_refuses_is_a_warning_and_counted(
    tmp_path: Path, clock: ManualClock, keys: OpenIdStandIn, referrer: TeamsUser, caplog: pytest.LogCaptureFixture
) -> None:
    """A deployment with the wrong MicrosoftAppId (the managed identity's client id where the Azure Bot has an app
    registration's, or the other way round), or an instance whose clock is far off, refuses every real Teams request
    with 401: the Bot Framework sends none of them again and users get no answer at all. /readyz said ok, no 5xx was
    counted and the reason was an INFO line among the internet's noise, so nothing told the operator. A token the
    Bot Framework's own key signed is no stranger's: its refusal is a WARNING naming what to check, and a metric
    the alert reads. Tokens nobody proved (no key, a forged signature) stay INFO and uncounted."""
    app = _metered_secured_app(tmp_path, clock, keys)
    azure_bots_app_id = "00000000-0000-0000-0000-00000000beef"
    caplog.set_level(logging.INFO, logger="bot")
    async with running_bot(app) as bot:
        service_url, now = bot.service_url, int(time.time())
        signed_but_refused = [keys.token(service_url, aud=azure_bots_app_id),
                              keys.token(service_url, exp=now - 3600, nbf=now - 7200)]
        strangers = [keys.token(service_url, key=new_key("never-published")),
                     keys.token(service_url, key=dataclasses.replace(new_key("x"), kid="key-1")), "garbage"]
        for token in signed_but_refused + strangers:
            response = await bot.post(referrer.message(service_url, "hulp"), headers=_bearer(token))
            assert response.status == 401
        view = bot.services.metrics_view
        assert view is not None
        async with bot.session.get(view.url) as response:
            families = {family.name: family.samples for family in text_string_to_metric_families(await response.text())}
    refused = {sample.labels["reason"]: sample.value for sample in families.get("vd_auth_refused", [])
               if sample.name.endswith("_total")}
    assert refused == {"audience": 1.0, "time": 1.0}, refused
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "MicrosoftAppId" in warnings[0] and azure_bots_app_id in warnings[0], warnings[0]
    # Another bot's owner can send such a token: the advice must not make its app id look like the one to set.
    assert "never copy the id this token was signed for" in warnings[0], warnings[0]
    assert "clock" in warnings[1], warnings[1]


async def test_a_token_entra_id_issued_for_this_bot_is_refused_with_a_warning_once_a_minute(
    secured_bot: BotDriver, referrer: TeamsUser, keys: OpenIdStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """Entra ID's own tokens for the bot's app id (issuer sts.windows.net or login.microsoftonline.com of a tenant):
    the Agents SDK's validator takes them, this one does not (see README, Token validation). Should the Azure Bot
    ever send them, every request is refused: a WARNING says why, where an INFO line hid it. Unproven (Entra's keys
    are not asked), so it is not counted for the alert, and it is said at most once a minute."""
    caplog.set_level(logging.INFO, logger="bot")
    entra_key = new_key("entra-key")
    for issuer in (f"https://sts.windows.net/{TENANT_ID}/", f"https://login.microsoftonline.com/{TENANT_ID}/v2.0"):
        token = keys.token(secured_bot.service_url, key=entra_key, iss=issuer, tid=TENANT_ID)
        response = await secured_bot.post(referrer.message(secured_bot.service_url, "hulp"), headers=_bearer(token))
        assert response.status == 401
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "Entra ID" in warnings[0] and f"https://sts.windows.net/{TENANT_ID}/" in warnings[0], warnings[0]
    assert secured_bot.connector.calls == []


def _without_expiry(keys: OpenIdStandIn, service_url: str) -> str:
    signer = keys.keys[0]
    payload = {"iss": "https://api.botframework.com", "aud": APP_ID, "serviceurl": service_url}
    return jwt.encode(payload, signer.private, algorithm="RS256", headers={"kid": signer.kid})


async def test_an_activity_from_another_channel_is_refused_even_with_a_valid_token(
    secured_bot: BotDriver, referrer: TeamsUser, keys: OpenIdStandIn
) -> None:
    activity = referrer.card_action(secured_bot.service_url, "referral.start", {})
    activity["channelId"] = "webchat"
    response = await secured_bot.post(activity, headers=_bearer(keys.token(secured_bot.service_url)))
    assert response.status == 400
    assert "Teams" in (await response.json())["error"]["message"]


async def test_keys_are_fetched_once_for_many_requests(
    secured_bot: BotDriver, referrer: TeamsUser, keys: OpenIdStandIn
) -> None:
    headers = _bearer(keys.token(secured_bot.service_url))
    results = await asyncio.gather(*(
        secured_bot.post(referrer.card_action(secured_bot.service_url, "referral.start", {}), headers=headers)
        for _ in range(12)
    ))
    assert [response.status for response in results] == [200] * 12
    assert keys.fetches == ["metadata", "keys"]


async def test_a_silent_identity_provider_gives_503_in_time_and_the_bot_keeps_answering(
    secured_bot: BotDriver, referrer: TeamsUser, keys: OpenIdStandIn
) -> None:
    keys.silent = True
    headers = _bearer(keys.token(secured_bot.service_url))
    posts = [
        asyncio.create_task(_timed_post(secured_bot, referrer.message(secured_bot.service_url, "hulp"), headers))
        for _ in range(20)
    ]
    await asyncio.sleep(0.5)
    started = time.monotonic()  # the event loop is free while the fetch hangs
    health = await secured_bot.session.get(f"{secured_bot.bot_url}/healthz")
    assert health.status == 200
    no_header, _ = await _timed_post(secured_bot, referrer.message(secured_bot.service_url, "hulp"), {})
    assert no_header == 401
    assert time.monotonic() - started < 1.0

    results = await asyncio.gather(*posts)
    assert [status for status, _ in results] == [503] * 20
    slowest = max(seconds for _, seconds in results)
    assert KEY_FETCH_TIMEOUT_SECONDS - 0.5 <= slowest < KEY_FETCH_TIMEOUT_SECONDS + 2.0
    assert keys.fetches == ["metadata"], "one fetch for everyone waiting"
    assert secured_bot.connector.calls == []


async def test_503_says_when_to_retry_and_the_next_request_fetches_again(
    secured_bot: BotDriver, referrer: TeamsUser, keys: OpenIdStandIn
) -> None:
    keys.failing = True
    headers = _bearer(keys.token(secured_bot.service_url))
    invoke = referrer.card_action(secured_bot.service_url, "referral.start", {})
    response = await secured_bot.post(invoke, headers=headers)
    assert response.status == 503 and int(response.headers["Retry-After"]) > 0
    keys.failing = False
    response = await secured_bot.post(invoke, headers=headers)
    assert response.status == 200


async def test_a_key_endpoint_outage_is_counted_as_such_not_as_the_bots_own_5xx(
    tmp_path: Path, clock: ManualClock, keys: OpenIdStandIn, referrer: TeamsUser
) -> None:
    """The Bot Framework's key endpoint fails: each request is answered 503 with Retry-After (Teams sends it
    again), as it must be. Counted as a bare 503 on /api/messages, it fed the *server-errors* alert, whose
    runbook line sends the operator to the turns' tracebacks and `python -m bot check`, where there is nothing:
    the bot did not fail, it could not fetch the keys. The 503s carry their cause, and a counter of their own
    (`vd.auth.unavailable`) feeds the alert whose runbook line names the key endpoint."""
    app = _metered_secured_app(tmp_path, clock, keys)
    keys.failing = True
    async with running_bot(app) as bot:
        for _ in range(3):
            response = await bot.post(referrer.message(bot.service_url, "hulp"),
                                      headers=_bearer(keys.token(bot.service_url)))
            assert response.status == 503 and int(response.headers["Retry-After"]) > 0
        view = bot.services.metrics_view
        assert view is not None
        async with bot.session.get(view.url) as response:
            families = {family.name: family.samples for family in text_string_to_metric_families(await response.text())}
    answered = [(sample.labels["http_response_status_code"], sample.labels.get("cause"), sample.value)
                for sample in families["vd_http_responses"]
                if sample.labels["http_route"] == "/api/messages" and sample.name.endswith("_total")]
    assert answered == [("503", "signing_keys_unavailable", 3.0)], answered
    unavailable = [sample.value for sample in families.get("vd_auth_unavailable", []) if sample.name.endswith("_total")]
    assert unavailable == [3.0], families.keys()


async def test_an_unreachable_identity_provider_gives_503_at_once(
    tmp_path: Path, clock: ManualClock, referrer: TeamsUser, keys: OpenIdStandIn
) -> None:
    settings = dataclasses.replace(Settings.from_mapping({
        "BOT_DATA_DIR": str(tmp_path / "data"), "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD",
        "MicrosoftAppId": APP_ID, "MicrosoftAppPassword": "x", "MicrosoftAppTenantId": TENANT_ID,
    }), openid_metadata_url="http://127.0.0.1:9/v1/.well-known/openidconfiguration")  # discard port: refused
    async with running_bot(create_app(settings, clock=clock, run_worker=False,
                                      connector_token=StaticConnectorToken())) as bot:
        status, seconds = await _timed_post(bot, referrer.message(bot.service_url, "hulp"),
                                            _bearer(keys.token(bot.service_url)))
    assert status == 503 and seconds < 2.0


async def test_without_an_app_id_a_sent_token_is_refused(bot: BotDriver, referrer: TeamsUser) -> None:
    """Authentication off, yet the caller sends a token: the deployment lacks its app id; say so."""
    response = await bot.post(referrer.message(bot.service_url, "hulp"), headers={"Authorization": "Bearer x.y.z"})
    assert response.status == 401
