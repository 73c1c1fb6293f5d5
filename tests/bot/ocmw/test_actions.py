"""The OCMW side over real HTTP: link, notification, receipt, outcome, deletion, corrections, status.

Two conversations (the referrer's personal chat, the OCMW channel) and three people (referrer,
OCMW workers, an outsider), replies caught by the connector stand-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import email
import email.policy
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import cards
from bot.app import create_app
from bot.config import Settings
from bot.core.access import OcmwChannelPolicy
from bot.delivery.mail_message import OutgoingMail
from bot.delivery.mail_transport import OutboxFolderTransport
from tests.conftest import ZIP_PASSWORD
from tests.support import sevenzip
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, driving, running_bot, running_connector
from tests.support.card_reading import actions, input_ids, texts
from tests.support.clock import ManualClock
from tests.support.ocmw_flow import (
    CHANNEL,
    link,
    ocmw_worker,
    referred_and_delivered,
    reported_wrong,
    send_and_deliver,
)
from tests.support.referral_flow import CLIENT_VALUES, MAILBOX, PROTOCOL_ID, reach_review

OCMW_TENANT = "0c3c0c3c-0000-4000-8000-000000000002"


def channel_cards(bot: BotDriver) -> list[dict[str, Any]]:
    return [
        call.body["attachments"][0]["content"]
        for call in bot.connector.calls
        if call.path.startswith(f"/v3/conversations/{CHANNEL}") and call.body.get("attachments")
    ]


def texts_to(bot: BotDriver, conversation: str) -> list[str]:
    return [
        str(call.body["text"])
        for call in bot.connector.calls
        if call.method == "POST"
        and call.path.startswith(f"/v3/conversations/{conversation}/")
        and call.body.get("text")
    ]


async def test_linking_with_a_code_and_refusing_bad_codes(
    bot: BotDriver, ocmw_worker: TeamsUser, clock: ManualClock
) -> None:
    [wrong] = await bot.say(ocmw_worker, "<at>Bot</at> koppel AAAA-BBBB")
    assert "koppel" in wrong["text"].lower() or "code" in wrong["text"].lower()
    assert await bot.services.links.for_protocol(PROTOCOL_ID) is None

    code = await bot.services.links.new_code(PROTOCOL_ID, clock.now())
    [done] = await bot.say(ocmw_worker, f"<at>Veilig doorverwijzen</at> koppel {code.lower()}")
    assert "Gekoppeld" in done["text"]
    linked = await bot.services.links.for_protocol(PROTOCOL_ID)
    assert linked is not None and linked.conversation_id == CHANNEL
    assert ";messageid=" not in json.loads(linked.conversation_ref)["conversation"]["id"]
    assert "link_created" in [e for e in _events(bot)]

    [used] = await bot.say(ocmw_worker, f"koppel {code}")
    assert "Gekoppeld" not in used["text"]

    expired = await bot.services.links.new_code(PROTOCOL_ID, clock.now())
    clock.advance(dt.timedelta(hours=25))
    [late] = await bot.say(TeamsUser("aad-x", "X", "19:new@thread.tacv2", channel=True), f"koppel {expired}")
    assert "Gekoppeld" not in late["text"]


@pytest.mark.parametrize(
    ("conversation_id", "conversation_type"),
    [("a:personal-olga", "personal"), ("19:some-group-chat@thread.v2", "groupChat")],
)
async def test_koppel_outside_a_channel_is_refused_and_links_nothing(
    bot: BotDriver, clock: ManualClock, ocmw_worker: TeamsUser, conversation_id: str, conversation_type: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    chat = TeamsUser("aad-ocmw-1", "Olga Maatschappelijk", conversation_id, conversation_type=conversation_type)
    code = await bot.services.links.new_code(PROTOCOL_ID, clock.now())

    [refused] = await bot.say(chat, f"<at>Veilig doorverwijzen</at> koppel {code}")
    assert "Gekoppeld" not in refused["text"]
    assert "alleen in het Teams-kanaal van het OCMW" in refused["text"] and "groepschat" in refused["text"]
    assert await bot.services.links.for_protocol(PROTOCOL_ID) is None
    confirmed = await bot.act(chat, "link.confirm", {"code": code})
    assert "kanaal" in texts(confirmed) and await bot.services.links.for_protocol(PROTOCOL_ID) is None
    assert "not a Teams channel" in caplog.text

    english = dataclasses.replace(chat, locale="en-US")
    [refused_en] = await bot.say(english, f"koppel {code}")
    assert "only in the OCMW's Teams channel" in refused_en["text"]

    await link(bot, ocmw_worker)  # the code was not used up by the refusals


@pytest.fixture
async def tenant_bound_bot(settings: Settings, clock: ManualClock) -> AsyncIterator[BotDriver]:
    bound = dataclasses.replace(settings, ocmw_channels=OcmwChannelPolicy(frozenset({OCMW_TENANT})))
    async with running_bot(create_app(bound, clock=clock, run_worker=False)) as driver:
        yield driver


async def test_koppel_in_a_channel_of_a_tenant_not_allowed_is_refused(
    tenant_bound_bot: BotDriver, clock: ManualClock, ocmw_worker: TeamsUser, caplog: pytest.LogCaptureFixture
) -> None:
    bot = tenant_bound_bot
    code = await bot.services.links.new_code(PROTOCOL_ID, clock.now())
    [refused] = await bot.say(ocmw_worker, f"koppel {code}")  # a channel of Kind en Gezin's own tenant
    assert "Gekoppeld" not in refused["text"] and "functioneel beheerder" in refused["text"]
    confirmed = await bot.act(ocmw_worker, "link.confirm", {"code": code})
    assert "functioneel beheerder" in texts(confirmed)
    assert await bot.services.links.for_protocol(PROTOCOL_ID) is None
    assert "tenant not allowed" in caplog.text

    ocmw_tenant = dataclasses.replace(ocmw_worker, tenant_id=OCMW_TENANT.upper())
    [done] = await bot.say(ocmw_tenant, f"koppel {code}")
    assert "Gekoppeld" in done["text"]
    assert (await bot.services.links.for_protocol(PROTOCOL_ID)).conversation_id == CHANNEL  # type: ignore[union-attr]


async def test_koppel_is_rate_limited_per_user_and_per_conversation(
    bot: BotDriver, clock: ManualClock, ocmw_worker: TeamsUser
) -> None:
    for attempt in range(5):
        [wrong] = await bot.say(ocmw_worker, f"koppel AAAA-BBB{attempt}")
        assert "klopt niet" in wrong["text"]
    code = await bot.services.links.new_code(PROTOCOL_ID, clock.now())

    [limited] = await bot.say(ocmw_worker, f"koppel {code}")
    assert "Gekoppeld" not in limited["text"] and "10 minuten" in limited["text"]
    assert await bot.services.links.for_protocol(PROTOCOL_ID) is None
    limited_confirm = await bot.act(ocmw_worker, "link.confirm", {"code": code})
    assert "10 minuten" in texts(limited_confirm) and await bot.services.links.for_protocol(PROTOCOL_ID) is None
    colleague_here = TeamsUser("aad-ocmw-2", "Omar Collega", CHANNEL, channel=True)
    [per_conversation] = await bot.say(colleague_here, f"koppel {code}")
    assert "10 minuten" in per_conversation["text"]
    same_user_elsewhere = TeamsUser("aad-ocmw-1", "Olga", "19:other-ocmw-channel@thread.tacv2", channel=True)
    [per_user] = await bot.say(same_user_elsewhere, f"koppel {code}")
    assert "10 minuten" in per_user["text"]
    assert await bot.services.links.for_protocol(PROTOCOL_ID) is None

    clock.advance(dt.timedelta(minutes=10, seconds=1))
    [done] = await bot.say(ocmw_worker, f"koppel {code}")
    assert "Gekoppeld" in done["text"]


async def test_relinking_elsewhere_asks_first(bot: BotDriver, ocmw_worker: TeamsUser, clock: ManualClock) -> None:
    await link(bot, ocmw_worker)
    other = TeamsUser("aad-ocmw-3", "Nieuw Kanaal", "19:new-channel@thread.tacv2", channel=True)
    code = await bot.services.links.new_code(PROTOCOL_ID, clock.now())
    [asked] = await bot.say(other, f"koppel {code}")
    confirm = asked["attachments"][0]["content"]
    assert actions(confirm)["link.confirm"] == {"code": code}
    assert (await bot.services.links.for_protocol(PROTOCOL_ID)).conversation_id == CHANNEL  # type: ignore[union-attr]
    await bot.act(other, "link.confirm", {"code": code})
    assert (await bot.services.links.for_protocol(PROTOCOL_ID)).conversation_id == "19:new-channel@thread.tacv2"  # type: ignore[union-attr]


async def test_the_ocmw_card_has_what_it_needs_and_no_client_data(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    await link(bot, ocmw_worker)
    reference, _ = await referred_and_delivered(bot, referrer)
    [card] = channel_cards(bot)
    content = texts(card)
    for expected in (reference, "Kind en Gezin team Noord-Oost Waasland", "welzijnshuis@sint-gillis-waas.be",
                     "7-Zip", "local-"):
        assert expected in content
    assert actions(card)["ack.receive"] == {"reference": reference}
    assert not [value for value in CLIENT_VALUES if value in content]


async def test_acknowledge_edits_the_card_for_everyone_and_tells_the_referrer(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, second_worker: TeamsUser
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    clicker = ocmw_worker.in_thread(card_id)

    answer = await bot.act(clicker, "ack.receive", {"reference": reference})
    await bot.settle()

    assert "Olga Maatschappelijk" in texts(answer) and "ack.receive" not in actions(answer)
    assert set(actions(answer)) >= {"referral.outcome", "referral.quality"}
    [edit] = [c for c in bot.connector.calls if c.method == "PUT" and c.path.endswith(f"/activities/{card_id}")]
    assert "Olga Maatschappelijk" in texts(edit.body)
    assert any(reference in text for text in texts_to(bot, referrer.conversation_id))
    assert (await bot.services.referrals.get(reference)).state == "received"  # type: ignore[union-attr]

    puts_before = len([c for c in bot.connector.calls if c.method == "PUT"])
    again = await bot.act(second_worker.in_thread(card_id), "ack.receive", {"reference": reference})
    await bot.settle()
    assert "Olga Maatschappelijk" in texts(again)
    assert len([c for c in bot.connector.calls if c.method == "PUT"]) == puts_before
    assert _events(bot, reference).count("acknowledged") == 1


async def test_an_outsider_cannot_acknowledge(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, outsider: TeamsUser, caplog: pytest.LogCaptureFixture
) -> None:
    await link(bot, ocmw_worker)
    reference, _ = await referred_and_delivered(bot, referrer)
    refused = await bot.banner(outsider, "ack.receive", {"reference": reference})
    assert "gesprek van het OCMW" in refused, "a banner: the card the outsider clicked stays as it was"
    assert (await bot.services.referrals.get(reference)).state == "sent"  # type: ignore[union-attr]
    assert "outside the linked conversation" in caplog.text
    again = await bot.banner(referrer, "ack.receive", {"reference": reference})
    assert "gesprek van het OCMW" in again


async def test_an_outsider_clicking_twenty_times_makes_one_register_entry_and_is_counted_in_the_log(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, outsider: TeamsUser, clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await link(bot, ocmw_worker)
    reference, _ = await referred_and_delivered(bot, referrer)
    caplog.set_level(logging.WARNING, logger="bot.ocmw.actions")

    for _ in range(20):
        await bot.banner(outsider, "ack.receive", {"reference": reference})
        clock.advance(dt.timedelta(seconds=10))

    assert _events(bot, reference).count("refused") == 1
    refusals = [r for r in caplog.records if "outside the linked conversation" in r.getMessage()]
    assert len(refusals) == 20
    assert [getattr(r, "refused_clicks", None) for r in refusals] == list(range(1, 21))
    assert "20" in refusals[-1].getMessage()
    assert (await bot.services.referrals.get(reference)).state == "sent"  # type: ignore[union-attr]

    await bot.banner(outsider, "referral.quality", {"reference": reference, "item": "phone"})
    assert _events(bot, reference).count("refused") == 2, "another verb is another burst"

    clock.advance(dt.timedelta(minutes=10))
    await bot.banner(outsider, "ack.receive", {"reference": reference})
    assert _events(bot, reference).count("refused") == 3, "a new burst after 10 minutes"
    assert "19 more" in _details(bot, reference)[-1], "the next entry carries the clicks only counted"


@pytest.mark.parametrize("outcome", ["contact_no_help_wanted", "unreachable"])
async def test_no_help_or_unreachable_asks_to_delete_and_records_it(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, outcome: str
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    early = await bot.banner(worker, "referral.outcome", {"reference": reference, "outcome": outcome})
    assert "kan nu niet" in early, "no outcome before receipt; the card stays"
    await bot.act(worker, "ack.receive", {"reference": reference})

    question = await bot.act(worker, "referral.outcome", {"reference": reference, "outcome": outcome})
    assert reference in texts(question) and "niet ongedaan" in texts(question), "asked once more"
    assert (await bot.services.referrals.get(reference)).state == "received"  # type: ignore[union-attr]
    back = await bot.act(worker, "referral.view", {"reference": reference})
    assert "referral.outcome" in actions(back), "Terug shows the card as it was"
    card = await bot.act_confirmed(worker, "referral.outcome", {"reference": reference, "outcome": outcome})

    assert actions(card)["referral.deleted"] == {"reference": reference}
    assert "artikel 3" in texts(card)
    deleted = await bot.act_confirmed(worker, "referral.deleted", {"reference": reference})
    await bot.settle()
    assert "referral.deleted" not in actions(deleted)
    assert (await bot.services.referrals.get(reference)).state == "data_deleted"  # type: ignore[union-attr]
    assert _events(bot, reference)[-2:] == ["outcome_recorded", "deletion_confirmed"]
    assert len([t for t in texts_to(bot, referrer.conversation_id) if reference in t]) >= 3


async def test_help_wanted_keeps_the_data_for_the_file(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": reference})
    card = await bot.act(worker, "referral.outcome", {"reference": reference, "outcome": "contact_help_wanted"})
    assert "10 jaar" in texts(card) and "eigen dossier" in texts(card), "wil hulp: no confirmation, the data is kept"
    assert actions(card)["referral.deleted"] == {"reference": reference}, "the shared mailbox is emptied all the same"
    invalid = await bot.banner(worker, "referral.outcome", {"reference": reference, "outcome": "something"})
    assert "uitkomst" in invalid
    question = await bot.act(worker, "referral.deleted", {"reference": reference})
    assert "dossier" in texts(question) and "Opgenomen" not in texts(question)
    done = await bot.act_confirmed(worker, "referral.deleted", {"reference": reference})
    assert "referral.deleted" not in actions(done)
    assert (await bot.services.referrals.get(reference)).state == "data_deleted"  # type: ignore[union-attr]


async def test_a_correction_round_trip(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, settings: Settings, tmp_path: Path
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": reference})
    missing = await bot.act(worker, "referral.quality", {"reference": reference})
    assert "referral.quality" in actions(missing)

    reported = await bot.act(worker, "referral.quality", {"reference": reference, "item": "phone"})
    await bot.settle()

    assert "referral.quality" in actions(reported)
    [request] = [c.body["attachments"][0]["content"] for c in bot.connector.calls
                 if c.path.startswith(f"/v3/conversations/{referrer.conversation_id}/") and c.body.get("attachments")
                 and "correction.submit" in actions(c.body["attachments"][0]["content"])]
    assert input_ids(request) == ["phone"]
    correction_id = actions(request)["correction.submit"]["correctionId"]
    refused = await bot.act(referrer, "correction.submit", {"correctionId": correction_id, "phone": "0470 12"})
    assert "correction.submit" in actions(refused)
    foreign = await bot.act(
        ocmw_worker, "correction.submit", {"correctionId": correction_id, "phone": "0470 11 22 33"}
    )
    assert "persoonlijke chat" in texts(foreign), "a correction card is the personal chat's only"

    queued = await bot.act(referrer, "correction.submit", {"correctionId": correction_id, "phone": "0470 11 22 33"})
    assert f"{reference}-2" in texts(queued) and "470112233" not in texts(queued)
    assert "28/11/2026 10:00" in texts(queued), "queued at 09:00 UTC, shown in Brussels time like every card"
    await bot.deliver()

    emls = sorted(settings.outbox_dir.glob("*.eml"))
    [correction_eml] = [path for path in emls if path.name.startswith(f"{reference}-2@")]
    message = email.message_from_bytes(correction_eml.read_bytes(), policy=email.policy.default)
    assert f"{reference}-2" in message["Subject"] and reference in message["Subject"]
    [attachment] = list(message.iter_attachments())
    assert sevenzip.extract(attachment.get_content(), ZIP_PASSWORD, tmp_path / "c").returncode == 0
    document = json.loads((tmp_path / "c" / "correctie.json").read_text("utf-8"))
    assert document["corrects"] == reference and document["values"] == {"phone": "+32470112233"}
    assert "Zoëlle" not in (tmp_path / "c" / "correctie.txt").read_text("utf-8")
    correction_cards = [card for card in channel_cards(bot) if f"{reference}-2" in texts(card)]
    assert correction_cards and actions(correction_cards[0])["ack.receive"] == {"reference": f"{reference}-2"}
    done = await bot.banner(referrer, "correction.submit", {"correctionId": correction_id, "phone": "0470 11 22 33"})
    assert f"{reference}-2" in done and "al verstuurd" in done


async def test_status_lists_without_client_data(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    await bot.act(ocmw_worker.in_thread(card_id), "ack.receive", {"reference": reference})
    await bot.settle()
    [mine] = await bot.say(referrer, "mijn doorverwijzingen")
    card = mine["attachments"][0]["content"]
    assert reference in texts(card) and "ontvangst bevestigd" in texts(card)
    assert not [value for value in CLIENT_VALUES if value in texts(card)]
    [theirs] = await bot.say(TeamsUser("aad-ocmw-1", "Olga", CHANNEL, channel=True), "<at>Bot</at> status")
    assert reference in texts(theirs["attachments"][0]["content"])
    [nobody] = await bot.say(TeamsUser("aad-new", "Nieuw", "a:personal-new"), "status")
    assert reference not in texts(nobody["attachments"][0]["content"])


async def test_reminders_after_working_days_once_each(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, clock: ManualClock
) -> None:
    clock.current = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)  # a Friday
    await link(bot, ocmw_worker)
    reference, _ = await referred_and_delivered(bot, referrer)
    clock.current = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)  # Tuesday, before Friday + 2 working days
    assert await bot.services.reminders.run_due() == 0
    clock.current = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
    assert await bot.services.reminders.run_due() == 1
    await bot.settle()
    assert any(reference in text for text in texts_to(bot, CHANNEL))
    assert await bot.services.reminders.run_due() == 0, "once"
    clock.current = dt.datetime(2026, 12, 3, 9, 30, tzinfo=dt.UTC)  # Friday + 4 working days
    assert await bot.services.reminders.run_due() == 1
    await bot.settle()
    assert any(reference in text for text in texts_to(bot, referrer.conversation_id) if "werkdagen" in text)


async def test_acknowledged_referrals_are_chased_for_their_outcome_not_their_receipt(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, clock: ManualClock
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    await bot.act(ocmw_worker.in_thread(card_id), "ack.receive", {"reference": reference})
    clock.advance(dt.timedelta(days=14))
    assert await bot.services.reminders.run_due() == 2
    await bot.settle()
    reminders = [text for text in texts_to(bot, CHANNEL) + texts_to(bot, referrer.conversation_id)
                 if "werkdagen" in text]
    assert len(reminders) == 2 and all("uitkomst" in text for text in reminders)


async def test_a_restart_between_steps_loses_nothing(
    settings: Settings, clock: ManualClock, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    async with running_connector() as (connector, url):
        async with driving(create_app(settings, clock=clock, run_worker=False), connector, url) as first:
            await link(first, ocmw_worker)
            draft_id, _ = await reach_review(first, referrer)
        async with driving(create_app(settings, clock=clock, run_worker=False), connector, url) as second:
            queued = await second.act(referrer, "referral.send", {"draftId": draft_id})
            reference = next(w for w in texts(queued).replace('"', " ").split() if w.startswith("VD-"))
        async with driving(create_app(settings, clock=clock, run_worker=False), connector, url) as third:
            await third.deliver()
            card_id = await third.services.messages.slot_activity_id(f"ocmw:{reference}")
        async with driving(create_app(settings, clock=clock, run_worker=False), connector, url) as fourth:
            answer = await fourth.act(ocmw_worker.in_thread(str(card_id)), "ack.receive", {"reference": reference})
            assert "referral.outcome" in actions(answer)
        async with driving(create_app(settings, clock=clock, run_worker=False), connector, url) as fifth:
            await fifth.act(ocmw_worker.in_thread(str(card_id)), "referral.outcome",
                            {"reference": reference, "outcome": "contact_help_wanted"})
            assert (await fifth.services.referrals.get(reference)).state == "help_wanted"  # type: ignore[union-attr]


def _details(bot: BotDriver, reference: str) -> list[str]:
    import sqlite3

    with sqlite3.connect(bot.services.settings.database_path) as db:
        return [row[0] for row in db.execute("SELECT detail FROM register WHERE reference = ? ORDER BY seq",
                                             (reference,))]


def _events(bot: BotDriver, reference: str | None = None) -> list[str]:
    import sqlite3

    with sqlite3.connect(bot.services.settings.database_path) as db:
        if reference is None:
            return [row[0] for row in db.execute("SELECT event FROM register ORDER BY seq")]
        return [row[0] for row in db.execute("SELECT event FROM register WHERE reference = ? ORDER BY seq",
                                             (reference,))]


async def test_consent_withdrawn_asks_the_ocmw_to_delete_and_records_both(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, colleague: TeamsUser, settings: Settings
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    [sent_card] = [c.body["attachments"][0]["content"] for c in bot.connector.calls
                   if c.method == "PUT" and c.path.startswith(f"/v3/conversations/{referrer.conversation_id}/")]
    assert actions(sent_card)["consent.withdraw"] == {"reference": reference}
    question = await bot.act(colleague, "consent.withdraw", {"reference": reference})
    assert "niet ongedaan" in texts(question)
    assert (await bot.services.referrals.get(reference)).state == "sent", "nothing before the confirmation"  # type: ignore[union-attr]

    answer = await bot.act_confirmed(colleague, "consent.withdraw", {"reference": reference})
    await bot.settle()
    assert any("Bert Collega" in text and reference in text for text in texts_to(bot, referrer.conversation_id)), \
        "the referrer is told a colleague recorded it"
    with sqlite3.connect(settings.database_path) as db:
        [(actor_id,)] = db.execute("SELECT actor_id FROM register WHERE event = 'consent_withdrawn'").fetchall()
    assert actor_id == colleague.aad_object_id, "the register names who recorded it"

    assert reference in texts(answer)
    assert (await bot.services.referrals.get(reference)).state == "consent_withdrawn"  # type: ignore[union-attr]
    closed = await bot.banner(referrer, "correction.start", {"reference": reference})
    assert "toestemming ingetrokken" in closed and "nieuwe doorverwijzing" in closed, "why not, and what instead"
    assert any(reference in text for text in texts_to(bot, CHANNEL))
    [edit] = [c for c in bot.connector.calls if c.method == "PUT" and c.path.endswith(f"/activities/{card_id}")]
    assert actions(edit.body["attachments"][0]["content"])["referral.deleted"] == {"reference": reference}
    await bot.act_confirmed(ocmw_worker.in_thread(card_id), "referral.deleted", {"reference": reference})
    assert _events(bot, reference)[-2:] == ["consent_withdrawn", "deletion_confirmed"]


# -- issue 11: the family's versions, chases, reports ------------------------------------------------


async def _corrected(bot: BotDriver, referrer: TeamsUser, worker: TeamsUser, reference: str) -> str:
    """The phone reported wrong and corrected: the version `reference-2`, delivered; returns its card id."""
    await bot.act(worker, "referral.quality", {"reference": reference, "item": "phone"})
    await bot.settle()
    [request] = [c.body["attachments"][0]["content"] for c in bot.connector.calls
                 if c.path.startswith(f"/v3/conversations/{referrer.conversation_id}/") and c.body.get("attachments")
                 and "correction.submit" in actions(c.body["attachments"][0]["content"])]
    await bot.act(referrer, "correction.submit",
                  {"correctionId": actions(request)["correction.submit"]["correctionId"], "phone": "0470 11 22 33"})
    await bot.deliver()
    card_id = await bot.services.messages.slot_activity_id(f"ocmw:{reference}-2")
    assert card_id
    return card_id


async def test_outcome_and_deletion_cover_every_version_and_close_the_family(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": reference})
    version_card = await _corrected(bot, referrer, worker, reference)
    version_worker = ocmw_worker.in_thread(version_card)
    received = await bot.act(version_worker, "ack.receive", {"reference": f"{reference}-2"})
    assert "referral.outcome" not in actions(received) and reference in texts(received), "outcome on the first card"

    await bot.act_confirmed(version_worker, "referral.outcome",
                            {"reference": f"{reference}-2", "outcome": "contact_no_help_wanted"})
    assert (await bot.services.referrals.get(reference)).state == "no_help_wanted"  # type: ignore[union-attr]
    await bot.act_confirmed(worker, "referral.deleted", {"reference": reference})
    await bot.settle()
    for version in (reference, f"{reference}-2"):
        assert (await bot.services.referrals.get(version)).state == "data_deleted", version  # type: ignore[union-attr]
        assert "deletion_confirmed" in _events(bot, version)
    edits = [c for c in bot.connector.calls if c.method == "PUT" and c.path.endswith(f"/activities/{version_card}")]
    assert "Verwijdering bevestigd" in texts(edits[-1].body), "the version's card shows it is done too"

    closed = await bot.banner(referrer, "correction.start", {"reference": reference})
    assert "Geen correctie meer: gegevens verwijderd" in closed


async def test_a_withdrawal_covers_every_version_and_stops_a_version_still_queued(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, settings: Settings
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": reference})
    await bot.act(worker, "referral.quality", {"reference": reference, "item": "email"})
    await bot.settle()
    [request] = [c.body["attachments"][0]["content"] for c in bot.connector.calls
                 if c.path.startswith(f"/v3/conversations/{referrer.conversation_id}/") and c.body.get("attachments")
                 and "correction.submit" in actions(c.body["attachments"][0]["content"])]
    await bot.act(referrer, "correction.submit", {"correctionId": actions(request)["correction.submit"]["correctionId"],
                                                  "email": "nieuw@example.be"})
    assert (await bot.services.referrals.get(f"{reference}-2")).state == "queued"  # type: ignore[union-attr]

    await bot.act_confirmed(referrer, "consent.withdraw", {"reference": f"{reference}-2"})  # any version's card
    await bot.deliver()

    assert (await bot.services.referrals.get(reference)).state == "consent_withdrawn"  # type: ignore[union-attr]
    assert (await bot.services.referrals.get(f"{reference}-2")).state == "failed", "the queued correction never left"  # type: ignore[union-attr]
    assert [path.name for path in settings.outbox_dir.glob("*.eml")] == [f"{reference}@opgroeien.be.eml"]


async def test_a_colleague_records_a_withdrawal_by_typing_the_reference(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, colleague: TeamsUser
) -> None:
    await link(bot, ocmw_worker)
    reference, _ = await referred_and_delivered(bot, referrer)
    [question] = await bot.say(colleague, f"intrekken {reference.lower()}")
    card = question["attachments"][0]["content"]
    assert actions(card)["consent.withdraw"] == {"reference": reference, "confirmed": "true"}
    await bot.act(colleague, "consent.withdraw", actions(card)["consent.withdraw"])
    assert (await bot.services.referrals.get(reference)).state == "consent_withdrawn"  # type: ignore[union-attr]
    [unknown] = await bot.say(colleague, "intrekken VD-20260101-AAAAAA")
    assert "niet gevonden" in unknown["text"]


async def test_a_wrong_phone_number_can_be_reported_after_not_reached(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": reference})
    await bot.act_confirmed(worker, "referral.outcome", {"reference": reference, "outcome": "unreachable"})
    card = await bot.act(worker, "referral.quality", {"reference": reference, "item": "phone"})
    assert "correction_requested" in _events(bot, reference) and "referral.quality" in actions(card)


async def test_an_item_not_needed_is_reported_to_the_referrer_and_registered(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    card = await bot.act(ocmw_worker.in_thread(card_id), "referral.quality",
                         {"reference": reference, "item": "email", "kind": "superfluous"})
    await bot.settle()
    assert "niet nodig" in texts(card)
    assert _events(bot, reference)[-1] == "superfluous_reported"
    assert any("niet nodig" in text and "e-mailadres" in text for text in texts_to(bot, referrer.conversation_id))
    assert not [c for c in bot.connector.calls if "correction.submit" in json.dumps(c.body)], "nothing to resend"


async def test_kind_en_gezin_corrects_an_item_on_its_own_initiative(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, colleague: TeamsUser
) -> None:
    await link(bot, ocmw_worker)
    reference, _ = await referred_and_delivered(bot, referrer)
    start = await bot.act(referrer, "correction.start", {"reference": reference})
    assert input_ids(start) == ["item"]
    request = await bot.act(referrer, "correction.open", {"reference": reference, "item": "address"})
    assert input_ids(request) == ["street", "houseNumber", "postalCode", "municipality"]
    assert "Verbeter het adres" in texts(request)
    queued = await bot.act(referrer, "correction.submit", {
        "correctionId": actions(request)["correction.submit"]["correctionId"],
        "street": "Kerkstraat", "houseNumber": "3", "postalCode": "9170", "municipality": "De Klinge"})
    assert f"{reference}-2" in texts(queued) and "28/11/2026 10:00" in texts(queued), "Brussels time, not UTC"
    assert any("own initiative" in detail for detail in _details(bot, reference))
    [typed] = await bot.say(colleague, f"verbeter {reference}")
    assert input_ids(typed["attachments"][0]["content"]) == ["item"], "a colleague can start one too"


async def test_status_shows_an_unconfirmed_deletion_on_both_sides(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": reference})
    await bot.act_confirmed(worker, "referral.outcome", {"reference": reference, "outcome": "contact_no_help_wanted"})
    [mine] = await bot.say(referrer, "status")
    [theirs] = await bot.say(TeamsUser("aad-ocmw-1", "Olga", CHANNEL, channel=True), "<at>Bot</at> status")
    for card in (mine, theirs):
        assert "nog niet bevestigd" in texts(card["attachments"][0]["content"])


async def test_an_unconfirmed_deletion_and_a_correction_not_sent_are_chased(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, clock: ManualClock
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": reference})
    await bot.act(worker, "referral.quality", {"reference": reference, "item": "phone"})
    await bot.act(worker, "referral.outcome", {"reference": reference, "outcome": "contact_help_wanted"})
    await bot.settle()
    clock.advance(dt.timedelta(days=4))  # Saturday + 2 working days: Wednesday
    assert await bot.services.reminders.run_due() == 2  # the OCMW for the deletion, the referrer for the correction
    clock.advance(dt.timedelta(days=2))  # Friday: 4 working days
    assert await bot.services.reminders.run_due() == 2  # the referrer for the deletion, and the correction again
    await bot.settle()
    to_ocmw = [t for t in texts_to(bot, CHANNEL) if "werkdagen" in t]
    to_referrer = [t for t in texts_to(bot, referrer.conversation_id) if "werkdagen" in t or "wacht nog" in t]
    assert len(to_ocmw) == 1 and "gedeelde mailbox" in to_ocmw[0]
    assert sum("wacht nog" in t for t in to_referrer) == 2 and sum("verwijderd" in t for t in to_referrer) == 1


async def test_correction_cards_only_in_the_personal_chat(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    await link(bot, ocmw_worker)
    reference, _ = await referred_and_delivered(bot, referrer)
    group = TeamsUser(referrer.aad_object_id, referrer.name, "19:group-chat@thread.v2", conversation_type="groupChat")
    card = await bot.act(group, "correction.start", {"reference": reference})
    assert "correction.open" not in actions(card) and "persoonlijke chat" in texts(card)
    [typed] = await bot.say(group, f"verbeter {reference}")
    assert "item" not in input_ids(typed["attachments"][0]["content"])


async def test_a_colleague_sends_the_correction_the_ocmw_asked_for_and_it_answers_every_open_request(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, colleague: TeamsUser, clock: ManualClock
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "referral.quality", {"reference": reference, "item": "phone"})
    await bot.settle()
    [request] = [c.body["attachments"][0]["content"] for c in bot.connector.calls
                 if c.body.get("attachments") and "correction.submit" in actions(c.body["attachments"][0]["content"])]
    own = await bot.act(colleague, "correction.open", {"reference": reference, "item": "phone"})
    queued = await bot.act(colleague, "correction.submit", {
        "correctionId": actions(own)["correction.submit"]["correctionId"], "phone": "0470 11 22 33"})
    assert f"{reference}-2" in texts(queued), "a colleague may send it: the referrer may be away"
    answered = await bot.banner(referrer, "correction.submit", {
        "correctionId": actions(request)["correction.submit"]["correctionId"], "phone": "0470 11 22 33"})
    assert f"{reference}-2" in answered, "the OCMW's request for that item is answered by it"
    clock.advance(dt.timedelta(days=10))
    await bot.services.reminders.run_due()
    await bot.settle()
    assert not [t for t in texts_to(bot, referrer.conversation_id) if "wacht nog" in t], "no reminder for it"


async def test_not_reached_then_reached_after_all(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": reference})
    card = await bot.act_confirmed(worker, "referral.outcome", {"reference": reference, "outcome": "unreachable"})
    assert "Toch contact gehad" in texts(card)
    card = await bot.act(worker, "referral.outcome", {"reference": reference, "outcome": "contact_help_wanted"})
    assert (await bot.services.referrals.get(reference)).state == "help_wanted"  # type: ignore[union-attr]
    await bot.act_confirmed(worker, "referral.deleted", {"reference": reference})
    await bot.settle()
    assert any("eigen dossier" in t for t in texts_to(bot, referrer.conversation_id)), "not 'deleted': filed"


async def test_a_withdrawal_before_the_mail_left_sends_nothing(
    bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    queued = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    reference = next(w for w in texts(queued).replace('"', " ").split() if w.startswith("VD-"))
    answer = await bot.act_confirmed(referrer, "consent.withdraw", {"reference": reference})
    assert "niets naar het OCMW verstuurd" in texts(answer)
    await bot.deliver()
    assert not list(settings.outbox_dir.glob("*.eml")) if settings.outbox_dir.exists() else True
    assert (await bot.services.referrals.get(reference)).state == "failed"  # type: ignore[union-attr]
    assert "consent_withdrawn" in _events(bot, reference)
    closed = await bot.banner(referrer, "correction.start", {"reference": reference})
    assert closed.startswith("Geen correctie meer: toestemming ingetrokken"), "the withdrawal is the reason"


# --- the same click twice at once (a double click, Teams sending the invoke again) -----------------

NOTHING_CHANGED = "Er is niets veranderd"


async def _four_at_once(bot: BotDriver, user: TeamsUser, verb: str, data: dict[str, Any]) -> list[str]:
    """Four identical clicks at once, each answer as the text it shows."""
    responses = await asyncio.gather(*(bot.post(user.card_action(bot.service_url, verb, data)) for _ in range(4)))
    assert [response.status for response in responses] == [200] * 4
    bodies = [await response.json() for response in responses]
    return [body["value"] if isinstance(body["value"], str) else texts(body["value"]) for body in bodies]


async def test_an_outcome_clicked_four_times_at_once_is_recorded_once_and_each_click_told_so(
    bot: BotDriver, referrer: TeamsUser
) -> None:
    """One after the other the later clicks read "al geregistreerd"; at once they were told nothing happened."""
    await link(bot, ocmw_worker())
    reference, worker = await send_and_deliver(bot, referrer)
    await bot.act(worker, "ack.receive", {"reference": reference})
    answers = await _four_at_once(bot, worker, "referral.outcome",
                                  {"reference": reference, "outcome": "contact_help_wanted"})
    assert (await bot.services.referrals.get(reference)).state == "help_wanted"  # type: ignore[union-attr]
    assert (await bot.services.register.events_for(reference)).count("outcome_recorded") == 1, "recorded once"
    assert not [answer for answer in answers if NOTHING_CHANGED in answer], answers
    assert sum("De uitkomst was al geregistreerd" in answer for answer in answers) == 3, answers


async def test_a_withdrawal_confirmed_four_times_at_once_is_recorded_once_and_each_click_told_so(
    bot: BotDriver, referrer: TeamsUser
) -> None:
    await link(bot, ocmw_worker())
    reference, _ = await send_and_deliver(bot, referrer)
    answers = await _four_at_once(bot, referrer, "consent.withdraw", {"reference": reference, "confirmed": "true"})
    assert (await bot.services.referrals.get(reference)).state == "consent_withdrawn"  # type: ignore[union-attr]
    assert (await bot.services.register.events_for(reference)).count("consent_withdrawn") == 1, "recorded once"
    assert not [answer for answer in answers if NOTHING_CHANGED in answer], answers
    assert all("toestemming voor doorverwijzing" in answer and "ingetrokken" in answer for answer in answers), answers


async def test_a_deletion_confirmed_four_times_at_once_is_recorded_once_and_each_click_told_so(
    bot: BotDriver, referrer: TeamsUser
) -> None:
    await link(bot, ocmw_worker())
    reference, worker = await send_and_deliver(bot, referrer)
    await bot.act(worker, "ack.receive", {"reference": reference})
    await bot.act_confirmed(worker, "referral.outcome", {"reference": reference, "outcome": "contact_no_help_wanted"})
    answers = await _four_at_once(bot, worker, "referral.deleted", {"reference": reference, "confirmed": "true"})
    assert (await bot.services.referrals.get(reference)).state == "data_deleted"  # type: ignore[union-attr]
    assert (await bot.services.register.events_for(reference)).count("deletion_confirmed") == 1, "recorded once"
    assert not [answer for answer in answers if NOTHING_CHANGED in answer], answers



# --- a family closed while a correction's mail is being handed to the mail server -----------------------

class TransportWithAMoment(OutboxFolderTransport):
    """The outbox folder, with `meanwhile` run (once) while a mail is being sent: its row leased, not cancellable."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.meanwhile: Callable[[OutgoingMail], Awaitable[None]] | None = None

    async def send(self, mail: OutgoingMail) -> None:
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile(mail)
        await super().send(mail)


