"""The processing register: each entry chained to the previous, tampering found where it is, DPO export.

What the register does is tested on both backends (`database`); tampering is done to the SQLite file
behind the bot's back (`sql`), as an attacker with the file would. Several instances appending at
once keep one unbroken chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event

from bot.evidence.register import (
    EXPORT_COLUMNS,
    GENESIS_HASH,
    HASHED_FIELDS,
    LEGACY_HASHED_FIELDS,
    ChainAnchor,
    ProblemKind,
    ProcessingRegister,
    RegisterEvent,
    entry_hash,
)
from bot.storage.database import Database
from tests.support.databases import another_engine, postgres_database, sql, sqlite_database
from tests.support.postgres_server import PostgresServer

NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


async def test_entries_are_chained(database: Database) -> None:
    db = database
    register = ProcessingRegister(db)
    first = await register.append(at=NOW, event=RegisterEvent.CONSENT_CONFIRMED, actor_id="a", actor_name="A",
                            protocol_id="P", reference="VD-20261128-AAAAAA")
    second = await register.append(at=NOW, event=RegisterEvent.DELIVERED, actor_id="a", actor_name="A",
                             protocol_id="P", reference="VD-20261128-AAAAAA")
    rows = await db.fetch_all("SELECT * FROM register ORDER BY seq")
    assert rows[0]["previous_hash"] == GENESIS_HASH and rows[1]["previous_hash"] == first
    assert rows[1]["hash"] == second != first
    names = [name for name in rows[1] if name not in ("seq", "previous_hash", "hash")]
    fields = {name: rows[1][name] for name in names}
    assert entry_hash(first, fields) == second
    assert "10/1" in rows[0]["legal_basis"] and "P" in rows[0]["legal_basis"]
    assert await register.events_for("VD-20261128-AAAAAA") == ["consent_confirmed", "delivered"]


async def test_the_last_detail_of_an_event_is_the_newest_one_for_that_reference(database: Database) -> None:
    """Which outcome a closed referral had (the OCMW filed the data, or deleted it): the newest one recorded."""
    register = ProcessingRegister(database)
    for reference, outcome in (("VD-20261128-AAAAAA", "unreachable"), ("VD-20261128-AAAAAA", "contact_help_wanted"),
                               ("VD-20261128-BBBBBB", "contact_no_help_wanted")):
        await register.append(at=NOW, event=RegisterEvent.OUTCOME_RECORDED, actor_id="a", actor_name="A",
                              protocol_id="P", reference=reference, detail=outcome)
    assert await register.last_detail("VD-20261128-AAAAAA", RegisterEvent.OUTCOME_RECORDED) == "contact_help_wanted"
    assert await register.last_detail("VD-20261128-AAAAAA", RegisterEvent.DELIVERED) is None
    assert await register.last_detail("VD-20261128-CCCCCC", RegisterEvent.OUTCOME_RECORDED) is None


async def test_recorded_finds_an_entry_by_reference_event_and_exact_detail(database: Database) -> None:
    register = ProcessingRegister(database)
    async with database.transaction():  # PostgreSQL: chained at the commit, found after it
        await register.append(at=NOW, event=RegisterEvent.SUPERFLUOUS_REPORTED, actor_id="a", actor_name="A",
                              protocol_id="P", reference="VD-20261128-AAAAAA", detail="item: email")
    assert await register.recorded("VD-20261128-AAAAAA", RegisterEvent.SUPERFLUOUS_REPORTED, "item: email")
    assert not await register.recorded("VD-20261128-AAAAAA", RegisterEvent.SUPERFLUOUS_REPORTED, "item: phone")
    assert not await register.recorded("VD-20261128-BBBBBB", RegisterEvent.SUPERFLUOUS_REPORTED, "item: email")
    assert not await register.recorded("VD-20261128-AAAAAA", RegisterEvent.CORRECTION_REQUESTED, "item: email")


async def test_entries_appended_alone_and_inside_steps_by_two_instances_make_one_chain(database: Database) -> None:
    """Two engines on one database (two instances) append 40 entries at once, half of them alone (PostgreSQL:
    one autocommitted statement) and half inside a transaction that does more: one unbroken chain, each hash
    the one the bot computes in Python."""
    other = another_engine(database)

    async def append(db: Database, index: int) -> str | None:
        register = ProcessingRegister(db)
        fields = {"at": NOW + dt.timedelta(seconds=index), "event": RegisterEvent.ACKNOWLEDGED,
                  "actor_id": f"aad-{index}", "actor_name": 'Zoë Ålander-"Ŝ" \\ 🙂', "protocol_id": "P",
                  "reference": f"VD-20261128-{index:06d}", "detail": f"step {index}\n"}
        if index % 2:
            return await register.append(**fields)
        async with db.transaction():
            await db.execute("INSERT INTO reminders (subject, kind, at) VALUES (:s, 'k', :at)",
                             {"s": str(index), "at": "x"})
            return await register.append(**fields)

    hashes = await asyncio.gather(*(append(database if index % 4 < 2 else other, index) for index in range(40)))
    rows = await database.fetch_all("SELECT * FROM register ORDER BY seq")
    assert [row["seq"] for row in rows] == list(range(1, 41))
    # Inside a step PostgreSQL chains the entry at the commit (revision 0004): its hash is not known before.
    known = [digest for digest in hashes if digest is not None]
    assert len(known) == (20 if database.is_postgres else 40) and set(known) <= {row["hash"] for row in rows}
    assert all(entry_hash(row["previous_hash"], {name: row[name] for name in HASHED_FIELDS}) == row["hash"]
               for row in rows)
    assert await ProcessingRegister(database).verify() == []


#: Text that the canonical JSON escapes and PostgreSQL's JSON parser must turn back into the same characters:
#: quotes, backslashes, control characters, DEL, line and paragraph separators, astral characters (surrogate
#: pairs in JSON) joined by ZWJ, a combining mark (not normalised), right to left, an escape that is text,
#: and a long value.
AWKWARD = ['Zoë "Ålander" \\ O\'Brien', "tab\tnew\nline\rreturn\x01\x1f\x7f", "\u2028\u2029\u00a0\ufeff",
           "🙂 👨‍👩‍👧 𝔘", "e\u0301 versus \u00e9", "שלום مرحبا", "\\u00e9 is not é", "</script>&amp;",
           "ŝ" * 5000]


@pytest.mark.parametrize("text", AWKWARD, ids=[f"awkward-{index}" for index in range(len(AWKWARD))])
async def test_the_stored_entry_and_its_hash_are_byte_for_byte_what_python_computes(
    database: Database, text: str
) -> None:
    """PostgreSQL appends in the server (`register_append`, revision 0003); `verify` and the DPO's own check
    recompute in Python (`entry_hash`). Every field is stored as given and the hashes agree, on both backends."""
    register = ProcessingRegister(database)
    first = await register.append(at=NOW, event=RegisterEvent.DELIVERED, actor_id=text, actor_name=text,
                                  protocol_id=text, reference=text, detail=text,
                                  data_categories=("contact:phone",), recipient=text, consent_version=text)
    second = await register.append(at=NOW, event=RegisterEvent.ACKNOWLEDGED, actor_id="a", actor_name=text,
                                   protocol_id="-", detail=text[::-1])
    rows = await database.fetch_all("SELECT * FROM register ORDER BY seq")
    given = {"actor_id", "actor_name", "protocol_id", "reference", "detail", "recipient", "consent_version"}
    assert {name: rows[0][name] for name in given} == dict.fromkeys(given, text)
    assert rows[1]["detail"] == text[::-1] and rows[1]["previous_hash"] == first
    for row, digest in zip(rows, (first, second), strict=True):
        assert row["hash"] == digest == entry_hash(row["previous_hash"], {name: row[name] for name in HASHED_FIELDS})
    assert await register.verify() == []


# --- verify(): the chain recomputed --------------------------------------------------------------

BRUSSELS = ZoneInfo("Europe/Brussels")
EVENTS = [RegisterEvent.REFERRAL_STARTED, RegisterEvent.CONSENT_CONFIRMED, RegisterEvent.PACKAGE_BUILT,
          RegisterEvent.QUEUED, RegisterEvent.DELIVERED, RegisterEvent.CANCELLED]


async def _fill(db: Database, count: int = 6) -> ProcessingRegister:
    register = ProcessingRegister(db)
    for index in range(count):
        await register.append(at=NOW + dt.timedelta(minutes=index), event=EVENTS[index % len(EVENTS)],
                        actor_id=f"aad-{index}", actor_name="An Verpleeg", protocol_id="OR-KG-NOW-OCMW-SGW-2026",
                        reference="VD-20261128-K7M2QX", detail=f"step {index}")
    return register


async def _filled(tmp_path: Path, count: int = 6) -> tuple[Database, ProcessingRegister]:
    """A register in a SQLite file, for tampering with behind the bot's back."""
    db = await sqlite_database(tmp_path / "db")
    return db, await _fill(db, count)


