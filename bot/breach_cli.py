"""`python -m bot breach-report --reference REF ...`: notify both DPOs now (article 9)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import defaultdict

from bot.breach_report import build_breach_mail
from bot.clock import Clock
from bot.config import Settings
from bot.database import open_database
from bot.mail_transport import MailDeliveryError
from bot.protocols import load_registry
from bot.reference import is_reference
from bot.referrals import ReferralStore, SentReferral
from bot.register import ProcessingRegister, RegisterEvent
from bot.wiring import Closer, build_mail_transport


def add_breach_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `breach-report` on the command line."""
    parser = subparsers.add_parser("breach-report", help="notify both parties' DPOs of a data breach (article 9)")
    parser.add_argument("--reference", action="append", required=True, help="a referral reference; repeatable")
    parser.add_argument("--reported-by", default="beheerder", help="who reports (name or role), for the register")


def run_breach_command(arguments: argparse.Namespace, settings: Settings, clock: Clock) -> int:
    """Send one notification per protocol involved; exit 0 when every one went out."""
    return asyncio.run(_report(list(arguments.reference), str(arguments.reported_by), settings, clock))


async def _report(references: list[str], reported_by: str, settings: Settings, clock: Clock) -> int:
    registry = load_registry(settings.protocols_dir)
    connection = open_database(settings.database_path)
    closers: list[Closer] = []
    try:
        store = ReferralStore(connection)
        by_protocol: dict[str, list[SentReferral]] = defaultdict(list)
        for reference in references:
            referral = store.get(reference) if is_reference(reference) else None
            if referral is None:
                sys.stderr.write(f"unknown reference {reference!r}\n")
                return 2
            by_protocol[referral.protocol_id].append(referral)
        transport = build_mail_transport(settings, closers)
        register = ProcessingRegister(connection)
        for protocol_id, referrals in by_protocol.items():
            protocol = registry.get(protocol_id)
            if protocol is None:
                sys.stderr.write(f"protocol {protocol_id} is no longer loaded\n")
                return 2
            now = clock.now()
            message = build_breach_mail(protocol, referrals, reported_by=reported_by, sender=settings.mail_from,
                                        now=now, timezone=settings.timezone)
            try:
                await transport.send(message)
            except MailDeliveryError as error:
                sys.stderr.write(f"NOT sent to {message['To']}: {error.reason}\n")
                return 1
            for referral in referrals:
                register.append(at=now, event=RegisterEvent.BREACH_REPORTED, actor_id=f"cli:{reported_by}",
                                actor_name=reported_by, protocol_id=protocol_id, reference=referral.reference,
                                detail=f"DPOs notified: {message['To']}")
            sys.stdout.write(f"sent to {message['To']} ({len(referrals)} reference(s))\n")
        return 0
    finally:
        for close in closers:
            await close()
        connection.close()
