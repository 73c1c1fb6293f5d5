"""Server-side validation of the data card: article 3's fields and nothing else.

Returns either clean, normalised `ClientDetails` or one `FieldError` per bad field, so the card
can come back with the typed values preserved and each error next to its field.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from bot.core.protocols import DataSharingProtocol
from bot.core.referral_values import DETAIL_FIELDS, FIELD_MAX_LENGTHS, ITEM_FIELDS, ClientDetails, FieldError

MAX_LENGTHS = FIELD_MAX_LENGTHS
_REQUIRED = ("firstName", "lastName", "street", "houseNumber", "postalCode", "municipality")
# A letter (any script) with the combining marks NFC leaves on it when there is no single code point: Yoruba ẹ́.
_LETTER = r"[^\W\d_][\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]*"
# Letters, spaces, apostrophes, hyphens and dots: "D'Hondt", "Van der Berg-Öz"; a letter first, or the
# Dutch particle 't or 's and a space: "'t Hart", "’s Jacob".
_NAME_PATTERN = re.compile(rf"^(?:['’][tsTS]\s+)?{_LETTER}(?:{_LETTER}|[\s'’.\-])*$")
# Starts with a number; then letters, digits and the usual separators: "12", "12B", "12 bus 3", "12/3".
_HOUSE_NUMBER_PATTERN = re.compile(r"^[0-9]{1,5}[0-9A-Za-z ./,-]*$")
_POSTAL_CODE_PATTERN = re.compile(r"^[1-9][0-9]{3}$")
_DEFAULT_REGION = "BE"
# Digits with the usual separators and an optional leading +: "0470 12 34 56", "+32 (0)9/210.10.10".
_PHONE_CHARACTERS = re.compile(r"^\+?[0-9 ./()\-]*$")
# phonenumbers' findings, each as the error that names it; anything else is "incomplete or not valid".
_PHONE_PARSE_ERRORS = {
    phonenumbers.NumberParseException.NOT_A_NUMBER: "phone_too_short",  # fewer than 3 digits
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "phone_too_short",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "phone_too_short",
    phonenumbers.NumberParseException.TOO_LONG: "phone_too_long",
}
_PHONE_LENGTH_ERRORS = {
    phonenumbers.ValidationResult.TOO_SHORT: "phone_too_short",
    phonenumbers.ValidationResult.TOO_LONG: "phone_too_long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "phone_invalid",
}


@dataclass(frozen=True, repr=False)
class DetailsValidation:
    """The outcome: `details` when everything is valid, else the errors by field id."""

    typed: Mapping[str, str]
    details: ClientDetails | None
    errors: Mapping[str, FieldError]

    def __repr__(self) -> str:
        return f"DetailsValidation(valid={self.details is not None}, errors={sorted(self.errors)})"


def typed_values(data: Mapping[str, object]) -> dict[str, str]:
    """The eight known inputs as strings, trimmed; unknown keys and non-strings are dropped.

    Each in NFC: a Mac keyboard or a PDF sends ë as e + U+0308, and the checks, the review card, the
    package and a correction must all see the one spelling.
    """
    values: dict[str, str] = {}
    for field in DETAIL_FIELDS:
        raw = data.get(field)
        values[field] = unicodedata.normalize("NFC", raw).strip() if isinstance(raw, str) else ""
    return values


def validate_details(data: Mapping[str, object], protocol: DataSharingProtocol) -> DetailsValidation:
    """Check every field against the rules and the protocol's municipality."""
    typed = typed_values(data)
    errors: dict[str, FieldError] = {}
    place = protocol.canonical_place(typed["municipality"])
    for field, value in typed.items():
        if field == "municipality" and place is not None:
            continue  # one of the protocol's places, stored as the protocol spells it: a pasted soft hyphen goes
        problem = _generic_problem(field, value)
        if problem is not None:
            errors[field] = problem
    for field in ("firstName", "lastName"):
        if field not in errors and not _NAME_PATTERN.match(typed[field]):
            errors[field] = FieldError("name_characters")
    if "houseNumber" not in errors and not _HOUSE_NUMBER_PATTERN.match(typed["houseNumber"]):
        errors["houseNumber"] = FieldError("house_number_format")
    if "postalCode" not in errors:
        if not _POSTAL_CODE_PATTERN.match(typed["postalCode"]):
            errors["postalCode"] = FieldError("postal_code_format")
        elif not protocol.covers_postal_code(typed["postalCode"]):
            errors["postalCode"] = FieldError("postal_code_outside_area", _area_params(protocol))
    # Checked whatever the postal code's fate, so the referrer sees every wrong field in one round.
    if "municipality" not in errors and not protocol.covers_place(typed["municipality"]):
        errors["municipality"] = FieldError("municipality_mismatch", _area_params(protocol))
    phone = _checked_phone(typed["phone"], errors) if "phone" not in errors else None
    email = _checked_email(typed["email"], errors) if "email" not in errors else None
    if not typed["phone"] and not typed["email"]:
        errors["phone"] = errors["email"] = FieldError("contact_missing")
    if errors:
        return DetailsValidation(typed=echoable(typed), details=None, errors=errors)
    details = ClientDetails(
        first_name=_collapse_spaces(typed["firstName"]),
        last_name=_collapse_spaces(typed["lastName"]),
        street=_collapse_spaces(typed["street"]),
        house_number=_collapse_spaces(typed["houseNumber"]),
        postal_code=typed["postalCode"],
        municipality=place or _collapse_spaces(typed["municipality"]),
        phone=phone,
        email=email,
    )
    return DetailsValidation(typed=typed, details=details, errors={})


