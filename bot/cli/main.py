"""The command line behind `python -m bot`: `serve` runs the bot on the embedded defaults."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy.exc
from aiohttp import web

from bot.app import SERVICES_KEY, create_app
from bot.cli.breach_report import add_breach_command, run_breach_command
from bot.cli.checks import run_checks
from bot.cli.garbage_collection import freeze_start_up
from bot.cli.migrate import run_migrate_command
from bot.cli.register import add_register_commands, run_register_command
from bot.clock import SystemClock
from bot.config import ConfigError, Settings
from bot.core.protocols import DataSharingProtocol, ProtocolFileError, load_registry
from bot.logging_setup import configure_logging
from bot.ocmw.links import OcmwLinks
from bot.operations.telemetry import Telemetry, telemetry_from_settings
from bot.secrets.zip_passwords import LocalZipPasswordProvider
from bot.storage.data_folder_lock import DataFolderInUseError, DataFolderLock
from bot.storage.database import DatabaseError
from bot.storage.schema_migration import SchemaOutOfDate
from bot.wiring import Closer, DraftKeyError, draft_key_from_key_vault, open_database_for_command

logger = logging.getLogger("bot")


def build_parser() -> argparse.ArgumentParser:
    """Every command and its options (the runbook in infra/README.md is checked against it)."""
    parser = argparse.ArgumentParser(prog="python -m bot", description="veilig-doorverwijzen Teams bot")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the bot (default)")
    serve.add_argument("--migrate", action="store_true",
                       help="bring the database's schema to this version first (the embedded SQLite file always is)")
    migrate_command = commands.add_parser("migrate", help="bring the database's schema to this version")
    migrate_command.add_argument("--wait", action="store_true",
                                 help="wait for a database that cannot be reached yet (a start command), "
                                      "one line per attempt")
    migrate_command.add_argument("--from-sqlite", type=Path, default=None, metavar="FILE",
                                 help="then copy every table of this SQLite file (the old deployment's) into the "
                                      "empty database, and verify the copy")
    commands.add_parser("check", help="verify protocols, secrets and mail transport; sends nothing")
    link = commands.add_parser("link-ocmw", help="print a one-time code that links an OCMW Teams channel")
    link.add_argument("protocol_id", help="the id in the protocol file, e.g. OR-KG-NOW-OCMW-SGW-2026")
    protocols = commands.add_parser("protocols", help="validate protocol files (a running bot rereads them itself)")
    protocol_actions = protocols.add_subparsers(dest="protocols_command", required=True, metavar="{check}")
    protocols_check = protocol_actions.add_parser(
        "check", help="load every *.toml of PROTOCOLS_DIR (or --dir) and print what each says; nothing else is touched"
    )
    protocols_check.add_argument("--dir", type=Path, default=None, help="another folder, e.g. before copying a file in")
    protocols_check.add_argument("--production", action="store_true",
                                 help="check as BOT_ENV=production does: every file must list who may refer")
    add_breach_command(commands)
    add_register_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command and run it; returns the exit status."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    try:
        settings = Settings.from_mapping(os.environ)
    except ConfigError as error:
        sys.stderr.write(f"configuration error: {error}\n")
        return 2
    configure_logging(settings.log_level, json_lines=settings.log_format == "json")
    if arguments.command in (None, "serve"):
        return _serve(settings, migrate=getattr(arguments, "migrate", False))
    try:
        return _command(parser, arguments, settings)
    except SchemaOutOfDate as error:  # its message says which command to run
        sys.stderr.write(f"{error}\n")
    except ProtocolFileError as error:
        sys.stderr.write(f"protocol file error: {error}\n")
    except (DatabaseError, sqlalchemy.exc.SQLAlchemyError) as error:
        # The kind only: a driver's message may quote a statement. `python -m bot check` says more.
        cause = getattr(error, "orig", None) or error
        sys.stderr.write(f"database error: {type(cause).__name__}; run `python -m bot check` for more\n")
    except OSError as error:
        sys.stderr.write(f"{error.strerror or type(error).__name__}: {error.filename or ''}\n")
    return 2


def _command(parser: argparse.ArgumentParser, arguments: argparse.Namespace, settings: Settings) -> int:
    """An administrator command; what it cannot do ends in one line on stderr and exit status 2 (`main`)."""
    if arguments.command == "migrate":
        return asyncio.run(run_migrate_command(settings, arguments.from_sqlite, wait=arguments.wait))
    if arguments.command == "register":
        return run_register_command(arguments, settings)
    if arguments.command == "breach-report":
        return run_breach_command(arguments, settings, SystemClock())
    if arguments.command == "link-ocmw":
        return _link_ocmw(settings, arguments.protocol_id)
    if arguments.command == "protocols":
        return _check_protocol_files(arguments.dir or settings.protocols_dir,
                                     require_referrers=arguments.production or settings.environment == "production")
    if arguments.command == "check":
        results = asyncio.run(run_checks(settings, SystemClock()))
        sys.stdout.write("".join(result.line() + "\n" for result in results))
        return 0 if all(result.ok for result in results) else 1
    parser.error(f"unknown command {arguments.command}")
    return 2


def _check_protocol_files(directory: Path, *, require_referrers: bool) -> int:
    """One line per protocol with its dates, retention periods and sending teams; exit 1 naming file and field.

    With `BOT_ENV=production` (or `--production`) a file that does not say who may refer fails, as it
    would at start.
    """
    try:
        registry = load_registry(directory, require_referrers=require_referrers)
    except ProtocolFileError as error:
        sys.stdout.write(f"FAIL {error}\n")
        return 1
    for protocol in registry.all():
        keep = protocol.retention
        closed = ", ".join(sorted(state.value for state in keep.closed_states))
        sys.stdout.write(
            f"OK   {protocol.id}: {protocol.recipient.organisation}, in force from {protocol.in_force_from.isoformat()}"
            f"{f', last day {protocol.ends_on.isoformat()}' if protocol.ends_on else ', no end date'}; retention: "
            f"referrals {keep.referral_days_after_closure} days after closure ({closed}), register "
            f"{keep.register_years} years, pairing codes {keep.pairing_code_days} days, draft tombstones "
            f"{keep.tombstone_days} days; referrers: {_referrers(protocol)} ({protocol.source.name})\n"
        )
    return 0


def _referrers(protocol: DataSharingProtocol) -> str:
    """Who may refer under the protocol, as its file says, without the ids."""
    if not protocol.sender_teams:
        return "anyone the REFERRER_* settings allow, as '" + protocol.sender.team + "' (development only)"
    return "; ".join(
        f"'{team.name}' ({len(team.object_ids)} users, {len(team.group_ids)} groups, {len(team.team_ids)} teams)"
        for team in protocol.sender_teams
    )


def _link_ocmw(settings: Settings, protocol_id: str) -> int:
    """Print how to link, then the code alone on the last line (scripts take `tail -n 1`)."""
    try:
        registry = load_registry(settings.protocols_dir)
    except ProtocolFileError as error:
        sys.stderr.write(f"protocol file error: {error}\n")
        return 2
    protocol = registry.get(protocol_id)
    if protocol is None:
        known = ", ".join(p.id for p in registry.all())
        sys.stderr.write(f"unknown protocol id {protocol_id!r}; known: {known}\n")
        return 2
    try:
        code = asyncio.run(_new_code(settings, protocol.id))
    except SchemaOutOfDate as error:
        sys.stderr.write(f"{error}\n")
        return 2
    sys.stdout.write(
        f"Koppelcode voor {protocol.recipient.organisation} (protocol {protocol.id}), eenmalig, 24 uur geldig.\n"
        "Een maatschappelijk werker typt in het Teams-kanaal van het OCMW (met de bot vermeld):\n"
        f"  @Veilig doorverwijzen koppel {code}\n"
        f"{code}\n"
    )
    return 0


async def _new_code(settings: Settings, protocol_id: str) -> str:
    closers: list[Closer] = []
    db = await open_database_for_command(settings, closers)
    try:
        return await OcmwLinks(db).new_code(protocol_id, SystemClock().now())
    finally:
        await db.close()
        for close in closers:
            await close()


def _serve(settings: Settings, *, migrate: bool) -> int:
    """Run the bot; the embedded SQLite folder is held by one process (PostgreSQL is shared by instances)."""
    if settings.database.is_postgres:
        return _serve_holding(settings, migrate=migrate)
    try:
        lock = DataFolderLock.acquire(settings.data_dir)
    except DataFolderInUseError as error:
        logger.error("%s", error)
        return 2
    try:
        return _serve_holding(settings, migrate=True)
    finally:
        lock.release()


def _serve_holding(settings: Settings, *, migrate: bool) -> int:
    telemetry = telemetry_from_settings(settings.telemetry)
    telemetry.install_globally(settings.log_level)  # once, before anything makes a client session or a span
    try:
        return _serve_with(settings, telemetry, migrate=migrate)
    finally:
        telemetry.shutdown()


def _serve_with(settings: Settings, telemetry: Telemetry, *, migrate: bool) -> int:
    try:
        draft_key = (asyncio.run(draft_key_from_key_vault(settings, wait_out_outages=True))
                     if settings.key_vault is not None else None)  # an outage is waited out, before listening
        app = create_app(settings, draft_key=draft_key, migrate=migrate, telemetry=telemetry)
    except ProtocolFileError as error:
        logger.error("protocol file error: %s", error)
        return 2
    except DraftKeyError as error:
        logger.error("%s", error)
        return 2
    for weakening in settings.security_weakenings:
        logger.warning("SECURITY WEAKENED (refused with BOT_ENV=production): %s", weakening)
    services = app[SERVICES_KEY]
    if not settings.identity.auth_enabled:
        logger.warning(
            "Bot Framework authentication is OFF because MicrosoftAppId is empty: anyone who can reach "
            "this port can talk to the bot. Fine on 127.0.0.1 with the Agents Playground, never in production."
        )
    if not settings.public_base_url:
        logger.warning("PUBLIC_BASE_URL is unset: the consent card has no link to the family's information sheet; "
                       "set it to the bot's public https address")
    if isinstance(services.passwords, LocalZipPasswordProvider):
        logger.info("ZIP password (local provider) is kept in: %s", services.passwords.source)
    elif settings.key_vault is not None:
        logger.info("ZIP passwords come from Key Vault %s", settings.key_vault.url)
    logger.info("mail transport: %s%s", settings.mail_transport,
                f", outbox folder: {settings.outbox_dir}" if settings.mail_transport == "outbox" else "")
    logger.info("state: %s", f"PostgreSQL on {settings.database.host}" if settings.database.is_postgres
                else f"SQLite file {settings.database_path}")
    logger.info(
        "protocols loaded: %s", ", ".join(p.id for p in services.registry.all())
    )
    logger.info("telemetry: %s", "Application Insights (managed identity)" if settings.telemetry.connection_string
                else "off (APPLICATIONINSIGHTS_CONNECTION_STRING unset)")
    logger.info("listening on http://%s:%d/api/messages", settings.host, settings.port)
    # What start-up made (modules, the SDK's models, templates) stays for the process's life, and so
    # does what the first turns load: out of the collector's sight, a full collection under load walks
    # only what is new, instead of stopping the event loop for tens of milliseconds (issue 14).
    freeze_start_up()
    try:
        web.run_app(app, host=settings.host, port=settings.port, print=None)
    except SchemaOutOfDate as error:
        logger.error("%s", error)
        return 2
    return 0

