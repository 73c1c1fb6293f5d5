"""escape_markdown: user-typed values show literally in TextBlocks and FactSets."""

from __future__ import annotations

import pytest

from cards import escape_markdown


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("**Jan**", r"\*\*Jan\*\*"),
        ("[x](http://evil)", r"\[x\]\(http://evil\)"),
        ("_nadruk_", r"\_nadruk\_"),
        ("`code`", r"\`code\`"),
        ("# Titel", r"\# Titel"),
        ("> citaat", r"\> citaat"),
        ("- lijst", r"\- lijst"),
        ("+ lijst", r"\+ lijst"),
        ("* lijst", r"\* lijst"),
        ("1. eerste", r"1\. eerste"),
        ("1) eerste", r"1\) eerste"),
        ("a | b", r"a \| b"),
        ("![img](x)", r"\!\[img\]\(x\)"),
        ("back\\slash", r"back\\slash"),
        ("\\*", r"\\\*"),
    ],
)
def test_markdown_characters_are_escaped(typed: str, shown: str) -> None:
    assert escape_markdown(typed) == shown


@pytest.mark.parametrize("plain", ["Jan Peeters", "Ödön D'Hondt", "Kerkstraat 12 bus 3", "9170", ""])
def test_plain_text_is_unchanged(plain: str) -> None:
    assert escape_markdown(plain) == plain


def test_every_special_character_gets_one_backslash() -> None:
    specials = "\\*_[]()#-+.!`>|"
    assert escape_markdown(specials) == "".join("\\" + char for char in specials)