def echoable(typed: Mapping[str, str]) -> dict[str, str]:
    """Typed values cut to their maximum length, so a forged huge value never makes a card over 40 KB."""
    return {field: value[: MAX_LENGTHS[field]] for field, value in typed.items()}


def details_as_typed(details: ClientDetails) -> dict[str, str]:
    """Card input values for a stored draft, so "edit" shows what was entered."""
    phone = ""
    if details.phone:
        phone = phonenumbers.format_number(
            phonenumbers.parse(details.phone, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
    return {
        "firstName": details.first_name,
        "lastName": details.last_name,
        "street": details.street,
        "houseNumber": details.house_number,
        "postalCode": details.postal_code,
        "municipality": details.municipality,
        "phone": phone,
        "email": details.email or "",
    }


def _generic_problem(field: str, value: str) -> FieldError | None:
    if not value:
        return FieldError("required") if field in _REQUIRED else None
    if len(value) > MAX_LENGTHS[field]:
        return FieldError("too_long", (("max", str(MAX_LENGTHS[field])),))
    if any(unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"} for char in value):
        return FieldError("control_characters")
    return None


def _area_params(protocol: DataSharingProtocol) -> tuple[tuple[str, str], ...]:
    """What the postal-code and municipality errors name: the OCMW, its postal codes and its places,
    all from the protocol file, e.g. accepted "9170 (Sint-Gillis-Waas, De Klinge, Meerdonk, Sint-Pauwels)"."""
    places = ", ".join(protocol.places or (protocol.recipient_municipality,))
    codes = ", ".join(sorted(protocol.postal_codes))
    return (
        ("municipality", protocol.recipient_municipality),
        ("ocmw", protocol.recipient.organisation),
        ("places", places),
        ("accepted", f"{codes} ({places})"),
    )


def _checked_phone(value: str, errors: dict[str, FieldError]) -> str | None:
    """The number in E.164, or None with the error in `errors`.

    phonenumbers checks the form only (length, country code, the numbering plan's ranges): whether
    a number is in use cannot be known, so no error ever says a number does not exist.
    """
    if not value:
        return None
    # Outlook signatures and web pages space a number with no-break spaces (U+00A0, U+202F).
    value = "".join(" " if char.isspace() else char for char in value)
    if not _PHONE_CHARACTERS.match(value):
        errors["phone"] = FieldError("phone_characters")
        return None
    try:
        number = phonenumbers.parse(value, _DEFAULT_REGION)
    except phonenumbers.NumberParseException as error:
        errors["phone"] = FieldError(_PHONE_PARSE_ERRORS.get(error.error_type, "phone_invalid"))
        return None
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason in _PHONE_LENGTH_ERRORS:
        errors["phone"] = FieldError(_PHONE_LENGTH_ERRORS[reason])
        return None
    if not phonenumbers.is_valid_number(number):
        errors["phone"] = FieldError("phone_invalid")
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _checked_email(value: str, errors: dict[str, FieldError]) -> str | None:
    if not value:
        return None
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        errors["email"] = FieldError("email_invalid")
        return None


def _collapse_spaces(value: str) -> str:
    return " ".join(value.split())


@dataclass(frozen=True, repr=False)
class ItemValidation:
    """A corrected item: its normalised values by field id, or the errors by field id."""

    typed: Mapping[str, str]
    values: Mapping[str, str] | None
    errors: Mapping[str, FieldError]

    def __repr__(self) -> str:
        return f"ItemValidation(valid={self.values is not None}, errors={sorted(self.errors)})"


def validate_item(item: str, data: Mapping[str, object], protocol: DataSharingProtocol) -> ItemValidation:
    """Validate only the fields of `item`, each required, with the same rules as the data card."""
    fields = ITEM_FIELDS[item]
    typed = {field: value for field, value in typed_values(data).items() if field in fields}
    # Fill the other fields with a known-valid placeholder so the shared rules can run unchanged.
    filler = {"firstName": "A", "lastName": "B", "street": "C", "houseNumber": "1",
              "municipality": protocol.recipient_municipality,
              "postalCode": next(iter(sorted(protocol.postal_codes))), "phone": "", "email": ""}
    if "phone" not in fields and "email" not in fields:
        filler["email"] = "placeholder@example.org"
    result = validate_details({**filler, **typed}, protocol)
    errors = {field: error for field, error in result.errors.items() if field in fields}
    for field in fields:
        if not typed[field] and field not in errors:
            errors[field] = FieldError("required")
    if errors or result.details is None:
        return ItemValidation(typed=echoable(typed), values=None, errors=errors)
    normalised = {
        "firstName": result.details.first_name,
        "lastName": result.details.last_name,
        "street": result.details.street,
        "houseNumber": result.details.house_number,
        "postalCode": result.details.postal_code,
        "municipality": result.details.municipality,
        "phone": result.details.phone or "",
        "email": result.details.email or "",
    }
    return ItemValidation(typed=typed, values={field: normalised[field] for field in fields}, errors={})
