"""Data card validation: article 3's fields, normalised, with one error code per bad field."""

from __future__ import annotations

import unicodedata

import pytest

from bot.config import Settings
from bot.core.protocols import load_registry
from bot.referral.details_validation import DETAIL_FIELDS, details_as_typed, validate_details, validate_item

PROTOCOL = load_registry(Settings().protocols_dir).all()[0]
VALID = {
    "firstName": "Zoë",
    "lastName": "Van den Broeck-D'Hondt",
    "street": "Kerkstraat",
    "houseNumber": "12 bus 3",
    "postalCode": "9170",
    "municipality": "De Klinge",
    "phone": "0470 12 34 56",
    "email": "Zoe@Example.BE",
}


def test_valid_data_is_normalised() -> None:
    result = validate_details(VALID, PROTOCOL)
    assert result.errors == {}
    assert result.details is not None
    assert result.details.phone == "+32470123456"
    assert result.details.email == "Zoe@example.be"
    assert result.details.house_number == "12 bus 3"


def test_international_numbers_are_accepted() -> None:
    result = validate_details({**VALID, "phone": "+31 6 12345678"}, PROTOCOL)
    assert result.details is not None and result.details.phone == "+31612345678"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("firstName", "", "required"),
        ("lastName", "   ", "required"),
        ("street", "x" * 151, "too_long"),
        ("firstName", "Zo\u0000ë", "control_characters"),
        ("firstName", "Zoë\u202e", "control_characters"),
        ("lastName", "Jan\r\nBcc: x@example.org", "control_characters"),
        ("firstName", "R2D2", "name_characters"),
        ("firstName", "<script>", "name_characters"),
        ("lastName", "'", "name_characters"),
        ("lastName", "'t", "name_characters"),
        ("lastName", "'t 12", "name_characters"),
        ("lastName", "' Hart", "name_characters"),
        ("lastName", "'x Hart", "name_characters"),
        ("lastName", "-t Hart", "name_characters"),
        ("houseNumber", "twaalf", "house_number_format"),
        ("postalCode", "917", "postal_code_format"),
        ("postalCode", "0917", "postal_code_format"),
        ("postalCode", "9100", "postal_code_outside_area"),
        ("phone", "0470 12", "phone_too_short"),
        ("phone", "0470 12 34 56 78 90", "phone_too_long"),
        ("phone", "03 123 45 67", "phone_invalid"),
        ("phone", "0470 12 34 5", "phone_invalid"),
        ("phone", "+999 123 45 67", "phone_invalid"),
        ("phone", "0", "phone_too_short"),
        ("phone", "047012345678901234567", "phone_too_long"),
        ("phone", "bel me", "phone_characters"),
        ("phone", "0470 12 34 56 ext 3", "phone_characters"),
        ("email", "zoe@", "email_invalid"),
        ("email", "zoe example.be", "email_invalid"),
    ],
)
def test_each_rule_names_the_field(field: str, value: str, code: str) -> None:
    result = validate_details({**VALID, field: value}, PROTOCOL)
    assert result.details is None
    assert result.errors[field].code == code
    assert set(result.errors) == {field}


AREA = {
    "municipality": "Sint-Gillis-Waas",
    "ocmw": "OCMW Sint-Gillis-Waas",
    "places": "Sint-Gillis-Waas, De Klinge, Meerdonk, Sint-Pauwels",
    "accepted": "9170 (Sint-Gillis-Waas, De Klinge, Meerdonk, Sint-Pauwels)",
}


def test_outside_area_names_the_ocmw_its_postal_codes_and_places() -> None:
    error = validate_details({**VALID, "postalCode": "9100"}, PROTOCOL).errors["postalCode"]
    assert dict(error.params) == AREA


def test_phone_or_email_is_enough_but_one_is_needed() -> None:
    assert validate_details({**VALID, "phone": ""}, PROTOCOL).details is not None
    assert validate_details({**VALID, "email": ""}, PROTOCOL).details is not None
    errors = validate_details({**VALID, "phone": "", "email": ""}, PROTOCOL).errors
    assert {errors["phone"].code, errors["email"].code} == {"contact_missing"}


def test_unknown_fields_and_non_strings_are_dropped() -> None:
    result = validate_details({**VALID, "notes": "diabetes", "firstName": ["x"]}, PROTOCOL)
    assert set(result.typed) == set(DETAIL_FIELDS)
    assert result.errors["firstName"].code == "required"


