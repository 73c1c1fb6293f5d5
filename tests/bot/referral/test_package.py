"""The package must open in real 7-Zip with the right password only, and leak nothing without it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
from pathlib import Path

import pytest
import pyzipper
import vobject
from Cryptodome.Protocol.KDF import PBKDF2

from bot.core.protocols import DataSharingProtocol, load_protocol_file
from bot.core.referral_values import ClientDetails, ConsentRecord, ReferralPackageContents, Referrer
from bot.referral.package import (
    PACKAGE_ENTRY_NAMES,
    PackagePasswordError,
    _render_json,
    _render_text,
    _render_vcard,
    _vcard_escape,
    build_package,
    encrypted_zip,
    winzip_aes_keys,
)
from tests.support import sevenzip
from tests.support.words import FIELD_NAMES, forbidden_words, unproven_ticks

PROTOCOL_FILE = Path(__file__).resolve().parents[3] / "infra" / "protocols" / "sint-gillis-waas.toml"
PASSWORD = "K7M2-QX4P-9HTR-WN3B-ZD8E-LF6A"
CREATED_AT = dt.datetime(2026, 11, 28, 9, 15, 42, tzinfo=dt.UTC)  # 10:15 in Brussels
CONFIRMED_AT = dt.datetime(2026, 11, 28, 9, 12, 5, tzinfo=dt.UTC)  # 10:12 in Brussels
TEXT_VERSION = "2026-11-7"  # the consent texts' version the parents heard (any id: the package copies it)


@pytest.fixture(scope="module")
def protocol() -> DataSharingProtocol:
    return load_protocol_file(PROTOCOL_FILE)


@pytest.fixture
def client() -> ClientDetails:
    return ClientDetails(
        first_name="Zoë",
        last_name="Van den Broeck-D'Hondt",
        street="Kerkstraat",
        house_number="12 bus 3",
        postal_code="9170",
        municipality="Sint-Gillis-Waas",
        phone="+32470123456",
        email="zoe.vdb@example.be",
    )


@pytest.fixture
def contents(protocol: DataSharingProtocol, client: ClientDetails) -> ReferralPackageContents:
    return ReferralPackageContents(
        reference="VD-20261128-K7M2QX",
        protocol=protocol,
        client=client,
        consent=ConsentRecord(True, True, True, True, True, CONFIRMED_AT, text_version=TEXT_VERSION),
        referrer=Referrer(user_id="00000000-0000-0000-0000-00000000a11e", display_name="Anna Peeters"),
        key_version="3",
        created_at=CREATED_AT,
    )


@pytest.fixture
def package(contents: ReferralPackageContents) -> bytes:
    return build_package(contents, PASSWORD.encode("ascii"))


def _extract_ok(package: bytes, password: str, dest: Path) -> dict[str, bytes]:
    result = sevenzip.extract(package, password, dest)
    assert result.returncode == 0, result.stdout + result.stderr
    return {path.name: path.read_bytes() for path in dest.iterdir()}


def _entry_blocks(listing: str) -> list[dict[str, str]]:
    """The per-entry `Key = value` blocks of `7zz l -slt` (after the `----------` line)."""
    _, _, entries = listing.partition("\n----------\n")
    blocks = []
    for chunk in entries.strip().split("\n\n"):
        fields = dict(line.split(" = ", 1) for line in chunk.splitlines() if " = " in line)
        if "Path" in fields:
            blocks.append(fields)
    return blocks


def test_7zip_extracts_exactly_the_rendered_files(
    package: bytes, contents: ReferralPackageContents, tmp_path: Path
) -> None:
    files = _extract_ok(package, PASSWORD, tmp_path)

    assert files == {
        "doorverwijzing.txt": _render_text(contents),
        "doorverwijzing.json": _render_json(contents),
        "contact.vcf": _render_vcard(contents.client),
    }


def test_text_names_the_referral_the_client_and_the_rules(package: bytes, tmp_path: Path) -> None:
    raw = _extract_ok(package, PASSWORD, tmp_path)["doorverwijzing.txt"]
    text = raw.decode("utf-8")

    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only, for Notepad
    for expected in (
        "VD-20261128-K7M2QX",
        "OR-KG-NOW-OCMW-SGW-2026",
        "Protocol Opgroeien regie - OCMW Sint-Gillis-Waas (onderbescherming)",
        "Opgroeien regie, Kind en Gezin team Noord-Oost Waasland",
        "Anna Peeters",
        "bevestigd op 28/11/2026 10:12",
        "Sleutelversie:      3",
        "Versie van de tekst op de kaart van de doorverwijzer: 2026-11-7\r\n",
        "Familienaam:        Van den Broeck-D'Hondt",
        "De doorverwijzer bevestigde in Teams dat de ouders geïnformeerd werden over:",
        "Zoë",
        "Van den Broeck-D'Hondt",
        "Kerkstraat 12 bus 3",
        "9170 Sint-Gillis-Waas",
        "+32470123456 (0470 12 34 56)",
        "zoe.vdb@example.be",
        "artikel 3",
        "10 jaar",
        "artikel 7",
    ):
        assert expected in text, expected
    assert text.count(": ja\r\n") == 5  # four information points and the consent


def test_text_says_when_phone_or_email_were_not_given(
    contents: ReferralPackageContents, client: ClientDetails
) -> None:
    bare = dataclasses.replace(contents, client=dataclasses.replace(client, phone=None, email=None))

    text = _render_text(bare).decode("utf-8")

    assert "Telefoonnummer:     niet opgegeven\r\n" in text
    assert "E-mailadres:        niet opgegeven\r\n" in text


@pytest.mark.parametrize(("phone", "dialled", "misleading"), [
    ("+3292101010", "09 210 10 10", None),
    ("+33612345678", "00 33 6 12 34 56 78", "06 12 34 56 78"),
    ("+212612345678", "00 212 6 12 34 56 78", "06 12 34 56 78"),
    ("+31612345678", "00 31 6 12345678", "06 12345678"),
])
def test_text_writes_the_phone_number_as_dialled_from_belgium(
    contents: ReferralPackageContents, client: ClientDetails, phone: str, dialled: str, misleading: str | None
) -> None:
    """A foreign number's own national form (06 12 34 56 78 for a French mobile) is a wrong number when a
    Belgian OCMW worker dials it: the text gives the number as dialled from Belgium."""
    foreign = dataclasses.replace(contents, client=dataclasses.replace(client, phone=phone))

    text = _render_text(foreign).decode("utf-8")

    line = next(line for line in text.split("\r\n") if line.startswith("Telefoonnummer:"))
    assert line == f"Telefoonnummer:     {phone} ({dialled})"
    assert misleading is None or f"({misleading})" not in line


def test_text_uses_the_field_names_of_the_cards_and_claims_only_what_the_referrer_confirmed(
    contents: ReferralPackageContents,
) -> None:
    text = _render_text(contents).decode("utf-8")

    assert forbidden_words(text, "nl") == {}
    assert unproven_ticks(text, "nl") == []
    for name in FIELD_NAMES["nl"].values():
        assert f"\r\n{name}:" in text, name
    assert "De doorverwijzer bevestigde dat de ouders hun toestemming gaven: ja\r\n" in text


def test_json_has_the_documented_keys_and_values(package: bytes, tmp_path: Path) -> None:
    document = json.loads(_extract_ok(package, PASSWORD, tmp_path)["doorverwijzing.json"].decode("utf-8"))

    assert document == {
        "schemaVersion": 1,
        "reference": "VD-20261128-K7M2QX",
        "protocolId": "OR-KG-NOW-OCMW-SGW-2026",
        "keyVersion": "3",
        "createdAt": "2026-11-28T10:15:42+01:00",
        "sender": {"organisation": "Opgroeien regie", "team": "Kind en Gezin team Noord-Oost Waasland"},
        "referrer": {"userId": "00000000-0000-0000-0000-00000000a11e", "displayName": "Anna Peeters"},
        "consent": {
            "informedData": True,
            "informedRecipient": True,
            "informedPurpose": True,
            "informedFollowUp": True,
            "consentGiven": True,
            "confirmedAt": "2026-11-28T10:12:05+01:00",
            "textVersion": "2026-11-7",
        },
        "client": {
            "firstName": "Zoë",
            "lastName": "Van den Broeck-D'Hondt",
            "address": {
                "street": "Kerkstraat",
                "houseNumber": "12 bus 3",
                "postalCode": "9170",
                "municipality": "Sint-Gillis-Waas",
                "country": "BE",
            },
            "phone": "+32470123456",
            "email": "zoe.vdb@example.be",
        },
    }
    assert dt.datetime.fromisoformat(document["createdAt"]) == CREATED_AT


def test_json_writes_null_for_missing_phone_and_email(
    contents: ReferralPackageContents, client: ClientDetails
) -> None:
    bare = dataclasses.replace(contents, client=dataclasses.replace(client, phone=None, email=None))

    document = json.loads(_render_json(bare))

    assert document["client"]["phone"] is None
    assert document["client"]["email"] is None


def test_vcard_holds_the_contact(package: bytes, tmp_path: Path) -> None:
    card = _extract_ok(package, PASSWORD, tmp_path)["contact.vcf"].decode("utf-8")

    assert card.split("\r\n") == [
        "BEGIN:VCARD",
        "VERSION:3.0",
        "N:Van den Broeck-D'Hondt;Zoë;;;",
        "FN:Zoë Van den Broeck-D'Hondt",
        "ADR;TYPE=HOME:;;Kerkstraat 12 bus 3;Sint-Gillis-Waas;;9170;België",
        "TEL;TYPE=CELL:+32470123456",
        "EMAIL;TYPE=INTERNET:zoe.vdb@example.be",
        "END:VCARD",
        "",
    ]


def test_vcard_is_the_version_outlook_and_exchange_import(package: bytes, tmp_path: Path) -> None:
    """Outlook and Exchange turn a .vcf into a contact by [MS-OXVCARD], which reads vCard 3.0 (RFC 2426): a TEL
    whose value is a `tel:` URI (vCard 4.0) is not a phone number there, and Outlook drops a TEL without a TYPE.
    Read by a vCard 3.0 parser, every field is where an importer looks for it; a mobile number is the mobile."""
    card = vobject.readOne(_extract_ok(package, PASSWORD, tmp_path)["contact.vcf"].decode("utf-8"))
    assert card.version.value == "3.0"
    assert (card.n.value.family, card.n.value.given) == ("Van den Broeck-D'Hondt", "Zoë")
    assert card.fn.value == "Zoë Van den Broeck-D'Hondt"
    address = card.adr.value
    assert (address.street, address.city, address.code, address.country) == (
        "Kerkstraat 12 bus 3", "Sint-Gillis-Waas", "9170", "België")
    assert [param.upper() for param in card.adr.params["TYPE"]] == ["HOME"]
    assert card.tel.value == "+32470123456" and [t.upper() for t in card.tel.params["TYPE"]] == ["CELL"]
    assert card.email.value == "zoe.vdb@example.be" and [t.upper() for t in card.email.params["TYPE"]] == ["INTERNET"]


def test_vcard_gives_a_landline_as_the_home_phone(client: ClientDetails) -> None:
    """A Belgian landline (03 for the Waasland) is not a mobile: the home number, as Outlook files it."""
    card = vobject.readOne(_render_vcard(dataclasses.replace(client, phone="+3237701234")).decode("utf-8"))
    assert card.tel.value == "+3237701234" and [t.upper() for t in card.tel.params["TYPE"]] == ["HOME", "VOICE"]


def test_wrong_password_is_refused_by_7zip(package: bytes, tmp_path: Path) -> None:
    result = sevenzip.extract(package, "WRONG-PASSWORD-1234-5678", tmp_path)

    assert result.returncode == 2
    assert "Wrong password" in result.stdout + result.stderr


def test_every_entry_is_aes256_deflate_with_a_fixed_date(package: bytes) -> None:
    blocks = _entry_blocks(sevenzip.technical_listing(package, PASSWORD))

    assert [block["Path"] for block in blocks] == list(PACKAGE_ENTRY_NAMES)
    for block in blocks:
        assert block["Method"] == "AES-256 Deflate"
        assert block["Encrypted"] == "+"
        assert block["Modified"].startswith("1980-01-01 00:00:00")


def test_raw_zip_holds_no_client_value(package: bytes, client: ClientDetails) -> None:
    values = [*client.values(), "0470 12 34 56", "470123456", "zoe.vdb"]
    for value in values:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            assert value.encode(encoding) not in package, (value, encoding)


def test_only_generic_metadata_is_in_clear(package: bytes) -> None:
    with pyzipper.AESZipFile(io.BytesIO(package)) as archive:
        infos = archive.infolist()
        assert archive.comment == b""

    assert tuple(info.filename for info in infos) == PACKAGE_ENTRY_NAMES
    for info in infos:
        assert info.comment == b""
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.compress_type == pyzipper.ZIP_DEFLATED
        assert info.wz_aes_strength == 3  # 256-bit
        assert info.wz_aes_version == 2  # AE-2: no CRC of the plaintext in clear
        assert info.CRC == 0


def test_two_builds_differ_in_bytes_only(contents: ReferralPackageContents) -> None:
    first = build_package(contents, PASSWORD.encode("ascii"))
    second = build_package(contents, PASSWORD.encode("ascii"))

    def metadata(package: bytes) -> list[tuple[object, ...]]:
        with pyzipper.AESZipFile(io.BytesIO(package)) as archive:
            return [
                (info.filename, info.date_time, info.compress_type, info.file_size, info.compress_size,
                 info.external_attr, info.flag_bits, info.extra)
                for info in archive.infolist()
            ]

    assert metadata(first) == metadata(second)
    assert first != second  # a fresh salt per entry


@pytest.mark.parametrize("length", [16, 99])
def test_password_length_limits_still_open_in_7zip(
    contents: ReferralPackageContents, length: int, tmp_path: Path
) -> None:
    password = ("Ab3-" * 25)[:length]

    files = _extract_ok(build_package(contents, password.encode("ascii")), password, tmp_path)

    assert sorted(files) == sorted(PACKAGE_ENTRY_NAMES)


@pytest.mark.parametrize(
    "password",
    [
        pytest.param(b"Short-Pass-15ch", id="15 bytes"),
        pytest.param(b"X" * 100, id="100 bytes"),
        pytest.param("Wachtwoord-Vééééééé".encode(), id="non-ASCII"),
        pytest.param(b"Twee woorden met spaties", id="space"),
        pytest.param(b"Tab\tin-the-middle-1234", id="control character"),
        pytest.param(b"", id="empty"),
    ],
)
def test_unusable_passwords_are_refused_without_echoing_them(
    contents: ReferralPackageContents, password: bytes
) -> None:
    with pytest.raises(PackagePasswordError) as caught:
        build_package(contents, password)

    message = str(caught.value)
    assert not password or password.decode("utf-8") not in message
    assert not password or repr(password) not in message


def test_str_password_is_refused(contents: ReferralPackageContents) -> None:
    with pytest.raises(PackagePasswordError) as caught:
        build_package(contents, PASSWORD)  # type: ignore[arg-type]

    assert PASSWORD not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_naive_creation_time_is_refused(contents: ReferralPackageContents) -> None:
    naive = dataclasses.replace(contents, created_at=CREATED_AT.replace(tzinfo=None))

    with pytest.raises(ValueError, match="timezone-aware"):
        build_package(naive, PASSWORD.encode("ascii"))


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a\\b", "a\\\\b"),
        ("a,b", "a\\,b"),
        ("a;b", "a\\;b"),
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\nb"),
        ("D'Hondt-Zoë", "D'Hondt-Zoë"),
    ],
)
def test_vcard_escape(raw: str, escaped: str) -> None:
    assert _vcard_escape(raw) == escaped


def test_vcard_special_characters_cannot_add_fields(client: ClientDetails) -> None:
    tricky = dataclasses.replace(
        client, first_name="An;na", last_name="De, Smet\\", street="Straat\nTEL:+32000000000", email=None
    )

    card = _render_vcard(tricky).decode("utf-8")

    assert "N:De\\, Smet\\\\;An\\;na;;;\r\n" in card
    assert "ADR;TYPE=HOME:;;Straat\\nTEL:+32000000000 12 bus 3;" in card
    assert card.count("\r\nTEL") == 1
    assert "EMAIL" not in card


def test_vcard_folds_long_lines_without_splitting_characters(client: ClientDetails) -> None:
    street = "Éénentwintigste-Eeuwse-Verbindingsstraat-Van-De-Oude-Molen-Aan-De-Schelde"
    long = dataclasses.replace(client, street=street)

    raw = _render_vcard(long)

    assert b"\r\n " in raw
    for line in raw.split(b"\r\n"):
        assert len(line) <= 75
        line.decode("utf-8")  # every physical line is valid UTF-8 on its own
    unfolded = raw.decode("utf-8").replace("\r\n ", "")
    assert f"ADR;TYPE=HOME:;;{street} 12 bus 3;" in unfolded


class _FixedSalts:
    """The salts of a fixed sequence, for both our encrypter and pyzipper's own (`Random.new().read`)."""

    def __init__(self, *salts: bytes) -> None:
        self._salts = list(salts)

    def __call__(self, length: int) -> bytes:
        salt = self._salts.pop(0)
        assert len(salt) == length
        return salt

    def new(self) -> _FixedSalts:
        return self

    def read(self, length: int) -> bytes:
        return self(length)


