"""SQLite statements sent straight to the connection's thread: SQLAlchemy compiles them, then stands aside.

Through SQLAlchemy's `Connection.execute` each statement built an execution context, a cursor result
and row objects, and inside a transaction crossed its async bridge (a greenlet) once more: about
200 us of the event loop's CPU per statement, against about 60 for the driver alone
(`benchmarks.statement_cost`), a quarter of a whole referral's CPU (issue 14). Here SQLAlchemy's
SQLite dialect compiles each statement once (`?` placeholders, the parameters' order), and each run
is one call on the connection's thread (`OneTripConnection.run_statement`), its rows plain
dictionaries. Connections, the pool, transactions and savepoints stay SQLAlchemy's; so does a
failure: it goes through the connection's own handling (the driver's error wrapped as SQLAlchemy's,
`handle_error` listeners told, a lost connection invalidated and left out of the pool).

SQLAlchemy's whole way is kept where this would change what someone sees: a statement with a list
parameter (`IN :ids`, expanded per call), a parameter missing (SQLAlchemy's own error names it), a
connection SQLAlchemy has invalidated, and while anything listens to its statement events (the tests'
fault injection, `benchmarks.statement_counts`, `tests.support.query_plans`), which then see every
statement as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.util import await_, greenlet_spawn

from bot.storage.sqlite_connection import OneTripConnection, Outcome

#: A statement's rows (by column name) and how many rows it changed (returned, for one that returns rows).
Answer = tuple[list[Mapping[str, Any]], int]


@dataclass(frozen=True)
class CompiledStatement:
    """A statement as SQLite takes it: its text with `?` placeholders, and which parameter goes where."""

    sql: str
    names: tuple[str, ...]

    def values(self, parameters: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The parameters in placeholder order; None when one is missing."""
        try:
            return tuple(parameters[name] for name in self.names)
        except KeyError:
            return None


def compile_statement(statement: TextClause, dialect: Dialect) -> CompiledStatement | None:
    """Compiled once per statement text; None for one SQLAlchemy must expand per call (a list parameter)."""
    if any(parameter.expanding for parameter in statement._bindparams.values()):
        return None
    compiled = statement.compile(dialect=dialect)
    if compiled.escaped_bind_names or compiled.positiontup is None:
        return None
    return CompiledStatement(compiled.string, tuple(compiled.positiontup))


def observed(engine: Engine) -> bool:
    """Something listens to SQLAlchemy's statement events: it must see each statement, so none goes past."""
    dispatch = engine.dispatch
    return bool(dispatch.before_cursor_execute or dispatch.after_cursor_execute
                or dispatch.before_execute or dispatch.after_execute)


async def run_in_transaction(connection: AsyncConnection, statement: CompiledStatement,
                             values: tuple[Any, ...]) -> Answer | None:
    """Run `statement` on the transaction's connection, off the async bridge; None: take SQLAlchemy's way."""
    sync = connection.sync_connection
    if sync is None or sync.invalidated or sync.closed:
        return None
    proxied = sync.connection  # checked out with the transaction: no I/O to reach it
    driver: OneTripConnection = proxied.driver_connection  # type: ignore[assignment]
    try:
        outcome = await driver.run_statement(statement.sql, values)
    except BaseException as error:
        await greenlet_spawn(_fail, sync, error, statement.sql, values)
        raise  # not reached: _fail raises
    return _answer(outcome)


def run_alone(engine: Engine, statement: CompiledStatement, values: tuple[Any, ...]) -> Answer:
    """In SQLAlchemy's greenlet: a connection from the pool, the statement in SQLite's autocommit, the
    connection back. No BEGIN: SQLAlchemy begins a transaction only when it executes something itself."""
    with engine.connect() as connection:
        driver: OneTripConnection = connection.connection.driver_connection  # type: ignore[assignment]
        try:
            outcome = await_(driver.run_statement(statement.sql, values))
        except BaseException as error:
            _fail(connection, error, statement.sql, values)
        return _answer(outcome)


def _fail(connection: Connection, error: BaseException, sql: str, values: tuple[Any, ...]) -> NoReturn:
    """In SQLAlchemy's greenlet: `error` as SQLAlchemy's own execution would have raised it.

    The adapter first turns aiosqlite's own failures into the driver's (a closed connection is an
    `OperationalError`, which the dialect knows as a disconnect); the connection's handling then wraps
    it (parameters hidden), tells `handle_error` listeners, invalidates a lost connection, and raises.
    A cancellation invalidates the connection as SQLAlchemy does (the statement's end is not known).
    An error that is not the driver's (a value SQLite cannot take) is raised as it is, as before.
    """
    adapted: Any = connection.connection.dbapi_connection
    try:
        raise error
    except BaseException:
        try:
            adapted._handle_exception(error)
        except BaseException as driver_error:
            if isinstance(driver_error, connection.dialect.loaded_dbapi.Error) or not isinstance(
                    driver_error, Exception):
                connection._handle_dbapi_exception(driver_error, sql, values, None, None)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _answer(outcome: Outcome) -> Answer:
    description, rowcount, _lastrowid, rows = outcome
    if description is None:
        return [], rowcount
    columns = [column[0] for column in description]
    return [dict(zip(columns, row, strict=True)) for row in rows], len(rows)
