"""PostgreSQL statements straight to asyncpg's prepared statements, against the suite's real server.

Through SQLAlchemy's execution each statement on PostgreSQL cost ~420 us of the event loop's CPU on its
own and ~480 in a transaction, against ~80 for asyncpg's prepared statement alone (issue 13: the bots'
CPU per referral bounds what two instances deliver). The SQLite side of `bot.storage.direct_statements`
is tested in `test_sqlite_connection.py`; the stores' contract on both backends in their own tests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError, InvalidRequestError, ProgrammingError

from bot.storage.database import Database, DatabaseSettings, DatabaseUnreachable, open_database
from tests.support.databases import (
    OPENED,
    bridge_crossings,
    cancel_a_step_mid_statement,
    postgres_url,
    statements_an_observer_sees,
    statements_through_sqlalchemy,
)
from tests.support.postgres_server import PostgresServer

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def db(postgres: PostgresServer) -> Database:
    database = open_database(DatabaseSettings(sqlite_path=Path("/nonexistent"), url=postgres_url(postgres),
                                              pool_size=2))
    OPENED.append(database)
    await database.execute("CREATE TABLE t (id SERIAL PRIMARY KEY, v TEXT UNIQUE)")
    return database


async def test_no_statement_goes_through_sqlalchemys_execution_machinery(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """On its own, in a transaction, in a savepoint, with RETURNING, a parameter used twice, list and set
    parameters around others: asyncpg's answers, without SQLAlchemy's execution context per statement."""
    executed = statements_through_sqlalchemy(monkeypatch)
    assert (await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "a"})).rowcount == 1
    assert await db.fetch_one("SELECT v FROM t WHERE id = :id", {"id": 1}) == {"v": "a"}
    async with db.transaction():
        await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "b"})
        assert (await db.execute("UPDATE t SET v = v || '!' WHERE id = :id OR v = :v AND id = :id",
                                 {"id": 2, "v": "none"})).rowcount == 1
        async with db.transaction():  # a savepoint
            returned = await db.execute("INSERT INTO t (v) VALUES (:v) RETURNING id", {"v": "c"})
    assert returned.scalar() == 3
    listed = await db.fetch_all("SELECT v FROM t WHERE id IN :ids AND v <> :not OR v IN :also ORDER BY id",
                                {"ids": [1, 3], "not": "x", "also": {"b!"}})
    assert [row["v"] for row in listed] == ["a", "b!", "c"]
    async with db.transaction():
        changed = await db.execute("UPDATE t SET v = v || :mark WHERE id IN :ids AND v <> :not",
                                   {"mark": "?", "ids": (1, 2, 3), "not": "c"})
    assert changed.rowcount == 2
    assert [sql for sql in executed if sql.split()[0] not in ("SAVEPOINT", "RELEASE")] == [], executed
    assert await db.fetch_all("SELECT v FROM t WHERE id IN :ids", {"ids": []}) == []  # SQLAlchemy's "in nothing"
    assert executed[-1] == "SELECT v FROM t WHERE id IN (__[POSTCOMPILE_ids])", "an empty list: SQLAlchemy's way"
    assert [row["v"] for row in await db.fetch_all("SELECT v FROM t ORDER BY id")] == ["a?", "b!?", "c"]


async def test_a_transaction_crosses_sqlalchemys_async_bridge_twice_for_one_statement_or_six(
        db: Database) -> None:
    """Its checkout and first pass, its COMMIT and return: two crossings of the bridge (a greenlet); its
    statements none (each was one more, ~50 us of the event loop's CPU)."""
    counts = [await bridge_crossings(db, statements) for statements in (1, 6)]
    assert counts == [2, 2]
    assert await db.scalar("SELECT COUNT(*) FROM t") == 7


async def test_a_statement_on_its_own_commits_with_itself_and_leaves_the_connection_as_it_was(
        db: Database) -> None:
    """No BEGIN and COMMIT around it (two round trips): the server's autocommit. A lock it takes ends with it,
    and the connection, back in the pool, runs the next transaction as a transaction again."""
    sent: list[str] = []
    async with db.transaction():
        raw = await db.current_connection().get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection  # type: ignore[assignment]
    driver.add_query_logger(lambda record: sent.append(record.query))
    assert await db.scalar("SELECT pg_try_advisory_xact_lock(:key)", {"key": 7}) is True
    await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "alone"})
    await asyncio.sleep(0)  # asyncpg calls its query loggers soon after each query
    assert sent == [], "prepared statements only: no BEGIN, no COMMIT"
    other = await asyncpg.connect(db.settings.url.split("?", 1)[0] if db.settings and db.settings.url else "")
    try:
        assert await other.fetchval("SELECT pg_try_advisory_xact_lock(7)") is True, "the lock ended with it"
        assert await other.fetchval("SELECT v FROM t") == "alone", "committed with itself"
    finally:
        await other.close()
    with pytest.raises(IntegrityError):
        async with db.transaction():
            await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "rolled back"})
            await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "alone"})
    await asyncio.sleep(0)
    assert sent[0].startswith("BEGIN") and sent[-1] == "ROLLBACK;", sent
    assert [row["v"] for row in await db.fetch_all("SELECT v FROM t")] == ["alone"]


