"""Entra ID login to PostgreSQL: the managed identity's access token is the password, renewed before it expires.

First the token keeper alone, with a scripted credential and a clock the test moves. Then the whole
path as production runs it: the real `DefaultAzureCredential` finds the App Service managed-identity
endpoint (a local stand-in, through IDENTITY_ENDPOINT and IDENTITY_HEADER), and the bot's Database
logs in with its tokens over verified TLS to the suite's TLS server, which accepts the newest token
only (see tests/support/entra_login.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import DefaultAzureCredential
from sqlalchemy.exc import DBAPIError

from bot.config import Settings
from bot.secrets.database_login import POSTGRES_SCOPE, REFRESH_MARGIN_SECONDS, EntraDatabasePassword
from bot.storage.database import Database, DatabaseSettings, open_database
from bot.wiring import Closer, build_database
from tests.support.clock import ManualClock
from tests.support.databases import OPENED
from tests.support.entra_login import EntraDatabase, entra_database
from tests.support.postgres_server import PostgresServer

#: SQLSTATE invalid_password: the server refused the password (here: a token that is no longer current).
WRONG_PASSWORD = "28P01"
HOUR = dt.timedelta(hours=1)


class ScriptedCredential:
    """An AsyncTokenCredential whose tokens live an hour on `clock`; `failing` makes it raise, `gate` makes it wait."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.scopes: list[tuple[str, ...]] = []
        self.failing = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.closed = False

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.scopes.append(scopes)
        await self.gate.wait()
        if self.failing:
            raise ClientAuthenticationError("the identity endpoint said no")
        return AccessToken(f"token-{len(self.scopes)}", int((self.clock.now() + HOUR).timestamp()))

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> ScriptedCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@pytest.fixture
def credential(clock: ManualClock) -> ScriptedCredential:
    return ScriptedCredential(clock)


async def test_a_token_is_kept_until_five_minutes_before_it_expires(
    credential: ScriptedCredential, clock: ManualClock
) -> None:
    password = EntraDatabasePassword(credential, clock=clock)

    first = await password()
    clock.advance(HOUR - dt.timedelta(seconds=REFRESH_MARGIN_SECONDS + 1))
    kept = await password()
    clock.advance(dt.timedelta(seconds=2))
    renewed = await password()

    assert (first, kept, renewed) == ("token-1", "token-1", "token-2")
    assert credential.scopes == [(POSTGRES_SCOPE,)] * 2


async def test_connections_opening_at_once_share_one_fetch(credential: ScriptedCredential, clock: ManualClock) -> None:
    password = EntraDatabasePassword(credential, clock=clock)
    credential.gate.clear()

    waiting = [asyncio.create_task(password()) for _ in range(10)]
    await asyncio.sleep(0.01)
    credential.gate.set()

    assert await asyncio.gather(*waiting) == ["token-1"] * 10
    assert len(credential.scopes) == 1


