"""Builds the password provider and the mail transport the settings ask for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.clock import Clock
from bot.config import Settings
from bot.mail_transport import MailTransport, OutboxFolderTransport
from bot.zip_passwords import LocalZipPasswordProvider, ZipPasswordProvider

Closer = Callable[[], Awaitable[None]]


def build_password_provider(settings: Settings, clock: Clock, closers: list[Closer]) -> ZipPasswordProvider:
    """Key Vault when `KEY_VAULT_URL` is set, else the embedded local password."""
    if settings.key_vault is None:
        return LocalZipPasswordProvider(
            configured=settings.local_zip_password, password_file=settings.data_dir / "zip-password.txt"
        )
    from bot.keyvault_passwords import KeyVaultZipPasswordProvider, create_secret_client, default_credential

    credential = default_credential(settings.key_vault.managed_identity_client_id)
    client = create_secret_client(
        settings.key_vault.url,
        credential,
        verify_challenge_resource=not settings.key_vault.dangerously_skip_challenge_check,
        retry_total=0,  # the provider retries (with Retry-After and a cap); no second layer underneath
    )
    provider = KeyVaultZipPasswordProvider(
        client, clock=clock, cache_ttl=settings.key_vault.cache, credential=credential
    )
    closers.append(provider.close)
    return provider


def build_mail_transport(settings: Settings, closers: list[Closer]) -> MailTransport:
    """The transport named by `MAIL_TRANSPORT`."""
    if settings.mail_transport == "smtp" and settings.smtp is not None:
        from bot.smtp_transport import SmtpTransport

        return SmtpTransport(settings.smtp)
    if settings.mail_transport == "graph" and settings.graph is not None:
        from azure.identity.aio import DefaultAzureCredential

        from bot.graph_transport import GraphMailTransport

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
