"""`python -m bot check`: one line per check, exit status, nothing sent, bounded in time."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from bot.cli.checks import run_checks
from bot.config import Settings
from bot.secrets.keyvault_passwords import KeyVaultZipPasswordProvider, create_secret_client
from tests.support.clock import ManualClock
from tests.support.databases import migrated_postgres_url, postgres_url
from tests.support.entra_login import entra_database
from tests.support.keyvault_standin import (
    MANAGED_IDENTITY_TOKEN,
    StaticTokenCredential,
    keyvault_standin,
    managed_identity_standin,
)
from tests.support.postgres_server import PostgresServer
from tests.support.smtp_server import free_port, smtp_server

ROOT = Path(__file__).resolve().parents[3]


async def test_embedded_defaults_pass(settings: Settings, clock: ManualClock) -> None:
    results = await run_checks(settings, clock)
    assert all(result.ok for result in results), [result.line() for result in results]
    names = [result.name for result in results]
    assert names[:2] == ["protocol files", "database"]
    assert any(name.startswith("zip password") for name in names) and "mail transport outbox" in names


async def test_smtp_down_and_up(tmp_path: Path, clock: ManualClock) -> None:
    with smtp_server(tls="starttls") as smtp:
        env = {"BOT_DATA_DIR": str(tmp_path), "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1",
               "SMTP_PORT": str(smtp.port), "SMTP_CA_FILE": str(smtp.ca_path), "LOCAL_ZIP_PASSWORD": "A" * 20}
        up = await run_checks(Settings.from_mapping(env), clock)
        assert all(result.ok for result in up), [result.line() for result in up]
        assert smtp.messages == [], "a check sends nothing"
        smtp.stop()
        down = await run_checks(Settings.from_mapping(env), clock)
    [failed] = [result for result in down if not result.ok]
    assert failed.name == "mail transport smtp" and failed.line().startswith("FAIL")


async def test_vault_secret_is_checked_by_name_and_version(settings: Settings, clock: ManualClock) -> None:
    async with keyvault_standin() as vault:
        vault.set_secret("zip-password-ocmw-sint-gillis-waas", "short")
        client = create_secret_client(vault.url, StaticTokenCredential(vault.token),
                                      connection_verify=str(vault.ca_path), verify_challenge_resource=False)
        provider = KeyVaultZipPasswordProvider(client, clock=clock, attempts=1)
        results = await run_checks(settings, clock, passwords=provider)
        await provider.close()
    [failed] = [result for result in results if not result.ok]
    assert "zip-password-ocmw-sint-gillis-waas" in failed.detail and "short" not in failed.detail


async def test_a_disabled_zip_password_secret_is_named_as_disabled(settings: Settings, clock: ManualClock) -> None:
    async with keyvault_standin() as vault:
        vault.set_secret("zip-password-ocmw-sint-gillis-waas", "QW3E-RT7Y-UP9A-SD2F-GH4J")
        vault.disable("zip-password-ocmw-sint-gillis-waas")
        client = create_secret_client(vault.url, StaticTokenCredential(vault.token),
                                      connection_verify=str(vault.ca_path), verify_challenge_resource=False)
        provider = KeyVaultZipPasswordProvider(client, clock=clock, attempts=1)
        results = await run_checks(settings, clock, passwords=provider)
        await provider.close()
    [failed] = [result for result in results if not result.ok]
    assert failed.name == "zip password OR-KG-NOW-OCMW-SGW-2026"
    assert "'zip-password-ocmw-sint-gillis-waas' is disabled" in failed.detail and "access denied" not in failed.detail


def test_the_command_names_an_unresolved_key_vault_reference(tmp_path: Path) -> None:
    env = {**os.environ, "BOT_DATA_DIR": str(tmp_path / "d"), "MicrosoftAppId": "00000000-0000-4000-8000-000000000001",
           "MicrosoftAppTenantId": "72f988bf-0000-4000-8000-000000000001",
           "MicrosoftAppPassword": "@Microsoft.KeyVault(VaultName=kv-vd;SecretName=bot-app-password)"}
    done = subprocess.run([sys.executable, "-m", "bot", "check"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "MicrosoftAppPassword" in done.stderr and "Key Vault reference" in done.stderr, done.stderr


async def test_an_unreachable_vault_fails_within_the_bound(settings: Settings, clock: ManualClock) -> None:
    client = create_secret_client(f"https://127.0.0.1:{free_port()}", StaticTokenCredential(),
                                  verify_challenge_resource=False, retry_total=0)
    provider = KeyVaultZipPasswordProvider(client, clock=clock, attempts=1, timeout_seconds=1)
    results = await run_checks(settings, clock, passwords=provider, seconds_per_check=3)
    await provider.close()
    assert [result.ok for result in results if result.name.startswith("zip password")] == [False]


async def test_a_broken_protocol_file_fails(tmp_path: Path, clock: ManualClock) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "x.toml").write_text('id = "x"\n')
    results = await run_checks(Settings.from_mapping({"BOT_DATA_DIR": str(tmp_path / "d"),
                                                      "PROTOCOLS_DIR": str(tmp_path / "p")}), clock)
    assert not results[0].ok and "x.toml" in results[0].detail


def test_the_command_prints_one_line_per_check_and_exits_by_result(tmp_path: Path) -> None:
    env = {**os.environ, "BOT_DATA_DIR": str(tmp_path / "d")}
    ok = subprocess.run([sys.executable, "-m", "bot", "check"], env=env, cwd=ROOT, capture_output=True, text=True,
                        timeout=60, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert all(line.startswith("OK") for line in ok.stdout.splitlines()) and len(ok.stdout.splitlines()) >= 5
    env["MAIL_TRANSPORT"] = "smtp"
    env.update({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(free_port()), "SMTP_TIMEOUT_SECONDS": "2"})
    bad = subprocess.run([sys.executable, "-m", "bot", "check"], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 1 and "FAIL mail transport smtp" in bad.stdout


async def test_teams_messages_given_up_or_waiting_too_long_fail_the_check(
    settings: Settings, clock: ManualClock
) -> None:
    from bot.delivery.chat_messages import MessageContent
    from bot.delivery.message_outbox import MessageOutbox
    from tests.support.databases import sqlite_database

    settings.data_dir.mkdir(parents=True)
    db = await sqlite_database(settings.database_path)
    messages = MessageOutbox(db)
    reference = '{"conversation": {"id": "a:1"}, "serviceUrl": "http://127.0.0.1:9"}'
    await messages.post(reference, MessageContent(text="x"), now=clock.now() - dt.timedelta(hours=25))
    [lost] = await messages.claim_due(clock.now() - dt.timedelta(hours=25), dt.timedelta(minutes=2))
    assert await messages.mark_failed(lost, clock.now(), "gave up after 30 attempts: HTTP 503")
    await messages.post(reference, MessageContent(text="y"), now=clock.now() - dt.timedelta(minutes=40))
    results = await run_checks(settings, clock)
    [teams] = [result for result in results if result.name == "teams messages"]
    assert not teams.ok
    assert teams.detail.startswith("1 given up in the last 7 days, 1 waiting longer than 15 min"), teams.detail


async def test_a_postgresql_schema_behind_fails_the_check_naming_the_command(
    postgres: PostgresServer, clock: ManualClock, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": postgres_url(postgres), "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1",
           "LOCAL_ZIP_PASSWORD": "A" * 20, "LOCAL_DRAFT_KEY": "ab" * 32, "BOT_DATA_DIR": str(tmp_path / "none")}
    results = await run_checks(Settings.from_mapping(env), clock, seconds_per_check=5)
    [database] = [result for result in results if result.name == "database"]
    assert not database.ok and "python -m bot migrate" in database.detail and "127.0.0.1" in database.detail
    assert not (tmp_path / "none").exists(), "with PostgreSQL nothing is written to the instance's disk"


async def test_a_database_that_refuses_every_write_fails_the_check(
    postgres: PostgresServer, clock: ManualClock
) -> None:
    """A failover that left the bot on a standby, or Azure making a server read-only as its storage fills up: reads
    answer, so the check said the database was fine while no click could be recorded."""
    url = await migrated_postgres_url(postgres)
    env = {"DATABASE_URL": url, "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1",
           "LOCAL_ZIP_PASSWORD": "A" * 20, "LOCAL_DRAFT_KEY": "ab" * 32}
    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    await asyncio.to_thread(postgres.psql, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    results = await run_checks(Settings.from_mapping(env), clock, seconds_per_check=5)
    [database] = [result for result in results if result.name == "database"]
    assert not database.ok, database.line()
    assert database.line() == "FAIL database: PostgreSQL on 127.0.0.1 (schema current; writes refused: read-only)"
    await asyncio.to_thread(postgres.psql, f'ALTER DATABASE "{name}" SET default_transaction_read_only = off')
    [database] = [result for result in await run_checks(Settings.from_mapping(env), clock, seconds_per_check=5)
                  if result.name == "database"]
    assert database.line() == "OK   database: PostgreSQL on 127.0.0.1 (schema current)", database.line()


async def test_an_unreachable_database_fails_within_the_time_given(clock: ManualClock, tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"postgresql://vd@127.0.0.1:{free_port()}/vd?sslmode=disable", "MAIL_TRANSPORT": "smtp",
           "SMTP_HOST": "127.0.0.1", "LOCAL_ZIP_PASSWORD": "A" * 20, "LOCAL_DRAFT_KEY": "ab" * 32}
    [database] = [result for result in await run_checks(Settings.from_mapping(env), clock, seconds_per_check=3)
                  if result.name == "database"]
    assert not database.ok and database.line().startswith("FAIL database: PostgreSQL on 127.0.0.1")
    assert database.line().endswith("ConnectionRefusedError"), database.line()  # what went wrong, not only where


async def test_migrate_and_check_log_in_to_postgresql_with_the_managed_identity(
    postgres_tls: PostgresServer, tmp_path: Path
) -> None:
    """As an operator runs them on App Service: DATABASE_AUTH=entra, verified TLS, the identity endpoint's token."""
    async with entra_database(postgres_tls) as entra:
        with smtp_server(tls="starttls") as smtp:
            env = {**entra.environment(), "DATABASE_URL": entra.url, "DATABASE_AUTH": "entra",
                   "BOT_DATA_DIR": str(tmp_path / "none"), "LOCAL_ZIP_PASSWORD": "A" * 20,
                   "LOCAL_DRAFT_KEY": "ab" * 32, "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1",
                   "SMTP_PORT": str(smtp.port), "SMTP_CA_FILE": str(smtp.ca_path)}
            migrated = await _bot_command(["migrate"], env)
            checked = await _bot_command(["check"], env)

    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK   database: PostgreSQL on 127.0.0.1 (schema current)" in checked.stdout.splitlines()
    assert len(entra.identity.issued) == 2, "each process logged in with a token of its own"
    output = migrated.stdout + migrated.stderr + checked.stdout + checked.stderr
    assert not any(secret in output for secret in [*entra.identity.issued, entra.identity.header])
    assert not (tmp_path / "none").exists()


