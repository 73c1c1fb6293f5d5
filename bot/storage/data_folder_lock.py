"""One serving process per data folder: an exclusive lock held for the process's life.

Two `python -m bot serve` on one `BOT_DATA_DIR` would both run the outboxes over one SQLite file;
the second refuses to start instead, naming the process that holds the folder. The lock is an
advisory `flock` on `serve.lock` in the folder: the kernel drops it when the process ends, however
it ends (a SIGKILL included), so a crash never leaves a stale lock behind. Commands that only read
or add a row (`check`, `link-ocmw`, `register`) do not take it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_FILE_NAME = "serve.lock"


class DataFolderInUseError(Exception):
    """Another live process serves this data folder; the message says which and what to do."""


class DataFolderLock:
    """Holds the folder until `release()` or the end of the process."""

    def __init__(self, handle: IO[str], path: Path) -> None:
        self._handle = handle
        self.path = path

    @classmethod
    def acquire(cls, folder: Path) -> DataFolderLock:
        """Take the folder, or raise DataFolderInUseError at once (never wait for it)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_FILE_NAME
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        handle = os.fdopen(descriptor, "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise DataFolderInUseError(
                f"another bot process (pid {holder}) already serves BOT_DATA_DIR={folder}: two would both send "
                "its queued mail. Stop that process first, or give this one its own BOT_DATA_DIR."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return cls(handle, path)

    def release(self) -> None:
        """Let another process serve the folder."""
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
