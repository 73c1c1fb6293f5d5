"""The processing register (verwerkingsregister): proof of every transfer, never its content.

Each entry says who did what, when, under which protocol and legal basis, and which categories of
data were involved. Entries are chained by SHA-256 so an altered, removed or reordered entry shows:
`verify()` recomputes the chain, `export()` hands the DPO a period of it.

What the chain cannot show on its own: entries cut off the end (the last ones deleted), or a
register rewritten in full by someone who recomputes every hash. Against those, keep an anchor
outside the database: the `hash` of the last entry of each export the DPO files away.

Retention cuts the oldest entries off the start (`prune_through`). It first appends a
`retention_pruned` entry that names the last entry to go and carries its hash; that entry is
chained like any other, and `verify` starts from the newest such anchor instead of the genesis
hash, so a removal, alteration or reordering after a prune is still found.

Entry formats, not a migration. Entries written before the register named the purpose, the
recipient and the consent-text version (format 1: every entry listed all four data categories)
keep the hash they were written with and are verified over the fields it covered. Rehashing them
into the new layout would break every hash a DPO filed away from an earlier export, which is
exactly what a rewritten register looks like. New entries are format 2: their hash covers every
field, `entry_format` included, so an entry cannot be passed off as format 1; a format-1 entry
after a format-2 one, or one with the new fields filled in, is reported as altered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from bot.core.protocols import DataSharingProtocol
from bot.core.referral_values import DATA_CATEGORIES, LEGAL_BASIS, PURPOSE, RECIPIENT_CATEGORY
from bot.storage.database import Database, Row, from_text, lock_key, to_text

GENESIS_HASH = "0" * 64
#: The lock every append holds until its transaction ends (`Database.lock`), so there is one chain.
REGISTER_LOCK = "register"

#: The fields the hash of a format-1 entry covers (written before the fields below existed).
LEGACY_HASHED_FIELDS: tuple[str, ...] = (
    "at",
    "event",
    "actor_id",
    "actor_name",
    "protocol_id",
    "reference",
    "legal_basis",
    "data_categories",
    "recipient_category",
    "detail",
)
#: The fields the hash of a current (format 2) entry covers, in export order. PostgreSQL's `register_append`
#: (revision 0003) stores exactly these: a new field needs a revision that replaces that function.
HASHED_FIELDS: tuple[str, ...] = (
    "at",
    "event",
    "actor_id",
    "actor_name",
    "protocol_id",
    "reference",
    "purpose",
    "legal_basis",
    "data_categories",
    "recipient",
    "recipient_category",
    "consent_version",
    "detail",
    "entry_format",
)
CURRENT_FORMAT = "2"
_FIELDS_OF_FORMAT: Mapping[str, tuple[str, ...]] = {"1": LEGACY_HASHED_FIELDS, CURRENT_FORMAT: HASHED_FIELDS}
#: Fields a format-1 entry does not have: they stay empty on it.
_NEW_FIELDS = tuple(name for name in HASHED_FIELDS if name not in LEGACY_HASHED_FIELDS and name != "entry_format")

#: The columns of an export, in order (CSV header and JSON keys), for the DPO:
#: - seq: the entry's number; numbers are consecutive, a gap means a removed entry
#: - at: when it happened, ISO-8601 in UTC (e.g. 2026-11-28T09:00:00.000000+00:00)
#: - event: what happened, one of the `RegisterEvent` values (e.g. consent_confirmed, delivered)
#: - actor_id, actor_name: the Entra object id and display name of the staff member who acted, or
#:   `bot:<job>` for what the bot did on its own (`bot:delivery`, `bot:retention`)
#: - protocol_id: the data-sharing protocol the event falls under (`-`: none in particular)
#: - reference: the referral's reference (VD-YYYYMMDD-XXXXXX), shared with the OCMW
#: - purpose, legal_basis: why, and on which basis, as the protocol states them
#: - data_categories: the categories the event itself moved (empty when it moved no data)
#: - recipient, recipient_category: to whom ("OCMW X <mailbox>"), only on the events of a transfer
#: - consent_version: the version of the consent text the referrer confirmed
#: - detail: facts such as the key version or on whose behalf the bot acted, never client data
#: - entry_format: 1 for entries written before purpose, recipient and consent version were recorded
#: - previous_hash, hash: SHA-256 of the previous entry's hash and this entry's fields (`entry_hash`)
EXPORT_COLUMNS: tuple[str, ...] = ("seq", *HASHED_FIELDS, "previous_hash", "hash")
#: How many entries one statement reads when the whole register (or a protocol's part) is read.
PAGE_SIZE = 2000
#: An entry that belongs to no single protocol (a prune of the register, a start with several in force).
_NO_PROTOCOL = "-"


class RegisterEvent(StrEnum):
    """What can happen to a referral, as the DPO reads it."""

    REFERRAL_STARTED = "referral_started"
    CONSENT_CONFIRMED = "consent_confirmed"
    PACKAGE_BUILT = "package_built"
    QUEUED = "queued"
    DELIVERED = "delivered"
    DELIVERY_FAILED = "delivery_failed"
    CANCELLED = "cancelled"
    LINK_CREATED = "link_created"
    ACKNOWLEDGED = "acknowledged"
    OUTCOME_RECORDED = "outcome_recorded"
    DELETION_CONFIRMED = "deletion_confirmed"
    CORRECTION_REQUESTED = "correction_requested"
    SUPERFLUOUS_REPORTED = "superfluous_reported"
    #: Kind en Gezin has no correct value of an item reported wrong (article 7): the OCMW asked to delete it.
    NO_CORRECT_VALUE = "no_correct_value"
    REFUSED = "refused"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    BREACH_REPORTED = "breach_reported"
    RETENTION_PRUNED = "retention_pruned"
    REGISTER_EXPORTED = "register_exported"


#: Who prunes: the bot itself, under the retention periods of the protocol files.
SYSTEM_ACTOR_ID = "bot:retention"
SYSTEM_ACTOR_NAME = "Veilig doorverwijzen (bewaartermijnen)"
#: Who hands a queued package to the mail system: the bot's delivery worker, on the referrer's behalf.
DELIVERY_ACTOR_ID = "bot:delivery"
DELIVERY_ACTOR_NAME = "Veilig doorverwijzen (verzending)"
#: The `detail` of the entry that anchors the chain after a prune of the register itself.
_ANCHOR = re.compile(r"^table=register; count=(\d+); seq=(\d+)-(\d+); last_hash=([0-9a-f]{64})(; |$)")


@dataclass(frozen=True)
class ChainAnchor:
    """Where the register starts after a prune: entries up to `last_seq` are gone, the next follows `last_hash`."""

    last_seq: int
    last_hash: str
    recorded_in: int  # the seq of the retention_pruned entry that says so


class ProblemKind(StrEnum):
    """How an entry betrays tampering."""

    ALTERED = "altered"  # its content no longer matches its own hash
    REMOVED = "removed"  # entries before it are missing (a gap in seq)
    REORDERED = "reordered"  # it is chained to another entry than the one before it
    BROKEN_LINK = "broken_link"  # it is chained to an entry that no longer exists as recorded


@dataclass(frozen=True)
class RegisterProblem:
    """One finding of `verify()`: where, what kind, and in words."""

    seq: int
    kind: ProblemKind
    detail: str

    def line(self) -> str:
        """The finding as one line for the DPO, e.g. `seq 12: altered: ...`."""
        return f"seq {self.seq}: {self.kind.value}: {self.detail}"


@dataclass(frozen=True)
class ProtocolSummary:
    """What a DPO's export of one protocol holds: how many entries, from when to when, and its last hash."""

    protocol_id: str
    entries: int
    first_at: dt.datetime | None
    last_at: dt.datetime | None
    last_seq: int | None
    last_hash: str | None


