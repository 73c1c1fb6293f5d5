"""Breach reports from Teams over real HTTP and a real SMTP server: who may start one, the card, the mail to
both DPOs with every article 33(3) field and the 72-hour clock, the register, and the typed text kept out
of the log."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import create_app
from bot.config import Settings, TelemetryConfig
from bot.delivery.smtp_transport import SmtpTransport
from bot.operations.telemetry import telemetry_from_settings
from tests.support.activities import TENANT_ID, TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import actions, attention_texts, input_ids, input_values, texts
from tests.support.clock import ManualClock
from tests.support.data_folder import left_in_folder
from tests.support.ocmw_flow import CHANNEL, confirm_deletion, link, referred_and_delivered
from tests.support.referral_flow import PROTOCOL_ID
from tests.support.smtp_server import SmtpTestServer, smtp_server

SHIPPED = Settings().protocols_dir / "sint-gillis-waas.toml"
OCMW_TENANT = "5c0b1a2d-0000-4000-8000-0000000000c3"
DPO_ID = "3f2a6c1e-8b4d-4e5f-9a0b-1c2d3e4f5a6b"
DPOS = ("dpo@opgroeien.be", "informatica@sint-gillis-waas.be")
#: What a reporter might type by mistake: it must reach the DPOs' mail and nothing else.
TYPED = "Mail van Jozefien Kwakkelstraat-Uniek ging naar de buurvrouw"
CONSEQUENCES = "Buurvrouw Gevolgtekst-Uniek kent nu naam en adres"
TAKEN = "Maatregel-Genomen-Uniek: buurvrouw gebeld, mail verwijderd"
PROPOSED = "Maatregel-Voorgesteld-Uniek: adres dubbel nakijken"
FREE_TEXTS = (TYPED, "Kwakkelstraat", "Gevolgtekst-Uniek", "Maatregel-Genomen-Uniek", "Maatregel-Voorgesteld-Uniek")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Kind en Gezin's tenant refers; the OCMW's DPO is named in the protocol file by Entra object id."""
    folder = tmp_path / "protocols"
    folder.mkdir()
    shutil.copy(SHIPPED, folder / SHIPPED.name)
    text = (folder / SHIPPED.name).read_text(encoding="utf-8")
    marker = 'dpo = "informatica@sint-gillis-waas.be"   # article 9\n'
    assert marker in text
    (folder / SHIPPED.name).write_text(text.replace(marker, marker + f'dpo_object_ids = ["{DPO_ID}"]\n'),
                                       encoding="utf-8")
    return Settings.from_mapping({
        "BOT_DATA_DIR": str(tmp_path / "data"),
        "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD",
        "PROTOCOLS_DIR": str(folder),
        "REFERRER_TENANT_IDS": TENANT_ID,
        "OUTBOX_RETRY_INITIAL_SECONDS": "30",
    })


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with smtp_server(tls="starttls") as server:
        yield server


@pytest.fixture
async def bot(settings: Settings, clock: ManualClock, smtp: SmtpTestServer) -> AsyncIterator[BotDriver]:
    app = create_app(settings, clock=clock, transport=SmtpTransport(smtp.settings()), run_worker=False)
    async with running_bot(app) as driver:
        yield driver


@pytest.fixture
def ocmw_worker() -> TeamsUser:
    """A member of the OCMW's channel, in the OCMW's own tenant (not a referrer)."""
    return TeamsUser("aad-ocmw-1", "Olga Maatschappelijk", f"{CHANNEL};messageid=1700000000001", channel=True,
                     tenant_id=OCMW_TENANT)


@pytest.fixture
def dpo() -> TeamsUser:
    """The OCMW's DPO in their personal chat with the bot."""
    return TeamsUser(DPO_ID.upper(), "Dirk Privacy", "a:personal-dpo", tenant_id=OCMW_TENANT)


@pytest.fixture
def outsider() -> TeamsUser:
    return TeamsUser("aad-outsider", "Otto Buiten", "19:other-team@thread.tacv2", channel=True,
                     tenant_id="9e9e9e9e-0000-4000-8000-000000000009")


