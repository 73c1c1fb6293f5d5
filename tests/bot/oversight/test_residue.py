"""Nothing lingers on disk once the OCMW deleted a referral: its mails leave the outbox folder.

Over real HTTP with the embedded `outbox` transport: the `.eml` files of the referral and of its
correction versions go when the OCMW confirms the deletion (directly, or after consent was
withdrawn), other referrals' files stay, and a crash between the two is made good at the next start.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from bot.app import create_app
from bot.config import Settings
from bot.core.sent_referrals import ReferralState, ReferralStore, SentReferral
from bot.delivery.mail_transport import NoSentCopies, OutboxFolderTransport, sent_copies
from bot.delivery.smtp_transport import SmtpSettings, SmtpTransport
from bot.oversight.residue import ResidueSweeper
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, driving, running_connector
from tests.support.clock import ManualClock
from tests.support.databases import sqlite_database
from tests.support.ocmw_flow import confirm_deletion, correct_phone, link, ocmw_worker, send_and_deliver

NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


def _mails(settings: Settings, reference: str) -> list[str]:
    """The outbox folder's files of exactly this reference (not of its versions)."""
    return sorted(path.name for path in settings.outbox_dir.iterdir() if path.name.startswith(f"{reference}@"))


async def test_deletion_removes_the_mails_of_the_referral_and_its_versions_only(
    bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    await link(bot, ocmw_worker())
    reference, worker = await send_and_deliver(bot, referrer)
    other, _ = await send_and_deliver(bot, referrer)
    await bot.act(worker, "ack.receive", {"reference": reference})
    version = await correct_phone(bot, referrer, worker, reference)
    assert _mails(settings, reference) and _mails(settings, version) and _mails(settings, other)

    await confirm_deletion(bot, worker, reference)

    assert _mails(settings, reference) == []
    assert _mails(settings, version) == []
    assert _mails(settings, other) == [f"{other}@{_domain(settings)}.eml"]


async def test_deletion_after_consent_was_withdrawn_removes_the_mail(
    bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    await link(bot, ocmw_worker())
    reference, worker = await send_and_deliver(bot, referrer)
    other, _ = await send_and_deliver(bot, referrer)
    await bot.act_confirmed(referrer, "consent.withdraw", {"reference": reference})
    assert _mails(settings, reference), "withdrawing alone removes nothing: the OCMW has not deleted yet"

    await bot.act_confirmed(worker, "referral.deleted", {"reference": reference})

    assert (await bot.services.referrals.get(reference)).state == "data_deleted"  # type: ignore[union-attr]
    assert _mails(settings, reference) == []
    assert _mails(settings, other)


async def test_mails_a_crash_left_behind_go_at_the_next_start(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    async with running_connector() as (connector, url):
        async with driving(create_app(settings, clock=clock, run_worker=False), connector, url) as first:
            await link(first, ocmw_worker())
            reference, worker = await send_and_deliver(first, referrer)
            other, _ = await send_and_deliver(first, referrer)
            [mail] = [settings.outbox_dir / name for name in _mails(settings, reference)]
            kept = mail.read_bytes()
            await confirm_deletion(first, worker, reference)
            mail.write_bytes(kept)  # as if the process died between the commit and the removal
        async with driving(create_app(settings, clock=clock, run_worker=False), connector, url):
            assert _mails(settings, reference) == []
            assert _mails(settings, other)


def test_smtp_keeps_nothing_so_there_is_nothing_to_remove() -> None:
    copies = sent_copies(SmtpTransport(SmtpSettings("smtp.example.be", 587)))
    assert isinstance(copies, NoSentCopies)
    copies.remove_copy("<VD-20261128-K7M2QX@example.be>")


def _domain(settings: Settings) -> str:
    return settings.mail_from.rpartition("@")[2].strip(">").lower()


class _FlakyCopies:
    """An outbox folder that refuses the first removal (a permission problem fixed later)."""

    def __init__(self) -> None:
        self.removed: list[str] = []
        self.refusals = 1

    def holds_any(self) -> bool:
        return True

    def remove_copy(self, message_id: str) -> None:
        if self.refusals:
            self.refusals -= 1
            raise PermissionError(13, "Permission denied")
        self.removed.append(message_id)


def _deleted_referral(reference: str) -> SentReferral:
    return SentReferral(
        reference=reference, protocol_id="sgw", referrer_id="r", referrer_name="An", conversation_id="c",
        conversation_ref="{}", card_activity_id=None, lang="nl", state=ReferralState.DATA_DELETED, key_version="1",
        message_id=f"<{reference}@kindengezin.be>", created_at=NOW, queued_at=NOW,
    )


async def test_a_removal_that_failed_is_retried_by_the_sweep(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = await sqlite_database(tmp_path / "bot.sqlite3")
    referrals = ReferralStore(db)
    copies = _FlakyCopies()
    sweeper = ResidueSweeper(db=db, referrals=referrals, copies=copies)
    await sweeper.sweep()  # the start: nothing deleted yet
    referral = _deleted_referral("VD-20261128-K7M2QX")
    await referrals.add(referral)

    await sweeper.data_deleted(referral)
    assert copies.removed == [] and "not removed" in caplog.text
    await sweeper.sweep()
    assert copies.removed == [referral.message_id]
    await sweeper.sweep()
    assert copies.removed == [referral.message_id], "done once it worked"


@pytest.mark.parametrize("kept", ["smtp", "empty outbox folder"])
async def test_the_start_sweep_reads_no_deleted_referrals_when_no_copy_is_kept(tmp_path: Path, kept: str) -> None:
    """Before, every start read the Message-ID of every deleted referral (9 900 of 10 k stored in the
    benchmark) and tried to remove two files for each, also with SMTP, which keeps no copy at all."""
    db = await sqlite_database(tmp_path / "bot.sqlite3")
    referrals = ReferralStore(db)
    for number in range(3):
        await referrals.add(_deleted_referral(f"VD-20261128-K7M2Q{number}"))
    copies = NoSentCopies() if kept == "smtp" else OutboxFolderTransport(tmp_path / "outbox")
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "README.txt").write_text("not a mail")
    statements: list[str] = []

    @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def record(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    await ResidueSweeper(db=db, referrals=referrals, copies=copies).sweep()

    assert [statement for statement in statements if "referrals" in statement] == []
    assert (tmp_path / "outbox" / "README.txt").exists()


async def test_a_copy_left_in_the_outbox_folder_is_found_by_the_start_sweep(tmp_path: Path) -> None:
    db = await sqlite_database(tmp_path / "bot.sqlite3")
    referrals = ReferralStore(db)
    await referrals.add(_deleted_referral("VD-20261128-K7M2QX"))
    folder = OutboxFolderTransport(tmp_path / "outbox")
    (tmp_path / "outbox").mkdir()
    left = tmp_path / "outbox" / "VD-20261128-K7M2QX@kindengezin.be.tmp"  # a crash mid-write, then the deletion
    left.write_bytes(b"encrypted")

    await ResidueSweeper(db=db, referrals=referrals, copies=folder).sweep()

    assert not left.exists()
