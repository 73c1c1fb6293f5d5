"""The data-sharing protocols in force, loaded from one TOML file each.

Protocols are data, not code: a new municipality is a new file, reviewed by the DPO,
not a code change. A bad file stops the bot at start with the file and field named. While the
bot runs, `ProtocolFolder` rereads the folder when a file changes, so a protocol that ends
(`ends_on`, its last day) takes effect without a restart; a file that becomes bad then is logged
and reported, and the last good protocols stay in use.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import logging
import os
import re
import tomllib
import unicodedata
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email

from bot.core.sent_referrals import OPEN_FOR_OCMW, ReferralState

logger = logging.getLogger(__name__)

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{1,63}$")
_SECRET_NAME_PATTERN = re.compile(r"^[0-9a-zA-Z-]{1,127}$")  # Key Vault secret name rules
_POSTAL_CODE_PATTERN = re.compile(r"^[1-9][0-9]{3}$")
_GUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: The id lists of `[[sender.teams]]`: Entra user object ids, security group ids, Teams team (group) ids.
_SENDER_TEAM_LISTS = ("object_ids", "group_ids", "team_ids")
#: Every key a protocol file may hold, per table ("" is the top level); anything else is a typo, refused
#: with the file and the key named, so a field the DPO thinks is set is never silently left out.
_KNOWN_KEYS: Mapping[str, frozenset[str]] = {
    "": frozenset({"id", "title", "in_force_from", "ends_on", "zip_password_secret", "published_at",
                   "sender", "recipient", "retention"}),
    "sender": frozenset({"organisation", "team", "dpo", "dpo_object_ids", "teams"}),
    "recipient": frozenset({"organisation", "team", "municipality", "mailbox", "postal_codes", "places", "dpo",
                            "dpo_object_ids"}),
    "retention": frozenset({"referral_days_after_closure", "closed_states", "register_years", "pairing_code_days",
                            "tombstone_days"}),
}
#: The dashes and apostrophes phones and Word's autocorrect type for "-" and "'" (NFKD keeps them): hyphen, non-breaking
#: hyphen, figure dash, en and em dash, minus, soft hyphen (Word's optional hyphen); ’ ‘ ‛ ʼ ′ and the backtick.
_SOFT_HYPHEN = "\u00ad"
_PLACE_SEPARATORS = str.maketrans(dict.fromkeys(
    "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u00ad'\u2018\u2019\u201b\u02bc\u2032`", " "))
#: Ids starting so are examples (the shipped file's placeholders; Entra never issues them): refused in production.
PLACEHOLDER_ID_PREFIX = "00000000-0000-0000-0000-"


def ascii_mailbox(value: str) -> str:
    """An address the bot mails (a protocol's mailbox or DPO, MAIL_FROM), as SMTP and the To header carry it.

    A domain with non-ASCII letters becomes its IDNA form (`welzijnshuis@xn--sint-gillis-was-elb.be`),
    which every relay takes; a non-ASCII part before the @ would need SMTPUTF8 on every relay up to the
    OCMW's mailbox, and is refused. ValueError says what is wrong, for the caller to name its field.
    """
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(f"is not a valid e-mail address ({error})") from error
    if checked.ascii_email is None:
        raise ValueError(
            f"has non-ASCII characters before the @ ({checked.local_part!r}): such an address needs SMTPUTF8 "
            "on every mail server on the way, which cannot be assumed; use the mailbox's ASCII address"
        )
    return checked.ascii_email


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
class SendingTeam:
    """One `[[sender.teams]]` entry: who may refer under the protocol as this team, and its name.

    The name goes into the package and the mail as the sending team. A user counts as a member when
    their Entra object id is listed, or when Microsoft Graph says they are in one of the groups or
    teams (a team is a Microsoft 365 group: its id is the group's id).
    """

    name: str
    object_ids: frozenset[str] = frozenset()
    group_ids: frozenset[str] = frozenset()
    team_ids: frozenset[str] = frozenset()

    @property
    def directory_groups(self) -> frozenset[str]:
        """The group and team ids, which only Microsoft Graph can check."""
        return self.group_ids | self.team_ids


#: States a protocol may count as "closed" for retention: nothing more is expected of the bot,
#: the mail or the OCMW (never a state in which the OCMW still has to act, nor a queued mail).
CLOSABLE_STATES = frozenset(ReferralState) - OPEN_FOR_OCMW - {ReferralState.QUEUED}


@dataclass(frozen=True)
class RetentionPolicy:
    """How long the bot keeps what it records under one protocol (`[retention]` in its file).

    The defaults are the README's table; the reasons are given there.
    """

    #: A referral (with its versions, corrections, outbox and Teams-message rows) goes this long after
    #: the last thing that happened to it, once it is in one of `closed_states`.
    referral_days_after_closure: int = 90
    closed_states: frozenset[ReferralState] = frozenset({ReferralState.DATA_DELETED, ReferralState.FAILED})
    #: A register entry goes this many years after it was written (never while its referral is kept).
    register_years: int = 5
    #: A pairing code (only its hash) goes this long after it expired (24 h after it was made).
    pairing_code_days: int = 7
    #: A draft's tombstone (sent, cancelled, expired: no data left) goes this long after it ended.
    tombstone_days: int = 7


#: What applies to records of no protocol, or of one whose file is no longer in the folder.
DEFAULT_RETENTION = RetentionPolicy()
_RETENTION_LIMITS = {"referral_days_after_closure": 3650, "register_years": 30, "pairing_code_days": 365,
                     "tombstone_days": 365}


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
    retention: RetentionPolicy = DEFAULT_RETENTION
    #: Entra object ids of each party's DPO (optional `dpo_object_ids` under `[sender]` and `[recipient]`):
    #: they may ask the bot for this protocol's register and report a breach from Teams.
    sender_dpo_object_ids: frozenset[str] = frozenset()
    recipient_dpo_object_ids: frozenset[str] = frozenset()
    #: Where the signed protocol is published (recital D: on both parties' websites), an https URL;
    #: "" when the file does not say. Shown on the family's information sheet.
    published_at: str = ""

    @property
    def dpo_object_ids(self) -> frozenset[str]:
        """Both parties' DPOs: each may ask for this protocol's register."""
        return self.sender_dpo_object_ids | self.recipient_dpo_object_ids
    #: Who may refer, per sending team (`[[sender.teams]]`); empty: anyone the global policy allows
    #: (development only: `BOT_ENV=production` refuses such a file).
    sender_teams: tuple[SendingTeam, ...] = ()

    def sent_by(self, team: str) -> DataSharingProtocol:
        """This protocol as one referral names it: `team` as the sending team in the package and the mail."""
        return dataclasses.replace(self, sender=Party(self.sender.organisation, team))

    def in_force_on(self, day: dt.date) -> bool:
        """True when a referral made on `day` is covered (`ends_on` is the last day it is)."""
        if day < self.in_force_from:
            return False
        return self.ends_on is None or day <= self.ends_on

    def ending_notice_on(self, day: dt.date) -> bool:
        """True in the protocol's last month: referrers are told on which day it ends.

        The month runs from the day after the same date a month before `ends_on` (31 August:
        from 1 August) up to and including `ends_on`.
        """
        if self.ends_on is None or not self.in_force_on(day):
            return False
        return day > _one_month_before(self.ends_on)

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
        # A soft hyphen stands for a hyphen (Word's Ctrl+-) or sits inside a word pasted from hyphenated text.
        wanted = {normalise_place(place), normalise_place(place.replace(_SOFT_HYPHEN, ""))}
        for known in (*self.places, self.recipient_municipality):
            if normalise_place(known) in wanted:
                return known
        return None


class ProtocolRegistry:
    """The loaded protocols, looked up by id.

    One instance is shared by every service of the running bot; `replace` swaps its contents when
    the folder is reread, so everyone sees the new protocols at once.
    """

    def __init__(self, protocols: Iterable[DataSharingProtocol]) -> None:
        self._by_id = _by_id(protocols)
        self._former_names: dict[str, str] = {}

    def replace(self, other: ProtocolRegistry) -> None:
        """Serve `other`'s protocols from now on; the names of removed ones stay known for messages."""
        for protocol_id, protocol in self._by_id.items():
            if protocol_id not in other._by_id:
                self._former_names[protocol_id] = protocol.recipient.organisation
        self._by_id = dict(other._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, protocol_id: str) -> DataSharingProtocol | None:
        """The protocol with this id, or None."""
        return self._by_id.get(protocol_id)

    def all(self) -> list[DataSharingProtocol]:
        """Every loaded protocol, in id order."""
        return [self._by_id[key] for key in sorted(self._by_id)]

    def recipient_name(self, protocol_id: str) -> str:
        """The OCMW's name for messages; for a protocol no longer loaded the name it had, else its id."""
        protocol = self._by_id.get(protocol_id)
        return protocol.recipient.organisation if protocol else self._former_names.get(protocol_id, protocol_id)

    def retention_for(self, protocol_id: str) -> RetentionPolicy:
        """The retention periods of a protocol; the defaults for one that is not loaded."""
        protocol = self._by_id.get(protocol_id)
        return protocol.retention if protocol else DEFAULT_RETENTION

    def in_force_on(self, day: dt.date) -> list[DataSharingProtocol]:
        """The protocols under which a referral may be made on `day`."""
        return [protocol for protocol in self.all() if protocol.in_force_on(day)]


def _by_id(protocols: Iterable[DataSharingProtocol]) -> dict[str, DataSharingProtocol]:
    by_id: dict[str, DataSharingProtocol] = {}
    for protocol in protocols:
        if protocol.id in by_id:
            raise ProtocolFileError(protocol.source, "id", f"'{protocol.id}' is used by another file too")
        by_id[protocol.id] = protocol
    return by_id


class ProtocolFolder:
    """The protocols folder of a running bot: reread when one of its files changes.

    Changes are seen by comparing each `*.toml` file's name, size, inode and modification times
    (an editor that saves in place and one that replaces the file are both noticed). A folder that
    no longer loads does not stop the bot: the protocols read before stay in use, the error (file
    and field) is logged once per change and kept in `problem` for `/readyz`.
    """

    def __init__(self, directory: Path, *, require_referrers: bool = False) -> None:
        """Load the folder; raises ProtocolFileError (the bot must not start on a bad file).

        `require_referrers` (production) refuses a file that does not name who may refer under it.
        """
        self.directory = directory
        self._require_referrers = require_referrers
        self._signature = _folder_signature(directory)
        self.registry = load_registry(directory, require_referrers=require_referrers)
        self.problem: ProtocolFileError | None = None

    def reload_if_changed(self) -> bool:
        """Reread the folder if a file changed; True when new protocols are in use."""
        signature = _folder_signature(self.directory)
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            fresh = load_registry(self.directory, require_referrers=self._require_referrers)
        except ProtocolFileError as error:
            self.problem = error
            logger.error("protocol file error: %s; the protocols read before stay in use", error)
            return False
        self.registry.replace(fresh)
        self.problem = None
        logger.info("protocols reread: %s", ", ".join(
            f"{p.id} ({p.in_force_from.isoformat()} to {p.ends_on.isoformat() if p.ends_on else 'open'})"
            for p in fresh.all()
        ))
        return True


_Signature = tuple[tuple[str, int, int, int, int], ...] | None


def _folder_signature(directory: Path) -> _Signature:
    """What changes when a protocol file is written, replaced, added or removed; None if unreadable."""
    try:
        with os.scandir(directory) as entries:
            found = [(entry.name, entry.stat()) for entry in entries if entry.name.endswith(".toml")]
    except OSError:
        return None
    return tuple(sorted((name, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns) for name, st in found))


def _one_month_before(day: dt.date) -> dt.date:
    """The same date a month earlier, or the month's last day when it has no such date (31 March: 28 February)."""
    year, month = (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def normalise_place(place: str) -> str:
    """"Sint-Gillis-Waas", "sint gillis waas" and "SINT-GILLIS-WAAS" compare equal; accents are ignored.

    So do "Sint‑Gillis‑Waas" with a non-breaking hyphen and "’s-Gravenwezel" with a curly apostrophe, as
    phones and Word's autocorrect type them: every dash and apostrophe separates words like "-" does.
    """
    decomposed = unicodedata.normalize("NFKD", place)
    letters = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(letters.translate(_PLACE_SEPARATORS).lower().split())


def load_registry(directory: Path, *, require_referrers: bool = False) -> ProtocolRegistry:
    """Load every `*.toml` in `directory`; raise ProtocolFileError on the first bad one.

    With `require_referrers` (`BOT_ENV=production`) a file must name who may refer under it
    (`check_referrer_lists`).
    """
    if not directory.is_dir():
        raise ProtocolFileError(directory, "PROTOCOLS_DIR", "is not a directory")
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise ProtocolFileError(directory, "PROTOCOLS_DIR", "holds no *.toml protocol file")
    protocols = [load_protocol_file(path) for path in files]
    if require_referrers:
        for protocol in protocols:
            check_referrer_lists(protocol)
    return ProtocolRegistry(protocols)


def check_referrer_lists(protocol: DataSharingProtocol) -> None:
    """Refuse (production) a protocol that lets anyone refer, or still holds the example's placeholder ids.

    Without `[[sender.teams]]` anyone the global policy allows could refer under the protocol, and
    the example's placeholders would let nobody refer without saying why: both are set-up mistakes
    best named at start, with the file and the field.
    """
    if not protocol.sender_teams:
        raise ProtocolFileError(
            protocol.source, "sender.teams",
            "names nobody who may refer under this protocol; BOT_ENV=production needs at least one "
            "[[sender.teams]] entry with object_ids, group_ids or team_ids (infra/README.md, 'Who may refer "
            "under each protocol')",
        )
    for number, team in enumerate(protocol.sender_teams, start=1):
        for kind in _SENDER_TEAM_LISTS:
            placeholders = sorted(i for i in getattr(team, kind) if i.startswith(PLACEHOLDER_ID_PREFIX))
            if placeholders:
                raise ProtocolFileError(
                    protocol.source, f"sender.teams[{number}].{kind}",
                    f"'{placeholders[0]}' is a placeholder; replace it with the real id (BOT_ENV=production)",
                )


def load_protocol_file(path: Path) -> DataSharingProtocol:
    """Parse and validate one protocol file."""
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ProtocolFileError(path, "(syntax)", str(error)) from error
    except OSError as error:
        raise ProtocolFileError(path, "(file)", f"cannot be read: {error.strerror}") from error
    return _parse(path, raw)


def _parse(path: Path, raw: Mapping[str, Any]) -> DataSharingProtocol:
    _refuse_unknown_keys(path, raw)
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
        retention=_retention(reader),
        sender_dpo_object_ids=frozenset(reader.optional_guid_list("sender.dpo_object_ids")),
        recipient_dpo_object_ids=frozenset(reader.optional_guid_list("recipient.dpo_object_ids")),
        published_at=reader.optional_https_url("published_at"),
        sender_teams=_sender_teams(reader),
    )


def _refuse_unknown_keys(path: Path, raw: Mapping[str, Any]) -> None:
    """Refuse a key the loader does not know (`ocmw.mailbx`, `end_on`, `[rentention]`), naming it and the keys allowed.

    Ignored, a misspelt optional field would load as if it were left out. The entries of
    `[[sender.teams]]` are checked where they are read.
    """
    for table, allowed in _KNOWN_KEYS.items():
        node = raw if not table else raw.get(table)
        if not isinstance(node, Mapping):
            continue  # missing or not a table: the field that needs it says so
        unknown = sorted(set(node) - allowed)
        if unknown:
            where = f"[{table}]" if table else "the top level (keys and [table] names)"
            named = [f"{table}.{key}" if table else key for key in unknown]
            others = f" (nor are {', '.join(named[1:])})" if len(named) > 1 else ""
            raise ProtocolFileError(path, named[0], f"is not a known key{others}; {where} takes "
                                                    f"{', '.join(sorted(allowed))}: check the spelling")


def _sender_teams(reader: _FieldReader) -> tuple[SendingTeam, ...]:
    """The optional `[[sender.teams]]` entries, in file order (the first one a user matches names them)."""
    teams: list[SendingTeam] = []
    for number, entry in enumerate(reader.table_list("sender.teams"), start=1):
        where = f"sender.teams[{number}]"
        unknown = sorted(set(entry) - {"name", *_SENDER_TEAM_LISTS})
        if unknown:
            raise ProtocolFileError(reader.path, f"{where}.{unknown[0]}",
                                    f"is not a known key; use name, {', '.join(_SENDER_TEAM_LISTS)}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip() or any(ord(char) < 32 for char in name):
            raise ProtocolFileError(reader.path, f"{where}.name", "is missing or not a one-line, non-empty string")
        if any(team.name == name.strip() for team in teams):
            raise ProtocolFileError(reader.path, f"{where}.name", f"'{name.strip()}' names another entry too")
        lists = {kind: _id_list(reader.path, f"{where}.{kind}", entry.get(kind)) for kind in _SENDER_TEAM_LISTS}
        if not any(lists.values()):
            raise ProtocolFileError(reader.path, where, "lists nobody: give object_ids, group_ids or team_ids")
        teams.append(SendingTeam(name=name.strip(), **lists))
    return tuple(teams)


def _id_list(path: Path, field: str, value: Any) -> frozenset[str]:
    """An optional list of Entra ids (GUIDs), lower-cased as Teams and Graph compare them."""
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProtocolFileError(path, field, "must be a list of ids (strings)")
    ids = frozenset(item.strip().lower() for item in value)
    wrong = sorted(item for item in ids if not _GUID_PATTERN.match(item))
    if wrong:
        raise ProtocolFileError(path, field, f"'{wrong[0]}' is not an Entra id (a GUID like "
                                             "3f2504e0-4f89-11d3-9a0c-0305e82c3301)")
    return ids


def _retention(reader: _FieldReader) -> RetentionPolicy:
    """The optional `[retention]` table; every field left out keeps its default."""
    values: dict[str, Any] = {}
    for name, limit in _RETENTION_LIMITS.items():
        number = reader.optional_int(f"retention.{name}", 1, limit)
        if number is not None:
            values[name] = number
    states = reader.optional_text_list("retention.closed_states")
    if states:
        allowed = sorted(state.value for state in CLOSABLE_STATES)
        unknown = [state for state in states if state not in allowed]
        if unknown:
            raise ProtocolFileError(reader.path, "retention.closed_states",
                                    f"{', '.join(unknown)}: only {', '.join(allowed)} can count as closed")
        values["closed_states"] = frozenset(ReferralState(state) for state in states)
    return RetentionPolicy(**values)


class _FieldReader:
    """Reads dotted fields from the parsed TOML, raising errors that name the field."""

    def __init__(self, path: Path, raw: Mapping[str, Any]) -> None:
        self.path = path
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
            raise ProtocolFileError(self.path, dotted, "is missing or not a non-empty string")
        return value.strip()

    def text_list(self, dotted: str) -> list[str]:
        value = self._value(dotted)
        if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
            raise ProtocolFileError(self.path, dotted, "must be a non-empty list of strings")
        return [item.strip() for item in value]

    def optional_text_list(self, dotted: str) -> list[str]:
        return [] if self._value(dotted) is None else self.text_list(dotted)

    def optional_guid_list(self, dotted: str) -> list[str]:
        values = [value.lower() for value in self.optional_text_list(dotted)]
        for value in values:
            if not _GUID_PATTERN.match(value):
                raise ProtocolFileError(self.path, dotted, f"'{value}' is not an Entra object id (a GUID)")
        return values
    def table_list(self, dotted: str) -> list[Mapping[str, Any]]:
        """An optional array of tables (`[[sender.teams]]`); [] when absent."""
        value = self._value(dotted)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
            raise ProtocolFileError(self.path, dotted, "must be tables written as [[" + dotted + "]]")
        return value

    def date(self, dotted: str) -> dt.date:
        value = self._value(dotted)
        if value is None:
            raise ProtocolFileError(self.path, dotted, "is missing (write a date like 2026-03-01)")
        return self._as_date(dotted, value)

    def optional_date(self, dotted: str) -> dt.date | None:
        value = self._value(dotted)
        return None if value is None else self._as_date(dotted, value)

    def _as_date(self, dotted: str, value: Any) -> dt.date:
        if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
            raise ProtocolFileError(self.path, dotted, "must be a plain TOML date like 2026-03-01")
        return value

    def optional_int(self, dotted: str, low: int, high: int) -> int | None:
        value = self._value(dotted)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ProtocolFileError(self.path, dotted, f"must be a whole number from {low} to {high}")
        return value

    def optional_https_url(self, dotted: str) -> str:
        """An absolute https URL that a family can type or click, or "" when the field is left out."""
        if self._value(dotted) is None:
            return ""
        value = self.text(dotted)
        parts = urllib.parse.urlsplit(value)
        if parts.scheme != "https" or not parts.hostname or parts.username is not None or parts.password is not None:
            raise ProtocolFileError(self.path, dotted, "must be an https:// address like https://www.opgroeien.be/…")
        if any(char.isspace() or ord(char) < 0x20 for char in value):
            raise ProtocolFileError(self.path, dotted, "must not contain spaces or control characters")
        return value

    def mailbox(self, dotted: str) -> str:
        value = self.text(dotted)
        try:
            return ascii_mailbox(value)
        except ValueError as error:
            raise ProtocolFileError(self.path, dotted, str(error)) from error
