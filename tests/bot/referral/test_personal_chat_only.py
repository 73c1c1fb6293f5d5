"""The referral dialogue runs only in the personal chat: in a channel or group chat every step gets the card that
sends the worker there, no draft is made, and a draft from the personal chat is never continued elsewhere."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import cards
from bot.app import SERVICES_KEY, create_app
from bot.config import Settings
from bot.referral.dialogue import Actor, is_personal_chat, personal_chat_url
from bot.referral.drafts import DraftState
from tests.conftest import ZIP_PASSWORD
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, serve
from tests.support.card_reading import actions, all_actions, texts
from tests.support.clock import ManualClock
from tests.support.referral_flow import CLIENT_FORM, CONSENT_ALL, PROTOCOL_ID, reach_review
from tests.support.sample_values import CLIENT_VALUES

APP_ID = "0b8a3c4e-1d2f-4a5b-9c6d-7e8f9a0b1c2d"
REFERRAL_VERBS = ["referral.consent", "referral.details", "referral.edit", "referral.send", "referral.cancel"]


def channel_member() -> TeamsUser:
    return TeamsUser("aad-referrer-1", "An Verpleeg", "19:kg-team-noord@thread.tacv2;messageid=1700000000009",
                     channel=True)


def group_chat_member() -> TeamsUser:
    return TeamsUser("aad-referrer-1", "An Verpleeg", "19:kg-overleg@thread.v2", conversation_type="groupChat")


SHARED = {"channel": channel_member, "groupChat": group_chat_member}


def draft_count(settings: Settings) -> int:
    with contextlib.closing(sqlite3.connect(settings.database_path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM drafts").fetchone()[0])


def is_the_personal_chat_card(card: dict[str, Any], lang: cards.Language = "nl") -> bool:
    return cards.text(lang, "personal_chat.title") in texts(card) and not actions(card)


def posted_card(posted: list[dict[str, Any]]) -> dict[str, Any]:
    [activity] = posted
    card: dict[str, Any] = activity["attachments"][0]["content"]
    return card


@pytest.mark.parametrize("scope", sorted(SHARED))
@pytest.mark.parametrize("command", ["nieuw", "<at>Veilig doorverwijzen</at> nieuw", "new referral"])
async def test_typing_nieuw_in_a_channel_or_group_chat_sends_the_worker_to_the_personal_chat(
    bot: BotDriver, settings: Settings, scope: str, command: str
) -> None:
    card = posted_card(await bot.say(SHARED[scope](), command))
    assert is_the_personal_chat_card(card)
    assert draft_count(settings) == 0


@pytest.mark.parametrize("scope", sorted(SHARED))
async def test_the_start_button_in_a_channel_or_group_chat_opens_no_draft(
    bot: BotDriver, settings: Settings, scope: str
) -> None:
    card = await bot.act(SHARED[scope](), "referral.start", {})
    assert is_the_personal_chat_card(card)
    assert "referral.consent" not in actions(card)
    assert draft_count(settings) == 0


@pytest.mark.parametrize("scope", sorted(SHARED))
@pytest.mark.parametrize("verb", REFERRAL_VERBS)
async def test_every_referral_verb_in_a_channel_or_group_chat_gets_the_personal_chat_card(
    bot: BotDriver, settings: Settings, scope: str, verb: str
) -> None:
    card = await bot.act(SHARED[scope](), verb, {"draftId": "any-draft", **CONSENT_ALL, **CLIENT_FORM})
    assert is_the_personal_chat_card(card)
    assert not any(value in texts(card) for value in CLIENT_VALUES)
    assert draft_count(settings) == 0


@pytest.mark.parametrize("scope", sorted(SHARED))
@pytest.mark.parametrize("verb", REFERRAL_VERBS)
async def test_a_draft_from_the_personal_chat_is_never_continued_in_a_channel_or_group_chat(
    bot: BotDriver, referrer: TeamsUser, scope: str, verb: str
) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    before = await bot.services.drafts.get(draft_id)
    assert before is not None and before.state is DraftState.REVIEW

    elsewhere = SHARED[scope]()
    assert elsewhere.aad_object_id == referrer.aad_object_id, "the same worker"
    card = await bot.act(elsewhere, verb, {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL, **CLIENT_FORM})

    assert is_the_personal_chat_card(card)
    assert not any(value in texts(card) for value in CLIENT_VALUES)
    after = await bot.services.drafts.get(draft_id)
    assert after == before, "the draft is untouched"
    sent = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert "referral.send" not in actions(sent) and "VD-" in texts(sent), "and it goes on in the personal chat"


async def test_the_personal_chat_card_links_to_the_bots_chat_when_the_app_id_is_known(
    tmp_path: Path, clock: ManualClock
) -> None:
    # With an app id every request needs a Bot Framework token, so ask the wired dialogue directly.
    settings = Settings.from_mapping({"BOT_DATA_DIR": str(tmp_path / "data"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
                                      "MicrosoftAppId": APP_ID, "MicrosoftAppPassword": "not-used-here",
                                      "MicrosoftAppTenantId": "72f988bf-0000-4000-8000-000000000001"})
    app = create_app(settings, clock=clock, run_worker=False)
    actor = Actor(user_id="aad-referrer-1", display_name="An Verpleeg", conversation_id="19:kg@thread.v2",
                  lang="nl", conversation_type="groupChat")
    async with serve(app):
        card = await app[SERVICES_KEY].dialogue.on_action(actor, "referral.start", {})
    [button] = all_actions(card)
    assert button["type"] == "Action.OpenUrl"
    assert button["url"] == f"https://teams.microsoft.com/l/chat/0/0?users=28:{APP_ID}"


@pytest.mark.parametrize(
    ("conversation_type", "personal"),
    [("personal", True), ("", True), ("channel", False), ("groupChat", False), ("meeting", False), ("Personal", False)],
)
def test_only_a_personal_chat_or_one_that_says_nothing_counts_as_personal(
    conversation_type: str, personal: bool
) -> None:
    actor = Actor(user_id="u", display_name="U", conversation_id="c", lang="nl", conversation_type=conversation_type)
    assert is_personal_chat(actor) is personal


async def test_a_conversation_without_a_type_that_says_it_is_a_group_is_not_personal(
    bot: BotDriver, settings: Settings
) -> None:
    user = TeamsUser("aad-referrer-1", "An Verpleeg", "19:kg-overleg@thread.v2")
    activity = user.card_action(bot.service_url, "referral.start", {})
    del activity["conversation"]["conversationType"]
    activity["conversation"]["isGroup"] = True
    response = await bot.post(activity)
    assert response.status == 200
    assert is_the_personal_chat_card((await response.json())["value"])
    assert draft_count(settings) == 0


async def test_the_playgrounds_personal_chat_without_a_type_runs_the_referral(
    bot: BotDriver, settings: Settings
) -> None:
    user = TeamsUser("aad-referrer-1", "An Verpleeg", "a:playground-personal")
    activity = user.card_action(bot.service_url, "referral.start", {})
    del activity["conversation"]["conversationType"]
    response = await bot.post(activity)
    assert "referral.consent" in actions((await response.json())["value"])
    assert draft_count(settings) == 1


def test_without_an_app_id_there_is_no_link() -> None:
    assert personal_chat_url("") == ""
    assert personal_chat_url(APP_ID) == f"https://teams.microsoft.com/l/chat/0/0?users=28:{APP_ID}"
    assert personal_chat_url("a b&c=d") == "https://teams.microsoft.com/l/chat/0/0?users=28:a%20b%26c%3Dd"


# -- the welcome in a team or group chat ----------------------------------------------------------

INSTALLED_IN = {
    "team": TeamsUser("aad-owner-1", "Tina Eigenaar", "19:ocmw-welzijnshuis@thread.tacv2", channel=True),
    "groupChat": TeamsUser("aad-owner-1", "Tina Eigenaar", "19:kg-overleg@thread.v2", conversation_type="groupChat"),
}


@pytest.mark.parametrize("scope", sorted(INSTALLED_IN))
async def test_added_to_a_team_or_group_chat_the_bot_explains_the_ocmw_channel_without_a_start_button(
    bot: BotDriver, scope: str
) -> None:
    response = await bot.post(INSTALLED_IN[scope].bot_installed(bot.service_url))
    assert response.status == 202
    [card] = bot.connector.sent_cards()
    assert all_actions(card) == [], "no start button where others read along"
    assert cards.text("nl", "welcome_shared.title") in texts(card)
    assert "**koppel**" in texts(card) and "**status**" in texts(card)


async def test_added_in_the_personal_chat_the_bot_still_offers_the_start_button(
    bot: BotDriver, referrer: TeamsUser
) -> None:
    await bot.post(referrer.bot_installed(bot.service_url))
    [card] = bot.connector.sent_cards()
    assert "referral.start" in actions(card)


@pytest.mark.parametrize("scope", sorted(SHARED))
async def test_help_in_a_channel_or_group_chat_shows_the_shared_welcome(bot: BotDriver, scope: str) -> None:
    card = posted_card(await bot.say(SHARED[scope](), "<at>Veilig doorverwijzen</at> hulp"))
    assert all_actions(card) == []
    assert cards.text("nl", "welcome_shared.title") in texts(card)


@pytest.mark.parametrize("scope", sorted(SHARED))
async def test_an_unknown_message_in_a_channel_or_group_chat_points_to_what_works_there(
    bot: BotDriver, scope: str
) -> None:
    [reply] = await bot.say(SHARED[scope](), "<at>Veilig doorverwijzen</at> wat is het weer")
    assert reply["text"] == cards.text("nl", "unknown_command_shared")
