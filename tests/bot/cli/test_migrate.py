"""`python -m bot migrate [--from-sqlite FILE]` and `serve` on a schema that is behind, as an operator runs them."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.conftest import ZIP_PASSWORD
from tests.support.bot_process import PROJECT_ROOT, bot_process, wait_until_ready
from tests.support.databases import postgres_url
from tests.support.postgres_server import PostgresServer
from tests.support.smtp_server import free_port

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "botbuilder_era.sql"


def _env(database_url: str, tmp_path: Path, **more: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1",
            "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD, "LOCAL_DRAFT_KEY": "ab" * 32, "BOT_DATA_DIR": str(tmp_path / "data"),
            "PORT": str(free_port()), **more}


def _bot(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *arguments], env=env, cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


def test_migrate_applies_the_revisions_once_and_says_so(postgres: PostgresServer, tmp_path: Path) -> None:
    env = _env(postgres_url(postgres), tmp_path)
    first = _bot(env, "migrate")
    assert first.returncode == 0, first.stderr
    assert "migrated from nothing to" in first.stdout and "127.0.0.1" in first.stdout
    again = _bot(env, "migrate")
    assert again.returncode == 0 and "already at revision" in again.stdout


def test_serve_refuses_a_schema_behind_and_serves_once_migrated(postgres: PostgresServer, tmp_path: Path) -> None:
    env = _env(postgres_url(postgres), tmp_path)
    refused = _bot(env, "serve")
    assert refused.returncode == 2
    assert "python -m bot migrate" in refused.stderr and "serve --migrate" in refused.stderr

    async def served() -> None:
        with bot_process(env, tmp_path / "bot.log"):
            async with aiohttp.ClientSession() as session:
                await wait_until_ready(f"http://127.0.0.1:{env['PORT']}", session)
                async with session.get(f"http://127.0.0.1:{env['PORT']}/readyz") as response:
                    body = await response.json()
        assert body["checks"]["storage"] == "ok"

    assert _bot(env, "migrate").returncode == 0
    asyncio.run(served())
    assert not (tmp_path / "data").exists(), "on PostgreSQL nothing is written into BOT_DATA_DIR"


def test_migrate_from_sqlite_copies_verifies_and_refuses_a_second_run(postgres: PostgresServer, tmp_path: Path) -> None:
    file = tmp_path / "old" / "bot.sqlite3"
    file.parent.mkdir()
    with sqlite3.connect(file) as db:
        db.executescript(FIXTURE.read_text())
    env = _env(postgres_url(postgres), tmp_path)
    done = _bot(env, "migrate", "--from-sqlite", str(file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "copied from" in done.stdout and "referrals 2" in done.stdout
    assert "the register's hash chain verifies" in done.stdout
    again = _bot(env, "migrate", "--from-sqlite", str(file))
    assert again.returncode == 2 and "not empty" in again.stderr


def test_from_sqlite_needs_a_postgresql_target(tmp_path: Path) -> None:
    env = {**os.environ, "BOT_DATA_DIR": str(tmp_path / "data")}
    refused = _bot(env, "migrate", "--from-sqlite", str(tmp_path / "x.sqlite3"))
    assert refused.returncode == 2 and "DATABASE_URL" in refused.stderr
