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

from bot.app import create_app
from bot.config import Settings
from bot.secrets import database_login
from bot.secrets.database_login import (
    POSTGRES_SCOPE,
    REFRESH_MARGIN_SECONDS,
    RETRY_AFTER_FAILURE_SECONDS,
    EntraDatabasePassword,
)
from bot.storage.database import Database, DatabaseError, DatabaseSettings, open_database
from bot.storage.schema_migration import migrate
from bot.wiring import Closer, build_database
from tests.support.activities import TeamsUser
from tests.support.bot_server import running_bot
from tests.support.clock import ManualClock
from tests.support.databases import OPENED
from tests.support.entra_login import EntraDatabase, entra_database
from tests.support.keyvault_standin import IdentityOutage
from tests.support.postgres_server import PostgresServer

#: SQLSTATE invalid_password: the server refused the password (here: a token that is no longer current).
WRONG_PASSWORD = "28P01"
HOUR = dt.timedelta(hours=1)


class ScriptedCredential:
    """An AsyncTokenCredential whose tokens live an hour on `clock`; `failing` makes it raise, `gate` makes it wait.

    `scopes` records every request, `answered` counts those answered (a token or an error).
    """

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.scopes: list[tuple[str, ...]] = []
        self.answered = 0
        self.answer = asyncio.Condition()
        self.failing = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.closed = False

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.scopes.append(scopes)
        await self.gate.wait()
        async with self.answer:
            self.answered += 1
            self.answer.notify_all()
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


async def _answered(credential: ScriptedCredential, requests: int) -> None:
    """Wait until the credential has answered `requests` requests (a renewal in the background has ended)."""
    async with asyncio.timeout(1), credential.answer:
        await credential.answer.wait_for(lambda: credential.answered >= requests)


async def test_a_token_is_kept_until_five_minutes_before_it_expires_then_renewed_in_the_background(
    credential: ScriptedCredential, clock: ManualClock
) -> None:
    password = EntraDatabasePassword(credential, clock=clock)

    first = await password()
    clock.advance(HOUR - dt.timedelta(seconds=REFRESH_MARGIN_SECONDS + 1))
    kept = await password()
    clock.advance(dt.timedelta(seconds=2))
    while_renewing = await password()
    await _answered(credential, 2)
    renewed = await password()

    assert (first, kept, while_renewing, renewed) == ("token-1", "token-1", "token-1", "token-2")
    assert credential.scopes == [(POSTGRES_SCOPE,)] * 2


async def test_connections_opening_at_once_share_one_fetch(credential: ScriptedCredential, clock: ManualClock) -> None:
    password = EntraDatabasePassword(credential, clock=clock)
    credential.gate.clear()

    waiting = [asyncio.create_task(password()) for _ in range(10)]
    await asyncio.sleep(0.01)
    credential.gate.set()

    assert await asyncio.gather(*waiting) == ["token-1"] * 10
    assert len(credential.scopes) == 1


async def test_a_renewal_that_does_not_answer_holds_up_no_connection(
    credential: ScriptedCredential, clock: ManualClock
) -> None:
    password = EntraDatabasePassword(credential, clock=clock)
    await password()
    clock.advance(HOUR - dt.timedelta(minutes=4))
    credential.gate.clear()  # the identity endpoint takes the request and says nothing

    async with asyncio.timeout(1):
        handed_out = [await password() for _ in range(10)]
    credential.gate.set()
    await _answered(credential, 2)

    assert handed_out == ["token-1"] * 10
    assert len(credential.scopes) == 2, "one renewal for all ten connections"
    assert await password() == "token-2"


async def test_a_failed_renewal_hands_out_the_token_that_is_still_valid_and_is_tried_again_a_little_later(
    credential: ScriptedCredential, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    password = EntraDatabasePassword(credential, clock=clock)
    await password()
    clock.advance(HOUR - dt.timedelta(minutes=2))
    credential.failing = True

    with caplog.at_level(logging.WARNING, logger="bot.secrets.database_login"):
        assert await password() == "token-1"
        await _answered(credential, 2)
    credential.failing = False
    assert await password() == "token-1", "no new try at every connection"
    assert len(credential.scopes) == 2
    clock.advance(dt.timedelta(seconds=RETRY_AFTER_FAILURE_SECONDS + 1))
    assert await password() == "token-1"
    await _answered(credential, 3)
    assert await password() == "token-3", "a connection after the pause tries again"
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


async def test_a_connection_without_a_usable_token_waits_for_a_silent_endpoint_only_so_long(
    credential: ScriptedCredential, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_login, "RENEWAL_SECONDS", 0.05)
    password = EntraDatabasePassword(credential, clock=clock)
    credential.gate.clear()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1):
            await password()
    credential.gate.set()

    assert await password() == "token-2", "the next connection fetches anew"


async def test_close_closes_the_credential(credential: ScriptedCredential, clock: ManualClock) -> None:
    password = EntraDatabasePassword(credential, clock=clock)
    await password()
    await password.close()

    assert credential.closed
    assert "token-1" not in repr(password)


# The real credential, the real server.

@pytest.fixture
def outage() -> IdentityOutage:
    """Set `down` and the identity endpoint answers 503."""
    return IdentityOutage()


