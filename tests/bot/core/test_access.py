"""Who may refer (tenant allow-list), how often (rate limits), and production refusing weak settings."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import create_app
from bot.config import ConfigError, Settings
from bot.core.access import ReferrerPolicy
from tests.support.activities import TENANT_ID, TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import actions, texts
from tests.support.clock import ManualClock

K_EN_G_TENANT = TENANT_ID.lower()
OTHER_TENANT = "11111111-2222-4333-8444-555555555555"


@pytest.fixture
async def guarded_bot(tmp_path: Path, clock: ManualClock) -> AsyncIterator[BotDriver]:
    settings = Settings.from_mapping({
        "BOT_DATA_DIR": str(tmp_path / "data"),
        "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD",
        "REFERRER_TENANT_IDS": K_EN_G_TENANT,
        "RATE_LIMIT_STARTS_PER_HOUR": "3",
        "RATE_LIMIT_ACTIONS_PER_MINUTE": "1000",
    })
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as driver:
        yield driver


async def test_a_user_of_another_tenant_is_refused_politely_and_logged(
    guarded_bot: BotDriver, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = TeamsUser("aad-stranger", "Vreemde", "a:personal-stranger")
    activity = stranger.message(guarded_bot.service_url, "nieuw")
    activity["channelData"]["tenant"]["id"] = OTHER_TENANT
    response = await guarded_bot.post(activity)
    assert response.status == 202
    card = guarded_bot.connector.sent_cards()[-1]
    assert "referral.consent" not in actions(card) and "Kind en Gezin" in texts(card)
    assert "not an allowed referrer" in caplog.text
    invoke = stranger.card_action(guarded_bot.service_url, "referral.start", {})
    invoke["channelData"]["tenant"]["id"] = OTHER_TENANT
    answer = await guarded_bot.post(invoke)
    assert "referral.consent" not in actions((await answer.json())["value"])


async def test_the_own_tenant_may_refer(guarded_bot: BotDriver, referrer: TeamsUser) -> None:
    card = await guarded_bot.act(referrer, "referral.start", {})
    assert "referral.consent" in actions(card)


async def test_too_many_starts_get_a_clear_card_and_the_limit_slides(
    guarded_bot: BotDriver, referrer: TeamsUser, clock: ManualClock
) -> None:
    for _ in range(3):
        assert "referral.consent" in actions(await guarded_bot.act(referrer, "referral.start", {}))
    limited = await guarded_bot.act(referrer, "referral.start", {})
    assert "referral.consent" not in actions(limited) and "geduld" in texts(limited).lower()
    assert "30 minuten zonder wijziging" in texts(limited), "what was entered waits DRAFT_TTL_MINUTES (default)"
    clock.advance(dt.timedelta(hours=1, seconds=1))
    assert "referral.consent" in actions(await guarded_bot.act(referrer, "referral.start", {}))


def test_policy_narrowed_to_objects_and_channels() -> None:
    policy = ReferrerPolicy(frozenset({"t"}), frozenset({"u"}), frozenset({"19:team"}))
    assert policy.allows(tenant_id="T", object_id="U", team_or_channel_ids=["19:team"])
    assert not policy.allows(tenant_id="t", object_id="v", team_or_channel_ids=["19:team"])
    assert not policy.allows(tenant_id="t", object_id="u", team_or_channel_ids=["19:other"])


def test_production_refuses_every_named_weakening() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_mapping({"BOT_ENV": "production", "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1",
                               "SMTP_TLS": "none", "SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK": "1"})
    message = str(raised.value)
    assert "authentication OFF" in message and "SMTP_TLS=none" in message and "REFERRER_TENANT_IDS" in message


def test_production_with_safe_settings_starts() -> None:
    settings = Settings.from_mapping({
        "BOT_ENV": "production", "MicrosoftAppId": "00000000-0000-0000-0000-000000000001",
        "MicrosoftAppType": "UserAssignedMSI",
        "MicrosoftAppTenantId": K_EN_G_TENANT, "REFERRER_TENANT_IDS": K_EN_G_TENANT,
        "OCMW_TENANT_IDS": OTHER_TENANT, "KEY_VAULT_URL": "https://kv.vault.azure.net", "MAIL_TRANSPORT": "graph",
        "DATABASE_URL": "postgresql://vd-id@vd-pg.postgres.database.azure.com/vd", "DATABASE_AUTH": "entra",
    })
    assert settings.security_weakenings == [] and settings.production_refusals == []


def test_development_names_the_weakenings() -> None:
    weakenings = Settings.from_mapping({}).security_weakenings
    assert any(w.startswith("any tenant may refer (REFERRER_TENANT_IDS empty): set ") for w in weakenings)


def test_tenant_ids_must_be_guids() -> None:
    with pytest.raises(ConfigError, match="REFERRER_TENANT_IDS"):
        Settings.from_mapping({"REFERRER_TENANT_IDS": "kind-en-gezin"})
