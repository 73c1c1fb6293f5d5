"""The running app keeps its start-up objects out of the garbage collector's full passes, and lets them go after."""

from __future__ import annotations

import gc

from bot.app import create_app
from bot.config import Settings
from tests.support.bot_server import running_bot
from tests.support.clock import ManualClock


async def test_the_running_app_keeps_its_start_up_objects_out_of_the_collectors_full_passes(
    settings: Settings, clock: ManualClock
) -> None:
    """A full pass stops the event loop for as long as it walks the tracked objects: frozen, the start-up's (modules,
    the SDK's, the services) are not walked; when the app stops they are the collector's again."""
    assert gc.get_freeze_count() == 0
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as driver:
        frozen = gc.get_freeze_count()
        assert frozen > 50_000, frozen  # the bot's modules and services, and this process's own
        garbage = [[] for _ in range(1000)]
        for item in garbage:
            item.append(item)  # cycles made after the start: a full pass still finds them
        del garbage, item
        assert gc.collect() >= 1000
        assert driver.services.settings is settings
    assert gc.get_freeze_count() == 0