async def test_an_untouched_register_verifies(database: Database) -> None:
    register = await _fill(database)
    assert await register.verify() == []
    assert await register.count() == 6


async def test_an_empty_register_verifies(database: Database) -> None:
    register = ProcessingRegister(database)
    assert await register.verify() == []
    assert await register.count() == 0


@pytest.mark.parametrize("column", [name for name in HASHED_FIELDS if name != "entry_format"])
async def test_an_altered_field_is_found_at_its_entry(tmp_path: Path, column: str) -> None:
    db, register = await _filled(tmp_path)
    sql(db, f"UPDATE register SET {column} = {column} || 'x' WHERE seq = 3")  # noqa: S608 - test's own names
    problems = await register.verify()
    assert [(p.seq, p.kind) for p in problems] == [(3, ProblemKind.ALTERED)]
    assert problems[0].line().startswith("seq 3: altered:")


async def test_an_altered_entry_with_a_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    db, register = await _filled(tmp_path)
    row = sql(db, "SELECT * FROM register WHERE seq = 2").fetchone()
    fields = {name: row[name] for name in HASHED_FIELDS} | {"actor_name": "Iemand Anders"}
    sql(db, "UPDATE register SET actor_name = ?, hash = ? WHERE seq = 2",
               ("Iemand Anders", entry_hash(row["previous_hash"], fields)))
    problems = await register.verify()
    assert [(p.seq, p.kind) for p in problems] == [(3, ProblemKind.BROKEN_LINK)]
    assert "entry 2" in problems[0].detail


