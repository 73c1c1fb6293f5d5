"""The schema in Alembic revisions: the same on both backends, applied once, and checked before serving."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, inspect

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
from tests.support.postgres_server import PostgresServer


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
