"""The mail outbox: its contract on both backends, and exactly-once in effect for a SIGKILLed bot.

The contract: a mail is queued once per Message-ID; a claim leases it, and while the lease runs no
other instance gets it; rows claimed by many claimers on two engines at once go out once each; a
mail is never both cancelled and claimed.

Then the real bot process (`python -m bot serve`) with the real SMTP transport and a real aiosmtpd
server: queue referrals while SMTP is down, kill -9 the bot, restart it, bring SMTP up, and
count the messages per Message-ID at the server.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import email
import email.policy
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from bot.delivery.mail_outbox import Outbox
from bot.storage.database import Database
from tests.support.activities import TeamsUser
from tests.support.bot_process import bot_process, wait_until_ready
from tests.support.bot_server import serve
from tests.support.connector import ConnectorStandIn
from tests.support.databases import (
    SUBQUERY_RUN_PER_ROW,
    another_engine,
    postgres_database,
    set_session_defaults,
    statements_and_transactions,
)
from tests.support.postgres_server import PostgresServer
from tests.support.query_plans import StatementLog, buffers_read
from tests.support.referral_flow import CLIENT_FORM, CONSENT_ALL, PROTOCOL_ID
from tests.support.smtp_server import free_port, smtp_server

REFERRALS = 3
ZIP_PASSWORD = "K7M2QX9PLR4TWB8N6VHJ3CZD"
NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(minutes=5)
SECOND = dt.timedelta(seconds=1)


def message_id(number: int) -> str:
    return f"<VD-20261128-{number:06d}@doorverwijzen.example>"


async def queue(outbox: Outbox, count: int, now: dt.datetime = NOW) -> list[str]:
    """`count` mails queued in one commit; their Message-IDs."""
    ids = [message_id(number) for number in range(count)]
    async with outbox._db.transaction():
        for number, queued in enumerate(ids):
            assert await outbox.enqueue(message_id=queued, reference=f"VD-20261128-{number:06d}",
                                        payload=b"PK\x03\x04 sealed", now=now)
    return ids


# --- the contract, on both backends -----------------------------------------------------------------


async def test_a_mail_is_queued_once_per_message_id_and_woken_for_after_the_commit(database: Database) -> None:
    outbox, woken = Outbox(database), []
    outbox.on_queued = lambda: woken.append("worker")
    async with database.transaction():
        assert await outbox.enqueue(message_id="<a@x>", reference="VD-1", payload=b"zip", now=NOW)
        assert woken == []
    assert woken == ["worker"]
    assert not await outbox.enqueue(message_id="<a@x>", reference="VD-1", payload=b"other", now=NOW + SECOND)
    assert await outbox.counts() == {"queued": 1} and await outbox.next_due_at() == NOW
    [item] = await outbox.claim_due(NOW, LEASE)
    assert (item.message_id, item.reference, item.payload, item.attempts, item.queued_at) == (
        "<a@x>", "VD-1", b"zip", 1, NOW)


async def test_a_lease_keeps_a_mail_from_every_other_claimer_until_it_runs_out(database: Database) -> None:
    mine, other = Outbox(database), Outbox(another_engine(database))
    await queue(mine, 1)
    [claimed] = await mine.claim_due(NOW, LEASE)
    assert await mine.counts() == {"sending": 1} and await mine.next_due_at() == NOW + LEASE
    assert await other.claim_due(NOW + LEASE - SECOND, LEASE) == [], "the lease still runs"
    assert await mine.claim_due(NOW + LEASE - SECOND, LEASE) == [], "not even for the same instance"
    [again] = await other.claim_due(NOW + LEASE + SECOND, LEASE)  # its worker died mid-send
    assert (again.message_id, again.attempts) == (claimed.message_id, 2)


async def test_a_start_that_alone_can_send_queues_a_cut_off_mail_again_at_once(database: Database) -> None:
    """`requeue_cut_off` (SQLite, at start): a mail left "sending" is due now, its lease not waited out; mails
    queued or delivered are not touched."""
    outbox = Outbox(database)
    cut_off, delivered = await queue(outbox, 2)
    leased = {item.message_id: item for item in await outbox.claim_due(NOW, LEASE)}
    assert await outbox.mark_delivered(leased[delivered], NOW)
    await outbox.enqueue(message_id=message_id(7), reference="VD-20261128-000007", payload=b"zip", now=NOW + LEASE)
    assert await outbox.requeue_cut_off() == 1
    assert await outbox.counts() == {"queued": 2, "delivered": 1}
    [again] = await outbox.claim_due(NOW + SECOND, LEASE)  # the lease it was cut off under still runs
    assert (again.message_id, again.attempts) == (cut_off, 2)


async def test_a_claim_for_what_was_just_queued_leaves_the_expired_leases_to_the_next(database: Database) -> None:
    """A lane woken for a queued mail claims it without a read first; setting expired leases back to
    queued (an UPDATE that nearly always changes nothing) is left to the claims that follow a read of
    what is due, which sees a lease that ran out."""
    outbox = Outbox(database)
    held, = await queue(outbox, 1)
    await outbox.claim_due(NOW, LEASE)  # its worker dies mid-send
    fresh = message_id(7)
    await outbox.enqueue(message_id=fresh, reference="VD-20261128-000007", payload=b"zip", now=NOW + LEASE)
    later = NOW + LEASE + SECOND
    with statements_and_transactions(database) as sent:
        [claimed] = await outbox.claim_due(later, LEASE, expired_leases=False)
    assert claimed.message_id == fresh
    assert sent == ["WITH"], "the claim (its rows picked, then leased), no look at expired leases"
    due = await outbox.next_due()
    assert due.at == NOW + LEASE and due.lease_ran_out(later), "the expired lease is due: a read sees it"
    [again] = await outbox.claim_due(later, LEASE)
    assert (again.message_id, again.attempts) == (held, 2)


async def test_a_claim_is_one_statement_on_its_own(database: Database) -> None:
    """A claim was a transaction: BEGIN, the read of the due rows, their lease, COMMIT; on PostgreSQL four round
    trips for every mail, and on SQLite the writer's lock held across the two statements. Now one statement,
    in the database's autocommit, leases the due rows and returns them as they are then (the attempt counted);
    with the expired leases looked at first, that look is a statement on its own before it."""
    outbox = Outbox(database)
    first, second, third = await queue(outbox, 3)
    with statements_and_transactions(database) as sent:
        one, more_due = await outbox.claim_one(NOW, LEASE, expired_leases=False)
    assert sent == ["WITH"], "one statement: the rows picked, then leased"
    assert one is not None  # the three are due at the same moment: any one of them
    assert (one.message_id in {first, second, third}, one.attempts, one.lease_until, more_due) == (
        True, 1, NOW + LEASE, True)
    with statements_and_transactions(database) as sent:
        claimed = await outbox.claim_due(NOW, LEASE)
    assert sent == ["UPDATE", "WITH"], "the expired leases, then the claim: no transaction around them"
    assert sorted((item.message_id, item.attempts) for item in claimed) == sorted(
        (message, 1) for message in {first, second, third} - {one.message_id})
    later = NOW + LEASE + SECOND  # every lease ran out: the three are due again, one claim at a time
    answers = [await outbox.claim_one(later, LEASE, expired_leases=number == 0) for number in range(4)]
    assert [(item.attempts if item else None, more) for item, more in answers] == [
        (2, True), (2, True), (2, False), (None, False)]
    assert {item.message_id for item, _ in answers if item} == {first, second, third}


async def test_a_claim_leases_no_more_mails_than_asked_whatever_plan_the_server_chooses(
        postgres: PostgresServer) -> None:
    """`UPDATE ... WHERE message_id IN (SELECT ... LIMIT 1 FOR UPDATE SKIP LOCKED)`: where the server runs the
    subquery again for every row it could change, each run passes over the rows the statement already changed
    and picks the next: a claim of one mail leased all 30 due, which then waited out their lease unsent and
    came back counted as a worker stopped mid-send. The rows are picked once, before the update."""
    db = await postgres_database(postgres)
    outbox = Outbox(db)
    await queue(outbox, 30)
    await set_session_defaults(postgres, db, SUBQUERY_RUN_PER_ROW)
    item, more_due = await outbox.claim_one(NOW, LEASE, expired_leases=False)
    assert item is not None and more_due
    assert await outbox.counts() == {"sending": 1, "queued": 29}
    assert len(await outbox.claim_due(NOW, LEASE, limit=3)) == 3
    assert await outbox.counts() == {"sending": 4, "queued": 26}


async def test_delivered_failed_and_rescheduled_mails(database: Database) -> None:
    outbox = Outbox(database)
    delivered, failed, later = await queue(outbox, 3)
    leased = {item.message_id: item for item in await outbox.claim_due(NOW, LEASE)}
    assert len(leased) == 3
    assert await outbox.mark_delivered(leased[delivered], NOW + SECOND)
    assert await outbox.mark_failed(leased[failed], NOW + SECOND, "550 mailbox unknown")
    assert await outbox.reschedule(leased[later], NOW + dt.timedelta(minutes=2), "421 try again")
    assert await outbox.counts() == {"delivered": 1, "failed": 1, "queued": 1}
    rows = {row["message_id"]: row for row in await database.fetch_all("SELECT * FROM outbox")}
    assert rows[delivered]["payload"] is None and rows[failed]["payload"] is None, "the package goes once done"
    assert (rows[failed]["last_error"], rows[later]["last_error"]) == ("550 mailbox unknown", "421 try again")
    assert await outbox.next_due_at() == NOW + dt.timedelta(minutes=2)
    assert await outbox.claim_due(NOW + dt.timedelta(minutes=1), LEASE) == []
    [retried] = await outbox.claim_due(NOW + dt.timedelta(minutes=2), LEASE)
    assert (retried.message_id, retried.attempts) == (later, 2)
    assert await outbox.mark_delivered(retried, NOW + dt.timedelta(minutes=3))
    assert await outbox.next_due_at() is None


async def test_a_mail_some_recipients_took_keeps_them_for_its_retry_and_its_refusal_once_delivered(
    database: Database,
) -> None:
    outbox = Outbox(database)
    [queued] = await queue(outbox, 1)
    [item] = await outbox.claim_due(NOW, LEASE)
    assert item.delivered_to == ()
    taken = dataclasses.replace(item, delivered_to=("informatica@sint-gillis-waas.be", "b@example.org"))
    assert await outbox.reschedule(taken, NOW + SECOND, "SMTP 452 from server to a recipient (RCPT): temporary failure")
    [retried] = await outbox.claim_due(NOW + SECOND, LEASE)
    assert (retried.message_id, retried.delivered_to) == (queued, taken.delivered_to)
    refused = "refused for dpo@opgroeien.be: SMTP 550 from server to a recipient (RCPT): refused"
    assert await outbox.mark_delivered(retried, NOW + 2 * SECOND, refused)
    row = await database.fetch_one("SELECT state, last_error FROM outbox")
    assert row is not None and (row["state"], row["last_error"]) == ("delivered", refused)


async def test_two_hundred_mails_claimed_by_eight_claimers_on_two_engines_go_out_once_each(
    database: Database,
) -> None:
    engines = (database, another_engine(database))
    queued = await queue(Outbox(database), 200)

    async def claimer(outbox: Outbox) -> list[str]:
        mine: list[str] = []
        while batch := await outbox.claim_due(NOW, LEASE, limit=10):
            mine.extend(item.message_id for item in batch)
        return mine

    claimed = await asyncio.gather(*(claimer(Outbox(engines[number % 2])) for number in range(8)))
    everything = [message for mine in claimed for message in mine]
    assert sorted(everything) == sorted(queued), "every mail once, none twice"
    assert await Outbox(database).counts() == {"sending": 200}


async def test_a_mail_is_never_both_cancelled_and_claimed(database: Database) -> None:
    """A withdrawal cancels the mail while another instance's worker claims it: one of the two, never both."""
    canceller, worker = Outbox(database), Outbox(another_engine(database))
    for number in range(10):
        assert await canceller.enqueue(message_id=message_id(number), reference="VD", payload=b"zip", now=NOW)
        cancelled, claimed = await asyncio.gather(canceller.cancel_queued(message_id(number), NOW, "withdrawn"),
                                                  worker.claim_due(NOW, LEASE))
        assert cancelled != bool(claimed), (number, cancelled, claimed)
        state = await database.scalar("SELECT state FROM outbox WHERE message_id = :id", {"id": message_id(number)})
        assert state == ("failed" if cancelled else "sending")
    assert not await canceller.cancel_queued(message_id(99), NOW, "no such mail")


