"""The reminder pass on SQLite and PostgreSQL: the same reminders, at the same moments, from the same
records; and two passes at once on two instances queue each reminder once.

Seeded with the stores (referrals, the OCMW link, the message outbox); one correction request is a
row of its own, as `bot.ocmw.corrections` writes it. Every wait starts on Friday 27 November 2026 at
10:00 in Brussels, with reminders after 2 working days (the OCMW: Tuesday) and 4 (the referrer: Thursday).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Container
from zoneinfo import ZoneInfo

import pytest

from bot.core.protocols import ProtocolRegistry, load_protocol_file
from bot.core.sent_referrals import ReferralState, ReferralStore, SentReferral
from bot.delivery.message_outbox import MessageOutbox
from bot.ocmw.links import OcmwLink, OcmwLinks
from bot.ocmw.reminders import ReminderService
from bot.ocmw.working_days import belgian_public_holidays
from bot.storage.database import Database, to_text
from tests.support.activities import BOT_ID, TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.card_reading import actions
from tests.support.clock import ManualClock
from tests.support.databases import another_engine
from tests.support.ocmw_flow import link, send_and_deliver
from tests.support.sample_referral import PROTOCOL_FILE
from tests.support.stored_referrals import a_referral, conversation_ref

BRUSSELS = ZoneInfo("Europe/Brussels")
FRIDAY = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
TUESDAY = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)  # Friday + 2 working days, to the minute
THURSDAY = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)  # Friday + 4 working days
CHANNEL = "19:ocmw-welzijnshuis@thread.tacv2"
MINUTE = dt.timedelta(minutes=1)
#: What each pass queues: (subject, kind), the subject a reference or a correction request's id.
AT_TUESDAY = {
    ("VD-20261127-SENTAA", "ack_ocmw"), ("VD-20261127-ACKEDB", "outcome_ocmw"),
    ("VD-20261127-ACKEDC", "outcome_ocmw"), ("VD-20261127-ACKEDC-2", "ack_ocmw"),
    ("VD-20261127-HELPDD", "deletion_ocmw"), ("VD-20261127-WITHDE", "deletion_ocmw"),
    ("correction-1", "correction_referrer"),
}
AT_THURSDAY = {(subject, kind.replace("_ocmw", "_referrer")) for subject, kind in AT_TUESDAY} - {
    ("correction-1", "correction_referrer")}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(FRIDAY)


async def seed(db: Database) -> None:
    """Every kind of wait, all begun on Friday; a referral closed and one too young, which are never chased."""
    referrals = ReferralStore(db)
    for referral in (
        a_referral("VD-20261127-SENTAA", ReferralState.SENT, at=FRIDAY, sent_at=FRIDAY),
        a_referral("VD-20261127-ACKEDB", ReferralState.RECEIVED, at=FRIDAY, acknowledged_at=FRIDAY),
        a_referral("VD-20261127-ACKEDC", ReferralState.RECEIVED, at=FRIDAY, acknowledged_at=FRIDAY),
        a_referral("VD-20261127-ACKEDC-2", ReferralState.SENT, at=FRIDAY, sent_at=FRIDAY,
                   parent_reference="VD-20261127-ACKEDC"),
        a_referral("VD-20261127-HELPDD", ReferralState.HELP_WANTED, at=FRIDAY, outcome_at=FRIDAY),
        a_referral("VD-20261127-WITHDE", ReferralState.CONSENT_WITHDRAWN, at=FRIDAY, withdrawn_at=FRIDAY),
        a_referral("VD-20261127-CLOSED", ReferralState.DATA_DELETED, at=FRIDAY, deleted_at=FRIDAY),
        a_referral("VD-20261202-YOUNGR", ReferralState.SENT, at=FRIDAY + 5 * dt.timedelta(days=1),
                   sent_at=FRIDAY + 5 * dt.timedelta(days=1)),
    ):
        await referrals.add(referral)
    links = OcmwLinks(db)
    link = OcmwLink("OR-KG-NOW-OCMW-SGW-2026", CHANNEL, conversation_ref(CHANNEL), "aad-ocmw-1", "Olga", FRIDAY)
    assert await links.link(await links.new_code(link.protocol_id, FRIDAY), link, FRIDAY)
    await db.execute(  # a request for a correction of B's phone number (bot.ocmw.corrections.CorrectionService.request)
        "INSERT INTO corrections (id, reference, item, requested_by_id, requested_by, requested_at)"
        " VALUES ('correction-1', 'VD-20261127-ACKEDB', 'phone', 'aad-ocmw-1', 'Olga', :at)", {"at": to_text(FRIDAY)})
    await db.execute(  # and its card, which Teams showed in the referrer's chat
        "INSERT INTO card_slots (slot, activity_id, updated_at) VALUES ('correction:correction-1', 'act-1', :at)",
        {"at": to_text(FRIDAY)})


def service(db: Database, clock: ManualClock, **options: object) -> ReminderService:
    parts: dict[str, object] = {"links": OcmwLinks(db), "referrals": ReferralStore(db)} | options
    return ReminderService(db=db,  # type: ignore[arg-type]
                           registry=ProtocolRegistry([load_protocol_file(PROTOCOL_FILE)]), messages=MessageOutbox(db),
                           clock=clock, timezone=BRUSSELS, working_days=2, **parts)


async def reminded(db: Database) -> set[tuple[str, str]]:
    return {(row["subject"], row["kind"]) for row in await db.fetch_all("SELECT subject, kind FROM reminders")}


async def queued_to(db: Database) -> dict[str, int]:
    """Messages queued per conversation."""
    rows = await db.fetch_all("SELECT conversation_key, COUNT(*) AS n FROM message_outbox GROUP BY conversation_key")
    return {str(row["conversation_key"]): int(row["n"]) for row in rows}


async def test_each_reminder_is_queued_once_when_it_is_due(database: Database, clock: ManualClock) -> None:
    await seed(database)
    reminders = service(database, clock)
    clock.current = TUESDAY - MINUTE
    assert await reminders.run_due() == 0
    clock.current = TUESDAY
    assert await reminders.run_due() == len(AT_TUESDAY)
    assert await reminded(database) == AT_TUESDAY
    assert await queued_to(database) == {CHANNEL: 6, "a:personal-referrer": 1}
    assert await reminders.run_due() == 0, "once"

    clock.current = THURSDAY - MINUTE
    assert await reminders.run_due() == 0
    clock.current = THURSDAY
    assert await reminders.run_due() == len(AT_THURSDAY) + 1, "the referrer's turns, and the correction again"
    assert await reminded(database) == AT_TUESDAY | AT_THURSDAY
    assert await queued_to(database) == {CHANNEL: 6, "a:personal-referrer": 8}
    texts = [row["content"] for row in await database.fetch_all("SELECT content FROM message_outbox ORDER BY id")]
    assert sum("VD-20261127-SENTAA" in text for text in texts) == 2 and not any(
        reference in text for text in texts for reference in ("VD-20261127-CLOSED", "VD-20261202-YOUNGR"))
    assert await reminders.run_due() == 0


async def test_two_passes_at_once_on_two_instances_queue_each_reminder_once(
    database: Database, clock: ManualClock
) -> None:
    await seed(database)
    passes = (service(database, clock), service(another_engine(database), clock))
    for moment, expected in ((TUESDAY, len(AT_TUESDAY)), (THURSDAY, len(AT_THURSDAY) + 1)):
        clock.current = moment
        assert sum(await asyncio.gather(*(reminders.run_due() for reminders in passes))) == expected, moment
    assert await reminded(database) == AT_TUESDAY | AT_THURSDAY
    assert await queued_to(database) == {CHANNEL: 6, "a:personal-referrer": 8}


async def test_the_holiday_calendar_is_loaded_by_the_first_pass_in_a_thread(
        database: Database, clock: ManualClock) -> None:
    """The `holidays` package imports all of its ~250 countries to give Belgium's: ~75 ms of CPU, which
    was a tenth of the bot's start-up and would be a stall on the event loop. The first pass loads it, once,
    in a thread; the bot is ready without it."""
    loaded_on: list[threading.Thread] = []

    def calendar() -> Container[dt.date]:
        loaded_on.append(threading.current_thread())
        return belgian_public_holidays()

    await seed(database)
    reminders = service(database, clock, calendar=calendar)
    assert loaded_on == [], "not when the service is built (at start-up)"
    clock.current = TUESDAY
    assert await reminders.run_due() == len(AT_TUESDAY)
    assert await reminders.run_due() == 0
    assert len(loaded_on) == 1 and loaded_on[0] is not threading.main_thread()


def test_starting_the_bot_does_not_import_the_holiday_calendar() -> None:
    loaded = subprocess.run([sys.executable, "-c", "import sys, bot.cli.main; print('holidays' in sys.modules)"],
                            capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert loaded == "False"


class LinksWhileTheOcmwActs(OcmwLinks):
    """The OCMW's link, looked up by the pass between reading what waits and queuing its reminder; `meanwhile`
    runs (once) at that moment, as an OCMW worker's click committed then."""

    def __init__(self, db: Database, meanwhile: Callable[[], Awaitable[object]]) -> None:
        super().__init__(db)
        self._meanwhile: Callable[[], Awaitable[object]] | None = meanwhile

    async def for_protocol(self, protocol_id: str) -> OcmwLink | None:
        if self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            await meanwhile()
        return await super().for_protocol(protocol_id)


