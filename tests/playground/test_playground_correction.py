"""The referrer's correction card and the OCMW's confirmation cards in the Microsoft 365 Agents Playground.

The first "Send correction" counts; then the OCMW records "wil geen hulp" and confirms the deletion,
each after a confirmation card. Or the family has no correct phone number: "There is no correct phone
number" (a button in an ActionSet in the card's body), asked once more, tells the OCMW's channel to delete
the wrong one.

The OCMW reports the phone number wrong in its channel; the bot posts a correction card in the
referrer's personal chat (a proactive message). The referrer opens the chat, types the right number
and clicks "Send correction" once; that first click carries the number, and the correction leaves.

Why the test types the way a user does (pointer into the field, then type): the Playground (0.2.28)
builds a new Adaptive Card object from the activity's JSON every time a message re-renders, and the
pointer entering or leaving a message re-renders it. Whatever was typed before that is dropped from
the card (the field shows the card's own `value` again) and the action sends only its `data`.
Playwright's `fill` types without moving the pointer, so "fill, then click the button" loses the
value at the click; a user who clicks into the field first does not. It is the same for every card
(the data card too); the cards themselves carry their inputs as Teams expects (see
`tests/cards/test_render.py::test_submit_actions_carry_the_inputs_of_their_own_card`).
"""

from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import Locator, Page, Request, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

import cards
from infra.run_with_playground import CHANNEL_NAME, TEAM_NAME, Stack
from tests.playground.test_playground import (
    CHAT,
    OCMW,
    OCMW_NAME,
    PERSONAL_CHAT,
    Browser,
    bot_env,
    browser,
    button,
    card_with,
    environment,
    field_input,
    link_code,
    message,
    open_conversation,
    post_in_channel_mentioning_the_bot,
    refer_a_family,
    stack,
    text,
    wait_for_file,
)

__all__ = ["bot_env", "browser", "environment", "stack"]  # the fixtures, shared with test_playground
CORRECT_PHONE = "0470 65 43 21"
CHANNEL = f"{TEAM_NAME} - {CHANNEL_NAME}"


def type_into(card: Locator, name: str, value: str) -> None:
    """As a user types: the pointer into the field first, then the keys."""
    field = field_input(card, name)
    field.click()
    field.fill(value)


def report_the_phone_wrong(page: Page, bot_env: dict[str, str], reference: str) -> None:
    """The OCMW links its channel, acknowledges receipt and reports the phone number wrong."""
    open_conversation(page, CHANNEL)
    post_in_channel_mentioning_the_bot(page, f"koppel {link_code(bot_env)}")
    expect(message(page, text(CHAT, "link_done", ocmw=OCMW_NAME))).to_be_visible()
    ocmw_card = card_with(page, text(OCMW, "ocmw.title", reference=reference))
    button(ocmw_card, OCMW, "action.acknowledge").click()
    expect(button(ocmw_card, OCMW, "action.data_wrong")).to_be_visible()
    choose(page, ocmw_card, text(OCMW, "item.phone.label"))
    button(ocmw_card, OCMW, "action.data_wrong").click()


def choose(page: Page, card: Locator, label: str) -> None:
    """Pick `label` in the card's list. The Playground re-renders a message when the pointer enters or leaves it,
    and the bot edits the OCMW's card for everyone a moment after the acknowledgement's own answer: a list opened
    just before either closes with it, and the option is never there to click (seen in CI under load). Opened
    again until the choice holds, three times at most."""
    choice = card.get_by_role("combobox")
    for _ in range(3):
        choice.click()
        try:
            page.get_by_role("option", name=label, exact=True).click(timeout=5_000)
            expect(choice).to_have_value(label, timeout=2_000)
            return
        except (PlaywrightTimeoutError, AssertionError):
            page.keyboard.press("Escape")
    raise AssertionError(f"{label!r} could not be chosen in the card's list")