async def test_errors_are_sqlalchemys_with_parameters_hidden_and_the_connection_usable_again(
        db: Database) -> None:
    await db.execute("INSERT INTO t (v) VALUES ('x')")
    for in_transaction in (False, True):
        with pytest.raises(IntegrityError) as duplicate:
            if in_transaction:
                async with db.transaction():
                    await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "y"})
                    await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "x"})
            else:
                await db.execute("INSERT INTO t (v) VALUES (:v)", {"v": "x"})
        assert "'x'" not in str(duplicate.value) and "[SQL parameters hidden" in str(duplicate.value)
    with pytest.raises(ProgrammingError):
        await db.execute("SELECT nope FROM t WHERE v = :v", {"v": "x"})
    assert [row["v"] for row in await db.fetch_all("SELECT v FROM t")] == ["x"]
    async with db.transaction():
        await db.execute("INSERT INTO t (v) VALUES ('z')")
    assert await db.scalar("SELECT COUNT(*) FROM t") == 2, "the connections are usable again"
    assert db.engine.sync_engine.pool.checkedout() == 0


async def test_an_observer_of_statements_still_sees_every_one(db: Database) -> None:
    """A listener on SQLAlchemy's cursor events (fault injection, telemetry's SQL spans) is served by
    SQLAlchemy's own path: it sees each statement, and what it raises fails that statement."""
    seen = await statements_an_observer_sees(db, RuntimeError("refused by the observer"))
    assert seen == ["INSERT INTO t (v) VALUES ($1)", "INSERT INTO t (v) VALUES ('b')",
                    "INSERT INTO t (v) VALUES ('refused')"]
    assert [row["v"] for row in await db.fetch_all("SELECT v FROM t")] == ["a"], "the transaction rolled back"


async def test_a_transaction_cancelled_mid_statement_leaves_nothing_and_the_pool_usable(
        postgres: PostgresServer) -> None:
    """On the pool's one connection: the next step is not behind the abandoned statement (its connection dropped)."""
    db = open_database(DatabaseSettings(sqlite_path=Path("/nonexistent"), url=postgres_url(postgres), pool_size=1))
    OPENED.append(db)
    await db.execute("CREATE TABLE t (id SERIAL PRIMARY KEY, v TEXT UNIQUE)")
    await cancel_a_step_mid_statement(db, "SELECT pg_sleep(5)")


async def test_a_transaction_after_a_statement_on_its_own_runs_at_the_sessions_level(db: Database) -> None:
    """The bot's sessions read committed; a read-only command's (`register verify`) one snapshot for its whole
    transaction (repeatable read), however many statements ran on their own on that connection before."""
    assert db.settings is not None
    reader = open_database(DatabaseSettings(sqlite_path=Path("/nonexistent"), url=db.settings.url, pool_size=1,
                                            read_only=True))
    OPENED.append(reader)
    for database, level in ((db, "read committed"), (reader, "repeatable read")):
        for _ in range(2):
            assert await database.scalar("SELECT current_setting('transaction_isolation')") == level
            async with database.transaction():
                assert await database.scalar("SELECT current_setting('transaction_isolation')") == level


