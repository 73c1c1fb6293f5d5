"""Nothing started side by side outlives its caller: not on an error, not on cancellation."""

from __future__ import annotations

import asyncio

import pytest

from bot.delivery.side_by_side import side_by_side


class _LettingGoSlowly:
    """Waits until cancelled, then takes `pause` seconds to let go (as a database connection closing does)."""

    def __init__(self, count: int) -> None:
        self._count = count
        self.started = 0
        self.let_go = 0
        self.all_started = asyncio.Event()

    async def hold(self, pause: float) -> None:
        self.started += 1
        if self.started == self._count:
            self.all_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(pause)
            self.let_go += 1
            raise


async def test_a_cancelled_caller_returns_only_after_every_one_let_go() -> None:
    held = _LettingGoSlowly(3)
    caller = asyncio.create_task(side_by_side(held.hold(0.0), held.hold(0.05), held.hold(0.1)))
    await held.all_started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert held.let_go == 3


async def test_an_error_is_raised_once_the_others_have_ended() -> None:
    finished: list[str] = []

    async def fails() -> None:
        raise ValueError("the database went away")

    async def finishes_later() -> str:
        await asyncio.sleep(0.05)
        finished.append("later")
        return "later"

    with pytest.raises(ValueError, match="went away"):
        await side_by_side(fails(), finishes_later())
    assert finished == ["later"]


async def test_results_come_back_in_order() -> None:
    async def after(seconds: float, value: int) -> int:
        await asyncio.sleep(seconds)
        return value

    assert await side_by_side(after(0.03, 1), after(0.0, 2), after(0.01, 3)) == [1, 2, 3]
