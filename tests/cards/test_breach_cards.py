"""The breach report card and its answer: inputs in order with the check's limits, each error under its input,
the warning not to name families, the deadline and what happens next."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import cards
from bot.core.referral_values import FieldError
from bot.evidence.breach_form import (
    BREACH_ERROR_CODES,
    BREACH_INPUTS,
    REQUIRED_INPUTS,
    TEXT_MAX_LENGTHS,
    validate_breach_form,
)
from tests.support.card_reading import actions, assert_complete_card, attention_texts, input_values, walk

PROTOCOLS = [("OR-KG-NOW-OCMW-SGW-2026", "OCMW Sint-Gillis-Waas")]
TWO_PROTOCOLS = [*PROTOCOLS, ("OR-KG-NOW-OCMW-BEV-2026", "OCMW Beveren")]
TODAY = dt.date(2026, 11, 28)
CET = dt.timezone(dt.timedelta(hours=1))
VIEW = cards.BreachReportedView(
    report_id="DL-20261128-K7M2QX",
    recipient="OCMW Sint-Gillis-Waas",
    dpos=("dpo@opgroeien.be", "informatica@sint-gillis-waas.be"),
    discovered_at=dt.datetime(2026, 11, 28, 8, 15, tzinfo=CET),
    deadline=dt.datetime(2026, 12, 1, 8, 15, tzinfo=CET),
    deadline_state="left",
    hours=70,
    known_references=1,
    unknown_references=("VD-20261101-AAAAAA",),
    families=1,
    packages=1,
)


def form(lang: cards.Language = "nl", **options: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {"report_id": VIEW.report_id, "protocols": PROTOCOLS, "today": TODAY, "values": {},
                                 "errors": {}} | options
    return cards.breach_report_card(lang, **arguments)


def inputs(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [element for element in walk(card) if str(element.get("type", "")).startswith("Input.")]


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_the_form_asks_the_article_33_fields_and_warns_not_to_name_families(lang: cards.Language) -> None:
    card = form(lang)
    assert_complete_card(card)
    assert [element["id"] for element in inputs(card)] == list(BREACH_INPUTS)
    limits = {element["id"]: element.get("maxLength") for element in inputs(card) if "maxLength" in element}
    assert limits == dict(TEXT_MAX_LENGTHS), "one source for the card and the check"
    by_id = {element["id"]: element for element in inputs(card)}
    assert by_id["discoveredDate"]["type"] == "Input.Date" and by_id["discoveredDate"]["max"] == "2026-11-28"
    assert by_id["discoveredTime"]["type"] == "Input.Time"
    assert by_id["categories"]["isMultiSelect"] is True
    assert [choice["value"] for choice in by_id["kind"]["choices"]] == [
        "wrong_recipient", "zip_password_leaked", "device_lost", "unauthorised_access", "other"]
    assert input_values(card)["protocol"] == PROTOCOLS[0][0], "one protocol: chosen already"
    assert actions(card) == {"breach.submit": {"reportId": VIEW.report_id},
                             "breach.cancel": {"reportId": VIEW.report_id}}
    warning = cards.text(lang, "breach.form.no_names")
    assert any(element.get("text") == warning for element in walk(card))
    assert attention_texts(card) == []


def test_the_dutch_card_says_not_to_name_families() -> None:
    assert "noem geen namen of adressen van gezinnen" in cards.text("nl", "breach.form.no_names").lower()


def test_two_protocols_leave_the_choice_open() -> None:
    assert input_values(form(protocols=TWO_PROTOCOLS))["protocol"] == ""


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_each_error_stands_right_under_its_input_and_the_typed_values_stay(lang: cards.Language) -> None:
    errors = {name: FieldError("required") for name in REQUIRED_INPUTS}
    errors["references"] = FieldError("reference_format", (("references", "VD-1"),))
    errors["consequences"] = FieldError("too_long", (("max", "1000"),))
    typed = {"whatHappened": "**vet** typed", "references": "VD-1", "kind": "other"}
    card = form(lang, values=typed, errors=errors)
    body = card["body"]
    for name, error in errors.items():
        position = next(index for index, element in enumerate(body) if element.get("id") == name)
        follows = [element for element in body[position + 1: position + 3] if element.get("color") == "attention"]
        assert follows and follows[0]["text"] == cards.breach_error_text(lang, name, error), name
    assert body[1]["color"] == "attention", "a summary at the top names the fields"
    assert input_values(card)["whatHappened"] == "**vet** typed" and input_values(card)["kind"] == "other"


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("code", BREACH_ERROR_CODES)
def test_every_error_code_has_a_sentence(lang: cards.Language, code: str) -> None:
    for field in sorted(REQUIRED_INPUTS) if code == "required" else ("references", "whatHappened"):
        message = cards.breach_error_text(lang, field, FieldError(code, (("max", "50"), ("references", "X"))))
        assert message and "{" not in message


def test_unknown_errors_are_refused() -> None:
    with pytest.raises(cards.CardError):
        form(errors={"firstName": FieldError("required")})
    with pytest.raises(cards.CardError):
        cards.breach_error_text("nl", "kind", FieldError("phone_invalid"))
    with pytest.raises(cards.CardError):
        form(protocols=[])


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_the_answer_shows_the_deadline_the_unknown_references_and_what_comes_next(lang: cards.Language) -> None:
    card = cards.breach_reported_card(lang, VIEW)
    text = assert_complete_card(card)
    assert VIEW.report_id in text and "01/12/2026 08:15" in text and "70" in text
    assert "VD-20261101-AAAAAA" in text and "Vlaamse Toezichtcommissie" in text
    assert "dpo@opgroeien.be" in text and "informatica@sint-gillis-waas.be" in text
    assert "breach.submit" not in actions(card)


def test_the_dutch_answer_in_words() -> None:
    text = assert_complete_card(cards.breach_reported_card("nl", VIEW))
    assert "01/12/2026 08:15 (nog 70 uur)" in text and "1 gevonden, 1 niet gevonden" in text
    assert "gezinnen: 1, doorverwijzingen: 1" in text
    late = assert_complete_card(cards.breach_reported_card("nl", dataclasses.replace(
        VIEW, deadline_state="passed", hours=3, families=None, packages=None, unknown_references=(),
        known_references=0, already_reported=True)))
    assert "(al 3 uur voorbij)" in late and "De termijn van 72 uur na de ontdekking is al voorbij" in late
    assert "nog niet bekend" in late and "geen opgegeven" in late and "Deze melding was al verstuurd" in late
    soon = assert_complete_card(cards.breach_reported_card("nl", dataclasses.replace(VIEW,
                                                                                       deadline_state="under_hour")))
    assert "(nog minder dan een uur)" in soon


def test_a_view_that_does_not_add_up_is_refused() -> None:
    with pytest.raises(cards.CardError):
        cards.breach_reported_card("nl", dataclasses.replace(VIEW, families=None))
    with pytest.raises(cards.CardError):
        cards.breach_reported_card("nl", dataclasses.replace(VIEW, deadline_state="soon"))  # type: ignore[arg-type]


def test_malformed_references_typed_in_a_breach_report_are_shown_as_typed_not_as_markdown() -> None:
    """Every value a user typed into a TextBlock is escaped; these pieces of the references input were not."""
    now = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
    typed = {"protocol": "p1", "kind": "confidentiality", "discoveredDate": "2026-11-28", "discoveredTime": "09:00",
             "whatHappened": "x", "categories": "contact:email",
             "references": "**PEETERS** [KLIK](HTTPS://EVIL.EXAMPLE)"}
    result = validate_breach_form(typed, protocol_ids={"p1"}, now=now, timezone=ZoneInfo("Europe/Brussels"))
    card = cards.breach_report_card("nl", report_id="DL-20261128-K7M2QX", protocols=[("p1", "OCMW X")],
                                    today=now.date(), values=result.typed, errors=result.errors)
    [shown] = [e["text"] for e in walk(card) if e.get("type") == "TextBlock" and "klopt niet" in e.get("text", "")]
    assert cards.escape_markdown("**PEETERS**") in shown, shown
    assert cards.escape_markdown("[KLIK](HTTPS://EVIL.EXAMPLE)") in shown, shown
