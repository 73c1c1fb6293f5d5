"""What the bot leaves in its data folder, read the way someone with the disk would read it.

A wipe empties SQLite's WAL at its commit, or, when a reader kept that checkpoint busy, within
`Database.checkpoint_retry_seconds` of the reader letting go: so a test looks again for a few
seconds before it calls a value left behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

#: Longer than any checkpoint retry (1 s) on a loaded CI machine.
SETTLE_SECONDS = 5.0


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by path."""
    return {str(path): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


async def left_in_folder(folder: Path, found: Callable[[str, bytes], list[str]],
                         seconds: float = SETTLE_SECONDS) -> dict[str, list[str]]:
    """What `found` still finds per file once the bot has had `seconds` to empty its WAL; {} when nothing."""
    deadline = time.monotonic() + seconds
    while True:
        left = {name: hits for name, content in folder_bytes(folder).items() if (hits := found(name, content))}
        if not left or time.monotonic() >= deadline:
            return left
        await asyncio.sleep(0.05)
