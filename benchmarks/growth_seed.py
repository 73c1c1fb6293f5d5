"""Realistic stored referrals in bulk, for `benchmarks.database_growth`: families recorded by the real bot, then cloned.

First the real bot (in this process, on a temporary SQLite file, driven over HTTP against a connector
stand-in, a manual clock moved between the steps) takes one referral to each state: closed
(`data_deleted`, with and without a correction version) and each open or awaiting state. Every row
that referral left (the referral, its register entries, its mail's outbox row with the payload
dropped, its Teams messages, the OCMW card's slot, a correction request) is its family's template.

Then `rows` clones the templates as often as asked: a new reference, one of a few hundred
referrers, every time shifted by the same amount, the register's seq and hash chain and the
message outbox's ids renumbered in time order (the chain verifies). Most referrals are closed,
spread over the 90 days before their referral data is pruned; a constant number are open, from
the last two weeks, so reminders are due. `load` writes the rows with the fastest bulk path of
each engine (PostgreSQL `COPY`, SQLite `executemany` in one transaction per chunk).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import logging
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.app import create_app
from bot.config import Settings
from bot.evidence.register import HASHED_FIELDS, entry_hash
from bot.storage.database import Database, from_text, to_text
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import actions
from tests.support.clock import ManualClock
from tests.support.ocmw_flow import link, ocmw_worker
from tests.support.referral_flow import reach_review

ZIP_PASSWORD = "K7M2QX9PLR4TWB8N6VHJ3CZD"  # noqa: S105 - a fixed benchmark password  # nosec B105
#: "Now" for the benchmark: a Wednesday, so working-day reminders fall on ordinary days.
NOW = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)
#: The open referrals, by the state they wait in; the same number at every size.
OPEN_MIX = {"sent": 40, "received": 40, "help_wanted": 30, "no_help_wanted": 30, "unreachable": 20,
            "consent_withdrawn": 20, "correction_requested": 20}
#: Share of closed families that also had a correction version (two referral rows).
CORRECTED_SHARE = 0.03
#: Share of closed families whose OCMW was reminded to acknowledge.
REMINDED_SHARE = 0.2
REFERRERS = 300
#: Closed referrals are kept this long after closure (the protocol's `referral_days_after_closure`).
RETENTION = dt.timedelta(days=90)
CHUNK = 10_000
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
#: Tables a family has rows in, in load order; `register` and `message_outbox` are renumbered.
TABLES = ("referrals", "outbox", "card_slots", "corrections", "reminders", "register", "message_outbox")


@dataclass(frozen=True)
class Family:
    """One referral as the bot left it in one state: every row of it, by table."""

    kind: str
    reference: str
    referrer: TeamsUser
    start: dt.datetime
    rows: dict[str, list[dict[str, Any]]]

    @property
    def span(self) -> dt.timedelta:
        """From the referral's start to its last recorded moment."""
        moments = [from_text(value) for table in self.rows.values() for row in table for value in row.values()
                   if isinstance(value, str) and _TIME.match(value)]
        return max(moments) - self.start


@dataclass(frozen=True)
class Templates:
    """The families, the rows every database has once (the OCMW link), and a real mail."""

    families: dict[str, Family]
    shared: dict[str, list[dict[str, Any]]]
    columns: dict[str, tuple[str, ...]]
    mail: bytes  # a referral's mail as the bot queues it (RFC 5322, the AES-256 ZIP inside)


# -- recording the templates with the real bot ------------------------------------------------------


async def record_templates() -> Templates:
    """Drive the real bot through one referral per family kind; read back what it stored."""
    logging.disable(logging.WARNING)  # the SDK's "no App ID" notice; nothing here is a problem
    try:
        with tempfile.TemporaryDirectory(prefix="growth-templates-") as folder:
            data = Path(folder) / "data"
            settings = Settings.from_mapping({"BOT_DATA_DIR": str(data), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD})
            clock = ManualClock(NOW - dt.timedelta(days=30))
            starts: dict[str, tuple[str, TeamsUser, dt.datetime]] = {}
            async with running_bot(create_app(settings, clock=clock, run_worker=False)) as bot:
                await link(bot, ocmw_worker())
                for kind in ("deleted", "corrected", *OPEN_MIX):
                    referrer = TeamsUser(f"aad-template-{kind}", f"Template {kind}", f"a:personal-template-{kind}")
                    clock.advance(dt.timedelta(hours=1))
                    start = clock.now()
                    reference = await _drive(bot, clock, kind, referrer)
                    await bot.settle()
                    starts[kind] = (reference, referrer, start)
            mail = next((data / "outbox").glob("*.eml")).read_bytes()
            return _read_templates(data / "bot.sqlite3", starts, mail)
    finally:
        logging.disable(logging.NOTSET)


