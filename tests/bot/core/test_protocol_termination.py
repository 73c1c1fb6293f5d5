"""Ending a protocol without a restart, over real HTTP with the manual clock: the file on disk changes
while the bot runs, and the next action follows it; a bad file leaves the last good protocols in use."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import shutil
from pathlib import Path

import pytest

from bot.cli.checks import run_checks
from bot.config import Settings
from bot.referral.drafts import DraftState
from tests.conftest import REPLIES_SHOWN_AT_ONCE
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.card_reading import actions, texts
from tests.support.clock import ManualClock
from tests.support.ocmw_flow import CHANNEL, link, referred_and_delivered, reported_wrong
from tests.support.referral_flow import CLIENT_VALUES, MAILBOX, PROTOCOL_ID, open_consent, reach_review

SHIPPED = Settings().protocols_dir / "sint-gillis-waas.toml"
TODAY = dt.date(2026, 11, 28)  # the clock fixture's day in Brussels


@pytest.fixture
def protocol_file(tmp_path: Path) -> Path:
    """The Sint-Gillis-Waas protocol as the only file of the bot's protocols folder."""
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


def end_on(path: Path, last_day: dt.date) -> None:
    """What an administrator does to end the protocol: set `ends_on` in its file."""
    path.write_text(SHIPPED.read_text().replace("# ends_on = 2027-03-01", f"ends_on = {last_day.isoformat()}"))


def outbox_files(settings: Settings) -> list[Path]:
    return sorted(settings.outbox_dir.glob("*.eml")) if settings.outbox_dir.exists() else []


def reference_in(card: dict[str, object]) -> str:
    [reference] = {word for word in texts(card).replace('"', " ").split() if word.startswith("VD-")}
    return reference


async def test_a_protocol_ended_while_the_bot_runs_refuses_the_send_and_wipes_the_draft(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, protocol_file: Path
) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    reference = (await bot.services.drafts.get(draft_id)).reference  # type: ignore[union-attr]

    end_on(protocol_file, TODAY - dt.timedelta(days=1))
    refused = await bot.act(referrer, "referral.send", {"draftId": draft_id})

    assert "Het protocol met OCMW Sint-Gillis-Waas geldt niet meer" in texts(refused)
    assert "Er is niets verstuurd en de ingevulde gegevens zijn gewist" in texts(refused)
    assert reference in texts(refused), "cancelled by the bot under this reference: the card gives it"
    assert "referral.send" not in actions(refused) and "referral.start" in actions(refused)
    assert not any(value in texts(refused) for value in CLIENT_VALUES)
    assert await bot.deliver() == 0 and await bot.services.outbox.counts() == {} and outbox_files(settings) == []
    draft = await bot.services.drafts.get(draft_id)
    assert draft is not None and draft.state == DraftState.CANCELLED and draft.details is None
    row = await bot.services.db.fetch_one("SELECT sealed_details, consent_json FROM drafts WHERE id = :id",
                                          {"id": draft_id})
    assert row is not None
    assert (row["sealed_details"], row["consent_json"]) == (None, None)
    assert (await bot.services.register.events_for(reference))[-1] == "cancelled"
    assert await bot.services.referrals.get(reference) is None
    again = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert "geannuleerd" in texts(again).lower() and reference in texts(again)
    [start] = await bot.say(referrer, "nieuw")
    assert "Doorverwijzen kan vandaag niet" in texts(start)

    protocol_file.write_text(SHIPPED.read_text())  # the end date taken out again
    draft_id, _ = await reach_review(bot, referrer)
    queued = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert await bot.deliver() == 1
    [eml] = outbox_files(settings)
    assert reference_in(queued) in eml.name


async def test_ends_on_is_the_last_day_a_referral_can_be_sent(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, protocol_file: Path, clock: ManualClock
) -> None:
    end_on(protocol_file, TODAY)
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert await bot.deliver() == 1 and len(outbox_files(settings)) == 1

    clock.current = dt.datetime(2026, 11, 28, 22, 50, tzinfo=dt.UTC)  # 23:50 in Brussels
    draft_id, _ = await reach_review(bot, referrer)
    clock.advance(dt.timedelta(minutes=15))  # 00:05 on the 29th
    refused = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert "geldt niet meer" in texts(refused)
    assert await bot.deliver() == 0 and len(outbox_files(settings)) == 1


