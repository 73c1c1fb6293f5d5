"""TLS towards PostgreSQL, against a real server that requires it (as Azure's Flexible Server does).

The suite's TLS server (`postgres_tls`) accepts TCP logins only over TLS and with a password; its
certificate names 127.0.0.1 and localhost and comes from a CA of its own. Every connection here goes
through the bot's own path, `open_database(DatabaseSettings(url=..., password=...))`, with the URL's
libpq words (`sslmode`, `sslrootcert`) as DATABASE_URL carries them.
"""

from __future__ import annotations

import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from sqlalchemy.exc import DBAPIError

from bot.storage.database import Database, DatabaseError, DatabaseSettings, open_database
from tests.support.postgres_server import UNNAMED_HOST, PostgresServer

#: SQLSTATE invalid_authorization_specification: pg_hba.conf turned the connection away.
REJECTED_BY_PG_HBA = "28000"


@dataclass(frozen=True)
class Login:
    """A role with a password and a database it owns, on the TLS server."""

    server: PostgresServer
    role: str
    database: str
    password: str

    def open(self, *, host: str = "127.0.0.1", sslmode: str | None = "verify-full",
             sslrootcert: Path | str | None = None) -> Database:
        """The bot's Database for this URL (a password login), as DATABASE_URL would name it."""
        secret = self.password

        async def password() -> str:
            return secret

        url = self.server.tls_url(self.role, self.database, host=host, sslmode=sslmode, sslrootcert=sslrootcert)
        return open_database(DatabaseSettings(sqlite_path=Path("/nonexistent"), url=url, password=password,
                                              pool_size=2))


@pytest.fixture(scope="module")
def login(postgres_tls: PostgresServer) -> Login:
    """One role and database for this module's tests, which only read."""
    role, password = f"tls_{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    postgres_tls.create_role(role, password)
    return Login(postgres_tls, role, postgres_tls.database_owned_by(role), password)


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """A CA that did not sign the server's certificate."""
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


async def _connection_facts(db: Database) -> dict[str, object]:
    try:
        row = await db.fetch_one("SELECT s.ssl, s.version, current_user AS role FROM pg_stat_ssl s "
                                 "WHERE s.pid = pg_backend_pid()")
    finally:
        await db.close()
    assert row is not None
    return dict(row)


async def test_verify_full_with_the_servers_ca_logs_in_over_tls(login: Login) -> None:
    facts = await _connection_facts(login.open(sslmode="verify-full"))

    assert facts["ssl"] is True and facts["role"] == login.role
    assert facts["version"] in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("sslmode", ["verify-full", None], ids=["verify-full", "sslmode-left-out"])
async def test_a_server_whose_certificate_does_not_name_the_host_is_refused(login: Login, sslmode: str | None) -> None:
    """127.0.0.2 is the same server, but its certificate names only 127.0.0.1 and localhost."""
    with pytest.raises(DatabaseError) as refused:
        await _connection_facts(login.open(host=UNNAMED_HOST, sslmode=sslmode))

    assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
    assert refused.value.__cause__.verify_code == 64  # X509_V_ERR_IP_ADDRESS_MISMATCH
    # The chain itself is fine: checking the CA alone gets in, so the name is what was refused.
    assert (await _connection_facts(login.open(host=UNNAMED_HOST, sslmode="verify-ca")))["ssl"] is True


@pytest.mark.parametrize("sslmode", ["verify-full", "verify-ca"])
async def test_a_certificate_from_another_ca_is_refused(login: Login, other_ca: Path, sslmode: str) -> None:
    with pytest.raises(DatabaseError) as refused:
        await _connection_facts(login.open(sslmode=sslmode, sslrootcert=other_ca))

    assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
    assert refused.value.__cause__.verify_code == 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY


async def test_the_system_cas_do_not_vouch_for_the_test_ca(login: Login) -> None:
    """`sslrootcert=system` (libpq 16's word) trusts the system's CAs only, not some file nearby."""
    with pytest.raises(DatabaseError) as refused:
        await _connection_facts(login.open(sslrootcert="system"))

    assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)


async def test_a_connection_without_tls_is_turned_away_by_the_server(login: Login) -> None:
    with pytest.raises(DBAPIError) as rejected:
        await _connection_facts(login.open(sslmode="disable"))

    assert getattr(rejected.value.orig, "sqlstate", None) == REJECTED_BY_PG_HBA
    assert login.password not in str(rejected.value)