async def _drive(bot: BotDriver, clock: ManualClock, kind: str, referrer: TeamsUser) -> str:
    """One referral from start to the family's state, a realistic pause between the steps."""
    draft_id, _ = await reach_review(bot, referrer)
    clock.advance(dt.timedelta(minutes=1))
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    reference = str(await bot.services.db.scalar("SELECT reference FROM drafts WHERE id = :id", {"id": draft_id}))
    clock.advance(dt.timedelta(minutes=1))
    await bot.deliver()
    card_id = await bot.services.messages.slot_activity_id(f"ocmw:{reference}")
    worker = ocmw_worker().in_thread(str(card_id))
    if kind == "sent":
        return reference
    if kind == "consent_withdrawn":
        clock.advance(dt.timedelta(days=1))
        await _click(bot, referrer, "consent.withdraw", {"reference": reference})
        return reference
    clock.advance(dt.timedelta(days=1))
    await bot.act(worker, "ack.receive", {"reference": reference})
    if kind in ("corrected", "correction_requested"):
        clock.advance(dt.timedelta(days=1))
        await bot.act(worker, "referral.quality", {"reference": reference, "item": "phone"})
        await bot.settle()
        if kind == "correction_requested":
            return reference
        request = next(call.body["attachments"][0]["content"] for call in reversed(bot.connector.calls)
                       if call.body.get("attachments")
                       and "correction.submit" in actions(call.body["attachments"][0]["content"]))
        clock.advance(dt.timedelta(hours=2))
        correction_id = actions(request)["correction.submit"]["correctionId"]
        await bot.act(referrer, "correction.submit", {"correctionId": correction_id, "phone": "0470 11 22 33"})
        await bot.deliver()
    if kind == "received":
        return reference
    outcome = {"help_wanted": "contact_help_wanted", "unreachable": "unreachable"}.get(kind, "contact_no_help_wanted")
    clock.advance(dt.timedelta(days=2))
    await _click(bot, worker, "referral.outcome", {"reference": reference, "outcome": outcome})
    if kind in ("deleted", "corrected"):
        clock.advance(dt.timedelta(days=2))
        await _click(bot, worker, "referral.deleted", {"reference": reference})
    return reference


async def _click(bot: BotDriver, user: TeamsUser, verb: str, data: dict[str, str]) -> None:
    """A button, and its confirmation where the card asks for one."""
    card = await bot.act(user, verb, data)
    confirm = actions(card).get(verb)
    if confirm is not None and confirm.get("confirmed") == "true":
        await bot.act(user, verb, confirm)


def _read_templates(path: Path, starts: dict[str, tuple[str, TeamsUser, dt.datetime]], mail: bytes) -> Templates:
    connection = sqlite3.connect(path)
    connection.row_factory = sqlite3.Row
    try:
        def read(sql: str, *parameters: Any) -> list[dict[str, Any]]:
            return [dict(row) for row in connection.execute(sql, parameters)]

        families = {}
        for kind, (reference, referrer, start) in starts.items():
            versions = f"{reference}-%"
            rows = {
                "referrals": read("SELECT * FROM referrals WHERE reference = ? OR parent_reference = ?",
                                  reference, reference),
                "outbox": read("SELECT * FROM outbox WHERE reference = ? OR reference LIKE ?", reference, versions),
                "card_slots": read("SELECT * FROM card_slots WHERE slot = ? OR slot LIKE ?",
                                   f"ocmw:{reference}", f"ocmw:{versions}"),
                "corrections": read("SELECT * FROM corrections WHERE reference = ?", reference),
                "reminders": [],
                "register": read("SELECT * FROM register WHERE reference = ? OR reference LIKE ? ORDER BY seq",
                                 reference, versions),
                "message_outbox": read("SELECT * FROM message_outbox WHERE reference = ? OR reference LIKE ?"
                                       " ORDER BY id", reference, versions),
            }
            families[kind] = Family(kind, reference, referrer, start, rows)
        shared = {
            "ocmw_links": read("SELECT * FROM ocmw_links"),
            "pairing_codes": read("SELECT * FROM pairing_codes"),
            "register": read("SELECT * FROM register WHERE event = 'link_created'"),
        }
        columns = {table: tuple(row[1] for row in connection.execute(f"PRAGMA table_info({table})"))
                   for table in (*TABLES, "ocmw_links", "pairing_codes")}
    finally:
        connection.close()
    return Templates(families, shared, columns, mail)


