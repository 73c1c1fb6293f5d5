"""One serving process per data folder: the second `python -m bot serve` refuses to start.

Two processes serving one folder would both run the outboxes over one SQLite file, and the OCMW
would get mail twice. Real processes: the lock must hold across processes, and die with its holder
(even a SIGKILLed one), while the commands that only add a row (`link-ocmw`) keep working.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bot.storage.data_folder_lock import DataFolderInUseError, DataFolderLock
from tests.support.bot_process import PROJECT_ROOT, bot_command, bot_process, wait_until_ready
from tests.support.smtp_server import free_port


def _env(tmp_path: Path, port: int) -> dict[str, str]:
    return {**os.environ, "BOT_DATA_DIR": str(tmp_path / "data"), "PORT": str(port),
            "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD"}


async def test_a_second_serve_on_the_same_folder_refuses_with_a_clear_message(tmp_path: Path) -> None:
    first_port = free_port()
    log = tmp_path / "first.log"
    async with aiohttp.ClientSession() as session:
        with bot_process(_env(tmp_path, first_port), log) as first:
            await wait_until_ready(f"http://127.0.0.1:{first_port}", session)
            second = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "bot", "serve"], env=_env(tmp_path, free_port()),
                cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False)
            assert second.returncode == 2
            assert f"pid {first.pid}" in second.stderr and "already serves BOT_DATA_DIR" in second.stderr
            code = await asyncio.to_thread(bot_command, _env(tmp_path, 0), "link-ocmw", "OR-KG-NOW-OCMW-SGW-2026")
            assert "Koppelcode" in code, "commands that only add a row still work"
            async with session.get(f"http://127.0.0.1:{first_port}/healthz") as health:
                assert health.status == 200, "the first one serves on"
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        third_port = free_port()
        with bot_process(_env(tmp_path, third_port), tmp_path / "third.log"):
            await wait_until_ready(f"http://127.0.0.1:{third_port}", session)  # the kernel dropped the dead lock


def test_the_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    lock = DataFolderLock.acquire(tmp_path)
    assert (tmp_path / "serve.lock").stat().st_mode & 0o077 == 0
    with pytest.raises(DataFolderInUseError, match="already serves"):
        DataFolderLock.acquire(tmp_path)
    lock.release()
    DataFolderLock.acquire(tmp_path).release()
