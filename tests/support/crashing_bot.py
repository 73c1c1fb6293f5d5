"""`python -m tests.support.crashing_bot`: the real `python -m bot serve` that SIGKILLs itself at a commit boundary.

`CRASH_AT=<event>:<before|after>[:<n>]` names the moment: the n-th (default first) outermost
transaction in which the processing-register event `<event>` is recorded, just before it commits
or just after; or `sending:after`, just after a draft was claimed for sending (a commit of its own).
Nothing of the bot is changed but `bot.database.transaction`, `ProcessingRegister.append` and
`DraftStore.advance`, wrapped here before the bot is imported, so the process dies exactly where a
power cut or an OOM kill could have stopped it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator
from typing import Any

import bot.database as database

EVENT, MOMENT, *COUNT = os.environ["CRASH_AT"].split(":")
WANTED = int(COUNT[0]) if COUNT else 1
_state = {"depth": 0, "seen": 0}
_pending: list[str] = []
_original_transaction = database.transaction


def _die() -> None:
    sys.stderr.write(f"crashing_bot: SIGKILL {MOMENT} the commit of {EVENT} #{WANTED}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _hit() -> bool:
    """The open transaction records the awaited event for the WANTED-th time."""
    if EVENT not in _pending:
        return False
    _state["seen"] += 1
    return _state["seen"] == WANTED


@contextlib.contextmanager
def _crashing_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    _state["depth"] += 1
    outermost = _state["depth"] == 1
    hit = False
    try:
        with _original_transaction(connection):
            yield
            if outermost:
                hit = _hit()
                if hit and MOMENT == "before":
                    _die()
    finally:
        _state["depth"] -= 1
        if outermost:
            _pending.clear()
    if hit and MOMENT == "after":
        _die()


database.transaction = _crashing_transaction  # before any bot module binds the name

from bot import drafts, register  # noqa: E402 - after the patch, on purpose
from bot.__main__ import main  # noqa: E402

_original_append = register.ProcessingRegister.append
_original_advance = drafts.DraftStore.advance


def _recording_append(self: register.ProcessingRegister, **fields: Any) -> str:
    _pending.append(str(fields["event"].value))
    return _original_append(self, **fields)


def _crashing_advance(self: drafts.DraftStore, draft: drafts.Draft, new_state: drafts.DraftState, *args: Any,
                      **kwargs: Any) -> drafts.Draft | None:
    advanced = _original_advance(self, draft, new_state, *args, **kwargs)
    if EVENT == "sending" and new_state == drafts.DraftState.SENDING and advanced is not None:
        _die()
    return advanced


register.ProcessingRegister.append = _recording_append  # type: ignore[method-assign]
drafts.DraftStore.advance = _crashing_advance  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(["serve"]))