async def test_a_referral_acknowledged_while_the_pass_runs_is_not_reminded_as_unacknowledged(
    database: Database, clock: ManualClock
) -> None:
    referrals = ReferralStore(database)
    await referrals.add(a_referral("VD-20261127-SENTAA", ReferralState.SENT, at=FRIDAY, sent_at=FRIDAY))
    link = OcmwLink("OR-KG-NOW-OCMW-SGW-2026", CHANNEL, conversation_ref(CHANNEL), "aad-ocmw-1", "Olga", FRIDAY)
    links = OcmwLinks(database)
    assert await links.link(await links.new_code(link.protocol_id, FRIDAY), link, FRIDAY)

    async def acknowledge() -> object:
        async with database.transaction():
            return await referrals.transition("VD-20261127-SENTAA", ReferralState.RECEIVED, acknowledged_at=TUESDAY,
                                              acknowledged_by_id="aad-ocmw-1", acknowledged_by="Olga")

    reminders = service(database, clock, links=LinksWhileTheOcmwActs(database, acknowledge))
    clock.current = TUESDAY
    assert await reminders.run_due() == 0, "acknowledged before the reminder was queued"
    assert await reminded(database) == set()
    assert await queued_to(database) == {}


class ReferralsWhileTheReferrerActs(ReferralStore):
    """The referrals, read by the correction reminders between reading the open requests and queuing one;
    `meanwhile` runs (once) then, as the referrer's correction committed at that moment."""

    def __init__(self, db: Database, meanwhile: Callable[[], Awaitable[object]]) -> None:
        super().__init__(db)
        self._meanwhile: Callable[[], Awaitable[object]] | None = meanwhile

    async def get(self, reference: str) -> SentReferral | None:
        if self._meanwhile is not None and reference == "VD-20261127-ACKEDB":
            meanwhile, self._meanwhile = self._meanwhile, None
            await meanwhile()
        return await super().get(reference)


