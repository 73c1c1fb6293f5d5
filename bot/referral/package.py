"""The encrypted referral package: an AES-256 ZIP (WinZip AE-2) that the OCMW opens with 7-Zip.

Bytes in, bytes out, no I/O. What a ZIP shows without the password (entry names, sizes,
timestamps, comments) is kept generic: fixed names, a fixed date, no comments.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import os
import re
from collections.abc import Callable, Mapping
from zoneinfo import ZoneInfo

import phonenumbers
import pyzipper
from Cryptodome.Cipher import AES
from Cryptodome.Util import Counter
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pyzipper.zipfile_aes import AESZipEncrypter, AESZipInfo

from bot.core.referral_values import ClientDetails, ReferralPackageContents

TEXT_ENTRY = "doorverwijzing.txt"
JSON_ENTRY = "doorverwijzing.json"
VCARD_ENTRY = "contact.vcf"
PACKAGE_ENTRY_NAMES: tuple[str, ...] = (TEXT_ENTRY, JSON_ENTRY, VCARD_ENTRY)

SCHEMA_VERSION = 1
_FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the real time would leak when the referral was made
_ENTRY_MODE = 0o600 << 16  # rw------- for whoever extracts on a POSIX system
_PASSWORD_MIN = 16
_PASSWORD_MAX = 99  # 7-Zip refuses longer ZIP passwords
_BRUSSELS = ZoneInfo("Europe/Brussels")
_NOT_GIVEN = "niet opgegeven"
_VCARD_LINE_OCTETS = 75
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
# WinZip AES, 256-bit (AE-2): 16-byte salt per entry; PBKDF2-HMAC-SHA1, 1000 iterations, giving the
# AES key (32), the HMAC-SHA1 key (32) and a 2-byte password verifier, in that order.
_SALT_BYTES = 16
_KEY_BYTES = 32
_VERIFIER_BYTES = 2
_KDF_ITERATIONS = 1000
_AES_256_STRENGTH = 3

RandomBytes = Callable[[int], bytes]


class PackagePasswordError(ValueError):
    """The password cannot protect a package 7-Zip will open; the message never holds the password."""


def build_package(contents: ReferralPackageContents, password: bytes) -> bytes:
    """Return the encrypted ZIP holding the text, JSON and vCard renderings of `contents`."""
    _check_aware(contents)
    return encrypted_zip(
        {
            TEXT_ENTRY: _render_text(contents),
            JSON_ENTRY: _render_json(contents),
            VCARD_ENTRY: _render_vcard(contents.client),
        },
        password,
    )


def encrypted_zip(entries: Mapping[str, bytes], password: bytes, *, random_bytes: RandomBytes = os.urandom) -> bytes:
    """An AES-256 (AE-2) ZIP of `entries`, in the given order, with fixed metadata and no comments.

    `random_bytes(n)` gives each entry's salt; tests pass a fixed one to compare with pyzipper's own bytes.
    """
    _check_password(password)
    buffer = io.BytesIO()
    with _AesZipFile(buffer, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as archive:
        archive.random_bytes = random_bytes
        archive.setpassword(password)
        archive.setencryption(pyzipper.WZ_AES, nbits=256)
        for name, data in entries.items():
            info = AESZipInfo(filename=name, date_time=_FIXED_DATE_TIME)
            info.compress_type = pyzipper.ZIP_DEFLATED  # AESZipInfo would otherwise store uncompressed
            info.external_attr = _ENTRY_MODE
            archive.writestr(info, data)
    return buffer.getvalue()


def winzip_aes_keys(password: bytes, salt: bytes) -> tuple[bytes, bytes, bytes]:
    """(AES key, HMAC key, password verifier) of one entry, derived by OpenSSL.

    pyzipper derives them with pycryptodomex's PBKDF2: 0.7 ms per entry here, half the package's
    cost. OpenSSL through `cryptography` (its own OpenSSL 3.5+) takes 0.38 ms for the same bytes;
    `hashlib.pbkdf2_hmac` (the system's OpenSSL 3.0, slow per iteration) 0.68 ms.
    """
    # SHA-1 and 1000 iterations are fixed by the WinZip AES format that 7-Zip reads.
    material = PBKDF2HMAC(SHA1(), 2 * _KEY_BYTES + _VERIFIER_BYTES, salt, _KDF_ITERATIONS).derive(password)  # noqa: S303  # nosec B303
    return material[:_KEY_BYTES], material[_KEY_BYTES : 2 * _KEY_BYTES], material[2 * _KEY_BYTES :]


class _AesEncrypter(AESZipEncrypter):  # type: ignore[misc]  # pyzipper has no type hints
    """pyzipper's AE-2 encrypter for 256-bit keys, with the keys from `winzip_aes_keys`.

    Only the key derivation differs: the cipher (AES-CTR, little-endian counter from 1), the HMAC
    and every byte of the format stay pyzipper's (tests compare the bytes for a fixed salt).
    """

    def __init__(self, password: bytes, salt: bytes) -> None:
        # Not super().__init__(): it would derive the keys a second time, the slow way.
        self.force_wz_aes_version = None
        self.conditionally_include_crc = None
        self.min_bytes_to_include_crc = None
        self.salt_length = _SALT_BYTES
        self.aes_strength = _AES_256_STRENGTH
        self.salt = salt
        aes_key, hmac_key, self.encpwdverify = winzip_aes_keys(password, salt)
        self.encrypter = AES.new(aes_key, AES.MODE_CTR, counter=Counter.new(nbits=128, little_endian=True))
        self.hmac = hmac.new(hmac_key, digestmod=hashlib.sha1)


class _AesZipFile(pyzipper.AESZipFile):  # type: ignore[misc]  # pyzipper has no type hints
    """`AESZipFile` whose entries get `_AesEncrypter`s, each with a fresh salt from `random_bytes`."""

    random_bytes: RandomBytes = os.urandom

    def get_encrypter(self) -> _AesEncrypter:
        salt = self.random_bytes(_SALT_BYTES)
        if len(salt) != _SALT_BYTES:
            raise ValueError("the salt source gave the wrong number of bytes")
        return _AesEncrypter(self.pwd, salt)


def _check_password(password: object) -> None:
    """Refuse passwords 7-Zip cannot use or that are too weak; never echo the password."""
    if not isinstance(password, bytes):
        raise PackagePasswordError("the package password must be bytes")
    if not _PASSWORD_MIN <= len(password) <= _PASSWORD_MAX:
        raise PackagePasswordError(f"the package password must be {_PASSWORD_MIN}-{_PASSWORD_MAX} bytes long")
    if not all(0x21 <= byte <= 0x7E for byte in password):
        raise PackagePasswordError("the package password must be printable ASCII without spaces")


def _check_aware(contents: ReferralPackageContents) -> None:
    """A naive time would silently be read as the server's zone; refuse it instead."""
    for label, moment in (("created_at", contents.created_at), ("consent.confirmed_at", contents.consent.confirmed_at)):
        if moment.utcoffset() is None:
            raise ValueError(f"{label} must be timezone-aware")


def local_text(moment: dt.datetime) -> str:
    """A moment as the package files write it, in Belgian time (the day the referrer and the OCMW live in)."""
    return moment.astimezone(_BRUSSELS).strftime("%d/%m/%Y %H:%M")


def local_iso(moment: dt.datetime) -> str:
    """A moment as the package's JSON writes it: ISO 8601 with the Belgian offset."""
    return moment.astimezone(_BRUSSELS).isoformat(timespec="seconds")


def _dialled_from_belgium(e164: str) -> str | None:
    """The number as the OCMW worker dials it: 0470 12 34 56, or 00 33 6 12 34 56 78 for a French one
    (its own national form, 06 12 34 56 78, is a wrong number from Belgium); None when it does not parse."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_out_of_country_calling_number(number, "BE")


def phone_as_written(e164: str) -> str:
    """A phone number as the package files write it for the OCMW worker: "+32470123456 (0470 12 34 56)".

    The first package and a correction write it so: one number, one form, whichever package the worker reads.
    """
    dialled = _dialled_from_belgium(e164)
    return f"{e164} ({dialled})" if dialled else e164


def _yes_no(value: bool) -> str:
    return "ja" if value else "nee"


def _render_text(contents: ReferralPackageContents) -> bytes:
    """The file the OCMW worker reads: Dutch, UTF-8, CRLF line ends so Windows Notepad shows it well."""
    protocol, client, consent = contents.protocol, contents.client, contents.consent
    phone = phone_as_written(client.phone) if client.phone else _NOT_GIVEN
    lines = [
        f"Doorverwijzing naar {protocol.recipient.organisation}",
        "",
        f"Referentie:         {contents.reference}",
        f"Protocol:           {protocol.id} – {protocol.title}",
        f"Van:                {protocol.sender.organisation}, {protocol.sender.team}",
        f"Doorverwezen door:  {contents.referrer.display_name}",
        f"Aangemaakt op:      {local_text(contents.created_at)} (Belgische tijd)",
        f"Sleutelversie:      {contents.key_version}",
        "",
        f"Toestemming, bevestigd op {local_text(consent.confirmed_at)} (Belgische tijd).",
        "De doorverwijzer bevestigde in Teams dat de ouders geïnformeerd werden over:",
        "- welke gegevens worden doorgegeven (naam, adres, telefoonnummer, e-mailadres): "
        f"{_yes_no(consent.informed_data)}",
        f"- aan wie: een maatschappelijk werker van {protocol.recipient.organisation}: "
        f"{_yes_no(consent.informed_recipient)}",
        f"- waarom: zodat het OCMW contact kan opnemen en hulp kan aanbieden: {_yes_no(consent.informed_purpose)}",
        f"- wat er daarna gebeurt en hoe lang de gegevens bewaard worden: {_yes_no(consent.informed_follow_up)}",
        f"De doorverwijzer bevestigde dat de ouders hun toestemming gaven: {_yes_no(consent.consent_given)}",
        f"Versie van de tekst op de kaart van de doorverwijzer: {consent.text_version}",
        "",
        "Gegevens van het gezin",
        f"Voornaam:           {client.first_name}",
        f"Familienaam:        {client.last_name}",
        f"Adres:              {client.street} {client.house_number}",
        f"                    {client.postal_code} {client.municipality}",
        f"Telefoonnummer:     {phone}",
        f"E-mailadres:        {client.email or _NOT_GIVEN}",
        "",
        "Bewaren (protocol artikel 3): bewaar deze gegevens tot er contact is geweest en duidelijk is of",
        "het gezin verdere hulp- en dienstverlening wenst. Wenst het gezin hulp, dan maakt het OCMW een",
        "dossier aan (bewaard tot 10 jaar na het afsluiten van het dossier). Wenst het gezin geen hulp,",
        "verwijder deze gegevens dan.",
        "",
        "Foutieve gegevens (protocol artikel 7): kloppen gegevens niet, of zijn ze onvolledig of verouderd,",
        f"meld dat dan onmiddellijk aan {protocol.sender.organisation} met de referentie {contents.reference}.",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _render_json(contents: ReferralPackageContents) -> bytes:
    """The same data for software that imports it into a client file."""
    client, consent = contents.client, contents.consent
    document = {
        "schemaVersion": SCHEMA_VERSION,
        "reference": contents.reference,
        "protocolId": contents.protocol.id,
        "keyVersion": contents.key_version,
        "createdAt": local_iso(contents.created_at),
        "sender": {"organisation": contents.protocol.sender.organisation, "team": contents.protocol.sender.team},
        "referrer": {"userId": contents.referrer.user_id, "displayName": contents.referrer.display_name},
        "consent": {
            "informedData": consent.informed_data,
            "informedRecipient": consent.informed_recipient,
            "informedPurpose": consent.informed_purpose,
            "informedFollowUp": consent.informed_follow_up,
            "consentGiven": consent.consent_given,
            "confirmedAt": local_iso(consent.confirmed_at),
            "textVersion": consent.text_version,
        },
        "client": {
            "firstName": client.first_name,
            "lastName": client.last_name,
            "address": {
                "street": client.street,
                "houseNumber": client.house_number,
                "postalCode": client.postal_code,
                "municipality": client.municipality,
                "country": "BE",
            },
            "phone": client.phone or None,
            "email": client.email or None,
        },
    }
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _vcard_escape(value: str) -> str:
    """Escape a text value (RFC 2426 section 4, as RFC 6350 section 3.4), so a name cannot split a property."""
    value = value.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")
    return value.replace("\r\n", "\\n").replace("\r", "\\n").replace("\n", "\\n")


def _vcard_fold(line: str) -> str:
    """Fold at 75 octets (RFC 2425 section 5.8.1) without splitting a UTF-8 character."""
    if len(line.encode("utf-8")) <= _VCARD_LINE_OCTETS:
        return line  # most lines: nothing to fold, no walk over the characters
    parts: list[str] = []
    current, size = "", 0
    for char in line:
        width = len(char.encode("utf-8"))
        if size + width > _VCARD_LINE_OCTETS:
            parts.append(current)
            current, size = " ", 1  # a continuation line starts with one space
        current += char
        size += width
    parts.append(current)
    return "\r\n".join(parts)


def _phone_type(phone: str) -> str:
    """The vCard TYPE of a number: CELL for a mobile one, else HOME,VOICE (a number that does not parse too)."""
    if _E164.match(phone):
        try:
            parsed = phonenumbers.parse(phone)
        except phonenumbers.NumberParseException:
            return "HOME,VOICE"
        if phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.MOBILE:
            return "CELL"
    return "HOME,VOICE"


def _render_vcard(client: ClientDetails) -> bytes:
    """A contact card the worker can import into Outlook or a phone in one click.

    vCard 3.0 (RFC 2426), the version Outlook and Exchange import ([MS-OXVCARD]); phones read it too. Its phone
    number is plain text with a type (4.0's `tel:` URI was read as the text "tel:+32...", and Outlook drops a TEL
    without a type): a mobile number as the mobile, any other as the home number.
    """
    e = _vcard_escape
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"N:{e(client.last_name)};{e(client.first_name)};;;",
        f"FN:{e(client.first_name)} {e(client.last_name)}",
        f"ADR;TYPE=HOME:;;{e(client.street)} {e(client.house_number)};{e(client.municipality)};;"
        f"{e(client.postal_code)};België",
    ]
    if client.phone:
        lines.append(f"TEL;TYPE={_phone_type(client.phone)}:{e(client.phone)}")
    if client.email:
        lines.append(f"EMAIL;TYPE=INTERNET:{e(client.email)}")
    lines.append("END:VCARD")
    return "".join(_vcard_fold(line) + "\r\n" for line in lines).encode("utf-8")
