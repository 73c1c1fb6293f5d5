"""Working days for reminders: Monday to Friday (public holidays are not skipped)."""

from __future__ import annotations

import datetime as dt


def add_working_days(start: dt.datetime, days: int) -> dt.datetime:
    """`start` moved `days` working days forward, keeping the time of day; weekends are skipped.

    Work done on a Saturday counts from Monday: Saturday + 1 working day is Tuesday, same time.
    """
    moment = start
    while moment.weekday() >= 5:
        moment += dt.timedelta(days=1)
    remaining = days
    while remaining > 0:
        moment += dt.timedelta(days=1)
        if moment.weekday() < 5:
            remaining -= 1
    return moment