SALTS = (bytes(range(16)), bytes(range(16, 32)), b"\xff" * 16)


def _pyzipper_own_package(contents: ReferralPackageContents, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """The package exactly as stock pyzipper (pycryptodomex PBKDF2) writes it, with `SALTS`."""
    monkeypatch.setattr(pyzipper.zipfile_aes, "Random", _FixedSalts(*SALTS))
    buffer = io.BytesIO()
    with pyzipper.AESZipFile(buffer, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as archive:
        archive.setpassword(PASSWORD.encode("ascii"))
        archive.setencryption(pyzipper.WZ_AES, nbits=256)
        for name, data in (
            ("doorverwijzing.txt", _render_text(contents)),
            ("doorverwijzing.json", _render_json(contents)),
            ("contact.vcf", _render_vcard(contents.client)),
        ):
            info = pyzipper.zipfile_aes.AESZipInfo(filename=name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = pyzipper.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def test_the_bytes_equal_pyzipper_s_own_for_the_same_salts(
    contents: ReferralPackageContents, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = encrypted_zip(
        {
            "doorverwijzing.txt": _render_text(contents),
            "doorverwijzing.json": _render_json(contents),
            "contact.vcf": _render_vcard(contents.client),
        },
        PASSWORD.encode("ascii"),
        random_bytes=_FixedSalts(*SALTS),
    )

    assert ours == _pyzipper_own_package(contents, monkeypatch)


@pytest.mark.parametrize("password", [b"K7M2-QX4P-9HTR-WN3B-ZD8E-LF6A", b"A" * 99, b"!~" * 8])
@pytest.mark.parametrize("salt", [bytes(16), bytes(range(16)), b"\x80" * 16])
def test_the_keys_are_the_winzip_pbkdf2_keys(password: bytes, salt: bytes) -> None:
    expected = PBKDF2(password, salt, count=1000, dkLen=66)  # what pyzipper itself derives

    assert b"".join(winzip_aes_keys(password, salt)) == expected
    assert [len(part) for part in winzip_aes_keys(password, salt)] == [32, 32, 2]


def test_pyzipper_reads_the_package_with_the_password_only(package: bytes) -> None:
    with pyzipper.AESZipFile(io.BytesIO(package)) as archive:
        archive.setpassword(PASSWORD.encode("ascii"))
        assert b"Kerkstraat" in archive.read("doorverwijzing.txt")
        archive.setpassword(b"WRONG-PASSWORD-1234-5678")
        with pytest.raises(RuntimeError, match="Bad password"):
            archive.read("doorverwijzing.txt")


def test_a_salt_source_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="salt"):
        encrypted_zip({"a.txt": b"a"}, PASSWORD.encode("ascii"), random_bytes=lambda n: bytes(n - 1))
