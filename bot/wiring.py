"""Builds the password provider, the mail transport and the directory lookup the settings ask for."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from azure.core.credentials_async import AsyncTokenCredential

from bot.clock import Clock, SystemClock
from bot.config import Settings
from bot.core.metrics import Metrics
from bot.delivery.mail_delivery import SEND_SHARE_OF_LEASE, RetryPolicy
from bot.delivery.mail_transport import MailTransport, OutboxFolderTransport
from bot.referral.graph_membership import GraphMembershipChecker
from bot.referral.referrers import MembershipChecker
from bot.secrets.zip_passwords import LocalZipPasswordProvider, ZipPasswordProvider
from bot.storage.database import Database, DatabaseSettings, DatabaseUnreachable, open_database

if TYPE_CHECKING:
    from azure.keyvault.secrets import KeyVaultSecret
    from azure.keyvault.secrets.aio import SecretClient

logger = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[None]]
T = TypeVar("T")
#: At start, what the bot cannot serve without (the draft key, the database's schema) while it is out of reach
#: (a failover, a restart, throttling): tried again after about 1 s, doubling to 10 s, or after what
#: Retry-After asks (at most 10 s), with jitter. App Service waits 230 s for a container to start.
START_RETRY = RetryPolicy(initial=dt.timedelta(seconds=1), maximum=dt.timedelta(seconds=10))
#: One read of the draft key (with the SDK's own retries when it has them).
DRAFT_KEY_READ_SECONDS = 30.0


def build_database(settings: Settings, closers: list[Closer], *, read_only: bool = False,
                   application_name: str | None = None) -> Database:
    """The database the settings name: the embedded SQLite file, or PostgreSQL (with Entra ID when asked), its
    sessions named `application_name`.

    The caller closes it (`Database.close`) after everything else that may still use it.
    """
    password = None
    if settings.database.auth == "entra":
        from bot.secrets.database_login import EntraDatabasePassword
        from bot.secrets.keyvault_passwords import default_credential

        login = EntraDatabasePassword(default_credential(settings.database.managed_identity_client_id))
        closers.append(login.close)
        password = login
    db = open_database(DatabaseSettings(sqlite_path=settings.database_path, url=settings.database.url,
                                        password=password, pool_size=settings.database.pool_size,
                                        read_only=read_only, application_name=application_name))
    return db


async def open_database_for_command(settings: Settings, closers: list[Closer]) -> Database:
    """The database for a command that writes (`link-ocmw`, `breach-report`): its schema must be current.

    The embedded SQLite file is migrated as `serve` would; PostgreSQL must have been migrated.
    """
    from bot.storage.schema_migration import require_current_schema

    db = build_database(settings, closers)
    try:
        await require_current_schema(db, migrate_if_behind=not settings.database.is_postgres)
    except BaseException:
        await db.close()
        raise
    return db


def build_password_provider(settings: Settings, clock: Clock, closers: list[Closer],
                            metrics: Metrics | None = None) -> ZipPasswordProvider:
    """Key Vault when `KEY_VAULT_URL` is set, else the embedded local password."""
    if settings.key_vault is None:
        return LocalZipPasswordProvider(
            configured=settings.local_zip_password, password_file=settings.data_dir / "zip-password.txt"
        )
    from bot.secrets.keyvault_passwords import KeyVaultZipPasswordProvider, create_secret_client, default_credential

    credential = default_credential(settings.key_vault.managed_identity_client_id)
    client = create_secret_client(
        settings.key_vault.url,
        credential,
        verify_challenge_resource=not settings.key_vault.dangerously_skip_challenge_check,
        retry_total=0,  # the provider retries (with Retry-After and a cap); no second layer underneath
    )
    provider = KeyVaultZipPasswordProvider(
        client, clock=clock, cache_ttl=settings.key_vault.cache, credential=credential, metrics=metrics
    )
    closers.append(provider.close)
    return provider


def build_mail_transport(settings: Settings, closers: list[Closer]) -> MailTransport:
    """The transport named by `MAIL_TRANSPORT`."""
    if settings.mail_transport == "smtp" and settings.smtp is not None:
        from bot.delivery.smtp_transport import SmtpTransport

        # The reply to a message's end may take RFC 5321's 10 minutes; the worker cuts a send off within its lease.
        send_bound = settings.delivery.lease.total_seconds() * SEND_SHARE_OF_LEASE
        final_reply_seconds = min(settings.smtp.final_reply_seconds, send_bound)
        return SmtpTransport(dataclasses.replace(settings.smtp, final_reply_seconds=final_reply_seconds))
    if settings.mail_transport == "graph" and settings.graph is not None:
        from azure.identity.aio import DefaultAzureCredential

        from bot.delivery.graph_transport import GraphMailTransport

        credential = DefaultAzureCredential()
        transport = GraphMailTransport(
            credential,
            sender=settings.mail_from,
            base_url=settings.graph.base_url,
            timeout_seconds=settings.graph.timeout_seconds,
        )
        closers.append(transport.close)
        closers.append(credential.close)
        return transport
    return OutboxFolderTransport(settings.outbox_dir)


def build_membership_checker(settings: Settings, closers: list[Closer]) -> MembershipChecker:
    """Microsoft Graph for referrers' groups and teams, with the same identity as the rest of the bot."""
    checker = _GraphOnFirstUse(settings.membership.base_url)
    closers.append(checker.close)
    return checker


