"""Logging in to Azure Database for PostgreSQL with the app's managed identity: an access token as the password.

No password exists anywhere: each new connection asks for the current token, which is kept and
handed out until five minutes before it expires. A token outlives the connections made with it:
PostgreSQL checks it only at login. From then on it is still handed out at once while one renewal,
shared by every connection, runs in the background within `RENEWAL_SECONDS`; a renewal that fails
is tried again after `RETRY_AFTER_FAILURE_SECONDS`, not at every connection. So an identity
endpoint that answers 503 or nothing for a while does not stop or slow new connections. Only a
connection without a usable token (none yet, or one in its last `LAST_USE_SECONDS`) waits for the
fetch, and at most `RENEWAL_SECONDS`, inside the connect limit.
"""

from __future__ import annotations

import asyncio
import logging

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential

from bot.clock import Clock, SystemClock

logger = logging.getLogger(__name__)

#: The scope of Azure Database for PostgreSQL's Entra ID authentication.
POSTGRES_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
#: A token is renewed this long before it expires.
REFRESH_MARGIN_SECONDS = 300
#: A token this close to its expiry is not handed out even when its renewal failed (a login takes a moment).
LAST_USE_SECONDS = 30
#: A fetch that has not answered in this time is given up (azure-identity's own retries of a 503 fit in it).
RENEWAL_SECONDS = 10.0
#: After a failed renewal, the next is started no sooner than this (the held token serves meanwhile).
RETRY_AFTER_FAILURE_SECONDS = 15.0


class EntraDatabasePassword:
    """`await password()`: a current access token for the database, fetched only when needed."""

    def __init__(self, credential: AsyncTokenCredential, *, scope: str = POSTGRES_SCOPE,
                 clock: Clock | None = None) -> None:
        self._credential = credential
        self._scope = scope
        self._clock = clock or SystemClock()
        self._token: AccessToken | None = None
        self._fetch: asyncio.Task[AccessToken] | None = None
        self._next_renewal = 0.0  # the clock's timestamp before which a failed renewal is not tried again

    def __repr__(self) -> str:
        return f"EntraDatabasePassword(scope={self._scope!r})"

    async def __call__(self) -> str:
        token = self._token
        if token is not None and self._seconds_left(token) > LAST_USE_SECONDS:
            if self._seconds_left(token) <= REFRESH_MARGIN_SECONDS and self._now() >= self._next_renewal:
                self._shared_fetch()
            return token.token
        # A connection that gives up (its connect limit) leaves the fetch to the others.
        return (await asyncio.shield(self._shared_fetch())).token

    async def close(self) -> None:
        fetch = self._fetch
        if fetch is not None:
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
        await self._credential.close()

    def _shared_fetch(self) -> asyncio.Task[AccessToken]:
        """The running fetch, or a new one: one request to the identity endpoint for every connection."""
        fetch = self._fetch
        if fetch is None or fetch.done():  # a finished one is forgotten a moment later
            fetch = asyncio.create_task(self._fetch_token(), name="database-access-token")
            fetch.add_done_callback(self._forget_fetch)
            self._fetch = fetch
        return fetch

    def _forget_fetch(self, fetch: asyncio.Task[AccessToken]) -> None:
        if self._fetch is fetch:
            self._fetch = None
        if not fetch.cancelled():
            fetch.exception()  # retrieved: a failure was logged here, even when no connection waited for it

    async def _fetch_token(self) -> AccessToken:
        try:
            async with asyncio.timeout(RENEWAL_SECONDS):
                token = await self._credential.get_token(self._scope)
        except Exception as error:  # the identity endpoint is down, silent or refuses
            self._next_renewal = self._now() + RETRY_AFTER_FAILURE_SECONDS
            old = self._token
            if old is not None and self._seconds_left(old) > LAST_USE_SECONDS:
                logger.warning("database access token not renewed; the current one is used until it expires",
                               extra={"error": type(error).__name__, "expires_in_s": int(self._seconds_left(old))})
            else:
                logger.warning("no database access token could be fetched", extra={"error": type(error).__name__})
            raise
        self._token = token
        logger.info("database access token renewed", extra={"expires_in_s": int(self._seconds_left(token))})
        return token

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _seconds_left(self, token: AccessToken) -> float:
        return token.expires_on - self._now()
