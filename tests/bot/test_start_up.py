"""The real `python -m bot serve` (as App Service runs it) starting while what it needs is not there yet.

A start that ends in an error is one App Service repeats, again and again, while Teams gets no answer at all:
what is out of reach for a while is waited for, before the bot listens.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import aiohttp

from tests.support.bot_process import bot_process
from tests.support.databases import migrated_postgres_url
from tests.support.postgres_server import PostgresServer
from tests.support.smtp_server import free_port
from tests.support.tcp_proxy import TcpProxy

ZIP_PASSWORD = "K7M2QX9PLR4TWB8N6VHJ3CZD"
DRAFT_KEY = "3c9f1e0a7b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e"


async def test_postgresql_not_reachable_yet_at_start_does_not_crash_the_bot(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """PostgreSQL out of reach for the first seconds of a start (a failover, a restart of the server, the network
    not up yet): `serve` ended with a traceback (exit 1) from the schema check. Now it waits, one line per
    attempt, and is ready once the server answers."""
    url = await migrated_postgres_url(postgres)
    proxy = TcpProxy(postgres.port)
    proxy_port = free_port()  # where the bot looks for PostgreSQL: nothing listens there for the first 4 s
    port = free_port()
    env = {**os.environ, "BOT_DATA_DIR": str(tmp_path / "data"), "PORT": str(port),
           "DATABASE_URL": url.replace(f":{postgres.port}/", f":{proxy_port}/"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
           "LOCAL_DRAFT_KEY": DRAFT_KEY, "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1"}
    log = tmp_path / "bot.log"
    with bot_process(env, log) as process:
        async with aiohttp.ClientSession() as session:
            await asyncio.sleep(4)
            await proxy.start(proxy_port)
            try:
                ended = await _until_ready_or_exit(f"http://127.0.0.1:{port}", session, process, 40)
                text = log.read_text()  # the start's log (closing the proxy under a running bot makes more)
            finally:
                await proxy.close()
    assert ended is None, f"serve ended with exit code {ended}:\n{text[-1500:]}"
    assert "start-up waits for the database: database unavailable: ConnectionRefusedError (attempt 1)" in text
    assert "Traceback" not in text


async def _until_ready_or_exit(url: str, session: aiohttp.ClientSession, process: subprocess.Popen[bytes],
                               seconds: float) -> int | None:
    """Wait until `/readyz` answers 200; the process's exit code if it ended first (None: ready)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return process.returncode
        try:
            async with session.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=5)) as response:
                if response.status == 200:
                    return None
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("neither ready nor ended in time")
