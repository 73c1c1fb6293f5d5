"""Statements sent straight to the driver: SQLAlchemy compiles them, then stands aside.

Through SQLAlchemy's `Connection.execute` each statement built an execution context, a cursor result
and row objects, and inside a transaction crossed its async bridge (a greenlet) once more: on SQLite
about 200 us of the event loop's CPU per statement, against about 60 for the driver alone
(`benchmarks.statement_cost`), a quarter of a whole referral's CPU (issue 14); on PostgreSQL about
420 us against 80 for asyncpg's prepared statement (issue 13: the bots' CPU bounds what two instances
deliver). Here the dialect compiles each statement once (SQLite's `?` placeholders, PostgreSQL's
`$1`, and the parameters' order), and each run is one call on the driver: SQLite's connection thread
(`OneTripConnection.run_statement`), or the statement prepared on the asyncpg connection through
SQLAlchemy's own adapter (its prepared-statement cache, its lazy BEGIN, its error translation). Rows
are plain dictionaries. Connections, the pool, transactions and savepoints stay SQLAlchemy's; so does
a failure: it goes through the connection's own handling (the driver's error wrapped as SQLAlchemy's,
`handle_error` listeners told, a lost connection invalidated and left out of the pool).

SQLAlchemy's whole way is kept where this would change what someone sees: an empty list parameter
(`IN :ids` with nothing in it, for which SQLAlchemy writes an expression of its own), a parameter
missing (SQLAlchemy's own error names it), a connection SQLAlchemy has invalidated, a driver other
than these two (or an asyncpg adapter without the calls used here), and while anything listens to
its statement events (the tests' fault injection, `benchmarks.statement_counts`,
`tests.support.query_plans`, telemetry's SQL spans), which then see every statement as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.util import await_, greenlet_spawn, is_exit_exception

from bot.storage.sqlite_connection import OneTripConnection

#: Where SQLAlchemy's compiler leaves a list parameter for each run to fill: `(__[POSTCOMPILE_ids])`.
_LIST_GAP = re.compile(r"\(__\[POSTCOMPILE_(\w+)\]\)")
#: A statement's rows (by column name) and how many rows it changed (returned, for one that returns rows).
Answer = tuple[list[Mapping[str, Any]], int]


@dataclass(frozen=True)
class CompiledStatement:
    """A statement as the driver takes it: its text with placeholders, and which parameter goes where.

    SQLite (`?`): one placeholder per use, `names` in the text's order. PostgreSQL (`numbered`, `$1`):
    one number per parameter however often it is used, `names` in the numbers' order. A list
    parameter (`IN :ids`) is a gap in the text (`pieces` around it, `gaps` its name) that each run
    fills with one placeholder per value, as SQLAlchemy's own expansion does: in place for SQLite,
    numbered after every other parameter for PostgreSQL.
    """

    pieces: tuple[str, ...]
    names: tuple[str, ...]
    gaps: tuple[str, ...]
    numbered: bool = False

    def render(self, parameters: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
        """The text and the values in placeholder order; None when a parameter is missing, or a list empty
        (SQLAlchemy writes an expression of its own for "in nothing")."""
        values: list[Any] = []
        lists: list[Any] = []
        try:
            for name in self.names:
                if name not in self.gaps:
                    values.append(parameters[name])
                elif not self.numbered:  # SQLite: the list's values where its gap is
                    lists.append(driver_value(parameters[name]))
                    values.extend(lists[-1])
            if self.numbered:  # PostgreSQL: the lists' values numbered after every other parameter
                lists = [driver_value(parameters[name]) for name in self.gaps]
        except KeyError:
            return None
        if not lists:
            return self.pieces[0], tuple(values)
        if not all(lists):
            return None
        text = [self.pieces[0]]
        for items, piece in zip(lists, self.pieces[1:], strict=True):
            if self.numbered:
                first = len(values) + 1
                values.extend(items)
                marks = ", ".join(f"${number}" for number in range(first, len(values) + 1))
            else:
                marks = ", ".join("?" * len(items))
            text += (f"({marks})", piece)
        return "".join(text), tuple(values)


def driver_value(value: Any) -> Any:
    """A parameter as the driver takes it: a set as a sorted list (for `IN :name`, the same text each time)."""
    return sorted(value) if isinstance(value, (set, frozenset)) else value


def compile_statement(statement: TextClause, dialect: Dialect) -> CompiledStatement | None:
    """Compiled once per statement text (and which of its parameters are lists); None if SQLAlchemy must see it."""
    if (dialect.name, dialect.driver) != ("sqlite", "aiosqlite") and not _asyncpg_adapter_usable(dialect):
        return None
    compiled = statement.compile(dialect=dialect)
    if compiled.escaped_bind_names or compiled.positiontup is None:
        return None
    expanding = {name for name, parameter in statement._bindparams.items() if parameter.expanding}
    split = _LIST_GAP.split(compiled.string)
    pieces, gaps, names = tuple(split[::2]), tuple(split[1::2]), tuple(compiled.positiontup)
    numbered = dialect.paramstyle == "numeric_dollar"
    if set(gaps) != expanding or len(set(gaps)) != len(gaps):
        return None  # a list used twice: SQLAlchemy's way
    if not numbered and tuple(name for name in names if name in expanding) != gaps:
        return None
    return CompiledStatement(pieces, names, gaps, numbered)


def _asyncpg_adapter_usable(dialect: Dialect) -> bool:
    """SQLAlchemy's asyncpg dialect, whose adapter still has the calls `run_in_transaction` and `run_alone` use."""
    if (dialect.name, dialect.driver, dialect.paramstyle) != ("postgresql", "asyncpg", "numeric_dollar"):
        return False
    from sqlalchemy.dialects.postgresql import asyncpg as adapter  # only with that dialect (start-up time)

    cursor = adapter.AsyncAdapt_asyncpg_cursor
    return hasattr(cursor, "_prepare_and_execute") and hasattr(cursor, "_rows") and isinstance(
        getattr(adapter.AsyncAdapt_asyncpg_connection, "autocommit", None), property)


