"""The referral store's contract, on SQLite and PostgreSQL: records kept as written, state changes only
along `TRANSITIONS`, and two instances acting on one referral at once take turns (compare-and-set)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from bot.core.sent_referrals import OPEN_FOR_OCMW, TRANSITIONS, IllegalTransition, ReferralState, ReferralStore
from bot.storage.database import Database
from tests.support.databases import another_engine, sql, sqlite_database
from tests.support.stored_referrals import NOW, a_referral

MINUTE = dt.timedelta(minutes=1)
#: Long enough that the other instance's step is certainly waiting while a transaction holds the row.
HOLD = 0.02


@pytest.fixture
def store(database: Database) -> ReferralStore:
    return ReferralStore(database)


async def test_a_referral_reads_back_as_written(store: ReferralStore) -> None:
    written = a_referral("VD-20261128-AAAAAA", ReferralState.RECEIVED, card_activity_id="card-1",
                         sent_at=NOW + MINUTE, acknowledged_by_id="aad-ocmw-1", acknowledged_by="Olga",
                         acknowledged_at=NOW + 2 * MINUTE, reported_items=("phone", "email"),
                         data_categories=("identification:name", "contact:phone"), consent_version="2026-11-2",
                         recipient="OCMW Sint-Gillis-Waas <welzijnshuis@sint-gillis-waas.be>", sender_team="Team Waas")
    await store.add(written)
    assert await store.get(written.reference) == written
    assert await store.by_message_id(written.message_id) == written
    assert await store.get("VD-20261128-NOSUCH") is None and await store.by_message_id("<none@x>") is None
    unknown_categories = a_referral("VD-20261128-BBBBBB")
    await store.add(unknown_categories)
    again = await store.get(unknown_categories.reference)
    assert again is not None and again.data_categories is None and again.reported_items == ()


async def test_a_reference_is_recorded_once(store: ReferralStore) -> None:
    await store.add(a_referral("VD-20261128-AAAAAA"))
    with pytest.raises(IntegrityError):
        await store.add(a_referral("VD-20261128-AAAAAA"))


async def test_a_referral_walks_the_state_machine_with_its_facts(store: ReferralStore) -> None:
    reference = "VD-20261128-AAAAAA"
    await store.add(a_referral(reference))
    steps: list[tuple[ReferralState, dict[str, object]]] = [
        (ReferralState.SENT, {"sent_at": NOW + MINUTE}),
        (ReferralState.RECEIVED, {"acknowledged_by_id": "aad-ocmw-1", "acknowledged_at": NOW + 2 * MINUTE}),
        (ReferralState.UNREACHABLE, {"outcome_by": "Olga", "outcome_at": NOW + 3 * MINUTE}),
        (ReferralState.HELP_WANTED, {"outcome_at": NOW + 4 * MINUTE}),
        (ReferralState.CONSENT_WITHDRAWN, {"withdrawn_by": "An Verpleeg", "withdrawn_at": NOW + 5 * MINUTE}),
        (ReferralState.DATA_DELETED, {"deleted_by": "Olga", "deleted_at": NOW + 6 * MINUTE}),
    ]
    for state, changes in steps:
        returned = await store.transition(reference, state, **changes)
        assert await store.get(reference) == returned
        assert returned.state == state and all(getattr(returned, name) == value for name, value in changes.items())
    final = await store.get(reference)
    assert final is not None and final.sent_at == NOW + MINUTE and final.outcome_by == "Olga"


async def test_every_step_the_table_allows_is_taken_and_every_other_is_refused(store: ReferralStore) -> None:
    pairs = [(source, target) for source in ReferralState for target in ReferralState]
    for number, (source, _) in enumerate(pairs):
        await store.add(a_referral(f"VD-20261128-{number:06d}", source))
    for number, (source, target) in enumerate(pairs):
        reference = f"VD-20261128-{number:06d}"
        if target in TRANSITIONS[source]:
            assert (await store.transition(reference, target)).state == target
        else:
            with pytest.raises(IllegalTransition) as refused:
                await store.transition(reference, target)
            assert refused.value.current == source
        stored = await store.get(reference)
        assert stored is not None and stored.state == (target if target in TRANSITIONS[source] else source)


async def test_what_is_not_a_state_change_is_refused_or_unknown(store: ReferralStore) -> None:
    await store.add(a_referral("VD-20261128-AAAAAA"))
    with pytest.raises(ValueError, match="transition"):
        await store.update("VD-20261128-AAAAAA", state=ReferralState.SENT)
    with pytest.raises(KeyError):
        await store.transition("VD-20261128-NOSUCH", ReferralState.SENT)
    with pytest.raises(KeyError):
        await store.update("VD-20261128-NOSUCH", card_activity_id="x")
    with pytest.raises(KeyError):
        await store.update("VD-20261128-NOSUCH")
    assert await store.update("VD-20261128-AAAAAA") == await store.get("VD-20261128-AAAAAA")


async def test_a_step_or_a_fact_is_one_statement_that_returns_the_referral_as_stored(
        store: ReferralStore, database: Database) -> None:
    """Before, each was a read and a write of every column: two statements, the second one long. The one
    statement is still a compare-and-set on the states the step may start from."""
    reference = "VD-20261128-AAAAAA"
    await store.add(a_referral(reference))
    statements: list[str] = []

    def record(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        if not statement.startswith(("BEGIN", "COMMIT")):
            statements.append(" ".join(statement.split()))

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    try:
        sent = await store.transition(reference, ReferralState.SENT, sent_at=NOW + MINUTE)
        moved = await store.update(reference, card_activity_id="card-2")
        async with database.transaction():
            received = await store.transition(reference, ReferralState.RECEIVED, acknowledged_by="Olga")
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)
    assert len(statements) == 3 and all(statement.startswith("UPDATE referrals") for statement in statements), \
        statements
    assert (sent.state, sent.sent_at, sent.card_activity_id) == (ReferralState.SENT, NOW + MINUTE, None)
    assert (moved.state, moved.card_activity_id) == (ReferralState.SENT, "card-2")
    assert received == await store.get(reference)
    assert (received.sent_at, received.card_activity_id, received.acknowledged_by) == (NOW + MINUTE, "card-2", "Olga")
    with pytest.raises(TypeError, match="no_such_column"):
        await store.update(reference, no_such_column="x")


async def test_a_step_whose_referral_reaches_a_state_it_may_start_from_meanwhile_is_taken(tmp_path: Path) -> None:
    """The update found the referral still queued; before it is read again to say why, another instance
    delivered it: the acknowledgement is taken, not refused with a state that allows it."""
    db = await sqlite_database(tmp_path / "bot.sqlite3")
    store = ReferralStore(db)
    await store.add(a_referral("VD-20261128-AAAAAA"))
    updates: list[int] = []

    def deliver_meanwhile(_connection: object, cursor: Any, statement: str, *_: object) -> None:
        if statement.startswith("UPDATE referrals"):
            updates.append(cursor.rowcount)
            if len(updates) == 1:  # another instance, on the file, after the first update and before the read
                sql(db, "UPDATE referrals SET state = 'sent' WHERE reference = 'VD-20261128-AAAAAA'")

    event.listen(db.engine.sync_engine, "after_cursor_execute", deliver_meanwhile)
    try:
        received = await store.transition("VD-20261128-AAAAAA", ReferralState.RECEIVED, acknowledged_by="Olga")
    finally:
        event.remove(db.engine.sync_engine, "after_cursor_execute", deliver_meanwhile)
    assert updates == [0, 1]
    assert (received.state, received.acknowledged_by) == (ReferralState.RECEIVED, "Olga")
    with pytest.raises(IllegalTransition) as refused:
        await store.transition("VD-20261128-AAAAAA", ReferralState.SENT)
    assert refused.value.current == ReferralState.RECEIVED


# --- two instances at once ------------------------------------------------------------------------


async def test_two_instances_taking_conflicting_steps_at_once_one_wins(database: Database) -> None:
    """Delivered by one instance, given up by the other at the same moment: sent or failed, never both."""
    first, second = ReferralStore(database), ReferralStore(another_engine(database))
    references = [f"VD-20261128-{number:06d}" for number in range(10)]
    for reference in references:
        await first.add(a_referral(reference))

    async def step(store: ReferralStore, reference: str, to: ReferralState) -> ReferralState | None:
        try:
            return (await store.transition(reference, to)).state
        except IllegalTransition:
            return None

    outcomes = await asyncio.gather(*(
        asyncio.gather(step(first, reference, ReferralState.SENT), step(second, reference, ReferralState.FAILED))
        for reference in references))
    for reference, (sent, failed) in zip(references, outcomes, strict=True):
        assert (sent is None) != (failed is None), (reference, sent, failed)
        stored = await first.get(reference)
        assert stored is not None and stored.state == (sent or failed)


async def test_inside_transactions_the_second_instance_sees_the_first_ones_step(database: Database) -> None:
    """Each step in its own transaction, held open a moment: the other waits, then finds the new state."""
    engines = (database, another_engine(database))
    reference = "VD-20261128-AAAAAA"
    await ReferralStore(database).add(a_referral(reference, ReferralState.SENT))

    async def acknowledge(db: Database) -> bool:
        try:
            async with db.transaction():
                await ReferralStore(db).transition(reference, ReferralState.RECEIVED, acknowledged_by=db.dialect)
                await asyncio.sleep(HOLD)
        except IllegalTransition as refused:
            assert refused.current == ReferralState.RECEIVED
            return False
        return True

    assert sorted(await asyncio.gather(*(acknowledge(db) for db in engines))) == [False, True]


@pytest.mark.parametrize("in_transaction", [True, False], ids=["in-transactions", "single-calls"])
async def test_two_instances_updating_different_facts_at_once_both_keep_theirs(
    database: Database, in_transaction: bool
) -> None:
    """The OCMW reports an item while the referrer's card gets a new id: neither change overwrites the other."""
    first, second = database, another_engine(database)
    references = [f"VD-20261128-{number:06d}" for number in range(3 if in_transaction else 10)]
    for reference in references:
        await ReferralStore(first).add(a_referral(reference, ReferralState.RECEIVED))

    async def update(db: Database, reference: str, **changes: object) -> None:
        if not in_transaction:
            await ReferralStore(db).update(reference, **changes)
            return
        async with db.transaction():
            await ReferralStore(db).update(reference, **changes)
            await asyncio.sleep(HOLD)

    await asyncio.gather(*(
        coroutine for reference in references for coroutine in (
            update(first, reference, card_activity_id=f"card-{reference}"),
            update(second, reference, reported_items=("phone",)))))
    for reference in references:
        stored = await ReferralStore(first).get(reference)
        assert stored is not None
        assert (stored.card_activity_id, stored.reported_items) == (f"card-{reference}", ("phone",)), reference


