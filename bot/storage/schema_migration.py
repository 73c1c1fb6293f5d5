"""Bring a database's schema to this version's (`python -m bot migrate`), or say that it is behind.

The revisions are Alembic's (`bot/storage/migrations/versions`). A SQLite file from before Alembic (its
version in `user_version`) is first brought to the schema of revision 0001 and stamped there
(`bot.storage.migrations.legacy_sqlite`). On PostgreSQL the migration holds an advisory lock, so two
instances started at once do not both migrate; DDL is transactional in both engines, so a
migration that fails leaves the schema as it was.

Alembic (and the revisions it loads) is imported only when needed: the usual start finds the
database at the head revision, which `quick_head` reads from the revision files' own lines and one
query confirms. That takes a fifth of the bot's start-up off (issue 14).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect

from bot.storage.database import Database, as_database_error, unbounded
from bot.storage.migrations import legacy_sqlite

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).parent / "migrations"
#: pg_advisory_xact_lock key for "a migration is running" (any fixed number; this one spells "VDMIGR").
_MIGRATION_LOCK = 0x56444D494752
_REVISION_LINE = re.compile(r'^revision\s*=\s*"([^"]+)"\s*$', re.MULTILINE)
_DOWN_REVISION_LINE = re.compile(r'^down_revision\s*=\s*(?:"([^"]+)"|None)\s*$', re.MULTILINE)


class SchemaOutOfDate(Exception):
    """The database's schema is not the one this version of the bot needs; the message says what to do."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema is, and where this version of the bot wants it."""

    current: str | None  # None: no schema yet (or a SQLite file from before Alembic)
    head: str
    legacy_sqlite: bool = False

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head and not self.legacy_sqlite


def head_revision() -> str:
    """The newest revision this version of the bot knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config(None)).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


async def schema_state(db: Database) -> SchemaState:
    """The database's revision and this version's; `DatabaseUnreachable` when it cannot be asked."""
    with as_database_error():
        async with db.engine.connect() as connection:
            return await connection.run_sync(_state)


async def migrate(db: Database) -> SchemaState:
    """Apply every missing revision (idempotent); the state before.

    Without the time limits every other statement has: DDL on a large table, or waiting for the
    migration lock another instance holds while it migrates, takes as long as it takes."""
    with as_database_error():
        async with db.engine.begin() as connection, unbounded(connection):
            return await connection.run_sync(_upgrade)


def quick_head() -> str | None:
    """The head revision as the revision files spell it (`revision = "..."`, `down_revision = ...`), without
    Alembic; None when they do not say it plainly (a merge of branches): then Alembic decides."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision, parent = _REVISION_LINE.search(text), _DOWN_REVISION_LINE.search(text)
        if revision is None or parent is None:
            return None
        revisions.add(revision.group(1))
        if parent.group(1) is not None:
            parents.add(parent.group(1))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


async def _stored_revision(db: Database) -> str | None:
    """`alembic_version` as the database holds it; None without that table (a new or a pre-Alembic file)."""
    try:
        rows = await db.fetch_all("SELECT version_num FROM alembic_version")
    except Exception:  # no such table: the full check below says what it is
        return None
    return str(rows[0]["version_num"]) if len(rows) == 1 else None


async def require_current_schema(db: Database, *, migrate_if_behind: bool) -> None:
    """Refuse to serve on a schema that is behind (or ahead); migrate first when told to."""
    head = quick_head()
    if head is not None and await _stored_revision(db) == head:
        return  # the usual start: nothing of Alembic needed
    state = await schema_state(db)
    if state.up_to_date:
        return
    known = state.current is None or _is_known(state.current)
    if known and migrate_if_behind:
        before = await migrate(db)
        logger.info("database schema migrated", extra={"from_revision": before.current or "none",
                                                       "to_revision": before.head})
        return
    if not known:
        raise SchemaOutOfDate(
            f"the database's schema (revision {state.current}) is newer than this version of the bot "
            f"(revision {state.head}): deploy the newer version")
    raise SchemaOutOfDate(
        f"the database's schema is at revision {state.current or 'none'}, this version needs {state.head}: "
        "run `python -m bot migrate` (or start with `serve --migrate`)")


def _config(connection: Connection | None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _is_known(revision: str) -> bool:
    from alembic.script import ScriptDirectory

    try:
        return ScriptDirectory.from_config(_config(None)).get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown id
        return False


def _state(connection: Connection) -> SchemaState:
    from alembic.runtime.migration import MigrationContext

    current = MigrationContext.configure(connection).get_current_revision()
    legacy = current is None and connection.dialect.name == "sqlite" and legacy_sqlite.has_tables(connection)
    return SchemaState(current=current, head=head_revision(), legacy_sqlite=legacy)


def _upgrade(connection: Connection) -> SchemaState:
    from alembic import command

    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
    before = _state(connection)
    config = _config(connection)
    if before.legacy_sqlite:
        legacy_sqlite.upgrade_to_version_2(connection)
        command.stamp(config, "0001")
    command.upgrade(config, "head")
    return before


def table_names(connection: Connection) -> list[str]:
    """The bot's tables (Alembic's own left out), for copying and comparing."""
    return sorted(name for name in inspect(connection).get_table_names() if name != "alembic_version")
