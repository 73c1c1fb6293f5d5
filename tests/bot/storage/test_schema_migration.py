"""The schema in Alembic revisions: the same on both backends, applied once, and checked before serving."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, inspect

import bot.storage.migrations
from bot.evidence.register import GENESIS_HASH, HASHED_FIELDS, ProcessingRegister, RegisterEvent, entry_hash
from bot.storage.database import Database, DatabaseSettings, open_database
from bot.storage.schema_migration import (
    SchemaOutOfDate,
    head_revision,
    migrate,
    quick_head,
    require_current_schema,
    schema_state,
)
from tests.support.databases import OPENED, another_engine, postgres_database, postgres_url, sqlite_database
from tests.support.postgres_server import PostgresServer, postgres_server


def _shape(connection: Connection) -> dict[str, Any]:
    """Every table's columns (name, nullable), indexes, unique constraints and key; Alembic's own table left out."""
    found = inspect(connection)
    shape: dict[str, Any] = {}
    for table in sorted(set(found.get_table_names()) - {"alembic_version"}):
        columns = [(column["name"], column["nullable"]) for column in found.get_columns(table)]
        indexes = sorted((index["name"], tuple(index["column_names"])) for index in found.get_indexes(table)
                         if not index.get("duplicates_constraint"))  # PostgreSQL lists a UNIQUE's own index
        uniques = sorted(tuple(unique["column_names"]) for unique in found.get_unique_constraints(table))
        keys = tuple(found.get_pk_constraint(table)["constrained_columns"])
        shape[table] = (columns, indexes, uniques, keys)
    return shape


def _unmigrated(server: PostgresServer) -> Database:
    db = open_database(DatabaseSettings(sqlite_path=Path("/unused"), url=postgres_url(server)))
    OPENED.append(db)
    return db


async def test_both_backends_get_the_same_tables_columns_and_indexes(postgres: PostgresServer, tmp_path: Path) -> None:
    sqlite = await sqlite_database(tmp_path / "bot.sqlite3")
    postgresql = await postgres_database(postgres)
    shapes = []
    for db in (sqlite, postgresql):
        async with db.engine.connect() as connection:
            shapes.append(await connection.run_sync(_shape))
    assert shapes[0] == shapes[1]
    assert {"referrals", "register", "outbox", "message_outbox", "job_runs", "rate_events"} <= set(shapes[0])


async def test_migrating_again_changes_nothing(database: Database) -> None:
    before = await migrate(database)
    assert before.up_to_date and before.current == head_revision()
    assert (await schema_state(database)).up_to_date


async def test_a_schema_behind_is_refused_with_the_command_that_fixes_it(postgres: PostgresServer) -> None:
    db = _unmigrated(postgres)
    with pytest.raises(SchemaOutOfDate, match=r"revision none, this version needs .*python -m bot migrate"):
        await require_current_schema(db, migrate_if_behind=False)
    assert await db.scalar("SELECT to_regclass('referrals') IS NULL AS missing"), "refusing changes nothing"
    await require_current_schema(db, migrate_if_behind=True)
    assert (await schema_state(db)).up_to_date


async def test_a_schema_newer_than_the_bot_is_refused(database: Database) -> None:
    await database.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaOutOfDate, match="newer than this version of the bot"):
        await require_current_schema(database, migrate_if_behind=True)


async def test_two_instances_starting_at_once_migrate_once(postgres: PostgresServer) -> None:
    first = _unmigrated(postgres)
    second = another_engine(first)
    states = await asyncio.gather(migrate(first), migrate(second))
    assert sorted(state.current or "none" for state in states) == sorted(["none", head_revision()]), \
        "one applied the revisions; the other, waiting on the lock, found them applied"
    assert await first.scalar("SELECT COUNT(*) AS n FROM alembic_version") == 1


def test_the_head_read_from_the_revision_files_is_alembic_s() -> None:
    """The start-up's quick check (no Alembic) and Alembic agree on where the schema should be."""
    assert quick_head() == head_revision()


