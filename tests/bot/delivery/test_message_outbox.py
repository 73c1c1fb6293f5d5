"""The Teams-message outbox's contract, on SQLite and PostgreSQL: queued with the step that causes it,
leased while sent, in order per conversation (also with two instances claiming at once), card slots
that remember what Teams posted, and what status and `check` see."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import event

from bot.delivery.chat_messages import MessageContent, conversation_key
from bot.delivery.message_outbox import MessageAction, MessageOutbox, QueuedMessage, StuckMessages
from bot.delivery.outbox_due import NextDue
from bot.storage.database import Database, to_text
from tests.support.databases import (
    SUBQUERY_RUN_PER_ROW,
    another_engine,
    postgres_database,
    set_session_defaults,
    statements_and_transactions,
)
from tests.support.postgres_server import PostgresServer
from tests.support.query_plans import StatementLog, buffers_read
from tests.support.stored_referrals import NOW, conversation_ref

LEASE = dt.timedelta(minutes=5)
SECOND = dt.timedelta(seconds=1)
CHANNEL = "19:ocmw-welzijnshuis@thread.tacv2"
REFERRER = conversation_ref("a:personal-referrer")
CARD = {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "VD-20261128-AAAAAA"}]}


def text(words: str) -> MessageContent:
    return MessageContent(text=words)


def ids(messages: list[QueuedMessage]) -> list[int]:
    return [message.id for message in messages]


async def test_a_message_is_queued_with_the_step_and_the_worker_woken_after_the_commit(database: Database) -> None:
    outbox, woken = MessageOutbox(database), []
    outbox.on_queued = lambda: woken.append("worker")
    async with database.transaction():
        card = await outbox.post(REFERRER, MessageContent(card=CARD), now=NOW, reference="VD-20261128-AAAAAA")
        note = await outbox.post(conversation_ref(CHANNEL), text("herinnering"), now=NOW)
        assert woken == []
    assert woken == ["worker", "worker"] and note > card
    outbox.on_queued_later = lambda: woken.append("read when due")
    await outbox.post(REFERRER, text("straks"), now=NOW, not_before=NOW + SECOND)
    await outbox.post(REFERRER, text("nu"), now=NOW, not_before=NOW)
    assert woken[2:] == ["read when due", "worker"], "queued for later, the worker reads; due now, it claims"
    with pytest.raises(ValueError, match="names the message or its slot"):
        await outbox.update(REFERRER, text("x"), now=NOW)
    with pytest.raises(ValueError, match="names the message or its slot"):
        await outbox.update(REFERRER, text("x"), now=NOW, activity_id="a", slot="s")
    first, second = await outbox.claim_due(NOW, LEASE)  # the two queued since wait behind the card
    assert (first.id, first.action, first.content, first.reference, first.attempts, first.queued_at) == (
        card, MessageAction.POST, MessageContent(card=CARD), "VD-20261128-AAAAAA", 1, NOW)
    assert (second.id, second.content) == (note, text("herinnering"))
    assert second.conversation_ref == conversation_ref(CHANNEL)


async def test_a_queued_step_rolled_back_queues_nothing(database: Database) -> None:
    outbox = MessageOutbox(database)
    with pytest.raises(RuntimeError):
        async with database.transaction():
            await outbox.post(REFERRER, text("bevestigd"), now=NOW)
            raise RuntimeError("the step failed")
    assert await outbox.counts() == {} and await outbox.next_due_at() is None


async def test_a_lease_keeps_a_message_from_every_other_claimer_until_it_runs_out(database: Database) -> None:
    mine, other = MessageOutbox(database), MessageOutbox(another_engine(database))
    queued = await mine.post(REFERRER, text("ontvangen"), now=NOW)
    assert ids(await mine.claim_due(NOW, LEASE)) == [queued]
    assert await mine.next_due_at() == NOW + LEASE
    assert await other.claim_due(NOW + LEASE - SECOND, LEASE) == []
    [again] = await other.claim_due(NOW + LEASE + SECOND, LEASE)  # the worker that held it died
    assert (again.id, again.attempts) == (queued, 2)


async def test_a_start_that_alone_can_send_queues_a_cut_off_message_again_at_once(database: Database) -> None:
    """`requeue_cut_off` (SQLite, at start): a message left "sending" is due now, its lease not waited out, and
    the conversation's next one waits behind it again; a message sent is not touched."""
    outbox = MessageOutbox(database)
    sent = await outbox.post(conversation_ref(CHANNEL), text("kaart"), now=NOW)
    cut_off = await outbox.post(REFERRER, text("verstuurd"), now=NOW)
    claimed = {message.id: message for message in await outbox.claim_due(NOW, LEASE)}
    assert await outbox.mark_sent(claimed[sent], NOW, activity_id="activity-1")
    following = await outbox.post(REFERRER, text("ontvangen"), now=NOW)
    assert await outbox.claim_due(NOW + SECOND, LEASE) == [], "the lease runs, and the next waits behind it"
    assert await outbox.requeue_cut_off() == 1
    [again] = await outbox.claim_due(NOW + SECOND, LEASE)
    assert (again.id, again.attempts) == (cut_off, 2)
    assert following != cut_off and await outbox.counts() == {"sent": 1, "sending": 1, "queued": 1}


