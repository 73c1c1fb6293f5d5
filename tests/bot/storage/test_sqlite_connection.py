"""The embedded SQLite file, one trip to the connection's thread per statement: same answers, loop never blocked."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from bot.storage.database import Database, DatabaseError, DatabaseSettings, DatabaseUnreachable, open_database
from bot.storage.sqlite_connection import OneTripConnection
from tests.support.databases import (
    OPENED,
    bridge_crossings,
    cancel_a_step_mid_statement,
    statements_an_observer_sees,
    statements_through_sqlalchemy,
)

pytestmark = pytest.mark.asyncio


def _open(path: Path, *, read_only: bool = False) -> Database:
    db = open_database(DatabaseSettings(sqlite_path=path, read_only=read_only))
    OPENED.append(db)
    return db


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    database = _open(tmp_path / "bot.sqlite3")
    await database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)")
    return database


async def test_the_engine_runs_on_the_one_trip_connection(db: Database) -> None:
    async with db.engine.connect() as connection:
        raw = await connection.get_raw_connection()
        assert isinstance(raw.driver_connection, OneTripConnection)


async def test_rows_counts_and_returning_are_what_sqlite_says(db: Database) -> None:
    inserted = await db.execute("INSERT INTO t (v) VALUES (:a), (:b)", {"a": "één", "b": "twee"})
    assert inserted.rowcount == 2
    returned = await db.execute("INSERT INTO t (v) VALUES (:v) RETURNING id, v", {"v": "drie"})
    assert [dict(row) for row in returned] == [{"id": 3, "v": "drie"}]
    assert [row["v"] for row in await db.fetch_all("SELECT v FROM t ORDER BY id")] == ["één", "twee", "drie"]
    assert await db.fetch_one("SELECT v FROM t WHERE id = :id", {"id": 99}) is None
    assert (await db.execute("UPDATE t SET v = v || '!' WHERE id IN :ids", {"ids": [1, 3]})).rowcount == 2
    assert (await db.execute("DELETE FROM t WHERE id = :id", {"id": 42})).rowcount == 0


async def test_a_bulk_insert_and_a_rolled_back_transaction(db: Database) -> None:
    async with db.transaction():
        await db.current_connection().exec_driver_sql("INSERT INTO t (v) VALUES (?)", [("a",), ("b",), ("c",)])
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await db.execute("INSERT INTO t (v) VALUES ('gone')")
            raise RuntimeError("the step failed")
    assert await db.scalar("SELECT COUNT(*) FROM t") == 3


async def test_sqlite_errors_reach_the_caller_as_sqlalchemy_errors(db: Database) -> None:
    await db.execute("INSERT INTO t (v) VALUES ('x')")
    with pytest.raises(IntegrityError):
        await db.execute("INSERT INTO t (v) VALUES ('x')")
    with pytest.raises(OperationalError):
        await db.execute("SELECT nope FROM t")
    assert await db.scalar("SELECT COUNT(*) FROM t") == 1  # the connection is still good


async def test_a_read_only_database_reads_and_refuses_writes(db: Database, tmp_path: Path) -> None:
    await db.execute("INSERT INTO t (v) VALUES ('x')")
    reader = _open(tmp_path / "bot.sqlite3", read_only=True)
    assert await reader.scalar("SELECT v FROM t") == "x"
    with pytest.raises(DatabaseError, match="read-only"):  # refused as a read-only server's writes are
        await reader.execute("INSERT INTO t (v) VALUES ('y')")


async def test_a_slow_statement_runs_off_the_event_loop(db: Database) -> None:
    """No blocking database call on the event loop (issue 13): the loop keeps ticking while SQLite works."""
    loop_thread = threading.get_ident()
    ticks = 0
    statement_threads: list[int] = []

    def note_thread(*_: object) -> int:
        statement_threads.append(threading.get_ident())
        return 0

    async with db.engine.connect() as connection:
        raw = await connection.get_raw_connection()
        await raw.driver_connection.run_on_thread(
            lambda sqlite, *_: sqlite.create_function("note_thread", -1, note_thread), "", None)
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    try:
        count = await db.scalar(  # a few hundred milliseconds of work inside SQLite
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000000)"
            " SELECT COUNT(*) + note_thread() FROM n")
    finally:
        done.set()
        await ticker
    assert count == 2_000_000
    assert statement_threads and loop_thread not in statement_threads
    assert ticks >= 3, ticks  # blocked, the loop would not have ticked again before the answer


async def test_a_streamed_result_reads_every_row(db: Database) -> None:
    """What `python -m bot migrate --from-sqlite` reads the old file with: a server-side cursor, row by row."""
    await db.execute("INSERT INTO t (v) SELECT 'v' || value FROM json_each('[1,2,3,4,5]')")
    async with db.engine.connect() as connection:
        result = await connection.stream(text("SELECT v FROM t ORDER BY id"))
        first = await result.fetchone()
        rest = [row async for row in result]
    assert first is not None and [first[0], *(row[0] for row in rest)] == ["v1", "v2", "v3", "v4", "v5"]


async def test_a_read_alone_is_one_trip_and_a_transaction_has_no_trip_to_spare(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each trip is a hand-over to the thread and a wake-up of the loop. A lone SELECT had three (BEGIN,
    the statement, COMMIT) and every connection the pool took back one more (a ROLLBACK of nothing)."""
    await db.execute("SELECT 1")  # the pool's connection is open: no connect trips below
    trips: list[str] = []
    original = OneTripConnection._execute

    async def counted(self: OneTripConnection, function: object, *arguments: object) -> object:
        trips.append(getattr(function, "__name__", repr(function)))
        return await original(self, function, *arguments)  # type: ignore[arg-type]

    monkeypatch.setattr(OneTripConnection, "_execute", counted)
    assert await db.scalar("SELECT COUNT(*) FROM t") == 0
    assert trips == ["_run"], "the statement, nothing around it"
    trips.clear()
    async with db.transaction():
        await db.execute("INSERT INTO t (v) VALUES ('a')")
    assert trips == ["_run", "commit"], "BEGIN IMMEDIATE with the insert, then COMMIT; no rollback afterwards"
    assert await db.scalar("SELECT COUNT(*) FROM t") == 1
    trips.clear()
    await db.execute("INSERT INTO t (v) VALUES ('b')")  # a write on its own: SQLite commits it in the statement
    assert trips == ["_run"]
    assert await db.scalar("SELECT COUNT(*) FROM t") == 2


