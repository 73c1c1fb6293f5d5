"""Fire-and-forget work after a turn (card edits, proactive messages), kept and logged.

Teams waits for an invoke's HTTP answer, so a connector round trip must not be awaited inside the
turn (PLATFORM.md); tasks are held here so they are not garbage-collected and their failures show.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class BackgroundTasks:
    """Runs coroutines as tasks, keeps a reference until they finish, logs failures."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, job: Coroutine[Any, Any, None], what: str) -> None:
        """Start `job`; `what` names it in the log if it fails (no client data)."""
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                logger.error("background job failed: %s", what, exc_info=finished.exception())

        task.add_done_callback(done)

    async def drain(self) -> None:
        """Wait for every running job (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
