"""Every message the bot sends on its own arrives, once: the Teams message outbox against a faulty connector.

The bot over real HTTP, the connector stand-in on a port it can stop listening on. For the OCMW's
card, the consent-withdrawal notice, a reminder and a card edit, the connector throttles (429 with
Retry-After 1), fails (503) or refuses connections; the message must arrive exactly once when Teams
is back, in order within its conversation. A message Teams never takes is given up after the
horizon, and then shows in the referrer's status, in `python -m bot check`'s count and in the log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import os
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import event

from bot.app import create_app
from bot.config import Settings
from bot.delivery.chat_messages import ChatSendError, MessageContent
from bot.delivery.mail_delivery import RetryPolicy
from bot.delivery.message_delivery import MessageDeliveryPolicy, MessageDeliveryWorker
from bot.delivery.message_outbox import MessageOutbox
from bot.storage.database import Database
from tests.support.activities import TeamsUser
from tests.support.bot_process import bot_command, bot_process, wait_until_ready
from tests.support.bot_server import BotDriver, RestartableSite, driving, serve_restartable
from tests.support.card_reading import texts
from tests.support.clock import ManualClock
from tests.support.connector import ConnectorStandIn, RecordedCall
from tests.support.databases import another_engine, statements_and_transactions
from tests.support.referral_flow import CLIENT_FORM, CONSENT_ALL, PROTOCOL_ID, reach_review
from tests.support.smtp_server import free_port

CHANNEL = "19:ocmw-welzijnshuis@thread.tacv2"


@dataclasses.dataclass
class Setup:
    bot: BotDriver
    site: RestartableSite
    connector: ConnectorStandIn
    clock: ManualClock
    referrer: TeamsUser
    worker: TeamsUser


@pytest.fixture
async def setup(settings: Settings, clock: ManualClock, referrer: TeamsUser) -> AsyncIterator[Setup]:
    connector = ConnectorStandIn()
    worker = TeamsUser("aad-ocmw-1", "Olga Maatschappelijk", f"{CHANNEL};messageid=1700000000001", channel=True)
    async with serve_restartable(connector.app()) as site, \
            driving(create_app(settings, clock=clock, run_worker=False), connector, site.url) as bot:
        yield Setup(bot, site, connector, clock, referrer, worker)


async def _link(s: Setup) -> None:
    code = await s.bot.services.links.new_code(PROTOCOL_ID, s.clock.now())
    [reply] = await s.bot.say(s.worker, f"<at>Veilig doorverwijzen</at> koppel {code}")
    assert "Gekoppeld" in reply["text"]


async def _referral(s: Setup) -> str:
    draft_id, _ = await reach_review(s.bot, s.referrer)
    queued = await s.bot.act(s.referrer, "referral.send", {"draftId": draft_id})
    return next(w for w in texts(queued).replace('"', " ").split() if w.startswith("VD-"))


async def _delivered(s: Setup) -> str:
    reference = await _referral(s)
    await s.bot.deliver()
    assert await s.bot.services.messages.slot_activity_id(f"ocmw:{reference}"), "the OCMW card was posted"
    return reference


def _is_ocmw_card_post(call: RecordedCall) -> bool:
    return call.method == "POST" and call.path.startswith(f"/v3/conversations/{CHANNEL}/") \
        and bool(call.body.get("attachments"))


def _is_ocmw_card_edit(call: RecordedCall) -> bool:
    return call.method == "PUT" and call.path.startswith(f"/v3/conversations/{CHANNEL}/")


def _is_withdrawal_notice(call: RecordedCall) -> bool:
    return call.path.startswith(f"/v3/conversations/{CHANNEL}/") and "ingetrokken" in str(call.body.get("text"))


def _is_reminder(call: RecordedCall) -> bool:
    return call.path.startswith(f"/v3/conversations/{CHANNEL}/") and "werkdagen" in str(call.body.get("text"))


TARGETS: dict[str, Callable[[RecordedCall], bool]] = {
    "ocmw-card": _is_ocmw_card_post,
    "withdrawal-notice": _is_withdrawal_notice,
    "reminder": _is_reminder,
    "card-edit": _is_ocmw_card_edit,
}


async def _inject(s: Setup, fault: str) -> None:
    if fault == "429":
        s.connector.fail_next(429, count=2, retry_after="1", path=CHANNEL)
    elif fault == "503":
        s.connector.fail_next(503, count=2, path=CHANNEL)
    else:
        await s.site.stop()


async def _until_quiet(s: Setup) -> None:
    """Let time pass in steps, sending what is due, until nothing is left to send."""
    for _ in range(20):
        s.clock.advance(dt.timedelta(seconds=5))
        await s.bot.settle()
    assert (await s.bot.services.messages.counts()).get("queued", 0) == 0


@pytest.mark.parametrize("fault", ["429", "503", "refused"])
@pytest.mark.parametrize("message", sorted(TARGETS))
async def test_a_message_arrives_exactly_once_despite_the_fault(setup: Setup, message: str, fault: str) -> None:
    is_target = TARGETS[message]
    await _link(setup)
    await _cause_with_teams_failing(setup, message, fault)
    assert not [call for call in setup.connector.accepted if is_target(call)], "not accepted while Teams fails"
    if fault == "refused":
        await setup.site.start()
    await _until_quiet(setup)

    arrived = [call for call in setup.connector.accepted if is_target(call)]
    assert len(arrived) == 1, [call.path for call in setup.connector.calls]
    sent_twice = [key for key, count in Counter(_identity(call) for call in setup.connector.accepted).items()
                  if count > 1]
    assert sent_twice == []


async def _cause_with_teams_failing(s: Setup, message: str, fault: str) -> None:
    """Run the steps before the message with Teams healthy, then break Teams and cause the message."""
    if message == "ocmw-card":
        await _referral(s)
        await _inject(s, fault)
        await s.bot.deliver()
        return
    reference = await _delivered(s)
    s.connector.accepted.clear()
    s.connector.calls.clear()
    await _inject(s, fault)
    if message == "withdrawal-notice":
        await s.bot.act_confirmed(s.referrer, "consent.withdraw", {"reference": reference})
    elif message == "reminder":
        s.clock.advance(dt.timedelta(days=4))  # two working days after Saturday's delivery: Wednesday
        assert await s.bot.services.reminders.run_due() == 1
    else:
        card_id = await s.bot.services.messages.slot_activity_id(f"ocmw:{reference}")
        await s.bot.act(s.worker.in_thread(str(card_id)), "ack.receive", {"reference": reference})
    await s.bot.settle()


def _identity(call: RecordedCall) -> str:
    return f"{call.method} {call.path} {json.dumps(call.body, sort_keys=True)}"


async def test_messages_to_one_conversation_keep_their_order(setup: Setup) -> None:
    """The referrer's card edit is throttled: the "delivered" message after it waits its turn."""
    await _link(setup)
    await _referral(setup)
    setup.connector.accepted.clear()
    setup.connector.fail_next(429, count=1, retry_after="1", path=setup.referrer.conversation_id)
    await setup.bot.deliver()
    to_referrer = [c for c in setup.connector.accepted if setup.referrer.conversation_id in c.path]
    assert to_referrer == [], "nothing overtakes the throttled edit"
    await _until_quiet(setup)
    to_referrer = [c.method for c in setup.connector.accepted if setup.referrer.conversation_id in c.path]
    assert to_referrer == ["PUT", "POST"]


