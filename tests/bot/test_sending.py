"""Sending through the real Key Vault client and the real SMTP transport, end to end over HTTP."""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import create_app
from bot.config import Settings
from bot.keyvault_passwords import KeyVaultZipPasswordProvider, create_secret_client
from bot.smtp_transport import SmtpTransport
from tests.support import sevenzip
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import actions, texts
from tests.support.clock import ManualClock
from tests.support.keyvault_standin import KeyVaultStandIn, StaticTokenCredential, keyvault_standin
from tests.support.referral_flow import CLIENT_VALUES, reach_review
from tests.support.smtp_server import SmtpTestServer, smtp_server

SECRET = "zip-password-ocmw-sint-gillis-waas"
VAULT_PASSWORD = "QW3E-RT7Y-UP9A-SD2F-GH4J"


@pytest.fixture
async def vault() -> AsyncIterator[KeyVaultStandIn]:
    async with keyvault_standin() as stand_in:
        yield stand_in


@pytest.fixture
def smtp() -> AsyncIterator[SmtpTestServer]:
    with smtp_server(tls="starttls") as server:
        yield server


@pytest.fixture
async def vault_bot(
    settings: Settings, clock: ManualClock, vault: KeyVaultStandIn, smtp: SmtpTestServer
) -> AsyncIterator[BotDriver]:
    credential = StaticTokenCredential(vault.token)
    client = create_secret_client(
        vault.url, credential, connection_verify=str(vault.ca_path), verify_challenge_resource=False, retry_total=0
    )
    provider = KeyVaultZipPasswordProvider(client, clock=clock, attempts=2, backoff_seconds=0.01, timeout_seconds=2)
    app = create_app(settings, clock=clock, passwords=provider, transport=SmtpTransport(smtp.settings()),
                     run_worker=False)
    async with running_bot(app) as driver:
        yield driver
    await provider.close()
    await credential.close()


async def test_the_package_opens_with_the_vault_password_and_names_its_version(
    vault_bot: BotDriver, vault: KeyVaultStandIn, smtp: SmtpTestServer, referrer: TeamsUser, tmp_path: Path
) -> None:
    version = vault.set_secret(SECRET, VAULT_PASSWORD)
    draft_id, _ = await reach_review(vault_bot, referrer)
    await vault_bot.act(referrer, "referral.send", {"draftId": draft_id})
    await vault_bot.deliver()

    [mail] = smtp.messages
    assert mail.rcpt_tos == ("welzijnshuis@sint-gillis-waas.be",) and mail.tls
    message = email.message_from_bytes(mail.data, policy=email.policy.default)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and version in body.get_content()
    assert VAULT_PASSWORD not in mail.data.decode("ascii", errors="replace")
    [attachment] = list(message.iter_attachments())
    result = sevenzip.extract(attachment.get_content(), VAULT_PASSWORD, tmp_path / "x")
    assert result.returncode == 0
    assert version in (tmp_path / "x" / "doorverwijzing.json").read_text("utf-8")


@pytest.mark.parametrize("status", [503, 403, 404])
async def test_vault_trouble_keeps_the_referral_and_offers_a_retry(
    vault_bot: BotDriver, vault: KeyVaultStandIn, smtp: SmtpTestServer, referrer: TeamsUser, status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    vault.set_secret(SECRET, VAULT_PASSWORD)
    vault.fail_next(status, times=5)
    draft_id, _ = await reach_review(vault_bot, referrer)

    card = await vault_bot.act(referrer, "referral.send", {"draftId": draft_id})

    assert "NIET" in texts(card) and actions(card).get("referral.send") == {"draftId": draft_id}
    assert not any(value in caplog.text for value in CLIENT_VALUES)
    vault._forced.clear()  # the vault is back
    again = await vault_bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert "referral.send" not in actions(again)
    await vault_bot.deliver()
    assert len(smtp.messages) == 1


async def test_a_weak_vault_secret_is_never_used(
    vault_bot: BotDriver, vault: KeyVaultStandIn, smtp: SmtpTestServer, referrer: TeamsUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    vault.set_secret(SECRET, "kort")
    draft_id, _ = await reach_review(vault_bot, referrer)
    card = await vault_bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert "NIET" in texts(card)
    await vault_bot.deliver()
    assert smtp.messages == []
    assert SECRET in caplog.text and "kort" not in caplog.text


async def test_a_550_tells_the_referrer_it_was_not_delivered(
    vault_bot: BotDriver, vault: KeyVaultStandIn, smtp: SmtpTestServer, referrer: TeamsUser
) -> None:
    vault.set_secret(SECRET, VAULT_PASSWORD)
    smtp.fail_next(550, count=1, stage="RCPT")
    draft_id, _ = await reach_review(vault_bot, referrer)
    await vault_bot.act(referrer, "referral.send", {"draftId": draft_id})
    await vault_bot.deliver()
    referral_state = [r for r in vault_bot.connector.sent_activities() if "NIET" in str(r)]
    assert referral_state, "the referrer is told it was NOT delivered"
    assert smtp.messages == []


async def test_a_451_is_retried_until_it_goes_through(
    vault_bot: BotDriver, vault: KeyVaultStandIn, smtp: SmtpTestServer, referrer: TeamsUser, clock: ManualClock
) -> None:
    vault.set_secret(SECRET, VAULT_PASSWORD)
    smtp.fail_next(451, count=1)
    draft_id, _ = await reach_review(vault_bot, referrer)
    await vault_bot.act(referrer, "referral.send", {"draftId": draft_id})
    await vault_bot.deliver()
    assert smtp.messages == []
    due = vault_bot.services.outbox.next_due_at()
    assert due is not None
    clock.current = due
    await vault_bot.deliver()
    assert len(smtp.messages) == 1
