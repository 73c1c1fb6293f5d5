"""The one way the bot talks to its database: SQLAlchemy 2 Core, async, on SQLite or PostgreSQL.

`DATABASE_URL` unset: the embedded SQLite file in `BOT_DATA_DIR` (aiosqlite: the file's I/O runs in
a thread of its own, never on the event loop). Set (`postgresql://user@host:port/db`): PostgreSQL
through asyncpg, shared by several instances. The SQL is written once, in the dialect both engines
speak (`ON CONFLICT`, `RETURNING`, named parameters); the few places where they differ ask this
module (`for_update`, `skip_locked`, `lock`).

Every step that changes state runs in `async with db.transaction():`; the stores inside it reach
the same connection through a context variable, so a state change, its register entry and the
messages it causes commit together or not at all without a connection passed around. A transaction
inside a transaction is a savepoint (or, asked for, simply part of it). Outside one, each statement
commits on its own, in the engine's autocommit: no BEGIN and COMMIT trips around it, and its
checkout, execution and return cross SQLAlchemy's async bridge (a greenlet) once, not four times.

SQLite serialises writers: a transaction starts with `BEGIN IMMEDIATE`, sent with its first
statement (two writers never deadlock on a lock upgrade). The process's own writers take turns
before that, first come first served (`_writer_turn`): SQLite's busy handler makes a waiting writer
sleep 1, 2, 5 ... 100 ms between tries and lets whoever tries at the right moment win, which under
load put a small transaction's p99 at 130 ms and its worst at 0.8 s; it is left for other processes
(a `python -m bot` command beside `serve`), which wait up to `busy_timeout`.
PostgreSQL runs them side by side at READ COMMITTED; where that matters the stores say how they
cope: `FOR UPDATE SKIP LOCKED` for the outboxes, an advisory lock for the register's hash chain,
compare-and-set for state changes. Nothing there waits without bound: a statement that waits
LOCK_WAIT_SECONDS for a row lock (another session stuck holding it), runs STATEMENT_SECONDS, or a
transaction left idle IDLE_IN_TRANSACTION_SECONDS is ended by the server, and a server that stops
answering altogether by the client after `server_silence_seconds`; each is the same `DatabaseError`
as a full pool ("probeer zo opnieuw"), and the connection goes. Work that legitimately runs long
(migrations, an import) lifts them for its transaction (`unbounded`, `without_time_limits`).

Wiped means gone from the disk too. In SQLite, `secure_delete` zeroes deleted content in the main
file, but WAL mode keeps old page versions in `-wal` until a checkpoint; so a wipe (`note_wipe`)
makes the end of its transaction checkpoint and truncate the WAL (`truncate_wal`); a reader that
keeps the checkpoint busy delays it by `checkpoint_retry_seconds`, not longer. The files are
private (0600) from their first byte. In PostgreSQL, `VACUUM` reclaims dead row versions; Azure's
storage is encrypted at rest and the server is the OCMW-independent processor named in docs/verwerkers.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import sqlite3
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import bindparam, event, text
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.engine import CursorResult, Engine, RootTransaction
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.util import greenlet_spawn

from bot.storage import direct_statements, sqlite_connection
from bot.storage.direct_statements import CompiledStatement

logger = logging.getLogger(__name__)

Dialect = Literal["sqlite", "postgresql"]
#: How long a SQLite writer waits for one in another process before giving up (the other holds it for milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: See `DatabaseSettings.pool_wait_seconds`.
POOL_WAIT_SECONDS = 10.0
#: PostgreSQL: how long a statement waits for a lock another session holds (a click waits this, not for ever).
LOCK_WAIT_SECONDS = 3.0
#: PostgreSQL: how long one statement may run; the bot's run in milliseconds.
STATEMENT_SECONDS = 10.0
#: PostgreSQL: a session idle this long inside a transaction (its client frozen or gone) is ended, its locks freed.
IDLE_IN_TRANSACTION_SECONDS = 60.0
#: See `DatabaseSettings.server_silence_seconds`: longer than STATEMENT_SECONDS, so the server's own limit speaks first.
SERVER_SILENCE_SECONDS = STATEMENT_SECONDS + 5
#: The server's answers to those limits: lock_not_available, query_canceled (statement_timeout, a cancel request).
_TIME_LIMIT_SQLSTATES = frozenset({"55P03", "57014"})
#: The server taking no connection for a while: admin_shutdown, crash_shutdown, cannot_connect_now (shutting down,
#: starting up, recovering: a restart or a failover) and too_many_connections (every slot taken, as while the old
#: instances of a swap still hold their pools). Out of reach, as a refused connection: tried again.
_UNREACHABLE_SQLSTATES = {"57P01": "server shutting down", "57P02": "server crashed",
                          "57P03": "server not taking connections now", "53300": "no connection slot free"}
#: PostgreSQL refusing writes for a while, by SQLSTATE: read_only_sql_transaction (a failover left the bot on a
#: standby; Azure makes a server read-only when its storage is nearly full), disk_full.
_REFUSED_SQLSTATES = {"25006": "database read-only", "53100": "database full"}
#: SQLSTATE class 53, insufficient resources (out of memory, too many connections): short of them for a while.
_SHORT_OF_RESOURCES_CLASS = "53"
#: SQLite refusing writes, by primary result code: the disk full, the file or its folder read-only, the disk failing.
_SQLITE_REFUSALS = {sqlite3.SQLITE_FULL: "database full", sqlite3.SQLITE_READONLY: "database read-only",
                    sqlite3.SQLITE_IOERR: "database unavailable: disk I/O error"}
#: TLS towards PostgreSQL, as libpq names it (`sslmode` in DATABASE_URL).
TLS_MODES = ("disable", "require", "verify-ca", "verify-full")
SqlParameters = Mapping[str, Any]
#: A row read, by column name: SQLAlchemy's `RowMapping`, or a dictionary from `bot.storage.direct_statements`.
Row = Mapping[str, Any]
#: See `Database.checkpoint_retry_seconds`.
CHECKPOINT_RETRY_SECONDS = 1.0
#: A WAL that readers kept from being emptied this long is logged as a warning (wiped content lingers).
WAL_LINGER_WARN_SECONDS = 300.0
#: Returns the password for a new connection: Entra ID's access token, fetched (and refreshed) per connection.
PasswordSource = Callable[[], Awaitable[str]]


class DatabaseError(Exception):
    """The database could not be reached or refused the work; the caller retries later or says so."""


class WritesRefused(DatabaseError):
    """The database answers, but refuses writes for a while: a full disk, a read-only server or file, a failing disk."""


class DatabaseUnreachable(DatabaseError):
    """No connection could be made or kept (refused, reset, the server silent, starting or gone): a later try may
    find it back (a failover, a restart of the server, the network not up yet)."""


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the state lives: `url` None means the embedded SQLite file `sqlite_path`."""

    sqlite_path: Path
    #: Never in a repr: with password login the URL may hold the password.
    url: str | None = field(default=None, repr=False)
    #: For PostgreSQL with Entra ID: a fresh access token per new connection, used as the password.
    password: PasswordSource | None = None
    pool_size: int = 10
    #: How long a step waits for one of the pool's connections (or, in SQLite, for the writer before it)
    #: before it says "probeer zo opnieuw".
    pool_wait_seconds: float = POOL_WAIT_SECONDS
    #: For commands that only read (`register verify`): SQLite opens the file read-only (and never
    #: creates it), PostgreSQL sessions are read-only (and, an operator's command reading everything, unbounded
    #: in time: they hold no lock another session waits for).
    read_only: bool = False
    #: PostgreSQL: a statement (or a connection's setup) the server has not answered in this long is given up on
    #: by the client: a failed-over primary whose address leads nowhere closes nothing, and would hold the
    #: step, its pooled connection and its turn for as long as TCP keeps trying.
    server_silence_seconds: float = SERVER_SILENCE_SECONDS
    #: PostgreSQL: the name every session of this process carries (`application_name`): while one is open, the
    #: process runs (`bot.storage.activity_receipts`), and an operator sees whose session is whose.
    application_name: str | None = None

    @property
    def dialect(self) -> Dialect:
        return "sqlite" if self.url is None else "postgresql"