async def _bot_command(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m bot ...` in a thread, so this event loop keeps answering for the identity stand-in."""
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bot", *arguments], env=env, cwd=ROOT,
                                   capture_output=True, text=True, timeout=60, check=False)


async def test_the_draft_key_in_key_vault_is_checked_as_serve_reads_it(tmp_path: Path) -> None:
    """`serve` reads the draft key first and stops without it: `check`, the deployment's gate, must say so."""
    async with managed_identity_standin() as identity, keyvault_standin(token=MANAGED_IDENTITY_TOKEN) as vault:
        vault.set_secret("zip-password-ocmw-sint-gillis-waas", "QW3E-RT7Y-UP9A-SD2F-GH4J")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_"))},
            "BOT_DATA_DIR": str(tmp_path / "data"), "KEY_VAULT_URL": vault.url,
            "DANGEROUSLY_SKIP_KEY_VAULT_CHALLENGE_CHECK": "1", "IDENTITY_ENDPOINT": identity.endpoint,
            "IDENTITY_HEADER": identity.header, "SSL_CERT_FILE": str(vault.ca_path),
        }

        async def check() -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bot", "check"], env=env, cwd=ROOT,
                                           capture_output=True, text=True, timeout=120, check=False)

        missing = await check()
        vault.set_secret("draft-data-key", "not a key")
        malformed = await check()
        vault.set_secret("draft-data-key", "ab" * 32)
        good = await check()
        vault.disable("draft-data-key")
        disabled = await check()
    assert missing.returncode == 1 and "FAIL draft key: Key Vault secret 'draft-data-key'" in missing.stdout, \
        missing.stdout + missing.stderr
    assert malformed.returncode == 1 and "64 hexadecimal characters" in malformed.stdout
    assert "not a key" not in malformed.stdout + malformed.stderr, "never the secret's value"
    assert good.returncode == 0 and "OK   draft key: Key Vault secret 'draft-data-key'" in good.stdout, good.stdout
    assert disabled.returncode == 1 and "FAIL draft key: Key Vault secret 'draft-data-key' (draft key) is disabled" \
        in disabled.stdout, disabled.stdout


async def test_a_data_folder_that_cannot_be_made_is_a_failed_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data folder should be")
    env = {**os.environ, "BOT_DATA_DIR": str(tmp_path / "data")}
    result = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bot", "check"], env=env, cwd=ROOT,
                                     capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "FAIL data folder" in result.stdout and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert "OK   protocol files" in result.stdout, "the other checks still report"