async def test_a_start_on_a_schema_at_the_head_leaves_alembic_unloaded(tmp_path: Path) -> None:
    """The usual start reads one row; Alembic (a fifth of the start-up) is loaded only to migrate or explain."""
    path = tmp_path / "bot.sqlite3"
    await sqlite_database(path)  # migrated to the head
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from bot.storage.database import DatabaseSettings, open_database\n"
        "from bot.storage.schema_migration import require_current_schema\n"
        "async def main():\n"
        f"    db = open_database(DatabaseSettings(sqlite_path=Path({str(path)!r})))\n"
        "    await require_current_schema(db, migrate_if_behind=False)\n"
        "    await db.close()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=Path(__file__).parents[3],
                                                   stdout=asyncio.subprocess.PIPE)
    output, _ = await process.communicate()
    assert process.returncode == 0 and output.decode().strip() == "False"


# --- revision 0003: PostgreSQL appends a register entry in one statement ----------------------------

_REVISIONS = Path(bot.storage.migrations.__file__).parent


async def _to_revision(db: Database, revision: str, *, down: bool = False) -> None:
    """Alembic's own upgrade (or downgrade) to `revision`, on a connection of `db`."""
    def run(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(_REVISIONS))
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    async with db.engine.begin() as connection:
        await connection.run_sync(run)


async def _append_as_revision_0002_did(db: Database, number: int) -> None:
    """An entry written the way the bot wrote them before revision 0003: chained in Python."""
    async with db.transaction():
        await db.lock("register")
        last = await db.fetch_one("SELECT seq, hash FROM register ORDER BY seq DESC LIMIT 1")
        fields = {name: "" for name in HASHED_FIELDS} | {
            "at": f"2026-11-28T09:00:0{number}.000000+00:00", "event": "acknowledged", "actor_id": f"aad-{number}",
            "actor_name": "Zoë", "protocol_id": "P", "entry_format": "2"}
        previous = GENESIS_HASH if last is None else str(last["hash"])
        columns = ("seq", *HASHED_FIELDS, "previous_hash", "hash")
        await db.execute(
            f"INSERT INTO register ({', '.join(columns)}) VALUES ({', '.join(':' + name for name in columns)})",  # noqa: S608
            {**fields, "seq": 1 if last is None else int(last["seq"]) + 1, "previous_hash": previous,
             "hash": entry_hash(previous, fields)})