@pytest.mark.parametrize("finished", ["sending", "delivered"])
async def test_a_mail_on_its_way_or_delivered_is_not_cancelled(database: Database, finished: str) -> None:
    outbox = Outbox(database)
    [queued] = await queue(outbox, 1)
    [item] = await outbox.claim_due(NOW, LEASE)
    if finished == "delivered":
        assert await outbox.mark_delivered(item, NOW)
    assert not await outbox.cancel_queued(queued, NOW, "withdrawn")
    assert await outbox.counts() == {finished: 1}


async def test_a_mark_made_after_its_lease_ran_out_and_another_claim_took_the_mail_changes_nothing(
        database: Database) -> None:
    """A worker paused past its lease marks a mail another instance took over and delivered: the late mark is
    dropped. Before, a late reschedule put the delivered row, its payload gone, back in the queue, and every
    claim after it failed (bytes(None))."""
    mine, other = Outbox(database), Outbox(another_engine(database))
    [queued] = await queue(mine, 1)
    late, _ = await mine.claim_one(NOW, LEASE)
    taken, _ = await other.claim_one(NOW + LEASE + SECOND, LEASE)
    assert late is not None and taken is not None and taken.message_id == late.message_id == queued
    assert not await mine.reschedule(late, NOW + LEASE, "421 try again"), "while the other instance sends it"
    assert not await mine.mark_delivered(late, NOW + LEASE)
    assert await Outbox(database).counts() == {"sending": 1}
    assert await other.mark_delivered(taken, NOW + LEASE + SECOND)
    assert not await mine.reschedule(late, NOW + LEASE + 30 * SECOND, "connection reset"), "once it delivered it"
    assert not await mine.mark_failed(late, NOW + LEASE + 30 * SECOND, "550 mailbox unknown")
    row = await database.fetch_one("SELECT state, payload FROM outbox")
    assert row is not None and (row["state"], row["payload"]) == ("delivered", None)
    assert await other.claim_one(NOW + dt.timedelta(hours=1), LEASE) == (None, False)