async def test_a_mail_still_queued_when_its_protocol_ends_does_not_leave(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, protocol_file: Path, clock: ManualClock
) -> None:
    end_on(protocol_file, TODAY)
    draft_id, _ = await reach_review(bot, referrer)
    reference = reference_in(await bot.act(referrer, "referral.send", {"draftId": draft_id}))
    clock.advance(dt.timedelta(days=1))  # the mail server was down until the next day

    assert await bot.deliver() == 1
    assert outbox_files(settings) == []
    referral = await bot.services.referrals.get(reference)
    assert referral is not None and referral.state == "failed"
    assert referral.failure_reason == f"protocol {PROTOCOL_ID} not in force on 2026-11-29"
    assert (await bot.services.register.events_for(reference))[-1] == "delivery_failed"
    told = [texts(call.body) for call in bot.connector.calls if call.path.startswith(
        f"/v3/conversations/{referrer.conversation_id}/")]
    assert any("NIET" in text and reference in text for text in told)


@pytest.mark.parametrize("kind", ["referral", "correction"])
async def test_a_mail_that_could_not_leave_before_its_protocol_ended_is_not_to_be_sent_again(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, protocol_file: Path, clock: ManualClock, kind: str
) -> None:
    """A referral, or the correction the OCMW asked for, queued on the protocol's last day while the mail server was
    down until the next: it may not leave, and the referrer was told to make the referral again ("Maak de
    doorverwijzing opnieuw") or to send the correction again from its card ("verstuur de correctie opnieuw"), both of
    which the bot refuses once the protocol has ended. The referrer is told why it was not sent and that no new
    attempt can go out, in the card and the message."""
    end_on(protocol_file, TODAY)
    if kind == "referral":
        draft_id, _ = await reach_review(bot, referrer)
        reference = reference_in(await bot.act(referrer, "referral.send", {"draftId": draft_id}))
    else:
        reference = f"{await _correction_submitted(bot, referrer, ocmw_worker)}-2"
    await bot.settle()
    before = len(bot.connector.calls)
    clock.advance(dt.timedelta(days=1))  # the mail server was down until the next day

    await bot.deliver()
    await bot.settle()
    assert (await bot.services.referrals.get(reference)).state == "failed"  # type: ignore[union-attr]
    told = " ".join(texts(call.body) for call in bot.connector.calls[before:]
                    if call.path.startswith(f"/v3/conversations/{referrer.conversation_id}/"))
    for impossible in ("Maak de doorverwijzing opnieuw", "verstuur de correctie opnieuw", "Vul het opnieuw in"):
        assert impossible not in told, f"told to do what the bot refuses: {told}"
    assert "geldt niet meer" in told and reference in told, told


async def test_the_ocmw_told_a_correction_would_come_learns_it_will_not(
    bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser, protocol_file: Path, clock: ManualClock
) -> None:
    """The OCMW reported the phone number wrong on the protocol's last day and was told "De correctie komt als een
    nieuwe kaart in dit gesprek"; the referrer sent it, but the mail server was down until the protocol had ended, so
    the correction may never leave. The referrer is told; the OCMW, still waiting for the new card, must be too, with
    whom to contact instead, as for a report made after the end. Only the item's name, never the family's data."""
    end_on(protocol_file, TODAY)
    original = await _correction_submitted(bot, referrer, ocmw_worker)
    await bot.settle()
    before = len(bot.connector.calls)
    clock.advance(dt.timedelta(days=1))  # the mail server was down until the next day

    await bot.deliver()
    await bot.settle()
    assert (await bot.services.referrals.get(f"{original}-2")).state == "failed"  # type: ignore[union-attr]
    to_ocmw = [texts(call.body) for call in bot.connector.calls[before:]
               if call.method == "POST" and call.path.startswith(f"/v3/conversations/{CHANNEL}")]
    told = [text for text in to_ocmw if original in text and "correctie" in text and "komt niet" in text]
    assert len(told) == 1, f"the OCMW's channel got: {to_ocmw}"
    assert "telefoonnummer" in told[0] and "Kind en Gezin team Noord-Oost Waasland" in told[0], told[0]
    assert not any(value in told[0] for value in (*CLIENT_VALUES, "0470 11 22 33", "470112233")), told[0]

    await bot.deliver()
    await bot.settle()
    assert len([c for c in bot.connector.calls[before:] if c.method == "POST" and c.path.startswith(
        f"/v3/conversations/{CHANNEL}") and "komt niet" in texts(c.body)]) == 1, "said once"


async def _correction_submitted(bot: BotDriver, referrer: TeamsUser, ocmw_worker: TeamsUser) -> str:
    """A referral delivered and acknowledged, its phone number reported wrong and corrected: the original's reference
    (the correction, `<reference>-2`, is queued)."""
    await link(bot, ocmw_worker)
    original, card_id = await referred_and_delivered(bot, referrer)
    worker = ocmw_worker.in_thread(card_id)
    await bot.act(worker, "ack.receive", {"reference": original})
    correction_id = await reported_wrong(bot, referrer, worker, original)
    await bot.act(referrer, "correction.submit", {"correctionId": correction_id, "phone": "0470 11 22 33"})
    return original