def test_edit_values_validate_back_to_the_same_details() -> None:
    details = validate_details(VALID, PROTOCOL).details
    assert details is not None
    again = validate_details(details_as_typed(details), PROTOCOL).details
    assert again is not None and again.values() == details.values()


def test_repr_never_shows_the_values() -> None:
    result = validate_details(VALID, PROTOCOL)
    assert "Zoë" not in repr(result) and "Zoë" not in repr(result.details)


@pytest.mark.parametrize("place", ["Sint-Gillis-Waas", "sint gillis waas", "De Klinge", "MEERDONK", "Sint-Pauwels"])
def test_the_municipality_and_its_parts_are_accepted(place: str) -> None:
    assert validate_details({**VALID, "municipality": place}, PROTOCOL).details is not None


def test_a_municipality_outside_the_ocmw_is_refused_even_with_a_local_postal_code() -> None:
    error = validate_details({**VALID, "municipality": "Sint-Niklaas"}, PROTOCOL).errors["municipality"]
    assert error.code == "municipality_mismatch" and dict(error.params) == AREA


def test_the_municipality_is_checked_even_when_the_postal_code_is_wrong() -> None:
    errors = validate_details({**VALID, "postalCode": "91", "municipality": "Sint-Niklaas"}, PROTOCOL).errors
    assert {field: error.code for field, error in errors.items()} == {
        "postalCode": "postal_code_format", "municipality": "municipality_mismatch"}


@pytest.mark.parametrize(("typed", "stored"), [("sint gillis waas", "Sint-Gillis-Waas"), ("DE KLINGE", "De Klinge"),
                                               ("meerdonk", "Meerdonk"), ("Sint  Pauwels", "Sint-Pauwels")])
def test_the_municipality_is_stored_in_the_protocols_spelling(typed: str, stored: str) -> None:
    details = validate_details({**VALID, "municipality": typed}, PROTOCOL).details
    assert details is not None and details.municipality == stored


def test_a_corrected_address_gets_the_protocols_spelling_too() -> None:
    address = {"street": "Dorp", "houseNumber": "1", "postalCode": "9170", "municipality": "de klinge"}
    result = validate_item("address", address, PROTOCOL)
    assert result.values is not None and result.values["municipality"] == "De Klinge"


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


@pytest.mark.parametrize("name", ["Zoë", "François"])
def test_a_corrected_name_in_decomposed_form_is_accepted_composed(name: str) -> None:
    result = validate_item("name", {"firstName": nfd(name), "lastName": "Peeters"}, PROTOCOL)
    assert result.errors == {}, result.errors
    assert result.values is not None and result.values["firstName"] == name


def test_a_street_in_decomposed_form_is_stored_composed() -> None:
    """The package holds one spelling, whichever keyboard typed it (the OCMW searches its files for it)."""
    details = validate_details({**VALID, "street": nfd("Rue Élisée")}, PROTOCOL).details
    assert details is not None
    assert details.street == "Rue Élisée", ascii(details.street)


def test_a_letter_with_no_composed_form_keeps_its_combining_mark() -> None:
    """Yoruba ẹ́ (e, dot below, acute) has no single code point: NFC leaves a combining mark."""
    name = unicodedata.normalize("NFC", "S\u0323e\u0323\u0301gun")
    assert any(unicodedata.combining(char) for char in name)
    details = validate_details({**VALID, "firstName": name}, PROTOCOL).details
    assert details is not None and details.first_name == name


@pytest.mark.parametrize(("typed", "stored"), [("'t Hart", "'t Hart"), ("’t  Hooft", "’t Hooft"),
                                               ("'s Jacob", "'s Jacob"), ("'T HART", "'T HART"),
                                               ("Van 't Hof", "Van 't Hof")])
def test_a_family_name_may_start_with_t_or_s_after_an_apostrophe(typed: str, stored: str) -> None:
    details = validate_details({**VALID, "lastName": typed}, PROTOCOL).details
    assert details is not None and details.last_name == stored


@pytest.mark.parametrize("space", ["\u00a0", "\u202f", "\u2009", "\u3000"])
def test_any_unicode_space_in_a_phone_number_counts_as_a_space(space: str) -> None:
    details = validate_details({**VALID, "phone": f"+32{space}470{space}12{space}34{space}56"}, PROTOCOL).details
    assert details is not None and details.phone == "+32470123456"
