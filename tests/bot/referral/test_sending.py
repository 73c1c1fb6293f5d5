"""Sending through the real Key Vault client and the real SMTP transport, end to end over HTTP."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.app import create_app
from bot.config import Settings
from bot.delivery.smtp_transport import SmtpTransport
from bot.referral.drafts import DraftState
from tests.support import sevenzip
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import actions, texts
from tests.support.clock import ManualClock
from tests.support.keyvault_provider import reads_answered, until, vault_provider
from tests.support.keyvault_standin import KeyVaultStandIn, keyvault_standin
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


@asynccontextmanager
async def bot_on_vault(
    settings: Settings, clock: ManualClock, vault: KeyVaultStandIn, smtp: SmtpTestServer, **provider_options: Any
) -> AsyncIterator[BotDriver]:
    """The bot over HTTP with the real Key Vault provider and the real SMTP transport."""
    options: dict[str, Any] = {"attempts": 2, "backoff_seconds": 0.01, "timeout_seconds": 2} | provider_options
    async with vault_provider(vault, clock, **options) as provider:
        app = create_app(settings, clock=clock, passwords=provider, transport=SmtpTransport(smtp.settings()),
                         run_worker=False)
        async with running_bot(app) as driver:
            yield driver


@pytest.fixture
async def vault_bot(
    settings: Settings, clock: ManualClock, vault: KeyVaultStandIn, smtp: SmtpTestServer
) -> AsyncIterator[BotDriver]:
    async with bot_on_vault(settings, clock, vault, smtp) as driver:
        yield driver


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
    _, review = await reach_review(vault_bot, referrer)

    card = await vault_bot.act(referrer, "referral.send", actions(review)["referral.send"])

    assert "NIET" in texts(card) and actions(card).get("referral.send") == actions(review)["referral.send"]
    assert not any(value in caplog.text for value in CLIENT_VALUES)
    vault._forced.clear()  # the vault is back
    again = await vault_bot.act(referrer, "referral.send", actions(card)["referral.send"])
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
    due = await vault_bot.services.outbox.next_due_at()
    assert due is not None
    clock.current = due
    await vault_bot.deliver()
    assert len(smtp.messages) == 1


# -- a vault slower than Teams' invoke budget (issue 10) ---------------------------------------------


async def test_a_vault_slower_than_the_invoke_budget_fills_the_cache_for_the_next_send(
    settings: Settings, clock: ManualClock, vault: KeyVaultStandIn, smtp: SmtpTestServer, referrer: TeamsUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The vault answers in 4.5 s; the invoke must be answered within Teams' 5 s."""
    vault.set_secret(SECRET, VAULT_PASSWORD)
    vault.delay = 4.5
    async with bot_on_vault(settings, clock, vault, smtp, timeout_seconds=10) as bot:
        draft_id, review = await reach_review(bot, referrer)
        started = time.monotonic()
        first = await bot.act(referrer, "referral.send", {"draftId": draft_id})
        assert time.monotonic() - started < 4.8, "answered within Teams' budget"
        card = first
        if "referral.send" in actions(first):  # no password in time: the fetch goes on without us
            await until(lambda: reads_answered(vault) == [200], 10, "the vault answered the fetch the send left")
            vault.delay = 30.0  # another read would not be answered in time: only the cache can help
            card = await bot.act(referrer, "referral.send", {"draftId": draft_id})
        assert "referral.send" not in actions(card), texts(card)
        assert reads_answered(vault) == [200], "one read, shared by everyone, and kept"
        await bot.deliver()
    assert len(smtp.messages) == 1
    if "referral.send" in actions(first):
        assert "probeer zo opnieuw" in texts(first)
        assert actions(first)["referral.send"] == actions(review)["referral.send"], "a retry of the data shown"
    assert not any(value in caplog.text for value in CLIENT_VALUES)


async def test_a_vault_asking_to_retry_after_5_s_fills_the_cache_for_the_next_send(
    settings: Settings, clock: ManualClock, vault: KeyVaultStandIn, smtp: SmtpTestServer, referrer: TeamsUser
) -> None:
    """429 with Retry-After 5: the fetch waits the 5 s and reads again, whether or not anyone still waits."""
    vault.set_secret(SECRET, VAULT_PASSWORD)
    vault.fail_next(429, retry_after="5")
    async with bot_on_vault(settings, clock, vault, smtp) as bot:
        draft_id, _ = await reach_review(bot, referrer)
        started = time.monotonic()
        first = await bot.act(referrer, "referral.send", {"draftId": draft_id})
        assert time.monotonic() - started < 4.8, "answered within Teams' budget"
        card = first
        if "referral.send" in actions(first):
            await until(lambda: reads_answered(vault) == [429, 200], 10, "the fetch read again after Retry-After")
            card = await bot.act(referrer, "referral.send", {"draftId": draft_id})
        assert "referral.send" not in actions(card), texts(card)
        assert reads_answered(vault) == [429, 200], "no read after the one that succeeded"
        await bot.deliver()
    assert len(smtp.messages) == 1
    if "referral.send" in actions(first):
        assert "probeer zo opnieuw" in texts(first)


async def test_versturen_clicked_again_while_the_first_click_is_sending_says_it_is_being_sent(
    settings: Settings, clock: ManualClock, vault: KeyVaultStandIn, smtp: SmtpTestServer, referrer: TeamsUser
) -> None:
    """A double click, or a click again after Teams stopped waiting for the first: while the first click
    waits for the vault the draft is `sending`. "Begin opnieuw" there would have the family referred twice."""
    vault.set_secret(SECRET, VAULT_PASSWORD)
    vault.delay = 2.0  # a slow vault, within the send's budget: the first click is still sending meanwhile
    async with bot_on_vault(settings, clock, vault, smtp, timeout_seconds=10) as bot:
        draft_id, _ = await reach_review(bot, referrer)
        reference = (await bot.services.drafts.get(draft_id)).reference  # type: ignore[union-attr]
        first = asyncio.create_task(bot.act(referrer, "referral.send", {"draftId": draft_id}))
        await until_async(lambda: _draft_state(bot, draft_id), DraftState.SENDING, 1.5)
        second = await bot.act(referrer, "referral.send", {"draftId": draft_id})
        assert not first.done(), "answered while the first click was still sending"
        queued = await first
        await bot.deliver()
    assert len(smtp.messages) == 1, "sent once"
    assert reference in texts(queued) and "referral.send" not in actions(queued), texts(queued)
    assert "wordt op dit moment verstuurd" in texts(second) and reference in texts(second), texts(second)
    assert "Begin opnieuw" not in texts(second) and "referral.start" not in actions(second), actions(second)
    assert not any(value in texts(second) for value in CLIENT_VALUES)


async def _draft_state(bot: BotDriver, draft_id: str) -> DraftState | None:
    draft = await bot.services.drafts.get(draft_id)
    return None if draft is None else draft.state


async def until_async(read: Callable[[], Awaitable[object]], expected: object, seconds: float) -> None:
    """Poll `read()` until it returns `expected`, failing after `seconds`."""
    deadline = time.monotonic() + seconds
    while (value := await read()) != expected:
        assert time.monotonic() < deadline, f"still {value!r} after {seconds} s, not {expected!r}"
        await asyncio.sleep(0.02)
