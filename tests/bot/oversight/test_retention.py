"""Retention over the real app with the manual clock: each table pruned at its moment and not before,
each prune in the register, and the register itself cut from the start with `verify` still meaningful.

At the end, the same prune on both backends over records the stores wrote: the same rows go, with
the same register entries, on SQLite and on PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import shutil
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.app import create_app, sweep_drafts
from bot.cli.register import add_register_commands, run_register_command
from bot.config import Settings
from bot.core.protocols import ProtocolRegistry, load_protocol_file
from bot.core.sent_referrals import ReferralState, ReferralStore
from bot.delivery.chat_messages import MessageContent
from bot.delivery.mail_message import OutgoingMail
from bot.delivery.mail_outbox import Outbox
from bot.delivery.mail_transport import OutboxFolderTransport
from bot.delivery.message_outbox import MessageOutbox
from bot.evidence.register import ProcessingRegister, RegisterEvent
from bot.ocmw.links import OcmwLink, OcmwLinks
from bot.oversight.retention import Pruned, RetentionService
from bot.referral.drafts import DraftState, DraftStore
from bot.secrets.draft_cipher import DraftCipher
from bot.storage.database import Database, to_text
from tests.conftest import REPLIES_SHOWN_AT_ONCE
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import draft_id_of, texts
from tests.support.clock import ManualClock
from tests.support.keyvault_provider import until
from tests.support.ocmw_flow import confirm_deletion, correct_phone, link, ocmw_worker, send_and_deliver
from tests.support.referral_flow import CLIENT_VALUES, PROTOCOL_ID, open_consent, reach_review
from tests.support.sample_referral import PROTOCOL_FILE
from tests.support.stored_referrals import NOW, a_referral, conversation_ref

SHIPPED = Settings().protocols_dir / "sint-gillis-waas.toml"
DAY = dt.timedelta(days=1)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def protocol_file(tmp_path: Path) -> Path:
    folder = tmp_path / "protocols"
    folder.mkdir()
    shutil.copy(SHIPPED, folder / SHIPPED.name)
    return folder / SHIPPED.name


@pytest.fixture
def settings(tmp_path: Path, protocol_file: Path) -> Settings:
    return Settings.from_mapping({
        **REPLIES_SHOWN_AT_ONCE,
        "BOT_DATA_DIR": str(tmp_path / "data"),
        "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD",
        "PROTOCOLS_DIR": str(protocol_file.parent),
    })


def set_retention(path: Path, table: str, *, ends_on: str | None = None) -> None:
    """Write the protocol file with another `[retention]` table (and an end date)."""
    text = SHIPPED.read_text().split("\n[retention]", 1)[0] + "\n[retention]\n" + table
    if ends_on:
        text = text.replace("# ends_on = 2027-03-01", f"ends_on = {ends_on}")
    path.write_text(text)


def count(settings: Settings, sql: str, *parameters: object) -> int:
    """One number from the bot's database, read beside it."""
    with sqlite3.connect(settings.database_path) as db:
        return int(db.execute(sql, parameters).fetchone()[0])


def rows_about(settings: Settings, reference: str) -> dict[str, int]:
    """What the bot keeps about a referral and its versions, per table."""
    like = f"{reference}%"
    return {
        "referrals": count(settings, "SELECT COUNT(*) FROM referrals WHERE reference LIKE ?", like),
        "corrections": count(settings, "SELECT COUNT(*) FROM corrections WHERE reference LIKE ?", like),
        "outbox": count(settings, "SELECT COUNT(*) FROM outbox WHERE reference LIKE ?", like),
        "message_outbox": count(settings, "SELECT COUNT(*) FROM message_outbox WHERE reference LIKE ?", like),
        "card_slots": count(settings, "SELECT COUNT(*) FROM card_slots WHERE slot LIKE ?", f"ocmw:{like}"),
        "reminders": count(settings, "SELECT COUNT(*) FROM reminders WHERE subject LIKE ? OR subject IN"
                                     " (SELECT id FROM corrections WHERE reference LIKE ?)", like, like),
    }


def retention_entries(settings: Settings) -> list[sqlite3.Row]:
    with sqlite3.connect(settings.database_path) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM register WHERE event = 'retention_pruned' ORDER BY seq").fetchall()


def tables(pruned: list[Pruned]) -> list[tuple[str, str, int]]:
    return [(p.table, p.protocol_id, p.count) for p in pruned]