@dataclass(frozen=True)
class Rows:
    """A statement's outcome, read in full: the rows (by column name) and how many rows it changed."""

    rows: list[Row]
    rowcount: int

    def first(self) -> Row | None:
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        """The first column of the first row (None when there is none)."""
        return None if not self.rows else next(iter(self.rows[0].values()))

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class _Transaction:
    """The connection of the outermost transaction, the task that owns it, and whether it wiped data."""

    connection: AsyncConnection
    task: asyncio.Task[Any] | None
    wiped: bool = False
    #: A statement of it changed a row: once it commits, the database takes writes again (`writes_refused_at`).
    wrote: bool = False
    after_commit: list[Callable[[], None]] = field(default_factory=list)


class Database:
    """The engine, and the transaction the current task is in (if any)."""

    def __init__(self, engine: AsyncEngine, dialect: Dialect, sqlite_path: Path | None = None, *,
                 read_only: bool = False, settings: DatabaseSettings | None = None) -> None:
        self.engine = engine
        #: What it was opened with (another process or engine on the same database opens these).
        self.settings = settings
        self.dialect: Dialect = dialect
        self.sqlite_path = sqlite_path
        self.read_only = read_only
        self._current: contextvars.ContextVar[_Transaction | None] = contextvars.ContextVar(
            f"db-transaction-{id(self)}", default=None)
        self._statements: dict[tuple[str, frozenset[str]], tuple[TextClause, CompiledStatement | None]] = {}
        self._wal_dirty = False
        #: After a busy checkpoint, the automatic ones (after a wipe, after a statement) wait this long:
        #: under load a reader is nearly always busy, and one attempt per statement cost CPU and a log line.
        self.checkpoint_retry_seconds = CHECKPOINT_RETRY_SECONDS
        self._busy_since: float | None = None
        self._busy_warned_at: float | None = None
        #: The retry a busy checkpoint schedules, so an idle bot (no statement to retry after) still
        #: empties the WAL once the reader is gone, not only at the next sweep.
        self._retry: asyncio.TimerHandle | None = None
        self._retrying: asyncio.Task[bool] | None = None
        #: SQLite: the process's writers queue here for the file's one writer lock (see the module's docstring).
        self._writer = asyncio.Lock() if dialect == "sqlite" and not read_only else None
        self._writer_wait_seconds = settings.pool_wait_seconds if settings is not None else POOL_WAIT_SECONDS
        #: When (`time.monotonic()`) a write was last refused (`WritesRefused`), for `/readyz`; None: not yet.
        self.writes_refused_at: float | None = None

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def for_update(self) -> str:
        """` FOR UPDATE` where rows can be locked (PostgreSQL); SQLite's writer lock already covers it."""
        return " FOR UPDATE" if self.is_postgres else ""

    @property
    def skip_locked(self) -> str:
        """` FOR UPDATE SKIP LOCKED`: another instance's leased rows are passed over, not waited for."""
        return " FOR UPDATE SKIP LOCKED" if self.is_postgres else ""

    @property
    def in_transaction(self) -> bool:
        return self._current.get() is not None

    @contextlib.asynccontextmanager
    async def transaction(self, *, savepoint: bool = True) -> AsyncIterator[None]:
        """All statements inside commit together or not at all; nested, a savepoint.

        `savepoint=False` joins an open transaction instead: for a store's block that leaves nothing
        half done when it fails (it reads, then writes once), a savepoint is two trips to the
        database for nothing. A caller that catches its error cannot undo what it wrote.
        """
        current = self._own_transaction()
        if current is not None:
            if not savepoint:
                yield
                return
            async with current.connection.begin_nested():
                yield
            return
        async with self._writer_turn(), self._connection_in_transaction() as connection:
            state = _Transaction(connection, _current_task())
            token = self._current.set(state)
            try:
                yield
            finally:
                self._current.reset(token)
        if state.wrote:
            self.writes_refused_at = None  # a write was taken: a refusal before it no longer says "not ready"
        for callback in state.after_commit:  # only reached once committed
            callback()
        if state.wiped:
            self._wal_dirty = True
            await self._truncate_wal_unless_just_busy()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the current transaction has committed (at once outside one).

        For waking a worker: woken before the commit, it would look for the row and not see it yet.
        """
        current = self._own_transaction()
        if current is None:
            callback()
        else:
            current.after_commit.append(callback)

    def current_connection(self) -> AsyncConnection:
        """The current transaction's connection, for bulk statements built with SQLAlchemy Core (an import)."""
        current = self._own_transaction()
        if current is None:
            raise RuntimeError("current_connection() outside a transaction")
        return current.connection

    async def lock(self, name: str) -> None:
        """Hold a named lock until the current transaction ends (one chain, one writer at a time).

        PostgreSQL: a transaction-scoped advisory lock, so instances take turns. SQLite: nothing to
        do, the transaction already holds the file's only writer lock.
        """
        if self._own_transaction() is None:
            raise RuntimeError("lock() outside a transaction")
        if self.is_postgres:
            await self.execute("SELECT pg_advisory_xact_lock(:key)", {"key": lock_key(name)})

    @contextlib.asynccontextmanager
    async def without_time_limits(self) -> AsyncIterator[None]:
        """A transaction whose statements may wait and run as long as they need (an import; `unbounded`)."""
        async with self.transaction(), unbounded(self.current_connection()):
            yield

    def note_wipe(self) -> None:
        """Client data was just overwritten or deleted: empty SQLite's WAL once that is committed."""
        current = self._own_transaction()
        if current is not None:
            current.wiped = True
        else:
            self._wal_dirty = True  # a single statement: `execute` checkpoints after it

    async def execute(self, sql: str, parameters: SqlParameters | None = None) -> Rows:
        """Run one statement in the current transaction (or on its own); its rows, read in full.

        Parameters are named (`:name`); a list, tuple or set value stands for `IN :name`.
        """
        parameters = parameters or {}
        statement, direct = self._statement(sql, parameters)
        rendered = self._direct(direct, parameters)
        current = self._own_transaction()
        if current is not None:
            answer = None
            if rendered is not None:
                answer = await direct_statements.run_in_transaction(current.connection, *rendered)
            rows = Rows(*answer) if answer is not None else await _run(current.connection, statement, parameters)
            current.wrote = current.wrote or (rows.rowcount > 0 and not _is_read(sql))
            return rows
        if self.is_postgres:
            # On its own, a statement is its own transaction: autocommit, no BEGIN and COMMIT round
            # trips around it, and a lock it takes (`register_append`'s) ends with it, in the server.
            if rendered is not None:
                return await self._direct_alone(*rendered)
            return await self._alone(statement, parameters, {"isolation_level": "AUTOCOMMIT"})
        # On its own, in SQLite's autocommit: one trip, no BEGIN and COMMIT around it. A read goes beside
        # the writer (WAL) on the last committed state, without the writer's lock; a write waits for its
        # turn among the process's writers (`_writer_turn`), then takes that lock and commits within the
        # statement.
        async with self._writer_turn(needed=not _is_read(sql)):
            if rendered is not None:
                rows = await self._direct_alone(*rendered)
            else:
                rows = await self._alone(statement, parameters, {_ALONE: True})
        if self._wal_dirty:
            await self._truncate_wal_unless_just_busy()
        return rows

    async def fetch_one(self, sql: str, parameters: SqlParameters | None = None) -> Row | None:
        return (await self.execute(sql, parameters)).first()

    async def fetch_all(self, sql: str, parameters: SqlParameters | None = None) -> list[Row]:
        return (await self.execute(sql, parameters)).rows

    async def scalar(self, sql: str, parameters: SqlParameters | None = None) -> Any:
        return (await self.execute(sql, parameters)).scalar()

    async def truncate_wal(self) -> bool:
        """SQLite: checkpoint and truncate the WAL if a wipe left it dirty; True when nothing is left to do.

        Never waits for other connections (busy_timeout 0 for the call): a checkpoint that finds a
        reader busy stays due, tried again in `checkpoint_retry_seconds` and by the periodic sweep. A
        truncated file's blocks are freed, not overwritten: the file system or an SSD may keep them,
        sealed with the draft key.
        """
        if not self._wal_dirty or self.dialect != "sqlite" or self.read_only:
            return True
        if self._own_transaction() is not None:
            return False  # inside a transaction SQLite refuses; the transaction's end tries again
        async with self.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection  # the aiosqlite connection, in autocommit mode
            await driver.execute("PRAGMA busy_timeout = 0")
            try:
                cursor = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                busy = (await cursor.fetchone())[0]
            except Exception as error:  # a failed checkpoint is retried, never fatal
                logger.warning("WAL checkpoint failed; retried later", extra={"error": type(error).__name__})
                return False
            finally:
                await driver.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if busy:
            self._note_busy_checkpoint(asyncio.get_running_loop().time())
            self._schedule_retry()
            return False
        self._wal_dirty = False
        self._busy_since = self._busy_warned_at = None
        return True

    def _note_busy_checkpoint(self, now: float) -> None:
        """Busy is normal under load; a WAL that stays unemptied for minutes is worth a warning (once a period)."""
        if self._busy_since is None:
            self._busy_since = now
        lingering = now - self._busy_since
        if lingering >= WAL_LINGER_WARN_SECONDS and (
                self._busy_warned_at is None or now - self._busy_warned_at >= WAL_LINGER_WARN_SECONDS):
            self._busy_warned_at = now
            logger.warning("WAL not emptied for %d s (readers keep the checkpoint busy): wiped content is still "
                           "in the -wal file; retried", int(lingering))
        else:
            logger.debug("WAL checkpoint busy (another connection is reading); retried later")

    def _schedule_retry(self) -> None:
        """Try the checkpoint again in `checkpoint_retry_seconds`, once (a retry that is busy schedules the next)."""
        if self._retry is not None:
            return
        loop = asyncio.get_running_loop()
        # A fresh context: the retry belongs to no caller's transaction.
        self._retry = loop.call_later(self.checkpoint_retry_seconds, self._start_retry, context=contextvars.Context())

    def _start_retry(self) -> None:
        self._retry = None
        self._retrying = asyncio.get_running_loop().create_task(self.truncate_wal())
        self._retrying.add_done_callback(_log_failed_retry)

    async def _truncate_wal_unless_just_busy(self) -> None:
        """`truncate_wal`, unless a busy one's retry is still to come (`checkpoint_retry_seconds` after it)."""
        if self._retry is None:
            await self.truncate_wal()

    async def close(self) -> None:
        """Close every pooled connection (app shutdown)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._retrying is not None and not self._retrying.done():
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
        await self.engine.dispose()

    def _own_transaction(self) -> _Transaction | None:
        """The current task's transaction; refuses one that belongs to another task.

        A task started inside a transaction inherits the context variable; two tasks on one
        connection would interleave their statements, so that is an error, not a silent share.
        """
        current = self._current.get()
        if current is not None and current.task is not _current_task():
            raise RuntimeError("a database transaction used from a task that did not open it")
        return current

    @contextlib.asynccontextmanager
    async def _writer_turn(self, *, needed: bool = True) -> AsyncIterator[None]:
        """SQLite: wait for this process's writer before this one (as long as for a pooled connection).

        First come, first served, without SQLite's sleeping retries; a read goes beside (`needed=False`).
        """
        if self._writer is None or not needed:
            yield
            return
        try:
            async with asyncio.timeout(self._writer_wait_seconds):
                await self._writer.acquire()
        except TimeoutError as error:
            raise DatabaseError("database busy: the writer before this one did not finish in time") from error
        try:
            yield
        finally:
            self._writer.release()

    @contextlib.asynccontextmanager
    async def _connection_in_transaction(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection with its transaction begun; committed when the block ends (rolled back when it
        fails), and returned. As `async with engine.connect() as c, c.begin():`, but checkout and BEGIN cross
        SQLAlchemy's async bridge (a greenlet) in one pass, and COMMIT and return in another: two, not four,
        each ~50 us of the event loop's CPU, for every transaction."""
        with as_database_error(self._note_writes_refused):
            connection, transaction = await greenlet_spawn(_begin, self.engine.sync_engine)
            try:
                yield AsyncConnection(self.engine, connection)
            except BaseException as error:
                await _to_its_end(greenlet_spawn(_end, connection, transaction, error))
                raise
            await _to_its_end(greenlet_spawn(_end, connection, transaction, None))

    def _note_writes_refused(self) -> None:
        """Remembered for `/readyz` until a write that changes a row is taken again (`write_readiness`)."""
        self.writes_refused_at = time.monotonic()

    async def _alone(self, statement: TextClause, parameters: SqlParameters, options: dict[str, Any]) -> Rows:
        """One statement on a pooled connection of its own, with `options`: checkout, statement and
        return in one pass through SQLAlchemy's async bridge (a greenlet) rather than four, which cost
        a third of such a statement's CPU. The engine, its events and the driver are the same."""
        with as_database_error(self._note_writes_refused):
            rows = await greenlet_spawn(_run_alone, self.engine.sync_engine, statement, _values(parameters), options)
        return self._note_write_taken(rows, str(statement))

    def _note_write_taken(self, rows: Rows, sql: str) -> Rows:
        """A statement on its own that changed a row committed with itself: the database takes writes again."""
        if rows.rowcount > 0 and self.writes_refused_at is not None and not _is_read(sql):
            self.writes_refused_at = None
        return rows

    def _statement(self, sql: str, parameters: SqlParameters) -> tuple[TextClause, CompiledStatement | None]:
        """The statement, built once per text, and how it goes straight to the driver, if it can."""
        expanding = frozenset(name for name, value in parameters.items()
                              if isinstance(value, (list, tuple, set, frozenset)))
        key = (sql, expanding)
        prepared = self._statements.get(key)
        if prepared is None:
            statement = text(sql)
            if expanding:
                statement = statement.bindparams(*(bindparam(name, expanding=True) for name in expanding))
            direct = direct_statements.compile_statement(statement, self.engine.sync_engine.dialect)
            prepared = self._statements[key] = (statement, direct)
        return prepared

    def _direct(self, direct: CompiledStatement | None,
                parameters: SqlParameters) -> tuple[str, tuple[Any, ...]] | None:
        """The text and values for the driver when the statement goes straight to it (`direct_statements`)."""
        if direct is None or direct_statements.observed(self.engine.sync_engine):
            return None
        return direct.render(parameters)

    async def _direct_alone(self, sql: str, values: tuple[Any, ...]) -> Rows:
        """`_alone`, the statement straight to the driver: one pass of the async bridge, for the pool."""
        with as_database_error(self._note_writes_refused):
            rows = Rows(*await greenlet_spawn(direct_statements.run_alone, self.engine.sync_engine, sql, values))
        return self._note_write_taken(rows, sql)


