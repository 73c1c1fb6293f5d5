"""Article 7 corrections under concurrent clicks: one correction per request, distinct versions per request.

Twenty identical "send correction" clicks at once (a double-click storm, Teams retrying) must send
one correction and tell the others it is already sent; two different requests at once must both
go out, as `-2` and `-3`. Over real HTTP, the clicks really concurrent, the ZIP password taking a
network round trip's time to arrive (as from Key Vault), so the clicks overlap inside the send.
Two OCMW workers reporting the same item at the same moment on two instances ask the referrer once,
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import cards
from bot.app import create_app
from bot.config import Settings
from bot.core.protocols import DataSharingProtocol, ProtocolRegistry, load_protocol_file
from bot.core.referral_values import NO_CORRECT_VALUE
from bot.core.sent_referrals import ReferralState, ReferralStore
from bot.delivery.mail_transport import MailDeliveryError
from bot.delivery.message_outbox import MessageOutbox
from bot.evidence.register import ProcessingRegister
from bot.ocmw.corrections import CorrectionService
from bot.ocmw.links import OcmwLinks
from bot.referral.dialogue import Actor
from bot.secrets.zip_passwords import LocalZipPasswordProvider, ZipPassword, ZipPasswordError
from bot.storage.database import Database
from tests.conftest import REPLIES_SHOWN_AT_ONCE, ZIP_PASSWORD
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import actions, texts
from tests.support.clock import ManualClock
from tests.support.databases import another_engine, migrated_postgres_url
from tests.support.ocmw_flow import link, referred_and_delivered
from tests.support.postgres_server import PostgresServer
from tests.support.sample_referral import PROTOCOL_FILE
from tests.support.smtp_server import SmtpTestServer, smtp_server
from tests.support.stored_referrals import NOW, a_referral

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
BANNER_TYPE = "application/vnd.microsoft.activity.message"


class RoundTripPasswords:
    """The local password, handed out after 20 ms, like a Key Vault answer; `meanwhile` runs once in that time."""

    def __init__(self) -> None:
        self._local = LocalZipPasswordProvider(configured=ZIP_PASSWORD, password_file=Path("/nonexistent"))
        self.meanwhile: Callable[[], Awaitable[object]] | None = None

    async def password_for(self, protocol: DataSharingProtocol) -> ZipPassword:
        await asyncio.sleep(0.02)
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile()
        return await self._local.password_for(protocol)

    async def keep_warm(self, protocols: Callable[[], list[DataSharingProtocol]]) -> None:
        return None


@pytest.fixture
def passwords() -> RoundTripPasswords:
    return RoundTripPasswords()


@pytest.fixture
async def bot(settings: Settings, clock: ManualClock, passwords: RoundTripPasswords) -> AsyncIterator[BotDriver]:
    app = create_app(settings, clock=clock, run_worker=False, passwords=passwords)
    async with running_bot(app) as driver:
        yield driver


async def _reported(bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, items: list[str]) -> tuple[
        str, dict[str, str], TeamsUser]:
    """A delivered referral, acknowledged, with `items` reported wrong: its reference, each item's request id,
    and the OCMW worker in the thread of its card."""
    await link(bot, ocmw_worker)
    reference, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": reference})
    for item in items:
        await bot.act(worker, "referral.quality", {"reference": reference, "item": item})
    await bot.settle()
    requests = [actions(c.body["attachments"][0]["content"])["correction.submit"]
                for c in bot.connector.calls
                if c.path.startswith(f"/v3/conversations/{referrer.conversation_id}/") and c.body.get("attachments")
                and "correction.submit" in actions(c.body["attachments"][0]["content"])]
    ids = {item: request["correctionId"] for item, request in zip(items, requests, strict=True)}
    return reference, ids, worker


async def _submit_all(bot: BotDriver, referrer: TeamsUser, forms: list[dict[str, str]]) -> list[str]:
    """Every answer as text: a card (the correction is on its way) or a banner (it is not, and why)."""
    responses = await asyncio.gather(*(
        bot.post(referrer.card_action(bot.service_url, "correction.submit", form)) for form in forms
    ))
    assert [response.status for response in responses] == [200] * len(forms)
    bodies = [await response.json() for response in responses]
    assert all(body["type"] in (CARD_TYPE, BANNER_TYPE) for body in bodies)
    return [texts(body["value"]) if body["type"] == CARD_TYPE else str(body["value"]) for body in bodies]


async def test_twenty_identical_submits_send_one_correction(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    reference, ids, _ = await _reported(bot, referrer, ocmw_worker, ["phone"])
    form = {"correctionId": ids["phone"], "phone": "0470 11 22 33"}
    answers = await _submit_all(bot, referrer, [form] * 20)
    versions = [row.reference for row in await bot.services.referrals.for_referrer(referrer.aad_object_id)
                if row.parent_reference == reference]
    assert versions == [f"{reference}-2"]
    already = [answer for answer in answers if "al verstuurd" in answer]
    assert len(already) == 19, [answer[:200] for answer in answers]
    assert all(f"{reference}-2" in answer for answer in answers)
    assert await bot.services.outbox.counts() == {"delivered": 1, "queued": 1}


async def test_two_different_corrections_at_once_get_distinct_versions(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    reference, ids, _ = await _reported(bot, referrer, ocmw_worker, ["phone", "email"])
    answers = await _submit_all(bot, referrer, [
        {"correctionId": ids["phone"], "phone": "0470 11 22 33"},
        {"correctionId": ids["email"], "email": "nieuw.adres@example.be"},
    ])
    versions = sorted(row.reference for row in await bot.services.referrals.for_referrer(referrer.aad_object_id)
                      if row.parent_reference == reference)
    assert versions == [f"{reference}-2", f"{reference}-3"]
    assert {version for version in versions for answer in answers if version in answer} == set(versions)
    assert not [answer for answer in answers if "al verstuurd" in answer]


@pytest.mark.parametrize(("closing", "told"), [("withdrawal", "toestemming ingetrokken"),
                                               ("deletion", "gegevens verwijderd")])
async def test_no_correction_leaves_once_its_family_was_closed_while_the_password_came(
    bot: BotDriver, passwords: RoundTripPasswords, referrer: TeamsUser, colleague: TeamsUser,
    ocmw_worker: TeamsUser, closing: str, told: str
) -> None:
    """The submit checks the family is open, then waits for the ZIP password (Key Vault): a withdrawal by a
    colleague, or the OCMW's deletion, committed in that time must stop the correction all the same."""
    reference, ids, worker = await _reported(bot, referrer, ocmw_worker, ["phone"])
    await bot.act_confirmed(worker, "referral.outcome", {"reference": reference, "outcome": "contact_no_help_wanted"})

    async def close_the_family() -> object:
        if closing == "withdrawal":
            return await bot.act_confirmed(colleague, "consent.withdraw", {"reference": reference})
        return await bot.act_confirmed(worker, "referral.deleted", {"reference": reference})

    passwords.meanwhile = close_the_family
    [answer] = await _submit_all(bot, referrer, [{"correctionId": ids["phone"], "phone": "0470 11 22 33"}])
    assert passwords.meanwhile is None, "the family was closed while the password came"
    root = await bot.services.referrals.get(reference)
    assert root is not None and root.state == ("consent_withdrawn" if closing == "withdrawal" else "data_deleted")
    versions = [row.reference for row in await bot.services.referrals.for_referrer(referrer.aad_object_id)
                if row.parent_reference == reference]
    assert versions == [], "no version of a closed family"
    assert await bot.services.outbox.counts() == {"delivered": 1}, "nothing more queued for the OCMW"
    assert told in answer and "Er is niets verstuurd" in answer, answer[:300]


