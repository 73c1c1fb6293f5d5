"""Client data typed as a chat message: recognised, answered with a warning in every scope, never logged."""

from __future__ import annotations

import logging
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cards
from bot.referral.chat_privacy import looks_like_client_data
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver

LOOKS_LIKE_CLIENT_DATA = [
    "Sofie Peeters",
    "Jan de Smet",
    "Lies van den Broeck",
    "nieuw Sofie Peeters",
    "Ik zag vandaag Sofie Peeters uit Meerdonk",
    "sofie.peeters@example.be",
    "mail naar s.peeters+kg@telenet.be aub",
    "0470 12 34 56",
    "0470\u202f12\u202f34\u202f56",  # narrow no-break spaces, pasted from a web page
    "bel +32 470 12 34 56 aub",
    "03/123.45.67",
    "Kerkstraat 12",
    "kerkstraat 12 bus 3",
    "Kerkstraat, 9170 Meerdonk",
    "9170 Meerdonk, stationsstraat",
    "rue de la Station 5, 1000 Brussel",
    "85.07.30-033.28",
    "85073003328",
    "<at>Veilig doorverwijzen</at> Sofie Peeters, Kerkstraat 12",
]
ORDINARY_MESSAGES = [
    "wat is het weer",
    "hoe werkt dit?",
    "Ik heb een vraag over de werking van de bot.",
    "Hallo Team",
    "Goedemorgen Olga",
    "Bedankt Olga!",
    "Olga",
    "Dank je wel",
    "Kind en Gezin",
    "Nieuwe Doorverwijzing",
    "Kan het OCMW Sint-Gillis-Waas mij bellen?",
    "Is dit het kanaal van het OCMW?",
    "OCMW SGW",
    "status VD-20261128-K7M2QX",
    "Wanneer wordt VD-20261128-K7M2QX-2 bevestigd?",
    "ik ben onderweg, 5 minuten",
    "de afspraak is op 28/11/2026 om 10:00",
    "In 2026 doen we dit anders",
    "I will call them on Monday",
    "<at>Veilig doorverwijzen</at> koppel K7M2-QX4P",
    "",
]


@pytest.mark.parametrize("message", LOOKS_LIKE_CLIENT_DATA)
def test_names_addresses_phone_numbers_and_e_mail_addresses_are_recognised(message: str) -> None:
    assert looks_like_client_data(message)


@pytest.mark.parametrize("message", ORDINARY_MESSAGES)
def test_ordinary_messages_references_dates_and_the_bots_own_words_are_not(message: str) -> None:
    assert not looks_like_client_data(message)


@pytest.mark.parametrize("message", ["Zoë Öztürk", "Ik zag vandaag Zoë Öztürk", "Émile Dubois"])
def test_a_message_typed_in_decomposed_form_is_recognised_like_its_composed_form(message: str) -> None:
    """A Mac keyboard sends ë as e + U+0308: the same name, which must not slip past the warning."""
    assert looks_like_client_data(message), "the composed form is recognised"
    assert looks_like_client_data(unicodedata.normalize("NFD", message))


@given(st.text(max_size=300))
def test_any_text_gets_an_answer_without_an_error(message: str) -> None:
    assert looks_like_client_data(message) in {True, False}


# -- over HTTP, in each scope -----------------------------------------------------------------------

TYPED = "Sofie Peeters, Kerkstraat 12, 9170 Meerdonk, 0470 12 34 56, sofie.peeters@example.be"
TYPED_VALUES = ["Sofie", "Peeters", "Kerkstraat", "Meerdonk", "0470 12 34 56", "470123456", "sofie.peeters@example.be"]


def in_scope(scope: str, locale: str = "nl-BE") -> tuple[TeamsUser, str]:
    """The same worker in a personal chat, a channel or a group chat; and which warning fits there."""
    if scope == "personal":
        return TeamsUser("aad-referrer-1", "An Verpleeg", "a:personal-referrer", locale), "personal"
    if scope == "channel":
        return TeamsUser("aad-referrer-1", "An Verpleeg", "19:kg-team-noord@thread.tacv2;messageid=1700000000009",
                         locale, channel=True), "shared"
    return TeamsUser("aad-referrer-1", "An Verpleeg", "19:kg-overleg@thread.v2", locale,
                     conversation_type="groupChat"), "shared"


