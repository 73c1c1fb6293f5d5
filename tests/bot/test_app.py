"""The app's wiring: the ZIP password kept warm in the background, `/readyz` on a slow vault, and a stop
(SIGTERM on a deploy or a scale-in) that lets the mails being sent finish."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.app import create_app
from bot.config import Settings
from bot.delivery.smtp_transport import SmtpTransport
from bot.secrets.zip_passwords import ZipPasswordProvider
from tests.conftest import ZIP_PASSWORD
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, driving, running_bot, running_connector
from tests.support.clock import ManualClock
from tests.support.keyvault_provider import reads_answered, until, vault_provider
from tests.support.keyvault_standin import KeyVaultStandIn, keyvault_standin
from tests.support.referral_flow import reach_review
from tests.support.small_disk import full, small_disk
from tests.support.smtp_server import SmtpTestServer, smtp_server

SECRET = "zip-password-ocmw-sint-gillis-waas"
VAULT_PASSWORD = "QW3E-RT7Y-UP9A-SD2F-GH4J"


def app_on(settings: Settings, clock: ManualClock, passwords: ZipPasswordProvider) -> web.Application:
    return create_app(settings, clock=clock, passwords=passwords, run_worker=False)


@pytest.fixture
async def vault() -> AsyncIterator[KeyVaultStandIn]:
    async with keyvault_standin() as stand_in:
        yield stand_in


async def test_readyz_answers_from_the_warm_password_while_the_vault_is_slow(
    settings: Settings, clock: ManualClock, vault: KeyVaultStandIn
) -> None:
    vault.set_secret(SECRET, VAULT_PASSWORD)
    async with vault_provider(vault, clock) as provider, running_bot(app_on(settings, clock, provider)) as bot:
        await until(lambda: reads_answered(vault) == [200], 5, "the password was fetched when the app started")
        vault.delay = 30.0
        started = time.monotonic()
        response = await bot.session.get(f"{bot.bot_url}/readyz")
        elapsed = time.monotonic() - started
        body = await response.json()
    assert response.status == 200 and body["checks"]["secret_provider"] == "ok", body
    assert elapsed < 1.0
    assert reads_answered(vault) == [200]


async def test_readyz_does_not_wait_long_for_a_slow_vault_without_a_password(
    settings: Settings, clock: ManualClock, vault: KeyVaultStandIn
) -> None:
    vault.set_secret(SECRET, VAULT_PASSWORD)
    vault.delay = 30.0
    async with vault_provider(vault, clock) as provider, running_bot(app_on(settings, clock, provider)) as bot:
        started = time.monotonic()
        response = await bot.session.get(f"{bot.bot_url}/readyz")
        elapsed = time.monotonic() - started
        body = await response.json()
    assert response.status == 503 and body["checks"]["secret_provider"].startswith("failed"), body
    assert elapsed < 3.0


async def test_readyz_says_storage_failed_while_the_full_disk_refuses_every_write(
    tmp_path: Path, clock: ManualClock, referrer: TeamsUser
) -> None:
    """The data folder's disk full: reads answer, no click can be recorded, so the instance is not ready (the alert
    on /readyz relies on it). Its probe only read (`SELECT 1`), which a full disk answers: `storage: ok`."""
    with small_disk(tmp_path / "disk") as disk:
        settings = Settings.from_mapping({"BOT_DATA_DIR": str(disk / "data"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD})
        async with running_bot(create_app(settings, clock=clock, run_worker=False)) as bot:
            await reach_review(bot, referrer)  # the bot works
            before = await _readyz(bot)
            with full(disk):
                during = await _readyz(bot)
            after = await _readyz(bot)
    assert before == after == (200, "ok"), (before, after)
    assert during == (503, "failed: writes refused (disk full)"), during


async def test_readyz_is_ok_again_once_a_write_is_taken_after_a_full_disk(
    tmp_path: Path, clock: ManualClock, referrer: TeamsUser
) -> None:
    """The disk was full for a moment (a click refused), then has room: the same click is recorded, so the
    instance takes writes again. /readyz said `failed: writes refused` (503) for two minutes after the refusal,
    whatever succeeded since: the alert fired on a working instance."""
    with small_disk(tmp_path / "disk") as disk:
        settings = Settings.from_mapping({"BOT_DATA_DIR": str(disk / "data"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD})
        async with running_bot(create_app(settings, clock=clock, run_worker=False)) as bot:
            draft_id, _ = await reach_review(bot, referrer)
            with full(disk):
                await bot.banner(referrer, "referral.edit", {"draftId": draft_id})  # refused: try again soon
                during = await _readyz(bot)
            await bot.act(referrer, "referral.edit", {"draftId": draft_id})  # room again: recorded
            state = await bot.services.db.scalar("SELECT state FROM drafts WHERE id = :id", {"id": draft_id})
            after = await _readyz(bot)
    assert during[0] == 503 and state == "details", (during, state)
    assert after == (200, "ok"), f"the click was recorded, yet /readyz says {after}"


async def _readyz(bot: BotDriver) -> tuple[int, str]:
    """`/readyz`'s status and what it says of storage."""
    async with bot.session.get(f"{bot.bot_url}/readyz") as response:
        return response.status, (await response.json())["checks"]["storage"]