def recipient_of(protocol: DataSharingProtocol) -> str:
    """The addressee of a protocol's packages as the register names it: "OCMW X <mailbox>"."""
    return f"{protocol.recipient.organisation} <{protocol.recipient_mailbox}>"


@dataclass(frozen=True)
class RegisterEntry:
    """One line of the register as written."""

    seq: int
    at: dt.datetime
    event: RegisterEvent
    actor_id: str
    actor_name: str
    protocol_id: str
    reference: str
    detail: str
    hash: str


#: The columns an entry is inserted with on SQLite (PostgreSQL's `register_append` names its own).
_SQLITE_COLUMNS = ("seq", *HASHED_FIELDS, "previous_hash", "hash")
#: SQLite: an entry after `previous_hash`, written only while that is the hash of the last entry (or, with
#: none yet, the genesis hash). Column names are this module's constants; the values are bound parameters.
_SQLITE_APPEND = (
    f"INSERT INTO register ({', '.join(_SQLITE_COLUMNS)}) SELECT {', '.join(':' + name for name in _SQLITE_COLUMNS)}"  # noqa: S608  # nosec B608
    " WHERE COALESCE((SELECT hash FROM register WHERE seq = (SELECT MAX(seq) FROM register)), :genesis)"
    " = :previous_hash"
)