def form(**changes: str) -> dict[str, str]:
    """A complete card: found today at 08:15 Brussels time (the clock says 10:00)."""
    return {
        "protocol": PROTOCOL_ID,
        "kind": "wrong_recipient",
        "discoveredDate": "2026-11-28",
        "discoveredTime": "08:15",
        "whatHappened": TYPED,
        "categories": "identification:name,contact:address",
        "references": "",
        "consequences": CONSEQUENCES,
        "measuresTaken": TAKEN,
        "measuresProposed": PROPOSED,
    } | changes


async def open_form(bot: BotDriver, user: TeamsUser, text: str = "datalek") -> dict[str, Any]:
    """Type the command; returns the breach report card the bot posts."""
    [posted] = await bot.say(user, text)
    card: dict[str, Any] = posted["attachments"][0]["content"]
    assert "breach.submit" in actions(card), card
    return card


async def report(bot: BotDriver, user: TeamsUser, **changes: str) -> tuple[str, dict[str, Any]]:
    """Open the card and submit it; returns the report id and the answer card."""
    card = await open_form(bot, user)
    report_id = actions(card)["breach.submit"]["reportId"]
    answer = await bot.act(user, "breach.submit", {"reportId": report_id, **form(**changes)})
    return report_id, answer


def breach_mails(smtp: SmtpTestServer) -> list[tuple[tuple[str, ...], EmailMessage]]:
    found = []
    for mail in smtp.messages:
        message = email.message_from_bytes(mail.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if "Melding gegevenslek" in str(message["Subject"]):
            found.append((mail.rcpt_tos, message))
    return found


def body_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return " ".join(str(part.get_content()).split())


async def test_a_referrer_reports_and_both_dpos_get_every_article_33_field(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, smtp: SmtpTestServer, settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await link(bot, ocmw_worker)
    reference, _ = await referred_and_delivered(bot, referrer)
    card = await open_form(bot, referrer)
    assert input_ids(card) == ["protocol", "kind", "discoveredDate", "discoveredTime", "whatHappened", "categories",
                               "references", "consequences", "measuresTaken", "measuresProposed"]
    assert "noem geen namen of adressen van gezinnen" in texts(card).lower()
    report_id = actions(card)["breach.submit"]["reportId"]

    answer = await bot.act(referrer, "breach.submit",
                           {"reportId": report_id, **form(references=f"{reference.lower()}, VD-20261101-AAAAAA")})

    shown = texts(answer)
    assert "Gegevenslek gemeld" in shown and report_id in shown
    assert "01/12/2026 08:15 (nog 70 uur)" in shown, "72 hours after 08:15, seen at 10:00"
    assert "VD-20261101-AAAAAA" in shown and "1 gevonden, 1 niet gevonden" in shown
    assert "Vlaamse Toezichtcommissie" in shown and all(dpo in shown for dpo in DPOS)
    assert not [free for free in FREE_TEXTS if free in shown], "the answer does not repeat the typed texts"
    assert breach_mails(smtp) == [], "queued in the mail outbox, not sent in the invoke"

    await bot.deliver()

    [(recipients, message)] = breach_mails(smtp)
    assert sorted(recipients) == sorted(DPOS), "both DPOs get the mail"
    subject = str(message["Subject"])
    assert report_id in subject and "artikel 9" in subject and PROTOCOL_ID in subject and "01/12/2026 08:15" in subject
    assert not [free for free in FREE_TEXTS if free in subject]
    body = body_of(message)
    for field in (
        "Ontdekt op: 28/11/2026 08:15", "Uiterlijk melden: 01/12/2026 08:15", "nog 70 uur",  # when, the clock
        "Vlaamse Toezichtcommissie voor de verwerking van persoonsgegevens", "https://www.vlaamsetoezichtcommissie.be",
        "mail of bijlage bij een verkeerde ontvanger", TYPED,  # (a) what happened
        "identification:name (identificatie: naam)", "contact:address (contact: adres)",  # (a) categories
        "de ouders van 1 gezin(nen)", "Aantal gegevensrecords: 1 doorverwijzing(en)",  # (a) roughly how many
        f"- {reference}: verstuurd", "- VD-20261101-AAAAAA: onbekend",  # references, the unknown one listed
        "Melder: An Verpleeg, doorverwijzer (Kind en Gezin team Noord-Oost Waasland), Opgroeien regie",  # (b)
        "Entra object id aad-referrer-1", "dpo@opgroeien.be (Opgroeien regie)",
        CONSEQUENCES, TAKEN, PROPOSED,  # (c), (d)
    ):
        assert field in body, field

    assert await bot.services.register.events_for(report_id) == ["breach_reported"]
    assert (await bot.services.register.events_for(reference))[-1] == "breach_reported"
    rows = await bot.services.register.export(dt.date(2026, 11, 28), dt.date(2026, 11, 28), settings.timezone)
    [entry] = [row for row in rows if row["reference"] == report_id]
    assert entry["actor_id"] == "aad-referrer-1" and entry["protocol_id"] == PROTOCOL_ID
    assert "kind=wrong_recipient" in entry["detail"] and "references=2 (1 unknown)" in entry["detail"]
    assert "1 families, 1 packages" in entry["detail"]
    assert not [free for free in FREE_TEXTS if free in str(rows)], "no typed text in the register"
    # Everything the bot's process logs, the SDK and the SMTP client included; not the test's own SMTP server
    # (aiosmtpd's "mail.log" logs every line it receives at DEBUG).
    log = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records
                    if record.name != "mail.log")
    assert {record.name for record in caplog.records} >= {
        "mail.log", "bot.oversight.breach", "bot.delivery.mail_delivery"}
    assert not [free for free in FREE_TEXTS if free in log], "the typed texts never reach the log"
    assert report_id in log
    left = await left_in_folder(settings.data_dir, lambda _, content: [
        free for free in FREE_TEXTS if free.encode() in content])
    assert left == {}, "the mail left the outbox: its text is gone"


async def test_an_ocmw_worker_in_the_linked_channel_reports_without_references(
    bot: BotDriver, ocmw_worker: TeamsUser, smtp: SmtpTestServer
) -> None:
    await link(bot, ocmw_worker)
    card = await open_form(bot, ocmw_worker, "<at>Veilig doorverwijzen</at> datalek")
    assert input_values(card)["protocol"] == PROTOCOL_ID

    report_id, answer = await report(bot, ocmw_worker, kind="device_lost", categories="unknown")

    assert "nog niet bekend" in texts(answer)
    await bot.deliver()
    [(recipients, message)] = breach_mails(smtp)
    assert sorted(recipients) == sorted(DPOS)
    body = body_of(message)
    assert "Melder: Olga Maatschappelijk, medewerker in het gekoppelde Teams-kanaal van het OCMW, " \
           "OCMW Sint-Gillis-Waas" in body
    assert "toestel of bestand verloren of gestolen" in body and "unknown (nog niet bekend)" in body
    assert "Aantal betrokkenen en gegevensrecords: niet bekend" in body
    assert "Referenties die de melder opgaf: - geen" in body
    assert await bot.services.register.events_for(report_id) == ["breach_reported"]


async def test_a_dpo_reports_a_leaked_zip_password_and_the_protocols_referrals_are_counted(
    bot: BotDriver, dpo: TeamsUser, referrer: TeamsUser, colleague: TeamsUser, ocmw_worker: TeamsUser,
    smtp: SmtpTestServer, clock: ManualClock,
) -> None:
    await link(bot, ocmw_worker)
    kept, _ = await referred_and_delivered(bot, referrer)
    deleted, _ = await referred_and_delivered(bot, colleague)
    await confirm_deletion(bot, ocmw_worker, deleted)
    clock.advance(dt.timedelta(hours=1))

    report_id, answer = await report(bot, dpo, kind="zip_password_leaked", discoveredTime="10:30",
                                     categories="identification:name,contact:address,contact:phone,contact:email")

    assert "gezinnen: 2, doorverwijzingen: 2" in texts(answer)
    await bot.deliver()
    [(recipients, message)] = breach_mails(smtp)
    assert sorted(recipients) == sorted(DPOS)
    body = body_of(message)
    [kept_referral] = [await bot.services.referrals.get(kept)]
    assert kept_referral is not None
    for field in ("het ZIP-wachtwoord van het protocol is uitgelekt", "de ouders van 2 gezin(nen)",
                  "Aantal gegevensrecords: 2 doorverwijzing(en)", f"sleutelversie {kept_referral.key_version}",
                  "Daarvan bewaart het OCMW er nog 1", "Melder: Dirk Privacy, functionaris voor gegevensbescherming, "
                  "OCMW Sint-Gillis-Waas"):
        assert field in body, field
    [entry] = [row for row in await bot.services.register.export(dt.date(2026, 11, 28), dt.date(2026, 11, 28),
                                                            bot.services.settings.timezone)
               if row["reference"] == report_id]
    assert "concerned=2 families, 2 packages (counted from protocol" in entry["detail"]


async def test_an_outsider_in_an_unlinked_channel_is_refused_and_nothing_is_sent(
    bot: BotDriver, outsider: TeamsUser, smtp: SmtpTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    [reply] = await bot.say(outsider, "<at>Veilig doorverwijzen</at> datalek")
    assert "attachments" not in reply or not reply["attachments"]
    assert "Meld het lek meteen rechtstreeks aan de DPO van je eigen organisatie" in reply["text"]

    crafted = await bot.act(outsider, "breach.submit", {"reportId": "DL-20261128-K7M2QX", **form()})

    assert "breach.submit" not in actions(crafted) and "Meld het lek meteen rechtstreeks" in texts(crafted)
    await bot.deliver()
    assert breach_mails(smtp) == []
    assert await bot.services.register.events_for("DL-20261128-K7M2QX") == []
    assert "breach report action refused" in caplog.text and TYPED not in caplog.text


async def test_wrong_fields_get_their_errors_under_them_and_nothing_is_queued(
    bot: BotDriver, referrer: TeamsUser, smtp: SmtpTestServer
) -> None:
    card = await open_form(bot, referrer)
    report_id = actions(card)["breach.submit"]["reportId"]

    again = await bot.act(referrer, "breach.submit", {"reportId": report_id, **form(
        discoveredDate="2026-11-29", whatHappened="", categories="", references="VD-20261128-K7M2QX, VD-2026")})

    errors = attention_texts(again)
    assert any("Kijk" in error and "de datum" in error and "de referenties" in error for error in errors)
    assert "Dit moment ligt in de toekomst. Vul in wanneer het lek ontdekt werd: ten laatste nu." in errors
    assert "Beschrijf kort wat er gebeurde, zonder namen of adressen van gezinnen." in errors
    assert any("Deze referentie klopt niet: VD\\-2026." in error for error in errors), "as typed (markdown escaped)"
    assert any("Vink aan welke gegevens" in error for error in errors)
    values = input_values(again)
    assert values["references"] == "VD-20261128-K7M2QX, VD-2026" and values["measuresTaken"] == TAKEN
    assert actions(again)["breach.submit"]["reportId"] == report_id, "the same report, corrected"
    await bot.deliver()
    assert breach_mails(smtp) == [] and await bot.services.register.events_for(report_id) == []


async def test_a_second_click_on_the_same_card_sends_nothing_new(
    bot: BotDriver, referrer: TeamsUser, smtp: SmtpTestServer
) -> None:
    report_id, first = await report(bot, referrer)
    second = await bot.act(referrer, "breach.submit", {"reportId": report_id, **form()})

    assert "Gegevenslek gemeld" in texts(first) and "Deze melding was al verstuurd" in texts(second)
    await bot.deliver()
    assert len(breach_mails(smtp)) == 1
    assert await bot.services.register.events_for(report_id) == ["breach_reported"]


async def test_the_mail_is_retried_when_the_relay_refuses_it_for_now(
    bot: BotDriver, referrer: TeamsUser, smtp: SmtpTestServer, clock: ManualClock
) -> None:
    smtp.fail_next(451)
    report_id, _ = await report(bot, referrer)
    await bot.deliver()
    assert breach_mails(smtp) == []

    clock.advance(dt.timedelta(minutes=2))
    await bot.deliver()

    [(_, message)] = breach_mails(smtp)
    assert report_id in str(message["Subject"])


async def test_a_late_report_says_the_72_hours_have_passed(
    bot: BotDriver, referrer: TeamsUser, smtp: SmtpTestServer
) -> None:
    _, answer = await report(bot, referrer, discoveredDate="2026-11-24", discoveredTime="09:00")

    assert "27/11/2026 09:00 (al 25 uur voorbij)" in texts(answer)
    assert "De termijn van 72 uur na de ontdekking is al voorbij" in texts(answer)
    await bot.deliver()
    [(_, message)] = breach_mails(smtp)
    assert "die termijn was bij deze melding al 25 uur voorbij" in body_of(message)


async def test_cancel_reports_nothing(bot: BotDriver, referrer: TeamsUser) -> None:
    card = await open_form(bot, referrer, "breach")
    cancelled = await bot.act(referrer, "breach.cancel", actions(card)["breach.cancel"])
    assert "er is niets gemeld" in texts(cancelled)
    assert await bot.services.outbox.counts() == {}


async def test_a_mail_the_relay_refuses_for_good_is_logged_with_the_report_id(
    bot: BotDriver, referrer: TeamsUser, smtp: SmtpTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    smtp.fail_next(550)
    report_id, _ = await report(bot, referrer)
    await bot.deliver()

    assert breach_mails(smtp) == []
    [failed] = [record for record in caplog.records if record.getMessage().startswith("mail NOT delivered")]
    assert failed.levelno == logging.ERROR and getattr(failed, "reference", None) == report_id
    assert await bot.services.outbox.counts() == {"failed": 1}
    assert TYPED not in caplog.text


async def test_a_dpo_whose_server_says_later_does_not_make_the_other_dpo_get_the_report_again_and_again(
    bot: BotDriver, referrer: TeamsUser, smtp: SmtpTestServer, clock: ManualClock
) -> None:
    """One recipient refused for now at RCPT (greylisting, 450 "unverified address", 452 mailbox full), the
    other accepted: the relay took the mail for the OCMW's DPO. The outbox's retries must not send it to them again."""
    report_id, _ = await report(bot, referrer)
    for _ in range(3):  # the first attempt and two retries, each when due: the Opgroeien DPO's RCPT says 452
        smtp.fail_next(452, stage="RCPT")  # the first RCPT of the attempt: dpo@opgroeien.be
        await bot.deliver()
        clock.advance(dt.timedelta(hours=1))
    await bot.deliver()  # now taken for both

    copies = [recipient for recipients, message in breach_mails(smtp) if report_id in str(message["Subject"])
              for recipient in recipients]
    assert sorted(copies) == sorted(DPOS), f"each DPO gets the report once: {copies}"


async def test_a_dpo_refused_for_good_after_the_other_took_the_report_is_recorded_as_such(
    bot: BotDriver, referrer: TeamsUser, smtp: SmtpTestServer, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """First 452 for the Opgroeien DPO, the OCMW's DPO takes it; at the retry 550 (the address was removed):
    the report is delivered to the one and refused for the other, in the log, the outbox and the register."""
    report_id, _ = await report(bot, referrer)
    smtp.fail_next(452, stage="RCPT")
    await bot.deliver()
    clock.advance(dt.timedelta(hours=1))
    smtp.fail_next(550, stage="RCPT")
    await bot.deliver()

    assert [recipients for recipients, _ in breach_mails(smtp)] == [("informatica@sint-gillis-waas.be",)]
    [partly] = [record for record in caplog.records if record.getMessage().startswith("mail delivered to")]
    assert partly.getMessage() == ("mail delivered to informatica@sint-gillis-waas.be; refused for dpo@opgroeien.be:"
                                   " SMTP 550 from server to a recipient (RCPT): refused")
    assert partly.levelno == logging.ERROR and getattr(partly, "reference", None) == report_id
    assert await bot.services.outbox.counts() == {"delivered": 1}
    assert await bot.services.register.events_for(report_id) == ["breach_reported", "delivery_failed"]
    [entry] = [entry for entry in await bot.services.register.export_protocol(PROTOCOL_ID)
               if entry["reference"] == report_id and entry["event"] == "delivery_failed"]
    assert entry["actor_id"] == "bot:delivery" and entry["detail"] == partly.getMessage()
    assert TYPED not in caplog.text


@pytest.mark.parametrize(("code", "late"), [(550, dt.timedelta()), (452, dt.timedelta(hours=25))])
async def test_a_report_one_dpo_took_in_its_only_attempt_keeps_who_has_it_in_the_outbox(
    bot: BotDriver, referrer: TeamsUser, smtp: SmtpTestServer, clock: ManualClock,
    code: int, late: dt.timedelta,
) -> None:
    """The relay takes the report for the OCMW's DPO and refuses the Opgroeien DPO in the same attempt, the one
    that ends it: refused for good (550), or for now (452) when that attempt is the first past the horizon (the
    relay was out of reach until then). The outbox row must say who has it, as it does when the refusal comes
    at a later attempt: it said "refused for dpo@opgroeien.be" and named nobody who had it."""
    report_id, _ = await report(bot, referrer)
    clock.advance(late)
    smtp.fail_next(code, stage="RCPT")  # the first RCPT of the attempt: dpo@opgroeien.be
    await bot.deliver()

    assert [recipients for recipients, _ in breach_mails(smtp)] == [("informatica@sint-gillis-waas.be",)]
    row = await bot.services.db.fetch_one("SELECT state, delivered_to, last_error FROM outbox WHERE reference = :r",
                                          {"r": report_id})
    assert row is not None and row["state"] == "delivered"
    assert str(row["last_error"]).startswith("refused for dpo@opgroeien.be: ") and f"SMTP {code} " in row["last_error"]
    assert row["delivered_to"] == "informatica@sint-gillis-waas.be", dict(row)


async def test_a_report_the_other_dpo_took_at_a_retry_names_both_dpos_in_the_outbox(
    bot: BotDriver, referrer: TeamsUser, smtp: SmtpTestServer, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The OCMW's DPO takes the report, the Opgroeien DPO's server says "later" (452); the retry an hour later goes to
    the Opgroeien DPO only, and is taken. Both have it now; the outbox row named only the OCMW's DPO (the retry's
    recipient was never added), so an operator reading it would mail the Opgroeien DPO a report they have."""
    report_id, _ = await report(bot, referrer)
    smtp.fail_next(452, stage="RCPT")  # the first RCPT of the attempt: dpo@opgroeien.be
    await bot.deliver()
    clock.advance(dt.timedelta(hours=1))
    await bot.deliver()

    assert [recipients for recipients, _ in breach_mails(smtp)] == [("informatica@sint-gillis-waas.be",),
                                                                    ("dpo@opgroeien.be",)]
    row = await bot.services.db.fetch_one("SELECT state, delivered_to, last_error FROM outbox WHERE reference = :r",
                                          {"r": report_id})
    assert row is not None and row["state"] == "delivered" and row["last_error"] is None, dict(row or {})
    assert sorted(str(row["delivered_to"]).splitlines()) == sorted(DPOS), dict(row)
    assert await bot.services.register.events_for(report_id) == ["breach_reported"], "nobody was refused for good"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize(("refusals", "cause"), [((550,), "permanent"), ((452, 452), "horizon")])
async def test_a_report_one_dpo_never_gets_is_a_give_up_the_alert_sees(
    settings: Settings, clock: ManualClock, smtp: SmtpTestServer, referrer: TeamsUser,
    refusals: tuple[int, ...], cause: str,
) -> None:
    """The OCMW's DPO took the report, the Opgroeien DPO's RCPT refused it for good (550), or still at the
    horizon (452): that DPO will not hear of the breach unless an operator mails them, so the give-up alert
    (vd.outbox.give_ups) must fire as it does when the relay refuses the report for both."""
    settings = dataclasses.replace(settings, telemetry=TelemetryConfig(metrics_port=0))
    app = create_app(settings, clock=clock, transport=SmtpTransport(smtp.settings()), run_worker=False,
                     telemetry=telemetry_from_settings(settings.telemetry))
    async with running_bot(app) as bot:
        await report(bot, referrer)
        for code in refusals:
            smtp.fail_next(code, stage="RCPT")  # the first RCPT of the attempt: dpo@opgroeien.be
            await bot.deliver()
            clock.advance(dt.timedelta(hours=25))
        view = bot.services.metrics_view
        assert view is not None
        async with bot.session.get(view.url) as response:
            families = {family.name: family.samples for family in text_string_to_metric_families(await response.text())}

    assert [recipients for recipients, _ in breach_mails(smtp)] == [("informatica@sint-gillis-waas.be",)]
    given_up = {(sample.labels["outbox"], sample.labels["cause"]): sample.value
                for sample in families.get("vd_outbox_give_ups", []) if sample.name.endswith("_total")}
    assert given_up == {("mail", cause): 1.0}, given_up