@pytest.mark.parametrize(("closing", "closed"), [("deletion", "data_deleted"), ("withdrawal", "consent_withdrawn")])
async def test_a_family_is_not_closed_while_a_correction_of_it_is_being_sent(
    settings: Settings, clock: ManualClock, referrer: TeamsUser, tmp_path: Path, closing: str, closed: str
) -> None:
    """A version's mail being handed to the mail server cannot be called back. Closing the family then left
    the version `sent` for good once it arrived: after a confirmed deletion its data sat in the OCMW's
    mailbox with no deletion to confirm or chase. The closing click is asked to wait a minute instead."""
    transport = TransportWithAMoment(tmp_path / "sent")
    async with running_bot(create_app(settings, clock=clock, run_worker=False, transport=transport)) as bot:
        await link(bot, ocmw_worker())
        reference, worker = await send_and_deliver(bot, referrer)
        await bot.act(worker, "ack.receive", {"reference": reference})
        correction_id = await reported_wrong(bot, referrer, worker, reference)
        await bot.act(referrer, "correction.submit", {"correctionId": correction_id, "phone": "0470 11 22 33"})
        version = f"{reference}-2"
        await bot.act_confirmed(worker, "referral.outcome",
                                {"reference": reference, "outcome": "contact_no_help_wanted"})
        verb, user = ("referral.deleted", worker) if closing == "deletion" else ("consent.withdraw", referrer)
        told: list[str] = []

        async def close_the_family(mail: OutgoingMail) -> None:
            assert mail.message_id.startswith(f"<{version}@")
            told.append(await bot.banner(user, verb, {"reference": reference, "confirmed": "true"}))

        transport.meanwhile = close_the_family
        assert await bot.deliver() == 1
        assert told and version in told[0] and "wordt op dit moment verstuurd" in told[0], told
        assert (await bot.services.referrals.get(reference)).state == "no_help_wanted"  # type: ignore[union-attr]
        assert (await bot.services.referrals.get(version)).state == "sent"  # type: ignore[union-attr]

        await bot.act(user, verb, {"reference": reference, "confirmed": "true"})  # a minute later: as usual
        assert (await bot.services.referrals.get(reference)).state == closed  # type: ignore[union-attr]
        assert (await bot.services.referrals.get(version)).state == closed, "the version that arrived goes with it"