# -- cloning -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clone:
    """One stored family: which template, shifted by how much, under which reference and referrer."""

    family: Family
    number: int
    shift: dt.timedelta
    reference: str
    referrer: int

    @functools.cached_property
    def substitutions(self) -> tuple[tuple[str, str], ...]:
        template = self.family.referrer
        return (
            (self.family.reference, self.reference),
            (template.aad_object_id, f"aad-referrer-{self.referrer}"),
            (template.conversation_id, f"a:personal-referrer-{self.referrer}"),
            (template.name, f"Verpleegkundige {self.referrer}"),
            *((row["id"], f"correction-{self.number}-{index}")
              for index, row in enumerate(self.family.rows["corrections"])),
        )


@dataclass(frozen=True)
class Plan:
    """What one database will hold: the clones in time order, and how many referral rows they make."""

    clones: list[Clone]

    @property
    def referrals(self) -> int:
        return sum(len(clone.family.rows["referrals"]) for clone in self.clones)

    def open_references(self) -> list[str]:
        return [clone.reference for clone in self.clones if clone.family.kind not in ("deleted", "corrected")]


def plan(templates: Templates, total: int) -> Plan:
    """`total` referral rows: the open mix from the last two weeks, the rest closed over the retention window."""
    families = templates.families
    open_count = sum(OPEN_MIX.values())
    closed_rows = total - open_count
    if closed_rows < 0:
        raise ValueError(f"at least {open_count} referrals (the open ones)")
    corrected = round(closed_rows * CORRECTED_SHARE / (1 + CORRECTED_SHARE))
    kinds = ["corrected" if _spread(index, corrected, closed_rows - corrected) else "deleted"
             for index in range(closed_rows - corrected)]
    # Closed families started between the retention window's start and ten days ago (each takes ~5 days).
    first, last = NOW - RETENTION - dt.timedelta(days=10), NOW - dt.timedelta(days=10)
    schedule = [(kind, _between(first, last, index, len(kinds))) for index, kind in enumerate(kinds)]
    for kind, count in OPEN_MIX.items():
        latest = NOW - families[kind].span - dt.timedelta(hours=1)
        schedule.extend((kind, _between(NOW - dt.timedelta(days=14), latest, index, count)) for index in range(count))
    schedule.sort(key=lambda item: item[1])
    clones = []
    for number, (kind, start) in enumerate(schedule):
        family = families[kind]
        reference = f"VD-{start:%Y%m%d}-{_code(number)}"
        clones.append(Clone(family, number, start - family.start, reference, number * 7919 % REFERRERS))
    return Plan(clones)


def _spread(index: int, wanted: int, among: int) -> bool:
    """Every (among / wanted)-th index: `wanted` of `among` spread evenly."""
    return wanted > 0 and (index * wanted) // among != ((index + 1) * wanted) // among


def _between(first: dt.datetime, last: dt.datetime, index: int, count: int) -> dt.datetime:
    return first + (last - first) * (index / max(1, count - 1))


def _code(number: int) -> str:
    alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    digits = []
    for _ in range(6):
        number, digit = divmod(number, len(alphabet))
        digits.append(alphabet[digit])
    return "".join(digits)


class _Cloner:
    """Rows of one template row for a clone: times shifted, ids substituted; column by column, precomputed."""

    def __init__(self, row: dict[str, Any], family: Family) -> None:
        tokens = [pair[0] for pair in Clone(family, 0, dt.timedelta(0), "", 0).substitutions]
        self.times = {name: from_text(value) for name, value in row.items()
                      if isinstance(value, str) and _TIME.match(value)}
        self.texts = [name for name, value in row.items()
                      if isinstance(value, str) and name not in self.times and any(t in value for t in tokens)]
        self.row = row

    def clone(self, clone: Clone) -> dict[str, Any]:
        row = dict(self.row)
        for name, moment in self.times.items():
            row[name] = (moment + clone.shift).isoformat(timespec="microseconds")  # UTC already: `to_text`
        for name in self.texts:
            value = row[name]
            for old, new in clone.substitutions:
                value = value.replace(old, new)
            row[name] = value
        return row