async def test_a_value_of_another_type_is_an_alteration(tmp_path: Path) -> None:
    db, register = await _filled(tmp_path)
    sql(db, "UPDATE register SET actor_id = 42 WHERE seq = 4")
    sql(db, "UPDATE register SET previous_hash = 'é' WHERE seq = 5")
    assert [(p.seq, p.kind) for p in await register.verify()] == [
        (4, ProblemKind.ALTERED), (5, ProblemKind.ALTERED), (5, ProblemKind.BROKEN_LINK)
    ]


@pytest.mark.parametrize("seq", [1, 3, 5])
async def test_a_deleted_entry_is_found_at_the_next(tmp_path: Path, seq: int) -> None:
    db, register = await _filled(tmp_path)
    sql(db, "DELETE FROM register WHERE seq = ?", (seq,))
    problems = await register.verify()
    assert [(p.seq, p.kind) for p in problems] == [(seq + 1, ProblemKind.REMOVED)]
    assert f"missing: {seq}" in problems[0].line()


async def test_deleted_entries_are_named_as_a_range(tmp_path: Path) -> None:
    db, register = await _filled(tmp_path)
    sql(db, "DELETE FROM register WHERE seq IN (2, 3, 4)")
    [problem] = await register.verify()
    assert (problem.seq, problem.kind) == (5, ProblemKind.REMOVED)
    assert "2 to 4" in problem.detail


async def test_a_deleted_entry_renumbered_away_breaks_the_link(tmp_path: Path) -> None:
    """Closing the seq gap after a delete does not help: the chain still says something is missing."""
    db, register = await _filled(tmp_path)
    sql(db, "DELETE FROM register WHERE seq = 3")
    sql(db, "UPDATE register SET seq = seq - 1 WHERE seq > 3")
    assert [(p.seq, p.kind) for p in await register.verify()] == [(3, ProblemKind.BROKEN_LINK)]


async def test_two_swapped_entries_are_found(tmp_path: Path) -> None:
    db, register = await _filled(tmp_path)
    _swap_contents(db, 2, 3)
    problems = await register.verify()
    assert [(p.seq, p.kind) for p in problems] == [
        (2, ProblemKind.REORDERED), (3, ProblemKind.REORDERED), (4, ProblemKind.REORDERED)
    ]
    assert "chained after entry 3, not after entry 1" in problems[0].detail
    assert "chained after entry 1, not after entry 2" in problems[1].detail


async def test_swapping_the_last_two_is_found(tmp_path: Path) -> None:
    db, register = await _filled(tmp_path)
    _swap_contents(db, 5, 6)
    problems = await register.verify()
    assert [(p.seq, p.kind) for p in problems] == [(5, ProblemKind.REORDERED), (6, ProblemKind.REORDERED)]


async def test_an_entry_inserted_in_a_gap_is_found(tmp_path: Path) -> None:
    db, register = await _filled(tmp_path)
    sql(db, "UPDATE register SET seq = seq + 10 WHERE seq > 3")
    copied = [name for name in (*HASHED_FIELDS, "previous_hash", "hash") if name != "actor_name"]
    sql(db, f"INSERT INTO register (seq, actor_name, {', '.join(copied)})"  # noqa: S608 - test's own names
               f" SELECT 4, 'Vervalst', {', '.join(copied)} FROM register WHERE seq = 3")
    kinds = [(p.seq, p.kind) for p in await register.verify()]
    assert (4, ProblemKind.ALTERED) in kinds
    assert (14, ProblemKind.REMOVED) in kinds


def _swap_contents(db: Database, first: int, second: int) -> None:
    columns = [*HASHED_FIELDS, "previous_hash", "hash"]
    rows = {seq: sql(db, "SELECT * FROM register WHERE seq = ?", (seq,)).fetchone() for seq in (first, second)}
    assignments = ", ".join(f"{name} = ?" for name in columns)
    for target, source in ((first, second), (second, first)):
        sql(db, f"UPDATE register SET {assignments} WHERE seq = ?",  # noqa: S608 - test's own names
                   [rows[source][name] for name in columns] + [target])


# --- prune_through(): retention cuts the start, verify starts from the anchor -------------------

LATER = NOW + dt.timedelta(days=5 * 366)


async def _pruned(tmp_path: Path, through: int = 3, count: int = 6) -> tuple[Database, ProcessingRegister]:
    db, register = await _filled(tmp_path, count)
    assert await register.prune_through(through, at=LATER, rule="test") == through
    return db, register


