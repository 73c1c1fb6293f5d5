"""No client value outside the encrypted ZIP: not in storage, logs, the mail, or the chat after the end."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
from pathlib import Path

import pytest

from bot.app import sweep_drafts
from bot.config import Settings
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.card_reading import texts
from tests.support.clock import ManualClock
from tests.support.referral_flow import CLIENT_VALUES, reach_review


def _leaks(haystack: bytes) -> list[str]:
    found = []
    for value in CLIENT_VALUES:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            if value.encode(encoding) in haystack:
                found.append(f"{value} ({encoding})")
    return found


def _data_folder_bytes(settings: Settings) -> dict[str, bytes]:
    return {
        str(path): path.read_bytes() for path in settings.data_dir.rglob("*") if path.is_file()
    }


@pytest.mark.parametrize("ending", ["referral.send", "referral.cancel"])
async def test_after_the_end_no_client_value_is_kept_or_logged(
    bot: BotDriver,
    referrer: TeamsUser,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    ending: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    draft_id, review = await reach_review(bot, referrer)
    assert "Zoëlle" in texts(review), "the review card is the one place the data is shown"

    final = await bot.act(referrer, ending, {"draftId": draft_id})
    await bot.deliver()

    assert _leaks(texts(final).encode()) == []
    for name, content in _data_folder_bytes(settings).items():
        if name.endswith(".eml"):
            continue  # checked part by part below: the base64 ZIP is random bytes
        assert _leaks(content) == [], name
    log_text = "\n".join(
        record.getMessage() + str(record.__dict__) + (str(record.exc_info) if record.exc_info else "")
        for record in caplog.records
    )
    assert _leaks(log_text.encode()) == []
    assert caplog.records, "the run did log something"
    posted = bot.connector.sent_activities()
    assert _leaks(str(posted).encode()) == [], "no message in the chat carries client data"


async def test_the_mail_carries_client_data_only_inside_the_zip(
    bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    await bot.deliver()
    [eml] = list(settings.outbox_dir.glob("*.eml"))
    assert _leaks(eml.name.encode()) == []
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    headers = "\n".join(f"{key}: {value}" for key, value in message.items())
    assert _leaks(headers.encode()) == []
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert _leaks(body.get_content().encode()) == []
    [attachment] = list(message.iter_attachments())
    assert _leaks(str(attachment.get_filename()).encode()) == []


async def test_the_data_folder_is_private(bot: BotDriver, referrer: TeamsUser, settings: Settings) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    await bot.deliver()
    assert settings.data_dir.stat().st_mode & 0o077 == 0
    for path in [settings.database_path, settings.data_dir / "draft.key", *settings.outbox_dir.glob("*.eml")]:
        assert Path(path).stat().st_mode & 0o077 == 0, path


async def test_an_abandoned_review_card_is_replaced_in_the_chat_when_the_draft_expires(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock
) -> None:
    _, review = await reach_review(bot, referrer)
    assert "Zoëlle" in texts(review)
    clock.advance(dt.timedelta(minutes=31))

    await sweep_drafts(bot.services.drafts, bot.services.messages, clock)
    await bot.settle()

    [update] = [call for call in bot.connector.calls if call.method == "PUT"]
    assert update.path == f"/v3/conversations/{referrer.conversation_id}/activities/card-1"
    assert _leaks(str(update.body).encode()) == []
    assert "verlopen" in texts(update.body["attachments"][0]["content"])
    for name, content in _data_folder_bytes(settings).items():
        assert _leaks(content) == [], name