async def test_a_failed_renewal_hands_out_the_token_that_is_still_valid(
    credential: ScriptedCredential, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    password = EntraDatabasePassword(credential, clock=clock)
    await password()
    clock.advance(HOUR - dt.timedelta(minutes=2))
    credential.failing = True

    with caplog.at_level(logging.WARNING, logger="bot.secrets.database_login"):
        assert await password() == "token-1"
    credential.failing = False
    assert await password() == "token-3", "the next connection tries again"
    assert [record.getMessage() for record in caplog.records] == [
        "database access token not renewed; the current one is used until it expires"]
    assert "token-1" not in caplog.text


@pytest.mark.parametrize("age", [dt.timedelta(0), HOUR - dt.timedelta(seconds=10)], ids=["no-token", "last-seconds"])
async def test_a_failed_fetch_without_a_usable_token_fails_the_login(
    credential: ScriptedCredential, clock: ManualClock, age: dt.timedelta
) -> None:
    password = EntraDatabasePassword(credential, clock=clock)
    if age:
        await password()
        clock.advance(age)
    credential.failing = True

    with pytest.raises(ClientAuthenticationError):
        await password()


async def test_close_closes_the_credential(credential: ScriptedCredential, clock: ManualClock) -> None:
    password = EntraDatabasePassword(credential, clock=clock)
    await password()
    await password.close()

    assert credential.closed
    assert "token-1" not in repr(password)


# The real credential, the real server.

@pytest.fixture
async def entra(postgres_tls: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EntraDatabase]:
    """A database for the identity's role; this process's azure-identity finds the stand-in endpoint.

    The endpoint tells azure-identity to keep no token of its own (`refresh_in=0`): every token
    the bot asks its credential for reaches the endpoint, so the endpoint counts the bot's fetches.
    """
    async with entra_database(postgres_tls, refresh_in=0) as database:
        database.use_in_this_process(monkeypatch)
        yield database


def _bot_database(entra: EntraDatabase, password: EntraDatabasePassword, *, pool_size: int = 2) -> Database:
    return open_database(DatabaseSettings(sqlite_path=Path("/nonexistent"), url=entra.url, password=password,
                                          pool_size=pool_size))


async def _whoami(db: Database) -> tuple[str, bool, int]:
    """The role, whether the connection is TLS, and its server process (a new one for a new connection)."""
    row = await db.fetch_one("SELECT current_user AS role, s.ssl, s.pid FROM pg_stat_ssl s "
                             "WHERE s.pid = pg_backend_pid()")
    assert row is not None
    return row["role"], row["ssl"], row["pid"]


async def test_the_bot_logs_in_with_its_managed_identity_token_over_verified_tls(
    entra: EntraDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = ManualClock(dt.datetime.now(dt.UTC))  # the stand-in's tokens expire an hour from now
    password = EntraDatabasePassword(DefaultAzureCredential(), clock=clock)
    db = _bot_database(entra, password)
    try:
        first = await _whoami(db)
        await db.close()  # the pool's connections are gone: the next statement opens a new one
        second = await _whoami(db)
        clock.advance(HOUR - dt.timedelta(seconds=REFRESH_MARGIN_SECONDS - 1))  # the token nears its expiry
        await db.close()
        third = await _whoami(db)
        with pytest.raises(DBAPIError) as stale:
            await _whoami(_stale_token_database(entra, entra.identity.issued[0]))
    finally:
        await db.close()
        await password.close()

    assert first[:2] == second[:2] == third[:2] == (entra.role, True)
    assert len({first[2], second[2], third[2]}) == 3, "three connections, three logins"
    assert len(entra.identity.issued) == 2, "the first token served two logins; near its expiry came a new one"
    assert [request["resource"] for request in entra.identity.requests] == [
        "https://ossrdbms-aad.database.windows.net"] * 2
    assert getattr(stale.value.orig, "sqlstate", None) == WRONG_PASSWORD
    secrets = [*entra.identity.issued, entra.identity.header]
    for text in (caplog.text, str(stale.value), repr(stale.value), repr(db.settings), repr(password)):
        assert not any(secret in text for secret in secrets), text


def _stale_token_database(entra: EntraDatabase, token: str) -> Database:
    """The bot's Database logging in with an older token (closed when the test ends)."""
    async def old_token() -> str:
        return token

    db = open_database(DatabaseSettings(sqlite_path=Path("/nonexistent"), url=entra.url, password=old_token,
                                        pool_size=1))
    OPENED.append(db)
    return db


async def test_connections_opening_at_once_fetch_one_token(entra: EntraDatabase) -> None:
    password = EntraDatabasePassword(DefaultAzureCredential())
    db = _bot_database(entra, password, pool_size=8)
    try:
        logins = await asyncio.gather(*(db.fetch_one("SELECT pg_backend_pid() AS pid, pg_sleep(0.2)")
                                        for _ in range(8)))
    finally:
        await db.close()
        await password.close()

    assert len({row["pid"] for row in logins if row}) == 8, "eight new connections"
    assert len(entra.identity.requests) == 1


async def test_the_wiring_logs_in_with_default_azure_credential(entra: EntraDatabase, tmp_path: Path) -> None:
    """`DATABASE_AUTH=entra` as production sets it: build_database makes the credential from the environment."""
    settings = Settings.from_mapping({
        "DATABASE_URL": entra.url, "DATABASE_AUTH": "entra", "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1",
        "LOCAL_ZIP_PASSWORD": "A" * 20, "LOCAL_DRAFT_KEY": "ab" * 32, "BOT_DATA_DIR": str(tmp_path / "none"),
    })
    closers: list[Closer] = []
    db = build_database(settings, closers)
    try:
        role, tls, _ = await _whoami(db)
    finally:
        await db.close()
        for close in closers:
            await close()

    assert (role, tls) == (entra.role, True)
    assert len(entra.identity.issued) == 1
    assert not any(token in repr(settings) for token in entra.identity.issued)
