"""A small structural filler for the JSON card templates in `templates/`.

The template is parsed once and prepared once: each node becomes a small function that builds its
part of a new card from the values (a string without a placeholder is kept as it is, an
interpolated one is split once), so a card is built without walking the template's text with
regular expressions again. The serialized JSON is never edited as text, so a typed value can never
change the card's structure.

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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cards._errors import CardError

WHEN = "$when"
_TEMPLATE_DIR = Path(__file__).parent / "templates"
_PART_DIR = _TEMPLATE_DIR / "parts"
_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
_PLACEHOLDER = re.compile(r"\$\{(" + _NAME + r")\}")
_TEMPLATE_NAME = re.compile(r"^[a-z][a-z_]*$")
#: Values inserted as they are: nothing in them can be changed, so a copy would be the same.
_IMMUTABLE = (str, int, float, bool, type(None))
#: A prepared node: builds its part of the card from the values.
Filler = Callable[[Mapping[str, Any]], Any]


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

    The template is prepared once (`_prepared_template`); filling builds a new tree and never changes
    the one it was prepared from, so the shared template needs no copy first.
    """
    filled = _prepared_template(name)(values)
    if not isinstance(filled, dict):
        raise TemplateError(f"template {name!r} is not a JSON object")
    return filled


def render_part(name: str, values: Mapping[str, Any]) -> Any:
    """Fill the part `name` with `values` and return the new JSON tree (the shared part stays as it is)."""
    return _prepared_part(name)(values)


def fill(node: Any, values: Mapping[str, Any]) -> Any:
    """Return a filled copy of the JSON tree `node` (see the module docstring for the rules).

    Every object and list of the result is new and every value put in is a deep copy, so the result
    shares nothing mutable with `node` or `values`.
    """
    return _prepare_root(node)(values)


@functools.cache
def _prepared_template(name: str) -> Filler:
    return _prepare_root(load_template(name))


@functools.cache
def _prepared_part(name: str) -> Filler:
    return _prepare_root(load_part(name))


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


def _prepare_root(node: Any) -> Filler:
    """`_prepare`, and the root's own `$when`: it cannot be left out, so a false flag is an error."""
    filler = _prepare(node)
    flag = _when_flag(node)
    if flag is None:
        return filler

    def fill_root(values: Mapping[str, Any]) -> Any:
        if not _value(flag, values):
            raise TemplateError("the root of a template cannot carry a false $when")
        return filler(values)

    return fill_root


def _prepare(node: Any) -> Filler:
    """The function that builds a filled copy of `node`; raises now for what no values could fix."""
    if isinstance(node, str):
        return _prepare_string(node)
    if isinstance(node, list):
        items = [_Conditional(item) for item in node]

        def fill_list(values: Mapping[str, Any]) -> list[Any]:
            return [item.fill(values) for item in items if item.kept(values)]

        return fill_list
    if isinstance(node, dict):
        members = [(key, _Conditional(item)) for key, item in node.items() if key != WHEN]

        def fill_object(values: Mapping[str, Any]) -> dict[str, Any]:
            return {key: item.fill(values) for key, item in members if item.kept(values)}

        return fill_object
    return lambda _values: node  # numbers, booleans, null


class _Conditional:
    """An item of a list or object: left out when it is an object whose `$when` flag is falsy."""

    __slots__ = ("fill", "flag", "names")

    def __init__(self, node: Any) -> None:
        self.fill = _prepare(node)
        self.flag = _when_flag(node)
        #: Checked when left out too, so a typo fails on every path.
        self.names = placeholders(node) if self.flag is not None else set()

    def kept(self, values: Mapping[str, Any]) -> bool:
        if self.flag is None or _value(self.flag, values):
            return True
        for name in self.names:
            _value(name, values)
        return False


def _when_flag(node: Any) -> str | None:
    """The placeholder name of an object's `$when` (None without one)."""
    if not isinstance(node, dict) or WHEN not in node:
        return None
    condition = node[WHEN]
    match = _PLACEHOLDER.fullmatch(condition) if isinstance(condition, str) else None
    if match is None:
        raise TemplateError(f"$when must be exactly one placeholder like '${{flag}}', not {condition!r}")
    return match.group(1)


def _prepare_string(text: str) -> Filler:
    if "${" not in text:
        return lambda _values: text
    exact = _PLACEHOLDER.fullmatch(text)
    if exact is not None:
        name = exact.group(1)
        return lambda values: _copied(_value(name, values))
    _check_string(text)
    pieces = _PLACEHOLDER.split(text)  # text, name, text, name, ..., text

    def interpolate(values: Mapping[str, Any]) -> str:
        out = []
        for index, piece in enumerate(pieces):
            if index % 2 == 0:
                out.append(piece)
                continue
            value = _value(piece, values)
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise TemplateError(f"placeholder '${{{piece}}}' inside text needs a str or int value")
            out.append(str(value))
        return "".join(out)

    return interpolate


def _copied(value: Any) -> Any:
    return value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value)


def _check_string(text: str) -> None:
    if "${" in _PLACEHOLDER.sub("", text):
        raise TemplateError(f"malformed placeholder in {text!r}")


def _value(name: str, values: Mapping[str, Any]) -> Any:
    try:
        return values[name]
    except KeyError:
        raise TemplateError(f"no value for placeholder '${{{name}}}'") from None
