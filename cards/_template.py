"""A small structural filler for the JSON card templates in `templates/`.

The template is parsed once, deep-copied for every card and walked as a tree; the serialized JSON is
never edited as text, so a typed value can never change the card's structure.

- A string that is exactly ``"${name}"`` becomes the value itself (any JSON type: a list of choices,
  a bool, an object).
- In any other string, every ``${name}`` is replaced by the value as text (str or int only).
- An object with ``"$when": "${flag}"`` is left out when the flag is falsy; otherwise only the
  ``$when`` key is removed.
- A placeholder without a value, or a malformed one, raises `TemplateError`, also inside an object
  that is left out, so a typo fails on every path.

Values are inserted once and never read as template text: a value containing ``${x}`` stays as typed.

Parts (`templates/parts/*.json`) are fragments filled by the same rules, for elements a card repeats
(one per row of a list); the filled part is then inserted as a value.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cards._errors import CardError

WHEN = "$when"
_TEMPLATE_DIR = Path(__file__).parent / "templates"
_PART_DIR = _TEMPLATE_DIR / "parts"
_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
_PLACEHOLDER = re.compile(r"\$\{(" + _NAME + r")\}")
_TEMPLATE_NAME = re.compile(r"^[a-z][a-z_]*$")


class TemplateError(CardError):
    """A template cannot be filled: unknown or malformed placeholder, or a value of the wrong type."""


def template_names() -> list[str]:
    """The names of every template file, without `.json`, sorted."""
    return sorted(path.stem for path in _TEMPLATE_DIR.glob("*.json"))


def part_names() -> list[str]:
    """The names of every part file in `templates/parts/`, without `.json`, sorted."""
    return sorted(path.stem for path in _PART_DIR.glob("*.json"))


@functools.cache
def load_template(name: str) -> Any:
    """The parsed template `templates/<name>.json` (shared: deep-copy before changing it)."""
    return _load(_TEMPLATE_DIR, name)


@functools.cache
def load_part(name: str) -> Any:
    """The parsed part `templates/parts/<name>.json` (shared: deep-copy before changing it)."""
    return _load(_PART_DIR, name)


def render_template(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Fill the template `name` with `values` and return the new card.

    `fill` builds a new tree and never changes the one it reads, so the shared template needs no
    copy first (a deep copy per card was a twentieth of a referral's CPU, issue 14).
    """
    filled = fill(load_template(name), values)
    if not isinstance(filled, dict):
        raise TemplateError(f"template {name!r} is not a JSON object")
    return filled


def render_part(name: str, values: Mapping[str, Any]) -> Any:
    """Fill the part `name` with `values` and return the new JSON tree (the shared part stays as it is)."""
    return fill(load_part(name), values)


def fill(node: Any, values: Mapping[str, Any]) -> Any:
    """Return a filled copy of the JSON tree `node` (see the module docstring for the rules).

    Every object and list of the result is new and every value put in is a deep copy, so the result
    shares nothing mutable with `node` or `values`.
    """
    if isinstance(node, dict) and _dropped(node, values):
        raise TemplateError("the root of a template cannot carry a false $when")
    return _fill(node, values)


def placeholders(node: Any) -> set[str]:
    """Every placeholder name used anywhere in the JSON tree `node`, `$when` flags included."""
    found: set[str] = set()
    if isinstance(node, str):
        found.update(_PLACEHOLDER.findall(node))
    elif isinstance(node, list):
        for item in node:
            found |= placeholders(item)
    elif isinstance(node, dict):
        for item in node.values():
            found |= placeholders(item)
    return found


def _load(directory: Path, name: str) -> Any:
    if not _TEMPLATE_NAME.match(name):
        raise TemplateError(f"bad template name {name!r}")
    path = directory / f"{name}.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise TemplateError(f"no template {name!r} ({path})") from error
    return json.loads(text)


def _fill(node: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(node, str):
        return _fill_string(node, values)
    if isinstance(node, list):
        return [_fill(item, values) for item in node if not _dropped(item, values)]
    if isinstance(node, dict):
        return {key: _fill(item, values) for key, item in node.items() if key != WHEN and not _dropped(item, values)}
    return node  # numbers, booleans, null


def _dropped(node: Any, values: Mapping[str, Any]) -> bool:
    """True when `node` is an object whose `$when` flag is falsy."""
    if not isinstance(node, dict) or WHEN not in node:
        return False
    condition = node[WHEN]
    match = _PLACEHOLDER.fullmatch(condition) if isinstance(condition, str) else None
    if match is None:
        raise TemplateError(f"$when must be exactly one placeholder like '${{flag}}', not {condition!r}")
    if bool(_value(match.group(1), values)):
        return False
    _check_known(node, values)
    return True


def _check_known(node: Any, values: Mapping[str, Any]) -> None:
    """Raise for any unknown or malformed placeholder in a subtree that is left out."""
    if isinstance(node, str):
        _check_string(node)
        for name in _PLACEHOLDER.findall(node):
            _value(name, values)
    elif isinstance(node, list):
        for item in node:
            _check_known(item, values)
    elif isinstance(node, dict):
        for item in node.values():
            _check_known(item, values)


def _fill_string(text: str, values: Mapping[str, Any]) -> Any:
    exact = _PLACEHOLDER.fullmatch(text)
    if exact is not None:
        return copy.deepcopy(_value(exact.group(1), values))
    _check_string(text)

    def replace(match: re.Match[str]) -> str:
        value = _value(match.group(1), values)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TemplateError(f"placeholder '${{{match.group(1)}}}' inside text needs a str or int value")
        return str(value)

    return _PLACEHOLDER.sub(replace, text)


def _check_string(text: str) -> None:
    if "${" in _PLACEHOLDER.sub("", text):
        raise TemplateError(f"malformed placeholder in {text!r}")


def _value(name: str, values: Mapping[str, Any]) -> Any:
    try:
        return values[name]
    except KeyError:
        raise TemplateError(f"no value for placeholder '${{{name}}}'") from None
