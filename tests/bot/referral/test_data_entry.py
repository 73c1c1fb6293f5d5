"""The data card helps the referrer (issue 11, point 6), over real HTTP; the package opened by the real 7-Zip.

All field errors come back at once; the postal-code error names the codes and places the protocol
accepts; a typed municipality is stored as the protocol spells it; a phone number is never said not
to exist, because only its form can be checked.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import tomllib
import unicodedata
from pathlib import Path
from typing import Any

import pytest

import cards
from bot.config import Settings
from tests.conftest import ZIP_PASSWORD
from tests.support import sevenzip
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.card_reading import actions, attention_texts, draft_id_of, input_values, texts, walk
from tests.support.clock import ManualClock
from tests.support.ocmw_flow import link, referred_and_delivered, reported_wrong
from tests.support.referral_flow import CLIENT_FORM, CONSENT_ALL, PROTOCOL_ID, open_consent, reach_review

PROTOCOL_FILE = tomllib.loads((Settings().protocols_dir / "sint-gillis-waas.toml").read_text(encoding="utf-8"))
POSTAL_CODES: list[str] = PROTOCOL_FILE["recipient"]["postal_codes"]
PLACES: list[str] = PROTOCOL_FILE["recipient"]["places"]


async def details_answer(bot: BotDriver, user: TeamsUser, form: dict[str, str]) -> dict[str, Any]:
    """Consent given, then `form` submitted on the data card; the card the bot answers with."""
    draft_id = draft_id_of(await open_consent(bot, user))
    await bot.act(user, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    return await bot.act(user, "referral.details", {"draftId": draft_id, **form})


def error_under(card: dict[str, Any], field: str) -> str | None:
    """The red text right under the input `field`, or None."""
    body: list[dict[str, Any]] = [element for element in walk(card) if "type" in element]
    index = next(i for i, element in enumerate(body) if element.get("id") == field)
    after = body[index + 1] if index + 1 < len(body) else {}
    if after.get("type") == "TextBlock" and after.get("color") == "attention":
        return str(after["text"])
    return None


def package_files(settings: Settings, reference: str, unzip_to: Path) -> dict[str, str]:
    """The files inside the mailed package of `reference`, opened with 7-Zip and the protocol's password."""
    eml = settings.outbox_dir / next(p.name for p in settings.outbox_dir.glob(f"{reference}@*.eml"))
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    [attachment] = list(message.iter_attachments())
    result = sevenzip.extract(attachment.get_content(), ZIP_PASSWORD, unzip_to)
    assert result.returncode == 0, result.stdout + result.stderr
    return {path.name: path.read_text(encoding="utf-8") for path in unzip_to.iterdir()}


async def test_four_wrong_fields_each_get_their_error_and_the_summary_names_them_all(
    bot: BotDriver, referrer: TeamsUser
) -> None:
    wrong = {"firstName": "R2D2", "houseNumber": "twaalf", "postalCode": "917", "email": "zoe@"}

    card = await details_answer(bot, referrer, {**CLIENT_FORM, **wrong})

    assert "referral.details" in actions(card)
    for field in wrong:
        assert error_under(card, field), f"no error under {field}"
    for field in set(CLIENT_FORM) - set(wrong):
        assert error_under(card, field) is None, f"an error under the valid {field}"
    summary, *field_errors = attention_texts(card)
    assert len(field_errors) == len(wrong)
    for field in wrong:
        assert cards.text("nl", f"field.{field}.name") in summary
    assert input_values(card)["houseNumber"] == "twaalf", "what was typed comes back"


async def test_a_wrong_postal_code_and_a_wrong_municipality_are_reported_together(
    bot: BotDriver, referrer: TeamsUser
) -> None:
    card = await details_answer(bot, referrer, {**CLIENT_FORM, "postalCode": "91", "municipality": "Sint-Niklaas"})

    assert error_under(card, "postalCode") and error_under(card, "municipality"), attention_texts(card)
    municipality_error = error_under(card, "municipality") or ""
    assert ", ".join(PLACES) in municipality_error, "the error names the places to choose from"


async def test_the_postal_code_error_names_the_accepted_codes_and_their_places(
    bot: BotDriver, referrer: TeamsUser
) -> None:
    card = await details_answer(bot, referrer, {**CLIENT_FORM, "postalCode": "9100"})

    error = error_under(card, "postalCode") or ""
    assert f"{', '.join(POSTAL_CODES)} ({', '.join(PLACES)})" in error, error
    assert PROTOCOL_FILE["recipient"]["organisation"] in error
    assert "cliënt" not in texts(card), "the card says 'het gezin'"


@pytest.mark.parametrize(("typed", "canonical"), [("sint gillis waas", "Sint-Gillis-Waas"),
                                                  ("SINT-GILLIS-WAAS", "Sint-Gillis-Waas"),
                                                  ("de klinge", "De Klinge")])
