"""`python -m bot migrate [--wait] [--from-sqlite FILE]`: the schema to this version, and a SQLite deployment's data in.

`--wait` is for a start command (`migrate --wait && exec serve`, infra/README.md): while the database cannot be
reached (a failover, the network not up yet) it tries again, one line per attempt, as `serve` does; without it an
operator at a prompt gets the one-line error at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bot.cli.sqlite_import import ImportFailed, ImportRefused, import_sqlite
from bot.config import Settings
from bot.storage.schema_migration import migrate
from bot.wiring import Closer, build_database, once_database_reachable

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


async def run_migrate_command(settings: Settings, from_sqlite: Path | None, *, wait: bool = False) -> int:
    """Migrate (idempotent), then import `from_sqlite` if given; one line per step on standard output.

    `wait`: an unreachable database is waited for (a start command) instead of ending the command."""
    if from_sqlite is not None and not settings.database.is_postgres:
        sys.stderr.write("--from-sqlite copies into PostgreSQL: set DATABASE_URL to the new database\n")
        return EXIT_USAGE
    closers: list[Closer] = []
    db = build_database(settings, closers)
    try:
        before = await once_database_reachable(lambda: migrate(db)) if wait else await migrate(db)
        where = f"PostgreSQL on {settings.database.host}" if settings.database.is_postgres else str(
            settings.database_path)
        if before.up_to_date:
            sys.stdout.write(f"schema of {where} already at revision {before.head}\n")
        else:
            sys.stdout.write(f"schema of {where} migrated from {before.current or 'nothing'} to {before.head}\n")
        if from_sqlite is None:
            return EXIT_OK
        try:
            result = await import_sqlite(db, from_sqlite)
        except ImportRefused as error:
            sys.stderr.write(f"import refused: {error}\n")
            return EXIT_USAGE
        except ImportFailed as failed:
            sys.stdout.write("".join(f"PROBLEM {problem}\n" for problem in failed.problems))
            sys.stdout.write("nothing was kept: the database is as empty as before; keep the SQLite file\n")
            return EXIT_PROBLEMS
        copied = ", ".join(f"{name} {count}" for name, count in sorted(result.copied.items()))
        sys.stdout.write(f"copied from {from_sqlite}: {copied}\n")
        sys.stdout.write(f"row counts match; the register's hash chain verifies ({result.register_entries} "
                         "entries)\n")
        return EXIT_OK
    finally:
        await db.close()
        for close in closers:
            await close()
