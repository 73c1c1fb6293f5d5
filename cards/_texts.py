"""The Dutch and English text catalogues (`texts/nl.json`, `texts/en.json`)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal, get_args

from cards._errors import CardError

Language = Literal["nl", "en"]
LANGUAGES: tuple[Language, ...] = get_args(Language)
_TEXT_DIR = Path(__file__).parent / "texts"
_PARAM = re.compile(r"\{([a-z_]+)\}")
_LOCALE_SEPARATOR = re.compile(r"[-_]")


def language_for(locale: str | None) -> Language:
    """The card language for a Teams locale: English for "en", "en-US", "en_GB"; Dutch otherwise."""
    if locale is None:
        return "nl"
    primary = _LOCALE_SEPARATOR.split(locale.strip(), maxsplit=1)[0].lower()
    return "en" if primary == "en" else "nl"


@functools.cache
def catalogue(lang: Language) -> Mapping[str, str]:
    """Every text of `lang` by key (read-only)."""
    if lang not in LANGUAGES:
        raise CardError(f"unknown language {lang!r}")
    raw = json.loads((_TEXT_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise CardError(f"texts/{lang}.json must be one object of strings")
    return MappingProxyType(raw)


def text_params(template: str) -> set[str]:
    """The `{name}` parameters a catalogue text expects."""
    return set(_PARAM.findall(template))


def text(lang: Language, key: str, **params: str) -> str:
    """The text `key` in `lang` with its `{name}` parameters filled in (extra params are ignored)."""
    try:
        template = catalogue(lang)[key]
    except KeyError:
        raise CardError(f"no text {key!r} in {lang}") from None

    def replace(match: re.Match[str]) -> str:
        try:
            return params[match.group(1)]
        except KeyError:
            raise CardError(f"text {key!r} needs the parameter {match.group(1)!r}") from None

    return _PARAM.sub(replace, template)