async def test_a_claim_for_what_was_just_queued_leaves_the_expired_leases_to_the_next(database: Database) -> None:
    """The worker woken for a queued message claims without a read first; setting expired leases back
    to queued is left to the claims that follow a read of what is due, which sees a lease that ran out."""
    outbox = MessageOutbox(database)
    held = await outbox.post(REFERRER, text("ontvangen"), now=NOW)
    await outbox.claim_due(NOW, LEASE)  # its worker dies mid-send
    fresh = await outbox.post(conversation_ref(CHANNEL), text("nieuw"), now=NOW + LEASE)
    later = NOW + LEASE + SECOND
    with statements_and_transactions(database) as sent:
        assert ids(await outbox.claim_due(later, LEASE, expired_leases=False)) == [fresh]
    assert sent == ["WITH"], "the claim (its rows picked, then leased), no look at expired leases"
    due = await outbox.next_due()
    assert due.at == NOW + LEASE and due.lease_ran_out(later), "the expired lease is due: a read sees it"
    [again] = await outbox.claim_due(later, LEASE)
    assert (again.id, again.attempts) == (held, 2)


async def test_a_claim_is_one_statement_on_its_own(database: Database) -> None:
    """A claim was a transaction: BEGIN, the read of the first due message of each conversation, their lease,
    COMMIT; on PostgreSQL four round trips for every Teams message the bot sends (five after a read: the
    expired leases first). Now one statement, in the database's autocommit, leases them and returns them as
    they are then (the attempt counted); with expired leases looked at first, that look is a statement before it."""
    outbox = MessageOutbox(database)
    first = await outbox.post(REFERRER, text("verstuurd"), now=NOW)
    await outbox.post(REFERRER, text("ontvangen"), now=NOW)  # waits behind the first
    other = await outbox.post(conversation_ref(CHANNEL), MessageContent(card=CARD), now=NOW)
    with statements_and_transactions(database) as sent:
        claimed = await outbox.claim_due(NOW, LEASE, expired_leases=False)
    assert sent == ["WITH"], "one statement: the rows picked, then leased"
    assert [(message.id, message.attempts, message.lease_until) for message in claimed] == [
        (first, 1, NOW + LEASE), (other, 1, NOW + LEASE)]
    assert claimed[1].content == MessageContent(card=CARD)
    later = NOW + LEASE + SECOND  # both leases ran out
    with statements_and_transactions(database) as sent:
        again = await outbox.claim_due(later, LEASE)
    assert sent == ["UPDATE", "WITH"], "the expired leases, then the claim: no transaction around them"
    assert [(message.id, message.attempts) for message in again] == [(first, 2), (other, 2)]


