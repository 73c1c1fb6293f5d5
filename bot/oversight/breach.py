"""Breach reports from Teams (protocol article 9): who may start one, the card, the mail to both DPOs.

Typing `datalek` (or `breach`) answers with the breach report card for: a Kind en Gezin referrer
(`ReferrerPolicy`: any protocol), an OCMW worker in the conversation linked to a protocol (that
protocol), or a DPO whose Entra object id a protocol file lists (that protocol). Anyone else is told
where to report instead. The card holds no state on the server: nothing is kept until it is sent.

`breach.submit` checks the card (`bot.evidence.breach_form`), looks the references up (unknown ones are listed,
not refused), counts the families and packages concerned, and in one commit queues the mail in the
mail outbox (delivered with retries like a referral; no referral row is needed: the worker delivers a
row it cannot match to a referral and only marks it) and writes `breach_reported` to the register.

The "what happened" text and the other free texts may name a family by mistake: they go only into
the mail (and, until it is delivered, the outbox row that holds it, which is emptied on delivery like
a referral's package). Log lines carry the report id, kind and counts; never those texts. A card that
comes back with errors shows them again, to the one who clicked only (Teams replaces a card with an
invoke's answer for the interactor), so the form is fine in a channel.
"""

from __future__ import annotations

import datetime as dt
import logging
import traceback
from collections.abc import Iterable, Mapping, Sequence
from email.policy import SMTP
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import cards
from bot.clock import Clock
from bot.core.access import ReferrerPolicy
from bot.core.protocols import DataSharingProtocol, ProtocolRegistry
from bot.core.referral_values import FieldError
from bot.core.sent_referrals import OPEN_FOR_OCMW, ReferralState, ReferralStore, SentReferral
from bot.delivery.mail_outbox import Outbox
from bot.evidence.breach_form import validate_breach_form
from bot.evidence.breach_report import (
    REPORT_ID_PATTERN,
    BreachKind,
    BreachReport,
    Concerned,
    CountBasis,
    ReferenceCheck,
    Reporter,
    build_breach_mail,
    new_report_id,
)
from bot.evidence.register import ProcessingRegister, RegisterEvent
from bot.ocmw.links import OcmwLinks
from bot.referral.dialogue import Actor, Answer, Reply
from bot.storage.database import Database

logger = logging.getLogger(__name__)

#: What a user types to start a breach report (after `command_of`: no mention, lower case).
BREACH_WORDS = frozenset({"datalek", "gegevenslek", "datalek melden", "gegevenslek melden", "breach",
                          "data breach", "report breach", "report a breach"})
VERB_SUBMIT = cards.VERB_BREACH_SUBMIT
VERB_CANCEL = cards.VERB_BREACH_CANCEL


class Role(StrEnum):
    """Why this user may report a breach under a protocol; it says who the contact person is."""

    OCMW = "ocmw"  # a member of the conversation linked to the protocol
    SENDER_DPO = "sender_dpo"
    RECIPIENT_DPO = "recipient_dpo"
    REFERRER = "referrer"  # a Kind en Gezin team member allowed to refer


def reporter_for(actor_id: str, name: str, role: Role, protocol: DataSharingProtocol) -> Reporter:
    """The contact person of article 33(3)(b): the reporter, in their role, for their organisation."""
    if role == Role.OCMW:
        return Reporter(actor_id, name, "medewerker in het gekoppelde Teams-kanaal van het OCMW",
                        protocol.recipient.organisation)
    if role == Role.RECIPIENT_DPO:
        return Reporter(actor_id, name, "functionaris voor gegevensbescherming", protocol.recipient.organisation)
    if role == Role.SENDER_DPO:
        return Reporter(actor_id, name, "functionaris voor gegevensbescherming", protocol.sender.organisation)
    return Reporter(actor_id, name, f"doorverwijzer ({protocol.sender.team})", protocol.sender.organisation)