async def test_a_correction_sent_while_the_pass_runs_is_not_asked_for_again(
    database: Database, clock: ManualClock
) -> None:
    await seed(database)

    async def correction_sent() -> object:  # bot.ocmw.corrections: the request marked with its version
        return await database.execute("UPDATE corrections SET new_reference = 'VD-20261127-ACKEDB-2'"
                                      " WHERE id = 'correction-1'")

    reminders = service(database, clock, referrals=ReferralsWhileTheReferrerActs(database, correction_sent))
    clock.current = TUESDAY
    assert await reminders.run_due() == len(AT_TUESDAY) - 1
    assert await reminded(database) == AT_TUESDAY - {("correction-1", "correction_referrer")}


async def test_a_correction_is_not_asked_for_again_once_its_protocol_ended(database: Database) -> None:
    """After `ends_on` a correction is refused (a new transfer): the referrer is not chased to send one."""
    ended = dataclasses.replace(load_protocol_file(PROTOCOL_FILE), ends_on=FRIDAY.astimezone(BRUSSELS).date())
    await seed(database)
    reminders = ReminderService(db=database, referrals=ReferralStore(database), links=OcmwLinks(database),
                                registry=ProtocolRegistry([ended]), messages=MessageOutbox(database),
                                clock=ManualClock(TUESDAY), timezone=BRUSSELS, working_days=2)
    await reminders.run_due()
    assert ("correction-1", "correction_referrer") not in await reminded(database)
    assert ("VD-20261127-SENTAA", "ack_ocmw") in await reminded(database), "the OCMW is still chased: it holds data"


