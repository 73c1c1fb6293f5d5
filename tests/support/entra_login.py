"""Entra ID login to the suite's TLS server, as Azure does it: the managed identity's token is the password.

Azure Database for PostgreSQL lets the managed identity's role log in with a current Entra ID access
token. Here the App Service managed-identity stand-in hands out a new token for every request and
first makes it the role's password (ALTER ROLE, as the superuser through the unix socket): a login
with the newest token works, one with an older token fails, as it would once that token expired.
The real azure-identity credential (`DefaultAzureCredential`) finds the stand-in through
IDENTITY_ENDPOINT and IDENTITY_HEADER, as it finds App Service's endpoint. `EntraDatabase.outage`
makes the endpoint answer 503, or take requests and say nothing, until the test ends it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from tests.support.keyvault_standin import IdentityOutage, ManagedIdentityStandIn, managed_identity_standin
from tests.support.postgres_server import PostgresServer

#: Environment variables that would point azure-identity at some other identity.
AZURE_IDENTITY_PREFIXES = ("AZURE_", "IDENTITY_", "MSI_", "IMDS_")


@dataclass(frozen=True)
class EntraDatabase:
    """A database owned by `role`, which logs in with the stand-in's tokens; `url` as DATABASE_URL has it."""

    server: PostgresServer
    role: str
    name: str
    identity: ManagedIdentityStandIn
    outage: IdentityOutage = field(default_factory=IdentityOutage)

    @property
    def url(self) -> str:
        return self.server.tls_url(self.role, self.name)

    def environment(self) -> dict[str, str]:
        """This process's environment without any Azure identity setting, pointed at the stand-in."""
        kept = {name: value for name, value in os.environ.items() if not name.startswith(AZURE_IDENTITY_PREFIXES)}
        return {**kept, "IDENTITY_ENDPOINT": self.identity.endpoint, "IDENTITY_HEADER": self.identity.header}

    def use_in_this_process(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Set this process's environment as `environment()` says (before a credential is built)."""
        for name in os.environ:
            if name.startswith(AZURE_IDENTITY_PREFIXES):
                monkeypatch.delenv(name)
        monkeypatch.setenv("IDENTITY_ENDPOINT", self.identity.endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", self.identity.header)


@asynccontextmanager
async def entra_database(server: PostgresServer, *, refresh_in: int | None = None,
                         outage: IdentityOutage | None = None) -> AsyncIterator[EntraDatabase]:
    """A new role for the managed identity (no known password until a token is issued) and a database it owns."""
    role = f"identity_{secrets.token_hex(4)}"
    server.create_role(role, secrets.token_urlsafe(32))
    name = server.database_owned_by(role)
    outage = outage or IdentityOutage()

    async def accept(token: str) -> None:
        await outage.before_issue(token)
        await asyncio.to_thread(server.set_password, role, token)

    async with managed_identity_standin(fresh_tokens=True, refresh_in=refresh_in, on_issue=accept) as identity:
        try:
            yield EntraDatabase(server, role, name, identity, outage)
        finally:
            outage.end()
