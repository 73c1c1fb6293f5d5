"""The time base the instances on one PostgreSQL share: the database server's clock.

Every decision shared between instances compares times that different instances wrote: a lease
another instance took, the moment a draft was last touched, a job's next run, a click counted in a
rate window. Each instance's own wall clock made those comparisons wrong by the instances' skew:
an instance minutes ahead took over a mail another was still sending, and wiped drafts before their
idle time. A wall clock stepped back (NTP, a VM resumed) made the stored times lie in the future.

`DatabaseClock` answers the server's time as read at its last alignment plus the time this
process's monotonic clock measured since: a step of the instance's wall clock changes nothing, and
two instances differ by at most half a round trip each (the reading is placed at the midpoint of
the query). It aligns at start and every minute; while the server cannot be reached it carries its
last alignment forward (before the first one: the wall clock).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable

from bot.clock import Clock, SystemClock
from bot.storage.database import Database

logger = logging.getLogger(__name__)

#: How often the clock reads the server's time again (the monotonic clock drifts a few ppm at most).
ALIGN_INTERVAL = dt.timedelta(minutes=1)
#: A wall clock further off the server's than this is logged (the bot does not rely on it, other software may).
WALL_CLOCK_TOLERANCE = dt.timedelta(seconds=5)


class DatabaseClock:
    """`bot.clock.Clock` on the database server's time, carried forward by the monotonic clock."""

    def __init__(self, db: Database, *, wall: Clock | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._wall = wall or SystemClock()
        self._monotonic = monotonic
        #: The server's time and the monotonic reading it belongs to; None until the first alignment.
        self._base: tuple[dt.datetime, float] | None = None
        self._wall_off = False

    def now(self) -> dt.datetime:
        """The server's time now, as far as this process can tell (its wall clock before the first alignment)."""
        if self._base is None:
            return self._wall.now()
        server_time, at = self._base
        return server_time + dt.timedelta(seconds=self._monotonic() - at)

    @property
    def aligned(self) -> bool:
        """True once the server's time has been read."""
        return self._base is not None

    async def align(self) -> bool:
        """Read the server's time; False (logged) when the server cannot be reached, the last alignment kept."""
        before = self._monotonic()
        try:
            server_time = await self._db.scalar("SELECT clock_timestamp() AS now")
        except Exception as error:  # whatever the driver raises: the clock goes on from its last alignment
            logger.warning("database clock not aligned (%s); it goes on from %s", type(error).__name__,
                           "its last alignment" if self.aligned else "this instance's wall clock")
            return False
        after = self._monotonic()
        self._base = (server_time.astimezone(dt.UTC), (before + after) / 2)
        self._check_wall_clock()
        return True

    async def keep_aligned(self, interval: dt.timedelta = ALIGN_INTERVAL) -> None:
        """Align every `interval` until cancelled."""
        while True:
            await asyncio.sleep(interval.total_seconds())
            await self.align()

    def _check_wall_clock(self) -> None:
        """Log when this instance's wall clock comes to differ from the server's by more than the tolerance, and
        when it is back within it (once each, not every minute)."""
        offset = (self._wall.now() - self.now()).total_seconds()
        off = abs(offset) > WALL_CLOCK_TOLERANCE.total_seconds()
        if off and not self._wall_off:
            logger.warning("this instance's wall clock is %+.0f s off the database server's; the bot uses the "
                           "server's time, check NTP on the host", offset)
        elif self._wall_off and not off:
            logger.info("this instance's wall clock is within %.0f s of the database server's again",
                        WALL_CLOCK_TOLERANCE.total_seconds())
        self._wall_off = off
