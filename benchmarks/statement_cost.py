"""What one statement costs through the bot's storage layer, and through the driver alone.

Run: `.venv/bin/python -m benchmarks.statement_cost [--statements 3000] [--backend sqlite|postgresql]`,
pinned to one CPU. A whole referral runs about 38 statements (`benchmarks.statement_counts`), so the
layer's own cost per statement, times 38, is its share of issue 14's CPU per referral (SQLite) and of
the bots' CPU that bounds issue 13's two instances (PostgreSQL). Each figure is per statement (or per
transaction), after a warm-up: the wall time, and the CPU of the event loop's thread (the database
thread's or server's own work is the same for both paths). SQLite: the same file settings for both,
WAL, `synchronous = FULL`. PostgreSQL: a throw-away server this command starts (as the tests do,
`tests.support.postgres_server`), on the other CPU; the driver alone is asyncpg's prepared statement.

To measure another commit's storage layer, run this file with that tree first on the path:
`PYTHONPATH=<tree>:. .venv/bin/python benchmarks/statement_cost.py --backend postgresql`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosqlite
import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.storage.database import Database, DatabaseSettings, open_database
from tests.support.databases import postgres_url
from tests.support.postgres_server import postgres_server

INSERT = "INSERT INTO t (a, b) VALUES (:a, :b)"
SELECT = "SELECT a, b FROM t WHERE a = :r LIMIT 1"
RAW_INSERT = "INSERT INTO t (a, b) VALUES (?, ?)"
RAW_SELECT = "SELECT a, b FROM t WHERE a = ? LIMIT 1"


async def _timed(label: str, call: Callable[[], Awaitable[object]], count: int) -> None:
    for _ in range(min(200, count)):
        await call()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(count):
        await call()
    per_wall = (time.perf_counter() - wall) / count * 1e6
    per_cpu = (time.thread_time() - cpu) / count * 1e6
    sys.stdout.write(f"| {label} | {per_wall:.0f} | {per_cpu:.0f} |\n")


async def _storage_layer(folder: Path, count: int, url: str | None = None) -> None:
    db = open_database(DatabaseSettings(sqlite_path=folder / "layer.db", url=url))
    try:
        await db.execute("CREATE TABLE t (a INTEGER, b TEXT)")
        await db.execute(INSERT, {"a": 1, "b": "x"})
        await _layer_figures(db, count)
    finally:
        await db.close()


async def _layer_figures(db: Database, count: int) -> None:
    async def two_inserts() -> None:
        async with db.transaction():
            await db.execute(INSERT, {"a": 1, "b": "x"})
            await db.execute(INSERT, {"a": 2, "b": "y"})

    async def one_select() -> None:
        async with db.transaction():
            await db.execute(SELECT, {"r": 1})

    await _timed("storage layer (`Database.execute`): INSERT on its own", lambda: db.execute(
        INSERT, {"a": 1, "b": "x"}), count)
    await _timed("storage layer: SELECT of one row on its own", lambda: db.execute(SELECT, {"r": 1}), count)
    await _timed("storage layer: a transaction of two INSERTs", two_inserts, count)
    await _timed("storage layer: a transaction of one SELECT", one_select, count)


async def _asyncpg_alone(url: str, count: int) -> None:
    connection = await asyncpg.connect(url)
    try:
        insert = await connection.prepare("INSERT INTO t (a, b) VALUES ($1, $2)")
        select = await connection.prepare("SELECT a, b FROM t WHERE a = $1 LIMIT 1")

        async def two_inserts() -> None:
            async with connection.transaction():
                await insert.fetch(1, "x")
                await insert.fetch(2, "y")

        await _timed("asyncpg alone: INSERT (prepared) in autocommit", lambda: insert.fetch(1, "x"), count)
        await _timed("asyncpg alone: SELECT of one row (prepared)", lambda: select.fetch(1), count)
        await _timed("asyncpg alone: BEGIN, two INSERTs, COMMIT", two_inserts, count)
    finally:
        await connection.close()


async def _stock_sqlalchemy(folder: Path, count: int) -> None:
    """SQLAlchemy's asyncio extension as documented (its own aiosqlite dialect, default pool), for scale."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{folder / 'stock.db'}")
    select = text(SELECT)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (a INTEGER, b TEXT)"))
            await connection.execute(text(INSERT), {"a": 1, "b": "x"})

        async def checked_out() -> None:
            async with engine.connect() as connection:
                (await connection.execute(select, {"r": 1})).mappings().all()

        await _timed("stock SQLAlchemy asyncio: connect, SELECT of one row, close", checked_out, count)
        async with engine.connect() as held:
            async def on_held() -> None:
                (await held.execute(select, {"r": 1})).mappings().all()

            await _timed("stock SQLAlchemy asyncio: SELECT of one row on a held connection", on_held, count)
    finally:
        await engine.dispose()


async def _driver_alone(folder: Path, count: int) -> None:
    raw = await aiosqlite.connect(str(folder / "driver.db"), isolation_level=None)
    try:
        for pragma in ("journal_mode = WAL", "synchronous = FULL"):
            await raw.execute(f"PRAGMA {pragma}")
        await raw.execute("CREATE TABLE t (a INTEGER, b TEXT)")
        await raw.execute(RAW_INSERT, (1, "x"))

        async def select() -> None:
            cursor = await raw.execute(RAW_SELECT, (1,))
            await cursor.fetchall()

        async def two_inserts() -> None:
            await raw.execute("BEGIN IMMEDIATE")
            await raw.execute(RAW_INSERT, (1, "x"))
            await raw.execute(RAW_INSERT, (2, "y"))
            await raw.execute("COMMIT")

        await _timed("aiosqlite alone: INSERT in autocommit", lambda: raw.execute(RAW_INSERT, (1, "x")), count)
        await _timed("aiosqlite alone: SELECT of one row", select, count)
        await _timed("aiosqlite alone: BEGIN, two INSERTs, COMMIT", two_inserts, count)
    finally:
        await raw.close()


async def _run(count: int, backend: str, cpu: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-statements-") as folder:
        sys.stdout.write("| statement | wall us | event-loop thread CPU us |\n| --- | ---: | ---: |\n")
        if backend == "postgresql":
            with postgres_server() as server:  # started unpinned: the server on the other CPU when this one is busy
                os.sched_setaffinity(0, {cpu})
                url = postgres_url(server)
                await _storage_layer(Path(folder), count, url)
                await _asyncpg_alone(url.split("?", 1)[0], count)
            return
        os.sched_setaffinity(0, {cpu})  # the database thread too: one core, as the bot in the goals
        await _storage_layer(Path(folder), count)
        await _stock_sqlalchemy(Path(folder), count)
        await _driver_alone(Path(folder), count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=3000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--cpu", type=int, default=min(os.sched_getaffinity(0)), help="the CPU to pin to")
    arguments = parser.parse_args()
    asyncio.run(_run(arguments.statements, arguments.backend, arguments.cpu))


if __name__ == "__main__":
    main()