async def test_a_claim_leases_no_more_messages_than_asked_whatever_plan_the_server_chooses(
        postgres: PostgresServer) -> None:
    """As the mail outbox's claim (`test_a_claim_leases_no_more_mails_than_asked_...`): where the server runs the
    claim's subquery again for every row it could change, it leased more messages than the worker sends at once.
    The messages are picked once, before the update."""
    db = await postgres_database(postgres)
    outbox = MessageOutbox(db)
    for number in range(30):
        await outbox.post(conversation_ref(f"a:personal-{number}"), text("verstuurd"), now=NOW)
    await set_session_defaults(postgres, db, SUBQUERY_RUN_PER_ROW)
    assert len(await outbox.claim_due(NOW, LEASE, limit=2)) == 2
    assert await outbox.counts() == {"sending": 2, "queued": 28}


async def test_messages_to_one_conversation_go_in_the_order_they_were_queued(database: Database) -> None:
    outbox = MessageOutbox(database)
    thread = conversation_ref(f"{CHANNEL};messageid=1700000000001")  # a thread of the channel: the same conversation
    first = await outbox.post(conversation_ref(CHANNEL), text("1"), now=NOW)
    second = await outbox.post(thread, text("2"), now=NOW)
    elsewhere = await outbox.post(REFERRER, text("a"), now=NOW)
    third = await outbox.post(conversation_ref(CHANNEL), text("3"), now=NOW)

    leased = await outbox.claim_due(NOW, LEASE)
    assert ids(leased) == [first, elsewhere]
    assert await outbox.claim_due(NOW, LEASE) == [], "the second waits while the first is being sent"
    assert await outbox.reschedule(leased[0], NOW + dt.timedelta(minutes=1), "429 throttled")
    assert await outbox.claim_due(NOW + SECOND, LEASE) == [], "and while the first waits for its retry"
    [retried] = await outbox.claim_due(NOW + dt.timedelta(minutes=1), LEASE)
    assert retried.id == first
    assert await outbox.mark_sent(retried, NOW + dt.timedelta(minutes=1), activity_id="act-1")
    [next_one] = await outbox.claim_due(NOW + dt.timedelta(minutes=1), LEASE)
    assert next_one.id == second
    assert await outbox.mark_failed(next_one, NOW + dt.timedelta(minutes=2), "403 bot removed")
    assert ids(await outbox.claim_due(NOW + dt.timedelta(minutes=2), LEASE)) == [third], "given up: no longer holds"


async def test_the_next_message_in_turn_is_each_conversations_first_waiting_one(database: Database) -> None:
    """What the worker sleeps on after a claim that took nothing: a message behind an earlier one to its
    conversation is not due until that one went, whatever its own time; one queued for later is due then."""
    outbox = MessageOutbox(database)
    assert await outbox.next_due_in_turn() == NextDue()
    first = await outbox.post(REFERRER, text("1"), now=NOW)
    await outbox.post(REFERRER, text("2"), now=NOW)
    [leased] = await outbox.claim_due(NOW, LEASE)
    assert leased.id == first
    assert await outbox.next_due_in_turn() == NextDue(None, NOW + LEASE), "the first is being sent: its lease's end"
    assert await outbox.reschedule(leased, NOW + dt.timedelta(minutes=1), "429 throttled")
    assert await outbox.next_due_in_turn() == NextDue(NOW + dt.timedelta(minutes=1), None), "its retry, not 2's time"
    assert (await outbox.next_due()).at == NOW, "the plain read says now: 2's time"
    await outbox.post(conversation_ref(CHANNEL), text("a"), now=NOW, not_before=NOW + 2 * SECOND)
    assert await outbox.next_due_in_turn() == NextDue(NOW + 2 * SECOND, None), "queued for later: due then"
    [retried] = await outbox.claim_due(NOW + dt.timedelta(minutes=1), LEASE, limit=1)
    assert retried.id == first
    assert await outbox.mark_failed(retried, NOW + dt.timedelta(minutes=1), "403 bot removed")
    assert await outbox.next_due_in_turn() == NextDue(NOW, None), "given up: the next one is first in turn"


