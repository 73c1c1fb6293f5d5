"""The real Key Vault password provider on the real async SecretClient, pointed at a vault stand-in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from bot.clock import Clock
from bot.secrets.keyvault_passwords import KeyVaultZipPasswordProvider, create_secret_client
from tests.support.keyvault_standin import KeyVaultStandIn, StaticTokenCredential


@asynccontextmanager
async def vault_provider(
    vault: KeyVaultStandIn, clock: Clock, **options: Any
) -> AsyncIterator[KeyVaultZipPasswordProvider]:
    """A provider without the SDK's own retries (the provider retries); closed with its credential afterwards."""
    credential = StaticTokenCredential(vault.token)
    client = create_secret_client(
        vault.url, credential, connection_verify=str(vault.ca_path), verify_challenge_resource=False, retry_total=0
    )
    provider = KeyVaultZipPasswordProvider(client, clock=clock, credential=credential, **options)
    try:
        yield provider
    finally:
        await provider.close()


def reads_answered(vault: KeyVaultStandIn) -> list[int | None]:
    """The statuses of the vault reads (requests with a token), in order; None while one is being answered."""
    return [seen.status for seen in vault.authenticated]


async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll `condition` for at most `seconds` of real time; fail naming `what` when it never holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:g} s: {what}")
        await asyncio.sleep(0.02)