# --- the real process ---------------------------------------------------------------------------------


@asynccontextmanager
async def connector() -> AsyncIterator[tuple[ConnectorStandIn, str]]:
    stand_in = ConnectorStandIn()
    async with serve(stand_in.app()) as url:
        yield stand_in, url


async def refer(session: aiohttp.ClientSession, bot_url: str, service_url: str, user: TeamsUser) -> None:
    async def act(verb: str, data: dict[str, str]) -> dict[str, object]:
        activity = user.card_action(service_url, verb, data)
        async with session.post(f"{bot_url}/api/messages", json=activity) as response:
            assert response.status == 200
            body: dict[str, object] = await response.json()
            return body

    start = await act("referral.start", {})
    value = start["value"]
    assert isinstance(value, dict)
    draft_id = next(a["data"]["draftId"] for a in value["actions"] if a["verb"] == "referral.consent")
    await act("referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    await act("referral.details", {"draftId": draft_id, **CLIENT_FORM})
    queued = await act("referral.send", {"draftId": draft_id})
    assert "VD-" in str(queued)


async def test_sigkill_with_queued_mail_and_smtp_down_sends_each_referral_exactly_once(tmp_path: Path) -> None:
    with smtp_server(tls="starttls") as smtp:
        smtp.stop()  # SMTP is down while the referrals are made
        bot_port = free_port()
        env = {
            **os.environ,
            "BOT_DATA_DIR": str(tmp_path / "data"),
            "PORT": str(bot_port),
            "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
            "MAIL_TRANSPORT": "smtp",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp.port),
            "SMTP_CA_FILE": str(smtp.ca_path),
            "SMTP_TIMEOUT_SECONDS": "5",
            "OUTBOX_RETRY_INITIAL_SECONDS": "1",
            "OUTBOX_RETRY_MAX_SECONDS": "1",
            "OUTBOX_LEASE_SECONDS": "10",  # a mail the killed process held is due again after this
        }
        bot_url = f"http://127.0.0.1:{bot_port}"
        log = tmp_path / "bot.log"
        async with connector() as (_, service_url), aiohttp.ClientSession() as session:
            with bot_process(env, log) as first:
                await wait_until_ready(bot_url, session)
                for number in range(REFERRALS):
                    user = TeamsUser(f"aad-{number}", f"Verpleeg {number}", f"a:personal-{number}")
                    await refer(session, bot_url, service_url, user)
                await asyncio.sleep(1.5)  # the worker has tried (and failed) at least once
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
            assert smtp.messages == []

            smtp.start()
            with bot_process(env, log):
                await wait_until_ready(bot_url, session)
                deadline = time.monotonic() + 40
                while len(smtp.messages) < REFERRALS and time.monotonic() < deadline:  # noqa: ASYNC110 - another process
                    await asyncio.sleep(0.2)
                await asyncio.sleep(2.5)  # time for any duplicate to show up

        message_ids = collections.Counter(
            email.message_from_bytes(mail.data, policy=email.policy.default)["Message-ID"] for mail in smtp.messages
        )
        assert len(message_ids) == REFERRALS, log.read_text()
        assert set(message_ids.values()) == {1}, message_ids
        assert "Connection refused" in log.read_text() or "ECONNREFUSED" in log.read_text()