async def test_two_instances_claiming_at_once_keep_each_conversations_order(database: Database) -> None:
    """Three conversations of four messages each, claimed in rounds by two engines at once: first things first."""
    engines = (MessageOutbox(database), MessageOutbox(another_engine(database)))
    queued: dict[str, list[int]] = {}
    for round_number in range(4):
        for conversation in ("a:one", "a:two", "a:three"):
            queued.setdefault(conversation, []).append(
                await engines[0].post(conversation_ref(conversation), text(str(round_number)), now=NOW))
    conversation_of = {message: conversation for conversation, messages in queued.items() for message in messages}
    sent: dict[str, list[int]] = {conversation: [] for conversation in queued}
    for _ in range(4):
        claimed = [message for batch in await asyncio.gather(*(outbox.claim_due(NOW, LEASE) for outbox in engines))
                   for message in batch]
        assert sorted(conversation_of[message.id] for message in claimed) == sorted(queued), \
            "one message per conversation per round, never two at once"
        for message in claimed:
            sent[conversation_of[message.id]].append(message.id)
            assert await engines[1].mark_sent(message, NOW, activity_id=None)
    assert sent == queued
    assert await engines[0].counts() == {"sent": 12}


async def test_a_mark_made_after_its_lease_ran_out_and_another_claim_took_the_message_changes_nothing(
        database: Database, caplog: pytest.LogCaptureFixture) -> None:
    """A worker paused past its lease (GC, a frozen VM) marks a message another instance took over: whether that
    one is still sending it or has sent it, the late mark is dropped, not written over its lease or its 'sent'
    (before, a late reschedule put a sent message, its content wiped, back in the queue)."""
    mine, other = MessageOutbox(database), MessageOutbox(another_engine(database))
    await mine.post(conversation_ref(CHANNEL), MessageContent(card=CARD), now=NOW, slot="ocmw:VD-20261128-AAAAAA")
    [late] = await mine.claim_due(NOW, LEASE)
    [taken] = await other.claim_due(NOW + LEASE + SECOND, LEASE)

    async def late_marks() -> list[bool]:
        return [await mine.reschedule(late, NOW + LEASE, "429 throttled"), await mine.repost(late, NOW + LEASE),
                await mine.mark_failed(late, NOW + LEASE, "403 bot removed"),
                await mine.mark_sent(late, NOW + LEASE, activity_id="act-late")]

    assert await late_marks() == [False] * 4, "while the other instance sends it"
    row = await database.fetch_one("SELECT state, content, lease_until FROM message_outbox")
    assert row is not None
    assert (row["state"], MessageContent.from_json(row["content"]), row["lease_until"]) == (
        "sending", MessageContent(card=CARD), to_text(taken.lease_until))
    assert await other.mark_sent(taken, NOW + LEASE + SECOND, activity_id="act-1")
    assert await late_marks() == [False] * 4, "once it sent it"
    row = await database.fetch_one("SELECT state, content FROM message_outbox")
    assert row is not None and (row["state"], row["content"]) == ("sent", "")
    assert await mine.slot_activity_id("ocmw:VD-20261128-AAAAAA") == "act-1"
    assert await mine.next_due_at() is None
    assert "VD-20261128-AAAAAA" not in caplog.text and "came after its lease ran out" in caplog.text