# --- linking: the channel gets a card for every referral it still has to act on -------------------------

NEW_CHANNEL = "19:ocmw-nieuw-kanaal@thread.tacv2"


def _cards_in(bot: BotDriver, channel: str) -> list[dict[str, Any]]:
    return [call.body["attachments"][0]["content"] for call in bot.connector.calls
            if call.method == "POST" and call.path.startswith(f"/v3/conversations/{channel}/")
            and call.body.get("attachments")]


async def test_a_channel_linked_in_place_of_another_gets_a_card_for_each_open_referral(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, clock: ManualClock
) -> None:
    """Only the linked channel may act: after a move the old cards are refused, so the new channel needs its own."""
    await link(bot, ocmw_worker)
    waiting, old_card_id = await referred_and_delivered(bot, referrer)
    acknowledged, worker = await send_and_deliver(bot, referrer)
    await bot.act(worker, "ack.receive", {"reference": acknowledged})

    new_worker = TeamsUser("aad-ocmw-9", "Nina Nieuw", NEW_CHANNEL, channel=True)
    code = await bot.services.links.new_code(PROTOCOL_ID, clock.now())
    [asked] = await bot.say(new_worker, f"koppel {code}")  # it is linked elsewhere: asked once more
    assert "link.confirm" in actions(asked["attachments"][0]["content"])
    await bot.act(new_worker, "link.confirm", {"code": code})
    await bot.settle()
    assert "gesprek van het OCMW" in await bot.banner(ocmw_worker.in_thread(old_card_id), "ack.receive",
                                                      {"reference": waiting})
    moved = {reference: actions(card) for card in _cards_in(bot, NEW_CHANNEL)
             for reference in (waiting, acknowledged) if reference in texts(card)}
    assert moved.keys() == {waiting, acknowledged}, "a card in the new channel for each"
    assert moved[waiting]["ack.receive"] == {"reference": waiting}
    assert "referral.outcome" in moved[acknowledged] and "ack.receive" not in moved[acknowledged]
    await bot.act(new_worker, "ack.receive", {"reference": waiting})
    assert (await bot.services.referrals.get(waiting)).state == "received"  # type: ignore[union-attr]