def names(pruned: list[Pruned]) -> set[str]:
    return {p.table for p in pruned}


async def deleted_referral(bot: BotDriver, referrer: TeamsUser, *, corrected: bool = False) -> str:
    """A referral delivered, (corrected once,) acknowledged, "no help wanted", and its deletion confirmed."""
    await link(bot, ocmw_worker())
    reference, worker = await send_and_deliver(bot, referrer)
    if corrected:
        await correct_phone(bot, referrer, worker, reference)
    await confirm_deletion(bot, worker, reference)
    await bot.settle()
    return reference


# --- referrals ----------------------------------------------------------------------------------

async def test_a_referral_goes_90_days_after_its_last_step_with_all_that_is_kept_about_it(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock
) -> None:
    reference = await deleted_referral(bot, referrer, corrected=True)
    kept = rows_about(settings, reference)
    assert kept["referrals"] == 2 and kept["corrections"] == 1 and kept["card_slots"] == 2, kept
    assert await bot.services.retention.prune() == []

    clock.advance(90 * DAY - MINUTE)
    assert "referrals" not in names(await bot.services.retention.prune())  # the draft's tombstone and the code went
    assert rows_about(settings, reference) == kept

    clock.advance(2 * MINUTE)
    assert tables(await bot.services.retention.prune()) == [("referrals", PROTOCOL_ID, 2)]
    assert set(rows_about(settings, reference).values()) == {0}
    [entry] = [entry for entry in retention_entries(settings) if entry["detail"].startswith("table=referrals")]
    assert (entry["actor_id"], entry["protocol_id"], entry["reference"]) == ("bot:retention", PROTOCOL_ID, "")
    assert entry["detail"] == (
        f"table=referrals; count=2; with corrections 1, outbox {kept['outbox']}, message_outbox "
        f"{kept['message_outbox']}, card_slots 2, reminders 0; rule=90 days after closure (data_deleted, failed)")
    assert "deletion_confirmed" in await bot.services.register.events_for(reference), "the register keeps the proof"
    assert await bot.services.register.verify() == []
    assert not any(value in entry["detail"] for value in CLIENT_VALUES)

    [status] = await bot.say(referrer, "status")
    assert reference not in texts(status)
    late = await bot.banner(ocmw_worker(), "referral.deleted", {"reference": reference})
    assert reference in late and "niet gevonden" in late, "a late click is told, its card left as it was"


async def test_the_reminders_about_a_referral_go_with_it(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock
) -> None:
    """A reminder's row names the referral (or a correction request of it) it was about: it goes with it."""
    await link(bot, ocmw_worker())
    reference, worker = await send_and_deliver(bot, referrer)
    clock.advance(7 * DAY)  # past 2 and 4 working days: the OCMW, then the referrer, reminded of the receipt
    assert await bot.services.reminders.run_due() == 2
    await bot.act(worker, "ack.receive", {"reference": reference})
    await bot.act(worker, "referral.quality", {"reference": reference, "item": "phone"})
    clock.advance(7 * DAY)  # the referrer reminded of the correction the OCMW asked for
    assert await bot.services.reminders.run_due() >= 1
    await confirm_deletion(bot, worker, reference)
    await bot.settle()
    kept = rows_about(settings, reference)
    assert kept["reminders"] >= 3 and kept["corrections"] == 1, kept

    clock.advance(91 * DAY)
    [pruned] = [p for p in await bot.services.retention.prune() if p.table == "referrals"]
    assert f"reminders {kept['reminders']};" in pruned.detail
    assert set(rows_about(settings, reference).values()) == {0}, "nothing about it has no end"
    assert count(settings, "SELECT COUNT(*) FROM reminders") == 0


@pytest.mark.parametrize("outcome", ["contact_no_help_wanted", "unreachable"])
async def test_a_referral_the_ocmw_still_has_to_delete_is_kept(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock, outcome: str
) -> None:
    await link(bot, ocmw_worker())
    reference, worker = await send_and_deliver(bot, referrer)
    await bot.act(worker, "ack.receive", {"reference": reference})
    await bot.act_confirmed(worker, "referral.outcome", {"reference": reference, "outcome": outcome})
    await bot.settle()
    assert (await bot.services.referrals.get(reference)).state == outcome.removeprefix("contact_")  # type: ignore[union-attr]
    clock.advance(400 * DAY)
    assert "referrals" not in names(await bot.services.retention.prune())
    assert rows_about(settings, reference)["referrals"] == 1


