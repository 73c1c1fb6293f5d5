"""Opening a database the botbuilder-era bot wrote: its rows keep working with the Agents SDK.

`tests/fixtures/botbuilder_era.sql` is such a database (dumped after an OCMW link, an acknowledged
and an unacknowledged referral, a draft at consent and one at review). botbuilder stored the
tenant as `conversation.tenantID`, which the Agents SDK drops without a word: unmigrated, every
proactive message would leave without its tenant. The OCMW cards' ids become message slots.

And what the database leaves on disk: `-wal` and `-shm` private, the WAL emptied after a wipe; and
how transactions behave (savepoints, work after the commit, one task per transaction).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import re
import sqlite3
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import greenlet
import pytest
from sqlalchemy import event

from bot.app import create_app
from bot.config import Settings
from bot.core.referral_values import ClientDetails
from bot.referral.drafts import Draft, DraftState, DraftStore
from bot.secrets.draft_cipher import DraftCipher
from bot.storage.database import Database, DatabaseError, DatabaseSettings, open_database, upgrade_reference
from bot.storage.migrations.legacy_sqlite import REFERENCE_COLUMNS, VERSION_2_SCHEMA
from bot.storage.schema_migration import head_revision, migrate, schema_state
from tests.support.activities import TENANT_ID, TeamsUser
from tests.support.bot_server import BotDriver, driving, running_connector
from tests.support.clock import ManualClock
from tests.support.data_folder import left_in_folder
from tests.support.databases import sql, sqlite_database, transaction_held_open

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "botbuilder_era.sql"
CHANNEL = "19:ocmw-welzijnshuis@thread.tacv2"
ACKNOWLEDGED = "VD-20261128-RED3MB"
UNACKNOWLEDGED = "VD-20261128-DA6ZJS"
NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
DETAILS = ClientDetails("Zoëlle", "Vandenbroeckx", "Kerkstraatje", "127", "9170", "Meerdonk", "+32470987654", None)


def _restore(path: Path, service_url: str) -> None:
    """The fixture as a database file, its conversation references pointing at `service_url`."""
    script = re.sub(r"http://127\.0\.0\.1:\d+", service_url, FIXTURE.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.executescript(script)


def _stored_references(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for table, _, column in REFERENCE_COLUMNS
                for row in db.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL")]  # noqa: S608


@pytest.fixture
async def migrated(settings: Settings, clock: ManualClock) -> AsyncIterator[BotDriver]:
    async with running_connector() as (connector, url):
        _restore(settings.database_path, url)
        assert any("tenantID" in ref for ref in _stored_references(settings.database_path))
        async with driving(create_app(settings, clock=clock, run_worker=False), connector, url) as bot:
            yield bot


def test_the_fixture_is_what_botbuilder_wrote() -> None:
    text = FIXTURE.read_text()
    assert "PRAGMA user_version=1;" in text and text.count('"tenantID"') == 7 and '"tenantId"' not in text


async def test_references_are_rewritten_and_card_ids_become_slots(migrated: BotDriver, settings: Settings) -> None:
    references = _stored_references(settings.database_path)
    assert references and not [ref for ref in references if "tenantID" in ref]
    assert all(json.loads(ref)["conversation"]["tenantId"] == TENANT_ID for ref in references)
    assert sql(settings.database_path, "SELECT version_num FROM alembic_version").fetchall()[0][0] == head_revision()
    assert await migrated.services.messages.slot_activity_id(f"ocmw:{ACKNOWLEDGED}")
    assert await migrated.services.messages.slot_activity_id(f"ocmw:{UNACKNOWLEDGED}")


async def test_proactive_messages_from_migrated_rows_carry_the_tenant(
    migrated: BotDriver, clock: ManualClock
) -> None:
    clock.current = dt.datetime(2026, 12, 10, 9, 0, tzinfo=dt.UTC)  # receipt and outcome reminders are due
    assert await migrated.services.reminders.run_due() == 4
    await migrated.settle()
    reminders = [call for call in migrated.connector.accepted if call.method == "POST"]
    assert {call.path.split("/")[3] for call in reminders} == {CHANNEL, "a:personal-referrer"}
    assert all(call.body["conversation"]["tenantId"] == TENANT_ID for call in reminders)


async def test_the_ocmw_card_of_a_migrated_referral_is_edited_where_botbuilder_posted_it(
    migrated: BotDriver,
) -> None:
    card_id = await migrated.services.messages.slot_activity_id(f"ocmw:{UNACKNOWLEDGED}")
    worker = TeamsUser("aad-ocmw-1", "Olga Maatschappelijk", f"{CHANNEL};messageid=1700000000001", channel=True)
    await migrated.act(worker.in_thread(str(card_id)), "ack.receive", {"reference": UNACKNOWLEDGED})
    await migrated.settle()
    [edit] = [call for call in migrated.connector.accepted if call.method == "PUT"]
    assert edit.path == f"/v3/conversations/{CHANNEL}/activities/{card_id}"
    assert edit.body["conversation"]["tenantId"] == TENANT_ID


async def test_an_expired_draft_of_that_era_gets_its_card_replaced(migrated: BotDriver, clock: ManualClock) -> None:
    from bot.app import sweep_drafts

    clock.advance(dt.timedelta(hours=1))
    await sweep_drafts(migrated.services.drafts, migrated.services.messages, clock)
    await migrated.settle()
    [replaced] = [call for call in migrated.connector.accepted if call.method == "PUT"]
    assert replaced.path == "/v3/conversations/a:personal-referrer/activities/card-1"
    assert replaced.body["conversation"]["tenantId"] == TENANT_ID


def test_upgrade_leaves_current_and_unreadable_references_alone() -> None:
    current = json.dumps({"conversation": {"id": "c", "tenantId": "t"}})
    assert upgrade_reference(current) == current
    assert upgrade_reference("not json") == "not json"
    both = json.loads(upgrade_reference(json.dumps({"conversation": {"id": "c", "tenantID": "old", "tenantId": "t"}})))
    assert both["conversation"] == {"id": "c", "tenantId": "t"}


def test_the_settings_never_show_the_url_it_may_hold_a_password() -> None:
    settings = DatabaseSettings(sqlite_path=Path("/nonexistent"), url="postgresql://vd:s3cret-pw@db.example/vd")

    assert "s3cret-pw" not in repr(settings) and "db.example" not in repr(settings)


async def test_a_new_database_starts_at_the_current_version(tmp_path: Path) -> None:
    db = await sqlite_database(tmp_path / "bot.sqlite3")
    state = await schema_state(db)
    assert state.up_to_date and state.current == head_revision()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_wal_and_shm_an_older_version_left_readable_are_made_private(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    previous = os.umask(0o022)
    try:
        older = sqlite3.connect(path, isolation_level=None)  # holds the -wal and -shm open, as a running CLI would
        older.execute("PRAGMA journal_mode = WAL")
        older.execute("CREATE TABLE t (x)")
        assert _mode(tmp_path / "bot.sqlite3-wal") == 0o644
        db = open_database(DatabaseSettings(sqlite_path=path))
    finally:
        os.umask(previous)
    assert {_mode(tmp_path / f"bot.sqlite3{suffix}") for suffix in ("", "-wal", "-shm")} == {0o600}
    await db.close()
    older.close()


async def _draft_at_review(db: Database, tmp_path: Path) -> tuple[DraftStore, Draft, bytes]:
    store = DraftStore(db, DraftCipher.from_key_file(tmp_path / "draft.key"), dt.timedelta(minutes=30))
    draft = await store.create("user", "conv", NOW, NOW.date())
    review = await store.advance(draft, DraftState.REVIEW, NOW, details=DETAILS)
    assert review is not None
    sealed = await db.scalar("SELECT sealed_details FROM drafts WHERE id = :id", {"id": draft.id})
    return store, review, bytes(sealed)


async def test_a_checkpoint_a_reader_blocks_is_retried_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    db = await sqlite_database(path)
    store, review, sealed = await _draft_at_review(db, tmp_path)
    reader = sqlite3.connect(path, isolation_level=None)  # e.g. `register export` reading beside the bot
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM drafts").fetchone()

    started = time.monotonic()
    assert await store.close(review, DraftState.CANCELLED, NOW)
    assert time.monotonic() - started < 1.0, "the busy checkpoint did not wait for the reader"
    assert sealed in (tmp_path / "bot.sqlite3-wal").read_bytes(), "a reader's snapshot keeps the WAL"
    assert await db.truncate_wal() is False

    reader.execute("COMMIT")
    assert await db.truncate_wal() is True
    assert (tmp_path / "bot.sqlite3-wal").stat().st_size == 0
    assert sealed not in path.read_bytes()
    assert await db.truncate_wal() is True, "nothing left to do"
    reader.close()


async def test_the_wal_is_truncated_when_the_transaction_around_the_wipe_commits(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    db = await sqlite_database(path)
    store, review, sealed = await _draft_at_review(db, tmp_path)
    async with db.transaction():
        async with db.transaction():
            assert await store.close(review, DraftState.SENT, NOW)
        assert sealed in (tmp_path / "bot.sqlite3-wal").read_bytes(), "not inside the transaction"
    assert (tmp_path / "bot.sqlite3-wal").stat().st_size == 0
    assert sealed not in path.read_bytes()


async def test_register_verify_accepts_the_botbuilder_era_register_after_the_upgrade(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old entries keep the hashes they were written with (format 1); new ones chain on in format 2."""
    import argparse

    from bot.cli.register import add_register_commands, run_register_command
    from bot.evidence.register import ProcessingRegister, RegisterEvent

    parser = argparse.ArgumentParser()
    add_register_commands(parser.add_subparsers(dest="command"))
    verify = parser.parse_args(["register", "verify"])
    _restore(settings.database_path, "http://127.0.0.1:1")
    written = [row[0] for row in sql(settings.database_path, "SELECT hash FROM register ORDER BY seq")]
    db = await sqlite_database(settings.database_path)  # migrated, as `serve` does at start
    assert await asyncio.to_thread(run_register_command, verify, settings) == 0
    assert capsys.readouterr().out == f"register intact: {len(written)} entries\n"
    rows = sql(db, "SELECT hash, entry_format, purpose, recipient FROM register ORDER BY seq").fetchall()
    assert [row["hash"] for row in rows] == written and {row["entry_format"] for row in rows} == {"1"}
    assert {(row["purpose"], row["recipient"]) for row in rows} == {("", "")}
    referrals = sql(db, "SELECT data_categories, consent_version FROM referrals").fetchall()
    assert [tuple(row) for row in referrals] == [(None, "")] * 2, "categories of an old referral: unknown"

    await ProcessingRegister(db).append(at=NOW, event=RegisterEvent.ACKNOWLEDGED, actor_id="aad-ocmw-1",
                                        actor_name="Olga Maatschappelijk", protocol_id="OR-KG-NOW-OCMW-SGW-2026",
                                        reference=UNACKNOWLEDGED)
    assert await asyncio.to_thread(run_register_command, verify, settings) == 0
    sql(db, "UPDATE register SET detail = 'attempt 2' WHERE seq = 6")
    assert await asyncio.to_thread(run_register_command, verify, settings) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("seq 6: altered:")