def rows(templates: Templates, seed: Plan) -> dict[str, Iterator[tuple[Any, ...]]]:
    """Every table's rows as tuples in `templates.columns` order (iterators: nothing is held in memory)."""
    cloners = {kind: {table: [_Cloner(row, family) for row in table_rows] for table, table_rows in family.rows.items()}
               for kind, family in templates.families.items()}
    columns = templates.columns

    def plain(table: str) -> Iterator[tuple[Any, ...]]:
        for clone in seed.clones:
            for cloner in cloners[clone.family.kind][table]:
                row = cloner.clone(clone)
                yield tuple(row[name] for name in columns[table])

    def reminders() -> Iterator[tuple[Any, ...]]:
        closed = [clone for clone in seed.clones if clone.family.kind in ("deleted", "corrected")]
        for index, clone in enumerate(closed):
            if _spread(index, round(len(closed) * REMINDED_SHARE), len(closed)):
                sent = from_text(clone.family.rows["referrals"][0]["sent_at"]) + clone.shift
                yield tuple({"subject": clone.reference, "kind": "ack_ocmw",
                             "at": to_text(sent + dt.timedelta(days=2))}[name] for name in columns["reminders"])

    def in_time_order(table: str, order: str) -> list[tuple[dt.datetime, int, int]]:
        keys = []
        for position, clone in enumerate(seed.clones):
            for entry, cloner in enumerate(cloners[clone.family.kind][table]):
                keys.append((cloner.times[order] + clone.shift, position, entry))
        keys.sort()
        return keys

    def register() -> Iterator[tuple[Any, ...]]:
        previous = "0" * 64
        link_entry = dict(templates.shared["register"][0])
        link_entry["at"] = to_text(NOW - RETENTION - dt.timedelta(days=30))
        entries: Iterable[dict[str, Any]] = itertools.chain(
            [link_entry],
            (cloners[seed.clones[position].family.kind]["register"][entry].clone(seed.clones[position])
             for _, position, entry in in_time_order("register", "at")),
        )
        for seq, row in enumerate(entries, start=1):
            fields = {name: str(row[name]) for name in HASHED_FIELDS}
            digest = entry_hash(previous, fields)
            row.update(seq=seq, previous_hash=previous, hash=digest)
            previous = digest
            yield tuple(row[name] for name in columns["register"])

    def message_outbox() -> Iterator[tuple[Any, ...]]:
        for number, (_, position, entry) in enumerate(in_time_order("message_outbox", "queued_at"), start=1):
            row = cloners[seed.clones[position].family.kind]["message_outbox"][entry].clone(seed.clones[position])
            row["id"] = number
            yield tuple(row[name] for name in columns["message_outbox"])

    def shared(table: str) -> Iterator[tuple[Any, ...]]:
        for row in templates.shared[table]:
            yield tuple(row[name] for name in columns[table])

    return {
        "ocmw_links": shared("ocmw_links"),
        "pairing_codes": shared("pairing_codes"),
        **{table: plain(table) for table in ("referrals", "outbox", "card_slots", "corrections")},
        "reminders": reminders(),
        "register": register(),
        "message_outbox": message_outbox(),
    }


# -- loading -------------------------------------------------------------------------------------------


async def load(db: Database, templates: Templates, seed: Plan) -> dict[str, int]:
    """Write the plan's rows into an empty, migrated database; rows per table."""
    counts: dict[str, int] = {}
    async with db.engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection  # asyncpg.Connection or aiosqlite.Connection, outside any transaction
        for table, records in rows(templates, seed).items():
            names = templates.columns[table]
            counts[table] = 0
            for chunk in _chunks(records, CHUNK):
                if db.is_postgres:
                    await driver.copy_records_to_table(table, records=chunk, columns=list(names))
                else:
                    marks = ", ".join("?" for _ in names)
                    await driver.execute("BEGIN")
                    await driver.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})",  # noqa: S608  # nosec B608 - the schema's own names
                                             chunk)
                    await driver.execute("COMMIT")
                counts[table] += len(chunk)
        if db.is_postgres:
            # The ids were given, not drawn: the sequences go on after the largest.
            await driver.execute("SELECT setval(pg_get_serial_sequence('register', 'seq'), MAX(seq)) FROM register")
            await driver.execute("SELECT setval(pg_get_serial_sequence('message_outbox', 'id'), MAX(id))"
                                 " FROM message_outbox")
            await driver.execute("VACUUM ANALYZE")  # what autovacuum does after a bulk load
        else:
            await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return counts


def _chunks(records: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(itertools.islice(records, size)):
        yield chunk


def describe() -> str:
    """What a plan holds, in one line."""
    return (f"referrals ({sum(OPEN_MIX.values())} open at every size: "
            + ", ".join(f"{count} {kind}" for kind, count in OPEN_MIX.items())
            + f"; closed ones data_deleted, {CORRECTED_SHARE:.0%} of them with a correction version), "
            f"{REFERRERS} referrers")