async def _register_append_exists(db: Database) -> bool:
    if not db.is_postgres:
        return False
    return bool(await db.scalar("SELECT to_regprocedure('register_append(bigint, text, text)') IS NOT NULL AS found"))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_revision_0003_continues_a_register_written_before_it_and_goes_back_cleanly(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A deployment at 0002 with entries migrates to 0003; the next entries continue its chain (PostgreSQL:
    hashed in the server now), and a downgrade to 0002 removes the function and leaves every entry."""
    if backend == "sqlite":
        db = open_database(DatabaseSettings(sqlite_path=tmp_path / "bot.sqlite3"))
        OPENED.append(db)
    else:
        db = _unmigrated(request.getfixturevalue("postgres"))
    await _to_revision(db, "0002")
    for number in range(3):
        await _append_as_revision_0002_did(db, number)
    assert not await _register_append_exists(db)

    assert (await migrate(db)).current == "0002"
    assert await _register_append_exists(db) == db.is_postgres
    register = ProcessingRegister(db)
    fourth = await register.append(at=dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC), event=RegisterEvent.QUEUED,
                                   actor_id="aad-4", actor_name="Zoë", protocol_id="P", detail="after 0003")
    rows = await db.fetch_all("SELECT seq, previous_hash, hash FROM register ORDER BY seq")
    assert [row["seq"] for row in rows] == [1, 2, 3, 4]
    assert rows[3]["previous_hash"] == rows[2]["hash"] and rows[3]["hash"] == fourth
    assert await register.verify() == []

    await _to_revision(db, "0002", down=True)
    assert (await schema_state(db)).current == "0002" and not await _register_append_exists(db)
    assert await db.scalar("SELECT COUNT(*) AS n FROM register") == 4
    await migrate(db)
    assert (await schema_state(db)).up_to_date and await _register_append_exists(db) == db.is_postgres
    assert await register.verify() == []


#: The queue tables: each row is written a few times (queued, sending, sent) and its content dropped.
QUEUE_TABLES = ("message_outbox", "outbox", "rate_events")


async def test_the_queue_tables_are_vacuumed_after_hundreds_of_changes_whatever_their_size() -> None:
    """A claim finds the due rows through an index on `state`; every message that went through it leaves
    dead index entries until a vacuum, and a bitmap scan visits them all (20 000 of them: 1.6 ms per claim,
    the costliest statement per referral in `benchmarks.instances --statements`). By default autovacuum
    waits for 20 % of the table to be dead, so the claim grew with the history. Revision 0006."""
    with postgres_server(settings={"autovacuum_naptime": "1"}) as server:
        db = await postgres_database(server)
        now = "2026-11-30T10:00:00.000000+00:00"
        async with db.engine.connect() as connection:  # one session: its statistics flushed before the VACUUM
            load = (await connection.get_raw_connection()).driver_connection
            await load.execute(  # the history: 40 000 messages sent (a default threshold of 8 000 dead rows)
                "INSERT INTO message_outbox (conversation_key, conversation_ref, action, content, state, queued_at,"
                " next_attempt_at, attempts) SELECT 'p' || (g % 500), '{}', 'post', '', 'sent', $1, $1, 1"
                " FROM generate_series(1, 40000) AS g", now)
            await load.execute("INSERT INTO outbox (message_id, reference, payload, state, queued_at, next_attempt_at)"
                               " SELECT '<m' || g || '>', 'VD-' || g, NULL, 'delivered', $1, $1"
                               " FROM generate_series(1, 40000) AS g", now)
            await load.execute("INSERT INTO rate_events (kind, key_hash, at) SELECT 'start', 'k' || (g % 100), $1"
                               " FROM generate_series(1, 40000) AS g", now)
            await load.execute("SELECT pg_stat_force_next_flush()")
            await load.execute("SELECT 1")
            await load.execute("VACUUM ANALYZE")

        async def vacuums() -> dict[str, tuple[int, int]]:
            """Per table: automatic vacuums so far, dead row versions."""
            rows = await db.fetch_all("SELECT relname, autovacuum_count, n_dead_tup FROM pg_stat_user_tables"
                                      " WHERE relname IN :tables", {"tables": list(QUEUE_TABLES)})
            return {str(row["relname"]): (int(row["autovacuum_count"]), int(row["n_dead_tup"])) for row in rows}

        await asyncio.sleep(2.5)  # an autovacuum the bulk inserts started is over
        before = await vacuums()
        async with db.engine.connect() as connection:  # one session, its statistics flushed at the end
            churn = (await connection.get_raw_connection()).driver_connection
            # 1 500 rows through each queue: 3 000 dead row versions, far below the default threshold.
            await churn.execute("UPDATE message_outbox SET state = 'queued' WHERE id <= 1500")
            await churn.execute("UPDATE message_outbox SET state = 'sent' WHERE id <= 1500")
            await churn.execute("UPDATE outbox SET state = 'queued' WHERE message_id IN"
                                " (SELECT message_id FROM outbox ORDER BY message_id LIMIT 1500)")
            await churn.execute("UPDATE outbox SET state = 'delivered' WHERE state = 'queued'")
            await churn.execute("DELETE FROM rate_events WHERE key_hash IN ('k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7')")
            await churn.execute("SELECT pg_stat_force_next_flush()")
            await churn.execute("SELECT 1")

        def cleaned(now: dict[str, tuple[int, int]]) -> bool:
            return all(now[table][0] > before[table][0] and now[table][1] < 500 for table in QUEUE_TABLES)

        for _ in range(150):  # autovacuum looks every second here
            if cleaned(await vacuums()):
                break
            await asyncio.sleep(0.1)
        assert cleaned(await vacuums()), (before, await vacuums())
