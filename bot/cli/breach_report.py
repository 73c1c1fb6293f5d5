"""`python -m bot breach-report`: notify both DPOs now (article 9), without Teams.

The administrator's way when the bot itself is down: it sends at once through the configured
transport (not the outbox, which only the running bot empties) and says whether it went. Same
report, mail and register entries as the Teams card (`bot.oversight.breach`). References are optional with
`--protocol`; without it, each reference's protocol gets its own report and an unknown reference
stops the command (there is no protocol to address it to).

A report's register entries are one commit, after the mail went: the register never says a mail
went that did not. One DPO's server took it and the other's refused: "sent to X, refused for Y: ...",
recorded, exit 1 (the operator mails Y; run again, X would get a second report). Killed between the two
(it printed no "sent" line), the DPOs have the mail and the register nothing of it; run again, it mails
once more under a new report id and records that.
Mail and entries cannot share a commit here: that needs the outbox, which only the running bot
empties, and holding SQLite's writer lock over an SMTP exchange would stop a bot that does run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections import defaultdict

from bot.clock import Clock
from bot.config import Settings
from bot.core.protocols import load_registry
from bot.core.sent_referrals import ReferralStore
from bot.delivery.mail_message import OutgoingMail
from bot.delivery.mail_transport import MailDeliveryError, PartlyDelivered
from bot.evidence.breach_form import parse_references
from bot.evidence.breach_report import (
    BREACH_CATEGORIES,
    BreachKind,
    BreachReport,
    Reporter,
    build_breach_mail,
    new_report_id,
)
from bot.evidence.register import ProcessingRegister
from bot.oversight.breach import assess, record_breach
from bot.wiring import Closer, build_mail_transport, open_database_for_command


def add_breach_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `breach-report` on the command line."""
    parser = subparsers.add_parser("breach-report", help="notify both parties' DPOs of a data breach (article 9)")
    parser.add_argument("--reference", action="append", default=[], help="a referral reference; repeatable")
    parser.add_argument("--protocol", help="the protocol id; needed without --reference, lists unknown references")
    parser.add_argument("--kind", choices=[kind.value for kind in BreachKind], default=BreachKind.OTHER.value)
    parser.add_argument("--discovered-at", help="when it was found, local time: 2026-11-28T09:30 (default: now)")
    parser.add_argument("--what-happened", default="", help="what happened, without names or addresses")
    parser.add_argument("--category", action="append", choices=BREACH_CATEGORIES, default=[],
                        help="a data category concerned; repeatable (default: unknown)")
    parser.add_argument("--consequences", default="", help="the likely consequences")
    parser.add_argument("--measures-taken", default="", help="the measures already taken")
    parser.add_argument("--measures-proposed", default="", help="the measures proposed")
    parser.add_argument("--reported-by", default="beheerder", help="who reports (name), the contact person")
    parser.add_argument("--role", default="functioneel beheerder", help="the reporter's role")
    parser.add_argument("--organisation", default="", help="the reporter's organisation (default: the sender's)")


def run_breach_command(arguments: argparse.Namespace, settings: Settings, clock: Clock) -> int:
    """Send one notification per protocol involved; exit 0 when every one went out to both DPOs, 1 when the
    transport refused one (for one DPO: printed and recorded as sent to the other, refused for that one), 2 on
    wrong input."""
    return asyncio.run(_report(arguments, settings, clock))


async def _report(arguments: argparse.Namespace, settings: Settings, clock: Clock) -> int:
    references, malformed = parse_references(",".join(arguments.reference))
    if malformed:
        sys.stderr.write(f"not a reference: {', '.join(malformed)}\n")
        return 2
    now = clock.now()
    discovered_at = _discovered_at(arguments.discovered_at, settings, now)
    if discovered_at is None:
        sys.stderr.write("--discovered-at: give a local time like 2026-11-28T09:30, not in the future\n")
        return 2
    protocol_id: str | None = arguments.protocol
    registry = load_registry(settings.protocols_dir)
    if protocol_id is None and not references:
        sys.stderr.write("give --reference, or --protocol for a breach without known references\n")
        return 2
    if protocol_id is not None and registry.get(protocol_id) is None:
        sys.stderr.write(f"protocol {protocol_id} is not loaded\n")
        return 2
    closers: list[Closer] = []
    db = await open_database_for_command(settings, closers)
    try:
        store = ReferralStore(db)
        by_protocol: dict[str, list[str]] = defaultdict(list)
        for reference in references:
            referral = await store.get(reference)
            if protocol_id is not None:
                by_protocol[protocol_id].append(reference)  # checked against it: another protocol's is unknown
            elif referral is not None:
                by_protocol[referral.protocol_id].append(reference)
            else:
                sys.stderr.write(f"unknown reference {reference!r}: give --protocol to report it anyway\n")
                return 2
        if protocol_id is not None:
            by_protocol.setdefault(protocol_id, [])
        transport = build_mail_transport(settings, closers)
        register = ProcessingRegister(db)
        kind = BreachKind(arguments.kind)
        categories = tuple(c for c in BREACH_CATEGORIES if c in (arguments.category or ["unknown"]))
        name = str(arguments.reported_by)
        status = 0  # 1 once a report was refused for one of its DPOs
        for current_id, listed in by_protocol.items():
            protocol = registry.get(current_id)
            if protocol is None:
                sys.stderr.write(f"protocol {current_id} is no longer loaded\n")
                return 2
            checks, concerned = await assess(store, current_id, kind, listed, discovered_at)
            report = BreachReport(
                report_id=new_report_id(now.astimezone(settings.timezone).date()),
                protocol_id=current_id,
                kind=kind,
                discovered_at=discovered_at,
                reported_at=now,
                what_happened=arguments.what_happened,
                categories=categories,
                references=checks,
                concerned=concerned,
                consequences=arguments.consequences,
                measures_taken=arguments.measures_taken,
                measures_proposed=arguments.measures_proposed,
                reporter=Reporter(f"cli:{name}", name, arguments.role,
                                  arguments.organisation or protocol.sender.organisation),
            )
            message = build_breach_mail(report, protocol, sender=settings.mail_from, timezone=settings.timezone)
            sent = f"sent to {message['To']}"
            try:
                await transport.send(OutgoingMail.from_message(message))
            except PartlyDelivered as error:  # one DPO has it: recorded as such, the other to be mailed by hand
                sent = f"sent to {', '.join(error.accepted)}, refused for {', '.join(error.refused)}: {error.reason}"
                status = 1
            except MailDeliveryError as error:
                sys.stderr.write(f"NOT sent to {message['To']}: {error.reason}\n")
                return 1
            async with db.transaction():  # the report's entry and its references': all or none
                await record_breach(register, report, at=clock.now(), mail=sent)
            unknown = len(report.unknown_references)
            sys.stdout.write(f"{report.report_id} {sent} ({len(checks)} reference(s), {unknown} unknown)\n")
        return status
    finally:
        for close in closers:
            await close()
        await db.close()


def _discovered_at(typed: str | None, settings: Settings, now: dt.datetime) -> dt.datetime | None:
    """The moment of discovery in local time (`now` when not given); None when unreadable or in the future."""
    if not typed:
        return now
    try:
        moment = dt.datetime.fromisoformat(typed)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=settings.timezone)
    return None if moment > now else moment
