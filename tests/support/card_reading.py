"""Reading Adaptive Cards the way a user sees them: buttons, inputs, texts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in the card, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def actions(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every Action.Execute by verb, with its data."""
    return {
        element["verb"]: element.get("data", {})
        for element in walk(card)
        if element.get("type") == "Action.Execute"
    }


def draft_id_of(card: dict[str, Any]) -> str:
    """The draft id the card's actions carry."""
    ids = {data["draftId"] for data in actions(card).values() if "draftId" in data}
    assert len(ids) == 1, ids
    return ids.pop()


def input_ids(card: dict[str, Any]) -> list[str]:
    """The ids of every input on the card, in order."""
    return [element["id"] for element in walk(card) if str(element.get("type", "")).startswith("Input.")]


def input_values(card: dict[str, Any]) -> dict[str, Any]:
    """Preset values of the card's inputs."""
    return {
        element["id"]: element.get("value")
        for element in walk(card)
        if str(element.get("type", "")).startswith("Input.")
    }


def texts(card: dict[str, Any]) -> str:
    """Everything a user can read on the card, as one string."""
    return json.dumps(card, ensure_ascii=False)


def read_aloud(card: dict[str, Any]) -> str:
    """What a user reads on the card, line by line: texts, toggle titles, facts ("title: value"), buttons."""
    parts: list[str] = []
    for element in walk(card):
        kind = str(element.get("type", ""))
        if kind == "TextBlock":
            parts.append(str(element.get("text", "")))
        elif kind == "Input.Toggle" or kind.startswith("Action."):
            parts.append(str(element.get("title", "")))
        elif kind == "FactSet":
            parts += [f"{fact['title']}: {fact['value']}" for fact in element.get("facts", [])]
    return "\n".join(part for part in parts if part)


def links(card: dict[str, Any]) -> list[str]:
    """The addresses of the card's Action.OpenUrl buttons, in card order."""
    return [str(element["url"]) for element in walk(card) if element.get("type") == "Action.OpenUrl"]


def attention_texts(card: dict[str, Any]) -> list[str]:
    """The red (attention) text blocks: the card's error messages."""
    return [
        str(element.get("text", ""))
        for element in walk(card)
        if element.get("type") == "TextBlock" and element.get("color") == "attention"
    ]


def all_actions(card: dict[str, Any]) -> list[dict[str, Any]]:
    """Every action element (any Action.* type), in card order."""
    return [node for node in walk(card) if str(node.get("type", "")).startswith("Action.")]


#: Teams refuses a bot message over 40 KB.
CARD_LIMIT_BYTES = 40 * 1024


def assert_complete_card(card: dict[str, Any]) -> str:
    """A whole Adaptive Card 1.5, under 40 KB, with every template placeholder filled; returns its JSON."""
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.5"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["body"]
    text = json.dumps(card, ensure_ascii=False)
    assert len(text.encode("utf-8")) < CARD_LIMIT_BYTES
    assert "${" not in text
    assert "$when" not in text
    assert "isRequired" not in text
    return text
