"""Settings: embedded defaults, strict parsing, errors that say how to fix them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, Settings


def test_embedded_defaults() -> None:
    settings = Settings.from_mapping({})
    assert (settings.host, settings.port, settings.mail_transport) == ("127.0.0.1", 3978, "outbox")
    assert settings.data_dir == Path(".data") and not settings.identity.auth_enabled
    assert settings.draft_ttl.total_seconds() == 1800


def test_values_from_the_environment() -> None:
    settings = Settings.from_mapping(
        {"HOST": "0.0.0.0", "PORT": "8080", "BOT_DATA_DIR": "/tmp/x", "MicrosoftAppId": "abc",  # noqa: S104
         "MicrosoftAppPassword": "very-secret", "LOCAL_ZIP_PASSWORD": "ABCDEFGHJKLMNPQR"}
    )
    assert settings.port == 8080 and settings.identity.auth_enabled
    assert "very-secret" not in repr(settings) and "ABCDEFGHJKLMNPQR" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"MAIL_TRANSPORT": "pigeon"}, "MAIL_TRANSPORT"),
        ({"MAIL_FROM": "nobody"}, "MAIL_FROM"),
        ({"BOT_TIMEZONE": "Mars/Olympus"}, "BOT_TIMEZONE"),
        ({"MicrosoftAppType": "Whatever"}, "MicrosoftAppType"),
        ({"DRAFT_TTL_MINUTES": "0"}, "DRAFT_TTL_MINUTES"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_mapping(env)


def test_smtp_settings() -> None:
    settings = Settings.from_mapping({"MAIL_TRANSPORT": "smtp", "SMTP_HOST": "relay.example.be",
                                      "SMTP_USERNAME": "u", "SMTP_PASSWORD": "geheim-wachtwoord"})
    assert settings.smtp is not None and settings.smtp.port == 587 and settings.smtp.tls == "starttls"
    assert "geheim-wachtwoord" not in repr(settings)
    implicit = Settings.from_mapping(
        {"MAIL_TRANSPORT": "smtp", "SMTP_HOST": "relay.example.be", "SMTP_TLS": "implicit"}
    )
    assert implicit.smtp is not None and implicit.smtp.port == 465


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"MAIL_TRANSPORT": "smtp"}, "SMTP_HOST"),
        ({"MAIL_TRANSPORT": "smtp", "SMTP_HOST": "relay.example.be", "SMTP_TLS": "none",
          "SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK": "1"}, "SMTP_TLS=none"),
        ({"MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_TLS": "none"}, "SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK"),
        ({"MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_TLS": "none",
          "SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK": "maybe"}, "SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK"),
        ({"MAIL_TRANSPORT": "smtp", "SMTP_HOST": "h", "SMTP_USERNAME": "u"}, "SMTP_PASSWORD"),
        ({"MAIL_TRANSPORT": "smtp", "SMTP_HOST": "h", "SMTP_CA_FILE": "/nonexistent.pem"}, "SMTP_CA_FILE"),
        ({"KEY_VAULT_URL": "http://vault"}, "KEY_VAULT_URL"),
        ({"MAIL_TRANSPORT": "graph", "GRAPH_BASE_URL": "http://graph"}, "GRAPH_BASE_URL"),
    ],
)
def test_unsafe_or_incomplete_delivery_settings_are_refused(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_mapping(env)


def test_plaintext_smtp_only_on_loopback_with_the_named_switch() -> None:
    settings = Settings.from_mapping({"MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_TLS": "none",
                                      "SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK": "1"})
    assert settings.smtp is not None and settings.smtp.port == 25


def test_key_vault_settings() -> None:
    settings = Settings.from_mapping({"KEY_VAULT_URL": "https://kv.vault.azure.net", "AZURE_CLIENT_ID": "cid",
                                      "KEY_VAULT_CACHE_MINUTES": "5"})
    assert settings.key_vault is not None and settings.key_vault.cache.total_seconds() == 300
    assert settings.key_vault.managed_identity_client_id == "cid"
    assert not settings.key_vault.dangerously_skip_challenge_check
