"""A referral's form values, recognisable wherever they might leak; no bot import (the benchmarks use them too)."""

from __future__ import annotations

CONSENT_ALL = {
    "informedData": "true",
    "informedRecipient": "true",
    "informedPurpose": "true",
    "informedFollowUp": "true",
    "consentGiven": "true",
}
PROTOCOL_ID = "OR-KG-NOW-OCMW-SGW-2026"
MAILBOX = "welzijnshuis@sint-gillis-waas.be"

#: Values chosen so that each one is unmistakable wherever it might leak.
CLIENT_FORM = {
    "firstName": "Zoëlle",
    "lastName": "Vandenbroeckx-D'Hondtje",
    "street": "Kerkstraatje Oost",
    "houseNumber": "127 bus 34",
    "postalCode": "9170",
    "municipality": "Meerdonk",
    "phone": "0470 98 76 54",
    "email": "zoelle.vdbx@example.be",
}
#: The values as they are stored after normalisation, for leak checks.
CLIENT_VALUES = ["Zoëlle", "Vandenbroeckx", "Kerkstraatje", "127 bus 34", "Meerdonk", "+32470987654",
                 "470987654", "0470 98 76 54", "zoelle.vdbx@example.be", "zoelle.vdbx"]