class _GraphOnFirstUse:
    """Builds the credential and the Graph client when a protocol that lists groups or teams is first asked about.

    A bot whose protocols list only object ids (or nobody, in development) never makes either, so
    `make run` neither logs nor probes anything about an Azure identity it does not have.
    """

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._checker: GraphMembershipChecker | None = None
        self._credential: AsyncTokenCredential | None = None

    async def member_of(self, user_id: str, group_ids: Sequence[str]) -> frozenset[str]:
        if self._checker is None:
            from azure.identity.aio import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
            self._checker = GraphMembershipChecker(self._credential, base_url=self._base_url)
        return await self._checker.member_of(user_id, group_ids)

    async def close(self) -> None:
        if self._checker is not None:
            await self._checker.close()
        if self._credential is not None:
            await self._credential.close()


async def draft_key_from_key_vault(settings: Settings, *, wait_out_outages: bool = False) -> bytes:
    """The 256-bit key that seals drafts at rest, from the Key Vault secret `DRAFT_KEY_SECRET` (64 hex).

    Read once at start: drafts live 30 minutes, so a rotation takes effect at the next restart and
    only drafts in progress at that moment are lost (their users get the "expired" card).
    `check` reads once (with the SDK's own retries). `serve` waits out an outage (`wait_out_outages`):
    a vault that answers 408, 429 or 5xx, gives no token yet, cannot be reached or does not answer is
    read again (`START_RETRY`, one log line per attempt) until it answers, so an instance App Service
    starts during a failover waits for it instead of stopping and being started again and again. Only
    a secret that is missing, refused or malformed stops the start (`DraftKeyError`).
    """
    from bot.secrets.keyvault_passwords import create_secret_client, default_credential

    if settings.key_vault is None:
        raise ValueError("no Key Vault configured")
    credential = default_credential(settings.key_vault.managed_identity_client_id)
    client = create_secret_client(
        settings.key_vault.url,
        credential,
        verify_challenge_resource=not settings.key_vault.dangerously_skip_challenge_check,
        retry_total=0 if wait_out_outages else None,  # when waiting, this loop's retries are the only ones
    )
    name = settings.key_vault.draft_key_secret
    try:
        secret = await _read_draft_key(client, name, wait_out_outages=wait_out_outages)
    finally:
        await client.close()
        await credential.close()
    try:
        key = bytes.fromhex((secret.value or "").strip())
    except ValueError as error:
        raise DraftKeyError(f"Key Vault secret '{name}' must hold 64 hexadecimal characters") from error
    if len(key) != 32:
        raise DraftKeyError(f"Key Vault secret '{name}' must hold 64 hexadecimal characters (a 256-bit key)")
    return key


async def _read_draft_key(client: SecretClient, name: str, *, wait_out_outages: bool) -> KeyVaultSecret:
    """The secret; `DraftKeyError` at the first failure, or (`wait_out_outages`) at the first that is not transient."""
    from azure.core.exceptions import AzureError

    from bot.secrets.keyvault_passwords import TransientReadFailure, refusal_text, transient_read_failure

    waiting = StartUpWait(f"Key Vault secret '{name}' (draft key)")
    while True:
        try:
            async with asyncio.timeout(DRAFT_KEY_READ_SECONDS):
                return await client.get_secret(name)
        except TimeoutError as error:
            failure: TransientReadFailure | None = TransientReadFailure(
                f"no answer within {DRAFT_KEY_READ_SECONDS:g} s")
            problem: Exception = error
        except AzureError as error:
            failure, problem = transient_read_failure(error, client.vault_url, SystemClock().now()), error
        if failure is None and isinstance(problem, AzureError):  # the vault said no: why, and what to fix
            raise DraftKeyError(refusal_text(name, problem, role="draft key")) from problem
        if failure is None or not wait_out_outages:
            raise DraftKeyError(
                f"Key Vault secret '{name}' (draft key) could not be read: {type(problem).__name__}") from problem
        await waiting.pause(failure.reason, failure.retry_after)


class StartUpWait:
    """The pauses of a start that waits for something it cannot serve without (`START_RETRY`), one log line each."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._attempts = 0
        self._rng = secrets.SystemRandom()

    async def pause(self, reason: str, retry_after: float | None = None) -> None:
        """Log why the last attempt failed and wait before the next (`retry_after`: what the other side asked)."""
        self._attempts += 1
        wait = START_RETRY.delay(self._attempts, retry_after, self._rng).total_seconds()
        logger.warning("start-up waits for %s: %s (attempt %d); trying again in %.1f s", self._what, reason,
                       self._attempts, wait)
        await asyncio.sleep(wait)


async def once_database_reachable(attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt`'s result, tried again (`StartUpWait`) while the database cannot be reached: a failover, a restart
    of the server, the network not up yet. Any other failure ends it (a schema behind or ahead, a refusal)."""
    waiting = StartUpWait("the database")
    while True:
        try:
            return await attempt()
        except DatabaseUnreachable as error:
            await waiting.pause(str(error))


class DraftKeyError(Exception):
    """The draft key is missing or malformed; the message names the secret, never its value."""

