"""References: well-formed ones only, and only the reference out of a typed sentence."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from bot.core.reference import find_reference, is_reference, new_reference


def test_a_new_reference_is_well_formed() -> None:
    reference = new_reference(dt.date(2026, 11, 28), random.Random(7))
    assert reference.startswith("VD-20261128-") and is_reference(reference)


@pytest.mark.parametrize(("typed", "found"), [
    ("vd-20261128-k7m2qx", "VD-20261128-K7M2QX"),
    ("toestemming VD-20261128-K7M2QX Sofie Peeters belde", "VD-20261128-K7M2QX"),
    ("telefoonnummer (VD-20261128-K7M2QX-2).", "VD-20261128-K7M2QX-2"),
    ("VD-20261128-K7M2QX en VD-20261129-ABCDEF", "VD-20261128-K7M2QX"),
    ("Sofie Peeters belde", None),
    ("VD-2026-K7M2QX", None),
    ("VD-20261128-K7M2QO", None),  # no O in the alphabet
    ("XVD-20261128-K7M2QX", None),
    ("VD-20261128-K7M2QX-234", None),
])
def test_find_reference_returns_the_first_reference_and_nothing_typed_around_it(typed: str, found: str | None) -> None:
    assert find_reference(typed) == found