async def test_a_card_slot_keeps_what_teams_posted_and_edits_follow_it(database: Database) -> None:
    outbox, slot = MessageOutbox(database), "ocmw:VD-20261128-AAAAAA"
    assert not await outbox.has_slot(slot)
    posted = await outbox.post(conversation_ref(CHANNEL), MessageContent(card=CARD), now=NOW, slot=slot)
    assert await outbox.has_slot(slot) and await outbox.slot_activity_id(slot) is None, "queued, not yet posted"
    [post] = await outbox.claim_due(NOW, LEASE)
    assert await outbox.mark_sent(post, NOW, activity_id="act-1")
    assert await outbox.slot_activity_id(slot) == "act-1"
    content = await database.scalar("SELECT content FROM message_outbox WHERE id = :id", {"id": posted})
    assert content == "", "a sent card's content (a review card's data) is not kept"

    edit = await outbox.update(conversation_ref(CHANNEL), text("ontvangen"), now=NOW, slot=slot)
    [update] = await outbox.claim_due(NOW, LEASE)
    assert (update.id, update.action, update.slot, update.activity_id) == (edit, MessageAction.UPDATE, slot, None)
    assert await outbox.repost(update, NOW + SECOND)  # the card was deleted in Teams: posted afresh
    [repost] = await outbox.claim_due(NOW + SECOND, LEASE)
    assert (repost.id, repost.action, repost.activity_id) == (edit, MessageAction.POST, None)
    assert await outbox.mark_sent(repost, NOW + SECOND, activity_id="act-2")
    assert await outbox.slot_activity_id(slot) == "act-2", "later edits go to the new card"

    by_id = await outbox.update(REFERRER, text("bijgewerkt"), now=NOW, activity_id="act-9")
    [direct] = await outbox.claim_due(NOW + SECOND, LEASE)
    assert (direct.id, direct.activity_id, direct.slot) == (by_id, "act-9", None)


async def test_a_card_is_missing_when_its_last_post_was_given_up_or_none_was_queued(database: Database) -> None:
    """What `koppel` again and the bot's return post again: a card Teams refused for good, or never got."""
    outbox = MessageOutbox(database)
    slots = {f"ocmw:VD-20261128-{tail}": f"VD-20261128-{tail}" for tail in ("AAAAAA", "BBBBBB", "CCCCCC", "DDDDDD")}
    refused, shown, waiting, never = slots
    for number, slot in enumerate((refused, shown, waiting)):  # a conversation each: claimed together
        await outbox.post(conversation_ref(f"19:channel-{number}@thread.tacv2"), MessageContent(card=CARD), now=NOW,
                          slot=slot, reference=slots[slot])
    first, second, _ = await outbox.claim_due(NOW, LEASE)
    assert await outbox.mark_failed(first, NOW, "HTTP 403")
    assert await outbox.mark_sent(second, NOW, activity_id="act-1")
    assert await outbox.cards_missing(slots) == {refused, never}
    assert await outbox.cards_missing({}) == set()

    # A later edit of the card refused finds no card to edit, so the worker posts it and keeps its id.
    await outbox.update(conversation_ref("19:channel-0@thread.tacv2"), MessageContent(card=CARD), now=NOW,
                        slot=refused, reference=slots[refused])
    [edit] = await outbox.claim_due(NOW + SECOND, LEASE)
    assert await outbox.mark_sent(edit, NOW + SECOND, activity_id="act-2")
    assert await outbox.cards_missing(slots) == {never}


async def test_a_card_is_behind_when_its_last_edit_was_given_up_after_it_was_shown(database: Database) -> None:
    """The bot out of the OCMW's team: the card is there, its edit (a withdrawal) refused for good. Back in the team,
    the edit is queued again; a card whose last edit went through, or is still on its way, is not behind."""
    outbox = MessageOutbox(database)
    slots = {f"ocmw:VD-20261128-{tail}": f"VD-20261128-{tail}" for tail in ("AAAAAA", "BBBBBB", "CCCCCC")}
    refused, edited, waiting = slots
    channels = {slot: conversation_ref(f"19:channel-{number}@thread.tacv2") for number, slot in enumerate(slots)}
    for slot in slots:
        await outbox.post(channels[slot], MessageContent(card=CARD), now=NOW, slot=slot, reference=slots[slot])
    for post in await outbox.claim_due(NOW, LEASE):
        assert await outbox.mark_sent(post, NOW, activity_id=f"act-{post.id}")
    for slot in (refused, edited):
        await outbox.update(channels[slot], MessageContent(card=CARD), now=NOW, slot=slot, reference=slots[slot])
    first, second = await outbox.claim_due(NOW, LEASE)
    assert await outbox.mark_failed(first, NOW, "HTTP 403")  # the same instant as the post: order is by id
    assert await outbox.mark_sent(second, NOW, activity_id="act-2")
    await outbox.update(channels[waiting], MessageContent(card=CARD), now=NOW, slot=waiting, reference=slots[waiting])
    assert await outbox.cards_behind(slots) == {refused}
    assert await outbox.cards_missing(slots) == set(), "the card is there: edited again, not posted again"
    assert await outbox.cards_behind({}) == set()

    await outbox.update(channels[refused], MessageContent(card=CARD), now=NOW, slot=refused, reference=slots[refused])
    [again] = [message for message in await outbox.claim_due(NOW + SECOND, LEASE) if message.slot == refused]
    assert await outbox.mark_sent(again, NOW + SECOND, activity_id="act-1")
    assert await outbox.cards_behind(slots) == set()


