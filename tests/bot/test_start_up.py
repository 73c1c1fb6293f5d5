"""The real `python -m bot serve` (as App Service runs it) starting while what it needs is not there yet, and
starting after a stop cut a send off.

A start that ends in an error is one App Service repeats, again and again, while Teams gets no answer at all:
what is out of reach for a while is waited for, before the bot listens. On the embedded SQLite file the
starting process holds the data folder, so what a stop left "sending" is sent again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.support.activities import TeamsUser
from tests.support.bot_process import PROJECT_ROOT, bot_process
from tests.support.bot_server import serve
from tests.support.card_reading import actions
from tests.support.connector import ConnectorStandIn
from tests.support.databases import migrated_postgres_url
from tests.support.postgres_server import PostgresServer, postgres_server
from tests.support.sample_values import CLIENT_FORM, CONSENT_ALL, PROTOCOL_ID
from tests.support.smtp_server import free_port
from tests.support.tcp_proxy import TcpProxy

ZIP_PASSWORD = "K7M2QX9PLR4TWB8N6VHJ3CZD"
DRAFT_KEY = "3c9f1e0a7b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e"
REFERRER = TeamsUser("aad-referrer-1", "An Verpleeg", "a:personal-referrer")


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


async def test_a_teams_message_cut_off_by_a_stop_is_queued_again_at_the_next_start(tmp_path: Path) -> None:
    """Teams takes the referrer's "verstuurd" post and does not answer within the stop's 10 s drain (a deploy):
    the post is cut off and its row left "sending". After the restart it waited out its whole lease
    (`OUTBOX_LEASE_SECONDS`, 120 s), and every later message to that conversation with it, though on the embedded
    SQLite file nothing but the starting process can be sending (the drafts a stop left are released at start
    for that very reason). Now it goes again at once."""
    connector = ConnectorStandIn()
    data_dir = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "BOT_DATA_DIR": str(data_dir), "PORT": str(port), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
           "RATE_LIMIT_ACTIONS_PER_MINUTE": "10000"}
    bot_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "bot.log"
    async with serve(connector.app()) as service_url, aiohttp.ClientSession() as session:
        with bot_process(env, log) as first:
            assert await _until_ready_or_exit(bot_url, session, first, 30) is None
            start = await _act(session, bot_url, service_url, "referral.start", {})
            draft_id = str(actions(start)["referral.consent"]["draftId"])
            await _act(session, bot_url, service_url, "referral.consent",
                       {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
            await _act(session, bot_url, service_url, "referral.details", {"draftId": draft_id, **CLIENT_FORM})
            connector.hanging = True  # Teams takes the next post and does not answer in time
            await _act(session, bot_url, service_url, "referral.send", {"draftId": draft_id})
            deadline = time.monotonic() + 20
            while _messages_waiting(data_dir).get("sending", 0) == 0:
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                await asyncio.sleep(0.1)
            first.send_signal(signal.SIGTERM)  # a deploy: the drain (10 s) cuts the post off
            assert await asyncio.to_thread(first.wait, 25) == 0
        connector.release()
        assert "cut off" in log.read_text()
        with bot_process(env, log) as second:
            assert await _until_ready_or_exit(bot_url, session, second, 30) is None
            restarted = time.monotonic()
            while _messages_waiting(data_dir) and time.monotonic() - restarted < 30:  # noqa: ASYNC110  # the database
                await asyncio.sleep(0.2)
            waiting = _messages_waiting(data_dir)
    assert waiting == {}, f"30 s after the restart Teams messages still wait for a lease the stop left: {waiting}"
    assert "queued again at start: 0 mail(s), 1 Teams message(s)" in log.read_text()


async def _act(session: aiohttp.ClientSession, bot_url: str, service_url: str, verb: str,
               data: dict[str, str]) -> dict[str, object]:
    """A card action of the referrer's, as Teams posts it; the card the bot answers with."""
    async with session.post(f"{bot_url}/api/messages",
                            json=REFERRER.card_action(service_url, verb, data)) as response:
        assert response.status == 200, response.status
        body: dict[str, object] = await response.json()
        return body["value"]  # type: ignore[return-value]


def _messages_waiting(data_dir: Path) -> dict[str, int]:
    """How many Teams messages are queued and being sent, read from the SQLite file itself."""
    with contextlib.closing(sqlite3.connect(data_dir / "bot.sqlite3")) as db:
        rows = db.execute("SELECT state, COUNT(*) FROM message_outbox WHERE state IN ('queued', 'sending')"
                          " GROUP BY state").fetchall()
    return {str(state): int(count) for state, count in rows}


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


def _postgres_env(tmp_path: Path, url: str, port: int, **extra: str) -> dict[str, str]:
    return {**os.environ, "BOT_DATA_DIR": str(tmp_path / "data"), "PORT": str(port), "DATABASE_URL": url,
            "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD, "LOCAL_DRAFT_KEY": DRAFT_KEY, "MAIL_TRANSPORT": "smtp",
            "SMTP_HOST": "127.0.0.1", **extra}


