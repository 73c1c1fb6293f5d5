"""Whether the database would take a write, asked without writing: a read-only PostgreSQL, a write refused a moment
ago. (The SQLite file's full disk: tests/bot/test_app.py, through `/readyz`.)"""

from __future__ import annotations

import pytest

from bot.storage import write_readiness
from bot.storage.database import DatabaseError
from bot.storage.write_readiness import write_refusal
from tests.support.databases import postgres_database, set_read_only
from tests.support.postgres_server import PostgresServer

pytestmark = pytest.mark.asyncio

WRITE = "INSERT INTO job_runs (name, next_run_at, last_started_at, last_instance) VALUES ('sweep', 'a', 'a', 'x')"


async def test_a_read_only_postgres_is_seen_before_any_write_is_refused(postgres: PostgresServer) -> None:
    db = await postgres_database(postgres)
    assert await write_refusal(db) is None
    await set_read_only(postgres, db)
    assert await write_refusal(db) == "read-only"
    await set_read_only(postgres, db, on=False)
    assert await write_refusal(db) is None


async def test_a_refused_write_counts_for_a_while_after(
        postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the questions cannot see (PostgreSQL's own disk full, a failing disk) shows as a write refused: it counts
    for longer than the workers' longest pause between failing passes, so the answer does not flicker."""
    db = await postgres_database(postgres)
    await set_read_only(postgres, db)
    with pytest.raises(DatabaseError):
        await db.execute(WRITE)
    await set_read_only(postgres, db, on=False)
    assert await write_refusal(db) == "one was refused 0 s ago"
    monkeypatch.setattr(write_readiness, "REFUSAL_MEMORY_SECONDS", 0.0)
    assert await write_refusal(db) is None
