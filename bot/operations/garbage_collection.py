"""The garbage collector told which objects live as long as the process, so its full passes stay short.

A full collection (generation 2) walks every object the collector tracks, and no thread runs meanwhile, the
event loop's included. Most of those objects are the process's own: modules, the Agents SDK's, aiohttp's and
SQLAlchemy's classes and caches, the services `create_app` built; made at start-up and kept to the end. Frozen
once the app has started (`gc.freeze`), a full pass walks only what came after them (issue 14: no stall of the
event loop over 20 ms).

`serve` froze them before it ran the app; the app now does it itself, so whatever runs it, the tests that run it
in their own process included, runs it as `serve` does. Without it, a test measuring the loop's pauses measured
the test process's heap: on a DPO's `register` with 40 000 entries (`tests/bot/oversight/test_register_export.py`)
its longest pause was a full pass, 0.13-0.16 s with that test alone and 0.89 s in the whole suite; frozen, the
passes take 2-7 ms and the longest pause 9-30 ms.

Unfrozen when the app stops, so a process that starts apps one after another (the tests) lets them go again.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator

from aiohttp import web

logger = logging.getLogger(__name__)


async def start_up_objects_frozen(_: web.Application) -> AsyncIterator[None]:
    """An `app.cleanup_ctx` entry: freeze what exists once the app has started; unfreeze when it stops."""
    gc.freeze()
    logger.debug("garbage collector: %d start-up objects frozen", gc.get_freeze_count())
    yield
    gc.unfreeze()
