"""The runbook in infra/README.md (*Operations*): every `python -m bot` command it names exists, and each
step that can run here does what it says, run as the runbook writes it (placeholders filled in).

Not testable here: the `az` commands themselves (point-in-time restore, Key Vault, App Service). Their
effects are played by what the bot sees: a new secret version in the Key Vault stand-in, another draft
key at start, a copy of the PostgreSQL database under a new name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import cards
from bot.app import create_app
from bot.cli.main import build_parser
from bot.config import Settings
from bot.delivery.smtp_transport import SmtpTransport
from bot.evidence.register import ProcessingRegister, RegisterEvent
from bot.storage.database import DatabaseSettings, open_database
from tests.infra.helpers import ROOT
from tests.support import sevenzip
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import actions, texts
from tests.support.clock import ManualClock
from tests.support.databases import postgres_database, postgres_url
from tests.support.keyvault_provider import vault_provider
from tests.support.keyvault_standin import keyvault_standin
from tests.support.ocmw_flow import CHANNEL, link, ocmw_worker, referred_and_delivered
from tests.support.postgres_server import PostgresServer
from tests.support.referral_flow import PROTOCOL_ID, open_consent, reach_review
from tests.support.smtp_server import smtp_server

RUNBOOK = (ROOT / "infra" / "README.md").read_text(encoding="utf-8").split("## Operations", 1)[1].split("\n## ", 1)[0]
SHIPPED = Settings().protocols_dir / "sint-gillis-waas.toml"
SECRET = "zip-password-ocmw-sint-gillis-waas"
PLACEHOLDERS = {"<protocol id>": PROTOCOL_ID}


def runbook_commands() -> list[str]:
    """Every `python -m bot …` in the runbook, as written (up to the end of its code span or `&&`)."""
    found = [match.strip() for match in re.findall(r"python -m bot ((?:(?!&&)[^`'\n])*)", RUNBOOK)]
    return [command for command in found if not command.startswith("…")]  # "a `python -m bot …` command"


def runbook_argv(subcommand: str, **values: str) -> list[str]:
    """The runbook's own command line for `subcommand`, its placeholders filled in."""
    [line] = {command for command in runbook_commands()
              if command == subcommand or command.startswith(subcommand + " ")}
    for placeholder, value in {**PLACEHOLDERS, **values}.items():
        line = line.replace(placeholder, value)
    assert "<" not in line, f"fill in the placeholder of: {line}"
    return shlex.split(line)


