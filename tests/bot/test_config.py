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
    assert settings.sweep_interval.total_seconds() == 60
    assert settings.turns_at_once == 8


def test_values_from_the_environment() -> None:
    settings = Settings.from_mapping(
        {"HOST": "0.0.0.0", "PORT": "8080", "BOT_DATA_DIR": "/tmp/x", "MicrosoftAppId": "abc",  # noqa: S104
         "MicrosoftAppPassword": "very-secret", "MicrosoftAppTenantId": "72f988bf-0000-4000-8000-000000000001",
         "LOCAL_ZIP_PASSWORD": "ABCDEFGHJKLMNPQR", "SWEEP_INTERVAL_SECONDS": "1",
         "TURNS_AT_ONCE": "3"}
    )
    assert settings.port == 8080 and settings.identity.auth_enabled and settings.turns_at_once == 3
    assert settings.sweep_interval.total_seconds() == 1
    assert "very-secret" not in repr(settings) and "ABCDEFGHJKLMNPQR" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"MAIL_TRANSPORT": "pigeon"}, "MAIL_TRANSPORT"),
        ({"MAIL_FROM": "nobody"}, "MAIL_FROM"),
        ({"MAIL_FROM": "döorverwijzing@opgroeien.be"}, "MAIL_FROM=.*before the @.*SMTPUTF8"),
        ({"BOT_TIMEZONE": "Mars/Olympus"}, "BOT_TIMEZONE"),
        ({"MicrosoftAppType": "Whatever"}, "MicrosoftAppType"),
        ({"DRAFT_TTL_MINUTES": "0"}, "DRAFT_TTL_MINUTES"),
        ({"SWEEP_INTERVAL_SECONDS": "0"}, "SWEEP_INTERVAL_SECONDS"),
        ({"TURNS_AT_ONCE": "0"}, "TURNS_AT_ONCE"),
        ({"TURNS_AT_ONCE": "many"}, "TURNS_AT_ONCE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_mapping(env)



def test_mail_from_with_a_non_ascii_domain_is_kept_in_its_ascii_form() -> None:
    settings = Settings.from_mapping({"MAIL_FROM": "doorverwijzing@öpgroeien.be"})
    assert settings.mail_from == "doorverwijzing@xn--pgroeien-m4a.be"

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


#: What an Azure deployment sets (infra/modules/webapp.bicep): everything from Key Vault, mail via Graph.
PRODUCTION_DATABASE = "postgresql://vd-prod-id@vd-prod-pg.postgres.database.azure.com:5432/veilig_doorverwijzen"
PRODUCTION = {
    "BOT_ENV": "production",
    "MicrosoftAppId": "00000000-0000-4000-8000-000000000001",
    "MicrosoftAppType": "UserAssignedMSI",
    "MicrosoftAppTenantId": "72f988bf-0000-4000-8000-000000000001",
    "REFERRER_TENANT_IDS": "72f988bf-0000-4000-8000-000000000001",
    "OCMW_TENANT_IDS": "0c3c0c3c-0000-4000-8000-000000000002",
    "KEY_VAULT_URL": "https://kv-vd.vault.azure.net/",
    "MAIL_TRANSPORT": "graph",
    "DATABASE_URL": PRODUCTION_DATABASE,
    "DATABASE_AUTH": "entra",
}


def test_production_with_everything_from_key_vault_starts() -> None:
    settings = Settings.from_mapping(PRODUCTION)
    assert settings.environment == "production" and settings.production_refusals == []
    assert settings.ocmw_channels.tenant_ids == {"0c3c0c3c-0000-4000-8000-000000000002"}


@pytest.mark.parametrize(
    ("change", "named", "fix"),
    [
        ({"MAIL_TRANSPORT": "outbox"}, "MAIL_TRANSPORT=outbox", "set MAIL_TRANSPORT=graph"),
        ({"MAIL_TRANSPORT": None}, "MAIL_TRANSPORT=outbox", "set MAIL_TRANSPORT=graph"),
        ({"KEY_VAULT_URL": None}, "KEY_VAULT_URL unset", "set KEY_VAULT_URL=https://"),
        ({"LOCAL_ZIP_PASSWORD": "ABCDEFGHJKLMNPQRSTUVWXYZ"}, "LOCAL_ZIP_PASSWORD", "remove LOCAL_ZIP_PASSWORD"),
        ({"OCMW_TENANT_IDS": None}, "OCMW_TENANT_IDS empty", "set OCMW_TENANT_IDS"),
        ({"REFERRER_TENANT_IDS": None}, "REFERRER_TENANT_IDS empty", "set REFERRER_TENANT_IDS"),
        ({"MicrosoftAppId": None}, "MicrosoftAppId empty", "set MicrosoftAppId"),
        ({"DANGEROUSLY_SKIP_KEY_VAULT_CHALLENGE_CHECK": "1"}, "DANGEROUSLY_SKIP_KEY_VAULT_CHALLENGE_CHECK",
         "remove DANGEROUSLY_SKIP_KEY_VAULT_CHALLENGE_CHECK"),
        ({"MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_TLS": "none",
          "SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK": "1"}, "SMTP_TLS=none", "use SMTP_TLS=starttls"),
        ({"DATABASE_URL": None, "DATABASE_AUTH": None}, "SQLite file on this instance's disk", "set DATABASE_URL="),
        ({"DATABASE_URL": PRODUCTION_DATABASE + "?sslmode=require"}, "sslmode=require", "remove sslmode"),
        ({"LOCAL_DRAFT_KEY": "ab" * 32}, "LOCAL_DRAFT_KEY", "remove LOCAL_DRAFT_KEY"),
    ],
)
def test_production_refuses_each_weakening_naming_the_setting_and_its_fix(
    change: dict[str, str | None], named: str, fix: str
) -> None:
    env = {name: value for name, value in {**PRODUCTION, **change}.items() if value is not None}
    with pytest.raises(ConfigError) as raised:
        Settings.from_mapping(env)
    message = str(raised.value)
    assert "BOT_ENV=production" in message and named in message and fix in message
    assert "BOT_ENV=development" in message, "says how to run locally instead"
    try:
        development = Settings.from_mapping({**env, "BOT_ENV": "development"})
    except ConfigError as refused:  # several instances cannot share a folder's mail or secrets, in any mode
        assert "MAIL_TRANSPORT=outbox" in named or "KEY_VAULT_URL" in named
        assert "DATABASE_URL" in str(refused) and ("MAIL_TRANSPORT" in str(refused) or "KEY_VAULT_URL" in str(refused))
        return
    [refusal] = development.production_refusals
    assert named in refusal and fix in refusal


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", ""), ("https://vd.example.be/", "https://vd.example.be"), ("https://vd.example.be/bot", "https://vd.example.be/bot"),
     ("http://127.0.0.1:3978", "http://127.0.0.1:3978"), ("http://localhost:3978/", "http://localhost:3978")],
)
def test_the_public_base_url_is_https_or_local(value: str, expected: str) -> None:
    assert Settings.from_mapping({"PUBLIC_BASE_URL": value}).public_base_url == expected