async def test_a_prune_removes_the_oldest_entries_and_leaves_an_anchoring_entry(database: Database) -> None:
    db, register = database, await _fill(database)
    third = await db.scalar("SELECT hash FROM register WHERE seq = 3")
    assert await register.prune_through(3, at=LATER, rule="written more than 5 years ago") == 3
    rows = await db.fetch_all("SELECT seq, event, actor_id, protocol_id, reference, detail FROM register ORDER BY seq")
    assert [(row["seq"], row["event"]) for row in rows] == [
        (4, "queued"), (5, "delivered"), (6, "cancelled"), (7, "retention_pruned")]
    anchor = rows[-1]
    assert anchor["detail"] == (f"table=register; count=3; seq=1-3; last_hash={third}; "
                                "rule=written more than 5 years ago")
    assert (anchor["actor_id"], anchor["protocol_id"], anchor["reference"]) == ("bot:retention", "-", "")
    assert await register.anchor() is not None and await register.anchor() == ChainAnchor(3, third, 7)
    assert await register.verify() == []


async def test_pruning_everything_still_verifies(database: Database) -> None:
    register = await _fill(database)
    assert await register.prune_through(6, at=LATER, rule="test") == 6
    assert await register.count() == 1 and await register.verify() == []
    assert await register.prune_through(7, at=LATER + dt.timedelta(days=1), rule="test") == 1
    assert await register.count() == 1 and await register.verify() == []


async def test_after_two_prunes_the_newest_anchor_counts(database: Database) -> None:
    register = await _fill(database)
    assert await register.prune_through(2, at=LATER, rule="test") == 2
    assert await register.prune_through(5, at=LATER, rule="test") == 3
    anchor = await register.anchor()
    assert anchor is not None and (anchor.last_seq, anchor.recorded_in) == (5, 8)
    assert await register.verify() == []


async def test_after_a_prune_an_altered_entry_is_still_found(tmp_path: Path) -> None:
    db, register = await _pruned(tmp_path)
    sql(db, "UPDATE register SET actor_name = 'Iemand Anders' WHERE seq = 4")
    assert [(p.seq, p.kind) for p in await register.verify()] == [(4, ProblemKind.ALTERED)]


async def test_after_a_prune_the_removal_of_the_oldest_remaining_entry_is_found(tmp_path: Path) -> None:
    db, register = await _pruned(tmp_path)
    sql(db, "DELETE FROM register WHERE seq = 4")
    problems = await register.verify()
    assert [(p.seq, p.kind) for p in problems] == [(5, ProblemKind.REMOVED)]
    assert "missing: 4" in problems[0].detail


async def test_after_a_prune_an_oldest_entry_replaced_with_a_recomputed_hash_is_found(tmp_path: Path) -> None:
    db, register = await _pruned(tmp_path)
    row = sql(db, "SELECT * FROM register WHERE seq = 4").fetchone()
    fields = {name: row[name] for name in HASHED_FIELDS} | {"actor_name": "Iemand Anders"}
    sql(db, "UPDATE register SET actor_name = ?, previous_hash = ?, hash = ? WHERE seq = 4",
               ("Iemand Anders", GENESIS_HASH, entry_hash(GENESIS_HASH, fields)))
    problems = await register.verify()
    assert (4, ProblemKind.BROKEN_LINK) in [(p.seq, p.kind) for p in problems]
    assert "the last pruned entry (anchor in entry 7)" in problems[0].detail


async def test_removing_the_anchoring_entry_is_found(tmp_path: Path) -> None:
    db, register = await _pruned(tmp_path)
    sql(db, "DELETE FROM register WHERE seq = 7")
    problems = await register.verify()
    assert (4, ProblemKind.REMOVED) in [(p.seq, p.kind) for p in problems], "without the anchor, 1-3 are missing"


async def test_an_altered_anchor_is_found(tmp_path: Path) -> None:
    db, register = await _pruned(tmp_path)
    sql(db, "UPDATE register SET detail = replace(detail, 'seq=1-3', 'seq=1-4') WHERE seq = 7")
    kinds = [(p.seq, p.kind) for p in await register.verify()]
    assert (7, ProblemKind.ALTERED) in kinds


# --- export(): a period in Brussels days ---------------------------------------------------------