async def _run(connection: AsyncConnection, statement: TextClause, parameters: SqlParameters) -> Rows:
    return _rows(await connection.execute(statement, _values(parameters)))


async def _to_its_end(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to its end even when the caller is cancelled meanwhile, then pass the cancellation on.

    For a transaction's end (COMMIT or ROLLBACK, and the connection's return to the pool). Cut short by a
    cancellation (a step stopped at shutdown), the pool logged the half-returned connection with a traceback
    and closed it; shielded only (`asyncio.shield`), the end ran on in a task of its own after the step, past
    the event loop's close. The step's cancellation waits the milliseconds of the end.
    """
    end = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            await asyncio.shield(end)
        except asyncio.CancelledError as cancellation:
            if end.done():
                raise
            cancelled = cancellation
            continue
        except BaseException as error:
            if cancelled is not None:
                raise cancelled from error
            raise
        break
    if cancelled is not None:
        raise cancelled


def _begin(engine: Engine) -> tuple[SyncConnection, RootTransaction]:
    """In SQLAlchemy's greenlet: a connection from the pool and its transaction, entered as `with` would."""
    connection = engine.connect()
    try:
        transaction = connection.begin()
        transaction.__enter__()
    except BaseException:
        connection.close()
        raise
    return connection, transaction


def _end(connection: SyncConnection, transaction: RootTransaction, error: BaseException | None) -> None:
    """In SQLAlchemy's greenlet: the transaction left as `with` leaves it (COMMIT, or ROLLBACK after `error`),
    then the connection back to the pool, whatever that said."""
    try:
        transaction.__exit__(None if error is None else type(error), error,
                             None if error is None else error.__traceback__)
    finally:
        connection.close()


