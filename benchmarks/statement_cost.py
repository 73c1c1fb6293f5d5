"""What one SQLite statement costs through the bot's storage layer, and through the driver alone.

Run: `.venv/bin/python -m benchmarks.statement_cost [--statements 3000]`, pinned to one CPU. A whole
referral runs about 38 statements (`benchmarks.statement_counts`), so the layer's own cost per
statement, times 38, is its share of issue 14's CPU per referral. Each figure is per statement (or per
transaction), after a warm-up: the wall time, and the CPU of the event loop's thread (the database
thread's own work is the same for both paths). Same file settings for both: WAL, `synchronous = FULL`.
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
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.storage.database import DatabaseSettings, open_database

INSERT = "INSERT INTO t (a, b) VALUES (:a, :b)"
SELECT = "SELECT a, b FROM t WHERE rowid = :r"
RAW_INSERT = "INSERT INTO t (a, b) VALUES (?, ?)"
RAW_SELECT = "SELECT a, b FROM t WHERE rowid = ?"


async def _timed(label: str, call: Callable[[], Awaitable[object]], count: int) -> None:
    for _ in range(min(200, count)):
        await call()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(count):
        await call()
    per_wall = (time.perf_counter() - wall) / count * 1e6
    per_cpu = (time.thread_time() - cpu) / count * 1e6
    sys.stdout.write(f"| {label} | {per_wall:.0f} | {per_cpu:.0f} |\n")


async def _storage_layer(folder: Path, count: int) -> None:
    db = open_database(DatabaseSettings(sqlite_path=folder / "layer.db"))
    try:
        await db.execute("CREATE TABLE t (a INTEGER, b TEXT)")
        await db.execute(INSERT, {"a": 1, "b": "x"})

        async def two_inserts() -> None:
            async with db.transaction():
                await db.execute(INSERT, {"a": 1, "b": "x"})
                await db.execute(INSERT, {"a": 2, "b": "y"})

        await _timed("storage layer (`Database.execute`): INSERT on its own", lambda: db.execute(
            INSERT, {"a": 1, "b": "x"}), count)
        await _timed("storage layer: SELECT of one row on its own", lambda: db.execute(SELECT, {"r": 1}), count)
        await _timed("storage layer: a transaction of two INSERTs", two_inserts, count)
    finally:
        await db.close()


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


async def _run(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-statements-") as folder:
        sys.stdout.write("| statement | wall us | event-loop thread CPU us |\n| --- | ---: | ---: |\n")
        await _storage_layer(Path(folder), count)
        await _stock_sqlalchemy(Path(folder), count)
        await _driver_alone(Path(folder), count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=3000)
    parser.add_argument("--cpu", type=int, default=min(os.sched_getaffinity(0)), help="the CPU to pin to")
    arguments = parser.parse_args()
    os.sched_setaffinity(0, {arguments.cpu})  # the database thread too: one core, as the bot in the goals
    asyncio.run(_run(arguments.statements))


if __name__ == "__main__":
    main()