async def test_export_has_the_documented_columns_and_values(database: Database) -> None:
    db, register = database, await _fill(database, count=2)
    rows = await register.export(dt.date(2026, 11, 28), dt.date(2026, 11, 28), BRUSSELS)
    assert [list(row) for row in rows] == [list(EXPORT_COLUMNS)] * 2
    assert EXPORT_COLUMNS == ("seq", "at", "event", "actor_id", "actor_name", "protocol_id", "reference", "purpose",
                              "legal_basis", "data_categories", "recipient", "recipient_category", "consent_version",
                              "detail", "entry_format", "previous_hash", "hash")
    first = rows[0]
    assert first["seq"] == "1"
    assert dt.datetime.fromisoformat(first["at"]) == NOW
    assert first["at"].endswith("+00:00")
    assert first["event"] == "referral_started"
    assert first["reference"] == "VD-20261128-K7M2QX"
    assert "10/1" in first["legal_basis"] and "OR-KG-NOW-OCMW-SGW-2026" in first["legal_basis"]
    assert "onderbescherming" in first["purpose"] and first["entry_format"] == "2"
    assert (first["data_categories"], first["recipient"], first["recipient_category"]) == ("", "", "")
    assert first["previous_hash"] == GENESIS_HASH
    stored = await db.scalar("SELECT hash FROM register WHERE seq = 1")
    assert first["hash"] == stored
    assert entry_hash(stored, {name: rows[1][name] for name in HASHED_FIELDS}) == rows[1]["hash"]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # 27 Nov 23:30 UTC is 28 Nov 00:30 in Brussels; 28 Nov 22:59 UTC is 23:59 there; 23:00 UTC is the 29th.
        (dt.date(2026, 11, 28), dt.date(2026, 11, 28), ["b", "c", "d"]),
        (dt.date(2026, 11, 27), dt.date(2026, 11, 27), ["a"]),
        (dt.date(2026, 11, 29), dt.date(2026, 11, 30), ["e"]),
        (dt.date(2026, 11, 27), dt.date(2026, 11, 29), ["a", "b", "c", "d", "e"]),
        (dt.date(2026, 12, 1), dt.date(2026, 12, 31), []),
    ],
)
async def test_export_selects_local_days_inclusive(database: Database, start: dt.date, end: dt.date,
                                             expected: list[str]) -> None:
    register = ProcessingRegister(database)
    moments = {
        "a": dt.datetime(2026, 11, 27, 22, 59, 59, tzinfo=dt.UTC),
        "b": dt.datetime(2026, 11, 27, 23, 0, tzinfo=dt.UTC),
        "c": dt.datetime(2026, 11, 28, 12, 0, tzinfo=BRUSSELS),
        "d": dt.datetime(2026, 11, 28, 22, 59, 59, 999999, tzinfo=dt.UTC),
        "e": dt.datetime(2026, 11, 28, 23, 0, tzinfo=dt.UTC),
    }
    for detail, moment in moments.items():
        await register.append(at=moment, event=RegisterEvent.DELIVERED, actor_id="bot", actor_name="bot",
                        protocol_id="P", detail=detail)
    assert [row["detail"] for row in await register.export(start, end, BRUSSELS)] == expected


async def test_export_follows_summer_time(database: Database) -> None:
    """On 1 July Brussels is UTC+2: the local day starts at 22:00 UTC the day before."""
    register = ProcessingRegister(database)
    for detail, moment in {"june": dt.datetime(2026, 6, 30, 21, 59, tzinfo=dt.UTC),
                           "july": dt.datetime(2026, 6, 30, 22, 0, tzinfo=dt.UTC)}.items():
        await register.append(at=moment, event=RegisterEvent.DELIVERED, actor_id="bot", actor_name="bot",
                        protocol_id="P", detail=detail)
    exported = await register.export(dt.date(2026, 7, 1), dt.date(2026, 7, 1), BRUSSELS)
    assert [row["detail"] for row in exported] == ["july"]


async def test_export_refuses_an_end_before_the_start(tmp_path: Path) -> None:
    register = ProcessingRegister(await sqlite_database(tmp_path / "db"))
    with pytest.raises(ValueError, match="before"):
        await register.export(dt.date(2026, 11, 28), dt.date(2026, 11, 27), BRUSSELS)


# --- what each entry says: categories and recipient only for a transfer ---------------------------

RECIPIENT = "OCMW Sint-Gillis-Waas <welzijnshuis@sint-gillis-waas.be>"


async def test_a_transfer_names_its_categories_in_the_protocols_order_and_its_recipient(database: Database) -> None:
    db = database
    register = ProcessingRegister(db)
    await register.append(at=NOW, event=RegisterEvent.DELIVERED, actor_id="bot:delivery", actor_name="bot",
                          protocol_id="P", data_categories=("contact:phone", "identification:name"),
                          recipient=RECIPIENT, consent_version="v3")
    await register.append(at=NOW, event=RegisterEvent.ACKNOWLEDGED, actor_id="a", actor_name="A", protocol_id="P")
    delivered, acknowledged = await db.fetch_all("SELECT * FROM register ORDER BY seq")
    assert delivered["data_categories"] == "identification:name,contact:phone"
    assert (delivered["recipient"], delivered["consent_version"]) == (RECIPIENT, "v3")
    assert delivered["recipient_category"] == "maatschappelijk werker OCMW, gebonden door het beroepsgeheim"
    assert (acknowledged["data_categories"], acknowledged["recipient"], acknowledged["recipient_category"]) == (
        "", "", "")
    assert await register.verify() == []