@pytest.mark.parametrize("transient", [True, False])
async def test_a_correction_that_could_not_be_queued_says_so_of_the_correction_not_of_a_draft(
    bot: BotDriver, passwords: RoundTripPasswords, referrer: TeamsUser, ocmw_worker: TeamsUser, transient: bool
) -> None:
    """The banner was the referral's own ("de gegevens worden pas gewist na 30 minuten"): nothing of a correction
    is stored, what was typed stays on the card only."""
    reference, ids, _ = await _reported(bot, referrer, ocmw_worker, ["phone"])

    async def vault_trouble() -> object:
        raise ZipPasswordError("Key Vault secret 'zip-password-ocmw-sint-gillis-waas' unreachable", transient=transient)

    passwords.meanwhile = vault_trouble
    [answer] = await _submit_all(bot, referrer, [{"correctionId": ids["phone"], "phone": "0470 11 22 33"}])
    assert answer.startswith("Correctie NIET verstuurd") and reference in answer, answer
    assert "staat nog op de kaart" in answer and "minuten zonder wijziging" not in answer, answer
    assert await bot.services.outbox.counts() == {"delivered": 1}, "nothing queued"


# --- a correction the mail server refused: the OCMW still waits for it ---------------------------------------

async def test_a_correction_whose_mail_was_refused_can_be_sent_again_and_is_still_chased(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Article 7: the OCMW asked for the right phone number. The referrer's correction `-2` never reached the OCMW's
    mailbox (the mail server refused it for good), so the request is still open: the referrer is told to send the
    correction again (not to make a new referral) and gets the request's card back, the reminder keeps asking for it,
    and the correction sent again goes out."""
    from bot.delivery.mail_transport import MailDeliveryError

    reference, ids, _ = await _reported(bot, referrer, ocmw_worker, ["phone"])
    send = bot.services.transport.send

    async def refuse(_: object) -> None:
        raise MailDeliveryError("550 5.1.1 mailbox unavailable", transient=False)

    monkeypatch.setattr(bot.services.transport, "send", refuse)
    await bot.act(referrer, "correction.submit", {"correctionId": ids["phone"], "phone": "0470 11 22 33"})
    before = len(bot.connector.calls)
    await bot.deliver()
    failed = await bot.services.referrals.get(f"{reference}-2")
    assert failed is not None and failed.state == "failed", "the correction never reached the OCMW"
    told_then = [call.body for call in bot.connector.calls[before:]
                 if call.path.startswith(f"/v3/conversations/{referrer.conversation_id}/")]
    assert any("verstuur de correctie opnieuw" in texts(body) for body in told_then), told_then
    assert not any("Maak de doorverwijzing opnieuw" in texts(body) for body in told_then), told_then
    assert any(actions(body["attachments"][0]["content"]).get("correction.submit", {}).get("correctionId")
               == ids["phone"] for body in told_then if body.get("attachments")), "no card to send it again from"
    monkeypatch.setattr(bot.services.transport, "send", send)  # the mail server is fine again

    clock.advance(dt.timedelta(days=7))  # a week later, the OCMW still without the right number
    before = len(bot.connector.calls)
    await bot.services.reminders.run_due()
    await bot.settle()
    reminded = [texts(call.body) for call in bot.connector.calls[before:]
                if call.path.startswith(f"/v3/conversations/{referrer.conversation_id}/")]
    assert any("wacht nog op" in text for text in reminded), "the referrer is no longer reminded of the correction"

    again = await bot.answer(referrer, "correction.submit", {"correctionId": ids["phone"], "phone": "0470 11 22 33"})
    told = texts(again["value"]) if again["type"] == CARD_TYPE else str(again["value"])
    assert "al verstuurd" not in told, f"the request card says the failed correction was sent: {told[:200]}"
    await bot.deliver()
    sent = await bot.services.referrals.get(f"{reference}-3")
    assert sent is not None and sent.state == "sent", "the correction sent again did not go out"


async def test_a_refused_correction_does_not_reopen_a_request_a_later_version_answered(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OCMW asked for the right phone number; correction `-2` waited for the mail server, and meanwhile the
    referrer corrected the phone number again on Kind en Gezin's own initiative (`-3`), which went out. Then the mail
    server refused `-2` for good: the request, whose item `-3` carried, must not come back as a card to fill in
    again, nor be chased by the reminders."""
    reference, ids, _ = await _reported(bot, referrer, ocmw_worker, ["phone"])
    await bot.act(referrer, "correction.submit", {"correctionId": ids["phone"], "phone": "0470 11 22 33"})
    own = await bot.act(referrer, "correction.open", {"reference": reference, "item": "phone"})
    own_id = actions(own)["correction.submit"]["correctionId"]
    await bot.act(referrer, "correction.submit", {"correctionId": own_id, "phone": "0470 11 22 33"})
    to_referrer = await _told_when_refused(bot, referrer, reference, monkeypatch)
    assert (await bot.services.referrals.get(f"{reference}-3")).state == "sent"  # type: ignore[union-attr]
    assert not [body for body in to_referrer if body.get("attachments") and "correction.submit" in
                actions(body["attachments"][0]["content"])], "a card to correct what -3 already corrected"

    answer = await bot.answer(referrer, "correction.submit", {"correctionId": ids["phone"], "phone": "0470 11 22 33"})
    told = texts(answer["value"]) if answer["type"] == CARD_TYPE else str(answer["value"])
    assert "al verstuurd" in told and f"{reference}-3" in told, told[:300]
    clock.advance(dt.timedelta(days=7))
    before = len(bot.connector.calls)
    await bot.services.reminders.run_due()
    await bot.settle()
    assert not [call for call in bot.connector.calls[before:] if "wacht nog op" in texts(call.body)], \
        "the referrer is chased for a correction that went out"


def _request_ids(bot: BotDriver, referrer: TeamsUser, since: int) -> list[str]:
    """The ids of the requests whose card (to correct an item) the bot posted in the referrer's chat since `since`."""
    return [actions(call.body["attachments"][0]["content"])["correction.submit"]["correctionId"]
            for call in bot.connector.calls[since:]
            if call.path.startswith(f"/v3/conversations/{referrer.conversation_id}/") and call.body.get("attachments")
            and "correction.submit" in actions(call.body["attachments"][0]["content"])]


async def _told_when_refused(bot: BotDriver, referrer: TeamsUser, reference: str,
                             monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The mail server refuses `-2` for good (and takes any other version): what the referrer's chat got then."""
    send = bot.services.transport.send

    async def refuse_the_first(mail: Any) -> None:
        if f"{reference}-2" in str(mail["Subject"]):
            raise MailDeliveryError("550 5.1.1 mailbox unavailable", transient=False)
        await send(mail)

    monkeypatch.setattr(bot.services.transport, "send", refuse_the_first)
    before = len(bot.connector.calls)
    await bot.deliver()
    failed = await bot.services.referrals.get(f"{reference}-2")
    assert failed is not None and failed.state == "failed"
    return [call.body for call in bot.connector.calls[before:]
            if call.path.startswith(f"/v3/conversations/{referrer.conversation_id}/")]


async def test_a_refused_correction_a_later_version_carried_says_so_and_asks_nothing(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`-2` refused for good after `-3` (the phone number corrected again, on Kind en Gezin's own initiative) carried
    the same item: the request counts as answered by `-3`. The referrer read "Correctie -2 ... NIET verstuurd ... Het
    OCMW wacht er nog op: verstuur de correctie opnieuw", in the message and on -2's card: the OCMW waits for
    nothing, and the card to send it again did not come. They must read that -3 carried it and nothing is to do."""
    reference, ids, _ = await _reported(bot, referrer, ocmw_worker, ["phone"])
    await bot.act(referrer, "correction.submit", {"correctionId": ids["phone"], "phone": "0470 11 22 33"})
    own = await bot.act(referrer, "correction.open", {"reference": reference, "item": "phone"})
    own_id = actions(own)["correction.submit"]["correctionId"]
    await bot.act(referrer, "correction.submit", {"correctionId": own_id, "phone": "0470 11 22 44"})

    told = [texts(body) if body.get("attachments") else str(body.get("text", ""))
            for body in await _told_when_refused(bot, referrer, reference, monkeypatch)]
    assert (await bot.services.referrals.get(f"{reference}-3")).state == "sent"  # type: ignore[union-attr]
    assert told and not [text for text in told if "opnieuw" in text or "wacht er nog op" in text], told
    [message] = [text for text in told if text.startswith(f"Correctie {reference}-2 ")]
    assert "NIET verstuurd" in message and f"{reference}-3" in message and "telefoonnummer" in message, message
    assert "niets te doen" in message, message


async def test_a_refused_correction_whose_item_was_then_answered_with_no_correct_value_asks_nothing(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While `-2` (the phone number) waited for the mail server, the OCMW, still without it, reported the phone number
    again, and the referrer answered that request "Er is geen juist telefoonnummer": the OCMW was asked to delete
    the wrong number. Then `-2` was refused for good. The first request came back as a card to send the number
    again, with "Het OCMW wacht er nog op", and was chased every 2 working days: the OCMW waits for nothing, the
    referrer said there is no correct number. Now it counts as answered so, and the referrer is told that."""
    reference, ids, worker = await _reported(bot, referrer, ocmw_worker, ["phone"])
    await bot.act(referrer, "correction.submit", {"correctionId": ids["phone"], "phone": "0470 11 22 33"})
    clock.advance(dt.timedelta(hours=2))
    since = len(bot.connector.calls)
    await bot.act(worker, "referral.quality", {"reference": reference, "item": "phone"})
    await bot.settle()
    [again] = _request_ids(bot, referrer, since)
    assert again != ids["phone"]
    await bot.act_confirmed(referrer, cards.VERB_CORRECTION_NONE, {"correctionId": again})

    bodies = await _told_when_refused(bot, referrer, reference, monkeypatch)
    assert not [body for body in bodies if body.get("attachments")
                and "correction.submit" in actions(body["attachments"][0]["content"])], "a card to send it again"
    told = [texts(body) if body.get("attachments") else str(body.get("text", "")) for body in bodies]
    assert told and not [text for text in told if "opnieuw" in text or "wacht er nog op" in text], told
    [message] = [text for text in told if text.startswith(f"Correctie {reference}-2 ")]
    assert "NIET verstuurd" in message and "geen juist telefoonnummer" in message and "niets te doen" in message, \
        message
    answer = await bot.banner(referrer, "correction.submit", {"correctionId": ids["phone"], "phone": "0470 11 22 33"})
    assert "geen juist telefoonnummer" in answer, answer
    clock.advance(dt.timedelta(days=7))
    before = len(bot.connector.calls)
    await bot.services.reminders.run_due()
    await bot.settle()
    assert not [text for text in _said_in(bot, referrer.conversation_id, before) if "wacht nog op" in text], \
        "the referrer is chased for a number they said does not exist"


async def test_the_reminder_of_a_reopened_request_counts_from_when_the_referrer_learnt_the_correction_failed(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked on Saturday 28/11 for the phone number, corrected a week later, the correction refused for good: the
    referrer reads "Correctie NIET verstuurd ... verstuur de correctie opnieuw" with the request's card, and got at the
    next pass (a minute later) a reminder as well, counted from the request a week before. The reminder must come
    2 working days after the referrer was told, not at once."""
    reference, ids, _ = await _reported(bot, referrer, ocmw_worker, ["phone"])
    clock.advance(dt.timedelta(days=7))  # Saturday 5/12: no reminder pass ran meanwhile
    monkeypatch.setattr(bot.services.transport, "send", _refused)
    await bot.act(referrer, "correction.submit", {"correctionId": ids["phone"], "phone": "0470 11 22 33"})
    await bot.deliver()
    assert (await bot.services.referrals.get(f"{reference}-2")).state == "failed"  # type: ignore[union-attr]

    async def reminded_after(days: float) -> list[str]:
        clock.advance(dt.timedelta(days=days))
        before = len(bot.connector.calls)
        await bot.services.reminders.run_due()
        await bot.settle()
        return [texts(call.body) for call in bot.connector.calls[before:]
                if call.path.startswith(f"/v3/conversations/{referrer.conversation_id}/")
                and "wacht nog op" in texts(call.body)]

    assert await reminded_after(1 / 1440) == [], "a reminder a minute after the referrer was told it did not go"
    assert await reminded_after(3) == [], "Tuesday 8/12: not yet 2 working days after the reopening"
    assert len(await reminded_after(1)) == 1, "Wednesday 9/12: 2 working days after it, reminded"


async def _refused(_: object) -> None:
    """The mail server refuses every mail for good."""
    raise MailDeliveryError("550 5.1.1 mailbox unavailable", transient=False)


def _service(db: Database, clock: ManualClock) -> CorrectionService:
    """The requests' side of the service on `db` (the sending side is not reached)."""
    return CorrectionService(db=db, referrals=ReferralStore(db), registry=ProtocolRegistry([load_protocol_file(
        PROTOCOL_FILE)]), register=ProcessingRegister(db), sender=None, messages=MessageOutbox(db),  # type: ignore[arg-type]
        referrers=None, links=OcmwLinks(db), clock=clock,  # type: ignore[arg-type]
        timezone=ZoneInfo("Europe/Brussels"))


@pytest.mark.parametrize("kind", ["wrong", "superfluous", "wrong_after_end"])
async def test_two_workers_reporting_one_item_at_the_same_moment_on_two_instances_ask_the_referrer_once(
    database: Database, clock: ManualClock, kind: str
) -> None:
    """Each click on its own instance, at once: one request, one card or message, one register entry, for each of
    six families; the second report is answered as if it were the first (it was asked). After the protocol's end
    (no request, a message that no correction comes) as before it."""
    services = (_service(database, clock), _service(another_engine(database), clock))
    workers = (Actor("aad-ocmw-1", "Olga", "19:ocmw@thread.tacv2", "nl"),
               Actor("aad-ocmw-2", "Omar", "19:ocmw@thread.tacv2", "nl"))
    referrals = ReferralStore(database)
    references = [f"VD-20261128-K7M2Q{letter}" for letter in "ABCDEF"]
    for reference in references:
        await referrals.add(a_referral(reference, ReferralState.RECEIVED, sent_at=NOW))
        referral = await referrals.get(reference)
        assert referral is not None
        answered = await asyncio.gather(*(
            service.request(referral, "phone", worker) if kind == "wrong"
            else service.report_after_end(referral, "phone", worker) if kind == "wrong_after_end"
            else service.report_superfluous(referral, "phone", worker)
            for service, worker in zip(services, workers, strict=True)))
        assert {answer.reference for answer in answered} == {reference}
    event = "superfluous_reported" if kind == "superfluous" else "correction_requested"
    for reference in references:
        assert (await ProcessingRegister(database).events_for(reference)).count(event) == 1, reference
    queued = await database.scalar("SELECT COUNT(*) AS n FROM message_outbox")
    requests = await database.scalar("SELECT COUNT(*) AS n FROM corrections")
    assert (queued, requests) == (len(references), len(references) if kind == "wrong" else 0)


# -- no correct value: the family has no (other) phone number, e-mail address, ... -------------------------------


def _said_in(bot: BotDriver, conversation: str, since: int) -> list[str]:
    """The texts of the messages the bot posted in `conversation` (its channel, any thread) since call `since`."""
    return [str(call.body.get("text", "")) for call in bot.connector.calls[since:]
            if call.path.startswith(f"/v3/conversations/{conversation}") and call.body.get("text")]


async def test_no_correct_value_tells_the_ocmw_to_delete_the_wrong_item_and_asks_no_more(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, clock: ManualClock
) -> None:
    """The OCMW reports the phone number wrong and the family has no other (article 7: Kind en Gezin takes "the
    appropriate measures" and tells the OCMW). Before, the card accepted only a new number and the referrer was
    reminded for as long as the protocol ran. Now "Er is geen juist gegeven", asked once more, answers the request:
    no package leaves, the OCMW's channel is told to delete the wrong number (the reference, never a value), the
    register records it, no reminder follows and the card cannot be sent any more."""
    reference, ids, _ = await _reported(bot, referrer, ocmw_worker, ["phone"])
    request = {"correctionId": ids["phone"]}
    question = await bot.act(referrer, cards.VERB_CORRECTION_NONE, request)
    assert "Geen juist telefoonnummer" in texts(question) and reference in texts(question)
    assert (await bot.services.register.events_for(reference))[-1] == "correction_requested", "asked, not done"
    since = len(bot.connector.calls)
    answered = await bot.act_confirmed(referrer, cards.VERB_CORRECTION_NONE, request)
    assert "Gemeld aan OCMW Sint-Gillis-Waas" in texts(answered), texts(answered)
    assert cards.VERB_CORRECTION_SUBMIT not in actions(answered)
    await bot.settle()
    channel = ocmw_worker.conversation_id.split(";", 1)[0]
    told = _said_in(bot, channel, since)
    assert told == [cards.text("nl", "correction_none_to_ocmw", reference=reference, item="telefoonnummer")], told
    assert "Verwijder het foute telefoonnummer" in told[0]
    assert await bot.services.outbox.counts() == {"delivered": 1}, "no correction package"
    assert await bot.services.referrals.get(f"{reference}-2") is None
    assert (await bot.services.register.events_for(reference))[-1] == "no_correct_value"
    again = await bot.banner(referrer, cards.VERB_CORRECTION_SUBMIT, {**request, "phone": "0470 11 22 33"})
    assert "geen juist telefoonnummer" in again, again
    assert await bot.services.outbox.counts() == {"delivered": 1}
    since = len(bot.connector.calls)
    clock.advance(dt.timedelta(days=30))
    await bot.services.reminders.run_due()
    await bot.settle()
    assert not [text for text in _said_in(bot, referrer.conversation_id, since) if "wacht nog op" in text]


async def test_no_correct_value_answers_every_request_for_the_item_and_only_that_item(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    """Phone and e-mail reported wrong: no correct phone number answers the phone's request; the e-mail's card still
    corrects the e-mail (and its package goes out)."""
    reference, ids, _ = await _reported(bot, referrer, ocmw_worker, ["phone", "email"])
    await bot.act_confirmed(referrer, cards.VERB_CORRECTION_NONE, {"correctionId": ids["phone"]})
    sent = await bot.act(referrer, cards.VERB_CORRECTION_SUBMIT,
                         {"correctionId": ids["email"], "email": "gezin.nieuw@example.org"})
    assert f"{reference}-2" in texts(sent)
    await bot.deliver()
    assert await bot.services.outbox.counts() == {"delivered": 2}


async def test_no_correct_value_is_refused_once_the_family_is_closed(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    """After the OCMW confirmed the deletion there is nothing left to delete: the card says so, nothing is told."""
    reference, ids, worker = await _reported(bot, referrer, ocmw_worker, ["phone"])
    await bot.act_confirmed(worker, "referral.outcome", {"reference": reference, "outcome": "contact_no_help_wanted"})
    await bot.act_confirmed(worker, "referral.deleted", {"reference": reference})
    confirmed = {"correctionId": ids["phone"], "confirmed": "true"}
    refused = await bot.banner(referrer, cards.VERB_CORRECTION_NONE, confirmed)
    assert "verwijderd" in refused
    assert "no_correct_value" not in await bot.services.register.events_for(reference)


@pytest.fixture
def mail_server() -> Iterator[SmtpTestServer]:
    """A real SMTP server (aiosmtpd) for the PostgreSQL instance: mail from several instances leaves by SMTP."""
    with smtp_server(tls="none") as server:
        yield server


@pytest.fixture
async def postgres_bot(postgres: PostgresServer, mail_server: SmtpTestServer, tmp_path: Path, clock: ManualClock
                       ) -> AsyncIterator[BotDriver]:
    """The bot on the suite's PostgreSQL server, as an instance of several."""
    settings = Settings.from_mapping({
        **REPLIES_SHOWN_AT_ONCE,
        "BOT_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": await migrated_postgres_url(postgres),
        "LOCAL_DRAFT_KEY": "5d" * 32, "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD, "MAIL_TRANSPORT": "smtp",
        "SMTP_HOST": mail_server.host, "SMTP_PORT": str(mail_server.port), "SMTP_TLS": "none",
        "SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK": "1",
        "RATE_LIMIT_STARTS_PER_HOUR": "10000", "RATE_LIMIT_ACTIONS_PER_MINUTE": "10000"})
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as driver:
        yield driver


async def test_a_correction_given_up_waits_for_a_no_correct_value_another_instance_is_committing(
    postgres_bot: BotDriver, mail_server: SmtpTestServer, referrer: TeamsUser, ocmw_worker: TeamsUser,
    clock: ManualClock,
) -> None:
    """PostgreSQL, two instances: `-2` (the phone number) is refused for good on this one at the moment the other
    commits "Er is geen juist telefoonnummer" for the phone number reported again. Every step on a family locks it
    first, but giving a version up did not: it read the requests without waiting, told the referrer "Het OCMW wacht
    er nog op: verstuur de correctie opnieuw" and opened the first request again (its card back, reminders), while
    the OCMW was being asked to delete the number. Now the give-up waits for the family and sees the answer."""
    bot = postgres_bot
    reference, ids, worker = await _reported(bot, referrer, ocmw_worker, ["phone"])
    mail_server.fail_next(451)  # `-2` waits: the server says later
    await bot.act(referrer, "correction.submit", {"correctionId": ids["phone"], "phone": "0470 11 22 33"})
    await bot.deliver()
    clock.advance(dt.timedelta(hours=2))
    since = len(bot.connector.calls)
    await bot.act(worker, "referral.quality", {"reference": reference, "item": "phone"})
    await bot.settle()
    [again] = _request_ids(bot, referrer, since)
    mail_server.fail_next(550)  # and then refuses it for good
    other = another_engine(bot.services.db)
    async with other.transaction():  # the other instance: the family locked, "geen juist" written, not committed
        await other.fetch_one("SELECT reference FROM referrals WHERE reference = :r FOR UPDATE", {"r": reference})
        await other.execute("UPDATE corrections SET new_reference = :none WHERE id = :id",
                            {"none": NO_CORRECT_VALUE, "id": again})
        giving_up = asyncio.create_task(bot.deliver())
        await asyncio.sleep(0.5)
    await giving_up
    failed = await bot.services.referrals.get(f"{reference}-2")
    assert failed is not None and failed.state == "failed"
    told = _said_in(bot, referrer.conversation_id, since)
    assert not [text for text in told if "wacht er nog op" in text or "opnieuw" in text], told
    assert [text for text in told if "NIET verstuurd" in text and "geen juist telefoonnummer" in text], told
    first = await bot.services.db.scalar("SELECT new_reference FROM corrections WHERE id = :id", {"id": ids["phone"]})
    assert first is not None, "the first request was opened again"


async def test_no_correct_value_refused_while_the_bot_was_out_of_the_team_comes_when_it_is_back(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser
) -> None:
    """The referrer answers "geen juist telefoonnummer" while the bot is out of the OCMW's team: Teams refuses the
    channel message asking to delete the wrong number (403) and it is given up. The register says the OCMW was asked
    and the referrer read so, yet nothing posted it again when the bot was added back: the OCMW kept the wrong
    number. Now it comes then, once; a second return of the bot does not post it again."""
    reference, ids, _ = await _reported(bot, referrer, ocmw_worker, ["phone"])
    channel = ocmw_worker.conversation_id.split(";", 1)[0]
    team = dataclasses.replace(ocmw_worker, conversation_id=channel)
    message = cards.text("nl", "correction_none_to_ocmw", reference=reference, item="telefoonnummer")
    bot.connector.fail_next(403, count=1, path=f"/v3/conversations/{channel}")
    answered = await bot.act_confirmed(referrer, cards.VERB_CORRECTION_NONE, {"correctionId": ids["phone"]})
    assert "Gemeld aan OCMW Sint-Gillis-Waas" in texts(answered), texts(answered)
    await bot.settle()
    assert not [call for call in bot.connector.accepted if message in str(call.body.get("text", ""))], "refused"
    assert (await bot.services.messages.counts()).get("failed") == 1, "the message is given up"

    since = len(bot.connector.calls)
    assert (await bot.post(team.bot_installed(bot.service_url))).status == 202
    await bot.settle()
    arrived = [call for call in bot.connector.accepted if call in bot.connector.calls[since:]
               and call.path.startswith(f"/v3/conversations/{channel}") and call.body.get("text") == message]
    assert len(arrived) == 1, f"the message asking to delete the wrong number arrived {len(arrived)} times"

    since = len(bot.connector.calls)
    assert (await bot.post(team.bot_installed(bot.service_url))).status == 202
    await bot.settle()
    assert message not in _said_in(bot, channel, since), "posted again though it reached the channel"