async def test_a_bad_file_keeps_the_protocols_read_before_and_readyz_says_which(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, protocol_file: Path, clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = protocol_file.read_text()
    with caplog.at_level(logging.ERROR, logger="bot.core.protocols"):
        protocol_file.write_text(good.replace('mailbox = "welzijnshuis@sint-gillis-waas.be"', 'mailbox = "nergens"'))
        response = await bot.session.get(f"{bot.bot_url}/readyz")
    body = await response.json()

    assert response.status == 200 and body["status"] == "ready", body
    stale = body["checks"]["protocol_files"]
    assert stale.startswith("stale: ") and "sint-gillis-waas.toml" in stale and "'recipient.mailbox'" in stale
    assert [record.getMessage() for record in caplog.records if "recipient.mailbox" in record.getMessage()]
    [check] = [result for result in await run_checks(settings, clock) if result.name == "protocol files"]
    assert not check.ok and "sint-gillis-waas.toml" in check.detail and "recipient.mailbox" in check.detail

    draft_id, _ = await reach_review(bot, referrer)  # the bot goes on under the last good file
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert await bot.deliver() == 1
    [eml] = outbox_files(settings)
    assert f"To: {MAILBOX}" in eml.read_text()

    protocol_file.write_text(good)
    response = await bot.session.get(f"{bot.bot_url}/readyz")
    assert (await response.json())["checks"]["protocol_files"] == "ok"


async def test_a_protocol_file_removed_mid_referral_stops_it_naming_the_ocmw(
    bot: BotDriver, referrer: TeamsUser, protocol_file: Path
) -> None:
    other = protocol_file.with_name("beveren.toml")
    other.write_text(SHIPPED.read_text().replace(PROTOCOL_ID, "OR-KG-NOW-OCMW-BEV-2026")
                     .replace("OCMW Sint-Gillis-Waas", "OCMW Beveren").replace('["9170"]', '["9120"]'))
    draft_id, _ = await reach_review(bot, referrer)
    protocol_file.unlink()

    refused = await bot.act(referrer, "referral.send", {"draftId": draft_id})
    assert "Het protocol met OCMW Sint-Gillis-Waas geldt niet meer" in texts(refused)
    draft = await bot.services.drafts.get(draft_id)
    assert draft is not None and draft.details is None
    [start] = await bot.say(referrer, "nieuw")
    assert "OCMW Beveren" in texts(start) and "OCMW Sint-Gillis-Waas" not in texts(start)


@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        (dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC), False),
        (dt.datetime(2026, 12, 15, 22, 59, tzinfo=dt.UTC), False),  # 23:59 on 15 December in Brussels
        (dt.datetime(2026, 12, 15, 23, 0, tzinfo=dt.UTC), True),  # 16 December: the last month begins
        (dt.datetime(2027, 1, 15, 22, 59, tzinfo=dt.UTC), True),  # the last day
    ],
)
async def test_the_end_date_is_on_the_consent_card_in_the_last_month_only(
    bot: BotDriver, referrer: TeamsUser, protocol_file: Path, clock: ManualClock, moment: dt.datetime, shown: bool
) -> None:
    end_on(protocol_file, dt.date(2027, 1, 15))
    clock.current = moment
    card = await open_consent(bot, referrer)
    notice = "Let op: het protocol met OCMW Sint-Gillis-Waas loopt af. Je kan nog naar OCMW Sint-Gillis-Waas " \
             "doorverwijzen tot en met 15/01/2027."
    assert (notice in texts(card)) is shown


async def test_the_end_date_in_english_and_no_referral_after_it(
    bot: BotDriver, referrer: TeamsUser, protocol_file: Path, clock: ManualClock
) -> None:
    end_on(protocol_file, dt.date(2027, 1, 15))
    clock.current = dt.datetime(2027, 1, 10, 9, 0, tzinfo=dt.UTC)
    english = dataclasses.replace(referrer, locale="en-US")
    card = await open_consent(bot, english)
    assert "the protocol with OCMW Sint-Gillis-Waas is ending" in texts(card)
    assert "up to and including 15/01/2027" in texts(card)
    clock.current = dt.datetime(2027, 1, 16, 9, 0, tzinfo=dt.UTC)
    [start] = await bot.say(referrer, "nieuw")
    assert "Doorverwijzen kan vandaag niet" in texts(start)