async def test_help_wanted_is_kept_until_the_ocmw_confirms_the_shared_mailbox_is_emptied(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock
) -> None:
    await link(bot, ocmw_worker())
    reference, worker = await send_and_deliver(bot, referrer)
    await bot.act(worker, "ack.receive", {"reference": reference})
    await bot.act(worker, "referral.outcome", {"reference": reference, "outcome": "contact_help_wanted"})
    await bot.settle()
    clock.advance(91 * DAY)
    await bot.services.retention.prune()
    assert rows_about(settings, reference)["referrals"] == 1, "still owed: the OCMW's confirmation"
    await bot.act_confirmed(worker, "referral.deleted", {"reference": reference})
    await bot.settle()
    clock.advance(91 * DAY)
    await bot.services.retention.prune()
    assert rows_about(settings, reference)["referrals"] == 0


async def test_a_shorter_period_in_the_protocol_file_applies(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock, protocol_file: Path
) -> None:
    set_retention(protocol_file, "referral_days_after_closure = 30\n")
    reference = await deleted_referral(bot, referrer)
    clock.advance(29 * DAY)
    assert "referrals" not in names(await bot.services.retention.prune())
    clock.advance(2 * DAY)
    assert tables(await bot.services.retention.prune()) == [("referrals", PROTOCOL_ID, 1)]
    assert rows_about(settings, reference)["referrals"] == 0
    assert "rule=30 days after closure" in retention_entries(settings)[-1]["detail"]


async def test_a_referral_that_failed_goes_90_days_later_under_its_ended_protocol(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock, protocol_file: Path
) -> None:
    set_retention(protocol_file, "referral_days_after_closure = 60\n", ends_on="2026-11-28")
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    clock.advance(DAY)  # the mail could not leave before the protocol ended
    await bot.deliver()
    [reference] = _references(settings)
    assert (await bot.services.referrals.get(reference)).state == "failed"  # type: ignore[union-attr]
    clock.advance(60 * DAY - MINUTE)
    await bot.services.retention.prune()
    assert rows_about(settings, reference)["referrals"] == 1
    clock.advance(2 * MINUTE)
    assert ("referrals", PROTOCOL_ID, 1) in tables(await bot.services.retention.prune())
    assert rows_about(settings, reference) == dict.fromkeys(rows_about(settings, reference), 0)


def _references(settings: Settings) -> list[str]:
    with sqlite3.connect(settings.database_path) as db:
        return [row[0] for row in db.execute("SELECT reference FROM referrals")]


# --- drafts, pairing codes, links, leftovers -------------------------------------------------------

async def test_draft_tombstones_go_after_tombstone_days_per_protocol(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock, protocol_file: Path
) -> None:
    set_retention(protocol_file, "tombstone_days = 2\n")
    consent = await open_consent(bot, referrer)
    draft_without_protocol = draft_id_of(consent)
    await bot.act(referrer, "referral.cancel", {"draftId": draft_without_protocol})
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act_confirmed(referrer, "referral.cancel", {"draftId": draft_id})
    assert count(settings, "SELECT COUNT(*) FROM drafts") == 2

    clock.advance(2 * DAY - MINUTE)
    assert await bot.services.retention.prune() == []
    clock.advance(2 * MINUTE)
    assert tables(await bot.services.retention.prune()) == [("drafts", PROTOCOL_ID, 1)]
    assert await bot.services.drafts.get(draft_id) is None
    assert await bot.services.drafts.get(draft_without_protocol) is not None
    clock.advance(5 * DAY)  # the default week for a draft cancelled before an OCMW was chosen
    assert tables(await bot.services.retention.prune()) == [("drafts", "-", 1)]
    assert count(settings, "SELECT COUNT(*) FROM drafts") == 0
    assert [entry["detail"] for entry in retention_entries(settings)] == [
        "table=drafts; count=1; rule=2 days after the draft ended",
        "table=drafts; count=1; rule=7 days after the draft ended",
    ]