async def test_an_entry_of_no_protocol_has_no_purpose(database: Database) -> None:
    await ProcessingRegister(database).append(at=NOW, event=RegisterEvent.RETENTION_PRUNED, actor_id="bot:retention",
                                        actor_name="bot", protocol_id="-", detail="table=drafts; count=1")
    row = await database.fetch_one("SELECT purpose, legal_basis FROM register")
    assert row is not None and row["purpose"] == "" and not row["legal_basis"].endswith("protocol -")


@pytest.mark.parametrize(("categories", "recipient"), [
    (("contact:email",), ""),  # data without an addressee
    ((), RECIPIENT),  # an addressee without data
    (("Zoëlle",), RECIPIENT),  # a value, not a category
    ("contact:email", RECIPIENT),  # a string is not a list of categories
])
async def test_what_is_not_a_transfer_is_refused(
    database: Database, categories: tuple[str, ...], recipient: str
) -> None:
    register = ProcessingRegister(database)
    with pytest.raises(ValueError, match=r"categor|recipient"):
        await register.append(at=NOW, event=RegisterEvent.QUEUED, actor_id="a", actor_name="A", protocol_id="P",
                        data_categories=categories, recipient=recipient)
    assert await register.count() == 0


# --- format 1: entries written before purpose, recipient and consent version -----------------------

LEGACY_CATEGORIES = "identification:name,contact:address,contact:phone,contact:email"


def _legacy_entries(db: Database, count: int) -> None:
    """Entries as the previous version wrote them: hashed over the old fields, the new ones empty."""
    previous = GENESIS_HASH
    for seq in range(1, count + 1):
        fields = {"at": f"2026-11-2{seq}T09:00:00.000000+00:00", "event": "delivered", "actor_id": "aad-1",
                  "actor_name": "An Verpleeg", "protocol_id": "P", "reference": "VD-20261128-K7M2QX",
                  "legal_basis": "art. 10/1; protocol P", "data_categories": LEGACY_CATEGORIES,
                  "recipient_category": "maatschappelijk werker", "detail": f"old {seq}"}
        assert set(fields) == set(LEGACY_HASHED_FIELDS)
        digest = entry_hash(previous, fields)
        sql(db, "INSERT INTO register (seq, at, event, actor_id, actor_name, protocol_id, reference, legal_basis,"
                   " data_categories, recipient_category, detail, previous_hash, hash) VALUES"
                   " (:seq, :at, :event, :actor_id, :actor_name, :protocol_id, :reference, :legal_basis,"
                   " :data_categories, :recipient_category, :detail, :previous_hash, :hash)",
                   {**fields, "seq": seq, "previous_hash": previous, "hash": digest})
        previous = digest


async def test_old_entries_keep_their_hashes_and_new_ones_chain_on(tmp_path: Path) -> None:
    db = await sqlite_database(tmp_path / "db")
    register = ProcessingRegister(db)
    _legacy_entries(db, 3)
    old_hashes = [row[0] for row in sql(db, "SELECT hash FROM register ORDER BY seq")]
    await register.append(at=NOW, event=RegisterEvent.QUEUED, actor_id="a", actor_name="A", protocol_id="P",
                    data_categories=("identification:name",), recipient=RECIPIENT)
    assert await register.verify() == []
    rows = sql(db, "SELECT entry_format, hash, previous_hash FROM register ORDER BY seq").fetchall()
    assert [row["entry_format"] for row in rows] == ["1", "1", "1", "2"]
    assert [row["hash"] for row in rows[:3]] == old_hashes, "nothing a DPO filed away changes"
    assert rows[3]["previous_hash"] == old_hashes[-1]


@pytest.mark.parametrize(("change", "where"), [
    ("recipient = 'OCMW X <x@example.be>'", 2),  # a field format 1 does not have, filled in afterwards
    ("consent_version = 'v9'", 2),
    ("entry_format = '3'", 2),  # no such format
    ("detail = 'changed'", 2),
    ("entry_format = '1'", 4),  # a new entry passed off as an old one
])
async def test_tampering_across_formats_is_found(tmp_path: Path, change: str, where: int) -> None:
    db = await sqlite_database(tmp_path / "db")
    register = ProcessingRegister(db)
    _legacy_entries(db, 3)
    await register.append(at=NOW, event=RegisterEvent.ACKNOWLEDGED, actor_id="a", actor_name="A", protocol_id="P")
    sql(db, f"UPDATE register SET {change} WHERE seq = ?", (where,))  # noqa: S608 - test's own SQL
    assert [(p.seq, p.kind) for p in await register.verify()] == [(where, ProblemKind.ALTERED)]


async def test_an_old_format_entry_after_a_new_one_is_found_even_with_a_valid_hash(tmp_path: Path) -> None:
    """Rewriting a new entry in the old format (hash recomputed) hides its recipient and consent version."""
    db, register = await _filled(tmp_path, count=3)
    row = sql(db, "SELECT * FROM register WHERE seq = 2").fetchone()
    fields = {name: str(row[name]) for name in LEGACY_HASHED_FIELDS}
    sql(db, "UPDATE register SET entry_format = '1', purpose = '', hash = ? WHERE seq = 2",
               (entry_hash(row["previous_hash"], fields),))
    problems = await register.verify()
    assert (2, ProblemKind.ALTERED) in [(p.seq, p.kind) for p in problems]
    assert "format 1 after entries of format 2" in problems[0].detail