async def test_a_vanished_card_is_posted_afresh_and_later_edits_follow_it(setup: Setup) -> None:
    await _link(setup)
    reference = await _delivered(setup)
    first_id = await setup.bot.services.messages.slot_activity_id(f"ocmw:{reference}")
    setup.connector.fail_next(404, path=f"{CHANNEL}/activities/{first_id}")
    await setup.bot.act(setup.worker.in_thread(str(first_id)), "ack.receive", {"reference": reference})
    await setup.bot.settle()
    second_id = await setup.bot.services.messages.slot_activity_id(f"ocmw:{reference}")
    assert second_id and second_id != first_id
    reposted = [c for c in setup.connector.accepted if _is_ocmw_card_post(c)]
    assert "Ontvangst bevestigd" in texts(reposted[-1].body), "the fresh card shows the new state"
    await setup.bot.act(setup.worker.in_thread(str(second_id)), "referral.outcome",
                        {"reference": reference, "outcome": "contact_help_wanted"})
    await setup.bot.settle()
    [edit] = [c for c in setup.connector.accepted if c.method == "PUT" and CHANNEL in c.path]
    assert edit.path.endswith(f"/activities/{second_id}")


async def test_a_message_teams_never_takes_is_given_up_visibly(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    await _link(setup)
    reference = await _referral(setup)
    setup.connector.fail_next(503, count=10_000, path=CHANNEL)
    await setup.bot.deliver()
    caplog.set_level(logging.ERROR)
    for _ in range(30):
        setup.clock.advance(dt.timedelta(hours=1))
        await setup.bot.settle()
    assert (await setup.bot.services.messages.counts()).get("failed") == 1
    stuck = await setup.bot.services.messages.stuck(setup.clock.now(), dt.timedelta(minutes=15))
    assert stuck.given_up == 1 and stuck.waiting == 0
    assert "Teams message NOT delivered" in caplog.text and reference in str(
        [record.__dict__.get("reference") for record in caplog.records])
    [status] = await setup.bot.say(setup.referrer, "status")
    assert "kwam niet aan" in texts(status["attachments"][0]["content"])


async def test_a_refused_message_is_not_retried(setup: Setup) -> None:
    """403 (the bot was removed from the channel): retrying cannot help; give up at once, visibly."""
    await _link(setup)
    await _referral(setup)
    setup.connector.fail_next(403, path=CHANNEL)
    await setup.bot.deliver()
    assert (await setup.bot.services.messages.counts()).get("failed") == 1
    assert len([c for c in setup.connector.calls if _is_ocmw_card_post(c)]) == 1


async def test_a_restart_sends_what_was_queued_and_not_yet_accepted(
    settings: Settings, clock: ManualClock, referrer: TeamsUser, tmp_path: Path
) -> None:
    connector = ConnectorStandIn()
    worker = TeamsUser("aad-ocmw-1", "Olga", CHANNEL, channel=True)
    async with serve_restartable(connector.app()) as site:
        async with driving(create_app(settings, clock=clock, run_worker=False), connector, site.url) as first:
            s = Setup(first, site, connector, clock, referrer, worker)
            await _link(s)
            reference = await _referral(s)
            await site.stop()
            connector.accepted.clear()
            await first.deliver()  # the mail went out; Teams is unreachable for everything after it
        await site.start()
        async with driving(create_app(settings, clock=clock, run_worker=False), connector, site.url) as second:
            clock.advance(dt.timedelta(seconds=10))
            await second.settle()
            assert [c for c in connector.accepted if _is_ocmw_card_post(c)], "the card arrived after the restart"
            assert await second.services.messages.slot_activity_id(f"ocmw:{reference}")
            assert len([c for c in connector.accepted if referrer.conversation_id in c.path]) == 2


async def test_sigkill_between_the_state_change_and_the_send_then_restart_sends_each_message_once(
    tmp_path: Path,
) -> None:
    """The real bot process: its messages are in flight to a connector that hangs; kill -9; restart.

    After the mail is accepted the bot owes the referrer a card edit and a message and the OCMW its
    card; after the OCMW's acknowledgement, an edit of that card and a notice to the referrer. All
    are held by a hanging connector when the process dies; after the restart each arrives once,
    and the card edit reaches the card the restarted bot posted.
    """
    connector = ConnectorStandIn()
    port = free_port()
    env = {**os.environ, "BOT_DATA_DIR": str(tmp_path / "data"), "PORT": str(port),
           "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD", "TEAMS_RETRY_INITIAL_SECONDS": "1",
           "TEAMS_RETRY_MAX_SECONDS": "1", "LOG_LEVEL": "INFO",
           "OUTBOX_LEASE_SECONDS": "2"}
    bot_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "bot.log"
    referrer = TeamsUser("aad-referrer-1", "An Verpleeg", "a:personal-referrer")
    worker = TeamsUser("aad-ocmw-1", "Olga", f"{CHANNEL};messageid=1700000000001", channel=True)
    async with serve_restartable(connector.app()) as site, aiohttp.ClientSession() as session:
        async def post(activity: dict[str, object]) -> dict[str, object]:
            async with session.post(f"{bot_url}/api/messages", json=activity) as response:
                assert response.status in (200, 202)
                return await response.json() if response.status == 200 else {}

        with bot_process(env, log) as first:
            await wait_until_ready(bot_url, session)
            code = (await asyncio.to_thread(bot_command, env, "link-ocmw", PROTOCOL_ID)).strip().splitlines()[-1]
            await post(worker.message(site.url, f"<at>Veilig doorverwijzen</at> koppel {code}"))
            connector.hanging = True
            reference = await refer_over_http(post, referrer, site.url)
            await _wait_for(lambda: sum(1 for c in connector.calls if c.method in ("POST", "PUT")) >= 3, log)
            await post(worker.card_action(site.url, "ack.receive", {"reference": reference}))
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        connector.release()
        held = len(connector.calls)
        with bot_process(env, log):
            await wait_until_ready(bot_url, session)
            await _wait_for(lambda: len(connector.accepted) >= 6, log)
            await asyncio.sleep(2.5)  # time for any duplicate to show up
    assert held >= 3, "messages were in flight when the process died"
    answered = Counter(f"{c.method} {c.path.split('/activities')[0].split(';')[0]} {_kind(c)}"
                       for c in connector.accepted)
    assert answered == Counter({
        f"POST /v3/conversations/{CHANNEL} link-reply": 1,
        f"PUT /v3/conversations/{referrer.conversation_id} card": 1,
        f"POST /v3/conversations/{referrer.conversation_id} delivered-text": 1,
        f"POST /v3/conversations/{CHANNEL} card": 1,
        f"PUT /v3/conversations/{CHANNEL} card": 1,
        f"POST /v3/conversations/{referrer.conversation_id} ack-text": 1,
    }), log.read_text()
    [edit] = [c for c in connector.accepted if c.method == "PUT" and CHANNEL in c.path]
    [posted] = [c for c in connector.accepted if c.method == "POST" and CHANNEL in c.path and c.body.get("attachments")]
    assert edit.path.endswith(f"/activities/{posted.answered_id}"), "the edit reaches the card posted after the restart"
    assert "Ontvangst bevestigd" in texts(edit.body)
    assert "queued again at start" in log.read_text()  # what was in flight, not after its lease (SQLite)


def _kind(call: RecordedCall) -> str:
    if call.body.get("attachments"):
        return "card"
    text = str(call.body.get("text"))
    return "link-reply" if "Gekoppeld" in text else "ack-text" if "bevestigd" in text else "delivered-text"


async def refer_over_http(
    post: Callable[[dict[str, object]], Awaitable[dict[str, object]]], user: TeamsUser, service_url: str
) -> str:
    """The four card actions of a referral; returns its reference."""
    start = await post(user.card_action(service_url, "referral.start", {}))
    value = start["value"]
    assert isinstance(value, dict)
    draft_id = next(a["data"]["draftId"] for a in value["actions"] if a["verb"] == "referral.consent")
    await post(user.card_action(service_url, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID,
                                                                  **CONSENT_ALL}))
    await post(user.card_action(service_url, "referral.details", {"draftId": draft_id, **CLIENT_FORM}))
    queued = await post(user.card_action(service_url, "referral.send", {"draftId": draft_id}))
    return next(w for w in texts(queued).replace('"', " ").split() if w.startswith("VD-"))


