"""Logging in to Azure Database for PostgreSQL with the app's managed identity: an access token as the password.

No password exists anywhere: each new connection asks for the current token, which is kept and
handed out until five minutes before it expires, then fetched anew (one fetch at a time, however
many connections open at once). A token outlives the connections made with it: PostgreSQL checks
it only at login. Should that renewal fail while the old token is still valid, the old one is
handed out (and the next connection tries again), so a short outage of the identity endpoint does
not stop new connections.
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


class EntraDatabasePassword:
    """`await password()`: a current access token for the database, fetched only when needed."""

    def __init__(self, credential: AsyncTokenCredential, *, scope: str = POSTGRES_SCOPE,
                 clock: Clock | None = None) -> None:
        self._credential = credential
        self._scope = scope
        self._clock = clock or SystemClock()
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"EntraDatabasePassword(scope={self._scope!r})"

    async def __call__(self) -> str:
        token = self._token
        if token is not None and self._seconds_left(token) > REFRESH_MARGIN_SECONDS:
            return token.token
        async with self._lock:
            token = self._token
            if token is None or self._seconds_left(token) <= REFRESH_MARGIN_SECONDS:
                token = await self._renew(token)
        return token.token

    async def close(self) -> None:
        await self._credential.close()

    async def _renew(self, old: AccessToken | None) -> AccessToken:
        try:
            token = await self._credential.get_token(self._scope)
        except Exception as error:  # the identity endpoint is down or refuses: keep a still-valid token
            if old is None or self._seconds_left(old) <= LAST_USE_SECONDS:
                raise
            logger.warning("database access token not renewed; the current one is used until it expires",
                           extra={"error": type(error).__name__, "expires_in_s": int(self._seconds_left(old))})
            return old
        self._token = token
        logger.info("database access token renewed", extra={"expires_in_s": int(self._seconds_left(token))})
        return token

    def _seconds_left(self, token: AccessToken) -> float:
        return token.expires_on - self._clock.now().timestamp()
