"""`python -m bot breach-report`: both DPOs told at once, references, categories and counts only, recorded
(whole, also when the command is killed); the same report and mail as the Teams card (`bot.evidence.breach_report`)."""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import os
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from bot.cli.breach_report import add_breach_command, run_breach_command
from bot.config import Settings
from tests.conftest import ZIP_PASSWORD
from tests.support.activities import TeamsUser
from tests.support.bot_process import PROJECT_ROOT
from tests.support.bot_server import BotDriver
from tests.support.clock import ManualClock
from tests.support.referral_flow import CLIENT_VALUES, PROTOCOL_ID, reach_review
from tests.support.smtp_server import smtp_server


async def _sent_reference(bot: BotDriver, referrer: TeamsUser) -> str:
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    await bot.deliver()
    [referral] = await bot.services.referrals.for_referrer(referrer.aad_object_id)
    return referral.reference


def _reports(settings: Settings, before: set[Path]) -> list[tuple[Path, EmailMessage]]:
    found = []
    for path in sorted(set(settings.outbox_dir.glob("*.eml")) - before):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        found.append((path, message))
    return found


def _body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return " ".join(str(part.get_content()).split())


async def test_both_dpos_are_told_without_client_data(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock
) -> None:
    reference = await _sent_reference(bot, referrer)
    before = set(settings.outbox_dir.glob("*.eml"))

    status = await _run(settings, clock, "--reference", reference, "--category", "contact:phone",
                        "--what-happened", "De mail ging naar een verkeerd adres.", "--reported-by", "DPO Opgroeien")

    assert status == 0
    [(report, message)] = _reports(settings, before)
    assert "dpo@opgroeien.be" in message["To"] and "informatica@sint-gillis-waas.be" in message["To"]
    assert "artikel 9" in message["Subject"]
    text = _body(message)
    assert reference in text and "contact:phone" in text and "De mail ging naar een verkeerd adres." in text
    assert "Melder: DPO Opgroeien, functioneel beheerder, Opgroeien regie" in text
    assert "Uiterlijk melden: 01/12/2026 10:00" in text and "nog 72 uur" in text, "found now, reported now"
    assert "Vlaamse Toezichtcommissie" in text
    assert not [value for value in CLIENT_VALUES if value in report.read_text("utf-8", errors="replace")]
    assert (await bot.services.register.events_for(reference))[-1] == "breach_reported"
    [report_id] = [word for word in str(message["Subject"]).split() if word.startswith("DL-")]
    assert await bot.services.register.events_for(report_id) == ["breach_reported"]


async def test_an_unknown_reference_without_a_protocol_sends_nothing(
    settings: Settings, clock: ManualClock, bot: BotDriver
) -> None:
    assert await _run(settings, clock, "--reference", "VD-20261128-AAAAAA") == 2
    assert not settings.outbox_dir.exists() or not list(settings.outbox_dir.glob("*.eml"))


async def test_with_the_protocol_an_unknown_reference_is_listed_and_a_leaked_password_counts_the_referrals(
    bot: BotDriver, referrer: TeamsUser, colleague: TeamsUser, settings: Settings, clock: ManualClock
) -> None:
    await _sent_reference(bot, referrer)
    await _sent_reference(bot, colleague)
    before = set(settings.outbox_dir.glob("*.eml"))

    status = await _run(settings, clock, "--protocol", PROTOCOL_ID, "--kind", "zip_password_leaked",
                        "--reference", "VD-20261128-AAAAAA", "--discovered-at", "2026-11-28T09:45")

    assert status == 0
    [(_, message)] = _reports(settings, before)
    text = _body(message)
    assert "- VD-20261128-AAAAAA: onbekend" in text
    assert "de ouders van 2 gezin(nen)" in text and "Daarvan bewaart het OCMW er nog 2" in text
    assert "Ontdekt op: 28/11/2026 09:45" in text and "Uiterlijk melden: 01/12/2026 09:45" in text