def _run_alone(engine: Engine, statement: TextClause, values: dict[str, Any], options: dict[str, Any]) -> Rows:
    """In SQLAlchemy's greenlet: a connection from the pool, the statement, the connection back."""
    with engine.connect() as connection:
        return _rows(connection.execution_options(**options).execute(statement, values))


def _values(parameters: SqlParameters) -> dict[str, Any]:
    """The parameters as the driver takes them (a set as a sorted list, for `IN :name`)."""
    return {name: direct_statements.driver_value(value) for name, value in parameters.items()}


def _rows(result: CursorResult[Any]) -> Rows:
    rows = cast(list[Row], list(result.mappings().all())) if result.returns_rows else []
    return Rows(rows, result.rowcount if not result.returns_rows else len(rows))


#: Execution option: this connection runs one statement in SQLite's autocommit (see `Database.execute`).
_ALONE = "veilig_statement_alone"


def runs_alone(options: Mapping[str, Any]) -> bool:
    """A connection with these execution options runs one statement on its own, no transaction around it
    (SQLite's autocommit, PostgreSQL's): what a listener on SQLAlchemy's `begin` tells apart."""
    return bool(options.get(_ALONE)) or options.get("isolation_level") == "AUTOCOMMIT"


@contextlib.contextmanager
def as_database_error(writes_refused: Callable[[], None] | None = None) -> Iterator[None]:
    """No connection in time, or none to be had (refused, reset, the server gone: `DatabaseUnreachable`), or
    writes refused for a while (a full disk, a read-only standby: `WritesRefused`; `writes_refused` is told):
    `DatabaseError`, which the caller retries or reports; a statement the database refused for what it says (a
    constraint, a bug) stays what it is.

    The message names the kind only: a driver's text can quote the statement.
    """
    try:
        yield
    except PoolTimeoutError as error:
        raise DatabaseError("database busy: no connection free in the pool") from error
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) in _TIME_LIMIT_SQLSTATES or _sqlite_waited_out(error):
            raise DatabaseError("database busy: a lock or statement took longer than its limit") from error
        not_now = _UNREACHABLE_SQLSTATES.get(getattr(error.orig, "sqlstate", None) or "")
        if not_now is not None:  # before the refusals: too_many_connections is in class 53 too
            raise DatabaseUnreachable(f"database unavailable: {not_now}") from error
        refusal = _refusal(error)
        if isinstance(refusal, WritesRefused) and writes_refused is not None:
            writes_refused()
        if refusal is not None:
            raise refusal from error
        if not error.connection_invalidated and not _is_unreachable(error):
            raise
        raise DatabaseUnreachable(f"database unavailable: {type(error).__name__}") from error
    except OSError as error:  # TimeoutError too: the server did not answer in `server_silence_seconds`
        raise DatabaseUnreachable(f"database unavailable: {type(error).__name__}") from error


