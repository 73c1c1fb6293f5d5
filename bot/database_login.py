"""Logging in to Azure Database for PostgreSQL with the app's managed identity: an access token as the password.

No password exists anywhere: each new connection asks for the current token, which is kept and
handed out until five minutes before it expires, then fetched anew (one fetch at a time, however
many connections open at once). A token outlives the connections made with it: PostgreSQL checks
it only at login.
"""

from __future__ import annotations

import asyncio
import logging
import time

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential

logger = logging.getLogger(__name__)

#: The scope of Azure Database for PostgreSQL's Entra ID authentication.
POSTGRES_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
#: A token is renewed this long before it expires.
REFRESH_MARGIN_SECONDS = 300


class EntraDatabasePassword:
    """`await password()`: a current access token for the database, fetched only when needed."""

    def __init__(self, credential: AsyncTokenCredential, *, scope: str = POSTGRES_SCOPE) -> None:
        self._credential = credential
        self._scope = scope
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> str:
        token = self._token
        if token is not None and token.expires_on - REFRESH_MARGIN_SECONDS > time.time():
            return token.token
        async with self._lock:
            token = self._token
            if token is None or token.expires_on - REFRESH_MARGIN_SECONDS <= time.time():
                token = await self._credential.get_token(self._scope)
                self._token = token
                logger.info("database access token renewed",
                            extra={"expires_in_s": int(token.expires_on - time.time())})
        return token.token

    async def close(self) -> None:
        await self._credential.close()
