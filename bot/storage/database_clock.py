"""The time base the instances on one PostgreSQL share: the database server's clock.

Every decision shared between instances compares times that different instances wrote: a lease
another instance took, the moment a draft was last touched, a job's next run, a click counted in a
rate window. Each instance's own wall clock made those comparisons wrong by the instances' skew:
an instance minutes ahead took over a mail another was still sending, and wiped drafts before their
idle time. A wall clock stepped back (NTP, a VM resumed) made the stored times lie in the future.

`DatabaseClock` answers the server's time as read at its last alignment plus the time this
process's monotonic clock measured since: a step back of the instance's wall clock changes nothing,
and two instances differ by at most half a round trip each (the reading is placed at the midpoint
of the statement, timed on a connection already checked out). It aligns at start and every minute,
and within a second when the wall clock has gone further than the monotonic clock (which stands
still while the machine is suspended or paused: after a resume the time goes on from the wall
clock's progress until then); while the server cannot be reached it carries its last alignment
forward (before the first one: the wall clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable

from bot.clock import Clock, SystemClock
from bot.storage.database import Database

logger = logging.getLogger(__name__)

#: How often the clock reads the server's time again (the monotonic clock drifts a few ppm at most).
ALIGN_INTERVAL = dt.timedelta(minutes=1)
#: The wall and monotonic clocks parting by more than this since an alignment: a suspend, a pause or a step.
DIVERGENCE = dt.timedelta(seconds=2)
#: How often `keep_aligned` looks whether they parted (no database work: two clock readings).
CHECK_SECONDS = 1.0
#: After a failed alignment that was asked for at once, the next try.
RETRY_SECONDS = 5.0
#: A reading whose statement took longer than this is not precise enough to replace a good one.
MAX_ROUND_TRIP = dt.timedelta(seconds=0.5)
#: A wall clock further off the server's than this is logged (the bot does not rely on it, other software may).
WALL_CLOCK_TOLERANCE = dt.timedelta(seconds=5)


class DatabaseClock:
    """`bot.clock.Clock` on the database server's time, carried forward by the monotonic clock."""

    def __init__(self, db: Database, *, wall: Clock | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._wall = wall or SystemClock()
        self._monotonic = monotonic
        #: The server's time, and the monotonic and wall readings it belongs to; None until the first alignment.
        self._base: tuple[dt.datetime, float, dt.datetime] | None = None
        self._wall_off = False
        self._realign = asyncio.Event()

    def now(self) -> dt.datetime:
        """The server's time now, as far as this process can tell (its wall clock before the first alignment).

        Carried forward by the monotonic clock; when the wall clock has moved further since the alignment (by
        more than `DIVERGENCE`), by the wall clock's progress, and the next alignment is asked for at once:
        the monotonic clock stands still while the machine is suspended or paused (a VM resumed), and the
        time must not then lag the other instances' by the length of the pause.
        """
        if self._base is None:
            return self._wall.now()
        server_time, at, wall_at = self._base
        carried = self._monotonic() - at
        walked = (self._wall.now() - wall_at).total_seconds()
        if abs(walked - carried) > DIVERGENCE.total_seconds():
            self._realign.set()
        return server_time + dt.timedelta(seconds=max(carried, walked))

    @property
    def diverged(self) -> bool:
        """True while the wall and monotonic clocks have parted since the last alignment (one is asked for)."""
        return self._realign.is_set()

    @property
    def aligned(self) -> bool:
        """True once the server's time has been read."""
        return self._base is not None

    async def align(self) -> bool:
        """Read the server's time; False (logged) when the server cannot be reached, the last alignment kept.

        Only the statement is timed, on a connection already checked out: the wait for a pooled connection
        (up to 10 s on a loaded instance) came before the server read its clock, and put the reading ahead by
        half of it. A reading whose round trip took longer than `MAX_ROUND_TRIP` is not used once there is one.
        """
        try:
            async with self._db.transaction():
                await self._db.scalar("SELECT 1 AS ready")  # the connection, its BEGIN: not part of the reading
                before = self._monotonic()
                server_time = await self._db.scalar("SELECT clock_timestamp() AS now")
                after = self._monotonic()
        except Exception as error:  # whatever the driver raises: the clock goes on from its last alignment
            logger.warning("database clock not aligned (%s); it goes on from %s", type(error).__name__,
                           "its last alignment" if self.aligned else "this instance's wall clock")
            return False
        if self.aligned and after - before > MAX_ROUND_TRIP.total_seconds():
            logger.info("database clock reading not used: its round trip took %.1f s", after - before)
            return False
        self._base = (server_time.astimezone(dt.UTC), (before + after) / 2, self._wall.now())
        self._realign.clear()
        self._check_wall_clock()
        return True

    async def keep_aligned(self, interval: dt.timedelta = ALIGN_INTERVAL) -> None:
        """Align every `interval`, and at once when `now()` finds the clocks parted, until cancelled."""
        due = self._monotonic() + interval.total_seconds()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_SECONDS):
                    await self._realign.wait()
            self.now()  # a suspend is found here too when nothing else asks the time
            if self._realign.is_set() or self._monotonic() >= due:
                if await self.align() or not self._realign.is_set():
                    due = self._monotonic() + interval.total_seconds()
                else:
                    await asyncio.sleep(RETRY_SECONDS)  # the server out of reach: not a retry every second

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