def _is_read(sql: str) -> bool:
    """A plain SELECT: it changes nothing, so it needs no writer's turn (`WITH` may write)."""
    return sql.lstrip()[:6].upper() == "SELECT"


def _log_failed_retry(task: asyncio.Task[bool]) -> None:
    """A scheduled checkpoint that failed outright (not busy): the periodic sweep tries again."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("WAL checkpoint retry failed; the sweep tries again",
                       extra={"error": type(task.exception()).__name__})


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _sqlite_waited_out(error: DBAPIError) -> bool:
    """SQLite's "database is locked": another writer (a `python -m bot` command beside `serve`) held the file
    past `SQLITE_BUSY_TIMEOUT_MS`. Not now, as PostgreSQL's lock timeout: the caller says "probeer zo opnieuw"."""
    code = getattr(error.orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _refusal(error: DBAPIError) -> DatabaseError | None:
    """The "not now" the database answered (see `_REFUSED_SQLSTATES`, `_SQLITE_REFUSALS`), or None."""
    original = error.orig
    code = getattr(original, "sqlite_errorcode", None)
    if isinstance(code, int):
        kind = _SQLITE_REFUSALS.get(code & 0xFF)  # an extended code carries the primary one in its low byte
        return None if kind is None else WritesRefused(kind)
    sqlstate = getattr(original, "sqlstate", None)
    if not isinstance(sqlstate, str):
        return None
    if sqlstate in _REFUSED_SQLSTATES:
        return WritesRefused(_REFUSED_SQLSTATES[sqlstate])
    if sqlstate[:2] == _SHORT_OF_RESOURCES_CLASS:
        return DatabaseError("database busy: the server is short of resources")
    return None


def _is_unreachable(error: DBAPIError) -> bool:
    """A connection that could not be made (refused, reset, timed out) rather than a statement refused.

    The server's own "not now" answers are told by SQLSTATE before (`_UNREACHABLE_SQLSTATES`): through
    SQLAlchemy's asyncpg adapter every server error is one class (`Error`), whose name says nothing of
    asyncpg's `CannotConnectNowError` or `TooManyConnectionsError`.
    """
    original = getattr(error, "orig", None)
    unreachable = isinstance(original, (OSError, ConnectionError, TimeoutError))
    return unreachable or "connect" in type(original).__name__.lower()


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `pg_advisory_xact_lock`, from the lock's name."""
    return zlib.crc32(name.encode()) - 2**31


def open_database(settings: DatabaseSettings) -> Database:
    """The engine for the settings: PostgreSQL (pooled; TLS as `sslmode` says) or the SQLite file.

    `hide_parameters`: a statement's values (a sealed draft, a mail with its ZIP, an address in a
    breach report's text) never appear in SQLAlchemy's log lines or in the text of its exceptions.
    """
    if settings.url is not None:
        url, connect_args = postgres_connection(settings.url)
        connect_args["server_settings"] = _time_limits(read_only=settings.read_only)
        if settings.application_name is not None:
            connect_args["server_settings"]["application_name"] = settings.application_name
        if settings.read_only:
            connect_args["server_settings"] |= {"default_transaction_read_only": "on",
                                                "default_transaction_isolation": "repeatable read"}
        else:
            connect_args["command_timeout"] = settings.server_silence_seconds
        # asyncpg's own connect timeout (60 s) is cut to the same bound.
        connect_args["timeout"] = settings.server_silence_seconds
        engine = create_async_engine(url, pool_size=settings.pool_size, max_overflow=0,
                                     pool_timeout=settings.pool_wait_seconds, pool_recycle=1800,
                                     connect_args=connect_args, hide_parameters=True)
        _replace_closed_connections(engine)
        _drop_silent_connections(engine)
        if settings.password is not None:
            _use_password_source(engine, settings.password)
        return Database(engine, "postgresql", read_only=settings.read_only, settings=settings)
    # aiosqlite logs every statement with its parameters at DEBUG (a sealed draft, a mail with its
    # ZIP): whatever level the process logs at, that logger never says more than INFO.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLogger("aiosqlite").level))
    path = settings.sqlite_path
    if settings.read_only:
        engine = create_async_engine(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true", pool_size=2, max_overflow=2,
                                     hide_parameters=True,
                                     async_creator=lambda: sqlite_connection.connect(f"file:{path}?mode=ro", uri=True))
        _sqlite_pragmas(engine, begin="BEGIN")
        return Database(engine, "sqlite", sqlite_path=path, read_only=True, settings=settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    _make_private(path)
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", pool_size=5, max_overflow=5, hide_parameters=True,
                                 async_creator=lambda: sqlite_connection.connect(str(path)))
    _sqlite_pragmas(engine)
    return Database(engine, "sqlite", sqlite_path=path, settings=settings)


def postgres_connection(url: str) -> tuple[str, dict[str, Any]]:
    """The SQLAlchemy URL for asyncpg, and its TLS setting from libpq's `sslmode` (default `verify-full`).

    asyncpg takes an SSL context rather than `sslmode`; `verify-full` checks the server's
    certificate against the system's CAs and its name against the host, as libpq would.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+asyncpg"):
        raise ValueError("DATABASE_URL must start with postgresql://")
    query = dict(parse_qsl(parts.query))
    mode = query.pop("sslmode", "verify-full")
    if mode not in TLS_MODES:
        raise ValueError(f"DATABASE_URL: sslmode must be one of {', '.join(TLS_MODES)}")
    root = query.pop("sslrootcert", None)
    connect_args: dict[str, Any] = {"ssl": tls_context(mode, root)}
    target = urlunsplit(("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query), ""))
    return target, connect_args


def tls_context(mode: str, root_certificate: str | None = None) -> ssl.SSLContext | bool:
    """libpq's `sslmode` as asyncpg's `ssl` argument; `sslrootcert` a CA file, or `system` (the default)."""
    if mode == "disable":
        return False
    cafile = None if root_certificate in (None, "", "system") else root_certificate
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode == "require":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode == "verify-ca":
        context.check_hostname = False
    return context


def _sqlite_pragmas(engine: AsyncEngine, *, begin: str = "BEGIN IMMEDIATE") -> None:
    """Per connection: WAL, durable commits, zeroed deleted content; `BEGIN IMMEDIATE` for every transaction.

    A read-only connection (`begin="BEGIN"`) leaves the journal mode as the file has it.
    """
    pragmas = ["synchronous = FULL", "secure_delete = ON", "foreign_keys = ON",
               f"busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"]
    if begin == "BEGIN IMMEDIATE":
        pragmas.insert(0, "journal_mode = WAL")

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN comes from `on_begin` below
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: SyncConnection) -> None:
        if not connection.get_execution_options().get(_ALONE):
            # No trip of its own: it goes with the first statement (every SQLite engine is a OneTripConnection).
            driver = cast(sqlite_connection.OneTripConnection, connection.connection.driver_connection)
            driver.begin_with_next_statement(begin)


def _time_limits(*, read_only: bool) -> dict[str, str]:
    """The server's limits for every session (see the module's docstring); a read-only command's run unbounded."""
    limits = {"lock_timeout": f"{LOCK_WAIT_SECONDS:.0f}s",
              "idle_in_transaction_session_timeout": f"{IDLE_IN_TRANSACTION_SECONDS:.0f}s"}
    if not read_only:
        limits["statement_timeout"] = f"{STATEMENT_SECONDS:.0f}s"
    return limits


