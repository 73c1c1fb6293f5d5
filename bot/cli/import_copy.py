"""The import's private copy of the old SQLite file, which no run leaves behind, however it ends.

The copy (the file and its WAL: sealed drafts, queued packages, the register) lives in a new folder
only this user can read and goes when the import ends. A run killed (an OOM kill, a closed SSH
session, a power cut) never reaches that end, so each run holds a lock in its folder (`flock`, which
the kernel drops however the process ends) and, before it copies, removes the folders of earlier
runs whose lock is free. The copy cannot be an anonymous file instead: SQLite opens it by its path
for each connection, the schema migration writes to it, and SQLite refuses to write to a file
unlinked since it was opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

logger = logging.getLogger(__name__)

#: How the copies' folders are named in the temporary folder (`TMPDIR`).
FOLDER_PREFIX = "vd-import-"
#: Held (`flock`) by the run that made the folder, for as long as it runs.
_LOCK_NAME = "import.lock"
_COPY_NAME = "source.sqlite3"


@contextlib.asynccontextmanager
async def private_copy(source: Path) -> AsyncIterator[Path]:
    """`source` and its WAL copied into a new private folder for the block; the copy's path."""
    folder, lock = await asyncio.to_thread(_copy, source)
    try:
        yield folder / _COPY_NAME
    finally:
        await asyncio.to_thread(_remove, folder, lock)


def _copy(source: Path) -> tuple[Path, int]:
    _remove_abandoned()
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))  # created 0700
    lock = os.open(folder / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # before the first byte is copied
        copy = folder / _COPY_NAME
        for suffix in ("", "-wal"):
            if Path(f"{source}{suffix}").exists():
                shutil.copyfile(f"{source}{suffix}", f"{copy}{suffix}")
    except BaseException:
        _remove(folder, lock)
        raise
    return folder, lock


def _remove(folder: Path, lock: int) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    os.close(lock)  # after the removal: another run never takes a folder still being emptied


def _remove_abandoned() -> None:
    """Remove this user's copies whose run is over (killed): their folder's lock is free."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            found = folder.lstat()
            if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
                continue  # another user's, or not a folder this module made
            lock = os.open(folder / _LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue  # no lock: a run killed before it copied anything (or another program's folder)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)  # an import running now
            continue
        _remove(folder, lock)
        logger.info("removed the private copy a killed import left", extra={"folder": folder.name})
