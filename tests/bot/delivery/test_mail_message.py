"""The mail tells the OCMW what to do and carries the package, but never a client value in clear."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.core.protocols import DataSharingProtocol, load_protocol_file
from bot.core.referral_values import ClientDetails, ConsentRecord, ReferralPackageContents, Referrer
from bot.delivery import mail_message
from bot.delivery.mail_message import OutgoingMail, build_referral_mail, message_id_for
from bot.referral.package import build_package
from tests.support.sample_referral import protocol_with_mailbox
from tests.support.words import forbidden_words, unproven_ticks

PROTOCOL_FILE = Path(__file__).resolve().parents[3] / "infra" / "protocols" / "sint-gillis-waas.toml"
BRUSSELS = ZoneInfo("Europe/Brussels")
SENDER = "Veilig doorverwijzen <Doorverwijzen@KindEnGezin.be>"
REFERENCE = "VD-20261128-K7M2QX"
CREATED_AT = dt.datetime(2026, 11, 27, 23, 30, tzinfo=dt.UTC)  # already 28/11 00:30 in Brussels
SUBJECT = f"Doorverwijzing {REFERENCE} – Kind en Gezin team Noord-Oost Waasland – 28/11/2026"


@pytest.fixture(scope="module")
def protocol() -> DataSharingProtocol:
    return load_protocol_file(PROTOCOL_FILE)


@pytest.fixture
def client() -> ClientDetails:
    # Meerdonk (9170) is part of Sint-Gillis-Waas: a municipality name the protocol itself never
    # uses, so the privacy checks below can look for every client value, the municipality included.
    return ClientDetails(
        first_name="Zoë",
        last_name="Van den Broeck-D'Hondt",
        street="Kerkstraat",
        house_number="12 bus 3",
        postal_code="9170",
        municipality="Meerdonk",
        phone="+32470123456",
        email="zoe.vdb@example.be",
    )


@pytest.fixture
def contents(protocol: DataSharingProtocol, client: ClientDetails) -> ReferralPackageContents:
    return ReferralPackageContents(
        reference=REFERENCE,
        protocol=protocol,
        client=client,
        consent=ConsentRecord(True, True, True, True, True, CREATED_AT - dt.timedelta(minutes=4),
                              text_version="2026-11-1"),
        referrer=Referrer(user_id="00000000-0000-0000-0000-00000000a11e", display_name="Anna Peeters"),
        key_version="3",
        created_at=CREATED_AT,
    )


@pytest.fixture
def package(contents: ReferralPackageContents) -> bytes:
    return build_package(contents, b"K7M2-QX4P-9HTR-WN3B-ZD8E-LF6A")


@pytest.fixture
def received(contents: ReferralPackageContents, package: bytes) -> EmailMessage:
    """The mail as the OCMW's mail server parses it from the wire."""
    message = build_referral_mail(contents, package, sender=SENDER, local_tz=BRUSSELS)
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _client_values(client: ClientDetails) -> list[str]:
    return [*client.values(), "0470 12 34 56", "470123456", "zoe.vdb", "Van den Broeck", "D'Hondt"]


