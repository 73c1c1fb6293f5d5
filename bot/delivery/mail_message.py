"""The mail that carries the encrypted package to the OCMW mailbox of the protocol.

Pure: renders the finished RFC 5322 message once, as bytes, and sends nothing. Headers and body name
the reference, the team and the date only; every client value stays inside the encrypted attachment.

The bytes are exactly what the `email` package writes for the same message (`EmailMessage` with
`policy.SMTP`, `set_content`, `add_attachment`; the tests compare them), built without its object
model: building the message, writing it for the outbox, parsing it back in the worker and writing
it again in the transport took 2.2 ms of CPU per mail, as much as encrypting the package; this takes
0.15 ms. Transports send these bytes as they are.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.policy
import email.quoprimime
import email.utils
import functools
import random
import re
import sys
import zoneinfo
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from typing import Protocol

from bot.core.protocols import DataSharingProtocol

_REFERENCE_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,63}$")
_DOMAIN_PATTERN = re.compile(r"^[A-Za-z0-9.-]+$")
_POLICY = email.policy.SMTP  # CRLF line ends, 78-character lines, RFC 2047 for non-ASCII header text
_LINE_LENGTH = 78  # the policy's max_line_length
_CRLF = "\r\n"
_TEXT_PART_HEADERS = 'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))  # as the email package makes them: 15 '=', the digits, '=='


def message_id_for(reference: str, sender: str) -> str:
    """`<reference@sender-domain>`: the same for a resend, so the OCMW's mail client sees a duplicate."""
    if not _REFERENCE_PATTERN.match(reference):
        raise ValueError("the reference may only hold A-Z, 0-9 and '-'")
    local, at, domain = _address(sender).rpartition("@")
    if not (local and at and _DOMAIN_PATTERN.match(domain)):
        raise ValueError("the sender needs an address with a domain to derive the Message-ID from")
    return f"<{reference}@{domain.lower()}>"


@functools.lru_cache(maxsize=64)
def _address(sender: str) -> str:
    """The address in `Name <address>`; the sender is the same for every mail, parse it once."""
    return email.utils.parseaddr(sender)[1]


@dataclass(frozen=True)
class OutgoingMail:
    """A finished message (RFC 5322, CRLF line ends) and its SMTP envelope: what transports deliver as is.

    `mail["Subject"]` reads a header, decoded, as from an `EmailMessage` (None when absent).
    """

    data: bytes = field(repr=False)
    sender: str  # the envelope sender (MAIL FROM): the From address
    recipients: tuple[str, ...]  # the envelope recipients (RCPT TO): the To and Cc addresses
    message_id: str

    def as_bytes(self) -> bytes:
        """The message as it goes on the wire (and into the outbox)."""
        return self.data

    def __getitem__(self, name: str) -> str | None:
        """A header as `EmailMessage` gives it, for the few callers that read one (not the transports)."""
        value = self._headers[name]
        return None if value is None else str(value)

    @functools.cached_property
    def _headers(self) -> Message:
        """Only the header block, parsed when a caller first asks for a header (tests, the breach CLI)."""
        return BytesHeaderParser(policy=email.policy.default).parsebytes(_header_block(self.data))

    @classmethod
    def from_bytes(cls, data: bytes) -> OutgoingMail:
        """A stored message (the outbox's payload): the envelope read from its headers, the rest untouched.

        Never raises: a message without a From or a To gets an empty envelope, which every transport
        refuses as a permanent failure, as it refused such a message before.
        """
        headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(_header_block(data))
        sender = email.utils.parseaddr(str(headers.get("From", "")))[1]
        fields = [str(value) for name in ("To", "Cc") for value in headers.get_all(name, [])]
        recipients = tuple(address for _, address in email.utils.getaddresses(fields) if address)
        return cls(data, sender, recipients, str(headers.get("Message-ID", "")).strip())

    @classmethod
    def from_message(cls, message: EmailMessage) -> OutgoingMail:
        """A message built with the `email` package (the breach report), serialised here once.

        Refuses a Bcc header: the envelope is read from the headers every transport sends, so a
        blind copy would show (Graph reads the MIME's own headers; the bot sends none).
        """
        if message.get_all("Bcc"):
            raise ValueError("the bot sends no blind copies: remove the Bcc header")
        return cls.from_bytes(message.as_bytes(policy=_POLICY))


