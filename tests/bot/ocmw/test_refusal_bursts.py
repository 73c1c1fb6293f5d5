"""Refused OCMW clicks grouped into bursts in the shared database, so every instance counts the same burst."""

from __future__ import annotations

import datetime as dt

from bot.ocmw.refusal_bursts import RefusalBursts
from bot.storage.database import Database

START = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


async def test_bursts_carry_the_counted_clicks_and_forget_old_ones(database: Database) -> None:
    bursts = RefusalBursts(database, window=dt.timedelta(minutes=10), keep=dt.timedelta(days=1))
    first = await bursts.click("u", "VD-1", "ack.receive", START)
    assert (first.clicks_in_burst, first.register, first.only_counted_before) == (1, True, 0)
    for n in range(2, 5):
        assert not (await bursts.click("u", "VD-1", "ack.receive", START + dt.timedelta(minutes=n))).register
    assert (await bursts.click("v", "VD-1", "ack.receive", START)).register, "per user"
    later = await bursts.click("u", "VD-1", "ack.receive", START + dt.timedelta(minutes=10))
    assert (later.clicks_in_burst, later.register, later.only_counted_before) == (1, True, 3)
    await bursts.click("u", "VD-1", "ack.receive", START + dt.timedelta(minutes=11))
    next_day = await bursts.click("u", "VD-1", "ack.receive", START + dt.timedelta(days=1, minutes=11))
    assert next_day.register and next_day.only_counted_before == 0, "a day-old count is only in the log"


async def test_old_bursts_are_pruned_and_nobody_is_named(database: Database) -> None:
    bursts = RefusalBursts(database, keep=dt.timedelta(days=1))
    await bursts.click("aad-outsider", "VD-20261128-K7M2QX", "ack.receive", START)
    [row] = await database.fetch_all("SELECT * FROM refusal_bursts")
    assert "aad-outsider" not in str(dict(row)) and "K7M2QX" not in str(dict(row))
    assert await bursts.prune(START + dt.timedelta(days=1)) == 1
