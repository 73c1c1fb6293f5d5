"""The loop both outbox workers share: a pass over what is due, then sleep until the next is due or a wake-up.

A worker passes (a) what to do once (`run_pass`) and (b) when its next item is due (`next_due`: the next
retry and the first lease to run out);
queueing code calls `wake()` so new work does not wait for the sleep to end. A failing pass is
logged and the loop goes on: a worker must never die quietly.

A pass ends when `look()` says nothing is due; the sleep that follows waits on that answer
instead of asking the database the same question again a moment later. A pass whose claim took nothing
can end on a better answer of its own (`rest_on`: what is due waits behind something that is not).
The wake-up flag is cleared before each such question, so work queued while the database answers still
wakes the loop. A pass that a wake-up began does not ask first: something was just queued, and the claim
finds it (or, taken by another lane meanwhile, finds nothing, and the pass ends as it would have); it says so
(`Work.QUEUED`), and the claim leaves expired leases to a claim that follows a read which saw a lease
run out (`Work.LEASE_RAN_OUT`; `Work.DUE` when only a retry is due).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
from collections.abc import Awaitable, Callable

from bot.clock import Clock
from bot.delivery.outbox_due import NextDue

logger = logging.getLogger(__name__)

#: Look at the queue at least this often, even when nothing says there is work.
MAX_IDLE_WAIT = dt.timedelta(seconds=60)
#: How long to wait before looking again when the database did not answer.
UNREACHABLE_WAIT = dt.timedelta(seconds=5)


class Work(enum.Enum):
    """What `WorkerLoop.look` found: nothing due, something just queued (no read), or due by a read."""

    NONE = "none"
    QUEUED = "queued"  # the pass began on a wake-up: claim what was queued
    DUE = "due"  # a read of the next due time said now: a queued row's retry
    LEASE_RAN_OUT = "lease ran out"  # the read saw a lease run out (a worker stopped mid-send): set it due first


class WorkerLoop:
    """Runs `run_pass` whenever woken or when `next_due` says work is due."""

    def __init__(self, *, name: str, clock: Clock, next_due: Callable[[], Awaitable[NextDue]]) -> None:
        self._name = name
        self._clock = clock
        self._next_due = next_due
        self._wake = asyncio.Event()
        #: A wake-up since the flag was last cleared said something is due now: the pass claims without a read.
        self._claim_on_wake = False
        self._stopped = False
        self._in_pass: asyncio.Task[object] | None = None
        #: The answer of the pass's last `look()` when it said "not yet": (next due time or None,).
        self._not_yet: tuple[dt.datetime | None] | None = None
        #: The pass under way began on a wake-up and has not asked yet: its first `look()` is `Work.QUEUED`.
        self._woken = False

    def wake(self, *, claim: bool = True) -> None:
        """Look now: something was queued. Due now (`claim`), the pass claims it without a read first; queued for
        later, the pass reads when it is due (a claim now would find nothing: a write for nothing)."""
        self._claim_on_wake = self._claim_on_wake or claim
        self._wake.set()

    def _clear_wake(self) -> None:
        """Before a question of what is due: a wake-up from now on is kept; the answer sees what came before."""
        self._wake.clear()
        self._claim_on_wake = False

    def stop(self) -> None:
        """End `run_forever` once the pass under way is done (a sleep ends at once)."""
        self._stopped = True
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Not in a pass: asleep, or about to ask when the next item is due (so a wake-up is not lost)."""
        return self._in_pass is None

    @property
    def stopped(self) -> bool:
        """`stop()` was called: a pass should take no new work."""
        return self._stopped

    async def look(self) -> Work:
        """Whether something is due now, before a claim that would be a write: `next_due`, a read.

        Asked by this loop's own pass, a "not yet" is kept for the sleep after the pass (the flag is
        cleared first, so a wake-up while the database answers is not lost), and the first question
        of a pass a wake-up began is answered `Work.QUEUED` without a read; asked by anyone else (a
        test, another lane's pass), it asks and leaves the loop's state alone.
        """
        own_pass = self._asked_by_own_pass()
        if own_pass:
            self._clear_wake()
            self._not_yet = None
            if self._woken:  # something was just queued: the claim looks, no need to ask first
                self._woken = False
                return Work.QUEUED
        answer = await self._next_due()
        now = self._clock.now()
        if answer.lease_ran_out(now):
            return Work.LEASE_RAN_OUT
        due = answer.at
        if due is not None and due <= now:
            return Work.DUE
        if own_pass:
            self._not_yet = (due,)
        return Work.NONE

    def rest_on(self, answer: NextDue) -> None:
        """End the pass under way on `answer` instead of its last `look()`: its claim took nothing, and the caller
        knows better when the next item it can take is due (a Teams message due behind an earlier one to its
        conversation is not work until that one goes). As `look()`'s "not yet", asked after the flag was
        cleared: a wake-up since still ends the sleep."""
        if self._asked_by_own_pass():
            self._not_yet = (answer.at,)

    def _asked_by_own_pass(self) -> bool:
        """Called from this loop's pass under way (not by a test or another lane): its answers are the loop's."""
        return self._in_pass is not None and asyncio.current_task() is self._in_pass

    async def run_forever(self, run_pass: Callable[[], Awaitable[object]]) -> None:
        """Pass, sleep, pass, ...; until stopped or cancelled.

        After a pass that failed the loop pauses (`UNREACHABLE_WAIT`, doubling to `MAX_IDLE_WAIT` while
        they keep failing) whatever the next due time says: reads may answer "due now" while the
        claim's write fails (a full disk, a failover to a read-only standby), and the next pass began
        at once, hundreds a second, each logging a traceback. A wake-up still ends the pause.
        """
        woken = False
        failures = 0
        while not self._stopped:
            self._in_pass, self._not_yet, self._woken = asyncio.current_task(), None, woken
            try:
                await run_pass()
                failures = 0
            except Exception:
                failures += 1
                logger.exception("%s pass failed", self._name)
                self._not_yet = None
            finally:
                self._in_pass, self._woken = None, False
            woken = await self._sleep_until_due(failures)

    async def _sleep_until_due(self, failures: int = 0) -> bool:
        """Sleep until the next item is due or a wake-up, at least the pause after `failures` failed passes;
        True when a wake-up for something due now ended it (the pass claims first)."""
        if self._stopped:
            return False
        if failures:
            self._clear_wake()
            pause = min(MAX_IDLE_WAIT, UNREACHABLE_WAIT * 2 ** min(failures - 1, 10))
            try:
                await asyncio.wait_for(self._wake.wait(), pause.total_seconds())
            except TimeoutError:
                return False
            return self._claim_on_wake
        if self._not_yet is not None:  # the pass ended on this answer; the flag was cleared before it
            (due,), self._not_yet = self._not_yet, None
        else:
            self._clear_wake()  # before asking: a wake-up while the database answers is not lost
            try:
                due = (await self._next_due()).at
            except Exception as error:  # the database is down: look again after a pause
                logger.warning("%s: next due time unknown (%s); looking again in %d s", self._name,
                               type(error).__name__, UNREACHABLE_WAIT.total_seconds())
                due = self._clock.now() + UNREACHABLE_WAIT
        wait = MAX_IDLE_WAIT if due is None else min(MAX_IDLE_WAIT, max(dt.timedelta(0), due - self._clock.now()))
        try:
            await asyncio.wait_for(self._wake.wait(), wait.total_seconds())
        except TimeoutError:
            return False
        return self._claim_on_wake