class ProcessingRegister:
    """Append-only register in the bot's database.

    One chain, whoever writes: an entry is appended under the lock `register` (PostgreSQL: an
    advisory lock held to the end of the writing transaction; SQLite: the writer lock), and its
    `seq` is the previous entry's plus one, never a sequence's next value, which a rolled-back
    transaction would leave as a gap that `verify` reports as a removed entry.

    Every instance's every step waits for that one lock, so it is held as briefly as possible: on
    PostgreSQL an entry written inside a step is chained at the step's commit, in the server
    (revision 0004: the lock is held from there to the commit's end, never over a round trip); on
    its own, the append is one statement (`register_append`, revision 0003). On SQLite too it is one
    statement once the register knows the last entry (`_last`): the insert checks that entry is
    still the last and only then writes.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        #: SQLite: the last entry this register wrote (seq, hash), so that the next append need not read
        #: it back. The insert checks it is still the last (a rolled-back step, another process) and,
        #: when it is not, the append reads the last entry and inserts after it.
        self._last: tuple[int, str] | None = None

    async def append(
        self,
        *,
        at: dt.datetime,
        event: RegisterEvent,
        actor_id: str,
        actor_name: str,
        protocol_id: str,
        reference: str = "",
        detail: str = "",
        data_categories: Sequence[str] = (),
        recipient: str = "",
        consent_version: str = "",
        chain_now: bool = False,
    ) -> str | None:
        """Add an entry chained to the previous one; returns its hash, or None when it is chained at the commit.

        On PostgreSQL inside a transaction the entry is chained when that transaction commits (its
        hash is not known before), unless `chain_now`: a prune's anchor must be chained before the
        entries it names go.

        `data_categories` and `recipient` are given together, and only for the steps of a transfer
        (package built, queued, delivered): the categories that package holds (see
        `bot.core.referral_values.DATA_CATEGORIES`), never values. `detail` is for facts such as the key
        version or the information points confirmed, never for client data.
        """
        unknown = sorted(set(data_categories) - set(DATA_CATEGORIES))
        if unknown or isinstance(data_categories, str):
            raise ValueError(f"not data categories: {unknown or data_categories!r}")
        if bool(data_categories) != bool(recipient):
            raise ValueError("a transfer names its data categories and its recipient, other events neither")
        fields = {
            "at": to_text(at),
            "event": event.value,
            "actor_id": actor_id,
            "actor_name": actor_name,
            "protocol_id": protocol_id,
            "reference": reference,
            "purpose": "" if protocol_id == _NO_PROTOCOL else PURPOSE,
            "legal_basis": LEGAL_BASIS if protocol_id == _NO_PROTOCOL else f"{LEGAL_BASIS}; protocol {protocol_id}",
            "data_categories": ",".join(category for category in DATA_CATEGORIES if category in data_categories),
            "recipient": recipient,
            "recipient_category": RECIPIENT_CATEGORY if recipient else "",
            "consent_version": consent_version,
            "detail": detail,
            "entry_format": CURRENT_FORMAT,
        }
        if self._db.is_postgres:
            entry = {"key": lock_key(REGISTER_LOCK), "genesis": GENESIS_HASH, "canonical": canonical_fields(fields)}
            if self._db.in_transaction and not chain_now:
                # Chained by the trigger of revision 0004 inside the COMMIT; no lock taken here.
                await self._db.execute("INSERT INTO register_pending (lock_key, genesis, canonical)"
                                       " VALUES (:key, :genesis, :canonical)", entry)
                return None
            # One statement (revision 0003): lock, read the last entry, insert; on its own (autocommit)
            # the lock ends with the statement.
            appended = await self._db.execute("SELECT register_append(:key, :genesis, :canonical) AS hash", entry)
            return str(appended.scalar())
        async with self._db.transaction(savepoint=False):  # a read, then one insert: nothing half done
            await self._db.lock(REGISTER_LOCK)  # SQLite: the writer lock this transaction already holds
            digest = None if self._last is None else await self._insert(fields, *self._last)
            if digest is None:
                row = await self._db.fetch_one("SELECT seq, hash FROM register ORDER BY seq DESC LIMIT 1")
                last = (0, GENESIS_HASH) if row is None else (int(row["seq"]), str(row["hash"]))
                digest = await self._insert(fields, *last)
                if digest is None:  # read under the writer lock this transaction holds: cannot have changed
                    raise RuntimeError("the register's last entry changed under the writer lock")
        return digest

    async def _insert(self, fields: dict[str, str], last_seq: int, last_hash: str) -> str | None:
        """SQLite: insert the entry after (`last_seq`, `last_hash`) if that is still the last entry; its hash,
        or None when it is not (and nothing was written)."""
        digest = entry_hash(last_hash, fields)
        values = {**fields, "seq": last_seq + 1, "previous_hash": last_hash, "hash": digest, "genesis": GENESIS_HASH}
        inserted = await self._db.execute(_SQLITE_APPEND, values)
        if inserted.rowcount != 1:
            return None
        self._last = (last_seq + 1, digest)
        return digest

    async def events_for(self, reference: str) -> list[str]:
        """The event names recorded for one reference, in order."""
        rows = await self._db.fetch_all("SELECT event FROM register WHERE reference = :reference ORDER BY seq",
                                        {"reference": reference})
        return [str(row["event"]) for row in rows]

    async def protocol_of(self, reference: str) -> str | None:
        """The protocol of the first entry for this reference (a breach report's: it has no referral), or None."""
        value = await self._db.scalar("SELECT protocol_id FROM register WHERE reference = :reference"
                                      " ORDER BY seq LIMIT 1", {"reference": reference})
        return None if value is None else str(value)

    async def last_detail(self, reference: str, event: RegisterEvent) -> str | None:
        """The detail of the newest `event` entry for one reference (an outcome: which), or None when there is none."""
        row = await self._db.fetch_one("SELECT detail FROM register WHERE reference = :reference AND event = :event"
                                       " ORDER BY seq DESC LIMIT 1", {"reference": reference, "event": event.value})
        return None if row is None else str(row["detail"])


    async def recorded(self, reference: str, event: RegisterEvent, detail: str) -> bool:
        """True when an entry `event` with exactly `detail` is recorded for `reference` (a report made once)."""
        return await self._db.fetch_one(
            "SELECT 1 AS found FROM register WHERE event = :event AND reference = :reference AND detail = :detail",
            {"event": event.value, "reference": reference, "detail": detail}) is not None

    async def count(self) -> int:
        """How many entries the register holds."""
        return int(await self._db.scalar("SELECT COUNT(*) AS n FROM register"))

    async def anchor(self) -> ChainAnchor | None:
        """The newest anchor a prune of the register left, or None when nothing was ever pruned."""
        rows = await self._db.fetch_all(
            "SELECT seq, detail FROM register WHERE event = :pruned AND detail LIKE 'table=register;%'"
            " ORDER BY seq DESC",
            {"pruned": RegisterEvent.RETENTION_PRUNED.value},
        )
        for row in rows:
            match = _ANCHOR.match(str(row["detail"]))
            if match:
                return ChainAnchor(int(match.group(3)), match.group(4), int(row["seq"]))
        return None

    async def prune_through(self, last_seq: int, *, at: dt.datetime, rule: str) -> int:
        """Remove the entries up to `last_seq` (the oldest), recorded in an anchoring entry first.

        The `retention_pruned` entry is appended before anything is deleted, so it is chained to the
        newest entry and always outlives the prune; it carries the hash of entry `last_seq`, where
        `verify` starts from now on. Returns how many entries went. `rule` says why, in a few words.
        The first prune of a register years old deletes many entries at once: no statement limit.
        """
        async with self._db.without_time_limits():
            await self._db.lock(REGISTER_LOCK)
            rows = await self._db.fetch_one(
                "SELECT MIN(seq) AS first, COUNT(*) AS n FROM register WHERE seq <= :last", {"last": last_seq})
            last = await self._db.fetch_one("SELECT hash FROM register WHERE seq = :last", {"last": last_seq})
            if rows is None or not rows["n"] or last is None:
                return 0
            count = int(rows["n"])
            detail = (f"table=register; count={count}; seq={int(rows['first'])}-{last_seq}; "
                      f"last_hash={last['hash']}; rule={rule}")
            await self.append(at=at, event=RegisterEvent.RETENTION_PRUNED, actor_id=SYSTEM_ACTOR_ID,
                              actor_name=SYSTEM_ACTOR_NAME, protocol_id="-", detail=detail, chain_now=True)
            await self._db.execute("DELETE FROM register WHERE seq <= :last", {"last": last_seq})
        return count

    async def verify(self) -> list[RegisterProblem]:
        """Recompute the chain from the first entry (or the last prune's anchor); empty means intact.

        Each entry is checked on its own (does its content still give its hash?) and against the
        entry before it (consecutive seq, previous_hash equal to that entry's hash), so a problem
        is reported where it is, not as a cascade over everything after it.
        """
        # A page at a time, each checked in a worker thread: hashing is about a second of CPU for 40 000 entries
        # (never on the event loop), and the entries read whole were 59 MB held at once on every DPO's `register`,
        # whose objects made the garbage collector's full passes (they stop every thread) the loop's longest pauses.
        walk = _ChainWalk(await self.anchor())
        async for page in self._pages("1 = 1", {}):
            await asyncio.to_thread(walk.check, page)
        return walk.problems(await self._seq_of_hashes(walk.unlinked()))

    async def _seq_of_hashes(self, hashes: set[str]) -> dict[str, int]:
        """Which entry carries each of `hashes` (the last in seq order, as a walk over them all would say)."""
        found: dict[str, int] = {}
        ordered = sorted(hashes)
        for start in range(0, len(ordered), 500):
            for row in await self._db.fetch_all("SELECT seq, hash FROM register WHERE hash IN :hashes ORDER BY seq",
                                                {"hashes": ordered[start:start + 500]}):
                found[str(row["hash"])] = int(row["seq"])
        return found

    async def export(self, start: dt.date, end: dt.date, timezone: ZoneInfo) -> list[dict[str, str]]:
        """The entries of the local days `start` to `end` (both included), columns `EXPORT_COLUMNS`.

        Days are local days in `timezone` (Europe/Brussels for the DPO): 28 November runs from
        27 November 23:00 to 28 November 23:00 UTC, and an entry at 23:30 Brussels time on the
        28th belongs to the 28th although its UTC time says 22:30.
        """
        return [row async for page in self.export_pages(start, end, timezone) for row in page]

    async def export_protocol(self, protocol_id: str) -> list[dict[str, str]]:
        """Every kept entry of one protocol, and the anchors of the register's prunes, columns `EXPORT_COLUMNS`.

        What one protocol's DPO gets: no entry of another protocol (their seq numbers are the gaps),
        but the anchors, which say why the oldest entries are gone.
        """
        return [row async for page in self.export_protocol_pages(protocol_id) for row in page]

    async def export_protocol_pages(self, protocol_id: str, *, through_seq: int | None = None
                                    ) -> AsyncIterator[list[dict[str, str]]]:
        """`export_protocol` a page of `PAGE_SIZE` entries at a time, up to entry `through_seq` (None: all).

        For a download: only a page is held at once, so a register years old costs a few MB per
        download, not its own size several times over; `through_seq` (the last entry `summary`
        counted) keeps entries appended meanwhile out of a file whose count was already recorded.
        """
        parameters: dict[str, str | int] = {"protocol": protocol_id, "pruned": RegisterEvent.RETENTION_PRUNED.value}
        where = _OF_PROTOCOL
        if through_seq is not None:
            where, parameters["through"] = f"{_OF_PROTOCOL} AND seq <= :through", through_seq
        async for page in self._pages(where, parameters):
            yield await asyncio.to_thread(_exported_rows, page)

    async def export_pages(self, start: dt.date, end: dt.date, timezone: ZoneInfo
                           ) -> AsyncIterator[list[dict[str, str]]]:
        """`export` a page of `PAGE_SIZE` entries at a time (the CLI writes each page as it comes)."""
        if end < start:
            raise ValueError("the end date is before the start date")
        since = to_text(dt.datetime.combine(start, dt.time.min, tzinfo=timezone))
        until = to_text(dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min, tzinfo=timezone))
        async for page in self._pages("at >= :since AND at < :until", {"since": since, "until": until}):
            yield await asyncio.to_thread(_exported_rows, page)

    async def _pages(self, where: str, parameters: Mapping[str, str | int]) -> AsyncIterator[list[Row]]:
        """The entries matching `where`, in seq order, `PAGE_SIZE` at a time.

        Turning a database row into a Python one is CPU work on the event loop; one statement for a
        register of 40 000 entries held every other user's turn for a good part of a second, a page
        a few milliseconds. `where` is one of this module's own conditions, never input.
        """
        sql = f"SELECT * FROM register WHERE seq > :after AND ({where}) ORDER BY seq LIMIT :page"  # noqa: S608  # nosec B608
        after = 0
        while True:
            page = await self._db.fetch_all(sql, {**parameters, "after": after, "page": PAGE_SIZE})
            if page:
                yield page
            if len(page) < PAGE_SIZE:
                return
            after = int(page[-1]["seq"])

    async def summary(self, protocol_id: str) -> ProtocolSummary:
        """What `export_protocol` holds, in numbers, and the hash of its last entry (the anchor to file away)."""
        parameters = {"protocol": protocol_id, "pruned": RegisterEvent.RETENTION_PRUNED.value}
        totals = await self._db.fetch_one(
            f"SELECT COUNT(*) AS n, MIN(at) AS first, MAX(at) AS last FROM register WHERE {_OF_PROTOCOL}",  # noqa: S608  # nosec B608
            parameters,
        )
        last = await self._db.fetch_one(
            f"SELECT seq, hash FROM register WHERE {_OF_PROTOCOL} ORDER BY seq DESC LIMIT 1", parameters  # noqa: S608  # nosec B608
        )
        if totals is None:
            raise RuntimeError("an aggregate without a row")
        return ProtocolSummary(
            protocol_id=protocol_id,
            entries=int(totals["n"]),
            first_at=None if totals["first"] is None else from_text(str(totals["first"])),
            last_at=None if totals["last"] is None else from_text(str(totals["last"])),
            last_seq=None if last is None else int(last["seq"]),
            last_hash=None if last is None else str(last["hash"]),
        )


