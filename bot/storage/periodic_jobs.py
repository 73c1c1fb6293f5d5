"""Periodic work that must happen once per period, however many instances run: claimed in the database.

Each job has a row in `job_runs` with the time it is next due. An instance whose timer fires
claims the run with one compare-and-set (`next_run_at <= now` becomes `now + period`); the one
whose update changed the row runs the job, the others skip this period. A `next_run_at` later than
`now + period` (by more than `STEP_TOLERANCE`) cannot have been set by a clock that kept time: it was
ahead then, or has been stepped back since (NTP, a VM resumed). It counts as due, so a step of the
clock cannot stop a job for the length of the step. An instance that dies
mid-job leaves the row claimed until the next period, when another instance runs it: the jobs are
idempotent passes (wipe what is idle, queue what is due, prune what is old), so a pass that
stopped halfway is completed by the next one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections.abc import Awaitable, Callable

from bot.clock import Clock
from bot.storage.database import Database, to_text

logger = logging.getLogger(__name__)

Job = Callable[[], Awaitable[object]]

#: How far past `now + period` a `next_run_at` may lie before it is taken for a clock stepped back. Not 0:
#: an instance that read the time a moment before another's claim, and whose update runs just after it,
#: finds that claim's `next_run_at` a little later than its own `now + period`, and must not run the job too.
STEP_TOLERANCE = dt.timedelta(minutes=1)


class PeriodicJobs:
    """Runs named jobs every period on whichever instance claims each run."""

    def __init__(self, db: Database, clock: Clock, instance: str | None = None) -> None:
        self._db = db
        self._clock = clock
        #: Names this instance in `job_runs.last_instance` (for the operator; not an identity).
        self.instance = instance or secrets.token_hex(4)

    async def claim(self, name: str, period: dt.timedelta) -> bool:
        """True when this instance runs `name` now: it was due, and nobody else claimed this period."""
        now = self._clock.now()
        values = {"name": name, "now": to_text(now), "next": to_text(now + period), "instance": self.instance}
        claimed = await self._db.execute(
            "UPDATE job_runs SET next_run_at = :next, last_started_at = :now, last_instance = :instance"
            " WHERE name = :name AND (next_run_at <= :now OR next_run_at > :stepped)",
            {**values, "stepped": to_text(now + period + STEP_TOLERANCE)},
        )
        if claimed.rowcount == 1:
            return True
        first = await self._db.execute(
            "INSERT INTO job_runs (name, next_run_at, last_started_at, last_instance)"
            " VALUES (:name, :next, :now, :instance) ON CONFLICT DO NOTHING",
            values,
        )
        return first.rowcount == 1

    async def run_once(self, name: str, period: dt.timedelta, job: Job) -> bool:
        """Run `job` if this instance claims this period's run; True when it ran (a failure is logged)."""
        try:
            if not await self.claim(name, period):
                return False
        except Exception as error:  # the database is down: this period is skipped, not fatal
            logger.warning("periodic job %s not claimed: %s", name, type(error).__name__)
            return False
        try:
            await job()
        except Exception:
            logger.exception("periodic job %s failed", name)
        return True

    async def every(self, name: str, period: dt.timedelta, job: Job) -> None:
        """Try `job` every `period` until cancelled; it runs on one instance per period."""
        while True:
            await self.run_once(name, period, job)
            await asyncio.sleep(period.total_seconds())