def _body(received: EmailMessage) -> str:
    part = received.get_body(preferencelist=("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def test_headers(received: EmailMessage, protocol: DataSharingProtocol) -> None:
    assert received["To"] == protocol.recipient_mailbox == "welzijnshuis@sint-gillis-waas.be"
    assert received["From"] == SENDER
    assert received["Subject"] == SUBJECT
    assert received["Message-ID"] == f"<{REFERENCE}@kindengezin.be>"
    assert received["Auto-Submitted"] == "auto-generated"
    assert received["Date"].datetime == CREATED_AT
    assert received["Date"].datetime.utcoffset() == dt.timedelta(hours=1)  # written in local time


def test_attachment_round_trips(received: EmailMessage, package: bytes) -> None:
    attachments = list(received.iter_attachments())

    assert len(attachments) == 1
    (attachment,) = attachments
    assert attachment.get_content_type() == "application/zip"
    assert attachment.get_filename() == f"{REFERENCE}.zip"
    assert attachment.get_content() == package


def test_no_client_value_in_headers_or_text(received: EmailMessage, client: ClientDetails) -> None:
    visible: list[str] = []
    for part in received.walk():
        visible.extend(f"{name}: {value}" for name, value in part.items())  # decoded headers
        if part.get_content_maintype() == "text":
            visible.append(part.get_content())
    text = "\n".join(visible).casefold()

    assert "7-zip" in text  # the text parts were really read
    for value in _client_values(client):
        assert value.casefold() not in text, value


def test_no_client_value_in_the_raw_message(contents: ReferralPackageContents, client: ClientDetails) -> None:
    # A dummy attachment: base64 of real ciphertext could contain a short value like 9170 by chance.
    raw = build_referral_mail(contents, bytes(256), sender=SENDER, local_tz=BRUSSELS).as_bytes()

    for value in _client_values(client):
        for encoding in ("utf-8", "utf-16-le"):
            assert value.encode(encoding) not in raw, (value, encoding)


def test_body_says_what_the_ocmw_must_do(received: EmailMessage) -> None:
    body = _body(received)

    for expected in (
        REFERENCE,
        "Kind en Gezin team Noord-Oost Waasland",
        "28/11/2026 00:30",
        "OR-KG-NOW-OCMW-SGW-2026",
        "Opgroeien regie en OCMW Sint-Gillis-Waas",
        "artikel 10/1 van het decreet van 30 april 2004",
        f"{REFERENCE}.zip",
        "7-Zip",
        "Windows Verkenner",
        "sleutelversie 3",
        "Teams",
        "contact",
        "artikel 7",
        "artikel 9",
        "dpo@opgroeien.be",
        "informatica@sint-gillis-waas.be",
    ):
        assert expected in body, expected


def test_body_says_to_type_the_password_without_the_spaces_it_was_read_out_with(received: EmailMessage) -> None:
    """The password is read out in groups of four; typed with those spaces, 7-Zip answers "Wrong password"."""
    body = " ".join(_body(received).split())
    assert "Typ of plak het wachtwoord zonder spaties en met de hoofdletters zoals afgesproken" in body
    assert "de groepjes van vier zijn er alleen om voor te lezen" in body


def test_resend_has_the_same_message_id(contents: ReferralPackageContents, package: bytes) -> None:
    first = build_referral_mail(contents, package, sender=SENDER, local_tz=BRUSSELS)
    again = build_referral_mail(contents, package, sender=SENDER, local_tz=BRUSSELS)

    assert first["Message-ID"] == again["Message-ID"] == message_id_for(REFERENCE, SENDER)


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("bot@kindengezin.be", f"<{REFERENCE}@kindengezin.be>"),
        ("Bot <bot@Mail.KindEnGezin.be>", f"<{REFERENCE}@mail.kindengezin.be>"),
    ],
)
def test_message_id_uses_the_sender_domain(sender: str, expected: str) -> None:
    assert message_id_for(REFERENCE, sender) == expected


@pytest.mark.parametrize("reference", ["", "vd-lowercase", "VD-1>\r\nBcc: x@example.be", "VD 1"])
def test_message_id_refuses_a_reference_that_could_break_the_header(reference: str) -> None:
    with pytest.raises(ValueError, match="reference"):
        message_id_for(reference, "bot@kindengezin.be")


@pytest.mark.parametrize("sender", ["", "no-domain", "Bot <bot@>"])
def test_message_id_needs_a_sender_domain(sender: str) -> None:
    with pytest.raises(ValueError, match="sender"):
        message_id_for(REFERENCE, sender)