# --- lookups --------------------------------------------------------------------------------------


async def test_a_referrers_referrals_newest_first(store: ReferralStore) -> None:
    for number in range(4):
        await store.add(a_referral(f"VD-20261128-MINE{number:02d}", at=NOW + number * MINUTE))
    await store.add(dataclasses.replace(a_referral("VD-20261128-OTHER1"), referrer_id="aad-other"))
    mine = await store.for_referrer("aad-referrer-1")
    assert [r.reference for r in mine] == [f"VD-20261128-MINE{number:02d}" for number in (3, 2, 1, 0)]
    assert [r.reference for r in await store.for_referrer("aad-referrer-1", limit=2)] == [
        "VD-20261128-MINE03", "VD-20261128-MINE02"]
    assert await store.for_referrer("aad-nobody") == []
    assert (await store.count_for_referrer("aad-referrer-1"), await store.count_for_referrer("aad-nobody")) == (4, 0)


async def test_a_referrers_open_referrals_come_before_the_closed_ones(store: ReferralStore) -> None:
    """The status card shows the first 30: an old referral still waiting for the OCMW is not among those left out."""
    states = (ReferralState.NO_HELP_WANTED, ReferralState.DATA_DELETED, ReferralState.CONSENT_WITHDRAWN,
              ReferralState.FAILED, ReferralState.QUEUED, ReferralState.DATA_DELETED)
    for number, state in enumerate(states):
        await store.add(a_referral(f"VD-20261128-MINE{number:02d}", state, at=NOW + number * MINUTE))
    assert [r.reference[-2:] for r in await store.for_referrer("aad-referrer-1")] == ["04", "02", "00", "05", "03",
                                                                                       "01"]
    assert [r.reference[-2:] for r in await store.for_referrer("aad-referrer-1", limit=3)] == ["04", "02", "00"]