def _header_block(data: bytes) -> bytes:
    """The header lines, without the body: the envelope needs no more, and the body is most of the bytes."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    return data if end < 0 else data[: end + 2]


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
) -> OutgoingMail:
    """Return the mail to the protocol's mailbox with `package` attached as `<reference>.zip`.

    `corrects` names the earlier reference when the package carries a correction (article 7).
    A header value with a line break raises ValueError, as `EmailMessage` does.
    """
    if contents.created_at.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware")
    created = contents.created_at.astimezone(local_tz)
    recipient = contents.protocol.recipient_mailbox
    message_id = message_id_for(contents.reference, sender)
    text = email.quoprimime.body_encode(
        _body(contents, created.strftime("%d/%m/%Y %H:%M"), corrects).encode("utf-8").decode("latin-1"),
        _LINE_LENGTH,
    ).replace("\n", _CRLF)
    attachment = base64.encodebytes(package).decode("ascii").replace("\n", _CRLF)
    boundary = _boundary(text)
    parts = [
        _cached_header("From", sender),
        _cached_header("To", recipient),
        _header("Subject", _subject(contents, created.strftime("%d/%m/%Y"), corrects)),
        f"Date: {email.utils.format_datetime(created)}\r\n",  # short ASCII: written as it is
        _own_header("Message-ID", message_id),
        "Auto-Submitted: auto-generated\r\n",  # RFC 3834: no out-of-office loops
        "MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n',
        _CRLF,
        f"--{boundary}\r\n",
        _TEXT_PART_HEADERS,
        _CRLF,
        text,
        f"\r\n--{boundary}\r\n",
        "Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n",
        _own_header("Content-Disposition", f'attachment; filename="{contents.reference}.zip"'),
        "MIME-Version: 1.0\r\n",  # the email package writes it into an attached part too
        _CRLF,
        attachment,
        f"\r\n--{boundary}--\r\n",
    ]
    data = "".join(parts).encode("ascii")
    return OutgoingMail(data, _address(sender), (recipient,), message_id)


def _header(name: str, value: str) -> str:
    """`Name: value` folded and RFC 2047-encoded exactly as `EmailMessage` with `policy.SMTP` writes it."""
    if len(value.splitlines()) > 1:
        raise ValueError(f"Header values may not contain linefeed or carriage return characters: {value!r}")
    folded: str = _POLICY.header_factory(name, value).fold(policy=_POLICY)
    return folded


def _own_header(name: str, value: str) -> str:
    """A header whose value this module makes (Message-ID, Content-Disposition): written as it is when it
    is printable ASCII and fits one line, as the email package would; folded by the email package if not."""
    line = f"{name}: {value}"
    if len(line) <= _LINE_LENGTH and value.isascii() and value.isprintable():
        return line + _CRLF
    return _header(name, value)


@functools.lru_cache(maxsize=64)
def _cached_header(name: str, value: str) -> str:
    """The sender and the protocols' mailboxes recur: parse and fold each once per process."""
    return _header(name, value)


def _boundary(*contents: str) -> str:
    """A multipart boundary as the email package makes it, and that occurs in none of `contents`."""
    while True:
        token = random.randrange(sys.maxsize)  # noqa: S311  # nosec B311  # unlikely in the body is all it needs
        boundary = "=" * 15 + f"{token:0{_BOUNDARY_DIGITS}d}" + "=="
        if not any(boundary in content for content in contents):
            return boundary


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
        "- Typ of plak het wachtwoord zonder spaties en met de hoofdletters zoals afgesproken: de groepjes van vier "
        "zijn er alleen om voor te lezen.",
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
