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

SQLAlchemy's whole way is kept where this would change what someone sees: an empty list parameter
(`IN :ids` with nothing in it, for which SQLAlchemy writes an expression of its own), a parameter
missing (SQLAlchemy's own error names it), a connection SQLAlchemy has invalidated, and while
anything listens to its statement events (the tests' fault injection, `benchmarks.statement_counts`,
`tests.support.query_plans`), which then see every statement as before.
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
from sqlalchemy.util import await_, greenlet_spawn

from bot.storage.sqlite_connection import OneTripConnection, Outcome

#: Where SQLAlchemy's SQLite compiler leaves a list parameter for each run to fill: `(__[POSTCOMPILE_ids])`.
_LIST_GAP = re.compile(r"\(__\[POSTCOMPILE_(\w+)\]\)")
#: A statement's rows (by column name) and how many rows it changed (returned, for one that returns rows).
Answer = tuple[list[Mapping[str, Any]], int]


@dataclass(frozen=True)
class CompiledStatement:
    """A statement as SQLite takes it: its text with `?` placeholders, and which parameter goes where.

    A list parameter (`IN :ids`) is a gap in the text (`pieces` around it) that each run fills with
    one `?` per value, as SQLAlchemy's own expansion does.
    """

    pieces: tuple[str, ...]
    names: tuple[str, ...]
    expanding: frozenset[str]

    def render(self, parameters: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
        """The text and the values in placeholder order; None when a parameter is missing, or a list empty
        (SQLAlchemy writes an expression of its own for "in nothing")."""
        values: list[Any] = []
        lists: list[str] = []
        try:
            for name in self.names:
                value = parameters[name]
                if name not in self.expanding:
                    values.append(value)
                    continue
                if not value:
                    return None
                items = driver_value(value)
                values.extend(items)
                lists.append("(" + ", ".join("?" * len(items)) + ")")
        except KeyError:
            return None
        if not lists:
            return self.pieces[0], tuple(values)
        text = [self.pieces[0]]
        for gap, piece in zip(lists, self.pieces[1:], strict=True):
            text += (gap, piece)
        return "".join(text), tuple(values)


def driver_value(value: Any) -> Any:
    """A parameter as the driver takes it: a set as a sorted list (for `IN :name`, the same text each time)."""
    return sorted(value) if isinstance(value, (set, frozenset)) else value


def compile_statement(statement: TextClause, dialect: Dialect) -> CompiledStatement | None:
    """Compiled once per statement text (and which of its parameters are lists); None if SQLAlchemy must see it."""
    compiled = statement.compile(dialect=dialect)
    if compiled.escaped_bind_names or compiled.positiontup is None:
        return None
    expanding = frozenset(name for name, parameter in statement._bindparams.items() if parameter.expanding)
    pieces = tuple(_LIST_GAP.split(compiled.string)[::2]) if expanding else (compiled.string,)
    if len(pieces) - 1 != sum(1 for name in compiled.positiontup if name in expanding):
        return None
    return CompiledStatement(pieces, tuple(compiled.positiontup), expanding)


def observed(engine: Engine) -> bool:
    """Something listens to SQLAlchemy's statement events: it must see each statement, so none goes past."""
    dispatch = engine.dispatch
    return bool(dispatch.before_cursor_execute or dispatch.after_cursor_execute
                or dispatch.before_execute or dispatch.after_execute)


async def run_in_transaction(connection: AsyncConnection, sql: str, values: tuple[Any, ...]) -> Answer | None:
    """Run `sql` with `values` on the transaction's connection, off the async bridge; None: the connection is
    invalidated or closed, and the statement takes SQLAlchemy's way (which says so)."""
    sync = connection.sync_connection
    if sync is None or sync.invalidated or sync.closed:
        return None
    proxied = sync.connection  # checked out with the transaction: no I/O to reach it
    driver: OneTripConnection = proxied.driver_connection  # type: ignore[assignment]
    try:
        outcome = await driver.run_statement(sql, values)
    except BaseException as error:
        await greenlet_spawn(_fail, sync, error, sql, values)
        raise  # not reached: _fail raises
    return _answer(outcome)


def run_alone(engine: Engine, sql: str, values: tuple[Any, ...]) -> Answer:
    """In SQLAlchemy's greenlet: a connection from the pool, the statement in SQLite's autocommit, the
    connection back. No BEGIN: SQLAlchemy begins a transaction only when it executes something itself."""
    with engine.connect() as connection:
        driver: OneTripConnection = connection.connection.driver_connection  # type: ignore[assignment]
        try:
            outcome = await_(driver.run_statement(sql, values))
        except BaseException as error:
            _fail(connection, error, sql, values)
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