async def test_the_workers_lookups_stay_cheap_between_vacuums(postgres: PostgresServer) -> None:
    """The mail worker's lookups (expired leases, the claim, the next due time, the mails waiting for a
    lane, asked before every send) reached the few waiting mails through an index of every state's
    entries; until a vacuum, each mail's three states left dead entries there that bitmap scans read on
    every call. Through indexes of the waiting mails only (revision 0007), a few pages each (a fresh
    table without statistics and autovacuum off: as between autovacuum's passes)."""
    db = await postgres_database(postgres)
    await db.execute("ALTER TABLE outbox SET (autovacuum_enabled = off)")
    await db.execute(
        "INSERT INTO outbox (message_id, reference, state, queued_at, next_attempt_at)"
        " SELECT '<' || g || '@example.org>', 'VD-20261128-' || g, 'queued', :now, :now"
        " FROM generate_series(1, 20000) AS g", {"now": "2026-11-28T09:00:00.000000+00:00"})
    await db.execute("UPDATE outbox SET state = 'sending', lease_until = queued_at")
    await db.execute("UPDATE outbox SET state = 'delivered', lease_until = NULL")
    outbox = Outbox(db)
    now = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
    for number in (1, 2):
        await outbox.enqueue(message_id=f"<new-{number}@example.org>", reference=f"VD-NEW-{number}", payload=b"m",
                             now=now)
    log = StatementLog(db)
    try:
        for _ in range(2):  # the first run of each statement meets the dead entries unmarked
            with log.recording("work"):
                assert await outbox.waiting_for_a_lane(now) == 2
                assert await outbox.next_due_at() == now
                assert len(await outbox.claim_due(now, dt.timedelta(minutes=1))) == 2
            await db.execute("UPDATE outbox SET state = 'queued', lease_until = NULL WHERE reference LIKE 'VD-NEW-%'")
    finally:
        log.close()
    statements = list(log.seen.values())
    assert len(statements) == 4, "the lane count, the next due time, the expired leases and the claim"
    for statement in statements:
        assert await buffers_read(db, statement) <= 100, statement.sql
