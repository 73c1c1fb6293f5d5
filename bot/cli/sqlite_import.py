"""`python -m bot migrate --from-sqlite FILE`: a deployment that ran on one SQLite file moves to PostgreSQL.

The file is never changed: it is copied into a private temporary folder (with its WAL, so nothing
committed is left behind), that copy is brought to this version's schema, and every table is
copied into the target in one transaction. The target must be migrated and empty, so a second run
cannot mix two histories. Before that transaction commits, the row counts are compared and the
register's hash chain is verified on the target: any difference rolls the whole copy back and
fails the command, so the target stays empty and the operator keeps the old file and looks. The
temporary copy (it holds sealed drafts and the register) is deleted at the end, or by the next run
when this one was killed (`bot.cli.import_copy`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, column, insert, inspect, select, table
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.cli.import_copy import private_copy
from bot.evidence.register import ProcessingRegister
from bot.storage.database import Database, DatabaseSettings, open_database
from bot.storage.schema_migration import migrate, schema_state, table_names

logger = logging.getLogger(__name__)

#: Rows read and written per round trip.
_BATCH = 500
#: Not copied: which instance last ran a periodic job says nothing about the new deployment.
_NOT_COPIED = frozenset({"job_runs"})
#: Integer keys the bot numbers itself; PostgreSQL's sequences must continue after the copied ones.
_SERIAL_KEYS = (("message_outbox", "id"),)


class ImportRefused(Exception):
    """The import did not start: the message says why (nothing was written)."""


class ImportFailed(Exception):
    """The copy did not check out and was rolled back: `problems` says what differed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s); nothing was kept")
        self.problems = problems


@dataclass(frozen=True)
class ImportResult:
    """Rows copied per table (the counts matched and the register's chain verified before the commit)."""

    copied: dict[str, int]
    register_entries: int


async def import_sqlite(target: Database, source: Path) -> ImportResult:
    """Copy every table of the SQLite file `source` into the empty, migrated `target`."""
    state = await schema_state(target)
    if not state.up_to_date:
        raise ImportRefused("the target's schema is not current: run `python -m bot migrate` first")
    if not await asyncio.to_thread(source.is_file):
        raise ImportRefused(f"{source} is not a file")
    async with private_copy(source) as copy:
        origin = open_database(DatabaseSettings(sqlite_path=copy))
        try:
            await migrate(origin)  # an older file is brought to this version's tables first
            async with origin.engine.connect() as source_connection:
                tables = [name for name in await source_connection.run_sync(table_names) if name not in _NOT_COPIED]
                async with target.without_time_limits():  # one transaction of every row: no statement limit
                    target_connection = target.current_connection()
                    await _refuse_unless_empty(target_connection, tables)
                    copied = {name: await _copy_table(source_connection, target_connection, name) for name in tables}
                    if target.is_postgres:
                        for name, key in _SERIAL_KEYS:
                            await target_connection.exec_driver_sql(
                                f"SELECT setval(pg_get_serial_sequence('{name}', '{key}'),"  # noqa: S608  # nosec B608
                                f" COALESCE((SELECT MAX({key}) FROM {name}), 0) + 1, false)")
                    problems = await _check(target, copied)
                    if problems:
                        raise ImportFailed(problems)  # leaves the transaction: everything copied is rolled back
        finally:
            await origin.close()
    logger.info("SQLite file imported", extra={"tables": len(copied), "rows": sum(copied.values())})
    return ImportResult(copied, copied.get("register", 0))


async def _refuse_unless_empty(connection: AsyncConnection, tables: list[str]) -> None:
    for name in tables:
        found = (await connection.exec_driver_sql(f"SELECT COUNT(*) FROM {name}")).scalar_one()  # noqa: S608  # nosec B608
        if found:
            raise ImportRefused(f"the target is not empty ({name} has {found} rows): an import goes into a new "
                                "database only")


async def _copy_table(source: AsyncConnection, target: AsyncConnection, name: str) -> int:
    """Copy one table in batches, columns by name; returns how many rows."""
    columns = await source.run_sync(lambda connection: _columns(connection, name))
    wanted = table(name, *(column(field) for field in columns))
    result = await source.stream(select(wanted))
    count = 0
    async for batch in result.mappings().partitions(_BATCH):
        await target.execute(insert(wanted), [dict(row) for row in batch])
        count += len(batch)
    return count


def _columns(connection: Connection, name: str) -> list[str]:
    return [str(found["name"]) for found in inspect(connection).get_columns(name)]


async def _check(target: Database, copied: dict[str, int]) -> list[str]:
    problems = []
    for name, count in copied.items():
        found = int(await target.scalar(f"SELECT COUNT(*) AS n FROM {name}"))  # noqa: S608  # nosec B608
        if found != count:
            problems.append(f"{name}: {count} rows copied, {found} in the target")
    problems.extend(problem.line() for problem in await ProcessingRegister(target).verify())
    return problems