async def test_a_write_on_its_own_waits_for_another_writer_then_commits(db: Database, tmp_path: Path) -> None:
    """In SQLite's autocommit a lone statement takes the writer's lock through the busy handler: it waits."""
    other = sqlite3.connect(tmp_path / "bot.sqlite3", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t (v) VALUES ('first')")
    release = asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
    try:
        started = asyncio.get_running_loop().time()
        await db.execute("INSERT INTO t (v) VALUES ('second')")
        assert asyncio.get_running_loop().time() - started >= 0.25, "it waited for the other writer"
    finally:
        release.cancel()
        other.close()
    assert [row["v"] for row in await db.fetch_all("SELECT v FROM t ORDER BY id")] == ["first", "second"]


async def test_a_transaction_holds_the_writers_lock_from_its_first_statement(db: Database, tmp_path: Path) -> None:
    """BEGIN IMMEDIATE travels with the first statement, and still comes before it: a transaction that reads
    first then writes never finds the lock taken in between (no upgrade deadlock, no lost update)."""
    other = sqlite3.connect(tmp_path / "bot.sqlite3", isolation_level=None, timeout=0)
    try:
        async with db.transaction():
            assert await db.scalar("SELECT COUNT(*) FROM t") == 0
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            await db.execute("INSERT INTO t (v) VALUES ('a')")
        other.execute("BEGIN IMMEDIATE")  # free again after the commit
        other.execute("ROLLBACK")

        await db.engine.dispose()
        await db.execute("PRAGMA busy_timeout = 50")  # the pool's one connection, which the transaction takes
        other.execute("BEGIN IMMEDIATE")  # now another writer holds it: the first statement waits, then fails
        with pytest.raises(DatabaseError, match=r"^database busy") as refused:  # "probeer zo opnieuw", as PostgreSQL's
            async with db.transaction():
                await db.execute("INSERT INTO t (v) VALUES ('b')")
        assert isinstance(refused.value.__cause__, OperationalError), "the driver's error kept as the cause"
        assert "INSERT" not in str(refused.value), "the message names the kind, never the statement"
        other.execute("ROLLBACK")
        with pytest.raises(DatabaseError, match=r"^database busy"):  # a statement on its own, the same
            other.execute("BEGIN IMMEDIATE")
            try:
                await db.execute("INSERT INTO t (v) VALUES ('b')")
            finally:
                other.execute("ROLLBACK")
        assert await db.scalar("SELECT COUNT(*) FROM t") == 1, "nothing of the refused transaction"
        async with db.transaction():
            await db.execute("INSERT INTO t (v) VALUES ('c')")
        assert await db.scalar("SELECT COUNT(*) FROM t") == 2, "the connection is usable again"
    finally:
        other.close()


async def test_no_statement_goes_through_sqlalchemys_execution_machinery(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLAlchemy compiles each statement once; running it through its execution context, result and row
    objects (and, in a transaction, one pass of its async bridge per statement) cost ~200 us of the event
    loop's CPU per statement against ~60 for the driver alone, a quarter of a referral's CPU (issue 14).
    The answers are SQLite's own, as before (the other tests of this file)."""
    executed = statements_through_sqlalchemy(monkeypatch)
    await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "a"})
    assert await db.fetch_one("SELECT v FROM t WHERE id = :id", {"id": 1}) == {"v": "a"}
    async with db.transaction():
        await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "b"})
        assert (await db.execute("UPDATE t SET v = v || '!' WHERE id = :id", {"id": 2})).rowcount == 1
        async with db.transaction():  # a savepoint
            returned = await db.execute("INSERT INTO t (v) VALUES (:v) RETURNING id", {"v": "c"})
    assert returned.scalar() == 3
    listed = await db.fetch_all("SELECT v FROM t WHERE id IN :ids AND v <> :not OR v IN :also ORDER BY id",
                                {"ids": [1, 3], "not": "x", "also": {"b!"}})  # a list, a set
    assert [sql for sql in executed if sql.split()[0] not in ("SAVEPOINT", "RELEASE")] == [], executed
    assert [row["v"] for row in listed] == ["a", "b!", "c"]
    assert await db.fetch_all("SELECT v FROM t WHERE id IN :ids", {"ids": []}) == []  # SQLAlchemy's "in nothing"
    assert executed[-1] == "SELECT v FROM t WHERE id IN (__[POSTCOMPILE_ids])", "an empty list: SQLAlchemy's way"
    assert [row["v"] for row in await db.fetch_all("SELECT v FROM t ORDER BY id")] == ["a", "b!", "c"]


