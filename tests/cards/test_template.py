"""The structural template filler: exact placeholders, text interpolation, `$when`, strictness."""

from __future__ import annotations

import copy

import pytest

from cards._template import (
    TemplateError,
    fill,
    load_template,
    placeholders,
    render_template,
    template_names,
)


def test_exact_placeholder_takes_any_json_value() -> None:
    template = {"choices": "${choices}", "flag": "${flag}", "nothing": "${nothing}", "obj": "${obj}"}
    choices = [{"title": "A", "value": "a"}]
    filled = fill(template, {"choices": choices, "flag": False, "nothing": None, "obj": {"k": 1}})
    assert filled == {"choices": choices, "flag": False, "nothing": None, "obj": {"k": 1}}
    assert filled["choices"] is not choices  # inserted values are copies


def test_placeholders_inside_text_are_interpolated() -> None:
    filled = fill({"text": "Naar ${who} om ${hour}u (${who})"}, {"who": "OCMW X", "hour": 14})
    assert filled == {"text": "Naar OCMW X om 14u (OCMW X)"}


@pytest.mark.parametrize("value", [True, ["a"], {"a": 1}, None, 1.5])
def test_text_interpolation_refuses_non_text_values(value: object) -> None:
    with pytest.raises(TemplateError):
        fill({"text": "x ${v} y"}, {"v": value})


def test_inserted_values_are_never_read_as_template() -> None:
    filled = fill(["${a}", "b: ${a}"], {"a": "${secret} and ${a}", "secret": "LEAK"})
    assert filled == ["${secret} and ${a}", "b: ${secret} and ${a}"]


@pytest.mark.parametrize(
    "template",
    [
        {"text": "${typo}"},
        {"text": "Hallo ${typo}!"},
        ["${known}", {"nested": ["${typo}"]}],
        {"$when": "${typo}", "text": "x"},
    ],
)
def test_unknown_placeholder_raises(template: object) -> None:
    with pytest.raises(TemplateError, match="typo"):
        fill(template, {"known": "k"})


def test_unknown_placeholder_inside_a_dropped_object_still_raises() -> None:
    template = [{"$when": "${show}", "text": "${typo}"}]
    with pytest.raises(TemplateError, match="typo"):
        fill(template, {"show": False})


@pytest.mark.parametrize("text", ["${bad name}", "a ${} b", "${unclosed", "${1abc}"])
def test_malformed_placeholder_raises(text: str) -> None:
    with pytest.raises(TemplateError):
        fill({"text": text}, {"bad": "x", "unclosed": "x"})


def test_when_drops_falsy_objects_from_lists_and_objects() -> None:
    template = {
        "body": [
            {"type": "A"},
            {"$when": "${no}", "type": "B"},
            {"$when": "${empty}", "type": "C"},
            {"$when": "${yes}", "type": "D"},
        ],
        "extra": {"$when": "${no}", "type": "E"},
        "kept": {"$when": "${yes}", "type": "F"},
    }
    filled = fill(template, {"no": False, "empty": "", "yes": "some text"})
    assert filled == {"body": [{"type": "A"}, {"type": "D"}], "kept": {"type": "F"}}


@pytest.mark.parametrize("condition", ["yes", "${yes} ", True, "${yes}${yes}"])
def test_when_must_be_exactly_one_placeholder(condition: object) -> None:
    with pytest.raises(TemplateError, match="when"):
        fill([{"$when": condition, "type": "A"}], {"yes": True})


def test_root_cannot_be_dropped() -> None:
    with pytest.raises(TemplateError):
        fill({"$when": "${no}", "type": "AdaptiveCard"}, {"no": False})


def test_non_string_leaves_and_keys_are_left_alone() -> None:
    template = {"${key}": 1, "n": 2.5, "b": True, "z": None}
    assert fill(template, {}) == template


def test_placeholders_lists_every_name() -> None:
    template = {"a": "${x}", "b": [{"$when": "${flag}", "c": "pre ${y} post"}], "d": 3}
    assert placeholders(template) == {"x", "flag", "y"}


def test_rendering_never_changes_the_loaded_template() -> None:
    before = copy.deepcopy(load_template("problem"))
    values = {
        "title": "T",
        "text": "X",
        "retryDraftId": "",
        "retryFingerprint": "",
        "restart": True,
        "t.action.retry_send": "R",
        "t.action.start_again": "S",
    }
    card = render_template("problem", values)
    card["body"].clear()
    assert load_template("problem") == before
    assert render_template("problem", values)["body"]


def test_every_template_file_is_an_adaptive_card_1_5() -> None:
    names = template_names()
    assert set(names) >= {"welcome", "consent", "details", "review", "sent", "queued", "cancelled", "problem"}
    for name in names:
        template = load_template(name)
        assert template["type"] == "AdaptiveCard", name
        assert template["version"] == "1.5", name
        assert template["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json", name


def test_unknown_or_unsafe_template_name_raises() -> None:
    with pytest.raises(TemplateError):
        load_template("nope")
    with pytest.raises(TemplateError):
        load_template("../texts/nl")


def _containers(node: object) -> list[object]:
    """Every dict and list in a JSON tree."""
    if isinstance(node, dict):
        return [node, *(found for value in node.values() for found in _containers(value))]
    if isinstance(node, list):
        return [node, *(found for value in node for found in _containers(value))]
    return []


def test_a_filled_tree_shares_no_object_or_list_with_its_template_or_values() -> None:
    """The templates are rendered without a copy first: `fill` itself must build every container anew."""
    template = load_template("problem")
    values = {"title": "T", "text": "X", "retryDraftId": "", "retryFingerprint": "", "restart": True,
              "t.action.retry_send": "R", "t.action.start_again": "S"}
    card = render_template("problem", values)
    shared = {id(node) for node in _containers(template)} & {id(node) for node in _containers(card)}
    assert shared == set()
    nested = {"items": [{"k": [1]}]}
    filled = fill({"a": "${items}", "b": [{"c": "${items}"}]}, nested)
    assert {id(node) for node in _containers(filled)} & {id(node) for node in _containers(nested)} == set()