def observed(engine: Engine) -> bool:
    """Something listens to SQLAlchemy's statement events: it must see each statement, so none goes past."""
    dispatch = engine.dispatch
    return bool(dispatch.before_cursor_execute or dispatch.after_cursor_execute
                or dispatch.before_execute or dispatch.after_execute)


async def run_in_transaction(connection: AsyncConnection, sql: str, values: tuple[Any, ...]) -> Answer | None:
    """Run `sql` with `values` on the transaction's connection, off the async bridge; None: the connection is
    invalidated or closed, or its transaction ended or failed, and the statement takes SQLAlchemy's way (which
    says so, rather than the driver beginning a transaction SQLAlchemy knows nothing of)."""
    sync = connection.sync_connection
    if sync is None or sync.invalidated or sync.closed or not _transaction_usable(sync):
        return None
    try:
        return await _on_driver(sync, sql, values)  # checked out with the transaction: no I/O to reach it
    except BaseException as error:
        await greenlet_spawn(_fail, sync, error, sql, values)
        raise  # not reached: _fail raises


def run_alone(engine: Engine, sql: str, values: tuple[Any, ...]) -> Answer:
    """In SQLAlchemy's greenlet: a connection from the pool, the statement committed with itself (SQLite's and
    PostgreSQL's autocommit), the connection back. No BEGIN: SQLAlchemy begins a transaction only when it
    executes something itself."""
    with engine.connect() as connection:
        try:
            return await_(_on_driver(connection, sql, values, alone=True))
        except BaseException as error:
            _fail(connection, error, sql, values)


async def _on_driver(connection: Connection, sql: str, values: tuple[Any, ...], *, alone: bool = False) -> Answer:
    """The statement on the connection's driver: SQLite's thread, or asyncpg through SQLAlchemy's adapter."""
    if connection.dialect.name == "sqlite":
        return await _on_sqlite(connection.connection.driver_connection, sql, values)  # type: ignore[arg-type]
    return await _on_asyncpg(connection, sql, values, alone=alone)


