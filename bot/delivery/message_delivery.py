"""The worker that empties the Teams message outbox: send, retry with backoff, or give up visibly.

Conversations are served side by side (bounded), each in its own order. Throttling (429, with
Retry-After), Teams' transient faults and refused connections are retried with backoff and jitter
up to a horizon; an edit whose card is gone is posted as a fresh card; only then, or when Teams
refuses for good, is a message given up on: logged as an error, counted by `python -m bot check`,
and shown in the referral's status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from dataclasses import dataclass

from bot.clock import Clock
from bot.core.metrics import Metrics
from bot.delivery.chat_messages import ChatSender, ChatSendError
from bot.delivery.failure_causes import teams_failure_cause
from bot.delivery.mail_delivery import SEND_SHARE_OF_LEASE, RetryPolicy
from bot.delivery.message_outbox import MessageAction, MessageOutbox, QueuedMessage
from bot.delivery.side_by_side import side_by_side
from bot.delivery.worker_loop import Work, WorkerLoop

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class MessageDeliveryPolicy:
    """Retries, how many conversations at once, and how long a send may hold its lease."""

    retry: RetryPolicy
    parallel: int = 8
    lease: dt.timedelta = dt.timedelta(minutes=2)


class MessageDeliveryWorker:
    """Sends due Teams messages; `wake()` after queueing makes it look at once."""

    def __init__(
        self,
        *,
        outbox: MessageOutbox,
        sender: ChatSender,
        clock: Clock,
        policy: MessageDeliveryPolicy,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._outbox = outbox
        self._metrics = metrics or Metrics.disabled()
        self._sender = sender
        self._clock = clock
        self._policy = policy
        self._rng = rng or random.Random()  # noqa: S311  # nosec B311
        self._loop = WorkerLoop(name="message outbox", clock=clock, next_due=outbox.next_due)

    def wake(self) -> None:
        """Look at the outbox now: a message due now was queued."""
        self._loop.wake()

    def look_again(self) -> None:
        """A message was queued for later: read when the next one is due (it may be sooner than the sleep)."""
        self._loop.wake(claim=False)

    def stop(self) -> None:
        """Take no more messages; `run` returns once the ones being sent are sent and recorded."""
        self._loop.stop()

    async def run(self) -> None:
        """Send forever (a message a dead worker held is due again when its lease runs out)."""
        await self._loop.run_forever(self.deliver_due)

    async def deliver_due(self) -> int:
        """Send everything due now, conversations in parallel; returns how many sends were tried.

        Whether anything is due is read first: a claim is a write transaction (on SQLite the
        writer's lock), and every pass would otherwise end with one that finds nothing.
        """
        tried = 0
        while not self._loop.stopped:
            work = await self._loop.look()
            if work is Work.NONE:
                return tried
            messages = await self._outbox.claim_due(self._clock.now(), self._policy.lease, limit=self._policy.parallel,
                                                    expired_leases=work is Work.LEASE_RAN_OUT)
            if not messages:  # what is due may wait behind an earlier message: sleep until one in turn is due
                self._loop.rest_on(await self._outbox.next_due_in_turn())
                return tried
            await side_by_side(*(self._send(message) for message in messages))
            tried += len(messages)
        return tried

    async def _send(self, message: QueuedMessage) -> None:
        target = message.activity_id
        if message.action == MessageAction.UPDATE and target is None and message.slot is not None:
            target = await self._outbox.slot_activity_id(message.slot)
        try:
            async with asyncio.timeout(self._policy.lease.total_seconds() * SEND_SHARE_OF_LEASE):
                activity_id = await self._deliver(message, target)
        except ChatSendError as error:
            await self._not_sent(message, error)
            return
        except TimeoutError:
            await self._not_sent(message, ChatSendError("no answer within the lease"))
            return
        except Exception:
            logger.exception("Teams message send failed unexpectedly", extra=_log_fields(message))
            await self._not_sent(message, ChatSendError("unexpected error"))
            return
        await self._outbox.mark_sent(message, self._clock.now(), activity_id=activity_id)

    async def _deliver(self, message: QueuedMessage, target: str | None) -> str | None:
        """Post or edit; returns the id of the message now showing it.

        An edit of a card that was never posted (given up on before) posts it.
        """
        if message.action == MessageAction.UPDATE and target is not None:
            await self._sender.update(message.conversation_ref, target, message.content)
            return target
        return await self._sender.post(message.conversation_ref, message.content)

    async def _not_sent(self, message: QueuedMessage, error: ChatSendError) -> None:
        now = self._clock.now()
        if message.action == MessageAction.UPDATE and error.message_gone:
            logger.info("card to edit is gone; posting it afresh", extra=_log_fields(message))
            await self._outbox.repost(message, now)
            return
        give_up_at = message.queued_at + self._policy.retry.horizon
        if error.transient and now < give_up_at:
            next_at = min(now + self._policy.retry.delay(message.attempts, error.retry_after, self._rng), give_up_at)
            if not await self._outbox.reschedule(message, next_at, _describe(error)):
                return  # another instance sent it meanwhile (the outbox logged the late mark)
            self._metrics.retry("teams", teams_failure_cause(error))
            logger.warning("Teams message not accepted yet (%s), retrying at %s (attempt %d)", _describe(error),
                           next_at.isoformat(timespec="seconds"), message.attempts, extra=_log_fields(message))
            return
        reason = _describe(error) if not error.transient else f"gave up after {message.attempts} attempts: " \
            f"{_describe(error)}"
        if not await self._outbox.mark_failed(message, now, reason):
            return
        self._metrics.give_up("teams", "horizon" if error.transient else teams_failure_cause(error))
        logger.error("Teams message NOT delivered: %s", reason, extra=_log_fields(message))


def _describe(error: ChatSendError) -> str:
    return f"HTTP {error.status}" if error.status is not None else error.reason


def _log_fields(message: QueuedMessage) -> dict[str, object]:
    fields: dict[str, object] = {"message_id": message.id, "action": message.action.value}
    if message.reference:
        fields["reference"] = message.reference
    return fields