SCOPES = ["personal", "channel", "groupChat"]


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("lang", cards.LANGUAGES)
async def test_typed_client_data_is_answered_with_the_warning_and_kept_out_of_the_log(
    bot: BotDriver, caplog: pytest.LogCaptureFixture, scope: str, lang: cards.Language
) -> None:
    user, where = in_scope(scope, "en-US" if lang == "en" else "nl-BE")
    caplog.set_level(logging.DEBUG)

    [reply] = await bot.say(user, f"<at>Veilig doorverwijzen</at> {TYPED}")

    assert reply["text"] == cards.text(lang, f"client_data_in_chat.{where}")
    assert not reply.get("attachments")
    assert "client data typed as a chat message" in caplog.text, "the fact is logged"
    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    assert [value for value in TYPED_VALUES if value in logged] == []


@pytest.mark.parametrize("scope", SCOPES)
async def test_the_warning_fits_the_scope_and_where_others_read_says_to_delete(bot: BotDriver, scope: str) -> None:
    user, where = in_scope(scope)
    [reply] = await bot.say(user, "<at>Veilig doorverwijzen</at> 0470 12 34 56")
    assert reply["text"] == cards.text("nl", f"client_data_in_chat.{where}")
    if where == "shared":
        assert "Verwijder het meteen" in reply["text"] and "iedereen in dit gesprek" in reply["text"]


#: Where Teams keeps a pasted image (the connector's attachment store); the bot never needs to fetch it.
IMAGE_URL = "https://smba.trafficmanager.net/emea/v3/attachments/0-weu-d3-7f1c2a9b/views/original"
#: What Teams attaches: a pasted image and its text/html layout ("Send and receive inline images"), or a file
#: sent in the personal chat, with its name.
ATTACHED = {
    "photo": [{"contentType": "image/png", "contentUrl": IMAGE_URL},
              {"contentType": "text/html",
               "content": f'<p><img src="{IMAGE_URL}" width="250" height="320"'
                          ' itemtype="http://schema.skype.com/AMSImage" alt="image"></p>'}],
    "file": [{"contentType": "application/vnd.microsoft.teams.file.download.info", "name": "Peeters-Sofie-id.pdf",
              "contentUrl": "https://contoso.sharepoint.com/personal/an/Documents/Peeters-Sofie-id.pdf",
              "content": {"downloadUrl": IMAGE_URL, "uniqueId": "1150d938", "fileType": "pdf"}}],
}


@pytest.mark.parametrize("attached", sorted(ATTACHED))
@pytest.mark.parametrize("scope", SCOPES)
async def test_a_pasted_photo_is_answered_with_the_client_data_warning_not_with_i_did_not_understand(
    bot: BotDriver, caplog: pytest.LogCaptureFixture, scope: str, attached: str
) -> None:
    """A referrer pastes a photo of the family's letter or identity card, or sends a file: Teams sends the
    attachment (and the image's layout as text/html) with no text of its own. It got "Dat begreep ik niet, typ
    nieuw ...", so the photo stayed in the chat, where in a channel others read along too."""
    user, where = in_scope(scope)
    caplog.set_level(logging.DEBUG)
    await bot.settle()
    before = len(bot.connector.calls)
    activity = user.message(bot.service_url, "" if where == "personal" else "<at>Veilig doorverwijzen</at>")
    activity["attachments"] = ATTACHED[attached]

    assert (await bot.post(activity)).status == 202

    [reply] = [call.body for call in bot.connector.calls[before:] if call.method == "POST"]
    assert reply["text"] == cards.text("nl", f"attachment_in_chat.{where}")
    assert "foto of bestand" in reply["text"] and "Verwijder" in reply["text"]
    if where == "shared":
        assert "iedereen in dit gesprek" in reply["text"]
    assert "attachment sent as a chat message" in caplog.text, "the fact is logged"
    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    assert IMAGE_URL not in logged and "Peeters" not in logged


async def test_a_command_typed_with_a_photo_is_still_the_command(bot: BotDriver, referrer: TeamsUser) -> None:
    activity = referrer.message(bot.service_url, "status")
    activity["attachments"] = ATTACHED["photo"]
    await bot.settle()
    before = len(bot.connector.calls)
    assert (await bot.post(activity)).status == 202
    [reply] = [call.body for call in bot.connector.calls[before:] if call.method == "POST"]
    assert reply.get("attachments"), "the status card"


async def test_commands_still_win_over_the_warning(bot: BotDriver, referrer: TeamsUser) -> None:
    [consent] = await bot.say(referrer, "nieuw")
    assert consent["attachments"], "nieuw still starts a referral"
    [help_card] = await bot.say(referrer, "Hallo")
    assert help_card["attachments"]