async def _on_sqlite(driver: OneTripConnection, sql: str, values: tuple[Any, ...]) -> Answer:
    """One call on the connection's thread; the rows by column name."""
    description, rowcount, _lastrowid, rows = await driver.run_statement(sql, values)
    if description is None:
        return [], rowcount
    columns = [column[0] for column in description]
    return [dict(zip(columns, row, strict=True)) for row in rows], len(rows)


async def _on_asyncpg(connection: Connection, sql: str, values: tuple[Any, ...], *, alone: bool) -> Answer:
    """The adapter's own prepared-statement call (its cache, its BEGIN in a transaction); `alone`: in autocommit."""
    adapted: Any = connection.connection.dbapi_connection
    cursor = adapted.cursor()
    cursor._invalidate_schema_cache_asof = connection.dialect._invalidate_schema_cache_asof  # type: ignore[attr-defined]
    if alone:  # no BEGIN: the adapter starts none in autocommit, as SQLAlchemy's AUTOCOMMIT level sets it
        adapted.autocommit = True
    try:
        await cursor._prepare_and_execute(sql, values)
    finally:
        if alone:
            adapted.autocommit = False  # back to the connection's own level (SQLAlchemy's reset does the same)
    if cursor.description is None:
        return [], cursor.rowcount
    return [dict(record.items()) for record in cursor._rows], len(cursor._rows)


def _fail(connection: Connection, error: BaseException, sql: str, values: tuple[Any, ...]) -> NoReturn:
    """In SQLAlchemy's greenlet: `error` as SQLAlchemy's own execution would have raised it.

    The adapter first turns the driver's own failures into DBAPI errors (aiosqlite's closed connection is an
    `OperationalError`, which the dialect knows as a disconnect; asyncpg's are translated already); the
    connection's handling then wraps it (parameters hidden), tells `handle_error` listeners, invalidates a
    lost connection, and raises. A cancellation, or a server that did not answer in time (asyncpg's
    `command_timeout`), goes the same way unwrapped and invalidates the connection, as SQLAlchemy does
    (the statement's end is not known). A prepared statement the server no longer takes (a table another
    instance's migration changed) has every connection prepare its statements again, as SQLAlchemy's
    asyncpg execution context does. Any other error that is not the driver's (a value the driver cannot
    take, an `OSError`) is raised as it is, as SQLAlchemy raises it, but without `handle_error`
    listeners being told: none of the bot's listens for those.
    """
    adapted: Any = connection.connection.dbapi_connection
    try:
        raise error
    except BaseException:
        try:
            adapted._handle_exception(error)
        except BaseException as driver_error:
            if isinstance(driver_error, _stale_statement_errors(connection.dialect)):
                connection.dialect._invalidate_schema_cache()  # type: ignore[attr-defined]
            if isinstance(driver_error, connection.dialect.loaded_dbapi.Error) or is_exit_exception(driver_error):
                connection._handle_dbapi_exception(driver_error, sql, values, None, None)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _stale_statement_errors(dialect: Dialect) -> tuple[type[BaseException], ...]:
    """The adapter's errors for a prepared statement gone stale (asyncpg's; none on SQLite)."""
    dbapi = dialect.loaded_dbapi
    return tuple(getattr(dbapi, name) for name in ("InvalidCachedStatementError", "InternalServerError")
                 if hasattr(dbapi, name))


def _transaction_usable(connection: Connection) -> bool:
    """The connection's transaction (and savepoint) still open and not failed: else SQLAlchemy refuses the statement
    (`PendingRollbackError`; a transaction ended inside its block), which its own way then says."""
    transaction, nested = connection.get_transaction(), connection.get_nested_transaction()
    return transaction is not None and transaction.is_active and (nested is None or nested.is_active)