#: The entries of one protocol's export: its own and the register's anchors.
_OF_PROTOCOL = ("(protocol_id = :protocol OR (protocol_id = '-' AND event = :pruned"
                " AND detail LIKE 'table=register;%'))")


def _exported_rows(rows: list[Row]) -> list[dict[str, str]]:
    """A page as text (in a worker thread: 2000 entries are about 9 ms of CPU, which the event loop then waited)."""
    return [{column: str(row[column]) for column in EXPORT_COLUMNS} for row in rows]


class _ChainWalk:
    """`verify`'s walk over the entries in seq order, a page at a time (each in a worker thread): each entry's own
    hash and its link to the one before it. A link that does not match is kept as (seq, the hash it names) and
    judged after the walk, when a lookup says whether another entry carries that hash (reordered) or none does
    (broken): no hash of every entry is held meanwhile."""

    def __init__(self, anchor: ChainAnchor | None) -> None:
        self._anchor = anchor
        self._expected_seq, self._expected_previous = (1, GENESIS_HASH) if anchor is None else (
            anchor.last_seq + 1, anchor.last_hash)
        self._current_seen = False
        self._found: list[RegisterProblem | tuple[int, str]] = []

    def check(self, rows: Sequence[Row]) -> None:
        """The next page of entries."""
        for row in rows:
            seq = int(row["seq"])
            self._found.extend(_content_problems(row, after_current_format=self._current_seen))
            self._current_seen = self._current_seen or row["entry_format"] == CURRENT_FORMAT
            previous = row["previous_hash"]
            if seq != self._expected_seq:
                missing = str(self._expected_seq) if seq == self._expected_seq + 1 else \
                    f"{self._expected_seq} to {seq - 1}"
                self._found.append(RegisterProblem(seq, ProblemKind.REMOVED,
                                                   f"entries before it are missing: {missing}"))
            elif previous != self._expected_previous:
                self._found.append((seq, str(previous)))
            self._expected_seq, self._expected_previous = seq + 1, row["hash"]

    def unlinked(self) -> set[str]:
        """The hashes that mismatched links name, to look up."""
        return {item[1] for item in self._found if isinstance(item, tuple)}

    def problems(self, seq_of_hash: Mapping[str, int]) -> list[RegisterProblem]:
        """The findings in seq order, each mismatched link judged by `seq_of_hash` (which entry carries a hash)."""
        return [item if isinstance(item, RegisterProblem) else self._link_problem(*item, seq_of_hash)
                for item in self._found]

    def _link_problem(self, seq: int, previous: str, seq_of_hash: Mapping[str, int]) -> RegisterProblem:
        follows = seq_of_hash.get(previous)
        if follows is not None and follows != seq:
            return RegisterProblem(seq, ProblemKind.REORDERED,
                                   f"it is chained after entry {follows}, not after entry {seq - 1}")
        before = "the start of the register" if seq == 1 else f"entry {seq - 1}"
        if self._anchor is not None and seq == self._anchor.last_seq + 1:
            before = f"the last pruned entry (anchor in entry {self._anchor.recorded_in})"
        return RegisterProblem(
            seq, ProblemKind.BROKEN_LINK,
            f"its previous_hash does not match {before}: that entry was altered, replaced or removed",
        )


