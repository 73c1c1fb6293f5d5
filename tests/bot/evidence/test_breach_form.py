"""The breach report card's check: every wrong field at once, times in Brussels, references parsed, texts kept out
of `repr`."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from bot.evidence.breach_form import (
    BREACH_ERROR_CODES,
    MAX_REFERENCES,
    TEXT_MAX_LENGTHS,
    parse_references,
    validate_breach_form,
)
from bot.evidence.breach_report import BreachKind

BRUSSELS = ZoneInfo("Europe/Brussels")
NOW = dt.datetime(2026, 11, 28, 10, 0, tzinfo=BRUSSELS)
PROTOCOL = "OR-KG-NOW-OCMW-SGW-2026"
SECRET = "Jozefien Kwakkelstraat"


def card(**changes: object) -> dict[str, object]:
    return {
        "protocol": PROTOCOL,
        "kind": "wrong_recipient",
        "discoveredDate": "2026-11-28",
        "discoveredTime": "08:15",
        "whatHappened": f"  De mail over {SECRET} ging fout.\r\nTweede regel.  ",
        "categories": "contact:phone,identification:name,nonsense",
        "references": "vd-20261128-k7m2qx; VD-20261127-P4HT9W  VD-20261128-K7M2QX",
        "consequences": "",
        "measuresTaken": "Gebeld.",
        "measuresProposed": "",
    } | changes


def check(data: dict[str, object], protocols: tuple[str, ...] = (PROTOCOL,)) -> dict[str, str]:
    result = validate_breach_form(data, protocol_ids=protocols, now=NOW, timezone=BRUSSELS)
    return {name: error.code for name, error in result.errors.items()}


def test_a_complete_card_becomes_a_form_in_brussels_time() -> None:
    result = validate_breach_form(card(), protocol_ids=[PROTOCOL], now=NOW, timezone=BRUSSELS)
    form = result.form
    assert form is not None and result.errors == {}
    assert form.kind == BreachKind.WRONG_RECIPIENT
    assert form.discovered_at == dt.datetime(2026, 11, 28, 8, 15, tzinfo=BRUSSELS)
    assert form.discovered_at.utcoffset() == dt.timedelta(hours=1)
    assert form.what_happened == f"De mail over {SECRET} ging fout.\nTweede regel."
    assert form.categories == ("identification:name", "contact:phone"), "card order, unknown values dropped"
    assert form.references == ("VD-20261128-K7M2QX", "VD-20261127-P4HT9W"), "upper case, each once"
    assert (form.consequences, form.measures_taken, form.measures_proposed) == ("", "Gebeld.", "")
    assert SECRET not in repr(form) and SECRET not in repr(result)


def test_every_wrong_field_is_named_at_once() -> None:
    errors = check({"protocol": "OTHER", "kind": "flood", "discoveredDate": "28/11/2026", "discoveredTime": "25:00",
                    "references": "VD-2026, VD-20261128-K7M2QX", "measuresTaken": "x" * 1001})
    assert errors == {"protocol": "required", "kind": "required", "discoveredDate": "date_format",
                      "discoveredTime": "time_format", "whatHappened": "required", "categories": "required",
                      "references": "reference_format", "measuresTaken": "too_long"}
    assert set(errors.values()) <= set(BREACH_ERROR_CODES)


def test_the_malformed_references_are_named_in_the_error() -> None:
    result = validate_breach_form(card(references="VD-20261128-K7M2QX, Peeters, VD-1"), protocol_ids=[PROTOCOL],
                                  now=NOW, timezone=BRUSSELS)
    assert dict(result.errors["references"].params) == {"references": "PEETERS, VD-1"}
    assert result.typed["references"] == "VD-20261128-K7M2QX, Peeters, VD-1", "shown again as typed"


@pytest.mark.parametrize(
    ("day", "time", "field"),
    [("2026-11-28", "10:06", "discoveredTime"), ("2026-11-29", "08:00", "discoveredDate")],
)
def test_a_discovery_in_the_future_is_refused_under_the_field_that_makes_it_so(day: str, time: str, field: str) -> None:
    assert check(card(discoveredDate=day, discoveredTime=time)) == {field: "in_future"}


def test_a_clock_a_few_minutes_ahead_is_not_the_future() -> None:
    assert check(card(discoveredTime="10:05")) == {}
    assert check(card(discoveredTime="9:30")) == {}, "Teams may send a time without the leading zero"


def test_one_protocol_needs_no_choice_but_only_the_allowed_ones_count() -> None:
    assert check(card(protocol="")) == {}
    assert check(card(protocol=""), protocols=(PROTOCOL, "OTHER")) == {"protocol": "required"}
    assert check(card(protocol="OTHER")) == {"protocol": "required"}


def test_too_many_references() -> None:
    many = ", ".join(f"VD-20261128-{'K7M2Q'}{letter}" for letter in "23456789ABCDEFGHJKMNPQRSTUVWXYZ")
    many += ", " + ", ".join(f"VD-20261127-{'P4HT9'}{letter}" for letter in "23456789ABCDEFGHJKMNPQRSTUVWXYZ")
    assert len(parse_references(many)[0]) > MAX_REFERENCES
    assert check(card(references=many[: TEXT_MAX_LENGTHS["references"]])) == {"references": "too_many_references"}


def test_control_characters_are_dropped_and_non_text_values_count_as_empty() -> None:
    result = validate_breach_form(card(whatHappened="Fout\x00\x1b[31m gegaan\tnu", categories=["x"], kind=3),
                                  protocol_ids=[PROTOCOL], now=NOW, timezone=BRUSSELS)
    assert result.typed["whatHappened"] == "Fout[31m gegaan\tnu"
    assert {name: error.code for name, error in result.errors.items()} == {"categories": "required",
                                                                            "kind": "required"}


def test_parse_references_splits_on_commas_semicolons_and_spaces() -> None:
    assert parse_references(" vd-20261128-k7m2qx-2 ;VD-20261128-K7M2QX,,x ") == (
        ["VD-20261128-K7M2QX-2", "VD-20261128-K7M2QX"], ["X"])
    assert parse_references("") == ([], [])
