"""Escaping of user-typed values shown in markdown-rendering card elements."""

from __future__ import annotations

import re

# Every character Adaptive Cards' markdown subset (and CommonMark around it) gives a meaning:
# emphasis, links, headings, lists, code, quotes, tables. A backslash escape is valid before any of
# them, so escaping them all also neutralises leading list and number markers ("- ", "1. ", "1) ").
_SPECIAL = re.compile(r"([\\*_\[\]()#\-+.!`>|])")


def escape_markdown(text: str) -> str:
    """Return `text` so that a TextBlock or FactSet shows it literally ("**x**" stays "**x**").

    Only for values shown in markdown-rendering elements (TextBlock, FactSet); never for Input
    values, labels, placeholders or choice titles, which are shown as plain text.
    """
    return _SPECIAL.sub(r"\\\1", text)