def _content_problems(row: Row, *, after_current_format: bool) -> list[RegisterProblem]:
    """Whether the entry's fields still give the hash it was written with, in its own format."""
    seq = int(row["seq"])
    entry_format: Any = row["entry_format"]
    fields_hashed = _FIELDS_OF_FORMAT.get(entry_format) if isinstance(entry_format, str) else None
    if fields_hashed is None:
        return [RegisterProblem(seq, ProblemKind.ALTERED, f"unknown entry format {str(entry_format)[:20]!r}")]
    not_text = [name for name in (*fields_hashed, *_NEW_FIELDS, "previous_hash", "hash")
                if not isinstance(row[name], str)]
    if not_text:
        return [RegisterProblem(seq, ProblemKind.ALTERED, f"not text any more: {', '.join(not_text)}")]
    malformed = [name for name in ("previous_hash", "hash") if not _is_sha256_hex(row[name])]
    if malformed:
        return [RegisterProblem(seq, ProblemKind.ALTERED, f"not a SHA-256 hash: {', '.join(malformed)}")]
    if fields_hashed is LEGACY_HASHED_FIELDS:
        filled = [name for name in _NEW_FIELDS if row[name]]
        if filled:
            detail = f"format 1 has no {', '.join(filled)}, yet it is filled in (not covered by its hash)"
            return [RegisterProblem(seq, ProblemKind.ALTERED, detail)]
        if after_current_format:
            detail = "format 1 after entries of format 2: no entry is written in the old format any more"
            return [RegisterProblem(seq, ProblemKind.ALTERED, detail)]
    fields = {name: str(row[name]) for name in fields_hashed}
    if entry_hash(str(row["previous_hash"]), fields) != row["hash"]:
        return [RegisterProblem(seq, ProblemKind.ALTERED, "its content no longer matches its hash")]
    return []


def _is_sha256_hex(value: str) -> bool:
    return len(value) == 64 and all(character in "0123456789abcdef" for character in value)


def canonical_fields(fields: dict[str, str]) -> str:
    """The entry's fields as the hash covers them: JSON, keys sorted, ASCII only, no spaces."""
    return json.dumps(fields, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def entry_hash(previous_hash: str, fields: dict[str, str]) -> str:
    """SHA-256 over the previous hash and the entry's fields in a canonical JSON form.

    PostgreSQL's `register_append` (revision 0003) computes the same over the same bytes.
    """
    return hashlib.sha256((previous_hash + canonical_fields(fields)).encode("ascii")).hexdigest()
