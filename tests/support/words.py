"""One word for each thing (issue 12 §6, CONTENT.md "One word for each thing"), as checks a test can run.

`forbidden_words` finds the words the texts no longer use: a second verb for sending, "afgeleverd" for
what only the mail system accepted, "de support" instead of who helps, a second name for a field,
"cliënt" for the family. `unproven_ticks` finds a sentence that presents a tick on the consent card as
a fact about the parents instead of as what the referrer confirmed. `FIELD_NAMES` are the names of
the fields on every card, in the package, in a correction and in the guides.
"""

from __future__ import annotations

import re
from typing import Final

#: Per language: pattern -> what to say instead. Case-insensitive, whole words.
FORBIDDEN: Final[dict[str, dict[str, str]]] = {
    "nl": {
        r"verzond\w*|verzend\w*": 'one verb for sending: "verstuurd"',
        r"afgeleverd|aflever\w*": '"verstuurd naar de mailbox van het OCMW": the mail system accepted it, no more',
        r"achternaam": 'the field is "Familienaam"',
        r"support": 'name who helps: "de functioneel beheerder van Veilig doorverwijzen" or the DPO',
        r"beheerder van de bot": '"de functioneel beheerder van Veilig doorverwijzen"',
        r"cliënt\w*": '"het gezin" (and "dossier" for the OCMW\'s file)',
        r"ontvangen": '"ontvangst bevestigd", and only after the OCMW confirmed it in Teams',
        r"telefoon|e-mail": 'the fields are "Telefoonnummer" and "E-mailadres"',
    },
    "en": {
        r"deliver\w*": '"sent to the OCMW\'s mailbox": the mail system accepted it, no more',
        r"(contact|tell|ask|the) support": 'name who helps: "the functional administrator of Safe referral" or the DPO',
        r"bot's administrator": '"the functional administrator of Safe referral"',
        r"surname|family name": 'the field is "Last name"',
        r"client": '"the family"',
        r"e-mail": '"email address"',
    },
}

#: The names of the fields, the same on the data-entry card, the review card, a correction, the package
#: and the guides (`Adres` is the review card's and the package's line for street, number, postal code
#: and municipality).
FIELD_NAMES: Final[dict[str, dict[str, str]]] = {
    "nl": {"firstName": "Voornaam", "lastName": "Familienaam", "address": "Adres", "phone": "Telefoonnummer",
           "email": "E-mailadres"},
    "en": {"firstName": "First name", "lastName": "Last name", "address": "Address", "phone": "Phone number",
           "email": "Email address"},
}

_SENTENCE = re.compile(r"[^.!?\n]+")
#: A sentence about the parents being informed or consenting...
_TICK_CLAIM = {
    "nl": re.compile(r"\bouders\b.*\b(geïnformeerd|ingelicht|gaven|gaf)\b", re.IGNORECASE),
    "en": re.compile(r"\bparents\b.*\b(were informed|have been informed|gave)\b", re.IGNORECASE),
}
#: ...must say it is what the referrer confirmed.
_CONFIRMED = {"nl": re.compile(r"\bbevestig", re.IGNORECASE), "en": re.compile(r"\bconfirm", re.IGNORECASE)}


def forbidden_words(text: str, lang: str) -> dict[str, str]:
    """Each forbidden word in `text` (as written there) with what to write instead."""
    found = {}
    for pattern, instead in FORBIDDEN[lang].items():
        for match in re.finditer(rf"(?<![\w-])(?:{pattern})(?![\w-])", text, re.IGNORECASE):
            found[match.group(0)] = instead
    return found


def unproven_ticks(text: str, lang: str) -> list[str]:
    """Sentences that present the consent card's ticks as facts about the parents, not as the referrer's word."""
    return [sentence.strip() for sentence in _SENTENCE.findall(text)
            if _TICK_CLAIM[lang].search(sentence) and not _CONFIRMED[lang].search(sentence)]