def test_the_correction_cards_first_submit_carries_the_typed_value(
    stack: Stack, browser: Browser, bot_env: dict[str, str]
) -> None:
    page = browser.page
    submits: list[str] = []

    def remember_submit(request: Request) -> None:
        if request.method == "POST" and "correction.submit" in (request.post_data or ""):
            submits.append(request.post_data or "")

    page.on("request", remember_submit)
    page.goto(stack.url)
    reference = refer_a_family(browser, first_an_incomplete_phone=False)
    report_the_phone_wrong(page, bot_env, reference)

    # The referrer finds the correction card in the personal chat and sends the right number once.
    open_conversation(page, PERSONAL_CHAT)
    correction = card_with(page, text(CHAT, "correction.request.title"))
    expect(correction).to_be_visible()
    type_into(correction, "phone", CORRECT_PHONE)
    browser.shot("correction-typed", correction)
    button(correction, CHAT, "action.correction_submit").click()

    delivered = message(page, text(CHAT, "delivered", reference=f"{reference}-2", recipient=OCMW_NAME))
    expect(delivered).to_be_visible()
    browser.shot("correction-delivered", delivered)
    assert len(submits) == 1, "one click, one correction"
    assert json.loads(submits[0])["value"]["action"]["data"]["phone"] == CORRECT_PHONE
    assert wait_for_file(Path(bot_env["BOT_DATA_DIR"]) / "outbox", f"{reference}-2@*.eml")

    # Back in the channel: "wil geen hulp" and "gegevens verwijderd" each ask once more.
    open_conversation(page, CHANNEL)
    ocmw_card = card_with(page, text(OCMW, "ocmw.title", reference=reference))
    button(ocmw_card, OCMW, "outcome.contact_no_help_wanted").click()
    question = card_with(page, text(OCMW, "confirm.no_help_wanted.question", reference=reference))
    expect(question).to_be_visible()
    browser.shot("confirm-no-help-wanted", question)
    button(question, OCMW, "confirm.no_help_wanted.button").click()
    ocmw_card = card_with(page, text(OCMW, "ocmw.title", reference=reference))
    expect(button(ocmw_card, OCMW, "action.data_deleted")).to_be_visible()
    button(ocmw_card, OCMW, "action.data_deleted").click()
    question = card_with(page, text(OCMW, "confirm.data_deleted.question", reference=reference))
    expect(question).to_be_visible()
    button(question, OCMW, "confirm.data_deleted.button").click()
    done = card_with(page, text(OCMW, "ocmw.title", reference=reference))
    expect(done.get_by_text("Verwijdering bevestigd door", exact=False)).to_be_visible()
    browser.shot("deletion-confirmed", done)
    assert not list((Path(bot_env["BOT_DATA_DIR"]) / "outbox").glob(f"{reference}*.eml")), "the copies went too"


def test_no_correct_phone_number_asks_once_more_and_tells_the_ocmw_channel_to_delete_it(
    stack: Stack, browser: Browser, bot_env: dict[str, str]
) -> None:
    page = browser.page
    taps: list[str] = []

    def remember_none(request: Request) -> None:
        if request.method == "POST" and cards.VERB_CORRECTION_NONE in (request.post_data or ""):
            taps.append(request.post_data or "")

    page.on("request", remember_none)
    page.goto(stack.url)
    reference = refer_a_family(browser, first_an_incomplete_phone=False)
    report_the_phone_wrong(page, bot_env, reference)
    phone = {"item": cards.item_word(CHAT, "phone")}

    # The family has no other number: the button below the field, on a row of its own, asks once more.
    open_conversation(page, PERSONAL_CHAT)
    correction = card_with(page, text(CHAT, "correction.request.title"))
    expect(correction).to_be_visible()
    none = button(correction, CHAT, "action.correction_none", **phone)
    expect(none).to_be_visible()
    browser.shot("correction-with-no-correct-value", correction)
    none_box, phone_box = none.bounding_box(), field_input(correction, "phone").bounding_box()
    assert none_box and phone_box
    assert none_box["y"] > phone_box["y"] + phone_box["height"], "the button is below the field"
    none.click()

    question_text = text(CHAT, "confirm.correction_none.question", reference=reference, **phone)
    question = card_with(page, question_text)
    expect(question).to_be_visible()
    expect(question).to_contain_text(text(CHAT, "confirm.correction_none.explanation", reference=reference,
                                          recipient=OCMW_NAME, **phone))
    browser.shot("confirm-no-correct-value", question)
    [tap] = [json.loads(body)["value"]["action"]["data"] for body in taps]  # the button in the body sent it
    assert list(tap) == ["correctionId"], "the card's id only, no input (associatedInputs none)"

    # Back: the correction card again (verb correction.later), in place of the question.
    button(question, CHAT, "action.back").click()
    expect(page.locator(".ac-adaptiveCard").filter(has_text=question_text)).to_have_count(0)
    correction = card_with(page, text(CHAT, "correction.request.title"))
    expect(correction).to_be_visible()
    expect(field_input(correction, "phone")).to_be_visible()
    browser.shot("correction-again", correction)

    # Again, and this time yes.
    button(correction, CHAT, "action.correction_none", **phone).click()
    question = card_with(page, question_text)
    expect(question).to_be_visible()
    button(question, CHAT, "confirm.correction_none.button", **phone).click()
    done_text = text(CHAT, "correction_none_done", recipient=OCMW_NAME, reference=reference, **phone)
    done = card_with(page, done_text.replace("**", ""))  # the catalogue's Markdown: bold in the card
    expect(done).to_be_visible()
    browser.shot("no-correct-value-reported", done)
    assert [json.loads(body)["value"]["action"]["data"] for body in taps] == [tap, tap, {**tap, "confirmed": "true"}]
    assert not list((Path(bot_env["BOT_DATA_DIR"]) / "outbox").glob(f"{reference}-2@*.eml")), "nothing was sent"

    # The OCMW's channel is told to delete the wrong number: the reference and the item, never a value.
    open_conversation(page, CHANNEL)
    told = message(page, text(OCMW, "correction_none_to_ocmw", reference=reference,
                              item=cards.item_word(OCMW, "phone")))
    expect(told).to_be_visible()
    browser.shot("ocmw-told-to-delete", told)
