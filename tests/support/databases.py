"""Databases for tests: the embedded SQLite file, or a fresh database on the suite's own PostgreSQL server.

`open_test_database` gives a migrated `Database` of either backend; `sql` reads or changes a SQLite
file behind the bot's back (what an attacker or a crash would leave), with plain `sqlite3`;
`transaction_held_open` is another step in the middle of its transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import greenlet
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Connection as SyncConnection

from bot.storage.database import Database, DatabaseSettings, open_database, runs_alone
from bot.storage.schema_migration import migrate
from tests.support.postgres_server import PostgresServer

BACKENDS = ("sqlite", "postgresql")
#: Databases opened by the current test; `tests/conftest.py` closes them when it ends.
OPENED: list[Database] = []


@contextlib.asynccontextmanager
async def transaction_held_open(db: Database, statement: str = "SELECT 1") -> AsyncIterator[None]:
    """Another task's transaction, `statement` run in it, open (its connection, and in SQLite the writer's
    turn, held) until the block ends; then it commits."""
    taken, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with db.transaction():
            await db.execute(statement)
            taken.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    try:
        await asyncio.wait([holder, asyncio.create_task(taken.wait())], return_when=asyncio.FIRST_COMPLETED)
        if holder.done():
            await holder  # it failed before holding anything: its error
        yield
    finally:
        release.set()
        await holder


async def bridge_crossings(db: Database, statements: int) -> int:
    """How often a transaction of `statements` INSERTs into `t (v)` crosses SQLAlchemy's async bridge (a greenlet
    entered), ~50 us of the event loop's CPU each."""
    entered: list[greenlet.greenlet] = []

    def trace(event_name: str, switch: tuple[greenlet.greenlet, greenlet.greenlet]) -> None:
        target = switch[1]
        if event_name in ("switch", "throw") and target.parent is not None and target not in entered:
            entered.append(target)

    previous = greenlet.settrace(trace)
    try:
        async with db.transaction():
            for number in range(statements):
                await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": f"{statements}-{number}"})
    finally:
        greenlet.settrace(previous)
    return len(entered)


async def statements_an_observer_sees(db: Database, fault: Exception) -> list[str]:
    """A listener on SQLAlchemy's `before_cursor_execute` (fault injection, telemetry's SQL spans) while an INSERT
    into `t (v)` runs on its own, then a transaction of two whose second the listener fails with `fault` (which
    must fail that transaction): what the listener saw."""
    seen: list[str] = []

    def observe(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)
        if "'refused'" in statement:
            raise fault

    event.listen(db.engine.sync_engine, "before_cursor_execute", observe)
    try:
        await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "a"})
        with pytest.raises(Exception) as failed:
            async with db.transaction():
                await db.execute("INSERT INTO t (v) VALUES ('b')")
                await db.execute("INSERT INTO t (v) VALUES ('refused')")
        if failed.value is not fault and failed.value.__cause__ is not fault and getattr(
                failed.value, "orig", None) is not fault:
            raise AssertionError(f"the transaction failed with something else: {failed.value!r}")
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", observe)
    return seen


@contextlib.contextmanager
def statements_and_transactions(db: Database) -> Iterator[list[str]]:
    """What `db` sends while the block runs: each statement's first word, and "BEGIN" where a transaction began
    (a statement on its own, in the database's autocommit, is none). A listener on statement events takes
    SQLAlchemy's way (`direct_statements.observed`), which runs the same statements, on their own or not."""
    sent: list[str] = []

    def statement(_connection: SyncConnection, _cursor: Any, text: str, *_: Any) -> None:
        sent.append(text.split()[0].upper())

    def begin(connection: SyncConnection) -> None:
        if not runs_alone(connection.get_execution_options()):
            sent.append("BEGIN")

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "begin", begin)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "begin", begin)


def statements_through_sqlalchemy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the statements that go through SQLAlchemy's execution context (its cursor result and rows)."""
    executed: list[str] = []
    original = SyncConnection._execute_context

    def counted(self: SyncConnection, *arguments: Any, **options: Any) -> Any:
        executed.append(str(arguments[2]))
        return original(self, *arguments, **options)

    monkeypatch.setattr(SyncConnection, "_execute_context", counted)
    return executed


async def cancel_a_step_mid_statement(db: Database, long_statement: str) -> None:
    """A step (a transaction) that INSERTs 'half' into `t (v)`, then runs `long_statement`, cancelled while that
    runs (the bot shutting down); then, within 3 s (not behind the abandoned statement), nothing of it is in `t`,
    the next step commits, and no connection is left checked out."""
    started = asyncio.Event()

    async def long_step() -> None:
        async with db.transaction():
            await db.execute("INSERT INTO t (v) VALUES ('half')")
            started.set()
            await db.execute(long_statement)

    step = asyncio.create_task(long_step())
    await started.wait()
    await asyncio.sleep(0.02)
    step.cancel()
    async with asyncio.timeout(3):
        with pytest.raises(asyncio.CancelledError):
            await step
        assert await db.scalar("SELECT COUNT(*) FROM t") == 0
        async with db.transaction():
            await db.execute("INSERT INTO t (v) VALUES ('next')")
    assert [row["v"] for row in await db.fetch_all("SELECT v FROM t")] == ["next"]
    assert db.engine.sync_engine.pool.checkedout() == 0