async def test_a_transaction_crosses_sqlalchemys_async_bridge_twice_for_one_statement_or_six(
        db: Database) -> None:
    """Its checkout and BEGIN cross the bridge (a greenlet) together, its COMMIT and return together; its
    statements not at all. Each crossing costs ~50 us of the event loop's CPU; a transaction crossed four
    times plus once per statement."""
    counts = [await bridge_crossings(db, statements) for statements in (1, 6)]
    assert counts == [2, 2]
    assert await db.scalar("SELECT COUNT(*) FROM t") == 7


async def test_an_observer_of_statements_still_sees_every_one(db: Database) -> None:
    """A listener on SQLAlchemy's cursor events (the tests' fault injection, `benchmarks.statement_counts`)
    is served by SQLAlchemy's own path: it sees each statement, and what it raises fails that statement."""
    seen = await statements_an_observer_sees(db, sqlite3.OperationalError("disk I/O error"))
    assert seen == ["INSERT INTO t (v) VALUES (?)", "INSERT INTO t (v) VALUES ('b')",
                    "INSERT INTO t (v) VALUES ('refused')"]
    assert [row["v"] for row in await db.fetch_all("SELECT v FROM t")] == ["a"], "the transaction rolled back"


async def test_errors_in_a_transaction_are_sqlalchemys_and_roll_it_back(db: Database) -> None:
    await db.execute("INSERT INTO t (v) VALUES ('x')")
    with pytest.raises(IntegrityError) as duplicate:
        async with db.transaction():
            await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "y"})
            await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "x"})
    assert "'x'" not in str(duplicate.value) and "[SQL parameters hidden" in str(duplicate.value)
    with pytest.raises(OperationalError):
        async with db.transaction():
            await db.execute("SELECT nope FROM t")
    assert [row["v"] for row in await db.fetch_all("SELECT v FROM t")] == ["x"]
    async with db.transaction():
        await db.execute("INSERT INTO t (v) VALUES ('z')")
    assert await db.scalar("SELECT COUNT(*) FROM t") == 2, "the connection is usable again"


async def test_a_connection_closed_under_a_statement_is_replaced(db: Database) -> None:
    """The pooled connection gone (its thread stopped): the statement says the database is out of reach
    ("probeer zo opnieuw"), the connection is dropped from the pool, and the next statement has a new one."""
    for in_transaction in (False, True):
        async with db.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            await raw.driver_connection.close()
        with pytest.raises(DatabaseUnreachable):
            if in_transaction:
                async with db.transaction():
                    await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "lost"})
            else:
                await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "lost"})
        await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": f"kept {in_transaction}"})
    assert [row["v"] for row in await db.fetch_all("SELECT v FROM t")] == ["kept False", "kept True"]


async def test_a_transaction_cancelled_mid_statement_leaves_nothing_and_the_pool_usable(db: Database) -> None:
    """A turn cancelled while its statement runs (the bot shutting down): nothing of it is committed."""
    await cancel_a_step_mid_statement(
        db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) SELECT COUNT(*) FROM n")


async def test_a_step_cancelled_while_its_connection_goes_back_returns_it_whole(
        db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """At shutdown a step was cancelled while its transaction's end (COMMIT, the connection's return to the pool)
    waited on the connection's thread: the pool logged the half-returned connection with a traceback and closed it
    (CI, `test_a_key_vault_outage_at_start_does_not_stop_the_bot`). The end now runs to its end, and then the step
    is cancelled; nothing of it is left running."""
    at_return = asyncio.Event()
    go_on = asyncio.Event()
    original = OneTripConnection.rollback

    async def slow_return(self: OneTripConnection) -> None:  # the pool's reset of a connection given back
        at_return.set()
        await go_on.wait()
        await original(self)

    async def step() -> None:
        async with db.transaction():
            await db.execute("INSERT INTO t (v) VALUES ('committed')")

    monkeypatch.setattr(OneTripConnection, "rollback", slow_return)
    task = asyncio.create_task(step())
    await at_return.wait()
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done(), "the step waits for its connection's return"
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.undo()
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR], caplog.text
    assert db.engine.sync_engine.pool.checkedout() == 0
    assert [row["v"] for row in await db.fetch_all("SELECT v FROM t")] == ["committed"]
