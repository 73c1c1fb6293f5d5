"""`python -m tests.support.collector_census_bot serve`: the real `python -m bot serve`, asked about its collector.

On SIGUSR1 the process runs one full garbage collection, as CPython runs one now and then under load,
and writes to `COLLECTOR_CENSUS_FILE` (JSON) how many objects were frozen before and after it and how
many tracked objects the next full collection would walk. Nothing of the bot is changed.
"""

from __future__ import annotations

import gc
import json
import os
import signal
from pathlib import Path
from types import FrameType

_CENSUS = Path(os.environ["COLLECTOR_CENSUS_FILE"])


def _census(signal_number: int, frame: FrameType | None) -> None:
    frozen_before = gc.get_freeze_count()
    gc.collect()
    census = {"frozen_before": frozen_before, "frozen_after": gc.get_freeze_count(),
              "walked_next": len(gc.get_objects(generation=2))}
    written = _CENSUS.with_suffix(".tmp")
    written.write_text(json.dumps(census), encoding="utf-8")
    os.replace(written, _CENSUS)


signal.signal(signal.SIGUSR1, _census)

from bot.cli.main import main  # noqa: E402  # after the handler, as `python -m bot` imports it

raise SystemExit(main())
