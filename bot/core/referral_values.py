"""The plain values a referral is made of; no I/O, no Teams types.

Only article 3 of the protocol's data exists here: first and last name, address, phone and
e-mail. There is deliberately no free-text field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from bot.core.protocols import DataSharingProtocol

#: Every category of data a protocol allows (CONTENT.md, "Register and DPO"), in this order; a
#: register entry names only those the event itself moved (`ClientDetails.categories`, `ITEM_CATEGORIES`).
DATA_CATEGORIES: tuple[str, ...] = ("identification:name", "contact:address", "contact:phone", "contact:email")
LEGAL_BASIS = (
    "art. 10/1 decreet 30 april 2004 (Opgroeien regie); "
    "protocol art. 8 par. 1 e-govdecreet 18 juli 2008"
)
#: Why the data is shared (protocol art. 2, decree art. 10/1), as the register states it per entry.
PURPOSE = (
    "proactief contact door het OCMW om de toegang tot sociale hulp- en dienstverlening te verhogen "
    "en onderbescherming te voorkomen (protocol art. 2)"
)
RECIPIENT_CATEGORY = "maatschappelijk werker OCMW, gebonden door het beroepsgeheim"
#: The version id of the consent texts shown before versions were recorded (`cards._consent_version`):
#: a consent stored without `text_version` was confirmed under these texts.
UNVERSIONED_CONSENT_TEXT = "2026-11-1"

#: The only inputs there are for article 3's data, in card order, with their maximum lengths.
#: Anything else in a card action is ignored and never stored.
FIELD_MAX_LENGTHS: Mapping[str, int] = MappingProxyType(
    {
        "firstName": 100,
        "lastName": 100,
        "street": 150,
        "houseNumber": 20,
        "postalCode": 4,
        "municipality": 100,
        "phone": 30,
        "email": 254,
    }
)
DETAIL_FIELDS: tuple[str, ...] = tuple(FIELD_MAX_LENGTHS)
#: Which inputs make up each item the OCMW can report wrong (protocol article 7).
ITEM_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "name": ("firstName", "lastName"),
        "address": ("street", "houseNumber", "postalCode", "municipality"),
        "phone": ("phone",),
        "email": ("email",),
    }
)
#: `corrections.new_reference` of a request answered without a new value ("Er is geen juist telefoonnummer"):
#: no version was sent, and the request is no longer open (not NULL), so nothing reminds or reopens it. Here,
#: not in bot.ocmw.corrections, because the delivery worker tells a referrer so too (`answered_since`).
NO_CORRECT_VALUE = "none"
#: The categories a correction of each item carries (only that item is sent again).
ITEM_CATEGORIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "name": ("identification:name",),
        "address": ("contact:address",),
        "phone": ("contact:phone",),
        "email": ("contact:email",),
    }
)


@dataclass(frozen=True, repr=False)
class ClientDetails:
    """The client's name and contact data, already validated and normalised.

    `repr` is disabled so the values never end up in a log line or a traceback by accident.
    """

    first_name: str
    last_name: str
    street: str
    house_number: str
    postal_code: str
    municipality: str
    phone: str | None  # E.164, e.g. +32470123456
    email: str | None

    def __repr__(self) -> str:
        return "ClientDetails(<redacted>)"

    def values(self) -> list[str]:
        """Every non-empty value, for privacy checks and log redaction."""
        fields = (
            self.first_name,
            self.last_name,
            self.street,
            self.house_number,
            self.postal_code,
            self.municipality,
            self.phone,
            self.email,
        )
        return [value for value in fields if value]

    def categories(self) -> tuple[str, ...]:
        """The categories these details hold: name and address always, phone and e-mail only when given."""
        given = {"contact:phone": bool(self.phone), "contact:email": bool(self.email)}
        return tuple(category for category in DATA_CATEGORIES if given.get(category, True))


@dataclass(frozen=True)
class Referrer:
    """The K&G team member who makes the referral (never client data)."""

    user_id: str  # Entra object id when Teams gives it, else the channel user id
    display_name: str


@dataclass(frozen=True)
class ConsentRecord:
    """What the referrer confirmed before any data was entered (decree art. 10/1)."""

    informed_data: bool
    informed_recipient: bool
    informed_purpose: bool
    informed_follow_up: bool
    consent_given: bool
    confirmed_at: dt.datetime
    #: Which version of the consent texts was read to the parents (`consent.version` in the catalogues).
    text_version: str

    @property
    def complete(self) -> bool:
        """True when all four information points and the consent were ticked."""
        return all(
            (
                self.informed_data,
                self.informed_recipient,
                self.informed_purpose,
                self.informed_follow_up,
                self.consent_given,
            )
        )


@dataclass(frozen=True, repr=False)
class ReferralPackageContents:
    """Everything that goes inside the encrypted package, and nothing more."""

    reference: str  # only A-Z, 0-9 and '-'
    protocol: DataSharingProtocol
    client: ClientDetails
    consent: ConsentRecord
    referrer: Referrer
    key_version: str  # which version of the protocol's ZIP password opens the package
    created_at: dt.datetime  # timezone-aware

    def __repr__(self) -> str:
        return f"ReferralPackageContents(reference={self.reference!r}, protocol={self.protocol.id!r})"


@dataclass(frozen=True)
class FieldError:
    """Why one input of the data card was refused; the card turns `code` into a sentence.

    Codes: required, too_long (params: max), control_characters, name_characters,
    house_number_format, postal_code_format,
    postal_code_outside_area (params: municipality, ocmw, places, accepted),
    municipality_mismatch (params: municipality, ocmw, places, accepted), phone_characters,
    phone_invalid, phone_too_short, phone_too_long, email_invalid, contact_missing.
    """

    code: str
    params: tuple[tuple[str, str], ...] = ()
