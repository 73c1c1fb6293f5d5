"""Which statements a piece of the bot runs, and how the database plans each of them.

`StatementLog` listens on the engine (SQLAlchemy's `before_cursor_execute`), so it sees exactly
what the bot's own code sends, as the driver gets it, with its parameters; `buffers_read` runs one
on PostgreSQL and counts the pages it read. `explain` asks the
database for each distinct statement's plan with those parameters (PostgreSQL
`EXPLAIN (FORMAT JSON)`, SQLite `EXPLAIN QUERY PLAN`; neither runs the statement) and reduces it
to how each table is reached, flagging a full scan of the tables that grow with every referral.

`explain(..., seqscan=False)` plans on PostgreSQL with sequential scans priced out
(`enable_seqscan = off`): a sequential scan that is still chosen means no index can serve the
lookup, whatever the table's size or statistics, which makes the answer the same on an empty test
database as on a full one. SQLite plans without statistics (the bot never runs `ANALYZE`), so its
plans do not depend on the data either. Used by `tests/bot/storage/test_query_plans.py` and
`benchmarks/database_growth.py`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event

from bot.storage.database import Database

#: Tables that grow with every referral: none of them may be read in full by a per-delivery or per-pass lookup.
GROWING = frozenset({"referrals", "register", "outbox", "message_outbox", "reminders", "card_slots", "corrections"})
_DML = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)
_IN_LIST = re.compile(r"IN \((?:[^()]|\([^()]*\))*\)")
_ALIAS = re.compile(r"\b(\w+) AS (\w+)\b", re.IGNORECASE)
_PARAMETER = re.compile(r"\$\d+(?:::\w+)?|\?")


@dataclass(frozen=True)
class Statement:
    """One statement as the driver got it, with the parameters of its first run."""

    path: str
    sql: str
    parameters: Any

    @property
    def key(self) -> str:
        """The statement in either dialect's driver form, parameters as `?` and IN lists collapsed (one entry
        however many ids it was given)."""
        return _IN_LIST.sub("IN (...)", _PARAMETER.sub("?", " ".join(self.sql.split())))


@dataclass
class StatementLog:
    """Counts statements per operation and keeps one example of each distinct statement per path."""

    db: Database
    path: str | None = None
    counted: int = 0
    seen: dict[tuple[str, str], Statement] = field(default_factory=dict)

    def __post_init__(self) -> None:
        event.listen(self.db.engine.sync_engine, "before_cursor_execute", self._record)

    def close(self) -> None:
        event.remove(self.db.engine.sync_engine, "before_cursor_execute", self._record)

    @contextlib.contextmanager
    def recording(self, path: str) -> Iterator[None]:
        """Count and keep what runs inside the block, under `path`."""
        self.path = path
        try:
            yield
        finally:
            self.path = None

    def take_count(self) -> int:
        counted, self.counted = self.counted, 0
        return counted

    def _record(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                _executemany: bool) -> None:
        if self.path is None or not _DML.match(statement):
            return
        self.counted += 1
        recorded = Statement(self.path, statement, parameters)
        self.seen.setdefault((self.path, recorded.key), recorded)


@dataclass(frozen=True)
class Plan:
    """How the database reaches each table for one statement."""

    statement: Statement
    access: list[str]  # e.g. "referrals: Index Scan using referrals_message_id"
    full_scans: list[str]  # the growing tables read in full
    raw: Any


async def explain(db: Database, statement: Statement, *, seqscan: bool = True) -> Plan:
    """The plan of `statement` with its recorded parameters (not executed)."""
    async with db.engine.connect() as connection:
        if db.is_postgres:
            if not seqscan:
                await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            result = await connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement.sql}", statement.parameters)
            document = result.scalar()
            raw: Any = json.loads(document) if isinstance(document, str) else document
            access, scans = _postgres_access(raw[0]["Plan"])
        else:
            result = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement.sql}", statement.parameters)
            raw = [tuple(row) for row in result]
            access, scans = _sqlite_access([str(row[3]) for row in raw], statement.sql)
        await connection.rollback()
    return Plan(statement, access, scans, raw)


async def buffers_read(db: Database, statement: Statement) -> int:
    """PostgreSQL: the shared buffers one run of `statement` reads, with its recorded parameters (rolled back).

    A count of pages, not a time: what a lookup costs, the same on a busy machine as on an idle one.
    """
    async with db.engine.connect() as connection:
        result = await connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement.sql}",
                                                  statement.parameters)
        document = result.scalar()
        await connection.rollback()
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def _postgres_access(node: dict[str, Any]) -> tuple[list[str], list[str]]:
    """How each table is reached; a sequential scan of a growing table, or a walk of a whole index of one
    (no Index Cond) that no LIMIT stops, is a full scan."""
    access: list[str] = []
    scans: list[str] = []

    def visit(plan: dict[str, Any], limited: bool) -> None:
        relation = plan.get("Relation Name")
        kind = plan["Node Type"]
        if relation is not None and kind not in ("ModifyTable", "LockRows"):
            index = plan.get("Index Name")
            condition = plan.get("Index Cond")
            text = f"{relation}: {kind}" + (f" using {index}" if index else "")
            whole_index = index is not None and condition is None and kind != "Bitmap Heap Scan"
            if whole_index:
                text += " (no Index Cond" + (", stopped by LIMIT)" if limited else ")")
            access.append(text)
            if relation in GROWING and (kind == "Seq Scan" or (whole_index and not limited)):
                scans.append(relation)
        elif kind == "Bitmap Index Scan":
            access.append(f"  bitmap: {plan.get('Index Name')}")
        for child in plan.get("Plans", []):
            visit(child, limited or kind == "Limit")

    visit(node, False)
    return access, scans


def _sqlite_access(details: list[str], sql: str) -> tuple[list[str], list[str]]:
    aliases = {alias.lower(): table.lower() for table, alias in _ALIAS.findall(sql)}
    # `SELECT ... FROM t ORDER BY key DESC LIMIT 1` without a WHERE: SQLite says SCAN, but walks the key's
    # order and stops after LIMIT rows (no temporary B-tree to sort in means it reads them in order).
    limited_walk = (" WHERE " not in sql.upper() and re.search(r"ORDER BY .* LIMIT", sql, re.IGNORECASE) is not None
                    and not any(detail.startswith("USE TEMP B-TREE") for detail in details))
    access = []
    scans = []
    for detail in details:
        words = detail.split()
        if len(words) >= 2 and words[0] in ("SCAN", "SEARCH"):
            table = aliases.get(words[1].lower(), words[1].lower())
            how = " ".join(words[:1] + words[2:]) or words[0]
            if words[0] == "SCAN" and limited_walk:
                how += " in ORDER BY order, stopped by LIMIT"
            elif words[0] == "SCAN" and table in GROWING:
                scans.append(table)
            access.append(f"{table}: {how}")
        elif detail.startswith(("USE TEMP B-TREE", "CORRELATED", "LIST SUBQUERY", "SCALAR SUBQUERY")):
            access.append(detail)
    return access, scans