def _drop_silent_connections(engine: AsyncEngine) -> None:
    """A statement the server did not answer in time (asyncpg's `command_timeout`): the connection is dropped.

    Its state is unknown (the server may still run the statement, or be gone): rolling it back or
    handing it out again would wait on the same silence. Only this connection goes; the others
    find out for themselves.
    """

    @event.listens_for(engine.sync_engine, "handle_error")
    def drop_if_silent(context: Any) -> None:
        if isinstance(context.original_exception, TimeoutError):
            context.is_disconnect = True
            context.invalidate_pool_on_disconnect = False


@contextlib.asynccontextmanager
async def unbounded(connection: AsyncConnection) -> AsyncIterator[None]:
    """No time limit on `connection`'s transaction: for work that legitimately waits and runs long (migrations).

    PostgreSQL's limits are lifted for the transaction only (`set_config(..., true)`, as `SET LOCAL`);
    the client's for the connection while the block runs: asyncpg reads `command_timeout` from the
    connection's configuration at every call and has no other way to change it once connected.
    SQLite has none to lift.
    """
    if connection.dialect.name != "postgresql":
        yield
        return
    await connection.exec_driver_sql(
        "SELECT set_config('lock_timeout', '0', true), set_config('statement_timeout', '0', true),"
        " set_config('idle_in_transaction_session_timeout', '0', true)")
    driver = (await connection.get_raw_connection()).driver_connection
    config = driver._config  # type: ignore[union-attr]
    driver._config = config._replace(command_timeout=None)  # type: ignore[union-attr]
    try:
        yield
    finally:
        driver._config = config  # type: ignore[union-attr]


