"""Run a bot build with an event-loop probe: `python loop_probe.py OUT.json -m bot serve`.

A stall is one callback of the event loop (a step of a task, a protocol's `data_received`) that
runs so long that everything else waits. Measured from outside, as `GET /healthz` latency, it
cannot be told apart from queueing behind the other requests; so the benchmark starts every bot
build through this script, with the build's own Python and `PYTHONPATH=<its tree>`, and it times
each callback inside the process: `asyncio.events.Handle._run` is wrapped (nothing of the build
changes). Every 0.2 s a thread writes OUT.json: the callbacks that ran 5 ms or longer, as
`[wall-clock end, milliseconds]`, so the benchmark takes the longest within a load's window.
Standalone on purpose: it imports nothing of `benchmarks`.
"""

from __future__ import annotations

import asyncio.events
import json
import os
import runpy
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: Callbacks at least this long are kept (with their time); shorter ones only count.
KEEP_MS = 5.0
WRITE_EVERY_SECONDS = 0.2


def main() -> None:
    out = Path(sys.argv[1])
    if sys.argv[2:4] != ["-m", "bot"]:
        raise SystemExit("usage: loop_probe.py OUT.json -m bot serve ...")
    long_ones: list[tuple[float, float]] = []
    counted = [0]
    original = asyncio.events.Handle._run

    def timed(handle: Any) -> None:
        started = time.perf_counter()
        try:
            original(handle)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            counted[0] += 1
            if elapsed >= KEEP_MS:
                long_ones.append((time.time(), elapsed))

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    def write() -> None:
        while True:
            time.sleep(WRITE_EVERY_SECONDS)
            temporary = out.with_suffix(".tmp")
            temporary.write_text(json.dumps({"callbacks": counted[0], "long": list(long_ones)}), encoding="utf-8")
            os.replace(temporary, out)

    threading.Thread(target=write, name="loop-probe", daemon=True).start()
    sys.argv = ["bot", *sys.argv[4:]]
    runpy.run_module("bot", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