async def _wait_for(condition: Callable[[], bool], log: Path, seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(log.read_text()[-4000:])
        await asyncio.sleep(0.05)


async def test_messages_sent_after_a_read_look_for_expired_leases_only_when_one_ran_out(setup: Setup) -> None:
    """Every claim that followed a read of the next due time first set expired leases back to queued: an UPDATE
    that nearly always changes nothing, one for each referral's Teams messages. The read has the first lease's
    end too: only a lease that ran out is looked for, and a claim is then one statement on its own."""
    await _link(setup)
    await _referral(setup)
    await setup.bot.services.worker.deliver_due()  # the mail: the OCMW's card and the referrer's notice queued
    with statements_and_transactions(setup.bot.services.db) as sent:
        assert await setup.bot.settle() >= 2
    # Three messages (the OCMW's card, the referrer's notice and card) in two claims (`WITH`: picked, then leased),
    # each message's conversation first, and three marks; the card's mark keeps its id under its slot in the same
    # transaction. Sends run side by side: counted, not in order.
    assert Counter(sent) == {"SELECT": 3, "WITH": 2, "UPDATE": 3, "BEGIN": 1, "INSERT": 1}, " ".join(sent)
    assert await setup.bot.services.messages.counts() == {"sent": 3}


async def test_a_pass_with_nothing_due_only_reads(setup: Setup) -> None:
    """Each pass ended with a claim that found nothing: a write transaction (the writer's lock on SQLite,
    a lease query on PostgreSQL) just to learn that; a read of the next due time says it."""
    await _link(setup)
    await _delivered(setup)
    statements: list[str] = []
    event.listen(setup.bot.services.db.engine.sync_engine, "before_cursor_execute",
                 lambda _c, _cu, statement, *_: statements.append(statement.split()[0].upper()))
    assert await setup.bot.settle() == 0
    assert statements == ["SELECT"]

    await _referral(setup)
    await setup.bot.services.worker.deliver_due()  # the mail: its Teams messages are queued
    assert await setup.bot.settle() >= 2, "what is due is still sent"
    assert (await setup.bot.services.messages.counts()).get("queued", 0) == 0


class _PausedSender:
    """Teams, as one instance sees it: records what it posts; with `resume`, the instance freezes mid-send (GC,
    CPU starvation, a VM paused) and, running again, finds its connection gone."""

    def __init__(self, posted: list[str], resume: asyncio.Event | None = None) -> None:
        self.posted = posted
        self.resume = resume
        self.entered = asyncio.Event()

    async def post(self, conversation_ref: str, content: MessageContent) -> str | None:
        self.entered.set()
        if self.resume is not None:
            await self.resume.wait()
            raise ChatSendError("connection reset")
        self.posted.append(str(content.text))
        return f"activity-{len(self.posted)}"

    async def update(self, conversation_ref: str, activity_id: str, content: MessageContent) -> None:
        raise AssertionError("no edits here")


async def test_a_worker_paused_past_its_lease_neither_requeues_what_another_sent_nor_blocks_what_follows(
    database: Database, clock: ManualClock
) -> None:
    """Instance A leases a message and freezes mid-send past its lease; B takes it over and sends it; A, running
    again, reschedules "its" message. Before, that put the sent row (its content wiped) back in the queue: every
    later claim failed on it, and the OCMW's next card, in another conversation, never went out."""
    lease = dt.timedelta(minutes=2)
    policy = MessageDeliveryPolicy(retry=RetryPolicy(initial=dt.timedelta(seconds=2), maximum=dt.timedelta(seconds=10)),
                                   lease=lease)
    posted: list[str] = []
    resume = asyncio.Event()
    paused = _PausedSender(posted, resume)
    outbox_a, outbox_b = MessageOutbox(database), MessageOutbox(another_engine(database))
    worker_a = MessageDeliveryWorker(outbox=outbox_a, sender=paused, clock=clock, policy=policy, rng=random.Random(1))
    worker_b = MessageDeliveryWorker(outbox=outbox_b, sender=_PausedSender(posted), clock=clock, policy=policy,
                                     rng=random.Random(2))
    await outbox_a.post(json.dumps({"conversation": {"id": "a:personal-referrer"}}), MessageContent(text="verstuurd"),
                        now=clock.now())
    sending_a = asyncio.create_task(worker_a.deliver_due())
    await asyncio.wait_for(paused.entered.wait(), 10)
    clock.advance(lease + dt.timedelta(seconds=5))
    assert await worker_b.deliver_due() == 1
    resume.set()
    await asyncio.wait_for(sending_a, 10)
    rows = await database.fetch_all("SELECT state FROM message_outbox")
    assert [row["state"] for row in rows] == ["sent"], "A's late reschedule overwrote B's 'sent'"

    clock.advance(dt.timedelta(minutes=5))
    await outbox_b.post(json.dumps({"conversation": {"id": CHANNEL}}), MessageContent(text="nieuwe doorverwijzing"),
                        now=clock.now())
    for _ in range(3):
        await worker_b.deliver_due()
        clock.advance(lease + dt.timedelta(seconds=5))
    assert posted == ["verstuurd", "nieuwe doorverwijzing"]


class _RefusingFirstSender(_PausedSender):
    """Teams that refuses the first post for now (503) and takes every one after it."""

    def __init__(self) -> None:
        super().__init__([])
        self.refused = 0

    async def post(self, conversation_ref: str, content: MessageContent) -> str | None:
        if not self.refused:
            self.refused += 1
            raise ChatSendError("service unavailable", status=503)
        return await super().post(conversation_ref, content)


async def test_a_message_waiting_behind_one_that_retries_later_does_not_keep_the_worker_busy(
    database: Database, clock: ManualClock
) -> None:
    """The first message to a conversation was refused for now and retries in a minute; the one queued behind it is
    due, but waits its turn. The worker's read said "due now" (the second message's time), its claim found nothing
    (the first one's turn), and the loop read and claimed again at once, over and over until the retry: a
    processor and the database kept busy by a worker with nothing to send."""
    policy = MessageDeliveryPolicy(retry=RetryPolicy(initial=dt.timedelta(minutes=1), maximum=dt.timedelta(minutes=5)))
    outbox, sender = MessageOutbox(database), _RefusingFirstSender()
    worker = MessageDeliveryWorker(outbox=outbox, sender=sender, clock=clock, policy=policy, rng=random.Random(1))
    outbox.on_queued = worker.wake
    referrer = json.dumps({"conversation": {"id": "a:personal-referrer"}})
    await outbox.post(referrer, MessageContent(text="eerste"), now=clock.now())
    await outbox.post(referrer, MessageContent(text="tweede"), now=clock.now())
    running = asyncio.create_task(worker.run())
    try:
        for _ in range(100):  # the first send, refused
            if sender.refused:
                break
            await asyncio.sleep(0.01)
        with statements_and_transactions(database) as sent:
            await asyncio.sleep(1)
        # At most the refusal's own steps (its reschedule, the read, the claim, the read of what is in turn).
        assert len(sent) <= 6, f"{len(sent)} statements in a second with nothing to send: {Counter(sent)}"
        assert sender.posted == []
        clock.advance(dt.timedelta(minutes=2))  # the retry is due: the worker's sleep ends on the next due time
        worker.wake()
        for _ in range(200):
            if len(sender.posted) == 2:
                break
            await asyncio.sleep(0.01)
        assert sender.posted == ["eerste", "tweede"], "both go out, in order, once the first one's retry is due"
    finally:
        worker.stop()
        await asyncio.wait_for(running, 10)


async def test_a_message_waiting_behind_one_another_instance_sends_does_not_keep_this_one_busy(
    database: Database, clock: ManualClock
) -> None:
    """Instance A is sending a conversation's first message (slowly: Teams takes its time); the one queued behind
    it is due. Instance B's read said "due now", its claim found nothing, and it read and claimed again at once
    until A was done. B sleeps until A's lease would run out; whoever sends the first finds the next due in its own
    read after the send."""
    policy = MessageDeliveryPolicy(retry=RetryPolicy(initial=dt.timedelta(seconds=2), maximum=dt.timedelta(seconds=10)))
    posted: list[str] = []
    resume = asyncio.Event()
    slow = _PausedSender(posted, resume)
    database_b = another_engine(database)
    outbox_a, outbox_b = MessageOutbox(database), MessageOutbox(database_b)
    worker_a = MessageDeliveryWorker(outbox=outbox_a, sender=slow, clock=clock, policy=policy, rng=random.Random(1))
    worker_b = MessageDeliveryWorker(outbox=outbox_b, sender=_PausedSender(posted), clock=clock, policy=policy,
                                     rng=random.Random(2))
    referrer = json.dumps({"conversation": {"id": "a:personal-referrer"}})
    await outbox_a.post(referrer, MessageContent(text="eerste"), now=clock.now())
    sending_a = asyncio.create_task(worker_a.deliver_due())
    await asyncio.wait_for(slow.entered.wait(), 10)
    await outbox_b.post(referrer, MessageContent(text="tweede"), now=clock.now())
    running_b = asyncio.create_task(worker_b.run())
    try:
        with statements_and_transactions(database_b) as sent:
            await asyncio.sleep(1)
        # At most B's first look (the read, the claim, the read of what is in turn).
        assert len(sent) <= 6, f"{len(sent)} statements in a second with nothing B may send: {Counter(sent)}"
    finally:
        worker_b.stop()
        await asyncio.wait_for(running_b, 10)
        resume.set()
        await asyncio.wait_for(sending_a, 10)