async def test_a_withdrawal_recorded_before_the_channel_was_linked_gets_its_deletion_card(
    bot: BotDriver, referrer: TeamsUser, colleague: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    """Delivered to the mailbox before the OCMW linked its channel, then the parents withdrew consent: the
    OCMW must still be able to confirm it deleted the data."""
    draft_id, _ = await reach_review(bot, referrer)
    reference = (await bot.services.drafts.get(draft_id)).reference  # type: ignore[union-attr]
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    await bot.deliver()
    await bot.act_confirmed(colleague, "consent.withdraw", {"reference": reference})
    await link(bot, ocmw_worker)
    await bot.settle()
    [card] = [card for card in _cards_in(bot, CHANNEL) if reference in texts(card)]
    assert actions(card)["referral.deleted"] == {"reference": reference}


def _cards_shown(bot: BotDriver, since: int, channel: str = CHANNEL) -> list[str]:
    """The references of the cards to acknowledge that Teams took in `channel` after its call number `since`."""
    later = bot.connector.calls[since:]
    return [str(actions(attachment["content"])["ack.receive"]["reference"]) for call in bot.connector.accepted
            if call in later and call.path.startswith(f"/v3/conversations/{channel}/")
            for attachment in call.body.get("attachments") or [] if "ack.receive" in actions(attachment["content"])]


async def _delivered_while_out(bot: BotDriver, referrer: TeamsUser, channel: str = CHANNEL) -> str:
    """A referral delivered while the bot is not in the OCMW's team: Teams refuses its card, 403, final."""
    draft_id, _ = await reach_review(bot, referrer)
    reference = (await bot.services.drafts.get(draft_id)).reference  # type: ignore[union-attr]
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    bot.connector.fail_next(403, path=f"/v3/conversations/{channel}/")  # BotNotInConversationRoster
    await bot.deliver()
    assert (await bot.services.referrals.get(reference)).state == "sent"  # type: ignore[union-attr]
    assert reference not in _cards_shown(bot, 0, channel), "Teams refused the card: the bot is not in the team"
    return reference


async def test_a_card_lost_while_the_bot_was_out_of_the_ocmw_team_comes_back_when_it_is_added_again(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, caplog: pytest.LogCaptureFixture
) -> None:
    """An owner removes the app from the OCMW's team for a while; a referral delivered meanwhile had its card
    given up. Nothing brought it back (`koppel` said "al gekoppeld … Je hoeft niets te doen"), so the OCMW could
    never acknowledge it, record an outcome or confirm the deletion, and the reminders pointed at no card."""
    await link(bot, ocmw_worker)
    team = dataclasses.replace(ocmw_worker, conversation_id=CHANNEL)  # Teams says it in the channel itself
    caplog.set_level(logging.INFO)
    assert (await bot.post(team.bot_removed(bot.service_url))).status == 202
    [gone] = [record for record in caplog.records if "OCMW's team" in record.getMessage()]
    assert gone.levelno == logging.ERROR and gone.protocol_id == PROTOCOL_ID  # type: ignore[attr-defined]
    reference = await _delivered_while_out(bot, referrer)

    before = len(bot.connector.calls)
    assert (await bot.post(team.bot_installed(bot.service_url))).status == 202
    await bot.settle()
    assert _cards_shown(bot, before) == [reference], "the card that did not arrive, once"
    code = await bot.services.links.new_code(PROTOCOL_ID, bot.services.worker._clock.now())  # type: ignore[attr-defined]
    [answer] = await bot.say(ocmw_worker, f"<at>Veilig doorverwijzen</at> koppel {code}")
    assert "al gekoppeld" in answer["text"] and "opnieuw" not in answer["text"], "nothing is missing any more"
    card_id = await bot.services.messages.slot_activity_id(f"ocmw:{reference}")
    await bot.act(ocmw_worker.in_thread(str(card_id)), "ack.receive", {"reference": reference})
    assert (await bot.services.referrals.get(reference)).state == "received"  # type: ignore[union-attr]


async def test_a_channel_of_an_unarchived_team_gets_the_cards_it_missed(
    bot: BotDriver, referrer: TeamsUser, caplog: pytest.LogCaptureFixture
) -> None:
    """Teams says what happens to a team in its General channel, with the team's id: a link in another channel
    of that team is found by it. Archived: logged; unarchived: the cards given up meanwhile come back."""
    general = TeamsUser("aad-ocmw-1", "Olga Maatschappelijk", "19:ocmw-team-general@thread.tacv2", channel=True)
    worker = dataclasses.replace(general, conversation_id=NEW_CHANNEL, team_id=general.conversation_id)
    await link(bot, worker)
    caplog.set_level(logging.INFO)
    assert (await bot.post(general.team_event(bot.service_url, "teamArchived"))).status == 202
    assert [record for record in caplog.records if "OCMW's team" in record.getMessage()
            and record.levelno == logging.ERROR], "the archived team is logged, naming the protocol"
    reference = await _delivered_while_out(bot, referrer, NEW_CHANNEL)

    before = len(bot.connector.calls)
    assert (await bot.post(general.team_event(bot.service_url, "teamUnarchived"))).status == 202
    await bot.settle()
    assert _cards_shown(bot, before, NEW_CHANNEL) == [reference]


async def test_koppel_again_in_the_linked_channel_posts_the_cards_that_did_not_arrive(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, clock: ManualClock
) -> None:
    """What the functional administrator tries first: a fresh code typed in the same channel. It said
    "Je hoeft niets te doen" and posted nothing; now it says how many cards it posts again."""
    await link(bot, ocmw_worker)
    arrived, _ = await referred_and_delivered(bot, referrer)
    lost = await _delivered_while_out(bot, referrer)

    before = len(bot.connector.calls)
    code = await bot.services.links.new_code(PROTOCOL_ID, clock.now())
    answer, *_ = await bot.say(ocmw_worker, f"<at>Veilig doorverwijzen</at> koppel {code}")
    assert "al gekoppeld" in answer["text"] and "1 opnieuw" in answer["text"], answer["text"]
    assert _cards_shown(bot, before) == [lost], f"only the card that did not arrive, not {arrived}'s"
    code = await bot.services.links.new_code(PROTOCOL_ID, clock.now())
    [again] = await bot.say(ocmw_worker, f"koppel {code}")
    assert "Je hoeft niets te doen" in again["text"]


async def test_an_english_referrer_reads_english_throughout_and_the_ocmw_channel_dutch(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    """The referrer's language (Teams locale en-US) is kept for every later message to them; the OCMW channel's
    cards are shared, so Dutch whatever the worker's own locale."""
    english = dataclasses.replace(referrer, locale="en-US")
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, english)
    worker = dataclasses.replace(ocmw_worker, locale="en-GB").in_thread(card_id)
    ack = await bot.act(worker, "ack.receive", {"reference": reference})
    await bot.act(worker, "referral.quality", {"reference": reference, "item": "email"})
    await bot.settle()
    await bot.act(worker, "referral.outcome", {"reference": reference, "outcome": "contact_help_wanted"})
    await bot.act_confirmed(worker, "referral.deleted", {"reference": reference})
    await bot.settle()

    def posted_to(conversation: str) -> list[str]:
        calls = [c.body for c in bot.connector.calls if c.path.startswith(f"/v3/conversations/{conversation}")]
        return [str(b["text"]) for b in calls if b.get("text")] + [
            texts(a["content"]) for b in calls for a in b.get("attachments") or []]

    to_referrer, to_channel = posted_to(english.conversation_id), posted_to(CHANNEL)
    assert to_referrer and to_channel
    dutch_words = (" heeft ", "Doorverwijzing ", " verstuurd", "Gegeven ")
    dutch = [t[:160] for t in to_referrer if any(w in t for w in dutch_words)]
    assert not dutch, dutch
    english_in_channel = [t[:160] for t in [*to_channel, texts(ack)] if "Acknowledge" in t or "Referral" in t]
    assert not english_in_channel, english_in_channel


# --- a protocol ended while a referral of it is still at the OCMW ---------------------------------------------

@contextlib.asynccontextmanager
async def _bot_of_a_protocol_ending_today(tmp_path: Path, clock: ManualClock) -> AsyncIterator[BotDriver]:
    """The bot with the sample protocol ending on 28 November 2026, the test clock's day."""
    shipped = Settings().protocols_dir / "sint-gillis-waas.toml"
    folder = tmp_path / "protocols"
    folder.mkdir()
    (folder / shipped.name).write_text(shipped.read_text().replace("# ends_on = 2027-03-01", "ends_on = 2026-11-28"))
    settings = Settings.from_mapping({"BOT_DATA_DIR": str(tmp_path / "data"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
                                      "PROTOCOLS_DIR": str(folder)})
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as bot:
        yield bot


async def test_a_wrong_item_reported_after_the_protocol_ended_is_not_promised_as_a_correction(
    tmp_path: Path, clock: ManualClock, referrer: TeamsUser
) -> None:
    """Article 7 after the end: the OCMW still holds a family's data (delivered on the last day) and reports the
    phone number wrong the day after. A correction is a new transfer, refused once the protocol has ended, yet the
    OCMW was told "De correctie komt als een nieuwe kaart" and the referrer was sent a card asking for the right
    number, which refused it ("geldt vandaag niet"): the OCMW waited for a correction that could not come. Now the
    report is registered, the OCMW is told no correction comes and whom to contact, the referrer is told, no card."""
    async with _bot_of_a_protocol_ending_today(tmp_path, clock) as bot:
        await link(bot, ocmw_worker())
        reference, worker = await send_and_deliver(bot, referrer)  # 28 November, the protocol's last day
        await bot.act(worker, "ack.receive", {"reference": reference})
        clock.advance(dt.timedelta(days=1))  # 29 November: the protocol has ended, the OCMW still holds the data

        before = len(bot.connector.calls)
        reported = await bot.act(worker, "referral.quality", {"reference": reference, "item": "phone"})
        await bot.settle()
        to_referrer = [call.body for call in bot.connector.calls[before:]
                       if call.path.startswith(f"/v3/conversations/{referrer.conversation_id}/")]
        assert not any("correction.submit" in actions(attachment["content"]) for body in to_referrer
                       for attachment in body.get("attachments") or []), \
            "the referrer is asked for a correction the bot refuses to send"
        assert any("geldt niet meer" in texts(body) for body in to_referrer), to_referrer
        told = texts(reported)
        assert "De correctie komt" not in told, "the OCMW is promised a correction the bot refuses to send"
        assert "geen correctie" in told and "Kind en Gezin team Noord-Oost Waasland" in told, told
        assert "Telefoonnummer" in texts(reported), "the report is listed on the card"
        assert "item: phone; protocol ended: no correction through the bot" in _details(bot, reference)


async def test_a_withdrawal_after_the_ocmw_filed_the_data_says_why_and_where_to_go_instead(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, colleague: TeamsUser
) -> None:
    """The parents were told "je mag je toestemming altijd weer intrekken ... Wij vragen het OCMW dan om je gegevens
    te wissen". Months later, after they asked for help and the OCMW filed the data in its own dossier ("Opgenomen en
    verwijderd"), they tell Kind en Gezin they withdraw. The colleague who records it must learn why the bot cannot
    pass it on (the data is in the OCMW's own dossier now) and what to do instead (CONTENT.md: refusals say why and
    what to do), not "Deze knop past niet bij de stap ... Kijk op de kaart": there is no card with a next step."""
    reference, told = await _withdrawn_after_deletion(bot, referrer, ocmw_worker, colleague, "contact_help_wanted")
    assert "Kijk op de kaart van de doorverwijzing wat de volgende stap is" not in told and "dossier" in told, told
    assert "informatica@sint-gillis-waas.be" in told, "the OCMW's DPO, to whom the parents' request goes"
    assert "consent_withdrawn" not in _events(bot, reference), "nothing recorded"


async def test_a_withdrawal_after_the_ocmw_deleted_the_data_says_nothing_is_left_to_withdraw(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, colleague: TeamsUser
) -> None:
    """No help wanted, the data deleted and confirmed: a withdrawal recorded then is told the data is gone at the
    OCMW, not to look for a next step on a card that has none, nor to go to the OCMW's DPO."""
    _, told = await _withdrawn_after_deletion(bot, referrer, ocmw_worker, colleague, "contact_no_help_wanted")
    assert "Niets meer in te trekken" in told and "dossier" not in told, told


async def test_a_withdrawal_of_a_referral_that_never_reached_the_ocmw_says_nothing_was_passed_on(
    bot: BotDriver, referrer: TeamsUser, colleague: TeamsUser, settings: Settings, clock: ManualClock
) -> None:
    """The mail could not leave for a day and was given up ("NIET verstuurd ... Maak de doorverwijzing opnieuw"); the
    parents then withdraw before anyone made it again. The colleague who records it must learn that the OCMW never
    got the family's data, so there is nothing to withdraw and the referral must not be made again, not "Dit kan nu
    niet ... Kijk op de kaart" (the card offers "Opnieuw beginnen", the one thing not to do now)."""
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    with sqlite3.connect(settings.database_path) as db:
        [(reference,)] = db.execute("SELECT reference FROM referrals WHERE state = 'queued'").fetchall()
    settings.outbox_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # a real ENOSPC: the outbox writes <id>.tmp first, and removes it after a failure
        (settings.outbox_dir / f"{reference}@opgroeien.be.tmp").symlink_to("/dev/full")
        await bot.deliver()
        clock.advance(dt.timedelta(hours=25))
    assert (await bot.services.referrals.get(reference)).state == "failed"  # type: ignore[union-attr]

    for user, lang in ((colleague, "nl"), (dataclasses.replace(colleague, locale="en-US"), "en")):
        [answer] = await bot.say(user, f"intrekken {reference}")
        told = answer.get("text") or texts(answer["attachments"][0]["content"])
        assert "Kijk op de kaart" not in told and "Opnieuw beginnen" not in told, told
        assert cards.text(lang, "problem.withdrawal_never_delivered.title") in told, told
        assert reference in told and "Sint-Gillis-Waas" in told, told
    assert "consent_withdrawn" not in _events(bot, reference), "nothing to record: nothing was passed on"


async def _withdrawn_after_deletion(bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser,
                                    colleague: TeamsUser, outcome: str) -> tuple[str, str]:
    """A referral delivered, acknowledged, with `outcome` and its deletion confirmed; then a colleague types
    `intrekken`: the reference and what the colleague is told."""
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": reference})
    record = bot.act if outcome == "contact_help_wanted" else bot.act_confirmed  # only help needs no second click
    await record(worker, "referral.outcome", {"reference": reference, "outcome": outcome})
    await bot.act_confirmed(worker, "referral.deleted", {"reference": reference})
    assert (await bot.services.referrals.get(reference)).state == "data_deleted"  # type: ignore[union-attr]
    [answer] = await bot.say(colleague, f"intrekken {reference}")
    return reference, answer.get("text") or texts(answer["attachments"][0]["content"])


async def test_a_withdrawal_recorded_while_the_bot_was_out_of_the_ocmw_team_reaches_the_ocmw_when_it_is_back(
    bot: BotDriver, referrer: TeamsUser, colleague: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    """The OCMW's card arrived; then an owner removed the app from the OCMW's team for a few days, and meanwhile the
    parents withdrew consent. Teams refused the card's edit (the deletion button) and the notice, 403, final. When the
    app is back, only cards never shown are posted again: the card in the channel still says "Ontvangst bevestigen",
    a click on it is refused ("Dit kan nu niet"), and nothing lets the OCMW learn of the withdrawal or confirm the
    deletion the parents were promised ("Wij vragen het OCMW dan om je gegevens te wissen")."""
    await link(bot, ocmw_worker)
    reference, _ = await referred_and_delivered(bot, referrer)
    team = dataclasses.replace(ocmw_worker, conversation_id=CHANNEL)
    assert (await bot.post(team.bot_removed(bot.service_url))).status == 202

    await bot.act_confirmed(colleague, "consent.withdraw", {"reference": reference})
    bot.connector.fail_next(403, count=2, path=f"/v3/conversations/{CHANNEL}")  # the card's edit, the notice
    await bot.settle()
    assert (await bot.services.referrals.get(reference)).state == "consent_withdrawn"  # type: ignore[union-attr]

    before = len(bot.connector.calls)
    assert (await bot.post(team.bot_installed(bot.service_url))).status == 202
    await bot.settle()
    shown = [attachment["content"] for call in bot.connector.accepted
             if call in bot.connector.calls[before:] and call.path.startswith(f"/v3/conversations/{CHANNEL}")
             for attachment in call.body.get("attachments") or [] if reference in texts(attachment["content"])]
    assert any("referral.deleted" in actions(card) for card in shown), \
        "back in the team, the OCMW's channel never gets the card to confirm the deletion after the withdrawal"
    after = [call for call in bot.connector.accepted
             if call in bot.connector.calls[before:] and call.path.startswith(f"/v3/conversations/{CHANNEL}")]
    assert [call.method for call in after if call.body.get("attachments") and reference in texts(call.body)] \
        == ["PUT"], \
        "the card already in the channel is brought up to date, not a second one posted beside it"
    assert any(f"toestemming voor doorverwijzing {reference} ingetrokken" in texts(call.body) for call in after), \
        "the withdrawal notice comes with it"
    again = len(bot.connector.calls)
    assert (await bot.post(team.bot_installed(bot.service_url))).status == 202
    await bot.settle()
    assert not [call for call in bot.connector.calls[again:] if reference in texts(call.body)], \
        "once up to date, nothing of it is sent again"


async def test_a_withdrawal_notice_that_reached_the_channel_is_not_posted_again_when_the_bot_is_back(
    bot: BotDriver, referrer: TeamsUser, colleague: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    """The parents withdrew consent; Teams refused only the card's edit (given up), the notice "toestemming ...
    ingetrokken" reached the channel. When the bot is added to the team again the card is brought up to date, and
    the notice, which the OCMW already read, must not be posted a second time (it was, with every stale card)."""
    await link(bot, ocmw_worker)
    reference, _ = await referred_and_delivered(bot, referrer)
    team = dataclasses.replace(ocmw_worker, conversation_id=CHANNEL)

    await bot.act_confirmed(colleague, "consent.withdraw", {"reference": reference})
    bot.connector.fail_next(403, count=1, path=f"/v3/conversations/{CHANNEL}")  # the card's edit only
    await bot.settle()
    notice = f"toestemming voor doorverwijzing {reference} ingetrokken"
    assert [call for call in bot.connector.accepted if call.path.startswith(f"/v3/conversations/{CHANNEL}")
            and notice in texts(call.body)], "the notice reached the channel"

    before = len(bot.connector.calls)
    assert (await bot.post(team.bot_installed(bot.service_url))).status == 202
    await bot.settle()
    after = [call for call in bot.connector.accepted
             if call in bot.connector.calls[before:] and call.path.startswith(f"/v3/conversations/{CHANNEL}")]
    assert [call.method for call in after if call.body.get("attachments") and reference in texts(call.body)] \
        == ["PUT"], "the card is brought up to date"
    assert not [call for call in after if notice in texts(call.body)], "the notice the OCMW read came a second time"


# --- audit (real people in real teams): two OCMW workers on one card -------------------------------------------


async def test_two_workers_reporting_the_same_item_wrong_ask_the_referrer_once(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, second_worker: TeamsUser, clock: ManualClock
) -> None:
    """Both social workers checked the family's phone number on the shared card and each clicked "Gegeven fout"
    for it before Teams showed the other's report: one open question for the referrer, not two cards and two
    reminders for the same item."""
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    first, second = ocmw_worker.in_thread(card_id), second_worker.in_thread(card_id)
    await bot.act(first, "ack.receive", {"reference": reference})
    await bot.act(first, "referral.quality", {"reference": reference, "item": "phone"})
    again = await bot.act(second, "referral.quality", {"reference": reference, "item": "phone"})
    assert cards.text("nl", "notice.quality_reported") in texts(again), "the second worker reads it is asked"
    await bot.settle()
    assert (await bot.services.register.events_for(reference)).count("correction_requested") == 1
    requests = [c.body["attachments"][0]["content"] for c in bot.connector.calls
                if c.method == "POST" and c.path.startswith(f"/v3/conversations/{referrer.conversation_id}/")
                and c.body.get("attachments") and "correction.submit" in actions(c.body["attachments"][0]["content"])]
    assert len(requests) == 1, f"the referrer got {len(requests)} cards asking to correct the same phone number"
    clock.advance(dt.timedelta(days=4))
    await bot.services.reminders.run_due()
    await bot.settle()
    reminders = [t for t in texts_to(bot, referrer.conversation_id) if reference in t and "wacht nog" in t]
    assert len(reminders) <= 1, f"{len(reminders)} reminders for one question"


async def test_two_workers_reporting_the_same_item_wrong_after_the_protocol_ended_tell_the_referrer_once(
    tmp_path: Path, clock: ManualClock, referrer: TeamsUser, second_worker: TeamsUser
) -> None:
    """After the protocol's end both social workers report the family's phone number wrong on the shared card (or one
    taps "Gegeven fout" twice on a slow phone). Before the end that asks the referrer once; after it, each click sent
    the referrer another "het protocol geldt niet meer" message and added another register entry."""
    async with _bot_of_a_protocol_ending_today(tmp_path, clock) as bot:
        await link(bot, ocmw_worker())
        reference, card_id = await referred_and_delivered(bot, referrer)
        first, second = ocmw_worker().in_thread(card_id), second_worker.in_thread(card_id)
        await bot.act(first, "ack.receive", {"reference": reference})
        clock.advance(dt.timedelta(days=1))  # the protocol has ended

        await bot.act(first, "referral.quality", {"reference": reference, "item": "phone"})
        again = await bot.act(second, "referral.quality", {"reference": reference, "item": "phone"})
        await bot.settle()
        assert cards.text("nl", "notice.quality_reported_protocol_ended",
                          team="Kind en Gezin team Noord-Oost Waasland") in texts(again), texts(again)
        told = [text for text in texts_to(bot, referrer.conversation_id) if "geldt niet meer" in text]
        assert len(told) == 1, f"the referrer was told {len(told)} times of one report"
        assert _events(bot, reference).count("correction_requested") == 1, _events(bot, reference)


# -- the mailbox a referral went to, after the protocol file names another ---------------------------

NEW_MAILBOX = "onthaal@sint-gillis-waas.be"


@pytest.fixture
def protocol_file(tmp_path: Path) -> Path:
    """A copy of the shipped protocol as the only file of the bot's protocols folder, for the test to edit."""
    folder = tmp_path / "protocols"
    folder.mkdir()
    shipped = Settings().protocols_dir / "sint-gillis-waas.toml"
    (folder / shipped.name).write_text(shipped.read_text(encoding="utf-8"), encoding="utf-8")
    return folder / shipped.name


@pytest.fixture
async def editable_bot(settings: Settings, clock: ManualClock, protocol_file: Path) -> AsyncIterator[BotDriver]:
    moved = dataclasses.replace(settings, protocols_dir=protocol_file.parent)
    async with running_bot(create_app(moved, clock=clock, run_worker=False)) as driver:
        yield driver


def _move_mailbox(protocol_file: Path) -> None:
    """What an administrator does when the OCMW gets a new shared mailbox: edit the file, the bot rereads it."""
    text = protocol_file.read_text(encoding="utf-8")
    assert MAILBOX in text
    protocol_file.write_text(text.replace(MAILBOX, NEW_MAILBOX), encoding="utf-8")


async def test_cards_name_the_mailbox_a_referral_went_to_after_the_protocol_names_another(
    editable_bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, protocol_file: Path
) -> None:
    bot = editable_bot
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    _move_mailbox(protocol_file)

    answer = await bot.act(ocmw_worker.in_thread(card_id), "ack.receive", {"reference": reference})
    await bot.settle()
    assert MAILBOX in texts(answer) and NEW_MAILBOX not in texts(answer), "the OCMW's card: where the package is"
    [edit] = [c for c in bot.connector.calls if c.method == "PUT" and c.path.endswith(f"/activities/{card_id}")]
    assert MAILBOX in texts(edit.body) and NEW_MAILBOX not in texts(edit.body)

    back = await bot.act(referrer, "referral.view", {"reference": reference})
    assert MAILBOX in texts(back) and NEW_MAILBOX not in texts(back), "the referrer's card: where it was sent"


async def test_a_referral_queued_before_the_mailbox_changed_is_told_where_it_went(
    editable_bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, protocol_file: Path, settings: Settings
) -> None:
    """The package was addressed when it was queued; delivered after the change, every card names that address."""
    bot = editable_bot
    await link(bot, ocmw_worker)
    draft_id, _ = await reach_review(bot, referrer)
    queued = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert MAILBOX in texts(queued)
    _move_mailbox(protocol_file)
    await (await bot.session.get(f"{bot.bot_url}/readyz")).read()  # any request rereads the folder
    assert bot.services.registry.get(PROTOCOL_ID).recipient_mailbox == NEW_MAILBOX  # type: ignore[union-attr]
    assert await bot.deliver() == 1

    [eml] = sorted(settings.outbox_dir.glob("*.eml"))
    assert f"To: {MAILBOX}" in eml.read_text(), "the mail went where it was addressed when queued"
    [sent] = [c.body["attachments"][0]["content"] for c in bot.connector.calls
              if c.method == "PUT" and c.path.startswith(f"/v3/conversations/{referrer.conversation_id}/")]
    assert MAILBOX in texts(sent) and NEW_MAILBOX not in texts(sent)
    [card] = channel_cards(bot)
    assert MAILBOX in texts(card) and NEW_MAILBOX not in texts(card)
