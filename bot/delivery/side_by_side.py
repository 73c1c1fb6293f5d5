"""Run several awaitables at once and return only when every one of them has ended.

`asyncio.gather` (without `return_exceptions`) returns as soon as the first of them fails or is
cancelled, while the others still run: on shutdown a delivery lane then outlived its worker and
used the database after it was closed, and the event loop hung waiting for it. Here the caller
waits for all of them, also when it is cancelled itself, and then sees the first error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def side_by_side(*awaitables: Awaitable[T]) -> list[T]:
    """Each awaitable's result, in order, once all have ended; else the first error (cancellation first)."""
    # With `return_exceptions=True`, gather waits for every child, also when it is cancelled itself.
    outcomes = await asyncio.gather(*awaitables, return_exceptions=True)
    if any(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes):
        raise asyncio.CancelledError
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes  # type: ignore[return-value]  # no outcome is an exception here