async def test_a_typed_municipality_is_kept_in_the_protocols_spelling(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, tmp_path: Path, typed: str, canonical: str
) -> None:
    assert canonical in PLACES
    draft_id, review = await reach_review(bot, referrer, {**CLIENT_FORM, "municipality": typed})
    shown = "\n".join(str(element.get("value", element.get("text", ""))) for element in walk(review))
    assert f"9170 {cards.escape_markdown(canonical)}" in shown, "the review card shows the protocol's spelling"
    assert typed not in shown and cards.escape_markdown(typed) not in shown
    edit = await bot.act(referrer, "referral.edit", {"draftId": draft_id})
    assert input_values(edit)["municipality"] == canonical
    await bot.act(referrer, "referral.details", {"draftId": draft_id, **input_values(edit)})

    queued = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    [reference] = {word for word in texts(queued).replace('"', " ").split() if word.startswith("VD-")}
    await bot.deliver()

    inside = package_files(settings, reference, tmp_path / "package")
    assert json.loads(inside["doorverwijzing.json"])["client"]["address"]["municipality"] == canonical
    for name in ("doorverwijzing.txt", "contact.vcf"):
        assert canonical in inside[name] and typed not in inside[name], name


async def test_a_corrected_municipality_is_sent_in_the_protocols_spelling(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, settings: Settings, tmp_path: Path
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": reference})
    await bot.act(worker, "referral.quality", {"reference": reference, "item": "address"})
    await bot.settle()
    [request] = [call.body["attachments"][0]["content"] for call in bot.connector.calls
                 if call.path.startswith(f"/v3/conversations/{referrer.conversation_id}/")
                 and call.body.get("attachments")
                 and "correction.submit" in actions(call.body["attachments"][0]["content"])]
    address = {"street": "Kerkstraat", "houseNumber": "3", "postalCode": "9170", "municipality": "de klinge"}

    await bot.act(referrer, "correction.submit", {**actions(request)["correction.submit"], **address})
    await bot.deliver()

    inside = package_files(settings, f"{reference}-2", tmp_path / "correction")
    assert json.loads(inside["correctie.json"])["values"]["municipality"] == "De Klinge", inside["correctie.json"]
    assert "De Klinge" in inside["correctie.txt"] and "de klinge" not in inside["correctie.txt"]


@pytest.mark.parametrize("phone", ["0470 12 34 5", "03 123 45 67", "+32 470 12 34 5"])
async def test_a_phone_number_is_never_said_not_to_exist(bot: BotDriver, referrer: TeamsUser, phone: str) -> None:
    """phonenumbers checks the form (length, numbering plan), not whether a number is in use."""
    card = await details_answer(bot, referrer, {**CLIENT_FORM, "phone": phone})

    error = error_under(card, "phone") or ""
    assert "onvolledig of ongeldig" in error, error
    assert "bestaat niet" not in texts(card)
    assert "0470 12 34 56" in error, "an example of a good number"


async def test_letters_in_a_phone_number_are_named_as_such(bot: BotDriver, referrer: TeamsUser) -> None:
    card = await details_answer(bot, referrer, {**CLIENT_FORM, "phone": "bel me"})

    error = error_under(card, "phone") or ""
    assert "cijfers" in error and "bestaat niet" not in error, error


@pytest.mark.parametrize("name", ["Zoë", "François", "Hüseyin", "Nguyễn"])
async def test_a_name_typed_in_decomposed_form_is_accepted_and_shown_composed(
    bot: BotDriver, referrer: TeamsUser, name: str
) -> None:
    """macOS, iOS and text pasted from a PDF send e + U+0308 instead of ë: the same name, a valid one."""
    decomposed = unicodedata.normalize("NFD", name)
    assert decomposed != name

    card = await details_answer(bot, referrer, {**CLIENT_FORM, "firstName": decomposed})

    assert "referral.send" in actions(card), attention_texts(card)
    assert name in texts(card) and decomposed not in texts(card), "the review card shows one spelling"


@pytest.mark.parametrize("last_name", ["'t Hart", "’t Hooft", "'s Jacob"])
async def test_a_family_name_starting_with_an_apostrophe_is_accepted(
    bot: BotDriver, referrer: TeamsUser, last_name: str
) -> None:
    """Dutch names start with 't or 's; Sint-Gillis-Waas borders the Netherlands. The error says
    apostrophes are allowed, so a referrer refused would not know what to change."""
    card = await details_answer(bot, referrer, {**CLIENT_FORM, "lastName": last_name})

    assert "referral.send" in actions(card), attention_texts(card)


@pytest.mark.parametrize("space", ["\u00a0", "\u202f"])
async def test_a_phone_number_pasted_with_no_break_spaces_is_accepted(
    bot: BotDriver, referrer: TeamsUser, space: str
) -> None:
    """Outlook signatures and web pages write 0470 98 76 54 with no-break spaces; the card shows plain spaces."""
    card = await details_answer(bot, referrer, {**CLIENT_FORM, "phone": space.join(["0470", "98", "76", "54"])})

    assert "referral.send" in actions(card), attention_texts(card)


async def correction_card_for(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, item: str
) -> tuple[str, str]:
    """A referral delivered and acknowledged, then `item` reported wrong: its reference and the request's id."""
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": reference})
    return reference, await reported_wrong(bot, referrer, worker, reference, item)


@pytest.mark.parametrize("item", ["phone", "email"])
async def test_a_correction_that_leaves_no_way_to_reach_the_family_says_so_as_the_data_card_does(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, item: str
) -> None:
    """Phone and e-mail emptied: the data card's own sentence (a phone number or an e-mail address is needed),
    not a bare "verplicht"; the card stays, with what was typed."""
    data_card = await details_answer(bot, referrer, {**CLIENT_FORM, "phone": "", "email": ""})
    _, correction_id = await correction_card_for(bot, referrer, ocmw_worker, item)

    card = await bot.act(referrer, "correction.submit", {"correctionId": correction_id, "phone": "", "email": ""})

    assert "correction.submit" in actions(card), "the correction card stays"
    assert error_under(card, item) == error_under(data_card, item) == cards.text("nl", "error.contact_missing")
    assert input_values(card) == {item: ""}


@pytest.mark.parametrize("typed", ["Sint\u2011Gillis\u2011Waas", "Sint\u2010Gillis\u2010Waas",
                                   "Sint\u2013Gillis\u2013Waas", "Sint\u2212Gillis\u2212Waas",
                                   "Sint\u00adGillis\u00adWaas", "Sint\u00a0Gillis\u00a0Waas"],
                         ids=["non-breaking-hyphen", "hyphen", "en-dash", "minus", "soft-hyphen", "no-break-space"])
async def test_a_place_typed_with_a_typographic_hyphen_is_the_protocols_place(
    bot: BotDriver, referrer: TeamsUser, typed: str
) -> None:
    """Phones and Word's autocorrect write Sint-Gillis-Waas with other dashes: the same place, kept as the
    protocol spells it."""
    card = await details_answer(bot, referrer, {**CLIENT_FORM, "municipality": typed})

    assert "referral.send" in actions(card), attention_texts(card)
    shown = "\n".join(str(element.get("value", element.get("text", ""))) for element in walk(card))
    assert f"9170 {cards.escape_markdown('Sint-Gillis-Waas')}" in shown, "the review card shows the protocol's spelling"


def phone_line(text: str) -> str:
    """What follows "Telefoonnummer:" in a package's text file."""
    [line] = [line for line in text.splitlines() if line.strip().startswith("Telefoonnummer:")]
    return line.split(":", 1)[1].strip()


async def test_a_corrected_phone_number_is_written_as_the_first_package_writes_a_number(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, settings: Settings, tmp_path: Path
) -> None:
    reference, correction_id = await correction_card_for(bot, referrer, ocmw_worker, "phone")
    await bot.act(referrer, "correction.submit", {"correctionId": correction_id, "phone": "0470 11 22 33"})
    await bot.deliver()

    first = package_files(settings, reference, tmp_path / "first")
    corrected = package_files(settings, f"{reference}-2", tmp_path / "correction")

    assert phone_line(first["doorverwijzing.txt"]) == "+32470987654 (0470 98 76 54)"
    assert phone_line(corrected["correctie.txt"]) == "+32470112233 (0470 11 22 33)", corrected["correctie.txt"]
    assert json.loads(first["doorverwijzing.json"])["client"]["phone"] == "+32470987654"
    assert json.loads(corrected["correctie.json"])["values"]["phone"] == "+32470112233"


async def test_a_correction_made_just_after_midnight_is_dated_that_day_in_belgian_time(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, settings: Settings, tmp_path: Path,
    clock: ManualClock
) -> None:
    """23:40 UTC on 28 November is 00:40 on 29 November in Brussels: the date the referrer and the OCMW live in."""
    reference, correction_id = await correction_card_for(bot, referrer, ocmw_worker, "phone")
    clock.advance(dt.datetime(2026, 11, 28, 23, 40, tzinfo=dt.UTC) - clock.now())
    await bot.act(referrer, "correction.submit", {"correctionId": correction_id, "phone": "0470 11 22 33"})
    await bot.deliver()

    first = package_files(settings, reference, tmp_path / "first")
    corrected = package_files(settings, f"{reference}-2", tmp_path / "correction")

    [first_date] = [line for line in first["doorverwijzing.txt"].splitlines() if line.startswith("Aangemaakt op:")]
    [date_line] = [line for line in corrected["correctie.txt"].splitlines() if line.startswith("Aangemaakt op:")] or [
        "(no date line)"]
    assert first_date.endswith("(Belgische tijd)")
    assert " ".join(date_line.split()) == "Aangemaakt op: 29/11/2026 00:40 (Belgische tijd)", corrected["correctie.txt"]
    assert json.loads(corrected["correctie.json"])["createdAt"] == "2026-11-29T00:40:00+01:00"
