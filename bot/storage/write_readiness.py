"""Whether the database would take a write now, asked without writing anything (for `/readyz`).

Reads go on answering while every write is refused: a full disk, a PostgreSQL left read-only (a
failover to a standby; Azure makes a server read-only when its storage is nearly full). A probe that
only read (`SELECT 1`) said `storage: ok` through all of it, so the alert on `/readyz` stayed quiet
while no click could be recorded. Asked here: PostgreSQL, whether it is in recovery or read-only; the
SQLite file, whether its folder may be written and has room; either, whether a write was refused a
moment ago, which covers what those questions cannot see (PostgreSQL's own disk full, a failing
disk, a write larger than the room left).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from bot.storage.database import Database

#: Less room than this on the SQLite file's disk: a step's write (a mail carries its ZIP) may be refused.
MIN_FREE_BYTES = 1 << 20
#: A refused write counts this long, unless a write that changed a row is taken after it (the database then
#: takes writes again): longer than the workers' longest pause between failing passes (60 s), so while writes
#: stay refused the answer does not flicker between their passes.
REFUSAL_MEMORY_SECONDS = 120.0


async def write_refusal(db: Database) -> str | None:
    """Why a write would be refused now ("disk full", "read-only", ...), or None; raises as any statement
    does when the database cannot be read at all."""
    refused_at = db.writes_refused_at
    if refused_at is not None and (ago := time.monotonic() - refused_at) < REFUSAL_MEMORY_SECONDS:
        return f"one was refused {ago:.0f} s ago"
    if db.is_postgres:  # one round trip, which also says the server answers
        read_only = await db.scalar(
            "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on' AS read_only")
        return "read-only" if read_only else None
    await db.scalar("SELECT 1 AS ok")
    if db.sqlite_path is None:
        return None
    return await asyncio.to_thread(_folder_refusal, db.sqlite_path)


def _folder_refusal(path: Path) -> str | None:
    """The SQLite file's folder read-only (its WAL and journal are written beside it), or its disk (nearly) full."""
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return "read-only"
    room = os.statvfs(path.parent)
    if room.f_bavail * room.f_frsize < MIN_FREE_BYTES:
        return "disk full"
    return None
