"""Article 9: a data breach is reported to the DPOs of both parties without delay.

The report says what is known (references, times, states, the categories of data involved)
and never the data itself; it goes by the configured mail transport and into the register.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from email.message import EmailMessage
from email.policy import SMTP
from zoneinfo import ZoneInfo

from bot.protocols import DataSharingProtocol
from bot.referral import DATA_CATEGORIES
from bot.referrals import SentReferral


def build_breach_mail(
    protocol: DataSharingProtocol,
    referrals: Sequence[SentReferral],
    *,
    reported_by: str,
    sender: str,
    now: dt.datetime,
    timezone: ZoneInfo,
) -> EmailMessage:
    """The notification to both DPOs of `protocol` about `referrals`."""
    local = now.astimezone(timezone)
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = ", ".join(dict.fromkeys((protocol.sender_dpo, protocol.recipient_dpo)))
    message["Subject"] = f"Melding gegevenslek (protocol artikel 9) – {protocol.id} – {local:%d/%m/%Y %H:%M}"
    message["Date"] = local
    domain = sender.rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<BREACH-{local:%Y%m%d%H%M%S}-{secrets.token_hex(4)}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"
    message["Importance"] = "high"
    lines = [
        "Beste functionarissen voor gegevensbescherming,",
        "",
        f"Hierbij een melding van een (mogelijk) gegevenslek over gegevens die onder het protocol {protocol.id}",
        f"tussen {protocol.sender.organisation} en {protocol.recipient.organisation} werden meegedeeld",
        "(protocol artikel 9, AVG artikel 33).",
        "",
        f"Gemeld door: {reported_by}",
        f"Gemeld op:   {local:%d/%m/%Y %H:%M}",
        "",
        "Betrokken doorverwijzingen (referentie, verstuurd, status):",
        *(_line(referral, timezone) for referral in referrals),
        "",
        "Categorieën van gegevens per doorverwijzing: " + ", ".join(DATA_CATEGORIES) + ".",
        "Geen bijzondere categorieën van persoonsgegevens (AVG artikel 9 en 10).",
        "Betrokkenen: de ouders van het gezin van elke doorverwijzing (één gezin per referentie).",
        "",
        "Deze mail bevat bewust geen gegevens van de gezinnen: gebruik de referenties.",
        "Overleg onmiddellijk samen over de maatregelen om de gevolgen te beperken en te herstellen.",
        "",
        "Verstuurd door de Teams-bot Veilig doorverwijzen.",
    ]
    message.set_content("\n".join(lines) + "\n")
    return message


def _line(referral: SentReferral, timezone: ZoneInfo) -> str:
    sent = (referral.sent_at or referral.queued_at).astimezone(timezone)
    return f"- {referral.reference}: verstuurd {sent:%d/%m/%Y %H:%M}, status {referral.state.value}"
