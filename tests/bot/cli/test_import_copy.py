"""The import's private copy of the old SQLite file: a running import's copy is never taken by another run.

(A killed run's copy going at the next run: `test_sqlite_import.py`, with the real command killed.)
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest

from bot.cli.import_copy import private_copy


async def test_a_second_import_keeps_the_copy_of_one_still_running(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    file = tmp_path / "bot.sqlite3"
    with sqlite3.connect(file) as db:
        db.execute("CREATE TABLE drafts (id TEXT)")

    async with private_copy(file) as first:
        async with private_copy(file) as second:
            assert first.is_file() and second.is_file() and first != second
            assert first.parent.stat().st_mode & 0o077 == 0, "a folder only this user can open"
        assert first.is_file(), "the second run left the first run's copy alone"
    assert list(temporary.iterdir()) == []