async def sqlite_database(path: Path) -> Database:
    """The SQLite file at `path`, created and migrated."""
    db = open_database(DatabaseSettings(sqlite_path=path))
    OPENED.append(db)
    await migrate(db)
    return db


#: Per test server, the database migrated once that every test's database is a copy of.
_MIGRATED_TEMPLATES: dict[int, str] = {}


def postgres_url(server: PostgresServer, template: str = "template0") -> str:
    """A DATABASE_URL for a new database on the test server, empty or a copy of `template` (no TLS: 127.0.0.1 only)."""
    url = server.fresh_database(template)
    return url.replace("postgresql+asyncpg://", "postgresql://", 1) + "?sslmode=disable"


async def migrated_postgres_url(server: PostgresServer) -> str:
    """A DATABASE_URL for a new, migrated database on the test server: a copy of one migrated once (milliseconds)."""
    template = _MIGRATED_TEMPLATES.get(server.port)
    if template is None:
        url = postgres_url(server)
        first = open_database(DatabaseSettings(sqlite_path=Path("/nonexistent"), url=url))
        try:
            await migrate(first)
        finally:
            await first.close()  # a template may have no connections when it is copied
        template = _MIGRATED_TEMPLATES[server.port] = url.rsplit("/", 1)[1].split("?", 1)[0]
    return postgres_url(server, template)


async def postgres_database(server: PostgresServer) -> Database:
    """A new, migrated database on the test server."""
    db = open_database(DatabaseSettings(sqlite_path=Path("/nonexistent"), url=await migrated_postgres_url(server),
                                        pool_size=5))
    OPENED.append(db)
    return db


#: The plan that runs a statement's `IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` again for every row the
#: statement could change: a nested loop with the subquery on its inner side and nothing kept between runs.
#: The server may choose it for a small or unanalysed table, or for a generic plan whose LIMIT is a parameter;
#: with these settings it has no other choice.
SUBQUERY_RUN_PER_ROW = {"enable_hashagg": "off", "enable_sort": "off", "enable_hashjoin": "off",
                        "enable_mergejoin": "off", "enable_material": "off"}


async def set_session_defaults(server: PostgresServer, db: Database, settings: dict[str, str]) -> None:
    """New sessions on `db`'s database start with `settings` (`ALTER DATABASE ... SET`); `db`'s pooled
    connections go, so its next statement has a new one."""
    if db.settings is None or db.settings.url is None:
        raise ValueError("not a PostgreSQL database opened with settings")
    name = db.settings.url.rsplit("/", 1)[1].split("?", 1)[0]
    for setting, value in settings.items():
        await asyncio.to_thread(server.psql, f'ALTER DATABASE "{name}" SET {setting} = {value}')
    await db.engine.dispose()


async def set_read_only(server: PostgresServer, db: Database, *, on: bool = True) -> None:
    """New sessions on `db`'s database read-only, as on a standby or an Azure server whose storage is nearly full
    (or no longer); `db`'s pooled connections go, so its next statement has a new one."""
    await set_session_defaults(server, db, {"default_transaction_read_only": "on" if on else "off"})


def another_engine(db: Database, application_name: str | None = None) -> Database:
    """A second engine on the same database, as a second instance (or process) would have; on PostgreSQL its
    sessions named `application_name`, as an instance names them (`bot.app.create_app`)."""
    if db.settings is None:
        raise ValueError("opened without settings")
    other = open_database(dataclasses.replace(db.settings, application_name=application_name))
    OPENED.append(other)
    return other


async def close_opened() -> None:
    """Close what this test opened (a pooled connection left open would warn when collected)."""
    while OPENED:
        await OPENED.pop().close()


@dataclass(frozen=True)
class RawResult:
    """What `sql` read (rows by name and position) and how many rows it changed."""

    rows: list[sqlite3.Row]
    rowcount: int

    def fetchall(self) -> list[sqlite3.Row]:
        return self.rows

    def fetchone(self) -> sqlite3.Row | None:
        return self.rows[0] if self.rows else None

    def __iter__(self) -> Iterator[sqlite3.Row]:
        return iter(self.rows)


def sql(target: Database | Path, statement: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> RawResult:
    """Run one statement on the SQLite file with plain `sqlite3`, committed at once."""
    path = target if isinstance(target, Path) else target.sqlite_path
    if path is None:
        raise ValueError("raw SQL is for the SQLite file only")
    connection = sqlite3.connect(path, isolation_level=None)
    connection.row_factory = sqlite3.Row
    try:
        cursor = connection.execute(statement, parameters)
        rows = cursor.fetchall()
        return RawResult(rows, cursor.rowcount)
    finally:
        connection.close()