async def test_a_discovery_in_the_future_or_a_malformed_reference_is_refused(
    settings: Settings, clock: ManualClock, bot: BotDriver
) -> None:
    assert await _run(settings, clock, "--protocol", PROTOCOL_ID, "--discovered-at", "2026-11-29T09:00") == 2
    assert await _run(settings, clock, "--reference", "VD-2026") == 2
    assert await _run(settings, clock) == 2, "neither a reference nor a protocol"
    assert not settings.outbox_dir.exists() or not list(settings.outbox_dir.glob("*.eml"))


@pytest.mark.parametrize("moment", ["before", "after"])
async def test_a_kill_at_the_commit_records_the_report_whole_or_not_at_all(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, moment: str
) -> None:
    """The report's `breach_reported` entry and those of the references it names: all or none, whatever the kill.

    They were one commit each: killed between them, the register said a report was mailed while the
    referral it names had no entry, and the DPO looking that family's reference up did not see the breach.
    """
    reference = await _sent_reference(bot, referrer)
    env = {**os.environ, "BOT_DATA_DIR": str(settings.data_dir), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
           "CRASH_AT": f"breach_reported:{moment}"}

    killed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "tests.support.crashing_bot", "breach-report", "--reference", reference,
                         "--what-happened", "De mail ging naar een verkeerd adres.", "--reported-by", "DPO Opgroeien"],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False)

    assert "crashing_bot: SIGKILL" in killed.stderr, killed.stdout + killed.stderr
    entries = [str(row["reference"]) for row in await bot.services.db.fetch_all(
        "SELECT reference FROM register WHERE event = 'breach_reported' ORDER BY seq")]
    named = entries.count(reference)
    assert (len(entries) - named, named) == {"before": (0, 0), "after": (1, 1)}[moment], entries


async def test_a_report_one_dpo_s_server_refused_but_the_other_got_is_recorded(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """The relay refuses one DPO at RCPT (550: a mistyped or removed address) and takes the mail for the other.

    The OCMW's DPO has the report; the register, the DPO's proof, must say so, and the command must not say
    "NOT sent" to both (the operator then runs it again, and the OCMW's DPO gets a second report, another id).
    """
    reference = await _sent_reference(bot, referrer)
    with smtp_server(tls="starttls") as server:
        smtp_settings = Settings.from_mapping({
            "BOT_DATA_DIR": str(settings.data_dir), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD, "MAIL_TRANSPORT": "smtp",
            "SMTP_HOST": server.host, "SMTP_PORT": str(server.port), "SMTP_CA_FILE": str(server.ca_path),
            "SMTP_TIMEOUT_SECONDS": "5"})
        server.fail_next(550, stage="RCPT")  # the first RCPT: dpo@opgroeien.be

        status = await _run(smtp_settings, clock, "--reference", reference, "--what-happened",
                            "De mail ging naar een verkeerd adres.", "--reported-by", "DPO Opgroeien")

        [received] = server.messages
    assert received.rcpt_tos == ("informatica@sint-gillis-waas.be",), "the OCMW's DPO got the report"
    subject = str(email.message_from_bytes(received.data, policy=email.policy.default)["Subject"])
    [report_id] = [word for word in subject.split() if word.startswith("DL-")]
    printed = capsys.readouterr()
    assert await bot.services.register.events_for(report_id) == ["breach_reported"], (
        f"exit {status}, the register has nothing for the report the OCMW's DPO holds: {printed.err.strip()}")
    sent = ("sent to informatica@sint-gillis-waas.be, refused for dpo@opgroeien.be: SMTP 550 from server to a"
            " recipient (RCPT): refused")
    assert status == 1 and f"{report_id} {sent} (1 reference(s), 0 unknown)" in printed.out


async def _run(settings: Settings, clock: ManualClock, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_breach_command(parser.add_subparsers(dest="command"))
    arguments = parser.parse_args(["breach-report", *argv])
    return await asyncio.to_thread(run_breach_command, arguments, settings, clock)
