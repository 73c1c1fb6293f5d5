"""References: well-formed ones only, and only the reference out of a typed sentence."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from bot.core.reference import find_references, is_reference, new_reference


def test_a_new_reference_is_well_formed() -> None:
    reference = new_reference(dt.date(2026, 11, 28), random.Random(7))
    assert reference.startswith("VD-20261128-") and is_reference(reference)


@pytest.mark.parametrize(("typed", "found"), [
    ("vd-20261128-k7m2qx", ["VD-20261128-K7M2QX"]),
    ("toestemming VD-20261128-K7M2QX Sofie Peeters belde", ["VD-20261128-K7M2QX"]),
    ("telefoonnummer (VD-20261128-K7M2QX-2).", ["VD-20261128-K7M2QX-2"]),
    ("VD-20261128-K7M2QX en VD-20261129-ABCDEF", ["VD-20261128-K7M2QX", "VD-20261129-ABCDEF"]),
    ("VD-20261128-K7M2QX, vd-20261128-k7m2qx", ["VD-20261128-K7M2QX"]),
    ("Sofie Peeters belde", []),
    ("VD-2026-K7M2QX", []),
    ("VD-20261128-K7M2QO", []),  # no O in the alphabet
    ("XVD-20261128-K7M2QX", []),
    ("VD-20261128-K7M2QX-234", []),
])
def test_find_references_returns_each_reference_once_and_nothing_typed_around_it(typed: str, found: list[str]) -> None:
    assert find_references(typed) == found
