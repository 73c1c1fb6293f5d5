"""A full garbage collection while the bot serves walks only what is new, not what lives for good.

CPython's full collection walks every tracked object that is not frozen, in one go, on whichever
thread allocated last: under load that is a step of the event loop. `serve` froze what start-up
made, but what the first referral loads afterwards (modules imported on first use, the calendar of
Belgian holidays, compiled card templates and statements: ~20 000 objects) stayed in sight, and
issue 14's goals run measured full collections of 13-29 ms inside one callback on this machine
(the goal: no stall over 20 ms). Measured, not timed here: these tests count objects.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.cli.garbage_collection import FREEZE_AT, SurvivorFreezer
from tests.conftest import ZIP_PASSWORD
from tests.support.activities import TeamsUser
from tests.support.bot_process import bot_process, wait_until_ready
from tests.support.bot_server import serve
from tests.support.card_reading import actions
from tests.support.connector import ConnectorStandIn
from tests.support.keyvault_provider import until
from tests.support.sample_values import CLIENT_FORM, CONSENT_ALL, PROTOCOL_ID
from tests.support.smtp_server import free_port, smtp_server

REFERRER = TeamsUser("aad-referrer-1", "An Verpleeg", "a:personal-referrer")


class _Kept:
    """A tracked object in a reference cycle, as long-lived state often is."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def freezer() -> Iterator[SurvivorFreezer]:
    freezer = SurvivorFreezer(freeze_at=5_000)
    freezer.install()
    try:
        yield freezer
    finally:
        freezer.uninstall()


def _in_sight(objects: list[Any]) -> int:
    """How many of `objects` the next full collection would walk."""
    ids = {id(item) for item in objects}
    return sum(1 for item in gc.get_objects(generation=2) if id(item) in ids)


def test_what_survives_a_full_collection_in_numbers_is_frozen(freezer: SurvivorFreezer) -> None:
    kept = [_Kept() for _ in range(6_000)]
    frozen = gc.get_freeze_count()
    gc.collect()
    assert gc.get_freeze_count() >= frozen + len(kept)
    assert _in_sight(kept) == 0, "the next full collection no longer walks them"
    assert freezer.freezes == 1


def test_garbage_at_that_collection_is_collected_not_frozen(freezer: SurvivorFreezer) -> None:
    kept = [_Kept() for _ in range(6_000)]
    garbage = _Kept()
    gone = weakref.ref(garbage)
    del garbage
    gc.collect()
    assert gone() is None
    assert _in_sight(kept) == 0


def test_a_few_survivors_stay_in_sight_of_the_collector() -> None:
    """In-flight work survives a collection too; frozen, what of it later turns to garbage in a cycle would stay."""
    freezer = SurvivorFreezer(freeze_at=10_000_000)
    freezer.install()
    try:
        kept = [_Kept() for _ in range(100)]
        gc.collect()
        assert _in_sight(kept) == len(kept)
        assert freezer.freezes == 0
    finally:
        freezer.uninstall()


def test_a_young_collection_freezes_nothing(freezer: SurvivorFreezer) -> None:
    kept = [_Kept() for _ in range(6_000)]
    gc.collect(1)
    assert freezer.freezes == 0
    assert gc.get_freeze_count() < len(kept) or _in_sight(kept) > 0


def test_once_uninstalled_it_freezes_nothing() -> None:
    freezer = SurvivorFreezer(freeze_at=1)
    freezer.install()
    freezer.uninstall()
    kept = [_Kept() for _ in range(100)]
    gc.collect()
    assert _in_sight(kept) == len(kept)
    assert freezer.freezes == 0


async def _act(session: aiohttp.ClientSession, url: str, service_url: str, verb: str,
               data: dict[str, Any]) -> dict[str, Any]:
    activity = REFERRER.card_action(service_url, verb, data)
    async with session.post(f"{url}/api/messages", json=activity) as response:
        assert response.status == 200, (response.status, await response.text())
        body: dict[str, Any] = await response.json()
    return dict(body["value"])


async def _census(process_id: int, census: Path) -> dict[str, int]:
    census.unlink(missing_ok=True)
    os.kill(process_id, signal.SIGUSR1)
    await until(census.exists, 10, "the census written")
    return dict(json.loads(census.read_text(encoding="utf-8")))


async def test_after_a_referral_a_full_collection_in_the_serving_process_leaves_little_to_walk(
    tmp_path: Path,
) -> None:
    """The real `python -m bot serve`, a whole referral to a real SMTP server, then one full collection: what the
    referral loaded for good (~20 000 objects) is frozen, and the next full collection walks under 2 000. Before,
    it walked them all, every time."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    census = tmp_path / "census.json"
    connector = ConnectorStandIn()
    with smtp_server(tls="starttls") as smtp:
        env = {**os.environ, "BOT_DATA_DIR": str(tmp_path / "data"), "PORT": str(port),
               "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD, "MAIL_TRANSPORT": "smtp", "SMTP_HOST": smtp.host,
               "SMTP_PORT": str(smtp.port), "SMTP_TLS": "starttls", "SMTP_CA_FILE": str(smtp.ca_path),
               "COLLECTOR_CENSUS_FILE": str(census)}
        async with serve(connector.app()) as service_url, aiohttp.ClientSession() as session:
            with bot_process(env, tmp_path / "bot.log", module="tests.support.collector_census_bot") as process:
                await wait_until_ready(url, session, "/readyz")
                at_start = await _census(process.pid, census)
                start = await _act(session, url, service_url, "referral.start", {})
                draft_id = str(actions(start)["referral.consent"]["draftId"])
                await _act(session, url, service_url, "referral.consent",
                           {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
                await _act(session, url, service_url, "referral.details", {"draftId": draft_id, **CLIENT_FORM})
                await _act(session, url, service_url, "referral.send", {"draftId": draft_id})
                await until(lambda: len(smtp.messages) == 1, 20, "the referral's mail at the SMTP server")
                await until(lambda: {call.method for call in connector.calls} >= {"PUT", "POST"}, 20,
                            "the referrer's card edit and notice (TEAMS_CLICK_REPLY_SECONDS after the click)")
                await asyncio.sleep(0.2)  # their marks
                after_referral = await _census(process.pid, census)
                assert process.poll() is None, (tmp_path / "bot.log").read_text()
    assert after_referral["walked_next"] < 2_000, after_referral
    # What the start-up census froze depends on how far start-up's own background work had got (141 000 to
    # 154 000 objects measured, alone and in the whole suite); after the referral it is ~158 000 every time.
    # More than a freeze's worth since is what the referral loaded, frozen.
    assert after_referral["frozen_after"] > at_start["frozen_after"] + FREEZE_AT, (at_start, after_referral)
