"""Working days for reminders: Monday to Friday, without Belgian public holidays.

The holiday calendar comes from the `holidays` package (Belgium); a test can pass its own. The
package is imported when the calendar is first asked for, not with this module: it loads all of its
~250 countries (~75 ms of CPU), which the bot's start-up does not need (the reminder pass loads it in
a thread).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container


def belgian_public_holidays() -> Container[dt.date]:
    """Belgium's legal public holidays, any year (computed on demand by the `holidays` package)."""
    import holidays  # here, not at the top: see the module's docstring

    return holidays.country_holidays("BE")


def add_working_days(start: dt.datetime, days: int, closed: Container[dt.date] = frozenset()) -> dt.datetime:
    """`start` moved `days` working days forward, keeping the time of day; weekends and `closed` days skipped.

    Work done on a day off counts from the next working day: Saturday + 1 working day is Tuesday.
    """
    def working(moment: dt.datetime) -> bool:
        return moment.weekday() < 5 and moment.date() not in closed

    moment = start
    while not working(moment):
        moment += dt.timedelta(days=1)
    remaining = days
    while remaining > 0:
        moment += dt.timedelta(days=1)
        if working(moment):
            remaining -= 1
    return moment