# -- the referrer's chat while the app is uninstalled, over HTTP ------------------------------------------


def _in_chat(bot: BotDriver, referrer: TeamsUser, since: int = 0) -> tuple[list[str], list[str]]:
    """What Teams showed in the referrer's chat after call `since`: the texts, and the correction ids offered."""
    here = f"/v3/conversations/{referrer.conversation_id}/"
    later = bot.connector.calls[since:]
    bodies = [call.body for call in bot.connector.accepted if call in later and call.path.startswith(here)]
    offered = [str(actions(attachment["content"])["correction.submit"]["correctionId"]) for body in bodies
               for attachment in body.get("attachments") or [] if "correction.submit" in actions(attachment["content"])]
    return [str(body["text"]) for body in bodies if body.get("text")], offered


async def _requested_while_uninstalled(bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser) -> str:
    """The OCMW reports the phone number wrong while the referrer has the app uninstalled: Teams refuses the
    correction card, 403 (BotNotInConversationRoster), final, so it is given up. The request's id."""
    await link(bot, ocmw_worker)
    reference, worker = await send_and_deliver(bot, referrer)
    await bot.act(worker, "ack.receive", {"reference": reference})
    await bot.settle()
    bot.connector.fail_next(403, path=f"/v3/conversations/{referrer.conversation_id}/")
    await bot.act(worker, "referral.quality", {"reference": reference, "item": "phone"})
    await bot.settle()
    assert _in_chat(bot, referrer)[1] == [], "Teams refused the card: the app is not installed"
    return str(await bot.services.db.scalar("SELECT id FROM corrections"))


async def test_a_correction_request_lost_while_the_app_was_uninstalled_is_offered_again_after_reinstalling(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, clock: ManualClock
) -> None:
    """The referrer removed the app (a new laptop, a clean-up) when the OCMW reported the phone number wrong.
    After installing it again, every 2 working days the reminder said "Vul het juiste gegeven in op de kaart
    Gegeven verbeteren in dit gesprek", a card that was not in the chat: the OCMW waited for a correction the
    referrer had no card to send."""
    correction_id = await _requested_while_uninstalled(bot, referrer, ocmw_worker)

    before = len(bot.connector.calls)
    installed = referrer._base(bot.service_url, "conversationUpdate")  # installed again: Teams adds the bot
    installed["membersAdded"] = [{"id": BOT_ID}]
    assert (await bot.post(installed)).status == 202
    await bot.settle()
    assert _in_chat(bot, referrer, before)[1] == [correction_id], "the card comes back with the bot, once"

    before = len(bot.connector.calls)
    clock.current = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)  # Wednesday: past 2 working days
    await bot.services.reminders.run_due()
    await bot.settle()
    reminders, offered = _in_chat(bot, referrer, before)
    assert [text for text in reminders if "op de kaart" in text], "the reminder came"
    assert offered == [], "the card is in the chat: the reminder points to it"


async def test_a_reminder_brings_the_correction_card_it_points_to_when_teams_refused_it(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, clock: ManualClock
) -> None:
    """No installation Teams told the bot about (or the card refused for another reason): the reminder posts the
    card again with its text, and the correction goes out from it."""
    correction_id = await _requested_while_uninstalled(bot, referrer, ocmw_worker)

    before = len(bot.connector.calls)
    clock.current = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)
    await bot.services.reminders.run_due()
    await bot.settle()
    reminders, offered = _in_chat(bot, referrer, before)
    assert [text for text in reminders if "op de kaart" in text] and offered == [correction_id]

    await bot.act(referrer, "correction.submit", {"correctionId": correction_id, "phone": "0470 11 22 33"})
    assert await bot.services.db.scalar(
        "SELECT new_reference FROM corrections WHERE id = :id", {"id": correction_id})
    before = len(bot.connector.calls)
    clock.current = dt.datetime(2026, 12, 9, 9, 0, tzinfo=dt.UTC)
    await bot.services.reminders.run_due()
    await bot.settle()
    reminders, offered = _in_chat(bot, referrer, before)
    assert not [text for text in reminders if "op de kaart" in text] and offered == [], "sent: no longer chased"
