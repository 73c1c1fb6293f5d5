"""The garbage collector while the bot serves: what lives for good is kept out of its full collections.

CPython's full collection walks every tracked object that is not frozen, in one go, in whichever step
of the event loop allocated last: a pause of every turn in progress. `serve` freezes what start-up
made (`gc.freeze()`, ~120 000 objects: ~100 ms a full collection under load before). What the first
turns load afterwards stayed in sight: modules imported on first use (`holidays`' calendars, the mail
and ZIP code), compiled card templates and SQL statements, ~20 000 objects that every full collection
under load walked again, 13-29 ms on this machine (issue 14: no stall over 20 ms).

`SurvivorFreezer` freezes them after the full collection that finds them: at that moment every
tracked object is reachable (the collection has just freed the rest), so no garbage is frozen. It
waits until the survivors number `freeze_at`: a collection under load also finds the objects of the
turns in progress (a few hundred), and one of those that later turns into garbage inside a reference
cycle would stay for good once frozen. Thousands of new survivors are things loaded once, which
happens a few times in a process's life.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

logger = logging.getLogger(__name__)

#: Survivors of a full collection from which they are frozen; the turns in progress leave a few hundred.
FREEZE_AT = 2_000
_FULL = 2


class SurvivorFreezer:
    """After a full collection that leaves at least `freeze_at` objects in sight, freeze them."""

    def __init__(self, freeze_at: int = FREEZE_AT) -> None:
        self._freeze_at = freeze_at
        self.freezes = 0

    def install(self) -> None:
        """From now on, for this process (serve's life)."""
        gc.callbacks.append(self._after_collection)

    def uninstall(self) -> None:
        if self._after_collection in gc.callbacks:
            gc.callbacks.remove(self._after_collection)

    def _after_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation") != _FULL:
            return
        survivors = len(gc.get_objects(generation=_FULL))
        if survivors < self._freeze_at:
            return
        gc.freeze()
        self.freezes += 1
        logger.debug("froze %d objects that survived a full garbage collection", survivors)


def freeze_start_up() -> SurvivorFreezer:
    """What start-up made, and from now on what a full collection finds loaded for good, out of the collector's sight.

    Called once by `serve`, right before it listens.
    """
    gc.freeze()
    freezer = SurvivorFreezer()
    freezer.install()
    return freezer