async def test_the_password_is_kept_warm_from_start_to_stop_and_start_up_does_not_wait_for_it(
    settings: Settings, clock: ManualClock, vault: KeyVaultStandIn
) -> None:
    vault.delay = 30.0  # the vault hangs at start, and has no secret yet
    async with vault_provider(vault, clock, refresh_check_seconds=0.05, timeout_seconds=0.5, attempts=1) as provider:
        started = time.monotonic()
        async with running_bot(app_on(settings, clock, provider)) as bot:
            assert time.monotonic() - started < 2.0, "start-up does not wait for the vault"
            health = await bot.session.get(f"{bot.bot_url}/healthz")
            assert health.status == 200
            vault.delay = 0.0
            version = vault.set_secret(SECRET, VAULT_PASSWORD)
            await until(lambda: reads_answered(vault)[-1:] == [200], 5, "the background loop read the secret")
            ready = await bot.session.get(f"{bot.bot_url}/readyz")
            assert ready.status == 200
            assert (await provider.password_for(bot.services.registry.all()[0])).version == version
            rotated = vault.set_secret(SECRET, "P3W8-ZKQ2-M7XR-T4NB-H6JC")
            before = len(reads_answered(vault))  # a read already answered must not pass for the refresh
            clock.advance(dt.timedelta(minutes=8))  # 80 % of the default 10 minutes
            await until(lambda: reads_answered(vault)[before:][-1:] == [200], 5, "the refresh before expiry")
            # The stand-in records its answer as it sends it; the provider caches it once it has arrived
            # (on a busy machine a moment later). Asking meanwhile reads nothing: the old one is fresh.
            async with asyncio.timeout(5):
                while (await provider.password_for(bot.services.registry.all()[0])).version != rotated:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            assert len(reads_answered(vault)) == before + 1, "one read: the refresh"
        reads = len(vault.requests)
        clock.advance(dt.timedelta(minutes=8))
        await asyncio.sleep(0.25)  # five looks' worth: none comes once the app has stopped
        assert len(vault.requests) == reads


async def _send_one(bot: BotDriver, referrer: TeamsUser, relay: SmtpTestServer) -> None:
    """A referral sent, and its mail taken by the relay, which has not yet said so."""
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    await until(lambda: bool(relay.messages), 10, "the relay took the mail")


async def test_a_stop_while_a_mail_is_on_its_way_lets_it_finish_so_the_next_start_does_not_send_it_again(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    """The app stops (its cleanup is what SIGTERM runs) while the relay has the mail but has not confirmed
    it: cancelling that send left the row leased, and the next start sent the OCMW the mail a second time."""
    with smtp_server(tls="none") as relay:
        relay.answer_data_after(1.0)
        app = create_app(settings, clock=clock, run_worker=True, transport=SmtpTransport(relay.settings()))
        async with running_bot(app) as bot:
            await _send_one(bot, referrer, relay)
        relay.answer_data_after(0)
        clock.advance(settings.delivery.lease * 2)  # a lease a cancelled send left has run out
        app = create_app(settings, clock=clock, run_worker=True, transport=SmtpTransport(relay.settings()))
        async with running_bot(app) as bot:
            async with asyncio.timeout(10):
                while await bot.services.outbox.counts() != {"delivered": 1}:  # noqa: ASYNC110  # the database
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # time enough for a second send, if one were coming
        assert len(relay.messages) == 1


async def test_a_stop_waits_for_a_slow_relay_no_longer_than_its_drain_time(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    """A relay that does not confirm within the drain time does not hold the stop up until SIGKILL."""
    drain = 0.5
    with smtp_server(tls="none") as relay:
        relay.answer_data_after(30.0)
        app = create_app(settings, clock=clock, run_worker=True, transport=SmtpTransport(relay.settings()),
                         stop_drain_seconds=drain)
        async with running_bot(app) as bot:
            await _send_one(bot, referrer, relay)
            started = time.monotonic()
        stopped_in = time.monotonic() - started
    assert drain <= stopped_in < drain + 3


async def test_a_stop_while_a_teams_message_is_on_its_way_lets_it_finish_so_it_is_posted_once(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    """As for a mail: Teams has taken the referrer's notice but not answered yet when the app stops."""
    async with running_connector() as (connector, url):
        async with driving(create_app(settings, clock=clock, run_worker=True), connector, url) as bot:
            draft_id, _ = await reach_review(bot, referrer)
            connector.answer_after = 1.0
            taken = len(connector.accepted)
            await bot.act(referrer, "referral.send", {"draftId": draft_id})
            await until(lambda: any(call.method == "POST" for call in connector.accepted[taken:]), 10,
                        "Teams took a message")
        connector.answer_after = 0.0
        clock.advance(settings.delivery.lease * 2)  # a lease a cancelled send left has run out
        async with driving(create_app(settings, clock=clock, run_worker=True), connector, url) as bot:
            async with asyncio.timeout(10):
                while (await bot.services.messages.counts()).keys() - {"sent"}:  # noqa: ASYNC110  # the database
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # time enough for a second post, if one were coming
    posted = Counter(json.dumps(call.body, sort_keys=True) for call in connector.accepted[taken:])
    assert posted and max(posted.values()) == 1, posted


async def test_no_answer_names_the_server_software_or_its_version(bot: BotDriver, referrer: TeamsUser) -> None:
    """aiohttp's default `Server: Python/3.11 aiohttp/3.x` tells anyone which known flaws to try."""
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz", "/register/export/" + "A" * 43):
            async with session.get(bot.bot_url + path) as response:
                assert response.headers.get("Server") == "veilig-doorverwijzen", (path, response.headers.get("Server"))
    response = await bot.post(referrer.message(bot.service_url, "hulp"))
    assert response.headers.get("Server") == "veilig-doorverwijzen"