def _replace_closed_connections(engine: AsyncEngine) -> None:
    """A pooled connection the server closed (a restart, a failover, an idle cut) is replaced at checkout.

    Checked locally (asyncpg saw the socket close), not with SQLAlchemy's `pool_pre_ping`, which
    costs three round trips (BEGIN, a ping, ROLLBACK) on every checkout. A connection that dies
    while in use fails that step, which says so.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def replace_if_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed this pooled connection")


def _use_password_source(engine: AsyncEngine, password: PasswordSource) -> None:
    """Entra ID: each new connection gets a current access token as its password (asyncpg awaits the callable)."""
    no_token = _no_token_is_unavailable(password)

    @event.listens_for(engine.sync_engine, "do_connect")
    def provide_password(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        cparams["password"] = no_token


def _no_token_is_unavailable(password: PasswordSource) -> PasswordSource:
    """`password`, whose failure (the identity endpoint down, the token expired) is the database out of reach.

    Without a token no connection can be made, as with the server down: `DatabaseUnreachable`, so a step says
    "probeer zo opnieuw". azure-identity's errors went through asyncpg's connect untouched (a click got the
    bot-fault banner, a typed message no answer). Their text stays out of the log: only the type.
    """

    async def current() -> str:
        try:
            return await password()
        except Exception as error:
            logger.warning("no database access token; no new connection", extra={"error": type(error).__name__})
            raise DatabaseUnreachable("database unavailable: no access token") from error

    return current


def _make_private(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it, and make any existing one (and its WAL) 0600.

    SQLite creates `-wal` and `-shm` with the database file's own mode, so once the main file is
    0600 they are 0600 from their first byte, whatever the process umask.
    """
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(descriptor)
    path.chmod(0o600)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.chmod(0o600)


def upgrade_reference(stored: str) -> str:
    """A botbuilder-era reference with `conversation.tenantId` instead of `tenantID`; others unchanged."""
    try:
        data = json.loads(stored)
    except ValueError:
        return stored
    conversation = data.get("conversation") if isinstance(data, dict) else None
    if not isinstance(conversation, dict) or "tenantID" not in conversation:
        return stored
    tenant = conversation.pop("tenantID")
    conversation.setdefault("tenantId", tenant)
    return json.dumps(data, ensure_ascii=False)


def to_text(moment: dt.datetime) -> str:
    """A timezone-aware time as sortable UTC text (the same in both engines)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def from_text(text_value: str) -> dt.datetime:
    """The inverse of `to_text`."""
    return dt.datetime.fromisoformat(text_value)


def placeholders(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`:p0, :p1, ...` and their values, for an INSERT whose columns are this module's constants."""
    names = [f"{prefix}{index}" for index in range(len(values))]
    return ", ".join(f":{name}" for name in names), dict(zip(names, values, strict=True))