def run_bot(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m bot ARGV` in a process of its own, as an administrator runs it in the container.

    From an async test: `await asyncio.to_thread(run_bot, ...)`, so the bot in this process keeps serving
    (and finishes the transaction it may be in) while the command runs.
    """
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("BOT_", "DATABASE_", "MAIL_"))}
    return subprocess.run(  # nosec B603: our own interpreter and module
        [sys.executable, "-m", "bot", *argv], cwd=ROOT, env={**clean, **env},
        capture_output=True, text=True, timeout=120, check=False,
    )


def embedded_env(settings: Settings) -> dict[str, str]:
    return {"BOT_DATA_DIR": str(settings.data_dir), "PROTOCOLS_DIR": str(settings.protocols_dir),
            "LOCAL_ZIP_PASSWORD": settings.local_zip_password or ""}


def test_every_command_the_runbook_names_is_one_the_bot_knows() -> None:
    commands = runbook_commands()
    assert len(commands) >= 12, commands
    used = {shlex.split(command)[0] for command in commands}
    assert {"check", "protocols", "link-ocmw", "migrate", "register", "breach-report"} <= used
    parser = build_parser()
    for command in commands:
        argv = shlex.split(re.sub(r"<[^>]+>", "x", command))
        try:
            parser.parse_args(argv)
        except SystemExit as exit_:  # argparse's way of refusing
            pytest.fail(f"python -m bot {command}: refused ({exit_.code})")


def test_the_generated_secrets_are_what_the_bot_accepts() -> None:
    from bot.secrets.zip_passwords import check_password, format_for_reading, generate_password

    password = generate_password()
    assert check_password(password, SECRET) == password.encode() and len(format_for_reading(password).split()) == 6
    assert "secrets.token_hex(32)" in RUNBOOK, "the draft key: 64 hexadecimal characters"
    assert Settings.from_mapping({"LOCAL_DRAFT_KEY": "ab" * 32}).local_draft_key == bytes.fromhex("ab" * 32)


# --- rotate the ZIP password ------------------------------------------------------------------------------


async def test_a_rotated_zip_password_encrypts_the_next_package_and_the_mail_names_its_version(
    settings: Settings, clock: ManualClock, referrer: TeamsUser, tmp_path: Path
) -> None:
    with smtp_server(tls="starttls") as smtp:
        async with keyvault_standin() as vault, vault_provider(
                vault, clock, attempts=2, backoff_seconds=0.01, timeout_seconds=2,
                cache_ttl=dt.timedelta(minutes=10)) as provider:
            old = vault.set_secret(SECRET, "QW3E-RT7Y-UP9A-SD2F-GH4J")
            app = create_app(settings, clock=clock, passwords=provider, transport=SmtpTransport(smtp.settings()),
                             run_worker=False)
            async with running_bot(app) as bot:
                for _ in range(2):
                    draft_id, _ = await reach_review(bot, referrer)
                    await bot.act(referrer, "referral.send", {"draftId": draft_id})
                    await bot.deliver()
                    if len(smtp.messages) == 1:  # step 2: a new version of the same secret
                        new = vault.set_secret(SECRET, "ZX8C-VB6N-MK4L-PQ2W-ER7T")
                        clock.advance(dt.timedelta(minutes=11))  # step 4: within KEY_VAULT_CACHE_MINUTES
    first, second = (email.message_from_bytes(mail.data, policy=email.policy.default) for mail in smtp.messages)
    assert old in str(first.get_body(preferencelist=("plain",))) and new in str(second.get_body(("plain",)))
    [attachment] = list(second.iter_attachments())
    package = attachment.get_content()
    assert sevenzip.extract(package, "ZX8C-VB6N-MK4L-PQ2W-ER7T", tmp_path / "new").returncode == 0
    assert sevenzip.extract(package, "QW3E-RT7Y-UP9A-SD2F-GH4J", tmp_path / "old").returncode != 0


# --- rotate the draft key ---------------------------------------------------------------------------------


async def test_a_new_draft_key_at_the_restart_expires_only_the_drafts_being_entered(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    async with running_bot(create_app(settings, clock=clock, run_worker=False, draft_key=b"\x01" * 32)) as bot:
        draft_id, _ = await reach_review(bot, referrer)
        sent_id, _ = await reach_review(bot, TeamsUser("aad-referrer-9", "Bea Vroeger", "a:personal-9"))
        await bot.act(TeamsUser("aad-referrer-9", "Bea Vroeger", "a:personal-9"), "referral.send",
                      {"draftId": sent_id})
    async with running_bot(create_app(settings, clock=clock, run_worker=False, draft_key=b"\x02" * 32)) as bot:
        card = await bot.act(referrer, "referral.send", {"draftId": draft_id})
        assert cards.text("nl", "problem.draft_expired.title") in texts(card)
        assert await bot.deliver() == 1, "what was sent before the restart still goes out"
        again = await open_consent(bot, referrer)  # and the referrer simply starts again
        assert "referral.consent" in actions(again)


# --- add and end a protocol -------------------------------------------------------------------------------


@pytest.fixture
def protocols_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "protocols"
    folder.mkdir()
    shutil.copy(SHIPPED, folder / SHIPPED.name)
    return folder


@pytest.fixture
async def bot_on_folder(protocols_folder: Path, tmp_path: Path, clock: ManualClock) -> AsyncIterator[BotDriver]:
    settings = Settings.from_mapping({"BOT_DATA_DIR": str(tmp_path / "data"), "PROTOCOLS_DIR": str(protocols_folder),
                                      "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD"})
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as driver:
        yield driver


async def test_a_protocol_is_checked_before_it_is_added_and_ended_by_its_last_day(
    bot_on_folder: BotDriver, protocols_folder: Path, referrer: TeamsUser
) -> None:
    checked = await asyncio.to_thread(run_bot, ["protocols", "check", "--dir", str(protocols_folder)], {})
    assert checked.returncode == 0 and checked.stdout.startswith(f"OK   {PROTOCOL_ID}")
    assert "no end date" in checked.stdout
    production = await asyncio.to_thread(
        run_bot, [*runbook_argv("protocols check --production"), "--dir", str(protocols_folder)], {})
    assert production.returncode == 1 and "sender.teams" in production.stdout, "who may refer is required"

    await open_consent(bot_on_folder, referrer)  # in force today (28 November 2026)
    path = protocols_folder / SHIPPED.name
    path.write_text(SHIPPED.read_text().replace("# ends_on = 2027-03-01", "ends_on = 2026-11-27"))
    ended = await asyncio.to_thread(run_bot, ["protocols", "check", "--dir", str(protocols_folder)], {})
    assert ended.returncode == 0 and "last day 2026-11-27" in ended.stdout
    posted = await bot_on_folder.say(referrer, "nieuw")  # no restart: the next request reads the file
    assert posted and "referral.consent" not in str(posted), "no new referral under an ended protocol"


# --- restore the database from a backup -------------------------------------------------------------------


async def test_a_restored_database_is_current_and_its_register_verifies(postgres: PostgresServer) -> None:
    original = await postgres_database(postgres)
    register = ProcessingRegister(original)
    for number in range(3):
        await register.append(at=dt.datetime(2026, 11, 28, 9, number, tzinfo=dt.UTC), event=RegisterEvent.DELIVERED,
                              actor_id="aad-1", actor_name="An", protocol_id=PROTOCOL_ID,
                              reference=f"VD-20261128-K7M2Q{number + 2}", detail="delivered")
    assert original.settings is not None and original.settings.url is not None
    name = original.settings.url.rsplit("/", 1)[1].split("?", 1)[0]
    await original.close()
    restored = postgres_url(postgres, name)  # point-in-time restore: a new server holding the same data
    env = {"DATABASE_URL": restored, "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD", "LOCAL_DRAFT_KEY": "ab" * 32,
           "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1"}

    migrated = await asyncio.to_thread(run_bot, runbook_argv("migrate"), env)
    assert migrated.returncode == 0, migrated.stderr
    verified = await asyncio.to_thread(run_bot, runbook_argv("register verify"), env)
    assert verified.returncode == 0 and "3 entries" in verified.stdout + verified.stderr, verified.stdout
    copy = open_database(DatabaseSettings(sqlite_path=Path("/nonexistent"), url=restored))
    try:
        entries = await ProcessingRegister(copy).events_for("VD-20261128-K7M2Q3")
    finally:
        await copy.close()
    assert entries == ["delivered"]


# --- move an OCMW's link to another channel ---------------------------------------------------------------


async def test_moving_the_link_sends_new_cards_to_the_new_channel_and_refuses_the_old_cards(
    bot: BotDriver, settings: Settings, referrer: TeamsUser
) -> None:
    await link(bot, ocmw_worker())
    reference, old_card = await referred_and_delivered(bot, referrer)

    made = await asyncio.to_thread(run_bot, runbook_argv("link-ocmw"), embedded_env(settings))
    assert made.returncode == 0, made.stderr
    code = made.stdout.strip().splitlines()[-1]
    new_channel = "19:ocmw-nieuw-kanaal@thread.tacv2"
    worker = TeamsUser("aad-ocmw-2", "Omar Collega", new_channel, channel=True)
    [question] = await bot.say(worker, f"<at>Veilig doorverwijzen</at> koppel {code}")
    confirm = question["attachments"][0]["content"]
    assert cards.text("nl", "link.confirm.title") in texts(confirm)
    done = await bot.act(worker, "link.confirm", actions(confirm)["link.confirm"])
    assert "Gekoppeld" in texts(done)

    refused = await bot.banner(ocmw_worker().in_thread(old_card), "ack.receive", {"reference": reference})
    assert cards.text("nl", "problem.not_ocmw_conversation.title") in refused
    moved_at = len(bot.connector.calls)
    await referred_and_delivered_to(bot, referrer, new_channel)
    assert not any(call.path.startswith(f"/v3/conversations/{CHANNEL}/") and call.method == "POST"
                   for call in bot.connector.calls[moved_at:]), "nothing new goes to the old channel"


async def referred_and_delivered_to(bot: BotDriver, referrer: TeamsUser, channel: str) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    before = len(bot.connector.calls)
    await bot.deliver()
    assert any(call.method == "POST" and call.path.startswith(f"/v3/conversations/{channel}/")
               for call in bot.connector.calls[before:]), "the new referral's card is in the new channel"


# --- a DPO's register request, a breach ---------------------------------------------------------------------


async def test_the_register_export_the_runbook_names_holds_the_referral_and_is_private(
    bot: BotDriver, settings: Settings, referrer: TeamsUser, tmp_path: Path
) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    await bot.deliver()
    [referral] = await bot.services.referrals.for_referrer(referrer.aad_object_id)
    env = embedded_env(settings)

    verified = await asyncio.to_thread(run_bot, runbook_argv("register verify"), env)
    assert verified.returncode == 0, verified.stdout
    argv = runbook_argv("register export", **{"/tmp/register.csv": str(tmp_path / "register.csv")})
    argv[argv.index("--from") + 1:argv.index("--from") + 2] = ["2026-11-01"]
    argv[argv.index("--to") + 1:argv.index("--to") + 2] = ["2026-11-30"]
    exported = await asyncio.to_thread(run_bot, argv, env)
    assert exported.returncode == 0, exported.stderr
    written = tmp_path / "register.csv"
    assert referral.reference in written.read_text(encoding="utf-8")
    assert written.stat().st_mode & 0o077 == 0


async def test_the_breach_report_the_runbook_names_reaches_both_dpos(bot: BotDriver, settings: Settings) -> None:
    before = set(settings.outbox_dir.glob("*.eml")) if settings.outbox_dir.exists() else set()
    argv = runbook_argv("breach-report", **{
        "<what, without names or addresses>": "De mail ging naar een verkeerd adres.",
        "<your name>": "Functioneel beheerder",
    })
    sent = await asyncio.to_thread(run_bot, argv, embedded_env(settings))
    assert sent.returncode == 0, sent.stderr
    [report] = set(settings.outbox_dir.glob("*.eml")) - before
    message = email.message_from_bytes(report.read_bytes(), policy=email.policy.default)
    assert "dpo@opgroeien.be" in str(message["To"]) and "informatica@sint-gillis-waas.be" in str(message["To"])
    [report_id] = [word for word in str(message["Subject"]).split() if word.startswith("DL-")]
    assert await asyncio.wait_for(bot.services.register.events_for(report_id), 5) == ["breach_reported"]