# --- one protocol's export, for its DPO ----------------------------------------------------------


async def test_a_protocols_export_has_its_own_entries_and_the_registers_anchors(database: Database) -> None:
    register = ProcessingRegister(database)
    empty = await register.summary("P")
    assert (empty.entries, empty.first_at, empty.last_seq, empty.last_hash) == (0, None, None, None)
    for index, protocol in enumerate(["P", "Q", "P", "Q", "P"]):
        await register.append(at=NOW + dt.timedelta(days=index), event=RegisterEvent.ACKNOWLEDGED, actor_id="a",
                        actor_name="A", protocol_id=protocol, detail=str(index))
    await register.prune_through(2, at=LATER, rule="test")
    await register.append(at=LATER, event=RegisterEvent.RETENTION_PRUNED, actor_id="bot:retention", actor_name="bot",
                    protocol_id="-", detail="table=drafts; count=3; rule=7 days")
    rows = await register.export_protocol("P")
    assert [(row["seq"], row["protocol_id"]) for row in rows] == [("3", "P"), ("5", "P"), ("6", "-")]
    assert rows[-1]["detail"].startswith("table=register; count=2; seq=1-2")
    summary = await register.summary("P")
    assert (summary.entries, summary.last_seq, summary.last_hash) == (3, 6, rows[-1]["hash"])
    assert summary.first_at == NOW + dt.timedelta(days=2) and summary.last_at == LATER
    assert (await register.summary("Q")).entries == 2, "its kept entry 4 and the anchor"
    assert await register.verify() == []


# --- several instances: one chain ------------------------------------------------------------------


async def test_fifty_entries_appended_at_once_by_two_instances_make_one_unbroken_chain(database: Database) -> None:
    engines = (database, another_engine(database))

    async def append(number: int) -> None:
        db = engines[number % 2]
        async with db.transaction():  # as a step does: its entry commits with its state change
            await ProcessingRegister(db).append(at=NOW, event=RegisterEvent.ACKNOWLEDGED, actor_id=f"aad-{number}",
                                               actor_name="Olga", protocol_id="P", detail=f"click {number}")

    await asyncio.gather(*(append(number) for number in range(50)))
    assert await ProcessingRegister(database).verify() == []
    seqs = [row["seq"] for row in await database.fetch_all("SELECT seq FROM register ORDER BY seq")]
    assert seqs == list(range(1, 51))
    assert sorted(row["detail"] for row in await database.fetch_all("SELECT detail FROM register")) == sorted(
        f"click {number}" for number in range(50))


async def test_the_entries_of_one_step_keep_their_order_and_a_savepoint_rolled_back_leaves_none(
        database: Database) -> None:
    register = ProcessingRegister(database)
    async with database.transaction():
        for detail in ("first", "undone", "second"):
            with contextlib.suppress(RuntimeError):
                async with database.transaction():  # a savepoint
                    await register.append(at=NOW, event=RegisterEvent.ACKNOWLEDGED, actor_id="a", actor_name="A",
                                          protocol_id="P", detail=detail)
                    if detail == "undone":
                        raise RuntimeError("this part of the step failed")
    rows = await database.fetch_all("SELECT seq, detail FROM register ORDER BY seq")
    assert [(row["seq"], row["detail"]) for row in rows] == [(1, "first"), (2, "second")]
    assert await database.scalar("SELECT COUNT(*) AS n FROM register_pending") == 0
    assert await register.verify() == []


async def test_on_postgresql_a_step_holds_the_register_lock_only_inside_its_commit(postgres: PostgresServer) -> None:
    """Another instance appends and commits while a step that wrote an entry is still open, instead of waiting
    for it: before revision 0004 the lock taken at the append was held over every round trip the step still
    made, through a busy event loop, to its commit. The open step's entry is chained after, at its commit."""
    db = await postgres_database(postgres)
    other = another_engine(db)
    appended, release = asyncio.Event(), asyncio.Event()
    returned: list[str | None] = []

    async def open_step() -> None:
        async with db.transaction():
            returned.append(await ProcessingRegister(db).append(at=NOW, event=RegisterEvent.DELIVERED, actor_id="a",
                                                                actor_name="A", protocol_id="P", detail="open step"))
            appended.set()
            await release.wait()

    async def step_on_the_other_instance() -> None:
        async with other.transaction():
            await ProcessingRegister(other).append(at=NOW, event=RegisterEvent.ACKNOWLEDGED, actor_id="b",
                                                   actor_name="B", protocol_id="P", detail="other instance")

    step = asyncio.create_task(open_step())
    await appended.wait()
    elsewhere = asyncio.create_task(step_on_the_other_instance())
    try:
        done, _ = await asyncio.wait({elsewhere}, timeout=5)
        while_open = [row["detail"] for row in await db.fetch_all("SELECT detail FROM register ORDER BY seq")]
    finally:
        release.set()
        await asyncio.gather(step, elsewhere)
    assert done and while_open == ["other instance"], "the other instance waited for the open step's commit"
    assert returned == [None]  # chained at the commit: no hash before it
    rows = await db.fetch_all("SELECT detail FROM register ORDER BY seq")
    assert [row["detail"] for row in rows] == ["other instance", "open step"]
    assert await ProcessingRegister(db).verify() == []