@pytest.mark.parametrize("value", ["http://vd.example.be", "vd.example.be", "ftp://vd.example.be", "https://",
                                   "https://user:pw@vd.example.be", "https://vd.example.be/?x=1",
                                   "https://vd.example.be/#top", "javascript:alert(1)"])
def test_a_bad_public_base_url_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
        Settings.from_mapping({"PUBLIC_BASE_URL": value})


def test_production_takes_an_https_public_base_url_and_refuses_a_local_one() -> None:
    assert Settings.from_mapping({**PRODUCTION, "PUBLIC_BASE_URL": "https://vd.example.be"}).production_refusals == []
    with pytest.raises(ConfigError, match="set PUBLIC_BASE_URL=https://"):
        Settings.from_mapping({**PRODUCTION, "PUBLIC_BASE_URL": "http://127.0.0.1:3978"})


def test_the_draft_key_without_key_vault_is_named_too() -> None:
    embedded = {name: value for name, value in PRODUCTION.items() if not name.startswith("DATABASE_")}
    [refusal, sqlite] = Settings.from_mapping({**embedded, "BOT_ENV": "development", "KEY_VAULT_URL": ""}
                                              ).production_refusals
    assert "ZIP password" in refusal and "draft key" in refusal and "files in BOT_DATA_DIR" in refusal
    assert "DATABASE_URL" in sqlite


