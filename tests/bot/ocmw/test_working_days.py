"""Working days: weekends and Belgian public holidays are skipped, the time of day is kept."""

from __future__ import annotations

import datetime as dt

import pytest

from bot.ocmw.working_days import add_working_days, belgian_public_holidays

FRIDAY = dt.datetime(2026, 11, 27, 10, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        (FRIDAY, 1, dt.datetime(2026, 11, 30, 10, 30, tzinfo=dt.UTC)),  # Monday
        (FRIDAY, 2, dt.datetime(2026, 12, 1, 10, 30, tzinfo=dt.UTC)),
        (dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC), 1, dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)),
        (FRIDAY, 0, FRIDAY),
    ],
)
def test_weekends_are_skipped(start: dt.datetime, days: int, expected: dt.datetime) -> None:
    assert add_working_days(start, days) == expected


def test_belgian_public_holidays_are_skipped() -> None:
    christmas_eve = dt.datetime(2026, 12, 24, 10, 0, tzinfo=dt.UTC)  # Thursday; 25 Dec is a holiday
    closed = belgian_public_holidays()
    assert dt.date(2026, 12, 25) in closed and dt.date(2026, 7, 21) in closed
    assert add_working_days(christmas_eve, 1, closed) == dt.datetime(2026, 12, 28, 10, 0, tzinfo=dt.UTC)
    assert add_working_days(christmas_eve, 1) == dt.datetime(2026, 12, 25, 10, 0, tzinfo=dt.UTC)
