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
from bot.database import open_database
from bot.mail_transport import MailDeliveryError, MailTransport
from bot.message_outbox import MessageOutbox
from bot.protocols import DataSharingProtocol, ProtocolFileError, ProtocolRegistry, load_registry
from bot.wiring import Closer, build_mail_transport, build_password_provider
from bot.zip_passwords import ZipPasswordError, ZipPasswordProvider

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
    """Protocol files, data folder, every protocol's ZIP password, and the mail transport."""
    results: list[CheckResult] = []
    closers: list[Closer] = []
    try:
        registry = _check_protocols(settings, clock, results)
        results.append(_check_data_folder(settings))
        results.append(_check_teams_messages(settings, clock))
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


def _check_data_folder(settings: Settings) -> CheckResult:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        open_database(settings.database_path).close()
    except OSError as error:
        return CheckResult("data folder", False, f"{settings.data_dir}: {error.strerror}")
    return CheckResult("data folder", True, f"{settings.data_dir} (database opens)")


def _check_teams_messages(settings: Settings, clock: Clock) -> CheckResult:
    """Teams messages the bot gave up on this week, or that wait longer than they should."""
    try:
        connection = open_database(settings.database_path)
    except OSError as error:
        return CheckResult("teams messages", False, f"database: {error.strerror}")
    try:
        stuck = MessageOutbox(connection).stuck(clock.now(), STUCK_AFTER)
    finally:
        connection.close()
    detail = f"{stuck.given_up} given up in the last 7 days, {stuck.waiting} waiting longer than " \
             f"{int(STUCK_AFTER.total_seconds() // 60)} min"
    if stuck.oldest_waiting_since is not None:
        detail += f" (oldest queued {stuck.oldest_waiting_since.isoformat(timespec='seconds')})"
    return CheckResult("teams messages", stuck.given_up == 0 and stuck.waiting == 0, detail)


async def _password(passwords: ZipPasswordProvider, protocol: DataSharingProtocol) -> str:
    password = await passwords.password_for(protocol)
    return f"secret '{protocol.zip_password_secret}' readable and acceptable, version {password.version}"


async def _bounded(name: str, check: Awaitable[str], seconds: float) -> CheckResult:
    try:
        async with asyncio.timeout(seconds):
            detail = await check
    except TimeoutError:
        return CheckResult(name, False, f"no answer within {seconds:.0f} s")
    except (ZipPasswordError, MailDeliveryError) as error:
        return CheckResult(name, False, str(error))
    return CheckResult(name, True, detail)
