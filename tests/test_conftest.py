"""The suite's own guard: an async test that leaves a task running fails, naming the task, and does not hang."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

LEAVES_A_TASK = '''
import asyncio

async def test_leaves_a_lane_running() -> None:
    async def lane() -> None:
        await asyncio.Event().wait()
    asyncio.get_running_loop().create_task(lane())

async def test_ends_what_it_started() -> None:
    async def lane() -> None:
        await asyncio.Event().wait()
    task = asyncio.get_running_loop().create_task(lane())
    task.cancel()

def test_sync() -> None:
    assert True
'''


def test_a_task_left_running_fails_its_test_by_name(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1]))  # the conftest imports bot and tests.support
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_leaving=LEAVES_A_TASK)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timeout=60")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*tasks still running after the test and its fixtures*lane*"])
