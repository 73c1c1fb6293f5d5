"""One word for each thing (issue 12 §6): the catalogues, the templates and every card keep the sweep done.

A word that came back ("verzonden", "afgeleverd", "Achternaam", "de support", "delivered", ...) fails
here with the word and what to write instead (`tests/support/words.py`). The mail, the package and a
correction are checked beside their modules (tests/bot/delivery/test_mail_message.py, test_package.py,
test_correction_package.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cards
from bot.oversight.breach import BREACH_WORDS
from bot.referral.dialogue import is_start_command
from bot.router import _LINK_PREFIXES, _REFERENCE_COMMANDS, _STATUS_WORDS
from cards._texts import catalogue
from infra.card_gallery import samples
from tests.support.words import FIELD_NAMES, forbidden_words, unproven_ticks

TEMPLATES = Path(cards.__file__).parent / "templates"
PLACEHOLDER = re.compile(r"\$\{[^}]*\}")
#: The card properties people read (the rest are types, verbs, ids, styles and colours).
READ_PROPERTIES = frozenset({"text", "title", "label", "placeholder", "value", "errorMessage", "altText"})
BOLD = re.compile(r"\*\*([^*]+)\*\*")
HELP_WORDS = {"nl": "hulp", "en": "help"}


def _strings(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _strings(value, name)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, key)
    elif isinstance(node, str):
        yield key, node


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_no_catalogue_text_uses_a_word_the_sweep_removed(lang: cards.Language) -> None:
    found = {key: forbidden_words(value, lang) for key, value in catalogue(lang).items()}
    assert {key: words for key, words in found.items() if words} == {}


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_no_catalogue_text_presents_a_tick_as_proof(lang: cards.Language) -> None:
    found = {key: unproven_ticks(value, lang) for key, value in catalogue(lang).items()}
    assert {key: sentences for key, sentences in found.items() if sentences} == {}


@pytest.mark.parametrize("path", sorted(TEMPLATES.rglob("*.json")), ids=lambda path: path.stem)
def test_no_template_writes_a_removed_word_itself(path: Path) -> None:
    template = json.loads(path.read_text(encoding="utf-8"))
    literal = " | ".join(PLACEHOLDER.sub(" ", value) for _, value in _strings(template))
    for lang in cards.LANGUAGES:
        assert forbidden_words(literal, lang) == {}, lang


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_no_card_shows_a_removed_word(lang: cards.Language) -> None:
    shown = {sample.name: " | ".join(value for key, value in _strings(sample.card(lang)) if key in READ_PROPERTIES)
             for sample in samples()}
    assert len(shown) > 40
    found = {name: forbidden_words(text, lang) for name, text in shown.items()}
    assert {name: words for name, words in found.items() if words} == {}


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_a_field_has_one_name_on_every_card(lang: cards.Language) -> None:
    names, texts = FIELD_NAMES[lang], catalogue(lang)
    assert texts["field.firstName.label"] == texts["review.fact.first_name"] == names["firstName"]
    assert texts["field.lastName.label"] == texts["review.fact.last_name"] == names["lastName"]
    assert texts["review.fact.address"] == texts["item.address.label"] == texts["breach.category.address"] \
        == names["address"]
    for field in ("phone", "email"):
        assert texts[f"field.{field}.label"] == texts[f"review.fact.{field}"] == texts[f"item.{field}.label"] \
            == texts[f"breach.category.{field}"] == names[field], field


@pytest.mark.parametrize("lang", cards.LANGUAGES)
def test_the_ocmw_buttons_are_named_as_the_texts_name_them(lang: cards.Language) -> None:
    texts = catalogue(lang)
    for key in ("notice.quality_item_missing", "ocmw.quality.text"):
        assert texts["action.data_wrong"] in texts[key] and texts["action.data_superfluous"] in texts[key], key
    assert texts["action.data_wrong"] in texts["confirm.unreachable.explanation"]


def _commands(text: str) -> set[str]:
    """The first word of every bold part of `text`: what it tells the user to type."""
    return {bold.split()[0] for bold in BOLD.findall(text)}


def _understood(word: str, lang: cards.Language) -> bool:
    return (is_start_command(word) or word == HELP_WORDS[lang] or word in _STATUS_WORDS or word in BREACH_WORDS
            or word in _REFERENCE_COMMANDS or f"{word} " in _LINK_PREFIXES)


@pytest.mark.parametrize(("lang", "start", "status", "correct", "withdraw", "breach"), [
    ("nl", "nieuw", "status", "verbeter", "intrekken", "datalek"),
    ("en", "new", "status", "correct", "withdraw", "breach"),
])
@pytest.mark.parametrize("key", ["welcome.commands", "unknown_command"])
def test_the_personal_chat_names_every_command_a_referrer_types(
    lang: cards.Language, key: str, start: str, status: str, correct: str, withdraw: str, breach: str
) -> None:
    named = _commands(cards.text(lang, key))
    assert {start, HELP_WORDS[lang], status, correct, withdraw, breach} <= named
    assert all(_understood(word, lang) for word in named), named
    for word in (correct, withdraw):
        assert f"**{word} VD-…**" in cards.text(lang, key), "with the reference, as it must be typed"


@pytest.mark.parametrize(("lang", "breach"), [("nl", "datalek"), ("en", "breach")])
@pytest.mark.parametrize("keys", [("welcome_shared.link",), ("unknown_command_shared",)])
def test_the_ocmw_channel_names_every_command_typed_there(
    lang: cards.Language, breach: str, keys: tuple[str, ...]
) -> None:
    named = set().union(*(_commands(cards.text(lang, key)) for key in keys))
    assert {"status", "koppel", breach} <= named
    assert all(_understood(word, lang) for word in named), named
