"""Fixtures of the bot's own tests (the card and infra tests drive browsers with event loops of their own)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.databases import close_opened


@pytest.fixture(autouse=True)
async def _close_test_databases() -> AsyncIterator[None]:
    """Every database a test opened through `tests.support.databases` is closed when it ends."""
    yield
    await close_opened()
