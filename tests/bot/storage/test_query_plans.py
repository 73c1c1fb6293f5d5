"""Every lookup of a delivery, of the Teams messages it queues and of the reminder pass reaches its rows
through an index, on both backends: the work per delivery and per pass does not grow with the
referrals kept (at 100 000 stored referrals: `python -m benchmarks.scale_out`).

The statements are the ones the bot's own stores send (recorded on the engine), planned with the
parameters they ran with; see `tests/support/query_plans.py` for why the plans do not depend on how
many rows the test database holds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from bot.core.sent_referrals import ReferralState, ReferralStore
from bot.delivery.chat_messages import MessageContent
from bot.delivery.mail_outbox import Outbox
from bot.delivery.message_outbox import MessageOutbox
from bot.evidence.register import ProcessingRegister, RegisterEvent
from bot.ocmw.links import OcmwLinks
from bot.storage.database import Database
from tests.bot.ocmw.test_reminders import THURSDAY, TUESDAY, seed, service
from tests.support.clock import ManualClock
from tests.support.query_plans import Statement, StatementLog, explain
from tests.support.stored_referrals import a_referral, conversation_ref

LEASE = dt.timedelta(minutes=2)
#: The index through which each of these lookups must reach the referrals. An index on another of the
#: lookup's columns can walk every referral ever kept: "first versions only" (`parent_reference IS NULL`)
#: through `referrals_parent` did, in the reminder pass, before it was written so that no index serves it.
REFERRALS_BY = {
    "FROM referrals AS r WHERE r.state IN": "referrals_state",  # the reminder pass, each kind of wait
    "FROM referrals WHERE message_id = ?": "referrals_message_id",  # a delivery: whose mail is this
    "FROM referrals WHERE state = ? ORDER BY queued_at": "referrals_state",  # `in_state`
}
#: The Teams messages a delivery queues for the referrer.
REFERRER = conversation_ref("a:personal-referrer")


async def _delivery(db: Database, clock: ManualClock) -> None:
    """What `DeliveryWorker` asks of the stores for one mail, in its order."""
    referrals, outbox, messages = ReferralStore(db), Outbox(db), MessageOutbox(db)
    referral = a_referral("VD-20261201-DELIVR", at=clock.now())
    await referrals.add(referral)
    await outbox.enqueue(message_id=referral.message_id, reference=referral.reference, payload=b"mail",
                         now=clock.now())
    item, _more_due = await outbox.claim_one(clock.now(), LEASE)
    assert item is not None
    assert await referrals.by_message_id(item.message_id) is not None
    async with db.transaction():
        await outbox.mark_delivered(item, clock.now())
        found = await referrals.by_message_id(item.message_id)
        assert found is not None
        sent = await referrals.transition(found.reference, ReferralState.SENT, sent_at=clock.now())
        await messages.post(REFERRER, MessageContent(text="verstuurd"), now=clock.now(), reference=sent.reference)
        assert await OcmwLinks(db).for_protocol(sent.protocol_id) is not None
        await ProcessingRegister(db).append(at=clock.now(), event=RegisterEvent.DELIVERED, actor_id="bot:delivery",
                                            actor_name="bot", protocol_id=sent.protocol_id, reference=sent.reference)
    await outbox.next_due_at()
    assert [r.reference for r in await referrals.in_state(ReferralState.SENT)]


async def _teams_messages(db: Database, clock: ManualClock) -> None:
    """What `MessageDeliveryWorker` asks of the message outbox for the messages due."""
    messages = MessageOutbox(db)
    for message in await messages.claim_due(clock.now(), LEASE):
        await messages.mark_sent(message, clock.now(), activity_id=f"activity-{message.id}")
    await messages.next_due_at()
    await messages.next_due_in_turn()  # after a claim that took nothing


async def test_every_lookup_of_a_delivery_and_of_the_reminder_pass_uses_an_index(
    database: Database, clock: ManualClock
) -> None:
    await seed(database)
    log = StatementLog(database)
    try:
        with log.recording("reminder pass"):
            for moment in (TUESDAY, THURSDAY):
                clock.current = moment
                assert await service(database, clock).run_due() > 0
        with log.recording("delivery"):
            await _delivery(database, clock)
        with log.recording("Teams messages"):
            await _teams_messages(database, clock)
    finally:
        log.close()
    statements = list(log.seen.values())
    if database.is_postgres:  # what `register_append` reads inside the server
        statements.append(Statement("delivery", "SELECT seq, hash FROM register ORDER BY seq DESC LIMIT 1", ()))
    plans = [await explain(database, statement, seqscan=False) for statement in statements]
    reads = {plan.statement.path for plan in plans if plan.access and plan.access != ["no table read"]}
    assert reads == {"reminder pass", "delivery", "Teams messages"}, "each path was recorded and planned"
    lookups = {(plan.statement.key, table) for plan in plans for table in ("referrals", "outbox", "message_outbox",
                                                                             "reminders", "register")
               if any(access.startswith(f"{table}:") for access in plan.access)}
    assert {table for _, table in lookups} >= {"referrals", "outbox", "message_outbox", "reminders"}
    full = {f"{plan.statement.path}: {plan.statement.key}": plan.access for plan in plans if plan.full_scans}
    assert full == {}
    for fragment, index in REFERRALS_BY.items():
        chosen = [plan for plan in plans if fragment in plan.statement.key]
        assert chosen, fragment
        for plan in chosen:
            reached = [access for access in plan.access if access.startswith("referrals:") or "bitmap:" in access]
            assert any(index in access for access in reached), (plan.statement.key, plan.access)


async def test_a_lookup_without_an_index_is_found(database: Database) -> None:
    """The check above can fail: a lookup by a column no index covers is a full scan on both backends."""
    await ReferralStore(database).add(dataclasses.replace(a_referral("VD-20261201-NOINDX"), referrer_name="An"))
    log = StatementLog(database)
    try:
        with log.recording("made up"):
            await database.fetch_all("SELECT * FROM referrals WHERE referrer_name = :name", {"name": "An"})
    finally:
        log.close()
    [statement] = log.seen.values()
    plan = await explain(database, statement, seqscan=False)
    assert plan.full_scans == ["referrals"], plan.access
