"""A clock the test moves by hand."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass
class ManualClock:
    """Starts at `current` and only moves when told."""

    current: dt.datetime

    def now(self) -> dt.datetime:
        return self.current

    def advance(self, delta: dt.timedelta) -> None:
        self.current += delta