async def test_a_database_from_before_sending_teams_gets_their_columns_once(tmp_path: Path) -> None:
    """A version-2 file written before `sender_team` existed: the bridge adds the columns, Alembic takes over."""
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as old:  # as the previous version left it
        old.executescript(VERSION_2_SCHEMA)
        for table in ("drafts", "referrals"):
            old.execute(f"ALTER TABLE {table} DROP COLUMN sender_team")
        old.execute("PRAGMA user_version = 2")
    for _ in range(2):  # and migrating it again changes nothing
        db = open_database(DatabaseSettings(sqlite_path=path))
        await migrate(db)
        assert (await schema_state(db)).up_to_date
        for table in ("drafts", "referrals"):
            columns = [row["name"] for row in sql(path, f"PRAGMA table_info({table})")]
            assert columns.count("sender_team") == 1, table
        await db.close()


async def test_savepoints_roll_back_alone_and_work_waits_for_the_commit(tmp_path: Path) -> None:
    db = await sqlite_database(tmp_path / "bot.sqlite3")
    woken: list[str] = []
    async with db.transaction():
        await db.execute("INSERT INTO reminders (subject, kind, at) VALUES ('a', 'k', 't')")
        with pytest.raises(ValueError):
            async with db.transaction():
                await db.execute("INSERT INTO reminders (subject, kind, at) VALUES ('b', 'k', 't')")
                raise ValueError("the inner step fails")
        db.after_commit(lambda: woken.append("worker"))
        assert woken == [], "a worker woken before the commit would not see the row"
    assert woken == ["worker"]
    assert [row["subject"] for row in await db.fetch_all("SELECT subject FROM reminders")] == ["a"]


