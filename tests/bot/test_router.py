"""The router, with the database out of reach: the user is told to try again, and the same click works later.

Against a PostgreSQL server of this test's own (it is stopped and started again, as a restart or an
Azure failover does), with the bot driven over HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

import cards
from bot.app import create_app
from bot.config import Settings
from tests.conftest import ZIP_PASSWORD
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import actions
from tests.support.clock import ManualClock
from tests.support.databases import migrated_postgres_url
from tests.support.postgres_server import PostgresServer, postgres_server
from tests.support.referral_flow import CLIENT_VALUES, reach_review
from tests.support.small_disk import full, small_disk
from tests.support.smtp_server import smtp_server

pytestmark = pytest.mark.asyncio

TRY_AGAIN = "Niet gelukt: probeer zo opnieuw. De bot kon zijn gegevens even niet bereiken."


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server this test may stop and start (the suite's shared one must stay up)."""
    with postgres_server() as server:
        yield server


def _settings(tmp_path: Path, url: str, smtp_port: int) -> Settings:
    """The bot on PostgreSQL at `url`, mailing through the local relay."""
    return Settings.from_mapping({
        "BOT_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": url,
        "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD, "LOCAL_DRAFT_KEY": "5d" * 32,
        "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port), "SMTP_TLS": "none",
        "SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK": "1",
    })


async def test_a_database_restart_costs_the_referrer_a_click_not_the_referral(
        own_postgres: PostgresServer, tmp_path: Path, clock: ManualClock, referrer: TeamsUser,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = await migrated_postgres_url(own_postgres)
    with smtp_server(tls="none") as relay:
        settings = _settings(tmp_path, url, relay.port)
        async with running_bot(create_app(settings, clock=clock, run_worker=False)) as bot:
            await _restart_between_clicks(bot, own_postgres, clock, referrer)
        assert len(relay.messages) == 1  # the one mail, queued by the click that worked
    logged = "\n".join(record.getMessage() + str(record.__dict__) + str(record.exc_info) for record in caplog.records)
    assert "card action not handled: database unavailable" in logged
    assert [value for value in CLIENT_VALUES if value in logged] == []  # not in the outage's log lines either


async def _restart_between_clicks(bot: BotDriver, server: PostgresServer, clock: ManualClock,
                                  referrer: TeamsUser) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.process.wait, 15)

    banner = await bot.banner(referrer, "referral.send", {"draftId": draft_id})  # the review card stays
    assert banner.startswith(TRY_AGAIN), banner
    before = len(bot.connector.calls)
    typed = await bot.post(referrer.message(bot.service_url, "status"))  # `say` would settle the outbox first
    assert typed.status == 202
    posted = [call.body for call in bot.connector.calls[before:] if call.method == "POST"]
    assert len(posted) == 1 and TRY_AGAIN.split(". ")[0] in str(posted[0]), posted

    await asyncio.to_thread(server.start_again)
    clock.advance(dt.timedelta(minutes=1))
    sent = await bot.act(referrer, "referral.send", {"draftId": draft_id})  # the same click, a minute later
    assert "referral.send" not in actions(sent)
    assert "VD-" in str(sent), sent
    assert await bot.deliver() == 1


#: How long Teams waits for the bot's answer to a click before it shows the user an error.
TEAMS_WAITS_SECONDS = 5


async def test_a_click_on_a_draft_another_session_holds_is_answered_within_teams_wait(
        postgres: PostgresServer, tmp_path: Path, clock: ManualClock, referrer: TeamsUser) -> None:
    """Another instance's step holds the draft's row (it is frozen, or its client vanished and the server has not
    noticed yet): the click is answered "probeer zo opnieuw" before Teams gives up, not when that session ends."""
    url = await migrated_postgres_url(postgres)
    with smtp_server(tls="none") as relay:
        settings = _settings(tmp_path, url, relay.port)
        async with running_bot(create_app(settings, clock=clock, run_worker=False)) as bot:
            draft_id, _ = await reach_review(bot, referrer)
            holder = await asyncpg.connect(url.split("?", 1)[0])
            try:
                await holder.execute("BEGIN")
                await holder.execute("SELECT 1 FROM drafts WHERE id = $1 FOR UPDATE", draft_id)
                started = time.monotonic()
                click = asyncio.create_task(bot.banner(referrer, "referral.send", {"draftId": draft_id}))
                done, _ = await asyncio.wait([click], timeout=TEAMS_WAITS_SECONDS)
                waited = time.monotonic() - started
            finally:
                await holder.execute("ROLLBACK")
                await holder.close()
            banner = await asyncio.wait_for(click, 30)
            assert done, f"no answer within Teams' {TEAMS_WAITS_SECONDS} s ({waited:.1f} s): it waited for the lock"
            assert banner.startswith(TRY_AGAIN), banner
            again = await bot.answer(referrer, "referral.send", {"draftId": draft_id})
            assert "wordt verstuurd" in str(again), "the same click works once the lock is gone"