async def test_an_entry_rolled_back_leaves_no_gap_even_while_another_instance_appends(database: Database) -> None:
    """seq is the previous entry's plus one under the lock, not a sequence's next value, which a rollback would skip."""
    first, second = ProcessingRegister(database), ProcessingRegister(other := another_engine(database))
    await first.append(at=NOW, event=RegisterEvent.QUEUED, actor_id="a", actor_name="A", protocol_id="P")
    holding = asyncio.Event()

    async def step_that_fails() -> None:
        with pytest.raises(RuntimeError, match="the step failed"):
            async with database.transaction():
                await first.append(at=NOW, event=RegisterEvent.DELIVERED, actor_id="a", actor_name="A",
                                   protocol_id="P", detail="rolled back")
                holding.set()
                await asyncio.sleep(0.05)  # the other instance is waiting for the chain meanwhile
                raise RuntimeError("the step failed")

    async def step_on_the_other_instance() -> None:
        await holding.wait()
        async with other.transaction():
            await second.append(at=NOW, event=RegisterEvent.ACKNOWLEDGED, actor_id="b", actor_name="B",
                                protocol_id="P", detail="kept")

    await asyncio.gather(step_that_fails(), step_on_the_other_instance())
    rows = await database.fetch_all("SELECT seq, detail FROM register ORDER BY seq")
    assert [(row["seq"], row["detail"]) for row in rows] == [(1, ""), (2, "kept")]
    assert await first.verify() == []


async def test_an_append_after_a_rolled_back_one_and_another_instances_chains_on_the_others_entry(
        database: Database) -> None:
    """The entry this register last wrote was rolled back and another instance appended in its place: the next
    entry follows the other instance's, not the one that never committed."""
    mine, theirs = ProcessingRegister(database), ProcessingRegister(another_engine(database))
    await mine.append(at=NOW, event=RegisterEvent.QUEUED, actor_id="a", actor_name="A", protocol_id="P")
    with pytest.raises(RuntimeError, match="the step failed"):
        async with database.transaction():
            await mine.append(at=NOW, event=RegisterEvent.DELIVERED, actor_id="a", actor_name="A", protocol_id="P",
                              detail="rolled back", chain_now=True)
            raise RuntimeError("the step failed")
    await theirs.append(at=NOW, event=RegisterEvent.ACKNOWLEDGED, actor_id="b", actor_name="B", protocol_id="P",
                        detail="theirs")
    await mine.append(at=NOW, event=RegisterEvent.ACKNOWLEDGED, actor_id="a", actor_name="A", protocol_id="P",
                      detail="mine")
    rows = await database.fetch_all("SELECT seq, detail FROM register ORDER BY seq")
    assert [(row["seq"], row["detail"]) for row in rows] == [(1, ""), (2, "theirs"), (3, "mine")]
    assert await mine.verify() == []


async def test_on_sqlite_an_entry_is_one_statement_once_the_register_knows_its_last_entry(tmp_path: Path) -> None:
    """Before, every append read the last entry first: five reads per referral that the register wrote itself
    (SQLite: the writer lock keeps every other writer out meanwhile; the insert checks the entry is still the last)."""
    db = await sqlite_database(tmp_path / "bot.sqlite3")
    register = ProcessingRegister(db)
    await register.append(at=NOW, event=RegisterEvent.QUEUED, actor_id="a", actor_name="A", protocol_id="P")
    statements: list[str] = []

    def record(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        for detail in ("alone", "in a step"):
            if detail == "alone":
                await register.append(at=NOW, event=RegisterEvent.DELIVERED, actor_id="a", actor_name="A",
                                      protocol_id="P", detail=detail)
                continue
            async with db.transaction():
                await register.append(at=NOW, event=RegisterEvent.ACKNOWLEDGED, actor_id="a", actor_name="A",
                                      protocol_id="P", detail=detail)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert len(statements) == 2 and all(statement.startswith("INSERT INTO register") for statement in statements), \
        statements
    await ProcessingRegister(another_engine(db)).append(at=NOW, event=RegisterEvent.ACKNOWLEDGED, actor_id="b",
                                                        actor_name="B", protocol_id="P", detail="another process")
    await register.append(at=NOW, event=RegisterEvent.ACKNOWLEDGED, actor_id="a", actor_name="A", protocol_id="P",
                          detail="after another process")
    rows = await db.fetch_all("SELECT seq, detail FROM register ORDER BY seq")
    assert [row["detail"] for row in rows] == ["", "alone", "in a step", "another process", "after another process"]
    assert await register.verify() == []