async def test_a_start_during_a_postgresql_restart_waits_for_it(tmp_path: Path) -> None:
    """A planned restart of the server (maintenance, a parameter change, a failover's old primary): PostgreSQL first
    refuses new connections ("the database system is shutting down", SQLSTATE 57P03, as while it starts up and
    recovers), then goes down and comes back. An instance started meanwhile ended with a traceback (exit 1): the
    error came through SQLAlchemy's adapter class, which the check for an unreachable server did not know."""
    with postgres_server() as server:
        url = await migrated_postgres_url(server)
        holder = subprocess.Popen(["psql", "-h", str(server.folder), "-p", str(server.port), "-U", "postgres",  # noqa: ASYNC220
                                   "-d", "postgres", "-tAc", "SELECT pg_sleep(6)"], stdout=subprocess.DEVNULL)
        await asyncio.sleep(0.5)  # the session the "smart" shutdown waits for
        postmaster = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGTERM)  # new connections are refused with 57P03
        await asyncio.sleep(0.5)
        port = free_port()
        log = tmp_path / "bot.log"
        with bot_process(_postgres_env(tmp_path, url, port), log) as process:
            await asyncio.to_thread(holder.wait, 20)
            await asyncio.to_thread(server.start_again)  # down, and up again
            async with aiohttp.ClientSession() as session:
                ended = await _until_ready_or_exit(f"http://127.0.0.1:{port}", session, process, 40)
            text = log.read_text()
    assert ended is None, f"serve ended with exit code {ended}:\n{text[-1500:]}"
    assert "start-up waits for the database" in text and "Traceback" not in text


async def test_a_start_while_the_server_has_no_connection_slot_left_waits_for_one(tmp_path: Path) -> None:
    """A swap or a rolling restart runs the old instances and the new side by side, each with its pool: a small
    server runs out of connection slots ("too many clients already", SQLSTATE 53300) until the old ones stop. The
    new instance ended with a traceback (exit 1), to be started again and again during the deployment."""
    with postgres_server(settings={"max_connections": "6", "superuser_reserved_connections": "0"}) as server:
        url = await migrated_postgres_url(server)
        holders = [subprocess.Popen(["psql", "-h", str(server.folder), "-p", str(server.port), "-U", "postgres",  # noqa: ASYNC220
                                     "-d", "postgres", "-tAc", "SELECT pg_sleep(6)"], stdout=subprocess.DEVNULL)
                   for _ in range(6)]  # the old instances' pools: every slot taken
        await asyncio.sleep(1)
        port = free_port()
        log = tmp_path / "bot.log"
        try:
            with bot_process(_postgres_env(tmp_path, url, port, DATABASE_POOL_SIZE="2"), log) as process:
                async with aiohttp.ClientSession() as session:
                    ended = await _until_ready_or_exit(f"http://127.0.0.1:{port}", session, process, 40)
                text = log.read_text()
        finally:
            for holder in holders:
                holder.wait(timeout=20)
    assert ended is None, f"serve ended with exit code {ended}:\n{text[-1500:]}"
    assert "start-up waits for the database" in text and "Traceback" not in text


async def test_the_documented_start_command_of_a_schema_change_waits_for_postgresql(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """infra/README.md deploys a version that changes the schema with the start command `python -m bot migrate
    --wait && exec python -m bot serve` on every instance. PostgreSQL out of reach for the first seconds of that
    start: `migrate` (without waiting) ended at once with exit 2, so `serve` and its own wait never ran and App
    Service started the container again and again."""
    url = await migrated_postgres_url(postgres)
    database = url.rsplit("/", 1)[1].split("?")[0]
    await asyncio.to_thread(postgres.psql, DOWN_ONE_REVISION, database)
    proxy = TcpProxy(postgres.port)
    proxy_port = free_port()  # where the instance looks for PostgreSQL: nothing listens there for the first 4 s
    port = free_port()
    env = _postgres_env(tmp_path, url.replace(f":{postgres.port}/", f":{proxy_port}/"), port)
    log = tmp_path / "bot.log"
    with log.open("ab") as output:
        process = subprocess.Popen(  # noqa: ASYNC220
            ["sh", "-c", START_COMMAND.format(python=sys.executable)], env=env, cwd=PROJECT_ROOT, stdout=output,
            stderr=output)
    try:
        await asyncio.sleep(4)
        await proxy.start(proxy_port)
        async with aiohttp.ClientSession() as session:
            ended = await _until_ready_or_exit(f"http://127.0.0.1:{port}", session, process, 40)
        text = log.read_text()
    finally:
        if process.poll() is None:
            process.terminate()
            await asyncio.to_thread(process.wait, 30)  # in a thread: the proxy on this loop carries its goodbyes
        await proxy.close()
    assert ended is None, f"the start command ended with exit code {ended}:\n{text[-800:]}"
    assert "migrated from 0010" in text and "Traceback" not in text


#: The schema one revision behind this version's: revision 0011's downgrade (keep it the newest revision's).
DOWN_ONE_REVISION = "ALTER TABLE activity_receipts DROP COLUMN holder; UPDATE alembic_version SET version_num = '0010'"
#: infra/README.md's start command for a version that changes the schema (`{python}`: this interpreter).
START_COMMAND = "{python} -m bot migrate --wait && exec {python} -m bot serve"
