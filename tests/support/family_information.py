"""What the family must be told before consent (issue 12, CONTENT.md), as phrases a test can look for.

Each point lists the words that carry it in the Dutch texts; the consent card and the information
sheet must both hold every one. DPO addresses come from the protocol file, not from here.
"""

from __future__ import annotations

import re

#: point -> phrases that must all be there (nl-BE, as read aloud).
REQUIRED_POINTS: dict[str, tuple[str, ...]] = {
    "who is responsible": ("Opgroeien regie is verantwoordelijk", "verantwoordelijk voor je gegevens"),
    "which data": ("je naam", "je adres", "je telefoonnummer", "je e-mailadres",
                   "Niets over je gezondheid, je kind of je gezin"),
    "to whom": ("maatschappelijk werker", "hetzelfde beroepsgeheim"),
    "breed onthaal explained": ("geïntegreerd breed onthaal", "samen met andere diensten", "CAW", "ziekenfonds",
                                "Ook die diensten kunnen je gegevens dan krijgen",
                                "decreet over het lokaal sociaal beleid"),
    "why": ("contact met je opnemen", "recht hebt"),
    "how long": ("tot dat contact er geweest is", "10 jaar nadat het is afgesloten", "wist het OCMW je gegevens"),
    "refusing changes nothing": ("Je kiest zelf", "Zeg je nee, dan verandert dat niets aan de hulp die je van "
                                 "Kind en Gezin krijgt"),
    "withdraw any time, and how": ("altijd weer intrekken",
                                   "Zeg dat dan aan mij of aan iemand anders van Kind en Gezin",
                                   "Wij vragen het OCMW dan om je gegevens te wissen"),
    "rights": ("inkijken", "verbeteren", "wissen", "bezwaar maken", "functionaris voor gegevensbescherming (DPO)"),
    "complaint route": ("Vlaamse Toezichtcommissie", "www.vlaamsetoezichtcommissie.be",
                        "contact@vlaamsetoezichtcommissie.be"),
}

#: A promise or a nudge has no place in what the family is told (CONTENT.md: "zo loop je niets mis" goes).
NUDGES = re.compile(
    r"\b(niets mis|mis te lopen|loop je|zeker|gratis|beter|aanrader|aan te raden|raden (we|wij|je) aan|profiteer"
    r"|voordeel|kans|snel|geen zorgen|beloof|miss out|don't miss|free|for sure|surely|better|recommend|benefit"
    r"|chance|guarantee|don't worry)\b",
    re.IGNORECASE,
)


def missing_points(text: str) -> dict[str, list[str]]:
    """The required points whose phrases are not all in `text`, with the phrases missing."""
    flat = " ".join(text.split())
    missing = {point: [phrase for phrase in phrases if phrase not in flat]
               for point, phrases in REQUIRED_POINTS.items()}
    return {point: phrases for point, phrases in missing.items() if phrases}
