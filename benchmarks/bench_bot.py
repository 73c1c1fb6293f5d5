"""Benchmark: turns per second and latency over real HTTP, and the cost of building a package.

Run: `.venv/bin/python -m benchmarks.bench_bot [--turns 300]`. It starts the real app on loopback
with a connector stand-in (as the tests do), warms up, then measures, one request at a time and
with 8 in flight. Figures go into the README by hand; this is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.app import create_app
from bot.config import Settings
from bot.core.protocols import load_registry
from bot.core.referral_values import ClientDetails, ConsentRecord, ReferralPackageContents, Referrer
from bot.referral.package import build_package
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.clock import ManualClock
from tests.support.referral_flow import CLIENT_FORM, CONSENT_ALL, PROTOCOL_ID

PASSWORD = "K7M2QX9PLR4TWB8N6VHJ3CZD"  # noqa: S105 - a benchmark password


async def _timed(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> list[float]:
    latencies: list[float] = []
    semaphore = asyncio.Semaphore(concurrency)

    async def run(index: int) -> None:
        async with semaphore:
            start = time.perf_counter()
            await one(index)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(run(index) for index in range(count)))
    return latencies


def _report(name: str, latencies: list[float], wall: float) -> None:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[int(len(ordered) * 0.95) - 1] * 1000
    print(f"{name:<56} {len(ordered) / wall:8.0f}/s   p50 {p50:6.1f} ms   p95 {p95:6.1f} ms")  # noqa: T201


async def _bench_http(turns: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.from_mapping({
            "BOT_DATA_DIR": str(Path(folder) / "data"), "LOCAL_ZIP_PASSWORD": PASSWORD,
            "RATE_LIMIT_STARTS_PER_HOUR": "10000", "RATE_LIMIT_ACTIONS_PER_MINUTE": "10000",
        })
        clock = ManualClock(dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC))
        async with running_bot(create_app(settings, clock=clock, run_worker=False)) as bot:
            users = [TeamsUser(f"aad-{n}", f"User {n}", f"a:personal-{n}") for n in range(64)]
            await _scenarios(bot, users, turns)


async def _scenarios(bot: BotDriver, users: list[TeamsUser], turns: int) -> None:
    async def message(index: int) -> None:
        await bot.post(users[index % len(users)].message(bot.service_url, "hulp"))

    async def invoke(index: int) -> None:
        await bot.post(users[index % len(users)].card_action(bot.service_url, "referral.start", {}))

    async def referral(index: int) -> None:
        user = users[index % len(users)]
        start = await bot.act(user, "referral.start", {})
        draft_id = next(a["data"]["draftId"] for a in start["actions"] if a["verb"] == "referral.consent")
        await bot.act(user, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
        await bot.act(user, "referral.details", {"draftId": draft_id, **CLIENT_FORM})
        await bot.act(user, "referral.send", {"draftId": draft_id})

    for name, job, count in (
        ("message turn with one reply (hulp)", message, turns),
        ("card action answered in the invoke", invoke, turns),
        ("whole referral (4 invokes, package queued)", referral, max(20, turns // 10)),
    ):
        await _timed(10, 1, job)  # warm up
        for concurrency in (1, 8):
            started = time.perf_counter()
            latencies = await _timed(count, concurrency, job)
            _report(f"{name}, {concurrency} in flight", latencies, time.perf_counter() - started)
    started = time.perf_counter()
    delivered = await bot.deliver()
    wall = time.perf_counter() - started
    print(f"{'outbox delivery to the .eml folder':<56} {delivered / wall:8.0f}/s   ({delivered} mails)")  # noqa: T201


def _bench_package(rounds: int) -> None:
    protocol = load_registry(Settings().protocols_dir).all()[0]
    now = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
    contents = ReferralPackageContents(
        reference="VD-20261128-K7M2QX", protocol=protocol,
        client=ClientDetails("Zoë", "Peeters", "Kerkstraat", "12 bus 3", "9170", "Meerdonk", "+32470123456",
                             "zoe@example.be"),
        consent=ConsentRecord(True, True, True, True, True, now, text_version="2026-11-1"),
        referrer=Referrer("aad", "An"),
        key_version="local-1", created_at=now,
    )
    latencies = []
    for _ in range(rounds):
        started = time.perf_counter()
        build_package(contents, PASSWORD.encode())
        latencies.append(time.perf_counter() - started)
    _report("AES-256 package (txt + json + vcf)", latencies, sum(latencies))


def main() -> None:
    logging.disable(logging.WARNING)  # the unlinked-OCMW warning per delivery is expected here
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=300)
    arguments = parser.parse_args()
    _bench_package(200)
    asyncio.run(_bench_http(arguments.turns))


if __name__ == "__main__":
    main()
