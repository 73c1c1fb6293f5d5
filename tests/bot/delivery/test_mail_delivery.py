"""The outbox worker: delivers, tells the referrer, retries a full disk, gives up loudly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import random
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import event

from bot.app import SERVICES_KEY, create_app
from bot.config import Settings
from bot.delivery.mail_delivery import BACKLOG_LIMIT, PARALLEL_SENDS, ROOM_WAIT_SECONDS, RetryPolicy
from bot.delivery.mail_message import OutgoingMail
from bot.delivery.mail_transport import MailDeliveryError
from bot.storage.database import from_text
from tests.conftest import ZIP_PASSWORD
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import actions, texts
from tests.support.clock import ManualClock
from tests.support.databases import migrated_postgres_url
from tests.support.keyvault_provider import until
from tests.support.postgres_server import PostgresServer
from tests.support.referral_flow import CLIENT_VALUES, reach_review
from tests.support.relays import CountingRelay


async def _send(bot: BotDriver, user: TeamsUser) -> str:
    draft_id, _ = await reach_review(bot, user)
    await bot.act(user, "referral.send", {"draftId": draft_id})
    referral = bot.services.referrals
    with sqlite3.connect(bot.services.settings.database_path) as db:
        [(reference,)] = db.execute("SELECT reference FROM referrals WHERE state = 'queued'").fetchall()
    assert await referral.get(reference) is not None
    return str(reference)


def _block_outbox_with_a_full_disk(settings: Settings, reference: str) -> Path:
    """The outbox writes `<id>.tmp` first: pointing that name at /dev/full gives a real ENOSPC.

    The transport removes its temporary file after a failure, so call this before every attempt.
    """
    settings.outbox_dir.mkdir(parents=True, exist_ok=True)
    blocker = settings.outbox_dir / f"{reference}@opgroeien.be.tmp"
    if not blocker.is_symlink():
        blocker.symlink_to("/dev/full")
    return blocker


async def test_delivery_updates_the_referrers_card_and_tells_them(bot: BotDriver, referrer: TeamsUser) -> None:
    reference = await _send(bot, referrer)
    before = len(bot.connector.calls)

    assert await bot.deliver() == 1

    calls = bot.connector.calls[before:]
    [update] = [call for call in calls if call.method == "PUT"]
    assert update.path.endswith("/v3/conversations/a:personal-referrer/activities/card-1")
    card = update.body["attachments"][0]["content"]
    assert reference in texts(card) and "Verstuurd op" in texts(card)
    [message] = [call for call in calls if call.method == "POST"]
    assert reference in message.body["text"]
    referral = await bot.services.referrals.get(reference)
    assert referral is not None and referral.state == "sent" and referral.sent_at is not None
    with sqlite3.connect(bot.services.settings.database_path) as db:
        [(payload, state)] = db.execute("SELECT payload, state FROM outbox").fetchall()
    assert (payload, state) == (None, "delivered"), "the encrypted package is not kept after delivery"


async def test_the_referrers_card_says_sent_when_teams_shows_the_clicks_reply_after_the_mail_went(
    settings: Settings, referrer: TeamsUser, clock: ManualClock
) -> None:
    """Teams shows a click's reply (the card "being sent") when the reply reaches the chat. The edit to "sent",
    queued once the mail was delivered (milliseconds after the click), could reach the chat first and be
    overwritten by it: the card stayed "being sent" (the Playground showed it). The edit, and the notice that
    follows it, now go out once the reply has had time to land (`TEAMS_CLICK_REPLY_SECONDS`, by default 2)."""
    lands = Settings.from_mapping({"BOT_DATA_DIR": str(settings.data_dir)}).click_reply_lands
    assert lands == dt.timedelta(seconds=2)
    settings = dataclasses.replace(settings, click_reply_lands=lands)
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as bot:
        await _the_card_says_sent(bot, referrer, clock, lands)


async def _the_card_says_sent(bot: BotDriver, referrer: TeamsUser, clock: ManualClock, lands: dt.timedelta) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    being_sent = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert "Doorverwijzing wordt verstuurd" in texts(being_sent)
    before = len(bot.connector.calls)
    assert await bot.deliver() == 1  # the mail goes at once
    reached_first = len(bot.connector.calls)
    # The chat as Teams shows it: the reply lands now, over whatever edit reached the card before it.
    clock.advance(lands)
    assert await bot.settle() == 2
    on_the_card = [call for call in bot.connector.calls[before:] if call.method == "PUT"]
    assert [bot.connector.calls.index(call) >= reached_first for call in on_the_card] == [True], \
        "the edit reached the card before the click's reply could land there"
    shown = on_the_card[-1].body["attachments"][0]["content"]
    assert "Verstuurd op" in texts(shown)
    [notice] = [call for call in bot.connector.calls[reached_first:] if call.method == "POST"]
    assert bot.connector.calls.index(notice) > bot.connector.calls.index(on_the_card[-1]), "the notice follows"


async def test_a_full_disk_is_retried_and_nothing_is_lost(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    reference = await _send(bot, referrer)
    blocker = _block_outbox_with_a_full_disk(settings, reference)

    await bot.deliver()

    assert list(settings.outbox_dir.glob("*.eml")) == []
    referral = await bot.services.referrals.get(reference)
    assert referral is not None and referral.state == "queued"
    retry_at = await bot.services.outbox.next_due_at()
    assert retry_at is not None and retry_at > clock.now()
    assert "No space left" in caplog.text or "not writable" in caplog.text
    assert not any(value in caplog.text for value in CLIENT_VALUES)
    assert not [call for call in bot.connector.calls if call.method == "PUT"], "no 'sent' before it is sent"

    assert not blocker.exists(), "the transport cleaned up its temporary file"
    assert await bot.deliver() == 0, "not due yet"
    clock.current = retry_at
    assert await bot.deliver() == 1
    assert len(list(settings.outbox_dir.glob("*.eml"))) == 1
    assert (await bot.services.register.events_for(reference))[-1] == "delivered"


async def test_after_the_horizon_the_referrer_is_told_it_was_not_delivered(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock
) -> None:
    reference = await _send(bot, referrer)
    _block_outbox_with_a_full_disk(settings, reference)
    await bot.deliver()
    clock.advance(dt.timedelta(hours=25))
    _block_outbox_with_a_full_disk(settings, reference)

    await bot.deliver()

    referral = await bot.services.referrals.get(reference)
    assert referral is not None and referral.state == "failed"
    [update] = [call for call in bot.connector.calls if call.method == "PUT"]
    assert "NIET" in texts(update.body) and reference in texts(update.body)
    [message] = [call for call in bot.connector.calls if call.method == "POST" and call.body.get("text")]
    assert "NIET verstuurd naar de mailbox van" in message.body["text"], "what failed, in the words of the bot"
    assert "functioneel beheerder" in message.body["text"], "who to tell, by name: no 'de support'"
    assert (await bot.services.register.events_for(reference))[-1] == "delivery_failed"
    closed = await bot.banner(referrer, "correction.start", {"reference": reference})
    assert "nooit naar de mailbox van het OCMW verstuurd" in closed, "no correction, and why"
    with sqlite3.connect(settings.database_path) as db:
        [(payload,)] = db.execute("SELECT payload FROM outbox").fetchall()
    assert payload is None


async def test_a_row_a_dead_worker_held_is_due_again_when_its_lease_runs_out_and_not_before(
    bot: BotDriver, referrer: TeamsUser, clock: ManualClock, settings: Settings
) -> None:
    """Another worker (process) must never take over a row whose lease still runs."""
    from bot.delivery.mail_outbox import Outbox
    from tests.support.databases import another_engine

    await _send(bot, referrer)
    lease = dt.timedelta(minutes=2)
    other = Outbox(another_engine(bot.services.db))  # a second worker on the same database
    assert len(await other.claim_due(clock.now(), lease)) == 1  # leased; then that worker "dies"
    clock.advance(lease - dt.timedelta(seconds=1))
    assert await bot.deliver() == 0, "the lease still runs: nobody else touches the row"
    clock.advance(dt.timedelta(seconds=2))
    assert await bot.deliver() == 1
    assert await bot.services.outbox.counts() == {"delivered": 1}


async def test_teams_throttling_is_retried_when_telling_the_referrer(
    bot: BotDriver, referrer: TeamsUser, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    await _send(bot, referrer)
    bot.connector.fail_next(429, count=1, retry_after="1")
    caplog.set_level(logging.INFO)
    await bot.deliver()
    assert [call.method for call in bot.connector.calls[-1:]] == ["PUT"], "throttled; the message waits its turn"
    clock.advance(dt.timedelta(seconds=3))
    await bot.settle()
    assert [call.method for call in bot.connector.calls[-3:]] == ["PUT", "PUT", "POST"]


def test_backoff_doubles_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(dt.timedelta(seconds=30), dt.timedelta(minutes=10), dt.timedelta(hours=24))
    rng = random.Random(7)
    waits = [policy.delay(attempt, None, rng).total_seconds() for attempt in range(1, 8)]
    for attempt, wait in enumerate(waits, start=1):
        step = min(600, 30 * 2 ** (attempt - 1))
        assert step / 2 <= wait <= step
    assert policy.delay(1, 120, rng).total_seconds() >= 120
    assert policy.delay(1, 10**6, rng).total_seconds() <= 600


@pytest.mark.parametrize(
    ("initial", "maximum"),
    [(30, 3600), (30, 300), (3600, 3600), (3600, 60), (2, 600)],
    ids=["mail defaults", "every 5 minutes", "first wait an hour", "first wait past the cap", "Teams defaults"],
)
def test_backoff_holds_at_its_cap_however_long_the_outage(initial: int, maximum: int) -> None:
    """The doubling used to come before the cap: `initial * 2 ** 42` no longer fits a timedelta."""
    policy = RetryPolicy(dt.timedelta(seconds=initial), dt.timedelta(seconds=maximum), dt.timedelta(hours=24))
    rng = random.Random(3)
    for attempt in [*range(1, 200), 1_000, 10**6]:
        wait = policy.delay(attempt, None, rng).total_seconds()
        assert 0 < wait <= maximum, (attempt, wait)
        if attempt > 30:  # long past the cap: half to all of it
            assert maximum / 2 <= wait, (attempt, wait)
    assert policy.delay(10**6, 10**9, rng).total_seconds() == maximum, "Retry-After, capped"


async def test_a_mail_after_many_attempts_is_rescheduled_at_the_longest_wait(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock
) -> None:
    """Attempt 60 within the horizon (a relay saying 'later' every 5 minutes for hours) is one more retry."""
    reference = await _send(bot, referrer)
    with sqlite3.connect(settings.database_path) as db:
        db.execute("UPDATE outbox SET attempts = 59")
    _block_outbox_with_a_full_disk(settings, reference)

    await bot.deliver()  # raised OverflowError, leaving the row 'sending' until its lease ran out

    with sqlite3.connect(settings.database_path) as db:
        [(state, attempts, next_attempt_at)] = db.execute(
            "SELECT state, attempts, next_attempt_at FROM outbox").fetchall()
    assert (state, attempts) == ("queued", 60)
    wait = from_text(next_attempt_at) - clock.now()
    assert settings.delivery.maximum / 2 <= wait <= settings.delivery.maximum


class _SlowRelay:
    """A relay that takes 60 % of a lease (on the bot's clock) for each mail of the first worker.

    During its second send, `meanwhile` runs: another instance's pass over the outbox, whose own
    sends are quick.
    """

    def __init__(self, clock: ManualClock, lease: dt.timedelta) -> None:
        self._clock = clock
        self._lease = lease
        self._busy = False
        self.sent: Counter[str] = Counter()
        self.meanwhile: Callable[[], Awaitable[object]] | None = None

    async def send(self, message: OutgoingMail) -> None:
        self.sent[message.message_id] += 1
        if self._busy:
            return
        self._clock.advance(self._lease * 0.6)
        if sum(self.sent.values()) == 2 and self.meanwhile is not None:
            self._busy = True
            await self.meanwhile()
            self._busy = False

    async def check(self) -> str:
        return "slow relay"


async def test_a_slow_relay_never_makes_a_mail_go_out_twice_from_two_instances(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    """Each mail is leased just before it is sent: no worker sends a mail whose lease ran out meanwhile.

    Three mails are due at once; each send takes 60 % of the lease. Had the first worker leased all
    three together, the second would go out after its lease ran out, and by then another instance's
    worker has taken it and sent it too.
    """
    relay = _SlowRelay(clock, settings.delivery.lease)
    async with running_bot(create_app(settings, clock=clock, run_worker=False, transport=relay)) as bot:
        other = create_app(settings, clock=clock, run_worker=False, transport=relay)[SERVICES_KEY]
        relay.meanwhile = other.worker.deliver_due
        for _ in range(3):
            draft_id, _ = await reach_review(bot, referrer)
            await bot.act(referrer, "referral.send", {"draftId": draft_id})
        try:
            await bot.services.worker.deliver_due()
        finally:
            for close in other.closers:
                await close()
            await other.db.close()
    assert sorted(relay.sent.values()) == [1, 1, 1], relay.sent
    assert await bot.services.outbox.counts() == {"delivered": 3}


class _RelayPausedPastItsLease:
    """The first worker's relay: its send lasts past the lease (the process paused: GC, CPU starvation, a
    frozen VM); meanwhile another instance finds the lease run out, takes the mail and delivers it. Then
    the paused send ends as `outcome` says."""

    def __init__(self, clock: ManualClock, lease: dt.timedelta, outcome: str) -> None:
        self._clock = clock
        self._lease = lease
        self._outcome = outcome
        self.meanwhile: Callable[[], Awaitable[object]] | None = None

    async def send(self, message: OutgoingMail) -> None:
        self._clock.advance(self._lease + dt.timedelta(seconds=5))
        assert self.meanwhile is not None
        await self.meanwhile()
        if self._outcome == "refused for good":
            raise MailDeliveryError("550 5.1.1 mailbox unknown", transient=False)
        if self._outcome == "try again later":
            raise MailDeliveryError("421 4.3.2 try again later", transient=True)

    async def check(self) -> str:
        return "paused relay"


@pytest.mark.parametrize("outcome", ["accepted", "refused for good", "try again later"])
async def test_a_worker_paused_past_its_lease_leaves_what_the_instance_that_took_over_recorded(
    settings: Settings, clock: ManualClock, referrer: TeamsUser, outcome: str
) -> None:
    """Its late mark changes nothing, and nothing follows it: the referral stays delivered, one register entry,
    the referrer told once that it went (never that it did not), the mail not queued again."""
    relay = _RelayPausedPastItsLease(clock, settings.delivery.lease, outcome)
    async with running_bot(create_app(settings, clock=clock, run_worker=False, transport=relay)) as bot:
        other = create_app(settings, clock=clock, run_worker=False, transport=CountingRelay())[SERVICES_KEY]
        relay.meanwhile = other.worker.deliver_due
        reference = await _send(bot, referrer)
        try:
            assert await bot.deliver() == 1
        finally:
            for close in other.closers:
                await close()
            await other.db.close()
        clock.advance(dt.timedelta(hours=1))
        assert await bot.deliver() == 0, "nothing is due again"
        referral = await bot.services.referrals.get(reference)
        assert referral is not None and referral.state == "sent", referral
        with sqlite3.connect(settings.database_path) as db:
            outbox = db.execute("SELECT state, payload FROM outbox").fetchall()
            events = [event for (event,) in db.execute("SELECT event FROM register WHERE reference = ?",
                                                       (reference,)).fetchall()]
            notices = db.execute("SELECT COUNT(*) FROM message_outbox WHERE action = 'post'"
                                 " AND reference = ?", (reference,)).fetchone()[0]
        assert outbox == [("delivered", None)]
        assert events.count("delivered") == 1 and "delivery_failed" not in events, events
        assert notices == 1, "the referrer is told once that it was delivered"


class _RelayTakingAMoment:
    """Each send takes 50 ms of real time and 10 s of the bot's clock, side by side with the others.

    It records, per lane (the asyncio task sending), when each mail was leased and when that lane's
    previous send ended, both on the bot's clock, which only the relay moves: so what it records
    does not depend on how busy the machine is. Until two sends are in flight, a send waits (at
    most 5 s) for a second one, so lanes that truly run side by side always show it.
    """

    SEND_TAKES = dt.timedelta(seconds=10)

    def __init__(self, clock: ManualClock, database_path: Path, lease: dt.timedelta) -> None:
        self._clock = clock
        self._database_path = database_path
        self._lease = lease
        self.sent: Counter[str] = Counter()
        #: (when the mail was leased, when its lane's previous send ended), per send.
        self.leased_after: list[tuple[dt.datetime, dt.datetime]] = []
        self._lane_done: dict[asyncio.Task[object] | None, dt.datetime] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self._overlapped = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def send(self, message: OutgoingMail) -> None:
        self.sent[message.message_id] += 1
        lane = asyncio.current_task()
        with sqlite3.connect(self._database_path) as db:
            [(lease_until,)] = db.execute("SELECT lease_until FROM outbox WHERE message_id = ?",
                                          (message.message_id,)).fetchall()
        previous_done = self._lane_done.get(lane, dt.datetime.min.replace(tzinfo=dt.UTC))
        self.leased_after.append((from_text(lease_until) - self._lease, previous_done))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight > 1:
            self._overlapped.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._overlapped.wait(), 5)
            await self.release.wait()
            await asyncio.sleep(0.05)
        finally:
            self.in_flight -= 1
        self._clock.advance(self.SEND_TAKES)
        self._lane_done[lane] = self._clock.now()

    async def check(self) -> str:
        return "relay taking a moment"


async def test_lanes_on_two_instances_send_side_by_side_each_mail_once_on_a_fresh_lease(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    """PARALLEL_SENDS lanes per instance, two instances at once: sends overlap, none goes out twice, and
    every mail was leased after its lane's previous send ended (not with others, waiting behind them)."""
    lease = settings.delivery.lease
    relay = _RelayTakingAMoment(clock, settings.database_path, lease)
    async with running_bot(create_app(settings, clock=clock, run_worker=False, transport=relay)) as bot:
        other = create_app(settings, clock=clock, run_worker=False, transport=relay)[SERVICES_KEY]
        for _ in range(12):
            draft_id, _ = await reach_review(bot, referrer)
            await bot.act(referrer, "referral.send", {"draftId": draft_id})
        try:
            tried = await asyncio.gather(bot.services.worker.deliver_in_lanes(), other.worker.deliver_in_lanes())
        finally:
            for close in other.closers:
                await close()
            await other.db.close()
    assert sum(tried) == 12
    assert sorted(relay.sent.values()) == [1] * 12, relay.sent
    assert await bot.services.outbox.counts() == {"delivered": 12}
    assert 1 < relay.most_in_flight <= 2 * PARALLEL_SENDS
    assert all(leased >= lane_done for leased, lane_done in relay.leased_after), relay.leased_after