async def test_a_pairing_code_goes_a_week_after_it_expired(
    bot: BotDriver, settings: Settings, clock: ManualClock
) -> None:
    await bot.services.links.new_code(PROTOCOL_ID, clock.now())
    clock.advance(DAY + 7 * DAY - MINUTE)  # valid 24 hours, then kept a week
    assert await bot.services.retention.prune() == []
    clock.advance(2 * MINUTE)
    assert tables(await bot.services.retention.prune()) == [("pairing_codes", PROTOCOL_ID, 1)]
    assert count(settings, "SELECT COUNT(*) FROM pairing_codes") == 0
    [entry] = retention_entries(settings)
    assert entry["detail"] == "table=pairing_codes; count=1; rule=7 days after the code expired"


async def test_the_ocmw_link_goes_once_its_protocol_ended_and_none_of_its_referrals_is_kept(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock, protocol_file: Path
) -> None:
    await deleted_referral(bot, referrer)
    clock.advance(10 * DAY)
    assert "ocmw_links" not in names(await bot.services.retention.prune()), "the protocol is in force: the link stays"
    set_retention(protocol_file, "", ends_on="2026-12-31")
    bot.services.protocols.reload_if_changed()  # what the periodic job does
    clock.advance(60 * DAY)
    assert await bot.services.retention.prune() == [], "ended, but its referral is still kept"
    assert count(settings, "SELECT COUNT(*) FROM ocmw_links") == 1
    clock.advance(21 * DAY)
    pruned = tables(await bot.services.retention.prune())
    assert pruned == [("referrals", PROTOCOL_ID, 1), ("ocmw_links", PROTOCOL_ID, 1)]
    assert count(settings, "SELECT COUNT(*) FROM ocmw_links") == 0


async def test_an_expired_drafts_card_message_goes_a_week_after_it_was_sent(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock
) -> None:
    await reach_review(bot, referrer)
    clock.advance(31 * MINUTE)
    await sweep_drafts(bot.services.drafts, bot.services.messages, clock)
    await bot.settle()
    assert count(settings, "SELECT COUNT(*) FROM message_outbox WHERE reference IS NULL AND state = 'sent'") == 1
    clock.advance(7 * DAY - MINUTE)
    assert await bot.services.retention.prune() == []
    clock.advance(2 * MINUTE)
    assert tables(await bot.services.retention.prune()) == [("drafts", PROTOCOL_ID, 1), ("message_outbox", "-", 1)]
    assert count(settings, "SELECT COUNT(*) FROM message_outbox") == 0


# --- the register ---------------------------------------------------------------------------------