async def assess(
    referrals: ReferralStore, protocol_id: str, kind: BreachKind, references: Sequence[str], discovered_at: dt.datetime
) -> tuple[tuple[ReferenceCheck, ...], Concerned]:
    """Each reference looked up under the protocol, and roughly how many families and packages are concerned.

    From the known references; for a leaked ZIP password from the protocol too: every referral the OCMW
    still holds (deletion not confirmed) and every package sent or queued with the key version in use
    when the leak was found (that of the last package queued before it), since that password opens them.
    """
    checks = []
    for reference in references:
        referral = await referrals.get(reference)
        checks.append(ReferenceCheck(reference, referral if referral and referral.protocol_id == protocol_id else None))
    concerned: dict[str, SentReferral] = {check.reference: check.referral for check in checks if check.referral}
    if kind != BreachKind.ZIP_PASSWORD_LEAKED:
        if not concerned:
            return tuple(checks), Concerned(CountBasis.NONE, None, None)
        return tuple(checks), _counted(CountBasis.REFERENCES, concerned.values())
    kept = await referrals.for_protocol(protocol_id)
    before = [referral for referral in kept if referral.queued_at <= discovered_at]
    key_version = before[-1].key_version if before else None
    still_held = [referral for referral in kept if referral.state in OPEN_FOR_OCMW]
    with_key = [referral for referral in kept
                if key_version is not None and referral.key_version == key_version
                and referral.state != ReferralState.FAILED]
    for referral in (*still_held, *with_key):
        concerned.setdefault(referral.reference, referral)
    counted = _counted(CountBasis.PROTOCOL, concerned.values())
    return tuple(checks), Concerned(CountBasis.PROTOCOL, counted.families, counted.packages, key_version,
                                    len(still_held))


def _counted(basis: CountBasis, referrals: Iterable[SentReferral]) -> Concerned:
    """Families (a referral and its correction versions are one) and packages."""
    listed = list(referrals)
    return Concerned(basis, families=len({referral.root for referral in listed}), packages=len(listed))


async def record_breach(register: ProcessingRegister, report: BreachReport, *, at: dt.datetime, mail: str) -> None:
    """`breach_reported` in the register: one entry for the report, one per known reference it names.

    The detail holds the kind, times, counts and roles; never what the reporter typed. `mail` says
    what happened to the mail ("queued to a, b" or "sent to a, b").
    """
    concerned = report.concerned
    counts = ("unknown" if concerned.families is None
              else f"{concerned.families} families, {concerned.packages} packages")
    unknown = len(report.unknown_references)
    discovered = report.discovered_at.astimezone(dt.UTC)
    detail = (f"kind={report.kind.value}; discovered={discovered.isoformat(timespec='minutes')}; "
              f"deadline={report.deadline.isoformat(timespec='minutes')}; references={len(report.references)} "
              f"({unknown} unknown); concerned={counts} (counted from {concerned.basis.value}"
              + (f", key version {concerned.key_version}" if concerned.key_version else "")
              + f"); categories={','.join(report.categories)}; reporter={report.reporter.role}, "
              f"{report.reporter.organisation}; mail {mail}")
    await register.append(at=at, event=RegisterEvent.BREACH_REPORTED, actor_id=report.reporter.user_id,
                          actor_name=report.reporter.name, protocol_id=report.protocol_id,
                          reference=report.report_id, detail=detail)
    for reference in report.known_references:
        await register.append(at=at, event=RegisterEvent.BREACH_REPORTED, actor_id=report.reporter.user_id,
                              actor_name=report.reporter.name, protocol_id=report.protocol_id, reference=reference,
                        detail=f"named in breach report {report.report_id} ({report.kind.value}); mail {mail}")