class _RelayLettingGoSlowly:
    """Holds every send until it is cancelled, then takes a moment to let go (as a connection closing does)."""

    def __init__(self) -> None:
        self.holding = 0
        self.cancelled = 0
        self.let_go = 0
        self.all_holding = asyncio.Event()

    async def send(self, message: OutgoingMail) -> None:
        self.holding += 1
        if self.holding == PARALLEL_SENDS:
            self.all_holding.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1  # the first lets go at once, the last after a while
            await asyncio.sleep(0.03 * (self.cancelled - 1))
            self.holding -= 1
            self.let_go += 1
            raise

    async def check(self) -> str:
        return "relay letting go slowly"


async def test_a_stopped_worker_returns_only_after_every_lane_let_go(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    """On shutdown the app closes the database right after its worker stopped: no lane may still be
    running then (one did, and the test run hung at the end of the event loop)."""
    relay = _RelayLettingGoSlowly()
    async with running_bot(create_app(settings, clock=clock, run_worker=False, transport=relay)) as bot:
        for _ in range(PARALLEL_SENDS):
            draft_id, _ = await reach_review(bot, referrer)
            await bot.act(referrer, "referral.send", {"draftId": draft_id})
        worker = asyncio.create_task(bot.services.worker.run())
        async with asyncio.timeout(10):
            await relay.all_holding.wait()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        assert relay.let_go == PARALLEL_SENDS
        assert relay.holding == 0


async def test_a_send_waits_a_moment_for_room_while_the_worker_is_behind_and_answers_as_always(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    """Back-pressure: with every lane busy and BACKLOG_LIMIT mails waiting for one, the next send waits
    (at most ROOM_WAIT_SECONDS) for the worker; its answer is the same card, and every mail still goes out."""
    relay = _RelayTakingAMoment(clock, settings.database_path, settings.delivery.lease)
    relay.release.clear()  # the relay hangs: the worker's lanes stay busy
    async with running_bot(create_app(settings, clock=clock, run_worker=True, transport=relay)) as bot:
        for _ in range(PARALLEL_SENDS):
            draft_id, _ = await reach_review(bot, referrer)
            await bot.act(referrer, "referral.send", {"draftId": draft_id})
        await until(lambda: relay.in_flight == PARALLEL_SENDS, 5, "every lane holds a mail")
        for _ in range(BACKLOG_LIMIT):  # these wait for a free lane
            draft_id, _ = await reach_review(bot, referrer)
            await bot.act(referrer, "referral.send", {"draftId": draft_id})
        draft_id, _ = await reach_review(bot, referrer)
        started = time.monotonic()
        answer = await bot.act(referrer, "referral.send", {"draftId": draft_id})
        waited = time.monotonic() - started
        relay.release.set()
        async with asyncio.timeout(10):
            while await bot.services.outbox.counts() != {"delivered": PARALLEL_SENDS + BACKLOG_LIMIT + 1}:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    assert ROOM_WAIT_SECONDS * 0.9 <= waited < ROOM_WAIT_SECONDS + 2
    assert "VD-" in texts(answer) and "referral.send" not in actions(answer)
    assert sorted(relay.sent.values()) == [1] * (PARALLEL_SENDS + BACKLOG_LIMIT + 1)


class _HangingRelay:
    """Takes each mail and holds it until `release` is set: the lane that sends it stays busy."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.in_flight = 0
        self.sent = 0

    async def send(self, message: OutgoingMail) -> None:
        self.in_flight += 1
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        self.sent += 1


async def test_a_send_is_not_held_back_by_lanes_another_instance_keeps_busy(
    postgres: PostgresServer, tmp_path: Path, clock: ManualClock, referrer: TeamsUser, colleague: TeamsUser
) -> None:
    """Two instances on one database: while PARALLEL_SENDS mails hang at the relay, nothing waits for a
    lane, so a send on either instance goes on at once (before, the mails being sent counted, and every
    send of every instance waited ROOM_WAIT_SECONDS as soon as one instance's lanes were busy)."""
    url = await migrated_postgres_url(postgres)
    relays = [_HangingRelay(), _HangingRelay()]
    apps = [create_app(Settings.from_mapping({
        "BOT_DATA_DIR": str(tmp_path / name), "DATABASE_URL": url, "LOCAL_DRAFT_KEY": "5d" * 32,
        "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD, "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_TLS": "none",
        "SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK": "1"}), clock=clock, run_worker=True, transport=relay)
        for name, relay in zip(("a", "b"), relays, strict=True)]
    async with running_bot(apps[0]) as first, running_bot(apps[1]) as second:
        try:
            for _ in range(PARALLEL_SENDS):
                draft_id, _ = await reach_review(first, referrer)
                await first.act(referrer, "referral.send", {"draftId": draft_id})
            await until(lambda: sum(relay.in_flight for relay in relays) == PARALLEL_SENDS, 10,
                        "the mails are at the relays")
            draft_id, _ = await reach_review(second, colleague)
            started = time.monotonic()
            await second.act(colleague, "referral.send", {"draftId": draft_id})
            waited = time.monotonic() - started
        finally:
            for relay in relays:
                relay.release.set()
        await until(lambda: sum(relay.sent for relay in relays) == PARALLEL_SENDS + 1, 10, "every mail sent")
    assert waited < ROOM_WAIT_SECONDS / 2


async def test_without_a_worker_in_this_process_a_send_never_waits_for_room(
    bot: BotDriver, referrer: TeamsUser
) -> None:
    for _ in range(BACKLOG_LIMIT):
        draft_id, _ = await reach_review(bot, referrer)
        await bot.act(referrer, "referral.send", {"draftId": draft_id})
    draft_id, _ = await reach_review(bot, referrer)
    started = time.monotonic()
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert time.monotonic() - started < ROOM_WAIT_SECONDS / 2
    assert await bot.services.outbox.counts() == {"queued": BACKLOG_LIMIT + 1}


async def _statements_while_one_mail_goes(settings: Settings, clock: ManualClock, referrer: TeamsUser) -> list[str]:
    """The statements (whitespace collapsed) from one "Verstuur" until every lane is asleep again, the
    worker running on real SQLite and every lane idle when the send comes."""
    relay = CountingRelay()
    async with running_bot(create_app(settings, clock=clock, run_worker=True, transport=relay)) as bot:
        draft_id, _ = await reach_review(bot, referrer)
        await asyncio.sleep(0.2)  # the lanes' first passes (at start-up, each looks once) are over
        statements: list[str] = []
        event.listen(bot.services.db.engine.sync_engine, "before_cursor_execute",
                     lambda _c, _cu, statement, *_: statements.append(" ".join(statement.split())))
        await bot.act(referrer, "referral.send", {"draftId": draft_id})
        await until(lambda: relay.sent == 1, 5, "the mail is at the relay")
        async with asyncio.timeout(5):
            while await bot.services.outbox.counts() != {"delivered": 1}:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # every lane that woke is asleep again
    assert relay.sent == 1
    the_wait_above = "SELECT state, COUNT(*) AS n FROM outbox"
    return [sql for sql in statements if not sql.startswith(the_wait_above)]


async def test_one_queued_mail_wakes_one_lane_and_is_claimed_once(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    """Every lane woke for every mail queued: for one mail four claims (each a write transaction, on
    SQLite the writer's lock every step of every referrer waits for) and nine reads of the next due
    time. One lane that is not sending wakes and claims without asking first (the wake-up says a mail
    was queued); it wakes another only when more is due than it took (before, after every claim: that
    lane read the next due time for nothing). The one read left: nothing more due once the mail went."""
    statements = await _statements_while_one_mail_goes(settings, clock, referrer)
    claims = [sql for sql in statements if "UPDATE outbox SET state = ?, attempts = attempts + 1" in sql]
    next_due = [sql for sql in statements if sql.startswith("SELECT (SELECT next_attempt_at FROM outbox")]
    assert len(claims) == 1, claims
    assert len(next_due) <= 1, next_due


async def test_a_lane_woken_for_a_mail_does_not_look_for_expired_leases_first(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    """Each claim set expired leases back to queued first: an UPDATE (inside the claim's write
    transaction) that nearly always changes nothing. A lane woken for a queued mail leaves that to the
    claims that follow a read of what is due (`test_a_row_a_dead_worker_held_is_due_again_...`)."""
    statements = await _statements_while_one_mail_goes(settings, clock, referrer)
    assert not [sql for sql in statements if sql.startswith("UPDATE outbox SET state = ?, lease_until = NULL")]


async def test_a_delivered_mail_reads_its_referral_once(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    """The lane looked the referral up by its mail before the send (is its protocol still in force?)
    and again in the transaction that records the delivery; the second read is the first's answer."""
    statements = await _statements_while_one_mail_goes(settings, clock, referrer)
    lookups = [sql for sql in statements if sql.startswith("SELECT * FROM referrals WHERE message_id")]
    assert len(lookups) == 1, lookups


async def test_a_send_with_a_lane_free_does_not_count_the_mails_waiting_for_one(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    """Back-pressure (`room`) counts the due mails that wait for a lane; while one of this process's
    lanes is free there is room whatever the count (the mail about to be queued wakes that lane), so
    the count, a statement for every send, is not asked."""
    statements = await _statements_while_one_mail_goes(settings, clock, referrer)
    assert not [sql for sql in statements if sql.startswith("SELECT COUNT(*) FROM outbox")]


class _RelaySlowToHangUp:
    """Takes mails at once; closing a session that sent one (the SMTP QUIT) waits until `hang_up` is set."""

    def __init__(self) -> None:
        self.sent = 0
        self.hanging_up = 0
        self.hang_up = asyncio.Event()

    async def send(self, message: OutgoingMail) -> None:
        self.sent += 1

    async def check(self) -> str:
        return "relay slow to hang up"

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[_SessionCounting]:
        session = _SessionCounting(self)
        try:
            yield session
        finally:
            if session.sent:  # a connection was opened: its QUIT takes a while
                self.hanging_up += 1
                try:
                    await self.hang_up.wait()
                finally:
                    self.hanging_up -= 1


class _SessionCounting:
    def __init__(self, relay: _RelaySlowToHangUp) -> None:
        self._relay = relay
        self.sent = 0

    async def send(self, message: OutgoingMail) -> None:
        self.sent += 1
        await self._relay.send(message)


async def test_a_mail_queued_while_every_lane_ends_its_pass_is_not_left_waiting(
    settings: Settings, clock: ManualClock
) -> None:
    """Every lane has sent its mail, found nothing more due and is closing its relay session when the
    next mail is queued: no lane is idle to wake, and each would sleep on the "nothing due" it just
    read. The wake-up must still reach them, or the mail waits for the idle minute.

    A referrer (a chat) per referral: the notice of a delivered mail arrives in its referrer's chat
    while the next referral is typed, and must not land in the chat whose new card is awaited."""
    relay = _RelaySlowToHangUp()
    referrers = [TeamsUser(f"aad-lane-{number}", f"Referrer {number}", f"a:personal-lane-{number}")
                 for number in range(PARALLEL_SENDS + 1)]
    async with running_bot(create_app(settings, clock=clock, run_worker=True, transport=relay)) as bot:
        for number, referrer in enumerate(referrers[:PARALLEL_SENDS], start=1):
            draft_id, _ = await reach_review(bot, referrer)
            await bot.act(referrer, "referral.send", {"draftId": draft_id})
            await until(lambda n=number: relay.hanging_up == n, 5, f"{number} lane(s) hanging up")  # type: ignore[misc]
        last = referrers[PARALLEL_SENDS]
        draft_id, _ = await reach_review(bot, last)
        await bot.act(last, "referral.send", {"draftId": draft_id})
        relay.hang_up.set()
        await until(lambda: relay.sent == PARALLEL_SENDS + 1, 5, "the last mail is sent")
