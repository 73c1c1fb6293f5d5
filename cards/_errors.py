"""The one exception type of the `cards` package."""

from __future__ import annotations


class CardError(ValueError):
    """A card or text cannot be built: unknown text key, problem, field id or placeholder.

    Always a programming error (a typo, a new error code without a text); tests catch it.
    """
