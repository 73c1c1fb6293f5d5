"""Recognises a family's data typed as a chat message, so the bot can say that it does not belong there.

A chat message stays in Teams' history, and in a channel or group chat everyone reads it; a family's
data belongs only on the referral's cards in the personal chat. The test is simple on purpose and
leans towards warning (a false alarm costs one sentence, a miss leaves data in a chat). A message
looks like client data when it holds:

- a phone number or an e-mail address (the patterns the log filter redacts, so the two agree);
- a Belgian national register number (85.07.30-033.28);
- a street with a house number (Kerkstraat 12), or a postal code with a street (9170 ... Kerkstraat);
- a name: a short message of only capitalised words (Sofie Peeters, Jan de Smet), two capitalised words
  in a row inside a sentence, or at least three inside sentences (the first word of a sentence never counts).

@mentions and referral references (VD-20261128-K7M2QX) are not looked at; the bot's own words
(Kind en Gezin, Veilig doorverwijzen, greetings) do not count as names.
"""

from __future__ import annotations

import itertools
import re
import unicodedata

from bot.logging_setup import redact

_MENTION = re.compile(r"<at>.*?</at>", re.IGNORECASE | re.DOTALL)
_REFERENCE = re.compile(r"\bVD-\d{8}-[0-9A-Z]{6}(?:-\d{1,2})?\b", re.IGNORECASE)
#: Rijksregisternummer: YY.MM.DD-NNN.CC, with or without the dots and the dash.
_NATIONAL_NUMBER = re.compile(r"(?<![\d.-])\d{2}\.?\d{2}\.?\d{2}[-.]?\d{3}\.?\d{2}(?![\d]|[.-]\d)")
#: A Belgian postal code: four digits, not part of a longer number, a date or a time.
_POSTAL_CODE = re.compile(r"(?<![\d.,:/-])[1-9]\d{3}(?![\d]|[.,:/-]\d)")
_STREET_SUFFIXES = (
    "straat", "steenweg", "laan", "weg", "plein", "dreef", "lei", "kaai", "singel", "dijk", "baan", "gracht",
    "wegel", "dries", "hof", "veld", "markt", "pad",
)  # fmt: skip
#: A street: one word that ends in a street word after at least two letters (Kerkstraat, Molenhof), or a
#: French street word followed by a name (rue de la Station).
_STREET = re.compile(
    r"\b[^\W\d_]{2,}(?:" + "|".join(_STREET_SUFFIXES) + r")\b"
    r"|\b(?:rue|avenue|chaussée|boulevard)\s+[^\W\d_]",
    re.IGNORECASE,
)
#: Common words that end like a street but are not one.
_NOT_STREETS = frozenset({"onderweg", "halfweg", "loopbaan", "supermarkt", "arbeidsmarkt", "woningmarkt", "werkveld"})
#: A house number right after the street: 12, 12A, 12 bus 3, 12/3.
_HOUSE_NUMBER = re.compile(r"[\s,]+\d{1,4}(?:[a-z]\b|\b)", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_][^\W\d_'’-]*(?:['’-][^\W\d_]+)*")
_SENTENCE_END = re.compile(r"[.!?:;\n]")
#: Lower-case words that belong inside Flemish and Dutch names: Jan de Smet, Lies van den Broeck.
_NAME_PARTICLES = frozenset({"van", "de", "der", "den", "ter", "ten", "te", "le", "la", "du", "des"})
#: Capitalised words a worker types that are no one's name: the bot's vocabulary and greetings.
_NOT_NAMES = frozenset({
    "kind", "gezin", "opgroeien", "veilig", "doorverwijzen", "doorverwijzing", "nieuwe", "nieuw", "new", "referral",
    "safe", "teams", "hulp", "help", "status", "koppel", "hallo", "hello", "hi", "hoi", "dag", "goeiedag",
    "goedendag", "goedemorgen", "goedemiddag", "goedenavond", "bedankt", "dank", "dankjewel", "merci", "thanks",
    "thank", "ok", "oké", "sorry", "ik", "i",
})  # fmt: skip
_MAX_NAME_ONLY_WORDS = 6
_MANY_CAPITALISED = 3


def looks_like_client_data(text: str) -> bool:
    """True when the chat message `text` seems to hold a family's name, address, phone, e-mail or number.

    Read in NFC: a Mac keyboard sends ë as e + U+0308, which would split "Zoë" into two words.
    """
    plain = _REFERENCE.sub(" ", _MENTION.sub(" ", unicodedata.normalize("NFC", text)))
    return (
        redact(plain) != plain
        or _NATIONAL_NUMBER.search(plain) is not None
        or _has_address(plain)
        or _has_name(plain)
    )


def _has_address(text: str) -> bool:
    """A street with a house number after it, or a street and a postal code anywhere in the message."""
    streets = [match for match in _STREET.finditer(text) if match.group(0).lower() not in _NOT_STREETS]
    if not streets:
        return False
    if _POSTAL_CODE.search(text):
        return True
    return any(_HOUSE_NUMBER.match(text, street.end()) for street in streets)


def _has_name(text: str) -> bool:
    """A message that is only a name, or that has many capitalised words inside its sentences."""
    words = [match.group(0) for match in _WORD.finditer(text)]
    names = [word for word in words if _is_capitalised(word)]
    only_a_name = all(word in names or word.lower() in _NAME_PARTICLES for word in words)
    if only_a_name and len(names) >= 2 and len(words) <= _MAX_NAME_ONLY_WORDS:
        return True
    inside = 0
    for sentence in _SENTENCE_END.split(text):
        capitalised = [_is_capitalised(match.group(0)) for match in _WORD.finditer(sentence)][1:]
        if any(first and second for first, second in itertools.pairwise(capitalised)):
            return True  # a first name and a family name: "ik zag Sofie Peeters"
        inside += sum(capitalised)
    return inside >= _MANY_CAPITALISED


def _is_capitalised(word: str) -> bool:
    """Written like a name: a capital, then at least one lower-case letter (so not OCMW), and not a bot word."""
    return word[0].isupper() and any(char.islower() for char in word[1:]) and word.lower() not in _NOT_NAMES