async def test_what_a_protocols_ocmw_still_has_to_act_on_oldest_first(store: ReferralStore) -> None:
    for number, state in enumerate(ReferralState):
        await store.add(a_referral(f"VD-20261128-STATE{number}", state, at=NOW - number * MINUTE))
    await store.add(a_referral("VD-20261128-ELSEWH", ReferralState.SENT, protocol_id="OR-OTHER"))
    open_ones = await store.open_for_protocol("OR-KG-NOW-OCMW-SGW-2026")
    assert {r.state for r in open_ones} == OPEN_FOR_OCMW
    assert [r.queued_at for r in open_ones] == sorted(r.queued_at for r in open_ones)
    everything = await store.for_protocol("OR-KG-NOW-OCMW-SGW-2026")
    assert len(everything) == len(ReferralState) and [r.queued_at for r in everything] == sorted(
        r.queued_at for r in everything)
    assert [r.reference for r in await store.open_for_protocol("OR-OTHER")] == ["VD-20261128-ELSEWH"]


async def test_states_and_versions(store: ReferralStore) -> None:
    root = "VD-20261128-AAAAAA"
    await store.add(a_referral(root, ReferralState.DATA_DELETED))
    await store.add(a_referral(f"{root}-3", ReferralState.SENT, parent_reference=root, at=NOW + 2 * MINUTE))
    await store.add(a_referral(f"{root}-2", ReferralState.RECEIVED, parent_reference=root, at=NOW + MINUTE))
    await store.add(a_referral("VD-20261128-BBBBBB", ReferralState.SENT, at=NOW - MINUTE))
    await store.add(a_referral("VD-20261128-CCCCCC", ReferralState.DATA_DELETED, at=NOW + 3 * MINUTE))

    assert [r.reference for r in await store.versions_of(root)] == [f"{root}-2", f"{root}-3"]
    assert await store.versions_of("VD-20261128-BBBBBB") == []
    assert [r.reference for r in await store.in_state(ReferralState.SENT)] == ["VD-20261128-BBBBBB", f"{root}-3"]
    assert [r.reference for r in await store.in_states(frozenset({ReferralState.SENT, ReferralState.RECEIVED}))] == [
        "VD-20261128-BBBBBB", f"{root}-2", f"{root}-3"]
    assert await store.in_state(ReferralState.FAILED) == []
    assert sorted(await store.message_ids_with_versions(root)) == sorted(
        f"<{reference}@doorverwijzen.example>" for reference in (root, f"{root}-2", f"{root}-3"))
    assert await store.message_ids_with_versions("VD-20261128-BBBBBB") == ["<VD-20261128-BBBBBB@doorverwijzen.example>"]
    assert sorted(await store.deleted_message_ids()) == sorted(
        f"<{reference}@doorverwijzen.example>" for reference in (root, f"{root}-2", f"{root}-3", "VD-20261128-CCCCCC"))


@pytest.mark.parametrize(
    ("recipient", "mailbox"),
    [
        ("OCMW Sint-Gillis-Waas <welzijnshuis@sint-gillis-waas.be>", "welzijnshuis@sint-gillis-waas.be"),
        ("OCMW <Waas> <onthaal@waas.be>", "onthaal@waas.be"),
        ("", ""),  # queued before referrals recorded it: the cards fall back to the protocol's mailbox
    ],
)
def test_the_mailbox_a_referral_was_sent_to_is_read_from_its_recipient(recipient: str, mailbox: str) -> None:
    assert a_referral("VD-20261128-K7M2QX", recipient=recipient).sent_to_mailbox == mailbox
