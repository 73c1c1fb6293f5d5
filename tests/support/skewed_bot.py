"""`python -m tests.support.skewed_bot serve`: the real `python -m bot serve` on a machine whose wall clock is off.

`CLOCK_SKEW_SECONDS` (may be negative) is added to what `bot.clock.SystemClock` answers, as on a VM
resumed with its clock behind, or one that NTP has not stepped back yet: nothing else of the bot is
changed, and the database server keeps the true time. With `CLOCK_SKEW_FILE`, the skew is read from
that file (seconds) at every reading of the clock, so a test can step the clock as NTP does.
"""

from __future__ import annotations

import datetime as dt
import os
import runpy
from pathlib import Path

import bot.clock

SKEW = dt.timedelta(seconds=float(os.environ.get("CLOCK_SKEW_SECONDS", "0")))
SKEW_FILE = os.environ.get("CLOCK_SKEW_FILE")
_true_now = bot.clock.SystemClock.now


def _skewed_now(self: bot.clock.SystemClock) -> dt.datetime:
    if SKEW_FILE:
        return _true_now(self) + dt.timedelta(seconds=float(Path(SKEW_FILE).read_text().strip() or 0))
    return _true_now(self) + SKEW


bot.clock.SystemClock.now = _skewed_now  # type: ignore[method-assign]

runpy.run_module("bot", run_name="__main__", alter_sys=True)