def test_naive_creation_time_is_refused(contents: ReferralPackageContents, package: bytes) -> None:
    naive = dataclasses.replace(contents, created_at=CREATED_AT.replace(tzinfo=None))

    with pytest.raises(ValueError, match="timezone-aware"):
        build_referral_mail(naive, package, sender=SENDER, local_tz=BRUSSELS)


@pytest.mark.parametrize("corrects", [None, "VD-20261127-AB12CD"], ids=["referral", "correction"])
def test_the_mail_uses_the_words_of_the_cards_and_claims_only_what_the_referrer_confirmed(
    contents: ReferralPackageContents, package: bytes, corrects: str | None
) -> None:
    message = build_referral_mail(contents, package, sender=SENDER, local_tz=BRUSSELS, corrects=corrects)
    received = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(received, EmailMessage)
    text = f"{message['Subject']}\n{_body(received)}"

    assert forbidden_words(text, "nl") == {}
    assert unproven_ticks(text, "nl") == []
    assert "De doorverwijzer bevestigde in Teams dat de ouders geïnformeerd werden" in text
    assert "U meldde" not in text, "a correction may be Kind en Gezin's own: the mail does not say the OCMW asked"


def _as_the_email_package_writes_it(
    contents: ReferralPackageContents, package: bytes, sender: str, boundary: str, corrects: str | None = None
) -> bytes:
    """The mail as it was built before it was rendered directly: `EmailMessage`, `policy.SMTP`."""
    created = contents.created_at.astimezone(BRUSSELS)
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = contents.protocol.recipient_mailbox
    message["Subject"] = mail_message._subject(contents, created.strftime("%d/%m/%Y"), corrects)
    message["Date"] = created
    message["Message-ID"] = message_id_for(contents.reference, sender)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(mail_message._body(contents, created.strftime("%d/%m/%Y %H:%M"), corrects))
    message.add_attachment(package, maintype="application", subtype="zip", filename=f"{contents.reference}.zip")
    message.set_boundary(boundary)
    return message.as_bytes(policy=email.policy.SMTP)


def _boundary_of(data: bytes) -> str:
    match = re.search(rb'boundary="([^"]+)"', data)
    assert match is not None
    return match.group(1).decode("ascii")


@pytest.mark.parametrize(
    ("sender", "team", "reference", "corrects"),
    [
        (SENDER, None, REFERENCE, None),
        (SENDER, None, f"{REFERENCE}-2", REFERENCE),
        ("bot@kindengezin.be", None, REFERENCE, None),
        ("Opgroeien – Veilig doorverwijzen <Bot@KindEnGezin.be>", None, REFERENCE, None),
        (SENDER, "Kind en Gezin team Noord-Oost Waasland, Beveren, Kruibeke, Zwijndrecht en Sint-Gillis-Waas",
         REFERENCE, None),
        (SENDER, "Équipe «Ouders & Kinderen» – Sint-Niklaas", REFERENCE, None),
        ("Bot <bot@" + "mail." * 12 + "kindengezin.be>", None, "VD-" + "A" * 40, None),
    ],
)
def test_the_bytes_are_the_email_package_s_own(
    contents: ReferralPackageContents,
    package: bytes,
    sender: str,
    team: str | None,
    reference: str,
    corrects: str | None,
) -> None:
    if team is not None:
        protocol = contents.protocol
        contents = dataclasses.replace(contents, protocol=dataclasses.replace(
            protocol, sender=dataclasses.replace(protocol.sender, team=team)))
    contents = dataclasses.replace(contents, reference=reference)

    mail = build_referral_mail(contents, package, sender=sender, local_tz=BRUSSELS, corrects=corrects)

    assert mail.data == _as_the_email_package_writes_it(contents, package, sender, _boundary_of(mail.data), corrects)


