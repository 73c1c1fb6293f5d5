"""Settings read once from the environment into a frozen, validated object.

Nothing else in the bot reads `os.environ`: `create_app(settings)` gets everything from here.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.core.access import OcmwChannelPolicy, ReferrerPolicy
from bot.core.protocols import ascii_mailbox
from bot.delivery.smtp_transport import SmtpSettings, is_loopback_host

MailTransportName = Literal["outbox", "smtp", "graph"]
SmtpTls = Literal["starttls", "implicit", "none"]
LogFormat = Literal["text", "json"]
BotEnv = Literal["development", "production"]
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
#: How a setting starts that App Service was to replace with a Key Vault secret and could not (lower case).
_KEY_VAULT_REFERENCE = "@microsoft.keyvault("


class ConfigError(ValueError):
    """A setting is wrong; the message names the variable and says how to fix it."""


@dataclass(frozen=True)
class BotIdentity:
    """Bot Framework app registration; authentication is off when `app_id` is empty."""

    app_id: str = ""
    app_password: str = field(default="", repr=False)
    app_tenant_id: str = ""
    app_type: str = "SingleTenant"

    @property
    def auth_enabled(self) -> bool:
        """True when incoming requests must carry a valid Bot Framework token."""
        return bool(self.app_id)


@dataclass(frozen=True)
class GraphConfig:
    """`MAIL_TRANSPORT=graph`: Microsoft Graph sendMail as the `MAIL_FROM` mailbox."""

    base_url: str = "https://graph.microsoft.com"
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class MembershipConfig:
    """Referrers' group and team membership from Microsoft Graph, for protocols that list groups or teams."""

    base_url: str = "https://graph.microsoft.com"
    #: How long an answer (this user is, or is not, in that group) is kept: one referral asks once.
    cache: dt.timedelta = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class KeyVaultConfig:
    """ZIP passwords from Azure Key Vault (`KEY_VAULT_URL` set)."""

    url: str
    managed_identity_client_id: str | None = None
    cache: dt.timedelta = dt.timedelta(minutes=10)
    draft_key_secret: str = "draft-data-key"  # noqa: S105  # nosec B105
    #: Only for a local Key Vault stand-in on 127.0.0.1: Azure's SDK refuses a challenge whose
    #: resource does not match the vault host. Never set in production.
    dangerously_skip_challenge_check: bool = False


@dataclass(frozen=True)
class DeliveryPolicyConfig:
    """How the outbox retries: first wait, longest wait, and when it gives up."""

    initial: dt.timedelta = dt.timedelta(seconds=30)
    maximum: dt.timedelta = dt.timedelta(hours=1)
    horizon: dt.timedelta = dt.timedelta(hours=24)
    #: How long a worker holds a mail or Teams message it is sending (both outboxes).
    lease: dt.timedelta = dt.timedelta(minutes=2)


@dataclass(frozen=True)
class MessageRetryConfig:
    """How the Teams message outbox retries (its horizon is the mail outbox's)."""

    initial: dt.timedelta = dt.timedelta(seconds=2)
    maximum: dt.timedelta = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class TelemetryConfig:
    """What the bot tells its operators: Application Insights, and a local Prometheus view.

    `connection_string` None: nothing is sent anywhere (and nothing is recorded unless the local view
    is on). With it, traces, metrics and logs go to Application Insights, authenticated with the
    managed identity (`managed_identity_client_id`): the template disables local (key) auth.
    `metrics_port` None: no `/metrics`; else served on `metrics_host`, always a loopback address.
    """

    connection_string: str | None = field(default=None, repr=False)
    managed_identity_client_id: str | None = None
    export_interval: dt.timedelta = dt.timedelta(seconds=60)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None

    @property
    def records_metrics(self) -> bool:
        """Whether anything reads the metrics (Application Insights or the local view)."""
        return self.connection_string is not None or self.metrics_port is not None


