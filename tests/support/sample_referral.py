"""A realistic referral mail with a real AES-256 package, for tests of what carries it.

The same family and protocol as tests/bot/delivery/test_mail_message.py, as plain functions so transport
and outbox tests can build one without importing another test module's fixtures.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.core.protocols import DataSharingProtocol, load_protocol_file
from bot.core.referral_values import ClientDetails, ConsentRecord, ReferralPackageContents, Referrer
from bot.delivery.mail_message import OutgoingMail, build_referral_mail
from bot.referral.package import build_package

PROTOCOL_FILE = Path(__file__).resolve().parents[2] / "infra" / "protocols" / "sint-gillis-waas.toml"
BRUSSELS = ZoneInfo("Europe/Brussels")
SENDER = "Veilig doorverwijzen <Doorverwijzen@KindEnGezin.be>"
SENDER_ADDRESS = "Doorverwijzen@KindEnGezin.be"
REFERENCE = "VD-20261128-K7M2QX"
ZIP_PASSWORD = "K7M2-QX4P-9HTR-WN3B-ZD8E-LF6A"
CREATED_AT = dt.datetime(2026, 11, 27, 23, 30, tzinfo=dt.UTC)


@dataclass(frozen=True)
class SampleReferral:
    """The mail and what a test needs to check it arrived intact and leaked nothing."""

    contents: ReferralPackageContents
    package: bytes
    message: OutgoingMail

    @property
    def recipient(self) -> str:
        return self.contents.protocol.recipient_mailbox

    @property
    def attachment_name(self) -> str:
        return f"{self.contents.reference}.zip"

    def client_values(self) -> list[str]:
        """Every client value and common spellings of them, for "never in a log or reason" checks."""
        return [*self.contents.client.values(), "0470 12 34 56", "470123456", "zoe.vdb", "Van den Broeck", "D'Hondt"]


def sample_client() -> ClientDetails:
    """Meerdonk is part of Sint-Gillis-Waas, a name the protocol never uses, so leaks are detectable."""
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


def protocol_with_mailbox(mailbox: str, folder: Path) -> DataSharingProtocol:
    """The Sint-Gillis-Waas protocol with another `recipient.mailbox`, loaded from a copy written into `folder`."""
    file = folder / "mailbox.toml"
    file.write_text(PROTOCOL_FILE.read_text("utf-8").replace("welzijnshuis@sint-gillis-waas.be", mailbox), "utf-8")
    return load_protocol_file(file)


def sample_referral(reference: str = REFERENCE, protocol: DataSharingProtocol | None = None) -> SampleReferral:
    """The referral mail to the Sint-Gillis-Waas OCMW (or `protocol`'s), package encrypted with `ZIP_PASSWORD`."""
    contents = ReferralPackageContents(
        reference=reference,
        protocol=protocol or load_protocol_file(PROTOCOL_FILE),
        client=sample_client(),
        consent=ConsentRecord(True, True, True, True, True, CREATED_AT - dt.timedelta(minutes=4),
                              text_version="2026-11-1"),
        referrer=Referrer(user_id="00000000-0000-0000-0000-00000000a11e", display_name="Anna Peeters"),
        key_version="3",
        created_at=CREATED_AT,
    )
    package = build_package(contents, ZIP_PASSWORD.encode("ascii"))
    message = build_referral_mail(contents, package, sender=SENDER, local_tz=BRUSSELS)
    return SampleReferral(contents=contents, package=package, message=message)
