"""The text catalogues: same keys and parameters in both languages, every used key present."""

from __future__ import annotations

import re

import pytest

import cards
from bot.core.referral_values import FieldError
from cards._template import load_template, placeholders, template_names
from cards._texts import catalogue, text_params
from tests.support.family_information import NUDGES

TEXT_PREFIX = "t."


def _docstring_codes() -> set[str]:
    doc = FieldError.__doc__ or ""
    listing = doc.split("Codes:", 1)[1]
    listing = re.sub(r"\([^)]*\)", "", listing)
    return {code.strip(" .\n") for code in listing.split(",") if code.strip(" .\n")}


def _template_text_keys() -> dict[str, set[str]]:
    return {
        name: {p.removeprefix(TEXT_PREFIX) for p in placeholders(load_template(name)) if p.startswith(TEXT_PREFIX)}
        for name in template_names()
    }


def test_catalogues_have_identical_keys() -> None:
    nl, en = catalogue("nl"), catalogue("en")
    assert set(nl) == set(en), sorted(set(nl) ^ set(en))


def test_each_text_takes_the_same_parameters_in_both_languages() -> None:
    nl, en = catalogue("nl"), catalogue("en")
    for key in nl:
        assert text_params(nl[key]) == text_params(en[key]), key


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_texts_are_non_empty_and_trimmed(lang: cards.Language) -> None:
    for key, value in catalogue(lang).items():
        assert value and value == value.strip(), key


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_every_text_a_template_uses_exists_and_needs_no_parameters(lang: cards.Language) -> None:
    used = _template_text_keys()
    assert any(used.values())
    for template, keys in used.items():
        for key in keys:
            assert key in catalogue(lang), f"{template}: ${{t.{key}}} missing in {lang}"
            assert not text_params(catalogue(lang)[key]), f"{template}: {key} has parameters"


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_what_the_family_is_told_makes_no_promise_or_nudge(lang: cards.Language) -> None:
    told = {key: value for key, value in catalogue(lang).items() if key.startswith("consent.")}
    assert len(told) > 30
    assert {key: NUDGES.findall(value) for key, value in told.items() if NUDGES.search(value)} == {}


def test_the_nudge_pattern_finds_the_old_nudge() -> None:
    assert NUDGES.search("Zo kan het OCMW je hulp aanbieden. Zo loop je niets mis.")
    assert not NUDGES.search("Je mag vragen om ze te verbeteren. Ze gaan vrij akkoord (freely).")


def test_docstring_codes_are_the_card_codes() -> None:
    assert _docstring_codes() == set(cards.FIELD_ERROR_CODES)


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("code", sorted(_docstring_codes()))
def test_every_field_error_code_has_a_text(lang: cards.Language, code: str) -> None:
    message = cards.field_error_text(
        lang,
        "postalCode",
        FieldError(code, (("max", "4"), ("municipality", "G"), ("ocmw", "OCMW G"), ("places", "G"),
                          ("accepted", "9000 (G)"))),
    )
    assert message and "{" not in message


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("field", cards.DETAIL_FIELDS)
def test_every_field_has_label_placeholder_and_name(lang: cards.Language, field: str) -> None:
    for part in ("label", "placeholder", "name"):
        assert f"field.{field}.{part}" in catalogue(lang)


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("problem", sorted(cards.PROBLEMS))
def test_every_problem_has_a_title_and_text_with_declared_params(lang: cards.Language, problem: str) -> None:
    declared = set(cards.PROBLEMS[problem])
    for part in ("title", "text"):
        key = f"problem.{problem}.{part}"
        assert key in catalogue(lang)
        assert text_params(catalogue(lang)[key]) <= declared, key
    assert declared <= text_params(catalogue(lang)[f"problem.{problem}.text"]) | text_params(
        catalogue(lang)[f"problem.{problem}.title"]
    )


@pytest.mark.parametrize("lang", cards.LANGUAGES)
@pytest.mark.parametrize("problem", ["draft_expired", "send_failed", "password_unavailable", "rate_limited"])
def test_a_drafts_lifetime_is_the_configured_idle_time(lang: cards.Language, problem: str) -> None:
    """DRAFT_TTL_MINUTES, counted from the last change, never a fixed 30 or from the start."""
    said = catalogue(lang)[f"problem.{problem}.text"]
    assert "minutes" in cards.PROBLEMS[problem] and "{minutes}" in said and "30" not in said, said
    assert ("zonder wijziging" if lang == "nl" else "without a change") in said, said


def test_the_problems_of_the_brief_are_all_known() -> None:
    assert set(cards.PROBLEMS) == {
        "draft_unknown", "draft_expired", "draft_sent", "draft_sending", "draft_cancelled", "draft_foreign",
        "step_not_possible", "no_protocol_in_force", "protocol_not_in_force", "protocol_ended", "not_allowed",
        "unknown_action", "malformed_action", "send_failed", "not_delivered", "internal_error",
        "not_ocmw_conversation", "referral_unknown", "outcome_invalid", "correction_unknown",
        "correction_done",
        "correction_answered_none", "correction_none_no_channel",
        "action_not_possible_now", "rate_limited", "password_unavailable",
        "correction_closed", "correction_withdrawn", "correction_not_sent", "correction_not_queued", "being_sent",
        "not_listed", "correction_not_delivered", "correction_not_delivered_carried_later",
        "correction_not_delivered_answered_none", "withdrawal_after_filing", "withdrawal_after_deletion",
        "withdrawal_never_delivered",
        "not_sent_protocol_ended", "correction_not_sent_protocol_ended",
        "membership_unavailable", "no_longer_listed", "database_unavailable", "not_listed_for_team",
    }  # fmt: skip


def test_text_interpolates_parameters_once() -> None:
    message = cards.text("nl", "delivered", reference="R-{recipient}", recipient="OCMW X")
    assert message.startswith("Doorverwijzing R-{recipient} is verstuurd naar de mailbox van OCMW X")


def test_text_unknown_key_or_missing_parameter_raises() -> None:
    with pytest.raises(cards.CardError):
        cards.text("nl", "no.such.key")
    with pytest.raises(cards.CardError, match="recipient"):
        cards.text("nl", "delivered", reference="R-1")


def test_unknown_command_points_to_the_commands() -> None:
    nl = cards.text("nl", "unknown_command")
    en = cards.text("en", "unknown_command")
    assert "nieuw" in nl and "hulp" in nl
    assert "new" in en and "help" in en


def test_unknown_language_raises() -> None:
    with pytest.raises(cards.CardError):
        cards.text("fr", "unknown_command")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("locale", "lang"),
    [
        ("en", "en"),
        ("en-US", "en"),
        ("en_GB", "en"),
        ("EN-gb", "en"),
        (" en-IE ", "en"),
        ("nl-BE", "nl"),
        ("nl", "nl"),
        ("fr-BE", "nl"),
        ("de", "nl"),
        ("eng", "nl"),
        ("", "nl"),
        (None, "nl"),
    ],
)
def test_language_for(locale: str | None, lang: str) -> None:
    assert cards.language_for(locale) == lang
