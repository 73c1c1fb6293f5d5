"""The encrypted package of a correction (article 7): only the corrected item, nothing else.

The bot no longer has the rest of the family's data (it was wiped after the first send), and the
OCMW already has it: the correction carries the reference it corrects and the new value(s).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.core.protocols import DataSharingProtocol
from bot.core.referral_values import Referrer
from bot.referral.package import encrypted_zip, local_iso, local_text, phone_as_written

#: The words of the cards (`item.*.label`, `field.*.label` in `cards/texts/nl.json`), so the OCMW reads the
#: same name for an item on the card, in the mail and in the file.
ITEM_LABELS_NL: Mapping[str, str] = {
    "name": "Naam",
    "address": "Adres",
    "phone": "Telefoonnummer",
    "email": "E-mailadres",
}
_FIELD_LABELS_NL: Mapping[str, str] = {
    "firstName": "Voornaam",
    "lastName": "Familienaam",
    "street": "Straat",
    "houseNumber": "Huisnummer",
    "postalCode": "Postcode",
    "municipality": "Gemeente",
    "phone": "Telefoonnummer",
    "email": "E-mailadres",
}


@dataclass(frozen=True, repr=False)
class CorrectionPackageContents:
    """A corrected item for an earlier referral."""

    reference: str  # e.g. VD-20261128-K7M2QX-2
    corrects: str  # the referral it corrects
    protocol: DataSharingProtocol
    item: str  # name, address, phone or email
    values: Mapping[str, str] = field(repr=False)  # field id -> normalised value
    referrer: Referrer
    key_version: str
    created_at: dt.datetime

    def __repr__(self) -> str:
        return f"CorrectionPackageContents(reference={self.reference!r}, item={self.item!r})"


def build_correction_package(contents: CorrectionPackageContents, password: bytes) -> bytes:
    """The AES-256 ZIP with a readable text and a JSON file of the corrected item."""
    if contents.created_at.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware")
    return encrypted_zip({"correctie.txt": _text(contents), "correctie.json": _json(contents)}, password)


def _text(contents: CorrectionPackageContents) -> bytes:
    lines = [
        f"CORRECTIE {contents.reference}",
        "",
        f"Deze correctie hoort bij doorverwijzing {contents.corrects} (protocol {contents.protocol.id}).",
        # The OCMW asked for it, or Kind en Gezin corrects on its own initiative: say only what is true of both.
        f"Verbeterd gegeven: {ITEM_LABELS_NL[contents.item]} (protocol artikel 7).",
        f"Van: {contents.protocol.sender.team} ({contents.referrer.display_name})",
        # In Belgian time, as the first package: in UTC a correction at 00:40 was dated the day before.
        f"Aangemaakt op: {local_text(contents.created_at)} (Belgische tijd)",
        f"Sleutelversie: {contents.key_version}",
        "",
        "Het juiste gegeven:",
        *(f"  {_FIELD_LABELS_NL[name]}: {_as_written(name, value)}" for name, value in contents.values.items()),
        "",
        f"Vervang het oude gegeven in uw gegevens over {contents.corrects} en verwijder het oude.",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _as_written(field: str, value: str) -> str:
    """A value as the first package's text writes it: the phone number in both of its forms, as there."""
    return phone_as_written(value) if field == "phone" and value else value


def _json(contents: CorrectionPackageContents) -> bytes:
    document = {
        "schemaVersion": 1,
        "type": "correction",
        "reference": contents.reference,
        "corrects": contents.corrects,
        "protocolId": contents.protocol.id,
        "keyVersion": contents.key_version,
        "createdAt": local_iso(contents.created_at),
        "item": contents.item,
        "values": dict(contents.values),
    }
    return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")