async def test_a_click_on_a_full_disk_says_try_again_soon_not_start_over(
        tmp_path: Path, clock: ManualClock, referrer: TeamsUser, caplog: pytest.LogCaptureFixture) -> None:
    """The embedded SQLite file's disk full: reads answer, every write is refused. The click is told to try again
    soon with its card kept, and works once the disk has room; it was told "Er ging iets mis ... Begin opnieuw",
    though the draft and its data were intact, and each click logged a traceback."""
    with small_disk(tmp_path / "disk") as disk:
        settings = Settings.from_mapping({"BOT_DATA_DIR": str(disk / "data"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD})
        async with running_bot(create_app(settings, clock=clock, run_worker=False)) as bot:
            draft_id, _ = await reach_review(bot, referrer)
            with full(disk):
                banner = await bot.banner(referrer, "referral.edit", {"draftId": draft_id})
            assert banner.startswith(TRY_AGAIN), banner
            edit = await bot.act(referrer, "referral.edit", {"draftId": draft_id})  # the same click, with room
            assert "referral.details" in actions(edit), edit
    refused = [record for record in caplog.records if record.getMessage().startswith("card action not handled")]
    assert [record.getMessage() for record in refused] == ["card action not handled: database full"]
    assert not [record for record in caplog.records if record.exc_info], "no traceback per click"


# --- audit (real people in real teams): what a colleague types after a reference ---------------------------------

GROUP_CHAT = "19:kg-overleg@thread.v2"


async def test_a_family_s_data_typed_after_a_reference_is_not_repeated_by_the_bot_in_a_group_chat(
        bot: BotDriver, referrer: TeamsUser) -> None:
    """A colleague in the team's group chat types what the parents said after the reference. The bot's answer
    (which nobody can delete) must not repeat it for everyone there, and the colleague is told to delete it."""
    group = TeamsUser(referrer.aad_object_id, referrer.name, GROUP_CHAT, conversation_type="groupChat")
    [reply] = await bot.say(group, "<at>Veilig doorverwijzen</at> intrekken VD-20261128-K7M2QX Sofie Peeters belde")
    said = str(reply.get("text") or reply.get("attachments"))
    assert "sofie peeters" not in said.lower(), f"the bot repeats the family's data in the group chat: {said!r}"
    assert "Doorverwijzing VD-20261128-K7M2QX niet gevonden" in said, "the reference alone is looked up"
    assert cards.text("nl", "client_data_beside_command.shared") in said, "told to delete it, for all to read"


async def test_a_family_s_data_typed_after_a_reference_in_the_personal_chat_is_not_echoed(
        bot: BotDriver, referrer: TeamsUser) -> None:
    [reply] = await bot.say(referrer, "verbeter VD-20261128-K7M2QX gsm 0470 12 34 56")
    said = str(reply.get("text") or reply.get("attachments"))
    assert "0470 12 34 56" not in said, f"the bot's own message now holds the family's phone number: {said!r}"
    assert cards.text("nl", "client_data_beside_command.personal") in said


@pytest.mark.parametrize(("command", "verb"), [("intrekken Sofie Peeters belde", "consent.withdraw"),
                                               ("verbeter gsm 0470 12 34 56", "correction.start"),
                                               ("withdraw VD-2026-K7M2QX", "consent.withdraw")])
async def test_a_reference_command_without_a_valid_reference_shows_its_usage_not_what_was_typed(
        bot: BotDriver, referrer: TeamsUser, command: str, verb: str) -> None:
    """No reference in it: the command's usage (and the warning when it looks like a family's data), never the
    words typed ("Doorverwijzing SOFIE PEETERS BELDE niet gevonden" before)."""
    [reply] = await bot.say(referrer, command)
    said = reply["text"]
    assert cards.text("nl", f"reference_usage.{verb}") in said
    typed = command.partition(" ")[2]
    assert typed.upper() not in said.upper() and typed.split()[0].upper() not in said.upper(), said
    assert (cards.text("nl", "client_data_beside_command.personal") in said) == ("VD-" not in command)


@pytest.mark.parametrize("command", ["withdraw consent {reference}", "intrekken toestemming {reference}",
                                     "verbeter telefoonnummer {reference}"])
async def test_a_reference_typed_in_a_natural_sentence_is_found(
        bot: BotDriver, referrer: TeamsUser, command: str) -> None:
    """"withdraw consent VD-…" names a referral the bot keeps: it is not "not found (any more)"."""
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    await bot.deliver()
    [sent] = await bot.services.referrals.for_referrer(referrer.aad_object_id)
    [reply] = await bot.say(referrer, command.format(reference=sent.reference))
    said = str(reply.get("text") or reply["attachments"][0]["content"]["body"][0]["text"])
    assert "niet gevonden" not in said and "not found" not in said, said


async def test_two_references_in_one_command_are_not_half_handled(bot: BotDriver, referrer: TeamsUser) -> None:
    """A colleague records the withdrawals of two families at once: "intrekken VD-… en VD-…". The bot asked to
    confirm the first and said nothing of the second, so the colleague confirmed, believed both recorded, and the
    second family's data stayed at the OCMW. Now neither is taken for the other: the bot names both and asks for
    one message each, and nothing is recorded yet, in Dutch and in English."""
    for _ in range(2):
        draft_id, _ = await reach_review(bot, referrer)
        await bot.act(referrer, "referral.send", {"draftId": draft_id})
    await bot.deliver()
    first, second = [sent.reference for sent in await bot.services.referrals.for_referrer(referrer.aad_object_id)]
    english = dataclasses.replace(referrer, locale="en-US")
    for user, typed, word in [(referrer, f"intrekken {first.lower()} en {second}.", "intrekken"),
                              (english, f"withdraw {first}, {second}", "withdraw")]:
        [reply] = await bot.say(user, typed)
        assert not reply.get("attachments"), "a confirmation for one of the two"
        said = reply["text"]
        assert f"{word} {first}" in said and f"{word} {second}" in said, said
    for reference in (first, second):
        assert (await bot.services.referrals.get(reference)).state == "sent"  # type: ignore[union-attr]
