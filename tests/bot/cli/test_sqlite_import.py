"""`python -m bot migrate --from-sqlite FILE`: a deployment that ran on SQLite goes on on PostgreSQL.

A real bot on SQLite refers and delivers; its file is imported into a new PostgreSQL database; the
same bot on PostgreSQL takes the next step (the OCMW acknowledges) and the register's chain runs
on unbroken. The import never changes the file, refuses a target that holds anything, and a copy
that does not check out (a broken chain) is rolled back whole. Its private copy of the file goes,
also when the command is killed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.app import create_app
from bot.cli.sqlite_import import ImportFailed, ImportRefused, import_sqlite
from bot.config import Settings
from bot.evidence.register import ProcessingRegister
from bot.storage.database import Database
from tests.conftest import ZIP_PASSWORD
from tests.support.activities import TeamsUser
from tests.support.bot_process import PROJECT_ROOT
from tests.support.bot_server import driving, running_connector
from tests.support.clock import ManualClock
from tests.support.databases import postgres_database, postgres_url, sql
from tests.support.ocmw_flow import link, ocmw_worker, referred_and_delivered
from tests.support.postgres_server import PostgresServer
from tests.support.smtp_server import free_port

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "botbuilder_era.sql"
DRAFT_KEY = "ab" * 32


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _tables(db: Database) -> dict[str, int]:
    names = ("drafts", "referrals", "register", "outbox", "message_outbox", "card_slots", "ocmw_links",
             "pairing_codes", "corrections", "reminders")
    return {name: int(await db.scalar(f"SELECT COUNT(*) AS n FROM {name}")) for name in names}  # noqa: S608


async def test_a_sqlite_deployment_goes_on_on_postgresql(
    settings: Settings, clock: ManualClock, referrer: TeamsUser, postgres: PostgresServer, tmp_path: Path
) -> None:
    worker = ocmw_worker()
    async with running_connector() as (connector, url):
        embedded = create_app(settings, clock=clock, run_worker=False, draft_key=bytes.fromhex(DRAFT_KEY))
        async with driving(embedded, connector, url) as bot:
            await link(bot, worker)
            reference, card_id = await referred_and_delivered(bot, referrer)
            await bot.settle()
        file = settings.database_path
        before = _digest(file)

        target = await postgres_database(postgres)
        result = await import_sqlite(target, file)
        assert _digest(file) == before, "the old deployment's file is only read"
        assert result.copied["referrals"] == 1 and result.register_entries == result.copied["register"] > 5

        shared = Settings.from_mapping({
            "BOT_DATA_DIR": str(tmp_path / "unused"), "DATABASE_URL": target.settings.url if target.settings else "",
            "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
            "LOCAL_DRAFT_KEY": DRAFT_KEY, "RATE_LIMIT_ACTIONS_PER_MINUTE": "1000",
        })
        on_postgres = create_app(shared, clock=clock, run_worker=False, migrate=False)
        async with driving(on_postgres, connector, url) as bot:
            clock.advance(dt.timedelta(minutes=5))
            await bot.act(worker.in_thread(card_id), "ack.receive", {"reference": reference})
            assert (await bot.services.referrals.get(reference)).state == "received"  # type: ignore[union-attr]
            await bot.settle()
            assert await ProcessingRegister(bot.services.db).verify() == []
            events = await bot.services.register.events_for(reference)
            assert events[-1] == "acknowledged" and "delivered" in events
            newest = await bot.services.db.scalar("SELECT MAX(id) AS n FROM message_outbox")
            assert newest > result.copied["message_outbox"], "new Teams messages are numbered after the copied ones"
    assert not (tmp_path / "unused").exists(), "the PostgreSQL bot keeps nothing on its disk"


async def test_a_botbuilder_era_file_is_brought_up_to_date_on_the_way(postgres: PostgresServer, tmp_path: Path) -> None:
    file = tmp_path / "bot.sqlite3"
    with sqlite3.connect(file) as db:
        db.executescript(re.sub(r"http://127\.0\.0\.1:\d+", "http://127.0.0.1:9", FIXTURE.read_text()))
    before = _digest(file)
    target = await postgres_database(postgres)
    result = await import_sqlite(target, file)
    assert _digest(file) == before
    counts = await _tables(target)
    assert counts["referrals"] == 2 and counts["ocmw_links"] == 1 and counts["register"] == result.register_entries
    refs = [row["conversation_ref"] for row in await target.fetch_all("SELECT conversation_ref FROM referrals")]
    assert refs and all('"tenantId"' in ref and "tenantID" not in ref for ref in refs)


async def test_a_target_that_holds_anything_is_refused(postgres: PostgresServer, tmp_path: Path) -> None:
    file = tmp_path / "bot.sqlite3"
    with sqlite3.connect(file) as db:
        db.executescript(FIXTURE.read_text())
    target = await postgres_database(postgres)
    await target.execute("INSERT INTO reminders (subject, kind, at) VALUES ('x', 'y', 'z')")
    with pytest.raises(ImportRefused, match="not empty"):
        await import_sqlite(target, file)
    assert (await _tables(target))["referrals"] == 0


async def test_a_copy_whose_register_does_not_verify_is_rolled_back_whole(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    file = tmp_path / "bot.sqlite3"
    with sqlite3.connect(file) as db:
        db.executescript(FIXTURE.read_text())
    sql(file, "UPDATE register SET detail = 'edited afterwards' WHERE seq = 2")
    target = await postgres_database(postgres)
    with pytest.raises(ImportFailed) as failed:
        await import_sqlite(target, file)
    assert [problem for problem in failed.value.problems if problem.startswith("seq 2: altered")]
    assert set((await _tables(target)).values()) == {0}, "nothing of the copy was kept"


async def test_a_file_that_is_not_there_is_refused(postgres: PostgresServer, tmp_path: Path) -> None:
    target = await postgres_database(postgres)
    with pytest.raises(ImportRefused, match="is not a file"):
        await import_sqlite(target, tmp_path / "missing.sqlite3")


def test_an_import_killed_mid_copy_leaves_no_private_copy_of_the_old_database(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """The private copy of the old file (sealed drafts, queued packages, the register) goes, also after a SIGKILL.

    It was removed only at the end of the run, which a kill never reaches, and the next run removed
    only its own: the copy stayed in the temporary folder for good.
    """
    file = tmp_path / "old" / "bot.sqlite3"
    file.parent.mkdir()
    with sqlite3.connect(file) as db:
        db.executescript(FIXTURE.read_text())
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "DATABASE_URL": postgres_url(postgres), "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1",
           "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD, "LOCAL_DRAFT_KEY": DRAFT_KEY, "BOT_DATA_DIR": str(tmp_path / "data"),
           "PORT": str(free_port()), "TMPDIR": str(temporary)}

    killed = _command(env, "tests.support.crashing_bot", "migrate", "--from-sqlite", str(file),
                      CRASH_AT="table_copied:after")
    assert killed.returncode == -9 and "crashing_bot: SIGKILL" in killed.stderr, killed.stdout + killed.stderr
    assert [path.name for path in temporary.glob("vd-import-*/source.sqlite3")] == ["source.sqlite3"]

    again = _command(env, "bot", "migrate", "--from-sqlite", str(file))
    assert again.returncode == 0, again.stdout + again.stderr  # the kill kept nothing: the target was still empty
    assert "referrals 2" in again.stdout
    left = sorted(str(path.relative_to(temporary)) for path in temporary.rglob("*"))
    assert left == [], f"left in the temporary folder after the killed import and a good one: {left}"


def _command(env: dict[str, str], module: str, *arguments: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *arguments], env={**env, **settings}, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