async def test_what_status_and_check_see(database: Database) -> None:
    outbox = MessageOutbox(database)
    await outbox.post(REFERRER, text("1"), now=NOW - dt.timedelta(days=10), reference="VD-OLD")
    [given_up] = await outbox.claim_due(NOW - dt.timedelta(days=10), LEASE)
    assert await outbox.mark_failed(given_up, NOW - dt.timedelta(days=8), "gave up")
    await outbox.post(conversation_ref("a:two"), text("2"), now=NOW - dt.timedelta(hours=2), reference="VD-RECENT")
    await outbox.post(conversation_ref("a:three"), text("3"), now=NOW - dt.timedelta(hours=3))
    recent, waiting = sorted(await outbox.claim_due(NOW - dt.timedelta(hours=2), LEASE), key=lambda m: m.queued_at,
                             reverse=True)
    assert await outbox.mark_failed(recent, NOW - dt.timedelta(hours=1), "403")
    assert await outbox.reschedule(waiting, NOW + dt.timedelta(minutes=10), "503")
    await outbox.post(conversation_ref("a:four"), text("4"), now=NOW - dt.timedelta(minutes=1))

    assert await outbox.stuck(NOW, dt.timedelta(hours=1)) == StuckMessages(1, 1, NOW - dt.timedelta(hours=3))
    assert await outbox.stuck(NOW, dt.timedelta(hours=1), dt.timedelta(days=30)) == StuckMessages(
        2, 1, NOW - dt.timedelta(hours=3))
    assert await outbox.stuck(NOW, dt.timedelta(days=1)) == StuckMessages(1, 0, None)
    assert await outbox.given_up_for(["VD-RECENT", "VD-OLD", "VD-NONE"]) == {"VD-RECENT", "VD-OLD"}
    assert await outbox.given_up_for([]) == set()
    assert await outbox.counts() == {"failed": 2, "queued": 2}
    assert await outbox.next_due_at() == NOW - dt.timedelta(minutes=1)