def test_the_envelope_is_the_sender_address_and_the_mailbox(
    contents: ReferralPackageContents, package: bytes
) -> None:
    mail = build_referral_mail(contents, package, sender=SENDER, local_tz=BRUSSELS)

    assert mail.sender == "Doorverwijzen@KindEnGezin.be"
    assert mail.recipients == ("welzijnshuis@sint-gillis-waas.be",)
    assert mail.message_id == f"<{REFERENCE}@kindengezin.be>" == mail["Message-ID"]
    assert mail["Subject"] == SUBJECT
    assert mail["Bcc"] is None
    assert OutgoingMail.from_bytes(mail.data) == mail  # what the outbox worker reads back from the row
    assert "zoe" not in repr(mail).casefold() and "data" not in repr(mail)



def test_a_mailbox_with_a_non_ascii_domain_is_addressed_in_its_ascii_form(
    contents: ReferralPackageContents, package: bytes, tmp_path: Path
) -> None:
    idn = dataclasses.replace(contents, protocol=protocol_with_mailbox("welzijnshuis@sint-gillis-waäs.be", tmp_path))

    mail = build_referral_mail(idn, package, sender=SENDER, local_tz=BRUSSELS)

    # RFC 2047 section 5: no encoded word inside an address (Outlook shows it as it is, a relay refuses it).
    assert [line for line in mail.data.split(b"\r\n") if line.startswith(b"To:")] == [
        b"To: welzijnshuis@xn--sint-gillis-was-elb.be"
    ]
    assert mail.recipients == ("welzijnshuis@xn--sint-gillis-was-elb.be",)
    assert OutgoingMail.from_bytes(mail.data) == mail  # the outbox worker's envelope is the same

def test_every_boundary_is_new(contents: ReferralPackageContents, package: bytes) -> None:
    boundaries = {_boundary_of(build_referral_mail(contents, package, sender=SENDER, local_tz=BRUSSELS).data)
                  for _ in range(20)}

    assert len(boundaries) == 20


def test_a_header_value_with_a_line_break_is_refused_like_email_message_does(
    contents: ReferralPackageContents, package: bytes
) -> None:
    protocol = contents.protocol
    broken = dataclasses.replace(contents, protocol=dataclasses.replace(
        protocol, sender=dataclasses.replace(protocol.sender, team="Team\r\nBcc: x@example.be")))

    with pytest.raises(ValueError, match="linefeed or carriage return"):
        build_referral_mail(broken, package, sender=SENDER, local_tz=BRUSSELS)


def test_an_email_message_becomes_an_outgoing_mail_with_its_envelope() -> None:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "Bot <bot@kindengezin.be>"
    message["To"] = "dpo@opgroeien.be, Informatica <informatica@sint-gillis-waas.be>"
    message["Cc"] = "archief@opgroeien.be"
    message["Message-ID"] = "<BREACH-1@kindengezin.be>"
    message["Subject"] = "Melding gegevenslek – artikel 9"
    message.set_content("Geen gegevens van gezinnen.\n")

    mail = OutgoingMail.from_message(message)

    assert mail.data == message.as_bytes(policy=email.policy.SMTP)
    assert mail.sender == "bot@kindengezin.be"
    assert mail.recipients == ("dpo@opgroeien.be", "informatica@sint-gillis-waas.be", "archief@opgroeien.be")
    assert mail.message_id == "<BREACH-1@kindengezin.be>"
    assert mail["Subject"] == "Melding gegevenslek – artikel 9"


def test_a_blind_copy_is_refused() -> None:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "bot@kindengezin.be"
    message["To"] = "dpo@opgroeien.be"
    message["Bcc"] = "someone@example.be"

    with pytest.raises(ValueError, match="Bcc"):
        OutgoingMail.from_message(message)


def test_stored_bytes_without_addresses_give_an_empty_envelope() -> None:
    mail = OutgoingMail.from_bytes(b"Subject: nothing\r\n\r\nbody\r\n")

    assert (mail.sender, mail.recipients, mail.message_id) == ("", (), "")
