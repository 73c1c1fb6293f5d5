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


LEAVES_GARBAGE = '''
import asyncio
import gc
import socket

async def test_leaves_an_open_socket_in_a_cycle() -> None:
    class Holder:
        pass
    holder = Holder()
    holder.me = holder  # only a full collection frees it, at whatever test happens to run one
    holder.sock = socket.socket()
    await asyncio.sleep(0)

async def test_collects_garbage_later() -> None:
    await asyncio.sleep(0)
    gc.collect()
'''


def test_a_resource_left_in_garbage_fails_the_test_that_left_it_not_a_later_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI failed in tests/bot/secrets on ResourceWarnings of an asyncpg connection and SSL transports an earlier,
    unknown test had left in a reference cycle: a later collection ran their finalizers in whatever test was
    running then. Each async test's garbage is now collected as it ends, so the warning names the test that left it."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1]))
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
                     "filterwarnings =\n    error\n")
    pytester.makepyfile(test_garbage=LEAVES_GARBAGE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timeout=60")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaves_an_open_socket_in_a_cycle*"])
    result.stdout.fnmatch_lines(["*unclosed*socket*"])