async def test_the_claim_and_the_next_due_time_stay_cheap_between_vacuums(postgres: PostgresServer) -> None:
    """Each message passes through three states, and each change leaves a dead entry in the indexes it is
    in until a vacuum comes. The claim and "when is the next one due" reached the few waiting messages
    through an index of every state's entries, in bitmap scans that read every dead one each time (and
    never mark them): at 20 000 messages sent since the last vacuum, 455 and ~800 buffers per call, a
    claim costing 4-7 ms on PostgreSQL under two instances' load (`benchmarks.instances --statements`).
    Through indexes of the waiting messages only, in index scans that mark what they find dead, the
    cost stays small (a fresh table, no statistics yet: as between autovacuum's passes)."""
    db = await postgres_database(postgres)
    await db.execute("ALTER TABLE message_outbox SET (autovacuum_enabled = off)")
    await db.execute(
        "INSERT INTO message_outbox (conversation_key, conversation_ref, action, content, state, queued_at,"
        " next_attempt_at, attempts) SELECT CASE WHEN g % 3 = 0 THEN :channel ELSE 'personal-' || (g % 500) END,"
        " '{}', 'post', '', 'queued', :now, :now, 0 FROM generate_series(1, 20000) AS g",
        {"channel": conversation_key(conversation_ref(CHANNEL)), "now": to_text(NOW)})
    await db.execute("UPDATE message_outbox SET state = 'sending', lease_until = :until", {"until": to_text(NOW)})
    await db.execute("UPDATE message_outbox SET state = 'sent', lease_until = NULL")
    outbox = MessageOutbox(db)
    await outbox.post(conversation_ref(CHANNEL), text("de volgende"), now=NOW)
    await outbox.post(REFERRER, text("verstuurd"), now=NOW)
    log = StatementLog(db)
    try:
        for _ in range(2):  # the first run of each statement meets the dead entries unmarked
            with log.recording("work"):
                claimed = await outbox.claim_due(NOW, LEASE)
                assert len(claimed) == 2
                await outbox.next_due_at()
                await outbox.next_due_in_turn()
            await db.execute("UPDATE message_outbox SET state = 'queued', lease_until = NULL WHERE content <> ''")
    finally:
        log.close()
    claim = next(statement for statement in log.seen.values() if "attempts = attempts + 1" in statement.sql)
    next_due = next(statement for statement in log.seen.values() if statement.sql.lstrip().startswith("SELECT"))
    # Before: 486-605 and ~800, most of them heap pages visited for every dead entry. Now the claim walks
    # the waiting index (its dead entries' pages, once marked, without the heap: ~400 at 40 000 dead
    # entries, 0.2 ms) and the next due time reads a few pages.
    in_turn = next(statement for statement in log.seen.values() if "AS first" in statement.sql)
    assert await buffers_read(db, claim) <= 450
    assert await buffers_read(db, next_due) <= 100
    # Asked after a claim that took nothing, it walks the waiting conversations as the claim does (322).
    assert await buffers_read(db, in_turn) <= 450


async def test_a_claim_reads_each_conversations_first_message_not_its_whole_backlog(postgres: PostgresServer) -> None:
    """All referrals' cards go to the one OCMW channel, in order, one at a time. When a backlog builds up
    there (the benchmark's 64 referrals a second; in production, Teams down for an hour), every claim
    read every waiting message of it and looked, for each, for an earlier one: 800 waiting cards made a
    claim ~5 400 buffers and 5-9 ms (`auto_explain` under `benchmarks.instances`), so draining a
    backlog of n cost n^2. A claim needs only each conversation's first waiting message."""
    db = await postgres_database(postgres)
    channel = conversation_key(conversation_ref(CHANNEL))
    await db.execute(
        "INSERT INTO message_outbox (conversation_key, conversation_ref, action, content, state, queued_at,"
        " next_attempt_at, attempts) SELECT :channel, '{}', 'post', '{\"text\": \"x\"}', 'queued', :now, :now, 0"
        " FROM generate_series(1, 3000)", {"channel": channel, "now": to_text(NOW)})  # no ANALYZE yet, as under load
    outbox = MessageOutbox(db)
    elsewhere = await outbox.post(REFERRER, text("verstuurd"), now=NOW)
    log = StatementLog(db)
    try:
        with log.recording("claim"):
            first = await outbox.claim_due(NOW, LEASE)
    finally:
        log.close()
    head = await db.scalar("SELECT MIN(id) FROM message_outbox WHERE conversation_key = :key", {"key": channel})
    assert ids(first) == [head, elsewhere]
    [claim] = [statement for statement in log.seen.values() if "attempts = attempts + 1" in statement.sql]
    assert await outbox.mark_sent(first[0], NOW, activity_id=None)
    # The claim now leases in the same statement: its count includes the new row versions and their index
    # entries (~10 buffers), which the separate UPDATE wrote before.
    assert await buffers_read(db, claim) <= 130, "the next claim, with 2 999 cards waiting behind the first"
    assert ids(await outbox.claim_due(NOW, LEASE)) == [head + 1]


