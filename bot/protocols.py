"""The data-sharing protocols in force, loaded from one TOML file each.

Protocols are data, not code: a new municipality is a new file, reviewed by the DPO,
not a code change. A bad file stops the bot at start with the file and field named.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{1,63}$")
_SECRET_NAME_PATTERN = re.compile(r"^[0-9a-zA-Z-]{1,127}$")  # Key Vault secret name rules
_POSTAL_CODE_PATTERN = re.compile(r"^[1-9][0-9]{3}$")


class ProtocolFileError(ValueError):
    """A protocol file cannot be used; the message names the file and the field."""

    def __init__(self, path: Path, field: str, problem: str) -> None:
        super().__init__(f"{path}: field '{field}': {problem}")
        self.path = path
        self.field = field


@dataclass(frozen=True)
class Party:
    """One side of the protocol as it is named to users and in the mail."""

    organisation: str
    team: str


@dataclass(frozen=True)
class DataSharingProtocol:
    """One signed protocol: who sends what to whom, where, and when it is in force."""

    id: str
    title: str
    sender: Party
    recipient: Party
    recipient_municipality: str
    recipient_mailbox: str
    postal_codes: frozenset[str]
    places: tuple[str, ...]  # the municipality's own name and its parts (deelgemeenten), spelled as in the file
    in_force_from: dt.date
    ends_on: dt.date | None
    zip_password_secret: str
    sender_dpo: str
    recipient_dpo: str
    source: Path

    def in_force_on(self, day: dt.date) -> bool:
        """True when a referral made on `day` is covered (end date inclusive)."""
        if day < self.in_force_from:
            return False
        return self.ends_on is None or day <= self.ends_on

    def covers_postal_code(self, postal_code: str) -> bool:
        """True when a client living at `postal_code` belongs to this OCMW."""
        return postal_code.strip() in self.postal_codes

    def covers_place(self, place: str) -> bool:
        """True when `place` is the municipality or one of its parts (any case, accents, dashes)."""
        return not self.places or self.canonical_place(place) is not None

    def canonical_place(self, place: str) -> str | None:
        """The protocol's own spelling of `place` ("sint gillis waas" -> "Sint-Gillis-Waas"), or None.

        The municipality itself counts too, so a protocol without `places` still spells it one way.
        """
        wanted = normalise_place(place)
        for known in (*self.places, self.recipient_municipality):
            if normalise_place(known) == wanted:
                return known
        return None


class ProtocolRegistry:
    """The loaded protocols, looked up by id; immutable after start."""

    def __init__(self, protocols: Iterable[DataSharingProtocol]) -> None:
        self._by_id: dict[str, DataSharingProtocol] = {}
        for protocol in protocols:
            if protocol.id in self._by_id:
                raise ProtocolFileError(protocol.source, "id", f"'{protocol.id}' is used by another file too")
            self._by_id[protocol.id] = protocol

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, protocol_id: str) -> DataSharingProtocol | None:
        """The protocol with this id, or None."""
        return self._by_id.get(protocol_id)

    def all(self) -> list[DataSharingProtocol]:
        """Every loaded protocol, in id order."""
        return [self._by_id[key] for key in sorted(self._by_id)]

    def recipient_name(self, protocol_id: str) -> str:
        """The OCMW's name for messages; the protocol id if that protocol is no longer loaded."""
        protocol = self._by_id.get(protocol_id)
        return protocol.recipient.organisation if protocol else protocol_id

    def in_force_on(self, day: dt.date) -> list[DataSharingProtocol]:
        """The protocols under which a referral may be made on `day`."""
        return [protocol for protocol in self.all() if protocol.in_force_on(day)]


def normalise_place(place: str) -> str:
    """"Sint-Gillis-Waas", "sint gillis waas" and "SINT-GILLIS-WAAS" compare equal; accents are ignored."""
    decomposed = unicodedata.normalize("NFKD", place)
    letters = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(letters.replace("-", " ").replace("'", " ").lower().split())


