"""The whole referral dialogue over real HTTP, the package opened by the real 7-Zip."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event

import cards
from bot.app import create_app
from bot.config import Settings
from bot.core.protocols import load_registry
from bot.core.reference import is_reference
from tests.conftest import ZIP_PASSWORD
from tests.support import sevenzip
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import (
    actions,
    attention_texts,
    draft_id_of,
    input_ids,
    input_values,
    links,
    read_aloud,
    texts,
)
from tests.support.clock import ManualClock
from tests.support.family_information import NUDGES, missing_points
from tests.support.keyvault_provider import until
from tests.support.referral_flow import (
    CLIENT_FORM,
    CONSENT_ALL,
    MAILBOX,
    PROTOCOL_ID,
    open_consent,
    reach_review,
)


def outbox_files(settings: Settings) -> list[Path]:
    return sorted(settings.outbox_dir.glob("*.eml")) if settings.outbox_dir.exists() else []


async def test_install_shows_the_welcome_card_with_a_start_button(bot: BotDriver, referrer: TeamsUser) -> None:
    response = await bot.post(referrer.bot_installed(bot.service_url))
    assert response.status == 202
    cards = bot.connector.sent_cards()
    assert len(cards) == 1
    assert "referral.start" in actions(cards[0])


@pytest.mark.parametrize("command", ["hulp", "help", "Hallo!", "<at>Veilig doorverwijzen</at> hulp"])
async def test_help_commands_show_the_welcome_card(bot: BotDriver, referrer: TeamsUser, command: str) -> None:
    posted = await bot.say(referrer, command)
    assert "referral.start" in actions(posted[0]["attachments"][0]["content"])


async def test_an_unknown_message_gets_a_pointer_not_a_card(bot: BotDriver, referrer: TeamsUser) -> None:
    posted = await bot.say(referrer, "wat is het weer")
    assert posted[0]["text"] and "nieuw" in posted[0]["text"]
    assert not posted[0].get("attachments")


async def test_start_button_answers_with_the_consent_card(bot: BotDriver, referrer: TeamsUser) -> None:
    card = await bot.act(referrer, "referral.start", {})
    assert set(input_ids(card)) == {"ocmw", *CONSENT_ALL}


async def test_whole_referral_sends_one_aes_zip_that_7zip_opens(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, tmp_path: Path
) -> None:
    draft_id, review = await reach_review(bot, referrer)
    assert MAILBOX in texts(review) and "Meerdonk" in texts(review)

    queued = await bot.act(referrer, "referral.send", {"draftId": draft_id})

    reference = _reference_in(queued)
    assert "OCMW Sint-Gillis-Waas" in texts(queued) and MAILBOX in texts(queued)
    assert "referral.send" not in actions(queued)
    assert outbox_files(settings) == [], "queued, not yet delivered"
    assert await bot.deliver() == 1
    [eml] = outbox_files(settings)
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["To"] == MAILBOX
    assert reference in message["Subject"] and reference in message["Message-ID"]
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == f"{reference}.zip"
    package = attachment.get_content()

    result = sevenzip.extract(package, ZIP_PASSWORD, tmp_path / "open")
    assert result.returncode == 0, result.stdout + result.stderr
    inside = json.loads((tmp_path / "open" / "doorverwijzing.json").read_text("utf-8"))
    assert inside["reference"] == reference and inside["protocolId"] == PROTOCOL_ID
    assert inside["client"]["firstName"] == "Zoëlle"
    assert inside["client"]["phone"] == "+32470987654"
    assert inside["client"]["address"]["houseNumber"] == "127 bus 34"
    assert inside["consent"]["consentGiven"] is True
    assert inside["consent"]["textVersion"] == cards.consent_text_version(), "the texts the parents heard"
    listing = (tmp_path / "open" / "doorverwijzing.txt").read_bytes().decode("utf-8")
    assert f"kaart van de doorverwijzer: {cards.consent_text_version()}\r\n" in listing

    wrong = sevenzip.extract(package, "WRONGPASSWORD-123456", tmp_path / "wrong")
    assert wrong.returncode != 0
    assert "AES-256" in sevenzip.technical_listing(package, ZIP_PASSWORD)


async def test_register_records_the_transfer_without_client_data(
    bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    reference = _reference_in(await bot.act(referrer, "referral.send", {"draftId": draft_id}))
    await bot.deliver()
    import sqlite3

    with sqlite3.connect(settings.database_path) as db:
        rows = db.execute("SELECT event, actor_id, protocol_id, data_categories FROM register WHERE reference = ?",
                          (reference,)).fetchall()
    assert [row[0] for row in rows] == ["referral_started", "consent_confirmed", "package_built", "queued",
                                        "delivered"]
    assert [row[1] for row in rows] == ["aad-referrer-1"] * 4 + ["bot:delivery"], "the bot delivers"
    assert {row[2] for row in rows} == {PROTOCOL_ID}
    assert [bool(row[3]) for row in rows] == [False, False, True, True, True], "only the transfer has categories"
    assert "contact:phone" in rows[-1][3]


async def test_the_register_records_which_consent_text_version_was_read(
    bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    import sqlite3

    with sqlite3.connect(settings.database_path) as db:
        [(detail,)] = db.execute("SELECT detail FROM register WHERE event = 'consent_confirmed'").fetchall()
    assert detail.endswith(f"; consent text version {cards.consent_text_version()}")
    draft = await bot.services.drafts.get(draft_id)
    assert draft is not None and draft.consent is not None
    assert draft.consent.text_version == cards.consent_text_version()


async def test_english_locale_gets_english_cards(bot: BotDriver) -> None:
    user = TeamsUser(aad_object_id="aad-en", name="Eve", conversation_id="a:en", locale="en-GB")
    posted = await bot.say(user, "new")
    english = texts(posted[0]["attachments"][0]["content"])
    dutch = texts((await bot.say(TeamsUser("aad-nl", "Nel", "a:nl"), "nieuw"))[0]["attachments"][0]["content"])
    assert english != dutch
    assert "Continue" in english and "Verder" in dutch


# -- what the parents are told (issue 12) -------------------------------------------------------

PUBLIC_BASE_URL = "https://vd.example.be"
SHEET_URL = f"{PUBLIC_BASE_URL}/informatieblad/{PROTOCOL_ID}"


@pytest.fixture
async def public_bot(tmp_path: Path, clock: ManualClock) -> AsyncIterator[BotDriver]:
    """The bot with `PUBLIC_BASE_URL` set, as in production: its consent card links the information sheet."""
    settings = Settings.from_mapping({"BOT_DATA_DIR": str(tmp_path / "data"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
                                      "PUBLIC_BASE_URL": PUBLIC_BASE_URL})
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as driver:
        yield driver


async def test_the_consent_card_tells_the_parents_every_point_and_links_their_sheet(
    public_bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    card = await open_consent(public_bot, referrer)
    told = read_aloud(card)

    assert missing_points(told) == {}
    [protocol] = load_registry(settings.protocols_dir).all()
    assert f"DPO Opgroeien regie: {protocol.sender_dpo}" in told
    assert f"DPO OCMW Sint-Gillis-Waas: {protocol.recipient_dpo}" in told
    assert NUDGES.search(told) is None, NUDGES.search(told)
    assert "niets mis" not in told
    assert links(card) == [SHEET_URL]
    assert f"Tekstversie {cards.consent_text_version()}" in told
    async with public_bot.session.get(public_bot.bot_url + SHEET_URL.removeprefix(PUBLIC_BASE_URL)) as sheet:
        assert sheet.status == 200 and "Informatie voor het gezin" in await sheet.text()


async def test_the_english_card_links_the_same_dutch_sheet_and_makes_no_promise(public_bot: BotDriver) -> None:
    user = TeamsUser(aad_object_id="aad-en", name="Eve", conversation_id="a:en", locale="en-GB")
    card = (await public_bot.say(user, "new"))[0]["attachments"][0]["content"]
    told = read_aloud(card)
    assert links(card) == [SHEET_URL] and "(Dutch)" in told
    assert "Vlaamse Toezichtcommissie" in told and "contact@vlaamsetoezichtcommissie.be" in told
    assert NUDGES.search(told) is None, NUDGES.search(told)


async def test_without_a_public_address_the_card_has_no_sheet_link(bot: BotDriver, referrer: TeamsUser) -> None:
    card = await open_consent(bot, referrer)
    assert links(card) == [] and "informatieblad" not in read_aloud(card).lower()
    assert missing_points(read_aloud(card)) == {}, "everything is still said on the card"


async def test_the_consent_button_carries_the_text_version_shown(bot: BotDriver, referrer: TeamsUser) -> None:
    card = await open_consent(bot, referrer)
    assert actions(card)["referral.consent"]["textVersion"] == cards.consent_text_version()


async def test_a_card_of_an_earlier_text_version_is_read_again_before_consent_counts(
    bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    """A card shown before the texts changed (the bot restarted in between): its ticks do not count."""
    draft_id = draft_id_of(await open_consent(bot, referrer))
    data = {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL, "textVersion": "2026-11-1"}

    again = await bot.act(referrer, "referral.consent", data)

    assert attention_texts(again) == [cards.text("nl", "consent.changed")]
    assert set(input_values(again).values()) == {PROTOCOL_ID, "false"}, "the points are ticked anew"
    import sqlite3

    with sqlite3.connect(settings.database_path) as db:
        assert db.execute("SELECT count(*) FROM register WHERE event = 'consent_confirmed'").fetchone() == (0,)
    details = await bot.act(referrer, "referral.consent", {**data, "textVersion": cards.consent_text_version()})
    assert "referral.details" in actions(details)


@pytest.mark.parametrize("missing", ["ocmw", *CONSENT_ALL])
async def test_each_missing_consent_point_returns_the_card_marked(
    bot: BotDriver, referrer: TeamsUser, missing: str
) -> None:
    draft_id = draft_id_of(await open_consent(bot, referrer))
    data = {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL}
    data[missing] = "false" if missing != "ocmw" else ""

    card = await bot.act(referrer, "referral.consent", data)

    assert "referral.consent" in actions(card), "the same card comes back"
    assert len(attention_texts(card)) == 2, "one summary line and one line under the missing point"
    ticked = {name: value for name, value in input_values(card).items() if name in CONSENT_ALL}
    assert ticked == {name: ("false" if name == missing else "true") for name in CONSENT_ALL}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("phone", "0470 12"),
        ("phone", "hallo"),
        ("email", "zoelle@@example"),
        ("firstName", ""),
        ("firstName", "Zoë\u0007"),
        ("firstName", "Z" * 101),
        ("lastName", "1234"),
        ("houseNumber", "bus"),
        ("postalCode", "91"),
        ("postalCode", "2000"),
        ("street", ""),
    ],
)
async def test_invalid_data_returns_the_card_with_the_error_and_the_typed_values(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, field: str, value: str
) -> None:
    draft_id = draft_id_of(await open_consent(bot, referrer))
    await bot.act(referrer, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    form = {**CLIENT_FORM, field: value}

    card = await bot.act(referrer, "referral.details", {"draftId": draft_id, **form})

    assert "referral.details" in actions(card)
    errors = attention_texts(card)
    assert len(errors) == 2, errors  # summary + the one field
    values = input_values(card)
    assert values[field] == value.strip()[:100], "what was typed comes back (cut to the field's maximum)"
    other = "street" if field != "street" else "firstName"
    assert values[other] == CLIENT_FORM[other]
    assert outbox_files(settings) == []


async def test_out_of_area_postal_code_says_to_refer_to_the_own_ocmw(bot: BotDriver, referrer: TeamsUser) -> None:
    draft_id = draft_id_of(await open_consent(bot, referrer))
    await bot.act(referrer, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    card = await bot.act(referrer, "referral.details", {"draftId": draft_id, **CLIENT_FORM, "postalCode": "9100"})
    [_, error] = attention_texts(card)
    assert "Sint-Gillis-Waas" in error


async def test_no_phone_and_no_email_is_refused(bot: BotDriver, referrer: TeamsUser) -> None:
    draft_id = draft_id_of(await open_consent(bot, referrer))
    await bot.act(referrer, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    card = await bot.act(referrer, "referral.details", {"draftId": draft_id, **CLIENT_FORM, "phone": "", "email": ""})
    assert len(attention_texts(card)) == 3  # summary, phone, e-mail


async def test_extra_fields_are_ignored_and_never_stored(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, tmp_path: Path
) -> None:
    draft_id = draft_id_of(await open_consent(bot, referrer))
    await bot.act(referrer, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    form = {**CLIENT_FORM, "diagnosis": "DIAGNOSE-GEHEIM", "notes": "NOTITIE-GEHEIM"}
    await bot.act(referrer, "referral.details", {"draftId": draft_id, **form})
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    await bot.deliver()
    [eml] = outbox_files(settings)
    package = next(email.message_from_bytes(eml.read_bytes(), policy=email.policy.default).iter_attachments())
    sevenzip.extract(package.get_content(), ZIP_PASSWORD, tmp_path / "x")
    for entry in (tmp_path / "x").iterdir():
        assert "GEHEIM" not in entry.read_text("utf-8")


async def test_edit_goes_back_to_the_filled_data_card(bot: BotDriver, referrer: TeamsUser) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    card = await bot.act(referrer, "referral.edit", {"draftId": draft_id})
    values = input_values(card)
    assert values["firstName"] == "Zoëlle" and values["email"] == "zoelle.vdbx@example.be"
    assert values["phone"].replace(" ", "") == "+32470987654"
    changed = await bot.act(referrer, "referral.details", {"draftId": draft_id, **values, "phone": "09 210 10 10"})
    assert "referral.send" in actions(changed) and "+32 9 210 10 10" in texts(changed)


async def test_send_on_a_review_card_showing_other_data_does_not_send_the_new_data(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, tmp_path: Path
) -> None:
    draft_id, review_shown_in_window_one = await reach_review(bot, referrer)
    assert "470 98 76 54" in texts(review_shown_in_window_one)
    stale_send = actions(review_shown_in_window_one)["referral.send"]

    # Window two: edit, another phone number, a new review card.
    edit = await bot.act(referrer, "referral.edit", {"draftId": draft_id})
    changed = {**input_values(edit), "phone": "0499 11 22 33"}
    review_two = await bot.act(referrer, "referral.details", {"draftId": draft_id, **changed})
    assert "499 11 22 33" in texts(review_two)

    # Window one: "Versturen" on the card that still shows 0470 98 76 54.
    answer = await bot.act(referrer, "referral.send", stale_send)

    if "referral.send" not in actions(answer):  # it was queued: what went out?
        await bot.deliver()
        [eml] = sorted(settings.outbox_dir.glob("*.eml"))
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        [attachment] = list(message.iter_attachments())
        result = sevenzip.extract(attachment.get_content(), ZIP_PASSWORD, tmp_path / "open")
        assert result.returncode == 0
        sent_phone = json.loads((tmp_path / "open" / "doorverwijzing.json").read_text("utf-8"))["client"]["phone"]
        assert sent_phone == "+32470987654", (
            f"the clicked review card showed 0470 98 76 54, the package carries {sent_phone}"
        )


async def _edit_the_phone_in_another_window(bot: BotDriver, referrer: TeamsUser, draft_id: str) -> dict[str, object]:
    edit = await bot.act(referrer, "referral.edit", {"draftId": draft_id})
    review = await bot.act(referrer, "referral.details", {"draftId": draft_id, **input_values(edit),
                                                          "phone": "0499 11 22 33"})
    assert "499 11 22 33" in texts(review)
    return review


def _sent_phone(settings: Settings, tmp_path: Path) -> str:
    [eml] = outbox_files(settings)
    package = next(email.message_from_bytes(eml.read_bytes(), policy=email.policy.default).iter_attachments())
    assert sevenzip.extract(package.get_content(), ZIP_PASSWORD, tmp_path / "open").returncode == 0
    return str(json.loads((tmp_path / "open" / "doorverwijzing.json").read_text("utf-8"))["client"]["phone"])


async def test_a_send_on_a_card_showing_other_data_sends_nothing_and_shows_the_data_as_it_is_now(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, tmp_path: Path
) -> None:
    draft_id, review_one = await reach_review(bot, referrer)
    review_two = await _edit_the_phone_in_another_window(bot, referrer, draft_id)
    stale_send = actions(review_one)["referral.send"]
    assert stale_send["draftId"] == draft_id and stale_send != actions(review_two)["referral.send"]
    assert "470987654" not in json.dumps(stale_send) and "Zoëlle" not in json.dumps(stale_send, ensure_ascii=False)

    answer = await bot.act(referrer, "referral.send", stale_send)
    assert attention_texts(answer) == [
        "Er is niets verstuurd: de gegevens zijn intussen aangepast in een ander venster. "
        "Kijk ze hieronder na en kies opnieuw Versturen."
    ]
    assert "499 11 22 33" in texts(answer) and "470 98 76 54" not in texts(answer)
    assert actions(answer)["referral.send"] == actions(review_two)["referral.send"]
    assert await bot.services.outbox.counts() == {}
    draft = await bot.services.drafts.get(draft_id)
    assert draft is not None and draft.state == "review", "the draft stays at review, nothing claimed"

    sent = await bot.act(referrer, "referral.send", actions(answer)["referral.send"])
    assert "VD-" in texts(sent) and "referral.send" not in actions(sent)
    await bot.deliver()
    assert _sent_phone(settings, tmp_path) == "+32499112233"


async def test_opnieuw_versturen_on_a_failed_send_after_the_data_changed_elsewhere_sends_nothing(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry button of a failed send carries the fingerprint of the review card it came from."""
    import sqlite3

    from bot.delivery.mail_outbox import Outbox

    def disk_full(*_: object, **__: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    draft_id, review = await reach_review(bot, referrer)
    with monkeypatch.context() as patch:
        patch.setattr(Outbox, "enqueue", disk_full)
        failed = await bot.act(referrer, "referral.send", actions(review)["referral.send"])
    retry = actions(failed)["referral.send"]
    assert retry == actions(review)["referral.send"], "the retry names the data the review card showed"
    await _edit_the_phone_in_another_window(bot, referrer, draft_id)

    answer = await bot.act(referrer, "referral.send", retry)
    assert attention_texts(answer)[0].startswith("Er is niets verstuurd: de gegevens zijn intussen aangepast")
    assert "499 11 22 33" in texts(answer) and await bot.services.outbox.counts() == {}


async def test_a_send_without_a_fingerprint_from_a_card_of_the_previous_version_still_sends(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, tmp_path: Path
) -> None:
    """Cards rendered before the fingerprint (and scripts, benchmarks) click {"draftId": ...}: sent as before."""
    draft_id, _ = await reach_review(bot, referrer)
    await _edit_the_phone_in_another_window(bot, referrer, draft_id)
    sent = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert "VD-" in texts(sent) and "referral.send" not in actions(sent)
    await bot.deliver()
    assert _sent_phone(settings, tmp_path) == "+32499112233", "the draft as it is now, as before"


async def test_cancel_discards_the_draft_and_sends_nothing(
    bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    draft_id, review = await reach_review(bot, referrer)
    reference = (await bot.services.drafts.get(draft_id)).reference  # type: ignore[union-attr]
    question = await bot.act(referrer, "referral.cancel", {"draftId": draft_id})
    assert "Zoëlle" not in texts(question), "the question holds the reference, not the data"
    assert actions(question)["referral.view"] == {"draftId": draft_id}
    back = await bot.act(referrer, "referral.view", {"draftId": draft_id})
    assert back == review, "Terug shows the review card as it was"
    card = await bot.act_confirmed(referrer, "referral.cancel", {"draftId": draft_id})
    assert "Zoëlle" not in texts(card) and reference in texts(card)
    assert "referral.start" in actions(card)
    assert outbox_files(settings) == []
    again = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert "referral.send" not in actions(again) and outbox_files(settings) == []
    assert "geannuleerd" in texts(again) and reference in texts(again), "a later click names what was cancelled"


async def test_a_replayed_send_is_not_sent_twice(bot: BotDriver, referrer: TeamsUser, settings: Settings) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    reference = _reference_in(await bot.act(referrer, "referral.send", {"draftId": draft_id}))
    replay = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert reference in texts(replay)
    await bot.deliver()
    assert len(outbox_files(settings)) == 1


async def test_a_colleague_cannot_act_on_someone_elses_draft(
    bot: BotDriver, referrer: TeamsUser, colleague: TeamsUser, settings: Settings
) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    card = await bot.act(colleague, "referral.send", {"draftId": draft_id})
    assert "referral.send" not in actions(card)
    edit = await bot.act(colleague, "referral.edit", {"draftId": draft_id})
    assert "Zoëlle" not in texts(edit)
    assert outbox_files(settings) == []


async def test_the_same_user_in_another_chat_cannot_act_on_the_draft(bot: BotDriver, referrer: TeamsUser) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    elsewhere = TeamsUser(referrer.aad_object_id, referrer.name, "19:some-group-chat")
    card = await bot.act(elsewhere, "referral.edit", {"draftId": draft_id})
    assert "Zoëlle" not in texts(card)


async def test_an_idle_draft_expires_after_30_minutes(
    bot: BotDriver, referrer: TeamsUser, clock: ManualClock, settings: Settings
) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    clock.advance(dt.timedelta(minutes=31))
    card = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert "referral.send" not in actions(card) and "referral.start" in actions(card)
    assert outbox_files(settings) == []
    assert "30 minuten" in texts(card)


async def test_the_expired_card_states_the_configured_idle_time(
    tmp_path: Path, clock: ManualClock, referrer: TeamsUser
) -> None:
    """DRAFT_TTL_MINUTES=10: the draft is wiped after 10 idle minutes, and the card says 10, not 30."""
    settings = Settings.from_mapping({"BOT_DATA_DIR": str(tmp_path / "data"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
                                      "DRAFT_TTL_MINUTES": "10"})
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as bot:
        draft_id, _ = await reach_review(bot, referrer)
        clock.advance(dt.timedelta(minutes=11))
        card = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert "verlopen" in texts(card) and "10 minuten" in texts(card) and "30" not in texts(card), texts(card)


async def test_unknown_draft_and_unknown_verb_get_a_clear_card(bot: BotDriver, referrer: TeamsUser) -> None:
    unknown = await bot.act(referrer, "referral.send", {"draftId": "does-not-exist"})
    assert "referral.start" in actions(unknown)
    verb = await bot.act(referrer, "referral.launch-missiles", {"draftId": "x"})
    assert "referral.start" in actions(verb)


async def test_no_referral_before_the_protocol_is_in_force(
    bot: BotDriver, referrer: TeamsUser, clock: ManualClock
) -> None:
    clock.current = dt.datetime(2026, 2, 28, 12, 0, tzinfo=dt.UTC)
    posted = await bot.say(referrer, "nieuw")
    card = posted[0]["attachments"][0]["content"]
    assert "referral.consent" not in actions(card)
    assert "OCMW" in texts(card)


async def test_a_protocol_that_ends_between_steps_stops_the_send(
    bot: BotDriver, referrer: TeamsUser, clock: ManualClock, settings: Settings, tmp_path: Path
) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    clock.current = dt.datetime(2026, 2, 1, 9, 0, tzinfo=dt.UTC)  # before 1 March: not in force
    card = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert "referral.send" not in actions(card)
    assert outbox_files(settings) == []


def _reference_in(card: dict[str, object]) -> str:
    import re

    found = set(re.findall(r"VD-[0-9]{8}-[A-Z0-9]{6}", texts(card)))
    assert len(found) == 1, found
    reference = found.pop()
    assert is_reference(reference)
    return reference


@pytest.mark.parametrize("fault", ["a mail header refuses a protocol value", "the disk is full"])
async def test_an_unexpected_error_while_sending_keeps_the_draft_for_another_try(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, fault: str,
) -> None:
    """Not only the expected send failure: whatever goes wrong before the commit, nothing is stranded."""
    import sqlite3

    from bot.delivery.mail_outbox import Outbox
    from bot.referral import sending

    draft_id, review = await reach_review(bot, referrer)

    quoted = "Header values may not contain linefeed or carriage return characters: " + CLIENT_FORM["firstName"]

    def header_refused(*_: object, **__: object) -> None:
        raise ValueError(quoted)

    def disk_full(*_: object, **__: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as patch:
        if fault == "the disk is full":
            patch.setattr(Outbox, "enqueue", disk_full)
        else:
            patch.setattr(sending, "build_referral_mail", header_refused)
        failed = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    retry = actions(failed).get("referral.send")
    assert retry == actions(review)["referral.send"], "the card offers to send again what the review card showed"
    assert "Zoëlle" not in caplog.text and "Vandenbroeckx" not in caplog.text
    assert await bot.services.outbox.counts() == {}
    sent = await bot.act(referrer, "referral.send", retry)
    assert "VD-" in texts(sent) and "referral.send" not in actions(sent)
    await bot.deliver()
    assert len(list(settings.outbox_dir.glob("*.eml"))) == 1


@pytest.mark.parametrize("stepped_back", [dt.timedelta(0), dt.timedelta(minutes=10)], ids=["clock-kept", "clock-back"])
async def test_a_send_a_crash_interrupted_goes_back_to_review_and_its_user_is_told(
    settings: Settings, clock: ManualClock, referrer: TeamsUser, stepped_back: dt.timedelta
) -> None:
    """The process died between "sending" and the commit: at the next start the draft is sendable again.

    Also when the clock was stepped back across the restart (NTP, a VM resumed): the draft's last
    change then lies in the future, and was left "sending" until two minutes and the step had passed.
    """
    import sqlite3

    from tests.support.bot_server import driving, running_connector

    async with running_connector() as (connector, url):
        async with driving(create_app(settings, clock=clock, run_worker=False), connector, url) as first:
            draft_id, _ = await reach_review(first, referrer)
            with sqlite3.connect(settings.database_path) as db:  # what the crash left
                db.execute("UPDATE drafts SET state = 'sending' WHERE id = ?", (draft_id,))
        clock.advance(-stepped_back)
        async with driving(create_app(settings, clock=clock, run_worker=True), connector, url) as second:
            await until(lambda: any("NIET verstuurd" in str(call.body.get("text")) for call in connector.accepted),
                        15, "the worker told the referrer on its own")
            [told] = [call for call in connector.accepted if "NIET verstuurd" in str(call.body.get("text"))]
            assert told.path.startswith(f"/v3/conversations/{referrer.conversation_id}/")
            sent = await second.act(referrer, "referral.send", {"draftId": draft_id})
            assert "VD-" in texts(sent) and "referral.send" not in actions(sent)


async def test_cancel_on_the_data_card_asks_once_more(bot: BotDriver, referrer: TeamsUser) -> None:
    """The data card may hold typed values: cancelling it is asked once more, like on the review card."""
    posted = await bot.say(referrer, "nieuw")
    draft_id = draft_id_of(posted[0]["attachments"][0]["content"])
    await bot.act(referrer, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    question = await bot.act(referrer, "referral.cancel", {"draftId": draft_id})
    assert actions(question)["referral.cancel"]["confirmed"] == "true"
    back = await bot.act(referrer, "referral.view", {"draftId": draft_id})
    assert "referral.details" in actions(back)


async def test_clicks_on_the_same_card_write_where_it_is_only_once(bot: BotDriver, referrer: TeamsUser) -> None:
    """Where the card is (for blanking it when the draft expires) is written when it changes, not per click:
    each write was a transaction and a durable commit of its own on every click (issue 14)."""
    written: list[str] = []
    event.listen(bot.services.db.engine.sync_engine, "before_cursor_execute",
                 lambda _c, _cu, statement, *_: written.append(statement)
                 if statement.startswith("UPDATE drafts SET conversation_ref") else None)
    draft_id, _ = await reach_review(bot, referrer)  # consent, then details: two clicks on card-1
    assert len(written) == 1

    response = await bot.post(referrer.card_action(bot.service_url, "referral.edit", {"draftId": draft_id},
                                                   reply_to="card-9"))  # the same draft's card, shown anew
    assert response.status == 200
    assert len(written) == 2
    stored = await bot.services.db.fetch_one("SELECT card_activity_id FROM drafts WHERE id = :id", {"id": draft_id})
    assert stored is not None and stored["card_activity_id"] == "card-9"


async def test_sending_and_delivering_take_no_savepoint(bot: BotDriver, referrer: TeamsUser) -> None:
    """Each savepoint (a store's block inside the step's transaction) cost two trips to the database."""
    draft_id, _ = await reach_review(bot, referrer)
    kinds: list[str] = []
    event.listen(bot.services.db.engine.sync_engine, "before_cursor_execute",
                 lambda _c, _cu, statement, *_: kinds.append(statement.split()[0].upper()))
    queued = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert await bot.deliver() == 1
    assert "SAVEPOINT" not in kinds, kinds
    reference = _reference_in(queued)
    assert (await bot.services.register.events_for(reference))[-3:] == [
        "package_built", "queued", "delivered"], "every step still recorded"


# --- audit (real people in real teams): a double tap on Teams mobile ----------------------------------------------


async def test_a_double_tap_on_verder_leaves_the_data_card_not_begin_opnieuw(
    bot: BotDriver, referrer: TeamsUser
) -> None:
    """On a phone a slow answer gets a second tap; Teams shows the answer of each tap, the last one last. The
    referral went on at the first tap, so the second must not tell the nurse it changed elsewhere and to start over
    (she would start a second referral and have the parents' consent ticked and registered again)."""
    draft_id = draft_id_of(await open_consent(bot, referrer))
    tap = {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL}
    first = await bot.act(referrer, "referral.consent", tap)
    assert "referral.details" in actions(first)
    second = await bot.act(referrer, "referral.consent", tap)
    assert "referral.details" in actions(second), f"the second tap answers: {second['body'][0]['text']!r}"


async def test_a_double_tap_on_the_data_card_leaves_the_review_card(bot: BotDriver, referrer: TeamsUser) -> None:
    draft_id = draft_id_of(await open_consent(bot, referrer))
    await bot.act(referrer, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    first = await bot.act(referrer, "referral.details", {"draftId": draft_id, **CLIENT_FORM})
    assert "referral.send" in actions(first)
    second = await bot.act(referrer, "referral.details", {"draftId": draft_id, **CLIENT_FORM})
    assert "referral.send" in actions(second), f"the second tap answers: {second['body'][0]['text']!r}"


async def test_two_taps_at_once_on_verder_both_show_the_data_card_and_consent_is_registered_once(
    bot: BotDriver, referrer: TeamsUser
) -> None:
    """The taps overlap: the one that loses the step's race gets the card the winner made, not "Begin opnieuw"."""
    draft_id = draft_id_of(await open_consent(bot, referrer))
    tap = {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL}
    answers = await asyncio.gather(*(bot.act(referrer, "referral.consent", tap) for _ in range(4)))
    assert all("referral.details" in actions(answer) for answer in answers), [a["body"][0]["text"] for a in answers]
    reference = (await bot.services.drafts.get(draft_id)).reference  # type: ignore[union-attr]
    assert (await bot.services.register.events_for(reference)).count("consent_confirmed") == 1


async def test_a_card_for_a_step_the_draft_did_not_just_make_is_still_refused(
    bot: BotDriver, referrer: TeamsUser, colleague: TeamsUser
) -> None:
    """Only a tap on the step the draft has just made gets that step's card: a consent card answered after the
    data card (two steps on), after a cancel, or by someone else is refused as before."""
    draft_id = draft_id_of(await open_consent(bot, referrer))
    tap = {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL}
    await bot.act(referrer, "referral.consent", tap)
    foreign = await bot.act(colleague, "referral.consent", tap)
    assert foreign["body"][0]["text"] == cards.text("nl", "problem.draft_foreign.title"), "another user's draft"
    await bot.act(referrer, "referral.details", {"draftId": draft_id, **CLIENT_FORM})
    past = await bot.act(referrer, "referral.consent", tap)
    assert past["body"][0]["text"] == cards.text("nl", "problem.step_not_possible.title"), "two steps on"
    await bot.act_confirmed(referrer, "referral.cancel", {"draftId": draft_id})
    for verb, data in (("referral.consent", tap), ("referral.details", {"draftId": draft_id, **CLIENT_FORM})):
        cancelled = await bot.act(referrer, verb, data)
        assert cancelled["body"][0]["text"] == cards.text("nl", "problem.draft_cancelled.title"), verb
        assert "referral.details" not in actions(cancelled) and "referral.send" not in actions(cancelled)


async def test_a_second_tap_on_verder_with_a_field_fixed_in_between_keeps_the_fix(
    bot: BotDriver, referrer: TeamsUser
) -> None:
    """On a slow phone the referrer taps Verder, sees a typo, fixes it and taps again before the review card came.
    Before, the second tap got the review card of the first tap's data: the fix was dropped without a word, and
    sent if nobody noticed. Now the review card shows the data of the last tap, and that is what is kept; a last
    tap with a mistake in it gets the data card with the error and everything as typed."""
    draft_id = draft_id_of(await open_consent(bot, referrer))
    await bot.act(referrer, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    first = await bot.act(referrer, "referral.details", {"draftId": draft_id, **CLIENT_FORM})
    assert "127 bus 34" in read_aloud(first)
    review = await bot.act(referrer, "referral.details", {"draftId": draft_id, **CLIENT_FORM, "houseNumber": "129"})
    assert "referral.send" in actions(review)
    assert "Kerkstraatje Oost 129" in read_aloud(review) and "127 bus 34" not in read_aloud(review)
    draft = await bot.services.drafts.get(draft_id)
    assert draft is not None and draft.details is not None and draft.details.house_number == "129"
    refused = await bot.act(referrer, "referral.details", {"draftId": draft_id, **CLIENT_FORM, "phone": "0470"})
    assert "referral.details" in actions(refused) and "referral.send" not in actions(refused)
    assert input_values(refused)["phone"] == "0470" and input_values(refused)["houseNumber"] == "127 bus 34"
    assert "Dit telefoonnummer is onvolledig" in read_aloud(refused)