class BreachService:
    """The breach report card and its submission; plain Python behind the router."""

    def __init__(
        self,
        *,
        db: Database,
        registry: ProtocolRegistry,
        referrals: ReferralStore,
        links: OcmwLinks,
        register: ProcessingRegister,
        outbox: Outbox,
        referrers: ReferrerPolicy,
        clock: Clock,
        timezone: ZoneInfo,
        mail_from: str,
    ) -> None:
        self._db = db
        self._registry = registry
        self._referrals = referrals
        self._links = links
        self._register = register
        self._outbox = outbox
        self._referrers = referrers
        self._clock = clock
        self._tz = timezone
        self._mail_from = mail_from

    async def roles(self, actor: Actor) -> dict[str, Role]:
        """The protocols this actor may report a breach under, with the role that allows it (first that applies)."""
        linked = {link.protocol_id for link in await self._links.for_conversation(actor.conversation_id)}
        user = actor.user_id.lower()
        referrer = self._referrers.allows(tenant_id=actor.tenant_id, object_id=actor.user_id,
                                          team_or_channel_ids=actor.places)
        roles: dict[str, Role] = {}
        for protocol in self._registry.all():
            if protocol.id in linked:
                roles[protocol.id] = Role.OCMW
            elif user in protocol.recipient_dpo_object_ids:
                roles[protocol.id] = Role.RECIPIENT_DPO
            elif user in protocol.sender_dpo_object_ids:
                roles[protocol.id] = Role.SENDER_DPO
            elif referrer:
                roles[protocol.id] = Role.REFERRER
        return roles

    async def on_command(self, actor: Actor) -> Reply:
        """`datalek`: the card, or a text that says who can report here and where to go instead."""
        roles = await self.roles(actor)
        if not roles:
            logger.warning("breach report refused: not a referrer, OCMW conversation or DPO",
                           extra={"tenant_id": actor.tenant_id[:64]})
            return Reply(text=cards.text(actor.lang, "breach.not_allowed"))
        report_id = new_report_id(self._today())
        logger.info("breach report card shown", extra={"report_id": report_id})
        return Reply(card=self._form(actor, report_id, roles, values={}, errors={}))

    async def on_action(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> Answer:
        """`breach.submit` or `breach.cancel` from the card."""
        roles = await self.roles(actor)
        if not roles:
            logger.warning("breach report action refused: not a referrer, OCMW conversation or DPO",
                           extra={"verb": verb[:64], "tenant_id": actor.tenant_id[:64]})
            return cards.notice_card(actor.lang, cards.text(actor.lang, "breach.not_allowed"))
        report_id = data.get("reportId")
        if not isinstance(report_id, str) or not REPORT_ID_PATTERN.match(report_id):
            return cards.problem_card(actor.lang, "malformed_action")
        if verb == VERB_CANCEL:
            return cards.notice_card(actor.lang, cards.text(actor.lang, "breach.cancelled"))
        try:
            return await self._submit(actor, report_id, roles, data)
        except Exception as error:
            # A message could quote what it choked on, which may be the typed text: the type and frames only.
            logger.error("breach report not queued: unexpected %s\n%s", type(error).__name__,
                         "".join(traceback.format_tb(error.__traceback__)), extra={"report_id": report_id})
            return cards.notice_card(actor.lang, cards.text(actor.lang, "breach.failed", report_id=report_id))

    async def _submit(self, actor: Actor, report_id: str, roles: Mapping[str, Role], data: Mapping[str, Any]) -> Answer:
        now = self._clock.now()
        result = validate_breach_form(data, protocol_ids=roles.keys(), now=now, timezone=self._tz)
        form = result.form
        protocol = None if form is None else self._registry.get(form.protocol_id)
        if form is None or protocol is None:
            logger.info("breach report card refused", extra={"report_id": report_id, "fields": sorted(result.errors)})
            return self._form(actor, report_id, roles, values=result.typed, errors=result.errors)
        checks, concerned = await assess(self._referrals, protocol.id, form.kind, form.references, form.discovered_at)
        report = BreachReport(
            report_id=report_id,
            protocol_id=protocol.id,
            kind=form.kind,
            discovered_at=form.discovered_at,
            reported_at=now,
            what_happened=form.what_happened,
            categories=form.categories,
            references=checks,
            concerned=concerned,
            consequences=form.consequences,
            measures_taken=form.measures_taken,
            measures_proposed=form.measures_proposed,
            reporter=reporter_for(actor.user_id, actor.display_name, roles[protocol.id], protocol),
        )
        message = build_breach_mail(report, protocol, sender=self._mail_from, timezone=self._tz)
        async with self._db.transaction():
            queued = await self._outbox.enqueue(message_id=str(message["Message-ID"]), reference=report_id,
                                                payload=message.as_bytes(policy=SMTP), now=now)
            if queued:
                await record_breach(self._register, report, at=now, mail=f"queued to {message['To']}")
        if queued:
            logger.info("breach report queued for both DPOs", extra={
                "report_id": report_id, "protocol_id": protocol.id, "kind": report.kind.value,
                "references": len(checks), "unknown_references": len(report.unknown_references),
                "families": concerned.families, "packages": concerned.packages})
        return cards.breach_reported_card(actor.lang, self._view(report, protocol, already=not queued))

    def _form(self, actor: Actor, report_id: str, roles: Mapping[str, Role], *, values: Mapping[str, str],
              errors: Mapping[str, FieldError]) -> cards.Card:
        protocols = [(protocol.id, protocol.recipient.organisation) for protocol in self._registry.all()
                     if protocol.id in roles]
        return cards.breach_report_card(actor.lang, report_id=report_id, protocols=protocols, today=self._today(),
                                        values=values, errors=errors)

    def _view(self, report: BreachReport, protocol: DataSharingProtocol, *, already: bool) -> cards.BreachReportedView:
        status = report.deadline_status()
        return cards.BreachReportedView(
            report_id=report.report_id,
            recipient=protocol.recipient.organisation,
            dpos=tuple(dict.fromkeys((protocol.sender_dpo, protocol.recipient_dpo))),
            discovered_at=report.discovered_at.astimezone(self._tz),
            deadline=report.deadline.astimezone(self._tz),
            deadline_state=status.state,
            hours=status.hours,
            known_references=len(report.known_references),
            unknown_references=tuple(report.unknown_references),
            families=report.concerned.families,
            packages=report.concerned.packages,
            already_reported=already,
        )

    def _today(self) -> dt.date:
        return self._clock.now().astimezone(self._tz).date()
