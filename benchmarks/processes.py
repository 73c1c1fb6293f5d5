"""Starting, watching and stopping the processes of a run: the bots and the connector stand-in.

Each bot runs the way production starts it (`python -m bot serve`, configured only through the
environment) in its own process group, so that only processes this harness started are stopped,
by their pid, whatever way the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess  # starts the builds' own Python with fixed arguments  # nosec B404
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from benchmarks.cpu import ProcessCpu

ZIP_PASSWORD = "K7M2QX9PLR4TWB8N6VHJ3CZD"  # noqa: S105 - a fixed benchmark password  # nosec B105
_PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def base_environment() -> dict[str, str]:
    """PATH, HOME, locale: nothing of the caller's Bot Framework or Azure settings reaches a child."""
    return {key: os.environ[key] for key in _PASSED_THROUGH if key in os.environ}


def bot_environment(port: int, data_dir: Path) -> dict[str, str]:
    """What production sets, for this run. The rate limits are per user and at the bot's maximum (10000)."""
    environment = base_environment()
    environment.update({
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "BOT_DATA_DIR": str(data_dir),
        "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
        "RATE_LIMIT_STARTS_PER_HOUR": "10000",
        "RATE_LIMIT_ACTIONS_PER_MINUTE": "10000",
        "LOG_LEVEL": "WARNING",
    })
    return environment


@dataclass
class Process:
    """A started child: its pid, port, log file and CPU meter."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path
    cpu: ProcessCpu = field(init=False)

    def __post_init__(self) -> None:
        self.cpu = ProcessCpu(self.popen.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (aiohttp shuts down cleanly), SIGKILL after 10 s; this pid only."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def start(
    name: str, argv: list[str], *, cwd: Path, env: dict[str, str], port: int, log_path: Path, cpu: int | None
) -> Process:
    """Start `argv`, pinned to `cpu` from its first instruction on (threads it makes inherit it).

    Call before the load generator has threads of its own: `preexec_fn` runs in the forked child.
    """
    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(  # noqa: S603 - the builds' own Python, fixed arguments  # nosec B603
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=pin,
        )
    return Process(name, popen, port, log_path)


async def wait_healthy(session: aiohttp.ClientSession, process: Process, path: str, within: float = 90) -> None:
    """Wait for `GET path` to answer 200; fail at once if the process dies."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode} while starting:\n{process.log_tail()}"
            )
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"{process.url}{path}", timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{process.name}: no 200 on {path} within {within:.0f} s:\n{process.log_tail()}")
