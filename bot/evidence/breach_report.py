"""Article 9: a data breach is reported to the DPOs of both parties without delay.

The report carries what GDPR article 33(3) asks of a notification, so a DPO can act on it: what
happened and when it was found, which categories of data and roughly how many families and records,
the likely consequences, the measures taken and proposed, and who to contact. It also shows the
72-hour clock of article 33(1), counted from the discovery, and names the supervisory authority.

Plain values, no I/O. The report never holds client data by design: references, categories,
counts, and what the reporter typed. That typed text is the one risk (a person may name a family
by mistake), so it is kept out of `repr` and goes only into the mail to the two DPOs.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo

from bot.core.protocols import DataSharingProtocol
from bot.core.reference import REFERENCE_ALPHABET
from bot.core.referral_values import DATA_CATEGORIES
from bot.core.sent_referrals import SentReferral

#: GDPR article 33(1): the controller notifies the supervisory authority within 72 hours of becoming aware.
NOTIFICATION_DEADLINE = dt.timedelta(hours=72)
#: The supervisory authority of Flemish public bodies, local governments (the OCMW) included.
SUPERVISORY_AUTHORITY = "Vlaamse Toezichtcommissie voor de verwerking van persoonsgegevens"
SUPERVISORY_AUTHORITY_URL = "https://www.vlaamsetoezichtcommissie.be"
#: A breach report's own reference, quoted between the reporter and the DPOs: DL-20261128-K7M2QX.
REPORT_ID_PATTERN = re.compile(r"^DL-[0-9]{8}-[" + REFERENCE_ALPHABET + r"]{6}$")


class BreachKind(StrEnum):
    """What kind of breach the reporter saw (the card's first choice)."""

    WRONG_RECIPIENT = "wrong_recipient"
    #: A kind of breach, not a password (the linters only see the name); it concerns every package that key opens.
    ZIP_PASSWORD_LEAKED = "zip_password_leaked"  # noqa: S105  # nosec B105
    DEVICE_LOST = "device_lost"
    UNAUTHORISED_ACCESS = "unauthorised_access"
    OTHER = "other"


#: The data categories a reporter can tick: the protocol's four, and "not known yet".
BREACH_CATEGORIES: tuple[str, ...] = (*DATA_CATEGORIES, "unknown")

_KIND_LABELS = {
    BreachKind.WRONG_RECIPIENT: "mail of bijlage bij een verkeerde ontvanger",
    BreachKind.ZIP_PASSWORD_LEAKED: "het ZIP-wachtwoord van het protocol is uitgelekt",
    BreachKind.DEVICE_LOST: "toestel of bestand verloren of gestolen",
    BreachKind.UNAUTHORISED_ACCESS: "toegang door iemand die er geen recht op had",
    BreachKind.OTHER: "iets anders (zie de beschrijving)",
}
_CATEGORY_LABELS = {
    "identification:name": "identificatie: naam",
    "contact:address": "contact: adres",
    "contact:phone": "contact: telefoonnummer",
    "contact:email": "contact: e-mailadres",
    "unknown": "nog niet bekend",
}
_TIME = "%d/%m/%Y %H:%M"


def new_report_id(day: dt.date, rng: random.Random | None = None) -> str:
    """A new breach report id like `DL-20261128-K7M2QX`: short enough to say on the phone."""
    source = rng if rng is not None else secrets.SystemRandom()
    return f"DL-{day:%Y%m%d}-" + "".join(source.choice(REFERENCE_ALPHABET) for _ in range(6))


@dataclass(frozen=True)
class Reporter:
    """The contact person of article 33(3)(b): who reported, in which role, for which organisation."""

    user_id: str  # the Entra object id from Teams, or `cli:<name>`
    name: str
    role: str
    organisation: str


@dataclass(frozen=True)
class ReferenceCheck:
    """A reference the reporter gave: the referral it names under the protocol, or None (listed as unknown)."""

    reference: str
    referral: SentReferral | None

    @property
    def known(self) -> bool:
        """True when the bot keeps a referral with this reference under the report's protocol."""
        return self.referral is not None


class CountBasis(StrEnum):
    """Where the numbers of families and records come from."""

    REFERENCES = "references"  # the known references the reporter gave
    PROTOCOL = "protocol"  # a leaked ZIP password: every package it opens that still matters
    NONE = "none"  # no references and not a password: the DPOs estimate


@dataclass(frozen=True)
class Concerned:
    """Roughly how many families (data subjects) and packages (records) the breach concerns."""

    basis: CountBasis
    families: int | None  # None: not known from what the bot keeps
    packages: int | None
    #: For a leaked password: the key version in use when the breach was found (None when none was used yet),
    #: and how many of the packages the OCMW still holds (deletion not confirmed).
    key_version: str | None = None
    still_held: int = 0


@dataclass(frozen=True)
class DeadlineStatus:
    """Where the 72-hour clock stood when the report was made."""

    state: Literal["left", "under_hour", "passed"]
    hours: int  # whole hours left, or (when passed) whole hours since, at least 1


@dataclass(frozen=True, repr=False)
class BreachReport:
    """One breach report, everything article 33(3) asks for; `repr` is off (the typed texts may hold a name)."""

    report_id: str
    protocol_id: str
    kind: BreachKind
    discovered_at: dt.datetime
    reported_at: dt.datetime
    what_happened: str
    categories: tuple[str, ...]
    references: tuple[ReferenceCheck, ...]
    concerned: Concerned
    consequences: str
    measures_taken: str
    measures_proposed: str
    reporter: Reporter

    def __post_init__(self) -> None:
        if self.discovered_at.tzinfo is None or self.reported_at.tzinfo is None:
            raise ValueError("naive datetime")
        unknown = set(self.categories) - set(BREACH_CATEGORIES)
        if unknown:
            raise ValueError(f"unknown categories {sorted(unknown)}")

    @property
    def deadline(self) -> dt.datetime:
        """72 real hours after the discovery, in UTC: aware arithmetic within one zone adds wall-clock hours,
        which across the change to summer time would give 71."""
        return self.discovered_at.astimezone(dt.UTC) + NOTIFICATION_DEADLINE

    def deadline_status(self) -> DeadlineStatus:
        """The clock at the moment of reporting: hours left, under an hour, or hours past."""
        seconds = (self.deadline - self.reported_at.astimezone(dt.UTC)).total_seconds()
        if seconds >= 3600:
            return DeadlineStatus("left", math.floor(seconds / 3600))
        if seconds >= 0:
            return DeadlineStatus("under_hour", 0)
        return DeadlineStatus("passed", max(1, math.floor(-seconds / 3600)))

    @property
    def known_references(self) -> list[str]:
        """The references the bot found under the protocol, in the order given."""
        return [check.reference for check in self.references if check.known]

    @property
    def unknown_references(self) -> list[str]:
        """The references the bot did not find (a typo, another protocol, or pruned after retention)."""
        return [check.reference for check in self.references if not check.known]


def category_label(category: str) -> str:
    """A category as the DPOs read it: `contact:phone (contact: telefoonnummer)`."""
    return f"{category} ({_CATEGORY_LABELS.get(category, category)})"


def kind_label(kind: BreachKind) -> str:
    """The kind in Dutch, as the mail says it."""
    return _KIND_LABELS[kind]


def build_breach_mail(
    report: BreachReport, protocol: DataSharingProtocol, *, sender: str, timezone: ZoneInfo
) -> EmailMessage:
    """The notification to both DPOs of `protocol`: every article 33(3) field, the deadline, the authority.

    Subject and headers hold ids, the protocol and times only; the body holds what the reporter typed
    (indented, and only here) and references and counts.
    """
    reported = report.reported_at.astimezone(timezone)
    deadline = report.deadline.astimezone(timezone)
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = ", ".join(dict.fromkeys((protocol.sender_dpo, protocol.recipient_dpo)))
    message["Subject"] = (f"Melding gegevenslek {report.report_id} (protocol artikel 9) – {protocol.id} – "
                          f"melden uiterlijk {deadline:{_TIME}}")
    message["Date"] = reported
    # From the report id: a second click on the same card builds the same mail, which the outbox queues once.
    message["Message-ID"] = f"<{report.report_id}@{sender.rpartition('@')[2] or 'localhost'}>"
    message["Auto-Submitted"] = "auto-generated"
    message["Importance"] = "high"
    message.set_content("\n".join(_body(report, protocol, timezone)) + "\n")
    return message


def _body(report: BreachReport, protocol: DataSharingProtocol, timezone: ZoneInfo) -> list[str]:
    discovered = report.discovered_at.astimezone(timezone)
    reported = report.reported_at.astimezone(timezone)
    deadline = report.deadline.astimezone(timezone)
    reporter = report.reporter
    return [
        "Beste functionarissen voor gegevensbescherming,",
        "",
        f"Hierbij de melding {report.report_id} van een (mogelijk) gegevenslek over gegevens die onder het",
        f"protocol {protocol.id} tussen {protocol.sender.organisation} en {protocol.recipient.organisation}",
        "werden meegedeeld (protocol artikel 9, AVG artikel 33).",
        "",
        "TERMIJN VAN 72 UUR (AVG artikel 33(1))",
        f"Ontdekt op:        {discovered:{_TIME}} ({timezone.key})",
        f"Gemeld op:         {reported:{_TIME}}",
        f"Uiterlijk melden:  {deadline:{_TIME}}, 72 uur na de ontdekking: {_clock_text(report)}",
        f"Toezichthoudende autoriteit: de {SUPERVISORY_AUTHORITY}",
        f"({SUPERVISORY_AUTHORITY_URL}). De DPO van de verwerkingsverantwoordelijke bij wie het lek",
        "gebeurde, meldt het daar zonder onredelijke vertraging en binnen deze termijn, tenzij het lek",
        "waarschijnlijk geen risico inhoudt voor de gezinnen. Komt de melding later, dan zegt ze waarom.",
        "Houdt het lek een hoog risico in, dan worden ook de gezinnen ingelicht (AVG artikel 34).",
        "Documenteer het lek in elk geval, ook als het niet gemeld wordt (AVG artikel 33(5)).",
        "",
        "1. AARD VAN HET LEK (AVG artikel 33(3)(a))",
        f"Soort: {kind_label(report.kind)}",
        "Wat er gebeurde, zoals de melder het typte:",
        *_typed(report.what_happened),
        "Categorieën van persoonsgegevens: " + ", ".join(category_label(c) for c in report.categories) + ".",
        "Geen bijzondere categorieën van persoonsgegevens (AVG artikel 9 en 10): het protocol deelt alleen",
        "naam en contactgegevens.",
        "Categorieën van betrokkenen: de ouders van de doorverwezen gezinnen.",
        *_counts(report.concerned),
        "Referenties die de melder opgaf:",
        *_reference_lines(report.references, timezone),
        "",
        "2. CONTACTPERSOON (AVG artikel 33(3)(b))",
        f"Melder: {reporter.name}, {reporter.role}, {reporter.organisation}",
        f"        Teams: Entra object id {reporter.user_id}",
        f"DPO's:  {protocol.sender_dpo} ({protocol.sender.organisation}), "
        f"{protocol.recipient_dpo} ({protocol.recipient.organisation})",
        "",
        "3. WAARSCHIJNLIJKE GEVOLGEN (AVG artikel 33(3)(c))",
        *_typed(report.consequences),
        "",
        "4. MAATREGELEN (AVG artikel 33(3)(d))",
        "Al genomen:",
        *_typed(report.measures_taken),
        "Voorgesteld:",
        *_typed(report.measures_proposed),
        "",
        "De teksten hierboven typte de melder zelf; de kaart vroeg geen namen of adressen van gezinnen te",
        "noemen. Staan er toch gegevens van een gezin in, behandel deze mail dan als vertrouwelijk.",
        "De bot schrijft deze teksten niet in zijn logboek of register; het register noemt alleen de melding,",
        "de soort, de aantallen en de referenties.",
        "Overleg onmiddellijk samen over de maatregelen om de gevolgen te beperken en te herstellen",
        "(protocol artikel 9).",
        "",
        "Verstuurd door de Teams-bot Veilig doorverwijzen.",
    ]


def _clock_text(report: BreachReport) -> str:
    status = report.deadline_status()
    if status.state == "left":
        return f"nog {status.hours} uur op het moment van deze melding."
    if status.state == "under_hour":
        return "nog minder dan een uur op het moment van deze melding."
    return f"die termijn was bij deze melding al {status.hours} uur voorbij."


def _typed(text: str) -> list[str]:
    """A text the reporter typed, indented so nobody mistakes it for the bot's own words."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    if not any(lines):
        return ["    (niet ingevuld door de melder: te bekijken door de DPO's)"]
    return ["    " + line for line in lines]


def _counts(concerned: Concerned) -> list[str]:
    if concerned.families is None or concerned.packages is None:
        return ["Aantal betrokkenen en gegevensrecords: niet bekend. De melder gaf geen gekende referenties;",
                "schat het aantal samen in."]
    lines = [
        f"Aantal betrokkenen (bij benadering): de ouders van {concerned.families} gezin(nen).",
        f"Aantal gegevensrecords: {concerned.packages} doorverwijzing(en) (versleutelde pakketten, correcties",
        "meegeteld), elk met de categorieën hierboven.",
    ]
    if concerned.basis == CountBasis.PROTOCOL:
        version = (f"sleutelversie {concerned.key_version}" if concerned.key_version
                   else "geen sleutelversie (er was nog niets verstuurd)")
        lines += [
            "Geteld omdat het ZIP-wachtwoord uitlekte: elke doorverwijzing onder dit protocol die het OCMW nog",
            "bewaart (verwijdering niet bevestigd), en elke doorverwijzing die verstuurd werd met de sleutel",
            f"die in gebruik was toen het lek ontdekt werd ({version}), plus de gekende referenties.",
            f"Daarvan bewaart het OCMW er nog {concerned.still_held}. Vervang het wachtwoord (nieuwe sleutelversie).",
        ]
    else:
        lines.append("Geteld uit de gekende referenties die de melder opgaf.")
    return lines


def _reference_lines(references: Sequence[ReferenceCheck], timezone: ZoneInfo) -> list[str]:
    if not references:
        return ["- geen"]
    lines = []
    for check in references:
        referral = check.referral
        if referral is None:
            lines.append(f"- {check.reference}: onbekend (niet gevonden onder dit protocol: verkeerd getypt, "
                         "of al opgeruimd na de bewaartermijn)")
            continue
        sent = (referral.sent_at or referral.queued_at).astimezone(timezone)
        lines.append(f"- {check.reference}: verstuurd {sent:{_TIME}}, status {referral.state.value}, "
                     f"sleutelversie {referral.key_version}")
    return lines