async def _verify_line(settings: Settings, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_register_commands(parser.add_subparsers(dest="command"))
    status = await asyncio.to_thread(run_register_command, parser.parse_args(["register", "verify"]), settings)
    return status, capsys.readouterr().out


async def test_register_entries_go_five_years_after_they_were_written_and_verify_still_holds(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reference = await deleted_referral(bot, referrer)
    written = await bot.services.register.count()
    clock.advance(91 * DAY)
    await bot.services.retention.prune()  # the referral goes; its register entries stay
    assert len(await bot.services.register.events_for(reference)) > 5

    clock.current = dt.datetime(2031, 11, 28, 8, 59, tzinfo=dt.UTC)  # five years less a minute
    assert await bot.services.retention.prune() == []
    clock.advance(2 * MINUTE)
    [pruned] = await bot.services.retention.prune()
    assert (pruned.table, pruned.count) == ("register", written)
    assert await bot.services.register.events_for(reference) == []
    assert await bot.services.register.verify() == []
    status, out = await _verify_line(settings, capsys)
    assert status == 0 and f"entries up to {written} removed under the retention periods" in out
    [anchor] = [entry for entry in retention_entries(settings) if entry["detail"].startswith("table=register")]
    assert anchor["detail"].startswith(f"table=register; count={written}; seq=1-{written}; last_hash=")
    assert "rule=written longer ago than their protocol's register_years (5 years:" in anchor["detail"]

    with sqlite3.connect(settings.database_path) as db:
        first = db.execute("SELECT MIN(seq) FROM register").fetchone()[0]
        db.execute("UPDATE register SET actor_name = 'Iemand Anders' WHERE seq = ?", (first,))
    status, out = await _verify_line(settings, capsys)
    assert status == 1 and out.startswith(f"seq {first}: altered")
    with sqlite3.connect(settings.database_path) as db:
        db.execute("DELETE FROM register WHERE seq = ?", (first,))
    status, out = await _verify_line(settings, capsys)
    assert status == 1 and f"seq {first + 1}: removed: entries before it are missing: {first}" in out


async def test_the_proof_behind_a_referral_still_kept_stays_past_five_years(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock
) -> None:
    await link(bot, ocmw_worker())
    reference, _ = await send_and_deliver(bot, referrer)  # never acknowledged: kept as long as it is open
    before = await bot.services.register.events_for(reference)
    clock.current = dt.datetime(2032, 1, 1, tzinfo=dt.UTC)
    pruned = await bot.services.retention.prune()
    assert [p.count for p in pruned if p.table == "register"] == [1], "only the link's entry, written before it"
    assert await bot.services.register.events_for(reference) == before
    assert await bot.services.register.verify() == []


async def test_the_running_bot_prunes_by_itself(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    app = create_app(settings, clock=clock, run_worker=False)
    async with running_bot(app) as bot:
        draft_id, _ = await reach_review(bot, referrer)
        await bot.act_confirmed(referrer, "referral.cancel", {"draftId": draft_id})
    later = dataclasses.replace(clock, current=clock.current + 8 * DAY)
    async with running_bot(create_app(settings, clock=later)) as bot:  # the job runs at start, then hourly
        await until(lambda: count(settings, "SELECT COUNT(*) FROM drafts") == 0, 5, "the tombstone pruned")
        assert retention_entries(settings)[-1]["detail"] == "table=drafts; count=1; rule=7 days after the draft ended"


# --- the same prune on both backends, over records the stores wrote ---------------------------------

GONE = "VD-20261128-GONEAA"  # deleted by the OCMW, with a correction version: goes after 90 days
KEPT = "VD-20261128-OPENBB"  # received, no outcome yet: kept
HELD = "VD-20261128-HELDCC"  # failed, but a Teams message about it is still on its way
ENDED_PROTOCOL = "OR-ENDED-OCMW"  # its file is gone, no referral of it is kept: its link goes
ORPHANED = "VD-20261001-ORPHAN"  # a reminder row an earlier version kept after its referral went: a week after
LEFT_OVER = 3  # a delivered breach report's mail, a draft's card message and its slot: a week after


async def _mail(copies: OutboxFolderTransport, outbox: Outbox, reference: str, message_id: str) -> None:
    """A mail queued, sent (its copy kept in the folder) and marked delivered."""
    assert await outbox.enqueue(message_id=message_id, reference=reference, payload=b"zip", now=NOW)
    [item] = await outbox.claim_due(NOW, dt.timedelta(minutes=5))
    await copies.send(OutgoingMail.from_bytes(f"Message-ID: {message_id}\r\n\r\nzip\r\n".encode()))
    assert await outbox.mark_delivered(item, NOW)


async def _seed(db: Database, copies: OutboxFolderTransport, tmp_path: Path) -> MessageOutbox:
    referrals, register, outbox, messages, links = (ReferralStore(db), ProcessingRegister(db), Outbox(db),
                                                   MessageOutbox(db), OcmwLinks(db))
    root = a_referral(GONE, ReferralState.DATA_DELETED)
    for referral in (root, a_referral(f"{GONE}-2", ReferralState.DATA_DELETED, parent_reference=GONE),
                     a_referral(KEPT, ReferralState.RECEIVED), a_referral(HELD, ReferralState.FAILED)):
        await referrals.add(referral)
        await _mail(copies, outbox, referral.reference, referral.message_id)
        await register.append(at=NOW, event=RegisterEvent.DELIVERED, actor_id="bot:delivery", actor_name="bot",
                              protocol_id=referral.protocol_id, reference=referral.reference)
    await db.execute(  # the OCMW asked for the phone number again (bot.ocmw.corrections writes this row)
        "INSERT INTO corrections (id, reference, item, requested_by_id, requested_by, requested_at)"
        " VALUES ('c-1', :reference, 'phone', 'aad-ocmw-1', 'Olga', :at)", {"reference": GONE, "at": to_text(NOW)})
    card = await messages.post(conversation_ref("19:ocmw@thread.tacv2"), MessageContent(text="kaart"), now=NOW,
                               reference=GONE, slot=f"ocmw:{GONE}")
    draft_card = await messages.post(conversation_ref("a:personal-referrer"), MessageContent(text="verlopen"),
                                     now=NOW, slot="draft:d-1")
    for sent in await messages.claim_due(NOW, dt.timedelta(minutes=5)):
        assert sent.id in (card, draft_card)
        assert await messages.mark_sent(sent, NOW, activity_id=f"act-{sent.id}")
    await messages.post(conversation_ref("a:personal-referrer"), MessageContent(text="mislukt"), now=NOW,
                        reference=HELD)
    for subject, kind in ((GONE, "ack_ocmw"), ("c-1", "correction_referrer"), (KEPT, "outcome_ocmw"),
                          (ORPHANED, "ack_ocmw")):  # the reminders (bot.ocmw.reminders writes these rows)
        await db.execute("INSERT INTO reminders (subject, kind, at) VALUES (:subject, :kind, :at)",
                         {"subject": subject, "kind": kind, "at": to_text(NOW)})
    await _mail(copies, outbox, "DL-20261128-AAAA", "<DL-20261128-AAAA@doorverwijzen.example>")

    drafts = DraftStore(db, DraftCipher.from_key_file(tmp_path / "draft.key"), dt.timedelta(minutes=30))
    assert await drafts.close(await drafts.create("u", "c", NOW, NOW.date()), DraftState.CANCELLED, NOW)
    await links.new_code(PROTOCOL_ID, NOW)
    for protocol in (PROTOCOL_ID, ENDED_PROTOCOL):
        link = OcmwLink(protocol, f"19:{protocol}@thread.tacv2", "{}", "aad-ocmw-1", "Olga", NOW)
        assert await links.link(await links.new_code(protocol, NOW), link, NOW)
    return messages


async def test_the_same_rows_go_with_the_same_register_entries_on_both_backends(
    database: Database, tmp_path: Path
) -> None:
    copies = OutboxFolderTransport(tmp_path / "sent")
    messages = await _seed(database, copies, tmp_path)
    clock = ManualClock(NOW)
    register = ProcessingRegister(database)
    retention = RetentionService(db=database, registry=ProtocolRegistry([load_protocol_file(PROTOCOL_FILE)]),
                                 register=register, copies=copies, clock=clock, timezone=ZoneInfo("Europe/Brussels"))
    assert tables(await retention.prune()) == [("ocmw_links", ENDED_PROTOCOL, 1)], "at once"

    clock.advance(91 * DAY)
    pruned = await retention.prune()
    assert tables(pruned) == [
        ("referrals", PROTOCOL_ID, 2), ("drafts", "-", 1), ("pairing_codes", PROTOCOL_ID, 2),
        ("pairing_codes", "-", 1), ("message_outbox", "-", 1), ("outbox", "-", 1), ("card_slots", "-", 1),
        ("reminders", "-", 1)]
    assert pruned[0].detail == ("table=referrals; count=2; with corrections 1, outbox 2, message_outbox 1, "
                                "card_slots 1, reminders 2; rule=90 days after closure (data_deleted, failed)")
    remaining = {table: await database.scalar(f"SELECT COUNT(*) AS n FROM {table}")  # noqa: S608 - test's own names
                 for table in ("referrals", "corrections", "outbox", "message_outbox", "card_slots", "drafts",
                               "pairing_codes", "ocmw_links", "reminders")}
    assert remaining == {"referrals": 2, "corrections": 0, "outbox": 2, "message_outbox": 1, "card_slots": 0,
                         "drafts": 0, "pairing_codes": 0, "ocmw_links": 1, "reminders": 1}
    assert await database.scalar("SELECT subject FROM reminders") == KEPT
    assert sorted(path.name for path in (tmp_path / "sent").iterdir()) == [
        f"{HELD}@doorverwijzen.example.eml", f"{KEPT}@doorverwijzen.example.eml"
    ], "the referral's mail copies went with it, and the breach report's with its outbox row"
    assert await register.verify() == []
    assert [entry["detail"].split(";")[0] for entry in await register.export_protocol(PROTOCOL_ID)][-2:] == [
        "table=referrals", "table=pairing_codes"]

    [held] = await messages.claim_due(clock.now(), dt.timedelta(minutes=5))  # the message about it goes out
    assert await messages.mark_sent(held, clock.now(), activity_id=None)
    assert tables(await retention.prune()) == [("referrals", PROTOCOL_ID, 1)]

    clock.current = NOW.replace(year=NOW.year + 5) + DAY
    [entries] = await retention.prune()  # up to the first entry about a referral still kept
    assert (entries.table, entries.count) == ("register", 2), "the entries about the deleted referral and version"
    assert await register.events_for(GONE) == [] and await register.events_for(KEPT) == ["delivered"]
    assert await register.verify() == []
