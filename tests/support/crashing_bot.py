"""`python -m tests.support.crashing_bot [COMMAND ...]`: the real `python -m bot serve` (or another command)
that SIGKILLs itself at a commit boundary.

`CRASH_AT=<event>:<before|after>[:<n>]` names the moment: the n-th (default first) outermost
transaction in which the processing-register event `<event>` is recorded, just before it commits
or just after; or `sending:after`, just after a draft was claimed for sending (a commit of its own);
or `table_copied:after`, `migrate --from-sqlite` just after copying its first table (inside its one
transaction). Nothing of the bot is changed but `Database.transaction`, `ProcessingRegister.append`,
`DraftStore.advance` and the import's `_copy_table`, wrapped here before the bot is imported, so the
process dies exactly where a power cut, an OOM kill or a closed SSH session could have stopped it.
Events are noted per task (a transaction belongs to the task that opened it), so concurrent
requests each count their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import bot.storage.database as database

EVENT, MOMENT, *COUNT = os.environ["CRASH_AT"].split(":")
WANTED = int(COUNT[0]) if COUNT else 1
_state = {"seen": 0}
_pending: dict[asyncio.Task[Any] | None, list[str]] = {}  # the events of each task's open transaction
_original_transaction = database.Database.transaction


def _die() -> None:
    sys.stderr.write(f"crashing_bot: SIGKILL {MOMENT} the commit of {EVENT} #{WANTED}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _hit() -> bool:
    """The current task's transaction records the awaited event for the WANTED-th time."""
    if EVENT not in _pending.get(asyncio.current_task(), ()):
        return False
    _state["seen"] += 1
    return _state["seen"] == WANTED


@contextlib.asynccontextmanager
async def _crashing_transaction(self: database.Database, *, savepoint: bool = True) -> AsyncIterator[None]:
    outermost = not self.in_transaction
    try:
        async with _original_transaction(self, savepoint=savepoint):
            yield
            if outermost and _hit():
                if MOMENT == "before":
                    _die()
                # Right as the commit returns, before anything after it (the WAL truncation after a
                # wipe awaits): dying after that let a woken Teams-message worker send meanwhile.
                self.after_commit(_die)
    finally:
        if outermost:
            _pending.pop(asyncio.current_task(), None)


database.Database.transaction = _crashing_transaction  # type: ignore[method-assign,assignment]

from bot.cli import sqlite_import  # noqa: E402 - after the patch, on purpose
from bot.cli.main import main  # noqa: E402
from bot.evidence import register  # noqa: E402 - after the patch, on purpose
from bot.referral import drafts  # noqa: E402 - after the patch, on purpose

_original_append = register.ProcessingRegister.append
_original_advance = drafts.DraftStore.advance
_original_copy_table = sqlite_import._copy_table


async def _recording_append(self: register.ProcessingRegister, **fields: Any) -> str:
    _pending.setdefault(asyncio.current_task(), []).append(str(fields["event"].value))
    return await _original_append(self, **fields)


async def _crashing_advance(self: drafts.DraftStore, draft: drafts.Draft, new_state: drafts.DraftState, *args: Any,
                            **kwargs: Any) -> drafts.Draft | None:
    advanced = await _original_advance(self, draft, new_state, *args, **kwargs)
    if EVENT == "sending" and new_state == drafts.DraftState.SENDING and advanced is not None:
        _die()
    return advanced


async def _crashing_copy_table(*args: Any, **kwargs: Any) -> int:
    copied = await _original_copy_table(*args, **kwargs)
    if EVENT == "table_copied":
        _die()
    return copied


register.ProcessingRegister.append = _recording_append  # type: ignore[method-assign]
drafts.DraftStore.advance = _crashing_advance  # type: ignore[method-assign]
sqlite_import._copy_table = _crashing_copy_table  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["serve"]))
