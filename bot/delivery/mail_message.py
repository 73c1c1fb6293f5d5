"""The mail that carries the encrypted package to the OCMW mailbox of the protocol.

Pure: builds an `EmailMessage`, sends nothing. Headers and body name the reference, the team and
the date only; every client value stays inside the encrypted attachment.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import re
import zoneinfo
from email.message import EmailMessage
from typing import Protocol

from bot.core.protocols import DataSharingProtocol

_REFERENCE_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,63}$")
_DOMAIN_PATTERN = re.compile(r"^[A-Za-z0-9.-]+$")


def message_id_for(reference: str, sender: str) -> str:
    """`<reference@sender-domain>`: the same for a resend, so the OCMW's mail client sees a duplicate."""
    if not _REFERENCE_PATTERN.match(reference):
        raise ValueError("the reference may only hold A-Z, 0-9 and '-'")
    _, address = email.utils.parseaddr(sender)
    local, at, domain = address.rpartition("@")
    if not (local and at and _DOMAIN_PATTERN.match(domain)):
        raise ValueError("the sender needs an address with a domain to derive the Message-ID from")
    return f"<{reference}@{domain.lower()}>"


class MailFacts(Protocol):
    """What the mail says about a package: never the client data itself."""

    @property
    def reference(self) -> str: ...
    @property
    def protocol(self) -> DataSharingProtocol: ...
    @property
    def key_version(self) -> str: ...
    @property
    def created_at(self) -> dt.datetime: ...


def build_referral_mail(
    contents: MailFacts,
    package: bytes,
    *,
    sender: str,
    local_tz: zoneinfo.ZoneInfo,
    corrects: str | None = None,
) -> EmailMessage:
    """Return the mail to the protocol's mailbox with `package` attached as `<reference>.zip`.

    `corrects` names the earlier reference when the package carries a correction (article 7).
    """
    if contents.created_at.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware")
    created = contents.created_at.astimezone(local_tz)
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = contents.protocol.recipient_mailbox
    message["Subject"] = _subject(contents, created.strftime("%d/%m/%Y"), corrects)
    message["Date"] = created
    message["Message-ID"] = message_id_for(contents.reference, sender)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office loops
    message.set_content(_body(contents, created.strftime("%d/%m/%Y %H:%M"), corrects))
    message.add_attachment(package, maintype="application", subtype="zip", filename=f"{contents.reference}.zip")
    return message


def _subject(contents: MailFacts, date: str, corrects: str | None) -> str:
    """Reference, team and date only: a subject is visible in every mailbox list and log."""
    kind = "Doorverwijzing" if corrects is None else f"Correctie voor {corrects}:"
    return f"{kind} {contents.reference} – {contents.protocol.sender.team} – {date}"


def _body(contents: MailFacts, created: str, corrects: str | None) -> str:
    """What the OCMW worker must know and do (CONTENT.md, "The mail to the OCMW")."""
    protocol, reference = contents.protocol, contents.reference
    intro = f"{protocol.sender.team} ({protocol.sender.organisation}) verwijst een gezin naar u door."
    if corrects is not None:
        # Asked by the OCMW or on Kind en Gezin's own initiative: the words fit both.
        intro = (
            f"Dit is een correctie van doorverwijzing {corrects} (protocol artikel 7): {protocol.sender.team} stuurt "
            "hierbij het juiste gegeven. De bijlage bevat alleen het verbeterde gegeven."
        )
    # One line per paragraph or bullet: mail clients wrap plain text to the reader's window.
    lines = [
        f"Beste collega van {protocol.recipient.organisation},",
        "",
        intro,
        "",
        f"Referentie:     {reference}",
        f"Datum:          {created}",
        f"Protocol:       {protocol.id}",
        f"Sleutelversie:  {contents.key_version}",
        "",
        f"Deze doorverwijzing gebeurt onder het protocol tussen {protocol.sender.organisation} en "
        f"{protocol.recipient.organisation} (artikel 10/1 van het decreet van 30 april 2004). "
        "De doorverwijzer bevestigde in Teams dat de ouders geïnformeerd werden en hun toestemming gaven.",
        "",
        f"De gegevens van het gezin zitten versleuteld in de bijlage {reference}.zip.",
        "- Open de bijlage met 7-Zip. Windows Verkenner kan dit versleutelde zip-bestand (AES-256) niet openen.",
        "- Het wachtwoord is het wachtwoord dat voor dit protocol is afgesproken, "
        f"sleutelversie {contents.key_version}. Het wachtwoord staat nooit in een mail.",
        "",
        "Wat wij u vragen:",
        f"- Bevestig de ontvangst in Teams, met de referentie {reference}.",
        "- Bewaar de gegevens alleen tot u contact hebt gehad met het gezin en duidelijk is of het verdere hulp "
        "wenst. Wenst het gezin hulp, dan komen de gegevens in een dossier van het OCMW; zo niet, verwijder ze dan.",
        "- Zijn gegevens foutief, onvolledig of verouderd? Meld dat onmiddellijk aan "
        f"{protocol.sender.team}, met de referentie (protocol artikel 7).",
        "- Meld een gegevenslek zonder uitstel aan de functionarissen voor gegevensbescherming "
        f"(protocol artikel 9): {protocol.sender_dpo} ({protocol.sender.organisation}) en "
        f"{protocol.recipient_dpo} ({protocol.recipient.organisation}).",
        "",
        "Vermeld in een antwoord alleen de referentie, nooit gegevens van het gezin.",
        "",
        "Met vriendelijke groeten,",
        protocol.sender.team,
        protocol.sender.organisation,
        "",
        "Deze mail werd automatisch verstuurd door de Teams-bot Veilig doorverwijzen.",
    ]
    return "\n".join(lines) + "\n"