def load_registry(directory: Path) -> ProtocolRegistry:
    """Load every `*.toml` in `directory`; raise ProtocolFileError on the first bad one."""
    if not directory.is_dir():
        raise ProtocolFileError(directory, "PROTOCOLS_DIR", "is not a directory")
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise ProtocolFileError(directory, "PROTOCOLS_DIR", "holds no *.toml protocol file")
    return ProtocolRegistry(load_protocol_file(path) for path in files)


def load_protocol_file(path: Path) -> DataSharingProtocol:
    """Parse and validate one protocol file."""
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ProtocolFileError(path, "(syntax)", str(error)) from error
    return _parse(path, raw)


def _parse(path: Path, raw: Mapping[str, Any]) -> DataSharingProtocol:
    reader = _FieldReader(path, raw)
    protocol_id = reader.text("id")
    if not _ID_PATTERN.match(protocol_id):
        raise ProtocolFileError(path, "id", "use 2-64 letters, digits and '-'")
    in_force_from = reader.date("in_force_from")
    ends_on = reader.optional_date("ends_on")
    if ends_on is not None and ends_on < in_force_from:
        raise ProtocolFileError(path, "ends_on", "lies before in_force_from")
    postal_codes = reader.text_list("recipient.postal_codes")
    for code in postal_codes:
        if not _POSTAL_CODE_PATTERN.match(code):
            raise ProtocolFileError(path, "recipient.postal_codes", f"'{code}' is not a Belgian postal code")
    secret_name = reader.text("zip_password_secret")
    if not _SECRET_NAME_PATTERN.match(secret_name):
        raise ProtocolFileError(path, "zip_password_secret", "use 1-127 letters, digits and '-'")
    return DataSharingProtocol(
        id=protocol_id,
        title=reader.text("title"),
        sender=Party(reader.text("sender.organisation"), reader.text("sender.team")),
        recipient=Party(reader.text("recipient.organisation"), reader.text("recipient.team")),
        recipient_municipality=reader.text("recipient.municipality"),
        recipient_mailbox=reader.mailbox("recipient.mailbox"),
        postal_codes=frozenset(postal_codes),
        places=tuple(dict.fromkeys(reader.optional_text_list("recipient.places"))),
        in_force_from=in_force_from,
        ends_on=ends_on,
        zip_password_secret=secret_name,
        sender_dpo=reader.mailbox("sender.dpo"),
        recipient_dpo=reader.mailbox("recipient.dpo"),
        source=path,
    )


class _FieldReader:
    """Reads dotted fields from the parsed TOML, raising errors that name the field."""

    def __init__(self, path: Path, raw: Mapping[str, Any]) -> None:
        self._path = path
        self._raw = raw

    def _value(self, dotted: str) -> Any:
        node: Any = self._raw
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node

    def text(self, dotted: str) -> str:
        value = self._value(dotted)
        if not isinstance(value, str) or not value.strip():
            raise ProtocolFileError(self._path, dotted, "is missing or not a non-empty string")
        return value.strip()

    def text_list(self, dotted: str) -> list[str]:
        value = self._value(dotted)
        if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
            raise ProtocolFileError(self._path, dotted, "must be a non-empty list of strings")
        return [item.strip() for item in value]

    def optional_text_list(self, dotted: str) -> list[str]:
        return [] if self._value(dotted) is None else self.text_list(dotted)

    def date(self, dotted: str) -> dt.date:
        value = self._value(dotted)
        if value is None:
            raise ProtocolFileError(self._path, dotted, "is missing (write a date like 2026-03-01)")
        return self._as_date(dotted, value)

    def optional_date(self, dotted: str) -> dt.date | None:
        value = self._value(dotted)
        return None if value is None else self._as_date(dotted, value)

    def _as_date(self, dotted: str, value: Any) -> dt.date:
        if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
            raise ProtocolFileError(self._path, dotted, "must be a plain TOML date like 2026-03-01")
        return value

    def mailbox(self, dotted: str) -> str:
        value = self.text(dotted)
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as error:
            raise ProtocolFileError(self._path, dotted, f"is not a valid e-mail address ({error})") from error
