"""`python -m tests.support.module_listing_bot serve`: the real `python -m bot serve`, listing what it loaded.

When the process ends (SIGTERM stops the bot as it stops in production), the name of every module
it imported, from start to stop, is written one per line to `LOADED_MODULES_FILE`. Nothing of the
bot is changed.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

_LISTING = Path(os.environ["LOADED_MODULES_FILE"])


def _write_listing() -> None:
    _LISTING.write_text("\n".join(sorted(sys.modules)) + "\n", encoding="utf-8")


atexit.register(_write_listing)

from bot.cli.main import main  # noqa: E402  # after the hook, as `python -m bot` imports it

raise SystemExit(main())
