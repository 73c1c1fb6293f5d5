"""The real bot as its own process (`python -m bot serve`), for crash and restart tests."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def bot_process(env: dict[str, str], log: Path, *, module: str = "bot") -> Iterator[subprocess.Popen[bytes]]:
    """`python -m bot serve` as its own process, output to `log`.

    `module="tests.support.crashing_bot"`: the same bot, killing itself where `CRASH_AT` says.
    """
    with log.open("ab") as output:
        process = subprocess.Popen(  # the real entry point, as `make run` starts it
            [sys.executable, "-m", module, "serve"], env=env, stdout=output, stderr=output, cwd=PROJECT_ROOT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


def bot_command(env: dict[str, str], *arguments: str) -> str:
    """Run `python -m bot <arguments>` to the end; its standard output."""
    done = subprocess.run([sys.executable, "-m", "bot", *arguments], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


async def wait_until_ready(url: str, session: aiohttp.ClientSession, path: str = "/healthz") -> None:
    """Until `path` answers 200 (`/readyz`: storage, protocols and passwords too), at most 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{url}{path}") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("bot did not start")
