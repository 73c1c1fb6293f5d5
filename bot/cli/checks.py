"""`python -m bot check`: verify the whole configuration without sending anything.

One line per check, so an operator (or a deployment pipeline) sees at once what is wrong; every
check is bounded in time, so an unreachable vault or relay cannot hang the command.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable
from dataclasses import dataclass

from bot.clock import Clock
from bot.config import Settings
from bot.core.protocols import DataSharingProtocol, ProtocolFileError, ProtocolRegistry, load_registry
from bot.delivery.mail_transport import MailDeliveryError, MailTransport
from bot.delivery.message_outbox import MessageOutbox
from bot.secrets.zip_passwords import ZipPasswordError, ZipPasswordProvider
from bot.storage.database import DatabaseError
from bot.storage.schema_migration import schema_state
from bot.storage.write_readiness import write_refusal
from bot.wiring import (
    Closer,
    DraftKeyError,
    build_database,
    build_mail_transport,
    build_password_provider,
    draft_key_from_key_vault,
)

CHECK_TIMEOUT_SECONDS = 20.0
#: A Teams message still queued after this long is worth an operator's look.
STUCK_AFTER = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check; `detail` never holds a secret."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """`OK   name: detail` or `FAIL name: detail`."""
        return f"{'OK  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


async def run_checks(
    settings: Settings,
    clock: Clock,
    *,
    passwords: ZipPasswordProvider | None = None,
    transport: MailTransport | None = None,
    seconds_per_check: float = CHECK_TIMEOUT_SECONDS,
) -> list[CheckResult]:
    """Protocol files, the database, the draft key, every protocol's ZIP password, and the mail transport.

    A check that cannot even begin (its provider cannot be built) is a failed line too: the others
    still report.
    """
    results: list[CheckResult] = []
    closers: list[Closer] = []
    try:
        registry = _check_protocols(settings, clock, results)
        results.extend(await _check_database(settings, clock, seconds_per_check))
        if settings.key_vault is not None:  # `serve` reads it before anything else, and stops without it
            draft_key = _draft_key(settings, settings.key_vault.draft_key_secret)
            results.append(await _bounded("draft key", draft_key, seconds_per_check))
        passwords = passwords or build_password_provider(settings, clock, closers)
        for protocol in registry.all() if registry else []:
            check = _password(passwords, protocol)
            results.append(await _bounded(f"zip password {protocol.id}", check, seconds_per_check))
        transport = transport or build_mail_transport(settings, closers)
        mail_check = transport.check()
        results.append(await _bounded(f"mail transport {settings.mail_transport}", mail_check, seconds_per_check))
        results.append(
            CheckResult(
                "bot authentication",
                True,
                "on (MicrosoftAppId set)" if settings.identity.auth_enabled else "OFF (MicrosoftAppId empty): "
                "development only",
            )
        )
    except ZipPasswordError as error:
        results.append(CheckResult("zip password provider", False, str(error)))
    except OSError as error:  # a local secret file in a data folder that cannot be made (reported above)
        results.append(CheckResult("local secret files", False, f"{settings.data_dir}: {error.strerror}"))
    finally:
        for close in closers:
            await close()
    return results


def _check_protocols(settings: Settings, clock: Clock, results: list[CheckResult]) -> ProtocolRegistry | None:
    try:
        registry = load_registry(settings.protocols_dir, require_referrers=settings.environment == "production")
    except ProtocolFileError as error:
        results.append(CheckResult("protocol files", False, f"{error} (a running bot keeps the protocols it "
                                   "read before until the folder loads again)"))
        return None
    today = clock.now().astimezone(settings.timezone).date()
    in_force = [f"{p.id}{f' (last day {p.ends_on.isoformat()})' if p.ends_on else ''}"
                for p in registry.in_force_on(today)]
    detail = f"{len(registry)} loaded; in force today: {', '.join(in_force) or 'none'}"
    results.append(CheckResult("protocol files", bool(in_force), detail))
    return registry


async def _check_database(settings: Settings, clock: Clock, seconds: float) -> list[CheckResult]:
    """The database answers, would take a write, its schema is this version's, and no Teams message is stuck."""
    if not settings.database.is_postgres:
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return [CheckResult("data folder", False, f"{settings.data_dir}: {error.strerror}")]
    where = f"PostgreSQL on {settings.database.host}" if settings.database.is_postgres else str(settings.database_path)
    closers: list[Closer] = []
    db = build_database(settings, closers)
    try:
        async with asyncio.timeout(seconds):
            state = await schema_state(db)
            stuck = await MessageOutbox(db).stuck(clock.now(), STUCK_AFTER) if state.current else None
            refused = await write_refusal(db) if state.current else None
    except TimeoutError:
        return [CheckResult("database", False, f"{where}: no answer within {seconds:.0f} s")]
    except DatabaseError as error:  # its message says the kind only ("database unavailable: ConnectionRefusedError")
        return [CheckResult("database", False, f"{where}: {error}")]
    except Exception as error:  # any driver error is a failed check with its kind
        return [CheckResult("database", False, f"{where}: {type(error).__name__}")]
    finally:
        await db.close()
        for close in closers:
            await close()
    schema = "schema current" if state.up_to_date else (
        f"schema at {state.current or 'none'}, this version needs {state.head}: run `python -m bot migrate`")
    if refused is not None:  # reads answer, writes would not be taken (a standby after a failover, a full disk)
        schema += f"; writes refused: {refused}"
    results = [CheckResult("database", (state.up_to_date or not settings.database.is_postgres) and refused is None,
                           f"{where} ({schema})")]
    if stuck is not None:
        detail = f"{stuck.given_up} given up in the last 7 days, {stuck.waiting} waiting longer than " \
                 f"{int(STUCK_AFTER.total_seconds() // 60)} min"
        if stuck.oldest_waiting_since is not None:
            detail += f" (oldest queued {stuck.oldest_waiting_since.isoformat(timespec='seconds')})"
        results.append(CheckResult("teams messages", stuck.given_up == 0 and stuck.waiting == 0, detail))
    return results


async def _draft_key(settings: Settings, secret: str) -> str:
    """The draft key read once as `serve` reads it (`DraftKeyError` names the secret, never its value)."""
    await draft_key_from_key_vault(settings)
    return f"Key Vault secret '{secret}' readable, a 256-bit key"


async def _password(passwords: ZipPasswordProvider, protocol: DataSharingProtocol) -> str:
    password = await passwords.password_for(protocol)
    return f"secret '{protocol.zip_password_secret}' readable and acceptable, version {password.version}"


async def _bounded(name: str, check: Awaitable[str], seconds: float) -> CheckResult:
    try:
        async with asyncio.timeout(seconds):
            detail = await check
    except TimeoutError:
        return CheckResult(name, False, f"no answer within {seconds:.0f} s")
    except (ZipPasswordError, MailDeliveryError, DraftKeyError) as error:
        return CheckResult(name, False, str(error))
    return CheckResult(name, True, detail)