DatabaseAuth = Literal["password", "entra"]


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the state lives: `url` None is the embedded SQLite file in `BOT_DATA_DIR`, else PostgreSQL.

    `auth="entra"`: the password is an access token for the app's managed identity, fetched per
    connection (no password anywhere); `password`: whatever the URL or libpq's PGPASSWORD says
    (local runs and tests).
    """

    url: str | None = field(default=None, repr=False)
    auth: DatabaseAuth = "password"
    pool_size: int = 10
    #: The user-assigned managed identity (`AZURE_CLIENT_ID`) whose token logs in with `auth="entra"`.
    managed_identity_client_id: str | None = None

    @property
    def is_postgres(self) -> bool:
        return self.url is not None

    @property
    def tls_mode(self) -> str:
        """libpq's `sslmode` from the URL (default `verify-full`); "" for SQLite."""
        if self.url is None:
            return ""
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.url).query)).get("sslmode", "verify-full")

    @property
    def host(self) -> str:
        return "" if self.url is None else (urllib.parse.urlsplit(self.url).hostname or "")


@dataclass(frozen=True)
class Settings:
    """Everything the bot needs to run, resolved and checked at start."""

    host: str = "127.0.0.1"
    port: int = 3978
    data_dir: Path = Path(".data")
    protocols_dir: Path = _PROJECT_ROOT / "infra" / "protocols"
    mail_transport: MailTransportName = "outbox"
    mail_from: str = "doorverwijzing@opgroeien.be"
    local_zip_password: str | None = field(default=None, repr=False)
    #: `LOCAL_DRAFT_KEY` (64 hex characters): the draft key for a local run without Key Vault or data folder.
    local_draft_key: bytes | None = field(default=None, repr=False)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    key_vault: KeyVaultConfig | None = None
    smtp: SmtpSettings | None = None
    graph: GraphConfig | None = None
    delivery: DeliveryPolicyConfig = field(default_factory=DeliveryPolicyConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    message_retry: MessageRetryConfig = field(default_factory=MessageRetryConfig)
    #: How long after the click that queued a referral its reply (the card "being sent") may take to reach the
    #: chat. Teams shows the reply when it arrives, and an edit that got there first (a mail delivered in
    #: milliseconds) was overwritten by it, the card left saying "being sent": the referrer's card edit and
    #: notice go out no sooner.
    click_reply_lands: dt.timedelta = dt.timedelta(seconds=2)
    identity: BotIdentity = field(default_factory=BotIdentity)
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Brussels"))
    draft_ttl: dt.timedelta = dt.timedelta(minutes=30)
    reminder_working_days: int = 2
    #: How often idle drafts are wiped and reminders looked for (each once per period across instances).
    sweep_interval: dt.timedelta = dt.timedelta(seconds=60)
    log_level: str = "INFO"
    log_format: LogFormat = "text"
    environment: BotEnv = "development"
    referrers: ReferrerPolicy = field(default_factory=ReferrerPolicy)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    ocmw_channels: OcmwChannelPolicy = field(default_factory=OcmwChannelPolicy)
    starts_per_hour: int = 20
    actions_per_minute: int = 60
    #: Turns (messages, card clicks) run side by side; more wait for a place in the order they came.
    #: Every turn in progress takes a step between any two of the delivery workers' steps: with no
    #: bound, a burst of clicks holds back the mail "Verstuur" just queued (README, issue 14, tenth pass).
    turns_at_once: int = 8
    #: The bot's public address (`PUBLIC_BASE_URL`, no trailing slash), for links people open in a browser:
    #: the family's information sheet. "" when unset: the consent card then has no link.
    public_base_url: str = ""
    #: Where the Bot Framework publishes its token signing keys; not an environment setting (a
    #: test stand-in replaces it in code, never a deployment).
    openid_metadata_url: str = "https://login.botframework.com/v1/.well-known/openidconfiguration"

    @property
    def security_weakenings(self) -> list[str]:
        """Every setting in force that weakens security, named with its fix; refused in production."""
        weakenings = []
        if not self.identity.auth_enabled:
            weakenings.append("Bot Framework authentication OFF (MicrosoftAppId empty): set MicrosoftAppId, "
                              "MicrosoftAppType and MicrosoftAppTenantId to the bot's identity")
        if self.smtp is not None and self.smtp.tls == "none":
            weakenings.append("plaintext SMTP on loopback (SMTP_TLS=none): use SMTP_TLS=starttls or implicit")
        if self.referrers.any_tenant:
            weakenings.append("any tenant may refer (REFERRER_TENANT_IDS empty): set REFERRER_TENANT_IDS to "
                              "Kind en Gezin's Entra tenant id")
        if self.ocmw_channels.any_tenant:
            weakenings.append("any tenant's Teams channel may be linked as an OCMW's (OCMW_TENANT_IDS empty): "
                              "set OCMW_TENANT_IDS to the OCMWs' Entra tenant ids")
        if self.key_vault is None:
            where = "in the environment" if self.database.is_postgres else "files in BOT_DATA_DIR"
            weakenings.append(f"the ZIP password and the draft key are {where}, not Key Vault "
                              "secrets (KEY_VAULT_URL unset): set KEY_VAULT_URL=https://<vault>.vault.azure.net")
        elif self.key_vault.dangerously_skip_challenge_check:
            weakenings.append("Key Vault's challenge check is off (DANGEROUSLY_SKIP_KEY_VAULT_CHALLENGE_CHECK): "
                              "remove DANGEROUSLY_SKIP_KEY_VAULT_CHALLENGE_CHECK, it is for a local stand-in only")
        return weakenings

    @property
    def production_refusals(self) -> list[str]:
        """What `BOT_ENV=production` refuses: the security weakenings, and settings that would mislead.

        `MAIL_TRANSPORT=outbox` only writes the mail into a folder while the referrer reads
        "verstuurd"; a `LOCAL_ZIP_PASSWORD` suggests a password that production never uses.
        """
        refusals = self.security_weakenings
        if self.mail_transport == "outbox":
            refusals.append("mail is only written into a folder while the referrer reads 'verstuurd' "
                            "(MAIL_TRANSPORT=outbox): set MAIL_TRANSPORT=graph (or smtp)")
        if self.local_zip_password is not None:
            refusals.append("a ZIP password in the environment (LOCAL_ZIP_PASSWORD): remove LOCAL_ZIP_PASSWORD; "
                            "production takes each protocol's password from Key Vault")
        if not self.database.is_postgres:
            refusals.append("the state is a SQLite file on this instance's disk (DATABASE_URL unset): set "
                            "DATABASE_URL=postgresql://<identity>@<server>.postgres.database.azure.com/<database>"
                            " and DATABASE_AUTH=entra")
        elif self.database.tls_mode not in ("verify-full", "verify-ca") and not is_loopback_host(self.database.host):
            refusals.append(f"the database's certificate is not checked (sslmode={self.database.tls_mode}): "
                            "remove sslmode from DATABASE_URL (verify-full is the default)")
        if self.local_draft_key is not None:
            refusals.append("a draft key in the environment (LOCAL_DRAFT_KEY): remove LOCAL_DRAFT_KEY; "
                            "production takes the draft key from Key Vault")
        if self.public_base_url.startswith("http://"):
            refusals.append("the information sheet's link is plain http on this machine (PUBLIC_BASE_URL="
                            f"{self.public_base_url}): set PUBLIC_BASE_URL=https://<the bot's public host name>")
        return refusals

    @property
    def database_path(self) -> Path:
        """The one SQLite file that holds the bot's state."""
        return self.data_dir / "bot.sqlite3"

    @property
    def outbox_dir(self) -> Path:
        """Where the `outbox` mail transport writes its `.eml` files."""
        return self.data_dir / "outbox"

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from an environment-like mapping, raising ConfigError on bad values."""
        reader = _EnvReader(env)
        transport = reader.mail_transport("MAIL_TRANSPORT")
        settings = cls(
            host=reader.text("HOST", cls.host),
            port=reader.integer("PORT", cls.port, minimum=0, maximum=65535),
            data_dir=Path(reader.text("BOT_DATA_DIR", str(cls.data_dir))),
            protocols_dir=Path(reader.text("PROTOCOLS_DIR", str(cls.protocols_dir))),
            mail_transport=transport,
            mail_from=reader.mailbox("MAIL_FROM", cls.mail_from),
            local_zip_password=reader.optional("LOCAL_ZIP_PASSWORD"),
            local_draft_key=_local_draft_key(reader),
            database=_database(reader),
            key_vault=_key_vault(reader),
            smtp=_smtp(reader) if transport == "smtp" else None,
            graph=_graph(reader) if transport == "graph" else None,
            delivery=DeliveryPolicyConfig(
                initial=dt.timedelta(seconds=reader.integer("OUTBOX_RETRY_INITIAL_SECONDS", 30, minimum=1,
                                                            maximum=3600)),
                maximum=dt.timedelta(seconds=reader.integer("OUTBOX_RETRY_MAX_SECONDS", 3600, minimum=1,
                                                            maximum=86400)),
                horizon=dt.timedelta(hours=reader.integer("OUTBOX_HORIZON_HOURS", 24, minimum=1, maximum=24 * 14)),
                lease=dt.timedelta(seconds=reader.integer("OUTBOX_LEASE_SECONDS", 120, minimum=2, maximum=3600)),
            ),
            telemetry=_telemetry(reader),
            message_retry=MessageRetryConfig(
                initial=dt.timedelta(seconds=reader.integer("TEAMS_RETRY_INITIAL_SECONDS", 2, minimum=1,
                                                            maximum=3600)),
                maximum=dt.timedelta(seconds=reader.integer("TEAMS_RETRY_MAX_SECONDS", 600, minimum=1,
                                                            maximum=86400)),
            ),
            click_reply_lands=dt.timedelta(seconds=reader.integer("TEAMS_CLICK_REPLY_SECONDS", 2, minimum=0,
                                                                  maximum=60)),
            identity=_identity(reader),
            timezone=reader.timezone("BOT_TIMEZONE", "Europe/Brussels"),
            draft_ttl=dt.timedelta(minutes=reader.integer("DRAFT_TTL_MINUTES", 30, minimum=1, maximum=24 * 60)),
            reminder_working_days=reader.integer("REMINDER_WORKING_DAYS", 2, minimum=1, maximum=20),
            sweep_interval=dt.timedelta(seconds=reader.integer("SWEEP_INTERVAL_SECONDS", 60, minimum=1,
                                                               maximum=3600)),
            log_level=reader.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            log_format=cast(LogFormat, reader.choice("LOG_FORMAT", "text", get_args(LogFormat))),
            environment=cast(BotEnv, reader.choice("BOT_ENV", "development", get_args(BotEnv))),
            referrers=ReferrerPolicy(
                tenant_ids=reader.id_set("REFERRER_TENANT_IDS"),
                object_ids=reader.id_set("REFERRER_OBJECT_IDS"),
                team_or_channel_ids=frozenset(part.strip() for part in reader.text(
                    "REFERRER_TEAM_OR_CHANNEL_IDS", "").split(",")) - {""},
            ),
            membership=MembershipConfig(
                base_url=_graph_base_url(reader),
                cache=dt.timedelta(minutes=reader.integer("REFERRER_MEMBERSHIP_CACHE_MINUTES", 10, minimum=0,
                                                          maximum=24 * 60)),
            ),
            ocmw_channels=OcmwChannelPolicy(tenant_ids=reader.id_set("OCMW_TENANT_IDS")),
            starts_per_hour=reader.integer("RATE_LIMIT_STARTS_PER_HOUR", 20, minimum=1, maximum=10_000),
            actions_per_minute=reader.integer("RATE_LIMIT_ACTIONS_PER_MINUTE", 60, minimum=1, maximum=10_000),
            turns_at_once=reader.integer("TURNS_AT_ONCE", cls.turns_at_once, minimum=1, maximum=1000),
            public_base_url=_public_base_url(reader),
        )
        if settings.smtp is not None and settings.delivery.lease.total_seconds() < 2 * settings.smtp.timeout_seconds:
            raise ConfigError(
                f"OUTBOX_LEASE_SECONDS={int(settings.delivery.lease.total_seconds())} is shorter than twice "
                f"SMTP_TIMEOUT_SECONDS={int(settings.smtp.timeout_seconds)}: a slow relay would have its mail sent "
                "twice. Raise OUTBOX_LEASE_SECONDS or lower SMTP_TIMEOUT_SECONDS."
            )
        if settings.environment == "production" and settings.production_refusals:
            raise ConfigError(
                "BOT_ENV=production refuses settings that weaken security or would mislead: "
                + "; ".join(settings.production_refusals)
                + ". Fix each as said, or set BOT_ENV=development to run locally."
            )
        if settings.database.is_postgres:
            _check_nothing_on_disk(settings)
        return settings


def _identity(reader: _EnvReader) -> BotIdentity:
    """The bot's app registration, refused when it could not get the token every reply to Teams needs.

    Accepted, such a registration would fail only at the first reply, after the user's message was taken.
    Without `MicrosoftAppId` (a local run, the tests) authentication is off and nothing else is needed.
    """
    identity = BotIdentity(
        app_id=reader.text("MicrosoftAppId", ""),
        app_password=reader.text("MicrosoftAppPassword", ""),
        app_tenant_id=reader.text("MicrosoftAppTenantId", ""),
        app_type=reader.choice("MicrosoftAppType", "SingleTenant", ("SingleTenant", "MultiTenant", "UserAssignedMSI")),
    )
    if not identity.app_id or identity.app_type == "UserAssignedMSI":  # a managed identity needs no password
        return identity
    if not identity.app_password:
        raise ConfigError(
            f"MicrosoftAppType={identity.app_type} with MicrosoftAppId set needs MicrosoftAppPassword (the app "
            "registration's client secret, in App Service a Key Vault reference): without it the bot cannot get a "
            "token to reply to Teams. Set it, or use MicrosoftAppType=UserAssignedMSI with the managed identity's "
            "client id as MicrosoftAppId."
        )
    if identity.app_type == "SingleTenant" and not identity.app_tenant_id:
        raise ConfigError(
            "MicrosoftAppType=SingleTenant needs MicrosoftAppTenantId (the Entra tenant id of the app registration, "
            "a GUID): without it the bot asks the multi-tenant authority for its token, which refuses a "
            "single-tenant registration, and no reply reaches Teams."
        )
    return identity


def _database(reader: _EnvReader) -> DatabaseConfig:
    """`DATABASE_URL` (PostgreSQL, shared by instances) or nothing (SQLite in BOT_DATA_DIR), and how to log in."""
    url = reader.optional("DATABASE_URL")
    auth = cast(DatabaseAuth, reader.choice("DATABASE_AUTH", "password", get_args(DatabaseAuth)))
    pool_size = reader.integer("DATABASE_POOL_SIZE", 10, minimum=1, maximum=100)
    if url is None:
        if auth == "entra":
            raise ConfigError("DATABASE_AUTH=entra needs DATABASE_URL (the PostgreSQL server to log in to)")
        return DatabaseConfig(pool_size=pool_size)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or not parts.path.strip("/"):
        raise ConfigError("DATABASE_URL must look like postgresql://<user>@<host>:5432/<database>")
    mode = dict(urllib.parse.parse_qsl(parts.query)).get("sslmode", "verify-full")
    if mode not in ("disable", "require", "verify-ca", "verify-full"):
        raise ConfigError(f"DATABASE_URL: sslmode={mode} is not one of disable, require, verify-ca, verify-full")
    if auth == "entra" and parts.password:
        raise ConfigError("DATABASE_AUTH=entra takes its password from Entra ID: remove the password from DATABASE_URL")
    if auth == "entra" and mode == "disable":
        raise ConfigError("DATABASE_AUTH=entra sends an access token as the password: it needs TLS (remove sslmode)")
    return DatabaseConfig(url=url, auth=auth, pool_size=pool_size,
                          managed_identity_client_id=reader.optional("AZURE_CLIENT_ID"))


def _telemetry(reader: _EnvReader) -> TelemetryConfig:
    """`APPLICATIONINSIGHTS_CONNECTION_STRING` (App Service sets it from the template) and the local `/metrics`."""
    connection_string = reader.optional("APPLICATIONINSIGHTS_CONNECTION_STRING")
    if connection_string is not None:
        parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
        if not parts.get("InstrumentationKey") or not parts.get("IngestionEndpoint", "").startswith("https://"):
            raise ConfigError("APPLICATIONINSIGHTS_CONNECTION_STRING must hold InstrumentationKey=...;"
                              "IngestionEndpoint=https://...: copy it from the Application Insights resource")
    host = reader.text("METRICS_HOST", TelemetryConfig.metrics_host)
    if not is_loopback_host(host):
        raise ConfigError(f"METRICS_HOST={host!r} is not a loopback address: /metrics is served only on this "
                          "machine (127.0.0.1 or ::1); a scraper elsewhere reads Application Insights instead")
    port = reader.optional("METRICS_PORT")
    return TelemetryConfig(
        connection_string=connection_string,
        managed_identity_client_id=reader.optional("AZURE_CLIENT_ID"),
        export_interval=dt.timedelta(seconds=reader.integer("TELEMETRY_EXPORT_SECONDS", 60, minimum=5, maximum=3600)),
        metrics_host=host,
        metrics_port=None if port is None else reader.integer("METRICS_PORT", 9464, minimum=0, maximum=65535),
    )


def _local_draft_key(reader: _EnvReader) -> bytes | None:
    value = reader.optional("LOCAL_DRAFT_KEY")
    if value is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ConfigError("LOCAL_DRAFT_KEY must be 64 hexadecimal characters (a 256-bit key), e.g. from "
                          "`python -c 'import secrets; print(secrets.token_hex(32))'`")
    return bytes.fromhex(value)


def _check_nothing_on_disk(settings: Settings) -> None:
    """With PostgreSQL, instances share everything through it: no secret or mail may live on one's disk."""
    if settings.mail_transport == "outbox":
        raise ConfigError("MAIL_TRANSPORT=outbox writes mail into this instance's BOT_DATA_DIR, which the other "
                          "instances do not see: with DATABASE_URL use MAIL_TRANSPORT=graph (or smtp)")
    if settings.key_vault is None and (settings.local_zip_password is None or settings.local_draft_key is None):
        raise ConfigError("with DATABASE_URL nothing is kept on an instance's disk: set KEY_VAULT_URL, or for a "
                          "local run without Azure both LOCAL_ZIP_PASSWORD and LOCAL_DRAFT_KEY")


def _key_vault(reader: _EnvReader) -> KeyVaultConfig | None:
    url = reader.optional("KEY_VAULT_URL")
    if url is None:
        return None
    if not url.startswith("https://"):
        raise ConfigError(f"KEY_VAULT_URL={url!r} must be an https:// vault URL, e.g. https://my-vault.vault.azure.net")
    return KeyVaultConfig(
        url=url,
        managed_identity_client_id=reader.optional("AZURE_CLIENT_ID"),
        cache=dt.timedelta(minutes=reader.integer("KEY_VAULT_CACHE_MINUTES", 10, minimum=0, maximum=24 * 60)),
        draft_key_secret=reader.text("DRAFT_KEY_SECRET", "draft-data-key"),
        dangerously_skip_challenge_check=reader.flag("DANGEROUSLY_SKIP_KEY_VAULT_CHALLENGE_CHECK", False),
    )


def _public_base_url(reader: _EnvReader) -> str:
    """`PUBLIC_BASE_URL`: https, or http only to this machine (a local test); no query, no login."""
    value = reader.optional("PUBLIC_BASE_URL")
    if value is None:
        return ""
    parts = urllib.parse.urlsplit(value)
    local_http = parts.scheme == "http" and parts.hostname is not None and is_loopback_host(parts.hostname)
    if (parts.scheme != "https" and not local_http) or not parts.hostname:
        raise ConfigError(f"PUBLIC_BASE_URL={value!r} must be the bot's public https address, e.g. "
                          "https://veilig-doorverwijzen.azurewebsites.net (http only for localhost when testing)")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ConfigError(f"PUBLIC_BASE_URL={value!r} must be a plain address: no login, '?' or '#'")
    return value.rstrip("/")


def _smtp(reader: _EnvReader) -> SmtpSettings:
    host = reader.optional("SMTP_HOST")
    if host is None:
        raise ConfigError("MAIL_TRANSPORT=smtp needs SMTP_HOST (the relay's host name)")
    tls = cast(SmtpTls, reader.choice("SMTP_TLS", "starttls", get_args(SmtpTls)))
    plaintext_allowed = reader.flag("SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK", False) and is_loopback_host(host)
    if tls == "none" and not plaintext_allowed:
        raise ConfigError(
            "SMTP_TLS=none sends mail unencrypted: it is only accepted with SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK=1 "
            "and SMTP_HOST on this machine (localhost, 127.0.0.1, ::1). Use starttls or implicit."
        )
    ca_file = reader.optional("SMTP_CA_FILE")
    if ca_file is not None and not Path(ca_file).is_file():
        raise ConfigError(f"SMTP_CA_FILE={ca_file!r} does not exist; give the path of a PEM file")
    username = reader.optional("SMTP_USERNAME")
    password = reader.optional("SMTP_PASSWORD")
    if (username is None) != (password is None):
        raise ConfigError("set both SMTP_USERNAME and SMTP_PASSWORD, or neither")
    default_port = 465 if tls == "implicit" else 587 if tls == "starttls" else 25
    return SmtpSettings(
        host=host,
        port=reader.integer("SMTP_PORT", default_port, minimum=1, maximum=65535),
        tls=tls,
        ca_file=None if ca_file is None else Path(ca_file),
        username=username,
        password=password,
        timeout_seconds=float(reader.integer("SMTP_TIMEOUT_SECONDS", 30, minimum=1, maximum=600)),
    )


def _graph(reader: _EnvReader) -> GraphConfig:
    return GraphConfig(base_url=_graph_base_url(reader))


def _graph_base_url(reader: _EnvReader) -> str:
    """Microsoft Graph, for mail (`MAIL_TRANSPORT=graph`) and for referrers' group membership."""
    base_url = reader.text("GRAPH_BASE_URL", GraphConfig.base_url).rstrip("/")
    if not base_url.startswith("https://"):
        raise ConfigError(f"GRAPH_BASE_URL={base_url!r} must start with https://")
    return base_url


class _EnvReader:
    """Typed access to environment values with errors that say how to fix them."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def _get(self, name: str) -> str | None:
        """The raw value, refused when it is a Key Vault reference App Service could not resolve.

        App Service then hands the app the reference's own text, `@Microsoft.KeyVault(...)`; taken as
        the value it would be the bot's password and fail only at the first reply to Teams.
        """
        value = self._env.get(name)
        if value is not None and value.strip().lower().startswith(_KEY_VAULT_REFERENCE):
            raise ConfigError(
                f"{name} holds a Key Vault reference that App Service has not resolved: it passed on the "
                "reference's text instead of the secret. Check that the app's managed identity (the one "
                "keyVaultReferenceIdentity names) may read the vault's secrets (role Key Vault Secrets User), "
                "that the secret exists and is enabled, that the vault's network lets App Service in, and the "
                "reference's syntax: @Microsoft.KeyVault(VaultName=<vault>;SecretName=<secret>) or "
                "@Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<secret>/). The portal shows "
                "each reference's status under the app's Environment variables; restart the app once it is resolved."
            )
        return value

    def optional(self, name: str) -> str | None:
        value = (self._get(name) or "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        value = self._get(name)
        return default if value is None or not value.strip() else value.strip()

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        raw = (self._get(name) or "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError as error:
            raise ConfigError(f"{name}={raw!r} is not a whole number; use e.g. {default}") from error
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name}={value} is out of range; use a number from {minimum} to {maximum}")
        return value

    def id_set(self, name: str) -> frozenset[str]:
        """A comma-separated list of GUIDs, lower-cased."""
        values = frozenset(part.strip().lower() for part in (self._get(name) or "").split(",") if part.strip())
        for value in values:
            if not _GUID.match(value):
                raise ConfigError(f"{name}: {value!r} is not a GUID (Entra tenant or object id)")
        return values

    def flag(self, name: str, default: bool) -> bool:
        raw = self._get(name)
        if raw is None:
            return default
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{name}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off")

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not allowed; use one of {', '.join(allowed)}")
        return value

    def mail_transport(self, name: str) -> MailTransportName:
        return cast(MailTransportName, self.choice(name, "outbox", get_args(MailTransportName)))

    def mailbox(self, name: str, default: str) -> str:
        value = self.text(name, default)
        try:
            return ascii_mailbox(value)
        except ValueError as error:
            raise ConfigError(f"{name}={value!r} {error}") from error

    def timezone(self, name: str, default: str) -> ZoneInfo:
        value = self.text(name, default)
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ConfigError(f"{name}={value!r} is not a time zone; use e.g. Europe/Brussels") from error
