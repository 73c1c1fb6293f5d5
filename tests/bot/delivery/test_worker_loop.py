"""The loop both outbox workers run: a pass, then a sleep until the next item is due or a wake-up."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from bot.delivery import worker_loop
from bot.delivery.outbox_due import NextDue
from bot.delivery.worker_loop import Work, WorkerLoop
from tests.support.clock import ManualClock
from tests.support.keyvault_provider import until

NOW = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
SECOND = dt.timedelta(seconds=1)


class _Queue:
    """What the loop asks: when the next item is due; `arrive()` plays a queued item (commit, then wake)."""

    def __init__(self) -> None:
        self.due: dt.datetime | None = None
        self.asked = 0
        self.passes = 0
        #: What each of the passes' `look()`s found, in order.
        self.looks: list[Work] = []
        self.loop: WorkerLoop | None = None
        #: Set while the next question is being answered, after the database read it (a commit racing it).
        self.during_next_answer: list[asyncio.Event] = []
        #: The next question's answer is read at once but held back until this is set.
        self.hold_next_answer: asyncio.Event | None = None

    async def next_due(self) -> NextDue:
        self.asked += 1
        answer = NextDue(retry_at=self.due)
        await asyncio.sleep(0)
        if self.hold_next_answer is not None:
            hold, self.hold_next_answer = self.hold_next_answer, None
            await hold.wait()
        if self.during_next_answer:
            self.during_next_answer.pop().set()
            await asyncio.sleep(0.01)  # the queueing commits and wakes before this answer arrives
        return answer

    async def run_pass(self) -> None:
        assert self.loop is not None
        self.passes += 1
        while (work := await self.loop.look()) is not Work.NONE:
            self.looks.append(work)
            self.due = None  # "sent"
        self.looks.append(work)


@contextlib.asynccontextmanager
async def _running(queue: _Queue) -> AsyncIterator[WorkerLoop]:
    loop = WorkerLoop(name="test outbox", clock=ManualClock(NOW), next_due=queue.next_due)
    queue.loop = loop
    task = asyncio.create_task(loop.run_forever(queue.run_pass))
    try:
        yield loop
    finally:
        loop.stop()
        await asyncio.wait_for(task, 5)


async def test_the_sleep_after_a_pass_does_not_ask_again_what_the_pass_just_asked() -> None:
    """A pass ends when nothing is due; the sleep after it asked the database the same question again
    (one read more per pass, for each lane of each worker)."""
    queue = _Queue()
    async with _running(queue) as loop:
        await until(lambda: queue.passes == 1 and loop.idle, 2, "the first pass is over")
        await asyncio.sleep(0.05)
        assert queue.asked == 1
        queue.due = NOW
        loop.wake()
        await until(lambda: queue.passes == 2 and queue.due is None and loop.idle, 2, "the item is sent")
        await asyncio.sleep(0.05)
        assert queue.asked == 2  # the second pass: "not yet" once the item is sent, on which it sleeps


async def test_a_pass_begun_by_a_wake_up_takes_its_work_without_asking_first() -> None:
    """A wake-up means something was just queued: the pass it starts asked "is anything due?" first,
    and nearly always heard "yes" (one read more for every mail and every Teams message). A pass the
    clock starts (a retry's time, the idle minute) or the first one still asks."""
    queue = _Queue()
    async with _running(queue) as loop:
        await until(lambda: queue.passes == 1 and loop.idle, 2, "the first pass is over")
        assert queue.asked == 1, "the first pass asks"
        queue.due = NOW
        loop.wake()
        await until(lambda: queue.passes == 2 and queue.due is None and loop.idle, 2, "the item is sent")
        await asyncio.sleep(0.05)
        assert queue.asked == 2, "sent without asking, then asked once: nothing more due"
        assert queue.looks == [Work.NONE, Work.QUEUED, Work.NONE], "the claim is told it was not a read"
        queue.due = NOW
        assert await loop.look() is Work.DUE, "asked from outside the pass, it asks"
        assert queue.asked == 3


async def test_work_queued_while_the_last_question_is_answered_is_not_left_waiting() -> None:
    """The wake-up flag is cleared before the question, not after: an item queued (and its wake-up
    given) while the database answers "nothing due" starts another pass at once, not after the
    loop's idle minute."""
    queue = _Queue()
    async with _running(queue) as loop:
        await until(lambda: queue.passes == 1 and loop.idle, 2, "the first pass is over")
        queued = asyncio.Event()
        queue.during_next_answer.append(queued)
        loop.wake()  # a pass whose question races a commit

        async def arrive() -> None:
            await queued.wait()
            queue.due = NOW
            loop.wake()

        arrival = asyncio.create_task(arrive())
        await until(lambda: queue.passes >= 3 and queue.due is None, 2, "the item queued meanwhile is sent")
        await arrival


async def test_a_question_asked_outside_the_loops_own_pass_leaves_its_wake_up_alone() -> None:
    """Another lane's pass or a test may ask through the loop while the loop's own pass is asking: a
    wake-up given meanwhile must still end the sleep that follows the pass."""
    queue = _Queue()
    async with _running(queue) as loop:
        await until(lambda: queue.passes == 1 and loop.idle, 2, "the first pass is over")
        release = asyncio.Event()
        queue.hold_next_answer = release
        loop.wake()
        await until(lambda: queue.passes == 2 and queue.hold_next_answer is None, 2, "the pass asks")  # "nothing due"
        queue.due = NOW  # queued meanwhile: committed, then the wake-up
        loop.wake()
        assert await loop.look() is Work.DUE  # asked from outside the loop's pass
        release.set()
        await until(lambda: queue.passes == 3 and queue.due is None, 2, "the item queued meanwhile is sent")


async def test_a_pass_that_fails_every_time_waits_before_the_next_not_a_hot_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reads answer and the claim's write fails (a full disk; PostgreSQL failed over to a read-only standby): the
    next due time still said 'now', so the loop began the next pass at once, hundreds a second, each a traceback."""
    monkeypatch.setattr(worker_loop, "UNREACHABLE_WAIT", dt.timedelta(seconds=0.2))
    passes = 0

    async def due_now() -> NextDue:
        return NextDue(retry_at=NOW)

    async def failing_pass() -> None:
        nonlocal passes
        passes += 1
        raise RuntimeError("cannot execute UPDATE in a read-only transaction")

    loop = WorkerLoop(name="test outbox", clock=ManualClock(NOW), next_due=due_now)
    task = asyncio.create_task(loop.run_forever(failing_pass))
    await asyncio.sleep(1.0)
    loop.stop()
    await task
    assert 3 <= passes <= 5, f"{passes} failed passes in a second: waits of 0.2, 0.4 s (doubling), not none"


async def test_after_a_failed_pass_a_good_one_runs_at_once_when_woken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_loop, "UNREACHABLE_WAIT", dt.timedelta(seconds=30))
    results: list[str] = []

    async def nothing_due() -> NextDue:
        return NextDue()

    async def pass_once_failing() -> None:
        results.append("pass")
        if len(results) == 1:
            raise RuntimeError("the database refused the write")

    loop = WorkerLoop(name="test outbox", clock=ManualClock(NOW), next_due=nothing_due)
    task = asyncio.create_task(loop.run_forever(pass_once_failing))
    await until(lambda: len(results) == 1, 2, "the first pass")
    loop.wake()  # something was queued: it is tried, whatever the pause
    await until(lambda: len(results) == 2, 2, "a pass on the wake-up")
    loop.stop()
    await task


async def test_a_read_that_sees_a_lease_run_out_says_so_and_one_that_sees_a_retry_does_not() -> None:
    """Every claim after a read set expired leases back to queued first: a statement that nearly always changes
    nothing, once for every Teams message the bot sent after another. The read already has both times: the
    claim is told to look at expired leases only when one ran out before now."""
    answers = {"retry due": NextDue(retry_at=NOW, lease_ends_at=NOW + dt.timedelta(minutes=1)),
               "lease ran out": NextDue(retry_at=NOW + dt.timedelta(minutes=1), lease_ends_at=NOW - SECOND),
               "lease runs out now": NextDue(lease_ends_at=NOW), "later": NextDue(retry_at=NOW + SECOND),
               "nothing": NextDue()}
    found = {}
    for name, answer in answers.items():
        async def read(answer: NextDue = answer) -> NextDue:
            return answer
        found[name] = await WorkerLoop(name="test outbox", clock=ManualClock(NOW), next_due=read).look()
    assert found == {"retry due": Work.DUE, "lease ran out": Work.LEASE_RAN_OUT, "lease runs out now": Work.DUE,
                     "later": Work.NONE, "nothing": Work.NONE}


async def test_a_pass_that_rests_on_its_own_answer_sleeps_on_it_and_a_wake_up_meanwhile_still_ends_the_sleep() -> None:
    """A claim that took nothing (the due item waits behind another): the pass says when its next item is due
    (`rest_on`), and the sleep waits for that instead of the read that said "due now", which began the next
    pass at once, over and over. An item queued while that answer is read still starts a pass at once."""
    queue = _Queue()
    loop = WorkerLoop(name="test outbox", clock=ManualClock(NOW), next_due=queue.next_due)
    arrivals: list[str] = []

    async def run_pass() -> None:
        queue.passes += 1
        if await loop.look() is Work.NONE:
            return
        await asyncio.sleep(0)  # the claim: nothing it may take
        if arrivals:  # an item queued and woken while the pass reads when the next in turn is due
            arrivals.pop()
            loop.wake()
        await asyncio.sleep(0.01)
        loop.rest_on(NextDue(retry_at=NOW + dt.timedelta(hours=1)))

    queue.due = NOW  # the read says "due now": the item behind another
    task = asyncio.create_task(loop.run_forever(run_pass))
    try:
        await until(lambda: queue.passes == 1 and loop.idle, 2, "the first pass is over")
        await asyncio.sleep(0.2)
        assert (queue.passes, queue.asked) == (1, 1), "it sleeps on the pass's answer: an hour"
        arrivals.append("queued")
        loop.wake()
        await until(lambda: queue.passes == 3, 2, "the wake-up given while the pass read starts another")
        await asyncio.sleep(0.2)
        assert queue.passes == 3, "and that one, its claim taking nothing, rests on its answer"
    finally:
        loop.stop()
        await asyncio.wait_for(task, 5)


async def test_a_wake_up_for_something_queued_for_later_reads_first_and_one_for_now_still_claims() -> None:
    """A Teams message queued for later (the referrer's card edit, after the click's reply has landed): the
    wake-up made the pass claim without a read, a write that found nothing, then read what it was waiting for.
    Woken for later, the pass reads; woken for now as well (before it asked), it claims."""
    queue = _Queue()
    async with _running(queue) as loop:
        await until(lambda: queue.passes == 1 and loop.idle, 2, "the first pass is over")
        loop.wake(claim=False)
        await until(lambda: queue.passes == 2 and loop.idle, 2, "the pass a wake-up for later began")
        assert queue.looks[1:] == [Work.NONE] and queue.asked == 2, "it read, and found nothing due yet"
        queue.due = NOW
        loop.wake(claim=False)
        loop.wake()
        await until(lambda: queue.passes == 3 and queue.due is None and loop.idle, 2, "the item due now is sent")
        assert queue.looks[2] is Work.QUEUED, "one of the wake-ups was for now: claimed without a read"