async def test_a_statement_the_server_did_not_answer_in_time_drops_its_connection(postgres: PostgresServer) -> None:
    """asyncpg gave up after `server_silence_seconds`: what the connection is in is unknown, so it is never handed
    out again; the next step has a new one. The same on SQLAlchemy's way (while an observer listens) as on this."""
    db = open_database(DatabaseSettings(sqlite_path=Path("/nonexistent"), url=postgres_url(postgres), pool_size=1,
                                        server_silence_seconds=0.5))
    OPENED.append(db)
    opened: list[object] = []
    event.listen(db.engine.sync_engine, "connect", lambda connection, _record: opened.append(connection))
    observer = ("before_cursor_execute", lambda *_: None)
    for observed in (False, True):
        if observed:
            event.listen(db.engine.sync_engine, *observer)
        for in_transaction in (False, True):
            with pytest.raises(DatabaseUnreachable):
                if in_transaction:
                    async with db.transaction():
                        await db.execute("SELECT pg_sleep(:s)", {"s": 2})
                else:
                    await db.execute("SELECT pg_sleep(:s)", {"s": 2})
            before = len(opened)
            assert await db.scalar("SELECT CAST(:n AS integer)", {"n": 5}) == 5
            assert len(opened) == before + 1, ("a new connection", observed, in_transaction)
            assert db.engine.sync_engine.pool.checkedout() == 0
    event.remove(db.engine.sync_engine, *observer)


@pytest.mark.parametrize("observed", [False, True], ids=["straight", "sqlalchemys-way"])
async def test_a_table_changed_by_another_instance_fails_one_statement_and_not_the_next(
        db: Database, observed: bool) -> None:
    """A migration from another instance (a rolling deployment) changes what a prepared statement returns: the server
    refuses that statement once ("cached plan must not change result type"), and every connection prepares its
    statements again, as on SQLAlchemy's way; they did not fail on each connection until it was recycled."""
    if observed:
        event.listen(db.engine.sync_engine, "before_cursor_execute", lambda *_: None)
    await db.execute("INSERT INTO t (v) VALUES ('a')")

    async def on_both_connections() -> list[object]:
        """The statement on each of the pool's two connections, both checked out at once."""
        both = asyncio.Barrier(2)

        async def one() -> object:
            async with db.transaction():
                await both.wait()
                return await db.fetch_all("SELECT * FROM t")

        return list(await asyncio.gather(one(), one(), return_exceptions=True))

    assert await on_both_connections() == [[{"id": 1, "v": "a"}]] * 2  # prepared on both
    assert db.settings is not None and db.settings.url is not None
    other = await asyncpg.connect(db.settings.url.split("?", 1)[0])
    try:
        await other.execute("ALTER TABLE t ADD COLUMN w TEXT DEFAULT 'new'")
    finally:
        await other.close()
    first = await on_both_connections()
    assert 1 <= sum(isinstance(answer, DBAPIError) for answer in first) <= 2, first  # at once: maybe both
    for _ in range(2):
        assert await on_both_connections() == [[{"id": 1, "v": "a", "w": "new"}]] * 2


async def test_a_statement_after_its_transaction_ended_inside_the_block_is_refused(database: Database) -> None:
    """Only the end of `db.transaction()`'s block ends its transaction: a statement after code ended it early is
    refused, as SQLAlchemy refuses it, not run by the driver in a transaction of its own (on SQLite committed on its
    own, on PostgreSQL rolled back silently at the connection's return)."""
    insert = ("INSERT INTO job_runs (name, next_run_at, last_started_at, last_instance)"
              " VALUES (:name, 'a', 'a', 'x')")
    with pytest.raises(InvalidRequestError):
        async with database.transaction():
            await database.execute(insert, {"name": "committed early"})
            await database.current_connection().commit()
            await database.execute(insert, {"name": "after"})
    assert [row["name"] for row in await database.fetch_all("SELECT name FROM job_runs")] == ["committed early"]
    assert database.engine.sync_engine.pool.checkedout() == 0
