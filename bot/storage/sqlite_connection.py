"""The embedded SQLite file through aiosqlite, one trip to its thread per statement instead of four.

aiosqlite runs every sqlite3 call in a thread of the connection's own, so the event loop never
blocks on the file (issue 13). Under SQLAlchemy each statement was four such calls: open a cursor,
execute, fetch the rows, close the cursor; each a hand-over to the thread and a wake-up of the
event loop, about three quarters of the CPU the bot spent on SQLite per referral. Here a cursor is
only a holder on the event loop's side: `execute` runs the statement, reads all its rows and closes
the sqlite3 cursor in one call on the thread, and the rest answers from what that call returned.
A transaction's BEGIN rides with its first statement; commit and rollback skip the trip when no
transaction is open (sqlite3 would do nothing there); everything else (the connection, the thread)
is aiosqlite's own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite

#: What `execute` brings back from the thread: description, rowcount, lastrowid, rows.
Outcome = tuple[Any, int, int | None, list[Any]]


def _run(connection: sqlite3.Connection, sql: str, parameters: Sequence[Any] | None, begin: str | None) -> Outcome:
    """On the connection's thread: `begin` if a transaction starts here, the statement, all its rows,
    and the figures a DBAPI cursor keeps."""
    if begin is not None:
        connection.execute(begin)
    cursor = connection.cursor()
    try:
        cursor.execute(sql, () if parameters is None else parameters)
        rows = cursor.fetchall() if cursor.description is not None else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _run_many(connection: sqlite3.Connection, sql: str, parameter_sets: Iterable[Sequence[Any]],
              begin: str | None) -> Outcome:
    if begin is not None:
        connection.execute(begin)
    cursor = connection.cursor()
    try:
        cursor.executemany(sql, parameter_sets)
        return cursor.description, cursor.rowcount, cursor.lastrowid, []
    finally:
        cursor.close()


class StatementCursor:
    """The part of aiosqlite's cursor SQLAlchemy uses, each statement one call on the connection's thread."""

    arraysize = 1

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> StatementCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._rows = []

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> StatementCursor:
        self.description, self.rowcount, self.lastrowid, self._rows = await self._connection.run_on_thread(
            _run, sql, parameters)
        return self

    async def executemany(self, sql: str, parameter_sets: Iterable[Sequence[Any]]) -> StatementCursor:
        self.description, self.rowcount, self.lastrowid, self._rows = await self._connection.run_on_thread(
            _run_many, sql, list(parameter_sets))
        return self

    async def fetchall(self) -> list[Any]:
        """The rows `execute` brought back; `fetchone` and `fetchmany` serve a streamed result (the import)."""
        rows, self._rows = self._rows, []
        return rows

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def close(self) -> None:
        self._rows = []


class OneTripConnection(aiosqlite.Connection):
    """aiosqlite's connection whose cursors run each statement in one call on its thread.

    A transaction's BEGIN goes with its first statement (`begin_with_next_statement`), in the same
    call and just before it: one trip less per transaction, and the writer's lock is taken when the
    transaction has something to do, not an event-loop turn earlier.
    """

    _begin: str | None = None

    def begin_with_next_statement(self, begin: str) -> None:
        """Run `begin` (e.g. `BEGIN IMMEDIATE`) right before the next statement, in its call."""
        self._begin = begin

    def cursor(self) -> StatementCursor:  # type: ignore[override]  # SQLAlchemy awaits its __aenter__
        return StatementCursor(self)

    async def commit(self) -> None:
        """No trip to the thread when there is nothing to commit (a read in autocommit, or no statement)."""
        self._begin = None
        if self._conn.in_transaction:
            await super().commit()

    async def rollback(self) -> None:
        """No trip when nothing is open: the pool rolls back every connection it takes back."""
        self._begin = None
        if self._conn.in_transaction:
            await super().rollback()

    async def run_statement(self, sql: str, parameters: Sequence[Any]) -> Outcome:
        """One statement (positional `?` parameters) and all its rows, in one call on the thread, past
        SQLAlchemy (`bot.storage.direct_statements`); BEGIN with it if a transaction starts here."""
        return await self.run_on_thread(_run, sql, parameters)

    async def run_on_thread(self, function: Any, sql: str, parameters: Any) -> Outcome:
        begin, self._begin = self._begin, None
        outcome: Outcome = await self._execute(function, self._conn, sql, parameters, begin)  # type: ignore[no-untyped-call]
        return outcome


async def connect(database: str, **options: Any) -> OneTripConnection:
    """Open `database` (a path, or a `file:` URI with `uri=True`) on a thread of its own."""
    connection = OneTripConnection(lambda: sqlite3.connect(database, **options), iter_chunk_size=64)
    connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite: never holds the process open
    await connection
    return connection