@pytest.mark.parametrize(("env", "problem"), [
    ({"DATABASE_URL": "mysql://x@h/db"}, "postgresql://"),
    ({"DATABASE_URL": "postgresql://x@h"}, "postgresql://"),
    ({"DATABASE_URL": "postgresql://x@h/db?sslmode=prefer"}, "sslmode=prefer"),
    ({"DATABASE_AUTH": "entra"}, "needs DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://x:secret@h/db", "DATABASE_AUTH": "entra"}, "remove the password"),
    ({"DATABASE_URL": "postgresql://x@h/db?sslmode=disable", "DATABASE_AUTH": "entra"}, "needs TLS"),
    ({"DATABASE_URL": "postgresql://x@h/db", "MAIL_TRANSPORT": "outbox", "LOCAL_ZIP_PASSWORD": "A" * 24,
      "LOCAL_DRAFT_KEY": "ab" * 32}, "MAIL_TRANSPORT=outbox"),
    ({"DATABASE_URL": "postgresql://x@h/db", "MAIL_TRANSPORT": "graph", "LOCAL_ZIP_PASSWORD": "A" * 24},
     "LOCAL_DRAFT_KEY"),
    ({"LOCAL_DRAFT_KEY": "not hex"}, "64 hexadecimal"),
])
def test_database_settings_are_checked_naming_the_fix(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Settings.from_mapping(env)


def test_a_local_run_on_postgresql_takes_its_secrets_from_the_environment() -> None:
    settings = Settings.from_mapping({"DATABASE_URL": "postgresql://vd@127.0.0.1:5432/vd?sslmode=disable",
                                      "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "relay.example.be",
                                      "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD", "LOCAL_DRAFT_KEY": "ab" * 32})
    assert settings.database.is_postgres and settings.database.tls_mode == "disable"
    assert settings.local_draft_key == bytes.fromhex("ab" * 32)
    assert "vd@127.0.0.1" not in repr(settings), "the URL may hold a password: never in a repr"


def test_ocmw_tenant_ids_must_be_guids() -> None:
    with pytest.raises(ConfigError, match="OCMW_TENANT_IDS"):
        Settings.from_mapping({"OCMW_TENANT_IDS": "ocmw-sint-gillis"})
    settings = Settings.from_mapping({"OCMW_TENANT_IDS": " 0C3C0C3C-0000-4000-8000-000000000002 ,"})
    assert settings.ocmw_channels.tenant_ids == {"0c3c0c3c-0000-4000-8000-000000000002"}


def test_team_or_channel_ids_are_read_without_the_spaces_around_them() -> None:
    """A space after a comma ("19:a@thread.tacv2, 19:b@thread.tacv2") made that id match no conversation."""
    settings = Settings.from_mapping({"REFERRER_TEAM_OR_CHANNEL_IDS": " 19:a@thread.tacv2, 19:b@thread.tacv2 ,"})
    assert settings.referrers.team_or_channel_ids == {"19:a@thread.tacv2", "19:b@thread.tacv2"}


def test_the_public_base_url_is_an_https_address_without_a_trailing_slash() -> None:
    assert Settings.from_mapping({}).public_base_url == ""
    settings = Settings.from_mapping({"PUBLIC_BASE_URL": "https://veilig-doorverwijzen.azurewebsites.net/"})
    assert settings.public_base_url == "https://veilig-doorverwijzen.azurewebsites.net"


@pytest.mark.parametrize("url", ["http://bot.example.be", "bot.example.be", "https://", "https://bot.example.be/?x=1",
                                 "https://user@bot.example.be", "https://bot.example.be/#top"])
def test_a_public_base_url_that_would_make_bad_links_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
        Settings.from_mapping({"PUBLIC_BASE_URL": url})


def test_referrers_group_membership_uses_graph_and_keeps_answers_ten_minutes_by_default() -> None:
    default = Settings.from_mapping({})
    assert default.membership.base_url == "https://graph.microsoft.com"
    assert default.membership.cache.total_seconds() == 600
    settings = Settings.from_mapping({"GRAPH_BASE_URL": "https://graph.example/",
                                      "REFERRER_MEMBERSHIP_CACHE_MINUTES": "0"})
    assert settings.membership.base_url == "https://graph.example" and not settings.membership.cache
    for wrong in ({"GRAPH_BASE_URL": "http://graph"}, {"REFERRER_MEMBERSHIP_CACHE_MINUTES": "-1"}):
        with pytest.raises(ConfigError, match=next(iter(wrong))):
            Settings.from_mapping(wrong)


# -- what App Service hands over when it could not resolve a Key Vault reference --------------------

UNRESOLVED = "@Microsoft.KeyVault(VaultName=kv-vd;SecretName=bot-app-password)"
UNRESOLVED_BY_URI = "@Microsoft.KeyVault(SecretUri=https://kv-vd.vault.azure.net/secrets/smtp-password/)"


@pytest.mark.parametrize(
    ("name", "value", "extra"),
    [
        ("MicrosoftAppPassword", UNRESOLVED, {"MicrosoftAppId": "00000000-0000-4000-8000-000000000001",
                                              "MicrosoftAppTenantId": "72f988bf-0000-4000-8000-000000000001"}),
        ("SMTP_PASSWORD", UNRESOLVED_BY_URI, {"MAIL_TRANSPORT": "smtp", "SMTP_HOST": "relay.example.be",
                                              "SMTP_USERNAME": "u"}),
        ("LOCAL_ZIP_PASSWORD", UNRESOLVED_BY_URI.lower(), {}),
        ("APPLICATIONINSIGHTS_CONNECTION_STRING", "  " + UNRESOLVED, {}),
        ("DATABASE_URL", UNRESOLVED, {"DATABASE_AUTH": "entra"}),
    ],
)
def test_an_unresolved_key_vault_reference_is_refused_saying_what_to_check(
    name: str, value: str, extra: dict[str, str]
) -> None:
    """Taken as the value, the reference's text would be the bot's password: Teams would refuse every reply."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_mapping({**extra, name: value})
    message = str(raised.value)
    assert name in message and "Key Vault reference" in message and "not resolved" in message
    assert "managed identity" in message and "syntax" in message
    assert "bot-app-password" not in message and "smtp-password" not in message, "the setting's value is not echoed"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MicrosoftAppId": "00000000-0000-4000-8000-000000000001",
          "MicrosoftAppTenantId": "72f988bf-0000-4000-8000-000000000001"}, "MicrosoftAppPassword"),
        ({"MicrosoftAppId": "00000000-0000-4000-8000-000000000001", "MicrosoftAppType": "SingleTenant",
          "MicrosoftAppPassword": "very-secret"}, "MicrosoftAppTenantId"),
        ({"MicrosoftAppId": "00000000-0000-4000-8000-000000000001", "MicrosoftAppType": "MultiTenant"},
         "MicrosoftAppPassword"),
    ],
    ids=["single tenant without password", "single tenant without tenant", "multi tenant without password"],
)
def test_an_app_registration_that_cannot_get_a_token_is_refused_at_start(env: dict[str, str], named: str) -> None:
    """Accepted, it would fail only at the first reply to Teams, with every user's message already taken."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_mapping(env)
    assert named in str(raised.value) and "very-secret" not in str(raised.value)


def test_an_app_registration_with_what_it_needs_starts() -> None:
    single = Settings.from_mapping({"MicrosoftAppId": "00000000-0000-4000-8000-000000000001",
                                    "MicrosoftAppPassword": "very-secret",
                                    "MicrosoftAppTenantId": "72f988bf-0000-4000-8000-000000000001"})
    multi = Settings.from_mapping({"MicrosoftAppId": "00000000-0000-4000-8000-000000000001",
                                   "MicrosoftAppType": "MultiTenant", "MicrosoftAppPassword": "very-secret"})
    identity = Settings.from_mapping({"MicrosoftAppId": "00000000-0000-4000-8000-000000000001",
                                      "MicrosoftAppType": "UserAssignedMSI"})
    assert single.identity.auth_enabled and multi.identity.auth_enabled and identity.identity.auth_enabled
    assert not Settings.from_mapping({"MicrosoftAppType": "SingleTenant"}).identity.auth_enabled, "a local run"
