"""Protocol files: the shipped one loads, bad ones stop the bot naming file and field."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from bot.config import Settings
from bot.protocols import ProtocolFileError, load_protocol_file, load_registry

SHIPPED = Settings().protocols_dir


def test_the_shipped_sint_gillis_waas_protocol_loads() -> None:
    registry = load_registry(SHIPPED)
    [protocol] = registry.all()
    assert protocol.recipient_mailbox == "welzijnshuis@sint-gillis-waas.be"
    assert protocol.in_force_from == dt.date(2026, 3, 1) and protocol.ends_on is None
    assert protocol.covers_postal_code("9170") and not protocol.covers_postal_code("9100")
    assert protocol.sender.team == "Kind en Gezin team Noord-Oost Waasland"
    assert (protocol.sender_dpo, protocol.recipient_dpo) == ("dpo@opgroeien.be", "informatica@sint-gillis-waas.be")


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [("sint gillis waas", "Sint-Gillis-Waas"), ("SINT-GILLIS-WAAS", "Sint-Gillis-Waas"), ("de klinge", "De Klinge"),
     ("  Sint   Pauwels ", "Sint-Pauwels"), ("Sint-Niklaas", None)],
)
def test_a_place_is_known_in_the_protocols_own_spelling(typed: str, canonical: str | None) -> None:
    [protocol] = load_registry(SHIPPED).all()
    assert protocol.places == ("Sint-Gillis-Waas", "De Klinge", "Meerdonk", "Sint-Pauwels"), "file order"
    assert protocol.canonical_place(typed) == canonical
    assert protocol.covers_place(typed) is (canonical is not None)


def test_without_places_the_municipality_is_still_spelled_one_way(tmp_path: Path) -> None:
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    (tmp_path / "p.toml").write_text("\n".join(line for line in text.splitlines() if not line.startswith("places")))
    protocol = load_protocol_file(tmp_path / "p.toml")
    assert protocol.places == ()
    assert protocol.canonical_place("sint-gillis waas") == "Sint-Gillis-Waas"
    assert protocol.canonical_place("Elders") is None and protocol.covers_place("Elders")


def test_in_force_window_includes_both_ends(tmp_path: Path) -> None:
    text = (SHIPPED / "sint-gillis-waas.toml").read_text().replace("# ends_on = 2027-03-01", "ends_on = 2027-03-01")
    (tmp_path / "p.toml").write_text(text)
    protocol = load_protocol_file(tmp_path / "p.toml")
    assert not protocol.in_force_on(dt.date(2026, 2, 28))
    assert protocol.in_force_on(dt.date(2026, 3, 1)) and protocol.in_force_on(dt.date(2027, 3, 1))
    assert not protocol.in_force_on(dt.date(2027, 3, 2))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('mailbox = "welzijnshuis@sint-gillis-waas.be"', 'mailbox = "not an address"', "recipient.mailbox"),
        ('postal_codes = ["9170"]', 'postal_codes = ["91700"]', "recipient.postal_codes"),
        ('postal_codes = ["9170"]', "postal_codes = []", "recipient.postal_codes"),
        ("in_force_from = 2026-03-01", 'in_force_from = "1 maart"', "in_force_from"),
        ("in_force_from = 2026-03-01", "", "in_force_from"),
        ("# ends_on = 2027-03-01", "ends_on = 2025-01-01", "ends_on"),
        ('id = "OR-KG-NOW-OCMW-SGW-2026"', 'id = "bad id!"', "id"),
        ('dpo = "dpo@opgroeien.be"', "", "sender.dpo"),
        ('zip_password_secret = "zip-password-ocmw-sint-gillis-waas"', 'zip_password_secret = "a b"',
         "zip_password_secret"),
        ("[sender]", "[sender", "(syntax)"),
    ],
)
def test_a_bad_file_names_file_and_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    assert old in text
    path = tmp_path / "broken.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ProtocolFileError) as raised:
        load_registry(tmp_path)
    assert raised.value.field == field
    assert "broken.toml" in str(raised.value) and field in str(raised.value)


def test_two_files_with_one_id_are_refused(tmp_path: Path) -> None:
    text = (SHIPPED / "sint-gillis-waas.toml").read_text()
    (tmp_path / "a.toml").write_text(text)
    (tmp_path / "b.toml").write_text(text)
    with pytest.raises(ProtocolFileError, match="another file"):
        load_registry(tmp_path)


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtocolFileError, match=r"no \*\.toml"):
        load_registry(tmp_path)
