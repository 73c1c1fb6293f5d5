"""Referral references: short, readable over the phone, and free of client data."""

from __future__ import annotations

import datetime as dt
import random
import re
import secrets

#: No 0/O, 1/I/L: a reference is read aloud between a nurse and an OCMW worker.
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
_REFERENCE = r"VD-[0-9]{8}-[" + REFERENCE_ALPHABET + r"]{6}(?:-[0-9]{1,2})?"
#: A correction adds a version suffix: VD-20261128-K7M2QX-2.
REFERENCE_PATTERN = re.compile(f"^{_REFERENCE}$")
#: A reference as a word of a typed sentence, in any case ("intrekken toestemming vd-20261128-k7m2qx").
_REFERENCE_IN_TEXT = re.compile(rf"(?<![\w-]){_REFERENCE}(?![\w-])", re.IGNORECASE)


def new_reference(day: dt.date, rng: random.Random | None = None) -> str:
    """A new reference like `VD-20261128-K7M2QX` (day of sending, 6 random characters)."""
    source = rng if rng is not None else secrets.SystemRandom()
    suffix = "".join(source.choice(REFERENCE_ALPHABET) for _ in range(6))
    return f"VD-{day:%Y%m%d}-{suffix}"


def is_reference(value: str) -> bool:
    """True for a well-formed reference (only A-Z, 0-9 and '-')."""
    return bool(REFERENCE_PATTERN.match(value))


def find_references(text: str) -> list[str]:
    """The well-formed references in the typed `text`, upper case, each once, in the order typed; [] when none.

    Only the matches are returned, never the words around them: they may be a family's data.
    """
    return list(dict.fromkeys(match.group(0).upper() for match in _REFERENCE_IN_TEXT.finditer(text)))
