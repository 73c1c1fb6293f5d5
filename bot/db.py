"""The one way the bot talks to its database: SQLAlchemy 2 Core, async, on SQLite or PostgreSQL.

`DATABASE_URL` unset: SQLite in `BOT_DATA_DIR` (aiosqlite: the file's I/O runs in a thread, never on
the event loop); set (`postgresql://user@host:port/db`): PostgreSQL through asyncpg, shared by several
instances. Every step that changes state runs in `async with db.transaction():`; the stores inside it
reach the same connection through a context variable, so a state change, its register entry and
the messages it causes commit together (or not at all) without passing a connection around. A
transaction inside a transaction is a savepoint. Outside one, each store call runs on its own.

SQLite serialises writers: a write transaction starts with `BEGIN IMMEDIATE`, so two writers never
deadlock on a lock upgrade, and waits up to `busy_timeout` for the other. PostgreSQL runs them
side by side; where order matters the code says so (`FOR UPDATE SKIP LOCKED` for the outboxes, an
advisory lock for the register's hash chain, compare-and-set updates for every state change).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import Executable

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the state lives; `url` None means the embedded SQLite file `sqlite_path`."""

    sqlite_path: Path
    url: str | None = None
    #: For PostgreSQL with Entra ID: returns a fresh access token, used as the password per connection.
    password: Callable[[], Awaitable[str]] | None = None
    require_tls: bool = False
    pool_size: int = 10

    @property
    def is_postgres(self) -> bool:
        """True when the state is in PostgreSQL (shared by instances)."""
        return self.url is not None


class Database:
    """The engine, and the transaction the current task is in (if any)."""

    def __init__(self, engine: AsyncEngine, *, dialect: str) -> None:
        self.engine = engine
        self.dialect = dialect  # "sqlite" or "postgresql"
        self._current: contextvars.ContextVar[AsyncConnection | None] = contextvars.ContextVar(
            f"db-connection-{id(self)}", default=None
        )
        self._after_commit: contextvars.ContextVar[list[Callable[[], Awaitable[None]]] | None] = (
            contextvars.ContextVar(f"db-after-commit-{id(self)}", default=None)
        )

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """All statements inside commit together or not at all; nested, a savepoint."""
        current = self._current.get()
        if current is not None:
            async with current.begin_nested():
                yield current
            return
        hooks: list[Callable[[], Awaitable[None]]] = []
        async with self.engine.connect() as connection:
            token = self._current.set(connection)
            hooks_token = self._after_commit.set(hooks)
            try:
                async with connection.begin():
                    yield connection
            finally:
                self._current.reset(token)
                self._after_commit.reset(hooks_token)
        for hook in hooks:  # only reached after the commit
            await hook()

    def after_commit(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` once the current transaction has committed (at once when there is none)."""
        hooks = self._after_commit.get()
        if hooks is None:
            raise RuntimeError("after_commit outside a transaction")
        hooks.append(hook)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """The current transaction's connection, or a new one that commits each statement's work."""
        current = self._current.get()
        if current is not None:
            yield current
            return
        async with self.engine.begin() as connection:
            yield connection

    async def execute(self, statement: Executable, parameters: Mapping[str, Any] | None = None) -> Any:
        """Run one statement in the current transaction (or its own); the result, rows buffered."""
        async with self.connection() as connection:
            result = await connection.execute(statement, parameters or {})
            return result

    async def fetch_all(self, statement: Executable, parameters: Mapping[str, Any] | None = None) -> list[Row[Any]]:
        async with self.connection() as connection:
            result = await connection.execute(statement, parameters or {})
            return list(result.fetchall())

    async def fetch_one(self, statement: Executable, parameters: Mapping[str, Any] | None = None) -> Row[Any] | None:
        async with self.connection() as connection:
            result = await connection.execute(statement, parameters or {})
            return result.first()

    async def close(self) -> None:
        """Close every pooled connection (app shutdown)."""
        await self.engine.dispose()


def open_engine(settings: DatabaseSettings) -> Database:
    """The engine for the settings: PostgreSQL (pooled, TLS when required) or the SQLite file."""
    if settings.url is not None:
        url = settings.url.replace("postgresql://", "postgresql+asyncpg://", 1) \
            if settings.url.startswith("postgresql://") else settings.url
        connect_args: dict[str, Any] = {}
        if settings.require_tls:
            connect_args["ssl"] = "require"
        engine = create_async_engine(url, pool_size=settings.pool_size, max_overflow=settings.pool_size,
                                     pool_pre_ping=True, connect_args=connect_args)
        if settings.password is not None:
            _use_token_as_password(engine, settings.password)
        return Database(engine, dialect="postgresql")
    settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(f"sqlite+aiosqlite:///{settings.sqlite_path}", poolclass=NullPool)
    _sqlite_pragmas(engine)
    return Database(engine, dialect="sqlite")


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    """Per connection: WAL, durable commits, zeroed deleted content, and `BEGIN IMMEDIATE` for writes."""

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode = WAL", "synchronous = FULL", "secure_delete = ON", "foreign_keys = ON",
                       f"busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: SyncConnection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _use_token_as_password(engine: AsyncEngine, password: Callable[[], Awaitable[str]]) -> None:
    """Entra ID authentication: every new connection gets a current access token as its password."""

    @event.listens_for(engine.sync_engine, "do_connect")
    def provide_token(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        cparams["password"] = password  # asyncpg accepts a callable (PLATFORM.md), awaited per connection
