"""The SQLite file as the running bot uses it: statements, commits and checkpoints on the event loop.

SQLAlchemy's async engine over aiosqlite sends every call (cursor, execute, fetch, close, BEGIN,
COMMIT) to a thread and back: ~150 µs of CPU per statement and ~600 µs per transaction, most of
what a referral cost (issue 14). SQLite answers a statement on the bot's small, indexed tables from
its page cache in microseconds, so statements run on the event loop. So does the commit, fsync
included (`synchronous = FULL`; ~0.2 ms on the SSD this was measured on, ~0.6 ms for a commit with
a WAL checkpoint): done in a thread, every commit waited for the event loop to come round again
while it held the write lock, which under load made the lock, not the CPU, the limit (issue 14's
benchmark: 14 instead of 36 mails a second). A disk whose fsync takes milliseconds makes SQLite the
wrong choice anyway: production runs on PostgreSQL.

Two connections. Transactions use the writer (`BEGIN IMMEDIATE`); in this process writers queue on
an `asyncio.Lock`, first come first served, so they never meet SQLite's busy handler, which sleeps
up to 100 ms at a time. Another process (a CLI command) can still hold the file's write lock: then
`BEGIN IMMEDIATE` is tried again after a short `asyncio.sleep`, never with the event loop blocked,
until `busy_timeout` has passed. Reads outside a transaction use the reader (`query_only`), which in
WAL mode sees the last commit and never waits for the writer.

A long transaction gives the event loop a turn every `YIELD_EVERY` statements, so a pass over
thousands of rows (retention) does not hold up the requests.

Errors are SQLAlchemy's (`IntegrityError`, `OperationalError`, ...), as the PostgreSQL path raises
them, with the statement's values hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import exc

#: SQLite's primary result codes for "another connection holds the lock".
_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
#: A transaction's statements run without a yield; after this many, the event loop gets a turn.
YIELD_EVERY = 32
_FIRST_RETRY_SECONDS = 0.001
_LONGEST_RETRY_SECONDS = 0.02

T = TypeVar("T")
Result = tuple[list[dict[str, Any]], int]


class SqliteFile:
    """The bot's two connections to one SQLite file, opened on first use."""

    def __init__(self, path: Path, *, busy_timeout_ms: int, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._busy_timeout = busy_timeout_ms / 1000
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._lock: asyncio.Lock | None = None
        self._since_yield = 0

    # -- transactions ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[sqlite3.Connection]:
        """The writer inside `BEGIN IMMEDIATE` (read-only: `BEGIN`); committed when the block ends."""
        async with self._writer_lock():
            connection = self._connection(writer=True)
            begin = "BEGIN" if self.read_only else "BEGIN IMMEDIATE"
            await self._when_not_busy(lambda: connection.execute(begin))
            try:
                yield connection
                await self._when_not_busy(lambda: _run(connection, "COMMIT", {}))
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def savepoint(self, connection: sqlite3.Connection, name: str) -> AsyncIterator[None]:
        """A transaction inside the current one: rolled back alone when its block raises."""
        connection.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            connection.execute(f"ROLLBACK TO {name}")
            connection.execute(f"RELEASE {name}")
            raise
        connection.execute(f"RELEASE {name}")

    async def run(self, connection: sqlite3.Connection, sql: str, values: Mapping[str, Any]) -> Result:
        """One statement in the transaction on `connection`, on the event loop."""
        self._since_yield += 1
        if self._since_yield >= YIELD_EVERY:
            self._since_yield = 0
            await asyncio.sleep(0)
        return _run(connection, sql, values)

    async def read(self, sql: str, values: Mapping[str, Any]) -> Result:
        """A statement that only reads, outside a transaction: the reader, on the event loop."""
        connection = self._connection(writer=False)
        return await self._when_not_busy(lambda: _run(connection, sql, values))

    # -- the WAL and the end -------------------------------------------------------------------------

    async def checkpoint_truncate(self) -> int:
        """`PRAGMA wal_checkpoint(TRUNCATE)` without waiting for readers; 1 when one was still reading."""
        async with self._writer_lock():
            rows, _ = _run(self._connection(writer=True), "PRAGMA wal_checkpoint(TRUNCATE)", {})
        return int(next(iter(rows[0].values())))

    def close(self) -> None:
        """Close both connections (after the last transaction)."""
        for connection in (self._writer, self._reader):
            if connection is not None:
                connection.close()
        self._writer = self._reader = None

    # -- inside ---------------------------------------------------------------------------------------

    def _writer_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _connection(self, *, writer: bool) -> sqlite3.Connection:
        current = self._writer if writer else self._reader
        if current is not None:
            return current
        try:
            if self.read_only:
                connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                             check_same_thread=False)
            else:
                connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            pragmas = ["synchronous = FULL", "secure_delete = ON", "foreign_keys = ON", "busy_timeout = 0"]
            if not self.read_only:
                pragmas.insert(0, "journal_mode = WAL")
                if not writer:
                    pragmas.append("query_only = ON")
            for pragma in pragmas:
                connection.execute(f"PRAGMA {pragma}").close()
        except sqlite3.Error as error:
            raise as_sqlalchemy_error(error, "connect") from error
        if writer:
            self._writer = connection
        else:
            self._reader = connection
        return connection

    async def _when_not_busy(self, call: Callable[[], T]) -> T:
        """`call()`, tried again while another process holds the lock, up to `busy_timeout`."""
        deadline = time.monotonic() + self._busy_timeout
        wait = _FIRST_RETRY_SECONDS
        while True:
            try:
                return call()
            except exc.OperationalError as error:
                if not _is_busy(error.orig) or time.monotonic() >= deadline:
                    raise
            except sqlite3.OperationalError as error:
                if not _is_busy(error) or time.monotonic() >= deadline:
                    raise as_sqlalchemy_error(error, "BEGIN") from error
            await asyncio.sleep(wait)
            wait = min(wait * 2, _LONGEST_RETRY_SECONDS)


def _run(connection: sqlite3.Connection, sql: str, values: Mapping[str, Any]) -> Result:
    """The statement's rows as dicts (all read, so no read transaction stays open) and its row count."""
    try:
        cursor = connection.execute(sql, values)
    except sqlite3.Error as error:
        raise as_sqlalchemy_error(error, sql) from error
    try:
        description = cursor.description
        if description is None:
            return [], cursor.rowcount
        names = [column[0] for column in description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return rows, len(rows)
    finally:
        cursor.close()


def _is_busy(error: BaseException | None) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)
    return int(code) & 0xFF in _BUSY_CODES


def as_sqlalchemy_error(error: sqlite3.Error, statement: str) -> exc.DBAPIError:
    """SQLAlchemy's exception for a sqlite3 one, as the engine would raise it; no values in its text."""
    kind: type[exc.DBAPIError] = exc.DBAPIError
    if isinstance(error, sqlite3.IntegrityError):
        kind = exc.IntegrityError
    elif isinstance(error, sqlite3.OperationalError):
        kind = exc.OperationalError
    elif isinstance(error, sqlite3.ProgrammingError):
        kind = exc.ProgrammingError
    return kind(statement, None, error, hide_parameters=True)
