"""The correction's file: only the corrected item, named as the cards name it, true whoever asked for it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import cards
from bot.core.protocols import load_protocol_file
from bot.core.referral_values import ITEM_FIELDS, Referrer
from bot.referral.correction_package import CorrectionPackageContents, _text, build_correction_package
from tests.conftest import ZIP_PASSWORD
from tests.support import sevenzip
from tests.support.words import forbidden_words, unproven_ticks

PROTOCOL_FILE = Path(__file__).resolve().parents[3] / "infra" / "protocols" / "sint-gillis-waas.toml"
VALUES = {"firstName": "Zoë", "lastName": "Van den Broeck", "street": "Kerkstraat", "houseNumber": "12 bus 3",
          "postalCode": "9170", "municipality": "Meerdonk", "phone": "+32470123456", "email": "zoe@example.be"}


def _contents(item: str, created_at: dt.datetime = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
              ) -> CorrectionPackageContents:
    return CorrectionPackageContents(
        reference="VD-20261128-K7M2QX-2", corrects="VD-20261128-K7M2QX", protocol=load_protocol_file(PROTOCOL_FILE),
        item=item, values={field: VALUES[field] for field in ITEM_FIELDS[item]},
        referrer=Referrer(user_id="aad-1", display_name="Anna Peeters"), key_version="3",
        created_at=created_at,
    )


def correction(item: str, created_at: dt.datetime = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)) -> str:
    return _text(_contents(item, created_at)).decode("utf-8")


@pytest.mark.parametrize("item", sorted(ITEM_FIELDS))
def test_the_item_and_its_fields_are_named_as_on_the_cards(item: str) -> None:
    text = correction(item)

    assert f"Verbeterd gegeven: {cards.text('nl', f'item.{item}.label')} (protocol artikel 7)." in text
    for field in ITEM_FIELDS[item]:
        [line] = [line for line in text.splitlines() if f": {VALUES[field]}" in line]  # the phone in both forms
        label = line.strip().split(f": {VALUES[field]}")[0]
        assert cards.text("nl", f"field.{field}.label").startswith(label), (field, label)
    assert forbidden_words(text, "nl") == {}
    assert unproven_ticks(text, "nl") == []
    assert "OCMW meldde" not in text, "Kind en Gezin may correct on its own initiative: say only what is true of both"


def test_the_file_is_dated_in_belgian_time_as_the_first_package() -> None:
    """23:30 UTC on 28 November is 00:30 on 29 November in Brussels: not the day before."""
    text = correction("phone", dt.datetime(2026, 11, 28, 23, 30, tzinfo=dt.UTC))

    assert "\r\nAangemaakt op: 29/11/2026 00:30 (Belgische tijd)\r\n" in text


@pytest.mark.skipif(not sevenzip.available(), reason="7-Zip (7zz) is not installed")
def test_a_phone_correction_holds_only_the_number_and_no_contact_card(tmp_path: Path) -> None:
    """No contact.vcf, on purpose: the bot keeps nothing of the family but the corrected item, so a card of
    the number alone would become a second, nameless contact beside the one imported from the first
    package (which keeps the wrong number); the worker changes that contact by hand, as the OCMW guide says."""
    package = build_correction_package(_contents("phone"), ZIP_PASSWORD.encode("ascii"))

    result = sevenzip.extract(package, ZIP_PASSWORD, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["correctie.json", "correctie.txt"]
    inside = "".join(path.read_text("utf-8") for path in tmp_path.iterdir())
    assert "+32470123456" in inside
    assert not [value for name, value in VALUES.items() if name != "phone" and value in inside]