@pytest.fixture
async def entra(postgres_tls: PostgresServer, monkeypatch: pytest.MonkeyPatch,
                outage: IdentityOutage) -> AsyncIterator[EntraDatabase]:
    """A database for the identity's role; this process's azure-identity finds the stand-in endpoint.

    The endpoint tells azure-identity to keep no token of its own (`refresh_in=0`): every token
    the bot asks its credential for reaches the endpoint, so the endpoint counts the bot's fetches.
    """
    async with entra_database(postgres_tls, refresh_in=0, outage=outage) as database:
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
        clock.advance(HOUR - dt.timedelta(seconds=10))  # the token is in its last seconds: too late for a login
        await db.close()
        third = await _whoami(db)
        with pytest.raises(DBAPIError) as stale:
            await _whoami(_stale_token_database(entra, entra.identity.issued[0]))
    finally:
        await db.close()
        await password.close()

    assert first[:2] == second[:2] == third[:2] == (entra.role, True)
    assert len({first[2], second[2], third[2]}) == 3, "three connections, three logins"
    assert len(entra.identity.issued) == 2, "the first token served two logins; in its last seconds came a new one"
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


async def test_a_503_during_renewal_lets_connections_opening_at_once_log_in_with_the_valid_token(
    entra: EntraDatabase,
) -> None:
    """The token has minutes left and the endpoint answers 503: no new connection waits for azure-identity's retries.

    Before, each connection tried the renewal in turn under one lock (about 5 s each), and those
    after the third failed at the 15 s connect limit.
    """
    clock = ManualClock(dt.datetime.now(dt.UTC))
    password = EntraDatabasePassword(DefaultAzureCredential(), clock=clock)
    db = _bot_database(entra, password, pool_size=6)
    try:
        assert await db.scalar("SELECT 1") == 1
        await db.close()  # a failover: every pooled connection is opened anew
        clock.advance(dt.timedelta(minutes=56))  # renewal is due; the token is valid for 4 more minutes
        entra.outage.down = True
        results = await asyncio.gather(*(db.fetch_one("SELECT pg_backend_pid() AS pid, pg_sleep(0.2)")
                                         for _ in range(6)), return_exceptions=True)
    finally:
        entra.outage.end()
        await db.close()
        await password.close()

    failed = [repr(result) for result in results if isinstance(result, BaseException)]
    assert not failed, f"{len(failed)} of 6 new connections failed although the held token was valid: {failed}"


async def test_a_silent_identity_endpoint_during_renewal_still_lets_the_valid_token_log_in(
    entra: EntraDatabase,
) -> None:
    """An endpoint that takes the request and never answers is an outage too; before, the login waited on it until
    the 15 s connect limit failed it."""
    clock = ManualClock(dt.datetime.now(dt.UTC))
    password = EntraDatabasePassword(DefaultAzureCredential(), clock=clock)
    db = _bot_database(entra, password)
    try:
        assert await db.scalar("SELECT 1") == 1
        await db.close()  # the next statement needs a new connection (a recycle, a failover)
        clock.advance(dt.timedelta(minutes=56))
        entra.outage.silent = True
        async with asyncio.timeout(5):
            assert await db.scalar("SELECT 1") == 1
    finally:
        entra.outage.end()
        await db.close()
        await password.close()


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


async def test_an_expired_token_that_cannot_be_renewed_is_a_database_error(
    entra: EntraDatabase, outage: IdentityOutage, caplog: pytest.LogCaptureFixture
) -> None:
    """The token held has expired (an idle night) and the identity endpoint answers 503 just when a new connection
    needs one: the database is out of reach, as when the server is (the router says "probeer zo opnieuw"), not
    azure-identity's ClientAuthenticationError, which a click answered with the bot-fault banner."""
    clock = ManualClock(dt.datetime.now(dt.UTC))
    password = EntraDatabasePassword(DefaultAzureCredential(), clock=clock)
    db = _bot_database(entra, password)
    try:
        assert await db.scalar("SELECT 1") == 1
        await db.close()  # the pooled connections go (a failover, pool_recycle): the next one logs in anew
        clock.advance(HOUR + dt.timedelta(minutes=1))
        outage.down = True
        with pytest.raises(DatabaseError, match=r"^database unavailable: no access token$"):
            await db.scalar("SELECT 1")
        outage.down = False
        assert await db.scalar("SELECT 1") == 1, "the next connection tries again"
    finally:
        await db.close()
        await password.close()
    assert "no database access token" in caplog.text
    assert not any(token in caplog.text for token in entra.identity.issued)


async def test_a_typed_message_during_a_token_outage_is_answered_probeer_zo_opnieuw(
    entra: EntraDatabase, outage: IdentityOutage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    clock: ManualClock, referrer: TeamsUser,
) -> None:
    """The same moment as a referrer meets it, through the real bot: a typed `status` got no answer at all."""
    login = EntraDatabasePassword(DefaultAzureCredential())
    first = _bot_database(entra, login)
    try:
        await migrate(first)
    finally:
        await first.close()
        await login.close()
    settings = Settings.from_mapping({
        "DATABASE_URL": entra.url, "DATABASE_AUTH": "entra", "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1",
        "LOCAL_ZIP_PASSWORD": "A" * 20, "LOCAL_DRAFT_KEY": "ab" * 32, "BOT_DATA_DIR": str(tmp_path / "none"),
    })
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as bot:
        assert await bot.say(referrer, "status"), "the bot answers while it can log in"
        # An hour on (the token the bot holds has expired), a failover closes the pooled connections, and the
        # identity endpoint answers 503 just then.
        monkeypatch.setattr(database_login, "REFRESH_MARGIN_SECONDS", 7200)
        monkeypatch.setattr(database_login, "LAST_USE_SECONDS", 7200)
        outage.down = True
        await bot.services.db.engine.dispose()
        before = len(bot.connector.calls)
        response = await bot.post(referrer.message(bot.service_url, "status"))  # `say` would settle the outbox
        outage.down = False
    assert response.status == 202
    here = f"/v3/conversations/{referrer.conversation_id.split(';')[0]}"
    replies = [call.body for call in bot.connector.calls[before:]
               if call.method == "POST" and call.path.startswith(here)]
    assert "probeer zo opnieuw" in str(replies), replies