async def test_a_message_sent_without_a_card_slot_is_recorded_in_one_statement_without_a_transaction(
        database: Database) -> None:
    """One UPDATE (the fact kept, the content wiped) needs no transaction of its own: before, two per referral
    (BEGIN, the UPDATE, COMMIT). With a card slot it is two statements, still committed together."""
    outbox = MessageOutbox(database)
    plain = await outbox.post(conversation_ref(CHANNEL), text("ontvangen"), now=NOW)
    card = await outbox.post(conversation_ref("19:referrer-chat"), text("kaart"), now=NOW, slot="slot-1")
    leased = await outbox.claim_due(NOW, LEASE)
    assert ids(leased) == [plain, card]
    statements: list[str] = []
    commits: list[int] = []

    def record(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement.lstrip()[:6].upper())

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    event.listen(database.engine.sync_engine, "commit", lambda _connection: commits.append(1))
    assert await outbox.mark_sent(leased[0], NOW, activity_id="act-1")
    assert (statements, commits) == (["UPDATE"], [])
    statements.clear()
    assert await outbox.mark_sent(leased[1], NOW, activity_id="act-2")
    assert (statements, commits) == (["UPDATE", "INSERT"], [1])
    rows = await database.fetch_all("SELECT state, content FROM message_outbox ORDER BY id")
    assert [(row["state"], row["content"]) for row in rows] == [("sent", ""), ("sent", "")]
    assert await database.scalar("SELECT activity_id FROM card_slots WHERE slot = 'slot-1'") == "act-2"


async def test_a_message_whose_stored_content_cannot_be_read_is_given_up_and_holds_no_one_back(
    database: Database,
) -> None:
    """One damaged row (an older version, a hand edit) made every claim of its batch fail: the messages leased
    with it never went out, and it came back first after every lease, for ever."""
    outbox = MessageOutbox(database)
    damaged = await outbox.post(REFERRER, text("kapot"), now=NOW)
    await database.execute("UPDATE message_outbox SET content = '{not json' WHERE id = :id", {"id": damaged})
    other = await outbox.post(conversation_ref(CHANNEL), text("andere"), now=NOW)
    assert ids(await outbox.claim_due(NOW, LEASE)) == [other]
    row = await database.fetch_one("SELECT state, content, last_error FROM message_outbox WHERE id = :id",
                                   {"id": damaged})
    assert row is not None and (row["state"], row["content"]) == ("failed", "")
    assert "unreadable" in str(row["last_error"])
    assert (await outbox.stuck(NOW, dt.timedelta(minutes=15))).given_up == 1, "counted by `check` as given up"


async def test_a_claim_whose_give_up_of_a_damaged_message_fails_still_returns_the_others(database: Database) -> None:
    """A claim is one statement, committed before the damaged message it leased is given up in another: when that
    second statement failed (the database gone for a moment), the claim raised and the messages it had leased
    stayed unsent until their lease ran out. They go out; the damaged one is given up by the claim after its
    lease (`requeue_expired_leases`), as before."""
    outbox = MessageOutbox(database)
    damaged = await outbox.post(REFERRER, text("kapot"), now=NOW)
    await database.execute("UPDATE message_outbox SET content = '{not json' WHERE id = :id", {"id": damaged})
    other = await outbox.post(conversation_ref(CHANNEL), text("andere"), now=NOW)

    def refuse_the_give_up(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("UPDATE message_outbox SET state = ") and "WHERE id IN" in statement:
            raise OSError("connection reset while giving up")

    event.listen(database.engine.sync_engine, "before_cursor_execute", refuse_the_give_up)
    try:
        assert ids(await outbox.claim_due(NOW, LEASE)) == [other]
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", refuse_the_give_up)
    assert await outbox.counts() == {"sending": 2}
    assert ids(await outbox.claim_due(NOW + LEASE + SECOND, LEASE)) == [other], "the lease ran out: due again"
    assert await outbox.counts() == {"failed": 1, "sending": 1}