async def test_a_transaction_is_not_shared_with_a_task_it_starts(tmp_path: Path) -> None:
    """A task inherits the context: using the parent's connection would interleave two tasks' statements."""
    db = await sqlite_database(tmp_path / "bot.sqlite3")
    async with db.transaction():
        child = asyncio.create_task(db.execute("SELECT 1 AS x"))
        with pytest.raises(RuntimeError, match="did not open it"):
            await child


async def test_a_busy_checkpoint_is_not_tried_again_after_every_statement(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Under load a reader is nearly always busy: one checkpoint attempt (and log line) per statement cost
    the bot CPU and flooded the log (471 warnings in six seconds at 16 referrers). The sweep still tries."""
    path = tmp_path / "bot.sqlite3"
    db = await sqlite_database(path)
    db.checkpoint_retry_seconds = 60  # no second automatic attempt within this test
    store, review, sealed = await _draft_at_review(db, tmp_path)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM drafts").fetchone()
    caplog.set_level(logging.DEBUG, logger="bot.storage.database")

    assert await store.close(review, DraftState.CANCELLED, NOW)  # the wipe: its checkpoint is busy
    for _ in range(20):
        await db.execute("SELECT 1")
    busy = [record for record in caplog.records if "checkpoint busy" in record.getMessage()]
    assert len(busy) == 1 and busy[0].levelno == logging.DEBUG

    reader.execute("COMMIT")
    reader.close()
    assert await db.truncate_wal() is True  # what the periodic sweep calls: at once
    assert (tmp_path / "bot.sqlite3-wal").stat().st_size == 0
    assert sealed not in path.read_bytes()


async def test_a_wal_readers_keep_from_being_emptied_for_long_is_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.storage.database.WAL_LINGER_WARN_SECONDS", 0.0)  # "long" is now
    path = tmp_path / "bot.sqlite3"
    db = await sqlite_database(path)
    store, review, _ = await _draft_at_review(db, tmp_path)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM drafts").fetchone()
    assert await store.close(review, DraftState.CANCELLED, NOW)
    reader.execute("COMMIT")
    reader.close()
    [warning] = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert "WAL not emptied" in warning.getMessage() and "wiped content" in warning.getMessage()


async def test_a_busy_wipe_checkpoint_is_retried_on_its_own_once_the_reader_lets_go(tmp_path: Path) -> None:
    """An idle bot makes no further statement: the WAL must not keep wiped content until the minute's sweep
    (a reader, e.g. another worker's lease, kept the wipe's checkpoint busy; CI saw the text still on disk)."""
    path = tmp_path / "bot.sqlite3"
    db = await sqlite_database(path)
    db.checkpoint_retry_seconds = 0.05
    store, review, sealed = await _draft_at_review(db, tmp_path)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM drafts").fetchone()

    assert await store.close(review, DraftState.CANCELLED, NOW)  # the wipe: its checkpoint is busy
    await asyncio.sleep(0.2)
    assert sealed in (tmp_path / "bot.sqlite3-wal").read_bytes(), "still read: the retry finds it busy again"
    reader.execute("COMMIT")
    reader.close()

    # No statement of ours from here on: only the database's own retry can empty the WAL.
    assert await left_in_folder(tmp_path, lambda _, content: ["sealed"] if sealed in content else [],
                                seconds=2.0) == {}
    assert (tmp_path / "bot.sqlite3-wal").stat().st_size == 0
    await db.close()


async def test_a_read_on_its_own_is_not_held_behind_a_writer(tmp_path: Path) -> None:
    """WAL lets readers go beside the writer; a lone SELECT that began `BEGIN IMMEDIATE` queued for the
    writer's lock (up to the busy timeout) and cost two more trips to SQLite's thread (BEGIN, COMMIT)."""
    path = tmp_path / "bot.sqlite3"
    db = await sqlite_database(path)
    await db.execute("INSERT INTO reminders (subject, kind, at) VALUES ('a', 'k', 't')")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another step holds the writer's lock, e.g. waiting on its fsync
    writer.execute("INSERT INTO reminders (subject, kind, at) VALUES ('b', 'k', 't')")
    statements: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute",
                 lambda _c, _cu, statement, *_: statements.append(statement))
    try:
        started = time.monotonic()
        rows = await asyncio.wait_for(db.fetch_all("SELECT subject FROM reminders"), 2.0)
        assert time.monotonic() - started < 1.0
        assert [row["subject"] for row in rows] == ["a"], "the committed rows, not the writer's"
        assert statements == ["SELECT subject FROM reminders"], "no BEGIN IMMEDIATE around a read"
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    # A write on its own still takes the writer's lock first (no upgrade deadlock), and commits.
    await db.execute("INSERT INTO reminders (subject, kind, at) VALUES ('c', 'k', 't')")
    assert sql(path, "SELECT COUNT(*) FROM reminders").fetchone()[0] == 2
    await db.close()


async def test_a_joined_block_is_part_of_the_open_transaction_without_a_savepoint(database: Database) -> None:
    """A store's read-then-write block joins the step's transaction: a savepoint around it was two more
    trips (SAVEPOINT, RELEASE) per store call, six per referral, for a block that leaves nothing half done."""
    statements: list[str] = []
    event.listen(database.engine.sync_engine, "before_cursor_execute",
                 lambda _c, _cu, statement, *_: statements.append(statement.split()[0].upper()))
    with pytest.raises(RuntimeError):
        async with database.transaction():
            await database.execute("INSERT INTO reminders (subject, kind, at) VALUES ('a', 'k', 't')")
            async with database.transaction(savepoint=False):
                await database.execute("INSERT INTO reminders (subject, kind, at) VALUES ('b', 'k', 't')")
            raise RuntimeError("the step fails after the block")
    assert await database.scalar("SELECT COUNT(*) FROM reminders") == 0, "rolled back with the step"
    async with database.transaction(savepoint=False):  # no transaction open: it is one
        await database.execute("INSERT INTO reminders (subject, kind, at) VALUES ('c', 'k', 't')")
    assert await database.scalar("SELECT COUNT(*) FROM reminders") == 1
    assert "SAVEPOINT" not in statements and "RELEASE" not in statements


async def test_a_statement_on_its_own_crosses_sqlalchemys_async_bridge_once(database: Database) -> None:
    """Checkout, options, statement and return each crossed it (a greenlet each): four per statement on its
    own, about a third of such a statement's CPU. Its outcome and the connection's return are unchanged."""
    entered: list[greenlet.greenlet] = []

    def trace(event_name: str, switch: tuple[greenlet.greenlet, greenlet.greenlet]) -> None:
        target = switch[1]
        if event_name in ("switch", "throw") and target.parent is not None and target not in entered:
            entered.append(target)

    await database.execute("INSERT INTO reminders (subject, kind, at) VALUES ('a', 'k', 't')")
    for statement in ("SELECT COUNT(*) AS n FROM reminders", "UPDATE reminders SET at = 'u' WHERE subject = 'a'"):
        previous = greenlet.settrace(trace)
        try:
            outcome = await database.execute(statement)
        finally:
            greenlet.settrace(previous)
        assert len(entered) == 1, statement
        assert outcome.scalar() == 1 if statement.startswith("SELECT") else outcome.rowcount == 1
        entered.clear()
    assert database.engine.sync_engine.pool.checkedout() == 0
    assert await database.scalar("SELECT at FROM reminders") == "u"


async def _without_busy_handler(db: Database) -> None:
    """Every new connection of `db` fails at once on a lock another connection holds (no sleeping retries)."""
    event.listen(db.engine.sync_engine, "connect",
                 lambda connection, _record: connection.execute("PRAGMA busy_timeout = 0"))
    await db.engine.dispose()


async def test_writers_of_one_process_take_turns_first_come_first_served(tmp_path: Path) -> None:
    """SQLite's busy handler let a second writer sleep 1, 2, 5 ... 100 ms between tries, and whoever tried
    at the right moment won: under 20 concurrent steps the p99 of a small transaction was 130 ms and the
    slowest 0.8 s, against 15 ms when the steps queue in the process. With the busy handler off, every
    writer here still commits (none reached it), in the order it asked, and reads do not queue."""
    db = await sqlite_database(tmp_path / "bot.sqlite3")
    await _without_busy_handler(db)
    committed: list[str] = []

    async def step(name: str) -> None:
        async with db.transaction():
            await db.execute("INSERT INTO reminders (subject, kind, at) VALUES (:s, 'k', 't')", {"s": name})
            await asyncio.sleep(0.002)
            await db.execute("UPDATE reminders SET at = 'u' WHERE subject = :s", {"s": name})
        committed.append(name)

    async def alone(name: str) -> None:
        await db.execute("INSERT INTO reminders (subject, kind, at) VALUES (:s, 'k', 't')", {"s": name})
        committed.append(name)

    names = [f"w{number:02d}" for number in range(12)]
    async with transaction_held_open(db, "INSERT INTO reminders (subject, kind, at) VALUES ('first', 'k', 't')"):
        waiting = []
        for number, name in enumerate(names):
            waiting.append(asyncio.create_task(alone(name) if number % 3 == 2 else step(name)))
            await asyncio.sleep(0.001)  # asked in this order
        read = await asyncio.wait_for(db.scalar("SELECT COUNT(*) FROM reminders"), 1.0)
        assert read == 0, "a read goes beside the writer, on the committed state"
    await asyncio.wait_for(asyncio.gather(*waiting), 10.0)
    assert committed == names
    assert await db.scalar("SELECT COUNT(*) FROM reminders") == 13
    await db.close()


async def test_a_writer_waits_for_the_one_before_it_as_long_as_for_a_connection(tmp_path: Path) -> None:
    """A step that cannot get its turn within `pool_wait_seconds` gets "database busy" (the card says
    "probeer zo opnieuw"), as one that waits for a pooled connection does; not SQLite's 10 s busy timeout."""
    path = tmp_path / "bot.sqlite3"
    await (await sqlite_database(path)).close()
    db = open_database(DatabaseSettings(sqlite_path=path, pool_wait_seconds=0.2))

    async def second() -> None:
        async with db.transaction():
            await db.execute("INSERT INTO reminders (subject, kind, at) VALUES ('b', 'k', 't')")

    async with transaction_held_open(db, "INSERT INTO reminders (subject, kind, at) VALUES ('a', 'k', 't')"):
        started = time.monotonic()
        with pytest.raises(DatabaseError, match="busy"):
            await asyncio.wait_for(second(), 5.0)
        with pytest.raises(DatabaseError, match="busy"):
            await asyncio.wait_for(db.execute("DELETE FROM reminders"), 5.0)
        assert time.monotonic() - started < 2.0
    assert await db.scalar("SELECT COUNT(*) FROM reminders") == 1
    await db.close()
